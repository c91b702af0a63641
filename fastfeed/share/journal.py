"""The journal: every raw message a feed receives, kept for warm restarts.

A journal is a directory of ordinary recording files (the format of
``docs/RECORDING.md``), one feed per file name prefix:
``<feed>-<YYYYmmddTHHMMSS>.<ns>Z.ffr``, named by the receive time of their first
record, so that names sort in time order.  :class:`JournalWriter` starts a new file
at every ``rotate`` boundary of receive time (default: each UTC hour) and deletes
this feed's files last written more than ``keep`` seconds ago (default 2 days).

Crash safety is the recording's: every block is a checksummed record handed to the
operating system by one ``writev``; a killed process loses only what had not been
handed over yet -- at most ``flush_interval`` (default 50 ms here) of messages plus
the writer thread's scheduling delay -- and a torn last record is skipped on reading.
(``fsync=True`` also survives a power loss, at the cost of one ``fsync`` per block.)

On start, :func:`warm_start` replays the journal's last ``depth`` seconds of receive
time (plus ``margin``) through a feed session -- the same decoders, the same engine --
so that the windows are what they were when the previous process stopped.

Typical use (what ``Feed(journal=DIR)`` does)::

    info = warm_start(DIR, session, feed="vantafin", depth=engine.depth)
    session, close = journal_session(session, DIR, "vantafin", url, keep=2 * 86400)
    ...  # connect with `session`; the outage since info.last_ns is a gap
    close()
"""
from __future__ import annotations

import calendar
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..errors import FormatError
from ..recording.format import CONNECTED, DISCONNECTED, MESSAGE
from ..recording.reader import Reader
from ..recording.replay import replay_session
from ..recording.session import RecordingSession, engine_config
from ..recording.writer import Writer

__all__ = ["JournalWriter", "WarmStart", "journal_files", "journal_session", "warm_start",
           "DEFAULT_KEEP", "DEFAULT_ROTATE"]

log = logging.getLogger("fastfeed.journal")

DEFAULT_KEEP = 2 * 86400.0  # seconds
DEFAULT_ROTATE = 3600.0  # seconds
SUFFIX = ".ffr"
_NAME = re.compile(r"^(?P<feed>.+)-(?P<stamp>\d{8}T\d{6})\.(?P<ns>\d{9})Z\.ffr$")


def journal_name(feed: str, ns: int) -> str:
    """The file name of ``feed``'s journal file whose first record is at ``ns``."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(ns // 10**9))
    return f"{feed}-{stamp}.{ns % 10**9:09d}Z{SUFFIX}"


def journal_files(directory: str | os.PathLike[str], feed: str) -> list[str]:
    """``feed``'s journal files in ``directory``, oldest first."""
    d = os.fspath(directory)
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        m = _NAME.match(n)
        if m and m.group("feed") == feed:
            out.append(os.path.join(d, n))
    return sorted(out)


class JournalWriter(Writer):
    """A recording :class:`~fastfeed.recording.Writer` that rotates its file every ``rotate``
    seconds of receive time and prunes files older than ``keep`` seconds.

    Rotation happens on the writer thread, between blocks: the first block whose
    receive time reaches the next boundary starts the new file (the old one gets its
    end record).  ``files_written`` lists this writer's files, ``pruned`` counts the
    files it deleted.
    """

    def __init__(self, directory: str | os.PathLike[str], *, feed: str, url: str = "",
                 meta: dict[str, Any] | None = None, keep: float = DEFAULT_KEEP,
                 rotate: float = DEFAULT_ROTATE, flush_interval: float = 0.05, **options: Any) -> None:
        if not rotate > 0 or not keep > 0:
            raise ValueError(f"rotate and keep must be positive seconds, got {rotate!r}, {keep!r}")
        self.directory = os.fspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.keep = float(keep)
        self.rotate_ns = int(rotate * 1e9)
        self.pruned = 0
        start = time.time_ns()
        path = os.path.join(self.directory, journal_name(feed, start))
        super().__init__(path, feed=feed, url=url, meta=meta, flush_interval=flush_interval,
                         start_ns=start, **options)
        self._period_end = self._boundary(start)
        self.files_written = [path]
        self._prune()

    def _boundary(self, ns: int) -> int:
        return (ns // self.rotate_ns + 1) * self.rotate_ns

    def before_record(self, recv_ns: int) -> None:
        # writer thread: the first record at or past the boundary starts the next file
        if recv_ns >= self._period_end:
            self._rotate(recv_ns)

    def _rotate(self, ns: int) -> None:
        path = os.path.join(self.directory, journal_name(self.feed, ns))
        self.continue_in(path, ns)
        self.files_written.append(path)
        self._period_end = self._boundary(ns)
        self._prune()

    def _prune(self) -> None:
        """Delete this feed's files last written more than ``keep`` seconds ago."""
        limit = time.time() - self.keep
        for p in journal_files(self.directory, self.feed):
            if p == self.path:
                continue
            try:
                if os.stat(p).st_mtime < limit:
                    os.unlink(p)
                    self.pruned += 1
                    log.info("journal: deleted %s (older than %.0f s)", p, self.keep)
            except FileNotFoundError:
                pass


def journal_session(session: Any, directory: str | os.PathLike[str], feed: str, url: str = "", *,
                    engine: Any = None, keep: float = DEFAULT_KEEP, rotate: float = DEFAULT_ROTATE,
                    **writer_options: Any) -> tuple[RecordingSession, Callable[[], dict[str, Any]]]:
    """Wrap ``session`` so that everything it receives goes to the journal in ``directory``.

    Returns ``(recording_session, close)`` like ``recording.wrap_session_for_recording``:
    connect with ``recording_session``; ``close()`` finishes the current file and returns
    the writer's summary.  The writer itself is ``recording_session.writer`` (its
    ``bytes_written``, ``error``, ``dropped`` are the journal's health).
    """
    if engine is None:
        engine = getattr(session, "engine", None)
    meta: dict[str, Any] = {"topics": list(getattr(session, "topics", None) or ()), "journal": True}
    if engine is not None:
        meta["engine"] = engine_config(engine)
    writer = JournalWriter(directory, feed=feed, url=url, meta=meta, keep=keep, rotate=rotate,
                           **writer_options)
    rs = RecordingSession(session, writer)

    def close() -> dict[str, Any]:
        writer.close()
        return writer.summary()

    return rs, close


@dataclass
class WarmStart:
    """What :func:`warm_start` replayed."""

    files: list[str] = field(default_factory=list)
    messages: int = 0
    first_ns: int | None = None  # receive time of the first message replayed
    last_ns: int | None = None  # ... and of the last: the previous process's last data
    cutoff_ns: int | None = None
    elapsed: float = 0.0  # wall seconds
    problems: list[dict[str, Any]] = field(default_factory=list)  # damage skipped (torn tails, ...)
    T: int | None = None  # the engine's clock afterwards (None before any bar)


class _Span:
    """The records of several journal files from ``cutoff_ns`` on, as ``replay_session``
    reads a ``Reader`` (connection boundaries before the cutoff are left out)."""

    def __init__(self, paths: list[str], cutoff_ns: int) -> None:
        self.paths = paths
        self.cutoff = cutoff_ns
        self.path = paths[-1] if paths else ""
        self.size = sum(os.path.getsize(p) for p in paths)
        self.bytes_read = 0
        self.problems: list[dict[str, Any]] = []

    def __iter__(self) -> Iterator[tuple[int, int, bytes]]:
        done = 0
        kinds = frozenset({MESSAGE, CONNECTED, DISCONNECTED})
        for p in self.paths:
            try:
                r = Reader(p, kinds=kinds)
            except (FormatError, OSError) as e:  # e.g. killed before its header was written
                self.problems.append({"path": p, "reason": str(e)})
                continue
            with r:
                for kind, ns, payload in r:
                    if ns >= self.cutoff:
                        self.bytes_read = done + r.bytes_read
                        yield kind, ns, payload
                self.problems.extend(dict(q, path=p) for q in r.report()["problems"])
            done += r.size
            self.bytes_read = done


def warm_start(directory: str | os.PathLike[str], session: Any, *, feed: str, depth: float,
               margin: float = 10.0, on_event: Callable[[str, dict], None] | None = None,
               progress: bool = False) -> WarmStart:
    """Replay the last ``depth + margin`` seconds of receive time of ``feed``'s journal in
    ``directory`` through ``session`` (the feed's session: same decoders, same engine).

    "Last" is counted back from the newest file's last write.  Connection boundaries
    inside the span are replayed (so per-connection state such as sequence numbers
    resets as it did live), without counting reconnects; ``stats.messages`` and
    ``stats.bytes`` are not counted either (the session counts what it decodes).
    Damaged or torn files are read up to the damage (``WarmStart.problems``).
    """
    t0 = time.perf_counter()
    files = journal_files(directory, feed)
    out = WarmStart()
    if not files:
        return out
    newest = max(os.stat(p).st_mtime_ns for p in files)
    cutoff = newest - int((depth + margin) * 1e9)
    # files that may hold records at or after the cutoff: the one being written at the
    # cutoff (the last to start before it) and every later one
    starts = [_start_ns(p) for p in files]
    first = 0
    for i, s in enumerate(starts):
        if s <= cutoff:
            first = i
    chosen = files[first:]
    span = _Span(chosen, cutoff)
    counts = replay_session(span, session, stats=None, on_event=on_event, progress=progress)
    out.files = chosen
    out.messages = int(counts["messages"])
    out.first_ns, out.last_ns = counts["first_ns"], counts["last_ns"]
    out.cutoff_ns = cutoff
    out.problems = span.problems
    engine = getattr(session, "engine", None)
    if engine is not None and int(engine.T) >= 0:
        out.T = int(engine.T)
    out.elapsed = time.perf_counter() - t0
    log.info("journal: replayed %d messages from %d file(s) in %.2f s (receive times %s .. %s)",
             out.messages, len(chosen), out.elapsed, out.first_ns, out.last_ns)
    return out


def _start_ns(path: str) -> int:
    """Receive time of a journal file's first record, from its name."""
    m = _NAME.match(os.path.basename(path))
    assert m is not None
    secs = calendar.timegm(time.strptime(m.group("stamp"), "%Y%m%dT%H%M%S"))
    return secs * 10**9 + int(m.group("ns"))
