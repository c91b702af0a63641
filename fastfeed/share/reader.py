"""``attach(name)``: read a feed's windows from another process, through shared memory.

A :class:`Reader` maps the segment read-only (plus the one readers page read-write) and
never blocks the writer: every read is a copy or a view checked against the segment's
sequence lock.  It follows the writer's life by itself:

* started before the writer: ``attach`` waits for it;
* the writer closes, or dies (heartbeat older than ``gone_after``): the reader says so
  once (log line ``writer gone``, ``on_event("writer_gone", ...)``), keeps serving the
  last data, and re-attaches to the next writer of the same name (new epoch) as soon as
  one is live (``on_event("reattached", ...)``); ``wait_update``/``wait_second`` keep
  waiting across the change.

It maps the segment with ``mmap`` directly (not ``multiprocessing.shared_memory``, whose
resource tracker would unlink a segment a reader merely attached to: cpython#82300);
a reader never unlinks anything.
"""
from __future__ import annotations

import logging
import mmap
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import msgspec
import numpy as np

from .._ext import shm as _shm
from ..engine.window import WindowFrame
from ..engine.stats import sync_engine_counters
from ..snapshot import snapshot_document
from ..errors import NoWriter, SegmentFormatError
from .layout import (HEADER_DTYPE, MAGIC, PAGE, REC_DTYPE, VERSION, Identity, check_name,
                     identity, nan_to_none, reason_name)
from .stats_state import apply_counters, stats_from_state

__all__ = ["attach", "Reader", "SharedFrame", "WAIT_MODES"]

log = logging.getLogger("fastfeed.share")

#: ``wait_update``/``wait_second`` modes: "futex" sleeps in the kernel until the writer's
#: publish wakes it; "spin" spins ``spin`` s, then polls with sleeps of 1-100 us.
WAIT_MODES = {"futex": _shm.WAIT_FUTEX, "spin": _shm.WAIT_SPIN}
#: how often a reader whose writer is gone looks for a new one (seconds)
REATTACH_POLL = 0.02

EventCallback = Callable[[str, dict], None]


@dataclass(frozen=True)
class SharedFrame(WindowFrame):
    """A :class:`~fastfeed.engine.WindowFrame` read from a segment.

    Zero-copy (``copy=False``): the columns are read-only views of the shared memory
    (stride 64 bytes), which the writer keeps updating: values read from them are
    consistent only if :meth:`stable` is still true *after* reading them.  From
    ``copy=True`` the columns are views of the caller's own consistent copy
    (:meth:`stable` then tells whether the writer published since).
    """

    generation: int = 0
    copied: bool = False
    _core: Any = field(default=None, repr=False, compare=False)
    _recs: Any = field(default=None, repr=False, compare=False)  # a copy's own records (reusable)

    def stable(self) -> bool:
        """True if the writer published nothing since this frame was taken (False once
        the reader closed or moved to a new writer: the frame is of an old segment)."""
        return bool(self._core.stable(self.generation))


class _FrozenEngine:
    """What ``snapshot_document`` reads of an engine, from one consistent copy."""

    def __init__(self, windows: tuple[int, ...], T: int, views: dict[int, Any], counters: dict[str, int]):
        self.windows, self.T, self._views, self.counters = windows, T, views, counters

    def window(self, w: int) -> Any:
        return self._views[w]


class _Symbols:
    """What ``snapshot_document`` reads of a universe."""

    def __init__(self, symbols: list[str]):
        self.symbols = symbols

    def __len__(self) -> int:
        return len(self.symbols)


_COLUMNS = ("open", "high", "low", "close", "volume", "vwap", "count")


def _columns(recs: np.ndarray) -> tuple[np.ndarray, ...]:
    """The seven column views (stride 64 bytes) of an array of records."""
    return tuple(recs[f] for f in _COLUMNS)


class _Columns:
    """A window's columns as attributes (what ``snapshot_document`` reads of a view)."""

    def __init__(self, recs: np.ndarray):
        for f, col in zip(_COLUMNS, _columns(recs)):
            setattr(self, f, col)


class _Segment:
    """One mapping of one incarnation (epoch) of the segment."""

    def __init__(self, name: str, fd: int, size: int):
        self.name = name
        self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        self.mm_readers = mmap.mmap(fd, PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=PAGE)
        self.core = _shm.ReaderCore(self.mm, self.mm_readers)
        self.ident: Identity | None = None
        self.views: dict[int, tuple[int, tuple[np.ndarray, ...]]] = {}  # zero-copy columns per window

    def ready(self) -> bool:
        return self.core.magic == MAGIC and self.core.state == _shm.STATE_LIVE

    def load_identity(self) -> Identity:
        head = np.frombuffer(self.mm, HEADER_DTYPE, count=1)[0]
        if int(head["version"]) != VERSION:
            raise SegmentFormatError(
                f"segment {self.name!r} has format version {int(head['version'])}; this fastfeed reads {VERSION}")
        ident = identity(self.mm)
        if ident.segment_bytes > len(self.mm):
            raise SegmentFormatError(f"segment {self.name!r} is shorter than its header says")
        self.ident = ident
        k = len(ident.windows)
        self.recs = [np.frombuffer(self.mm, REC_DTYPE, count=ident.capacity,
                                   offset=ident.off_windows + i * ident.window_bytes) for i in range(k)]
        self.symrefs = np.frombuffer(self.mm, np.uint32, count=2 * ident.capacity,
                                     offset=ident.off_symrefs).reshape(-1, 2)
        self.heap = memoryview(self.mm)[ident.off_heap:ident.off_heap + ident.heap_bytes]
        return ident

    def age(self) -> float:
        return self.core.heartbeat_age_ns() / 1e9

    def release(self) -> None:
        self.core.release()  # views made from self.mm stay valid while they live


def _open(name: str) -> _Segment | None:
    """Map the current segment ``name`` if it exists and has a header, else None."""
    try:
        fd = _shm.shm_open(name, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size < 2 * PAGE:
            return None  # being created
        return _Segment(name, fd, size)
    finally:
        os.close(fd)


def attach(
    name: str,
    *,
    timeout: float | None = None,
    wait: str = "futex",
    spin: float = 0.0,
    gone_after: float = 1.0,
    on_event: EventCallback | None = None,
) -> "Reader":
    """Attach to the segment ``name`` written by ``fastfeed serve`` or ``Feed(share=...)``.

    :param timeout: seconds to wait for a live writer (None: as long as it takes; 0:
        fail at once) -- then :class:`NoWriter`.
    :param wait: default mode of ``wait_update``/``wait_second``: ``"futex"`` or ``"spin"``.
    :param spin: seconds to spin before sleeping, in either mode.
    :param gone_after: a writer whose heartbeat is older than this (seconds) is gone.
    :param on_event: ``on_event(kind, info)`` for ``writer_gone``, ``writer_closed``,
        ``writer_back`` (the same writer beats again: it was stalled, not dead),
        ``reattached``.
    :raises SegmentFormatError: the name holds something this code cannot read.
    """
    r = Reader(name, wait=wait, spin=spin, gone_after=gone_after, on_event=on_event)
    r._connect(timeout)
    return r


class Reader:
    """A live view of a segment from another process.  Make one with :func:`attach`.

    Reads: :meth:`window` (zero-copy or a consistent copy), :meth:`snapshot` (the
    ``fastfeed snapshot`` document), :attr:`T`, :attr:`symbols`, :attr:`stats`,
    :attr:`counters`, :meth:`last_second`; waits: :meth:`wait_update`,
    :meth:`wait_second`.  Not shared: the engine's bar rings (no ``history``): they are
    the writer's private memory (~700 MB for a full market) and copying every bar into
    the segment would add a write per bar to the feed's hot path.
    """

    def __init__(self, name: str, *, wait: str = "futex", spin: float = 0.0, gone_after: float = 1.0,
                 on_event: EventCallback | None = None) -> None:
        self.name = check_name(name)
        if wait not in WAIT_MODES:
            raise ValueError(f"wait must be one of {sorted(WAIT_MODES)}, got {wait!r}")
        if not gone_after > 0:
            raise ValueError(f"gone_after must be > 0, got {gone_after!r}")
        self.wait_mode = wait
        self.spin = float(spin)
        self.gone_after = float(gone_after)
        self._on_event = on_event
        self._seg: _Segment | None = None
        self._symbols: list[str] = []
        self._symbols_frozen: tuple[str, ...] = ()
        self._hdr = bytearray(HEADER_DTYPE.itemsize)
        self._seen_update = 0
        self._seen_second = 0
        self._seconds_seen = 0
        self._gone_reported = False
        self._next_look = 0.0
        self._stats_cache: tuple[int, Any] | None = None
        #: completed seconds published that ``wait_second`` did not return (it returns the newest)
        self.seconds_skipped = 0
        #: times this reader moved to a new writer's segment
        self.reattaches = 0

    # ------------------------------------------------------------------ attaching
    def _connect(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        said = False
        while not self._try_attach():
            if deadline is not None and time.monotonic() >= deadline:
                raise NoWriter(f"no live writer on shared-memory segment {self.name!r} within {timeout} s"
                               f" ({self._why_not()})")
            if not said:
                log.info("segment %s: waiting for a writer (%s)", self.name, self._why_not())
                said = True
            time.sleep(REATTACH_POLL)

    def _why_not(self) -> str:
        seg = _open(self.name)
        if seg is None:
            return "no such segment"
        try:
            if seg.core.magic != MAGIC:
                return "being created"
            if seg.core.state == _shm.STATE_CLOSED:
                return "closed by its writer"
            return f"writer gone: heartbeat {seg.age():.1f} s old"
        finally:
            seg.release()

    def _try_attach(self) -> bool:
        """Attach to the current live incarnation if it is new; True if attached."""
        seg = _open(self.name)
        if seg is None:
            return False
        old = self._seg
        try:
            if not seg.ready() or seg.age() > self.gone_after:
                seg.release()
                return False
            ident = seg.load_identity()
            if old is not None and old.ident is not None and ident.epoch == old.ident.epoch:
                seg.release()
                return False
        except BaseException:
            seg.release()
            raise
        seg.core.join(os.getpid())
        self._seg = seg
        self._symbols = []
        self._symbols_frozen = ()
        self._seen_update = seg.core.update_seq
        self._seen_second = seg.core.second_seq
        self._seconds_seen = self._second_count()
        self._stats_cache = None
        self._gone_reported = False
        if old is not None:
            old.release()
            self.reattaches += 1
            log.warning("segment %s: re-attached to a new writer (pid %d, epoch %d)",
                        self.name, ident.writer_pid, ident.epoch)
            self._emit("reattached", {"epoch": ident.epoch, "writer_pid": ident.writer_pid})
        return True

    def _emit(self, kind: str, info: dict) -> None:
        if self._on_event is not None:
            try:
                self._on_event(kind, info)
            except Exception:
                log.exception("segment %s: on_event(%r) raised", self.name, kind)

    def _status_code(self) -> int:
        """0 live, -1 closed by the writer, -2 writer gone (heartbeat too old)."""
        seg = self._live_seg()
        if seg.core.state == _shm.STATE_CLOSED:
            return -1
        return -2 if seg.age() > self.gone_after else 0

    def _note_down(self, code: int) -> None:
        if self._gone_reported:
            return
        self._gone_reported = True
        ident = self._live_seg().ident
        info = {"epoch": ident.epoch, "writer_pid": ident.writer_pid}
        if code == -1:
            log.warning("segment %s: writer closed (pid %d); waiting for a new writer", self.name, ident.writer_pid)
            self._emit("writer_closed", info)
        else:
            info["heartbeat_age"] = self._live_seg().age()
            log.warning("segment %s: writer gone (pid %d, no heartbeat for %.1f s); waiting for a new writer",
                        self.name, ident.writer_pid, info["heartbeat_age"])
            self._emit("writer_gone", info)

    def _note_up(self) -> None:
        """The same writer beats again (it was stalled, not dead)."""
        if self._gone_reported:
            self._gone_reported = False
            log.warning("segment %s: writer alive again (pid %d)", self.name, self.ident.writer_pid)
            self._emit("writer_back", {"epoch": self.ident.epoch, "writer_pid": self.ident.writer_pid})

    def _check(self) -> int:
        """If the writer is down, say so once and look for a new one (rate-limited).
        Returns the status code of the segment read from now on."""
        code = self._status_code()
        if code == 0:
            if self._gone_reported:
                self._note_up()
            return 0
        self._note_down(code)
        now = time.monotonic()
        if now >= self._next_look:
            self._next_look = now + REATTACH_POLL
            if self._try_attach():
                return 0
        return code

    def _live_seg(self) -> _Segment:
        if self._seg is None:
            raise ValueError(f"reader of {self.name!r} is closed")
        return self._seg

    # ------------------------------------------------------------------ identity
    @property
    def ident(self) -> Identity:
        ident = self._live_seg().ident
        assert ident is not None
        return ident

    @property
    def epoch(self) -> int:
        """The current writer's epoch (its creation time in ns); changes on re-attach."""
        return self.ident.epoch

    @property
    def feed(self) -> str:
        return self.ident.feed

    @property
    def windows(self) -> tuple[int, ...]:
        return self.ident.windows

    @property
    def writer_pid(self) -> int:
        return self.ident.writer_pid

    @property
    def status(self) -> str:
        """``"live"``, ``"closed"`` (the writer closed it) or ``"gone"`` (no heartbeat)."""
        return {0: "live", -1: "closed", -2: "gone"}[self._check()]

    @property
    def alive(self) -> bool:
        return self.status == "live"

    @property
    def heartbeat_age(self) -> float:
        """Seconds since the writer's last heartbeat."""
        return self._live_seg().age()

    @property
    def generation(self) -> int:
        return int(self._live_seg().core.generation)

    def __repr__(self) -> str:
        if self._seg is None:
            return f"Reader({self.name!r}, closed)"
        return f"Reader({self.name!r}, feed={self.feed!r}, windows={self.windows}, epoch={self.epoch})"

    # ------------------------------------------------------------------ reads
    def _sync_symbols(self, n: int) -> list[str]:
        syms = self._symbols
        if n > len(syms):
            seg = self._live_seg()
            refs = seg.symrefs[len(syms):n].tolist()
            heap = seg.heap
            syms.extend(bytes(heap[o:o + ln]).decode("utf-8", "replace") for o, ln in refs)
        return syms

    def _symbols_upto(self, n: int) -> tuple[str, ...]:
        """Symbols of rows ``0 .. n-1`` as a tuple, shared between reads while ``n`` holds."""
        if len(self._symbols_frozen) != n:
            self._symbols_frozen = tuple(self._sync_symbols(n)[:n])
        return self._symbols_frozen

    @property
    def T(self) -> int | None:
        """The writer's clock (largest bar second, epoch s); None before any bar."""
        self._check()
        _, T, _ = self._live_seg().core.read_T()
        return int(T) if T >= 0 else None

    @property
    def symbols(self) -> list[str]:
        """Symbols of rows ``0 .. n-1`` (a copy)."""
        self._check()
        _, _, n = self._live_seg().core.read_T()
        return list(self._sync_symbols(int(n)))

    def _index(self, window: int) -> int:
        try:
            return self.windows.index(int(window))
        except ValueError:
            raise KeyError(f"no {window}s window: segment {self.name!r} has {self.windows}") from None

    def _read(self, ks: list[int], stats: bool = False, info: bool = False, timeout: float = 1.0,
              out: list[Any] | None = None) -> tuple[int, Any, list[np.ndarray], bytes | None, bytes | None]:
        """One consistent read: (generation, header record, record arrays (``capacity``
        long; rows ``0 .. h["n_symbols"]-1`` were copied), stats JSON, info JSON).
        ``out``: record buffers to reuse (None items, or buffers of another capacity, are
        replaced by new ones)."""
        seg = self._live_seg()
        ident = seg.ident
        cap = ident.capacity
        dsts = [b if (b is not None and b.dtype == REC_DTYPE and len(b) == cap) else np.empty(cap, REC_DTYPE)
                for b in (out or [None] * len(ks))]
        sbuf = bytearray(ident.stats_bytes) if stats else None
        ibuf = bytearray(ident.info_bytes) if info else None
        g = seg.core.read(self._hdr, ks, dsts, sbuf, ibuf, timeout)
        h = np.frombuffer(bytes(self._hdr), HEADER_DTYPE, count=1)[0]
        sj = bytes(sbuf[:int(h["stats_len"])]) if sbuf is not None else None
        ij = bytes(ibuf[:int(h["second.info_len"])]) if ibuf is not None else None
        return g, h, dsts, sj, ij

    def _frame(self, window: int, T: int, n: int, cols: Any, g: int, base: Any = None) -> SharedFrame:
        return SharedFrame(
            int(window), T if T >= 0 else None, self._symbols_upto(n), *cols,
            generation=int(g), copied=base is not None, _core=self._live_seg().core, _recs=base,
        )

    def window(self, window: int, copy: bool = False, timeout: float = 1.0,
               out: SharedFrame | None = None) -> SharedFrame:
        """Window ``window`` for rows ``0 .. n-1`` (row ``i`` is ``symbols[i]``).

        ``copy=False``: zero-copy read-only views of the shared memory -- check
        ``frame.stable()`` after reading them.  ``copy=True``: a consistent copy,
        retried under the sequence lock for up to ``timeout`` s (``TimeoutError`` if the
        writer never let a copy complete); ``out``: an earlier copy whose memory is
        reused (it is overwritten: saves the page faults of fresh memory).
        """
        self._check()
        k = self._index(window)
        seg = self._live_seg()
        if copy:
            g, h, (base,), _, _ = self._read([k], timeout=timeout, out=[getattr(out, "_recs", None)])
            n = int(h["n_symbols"])
            return self._frame(window, int(h["T"]), n, _columns(base[:n]), g, base)
        g, T, n = seg.core.read_T()
        n = int(n)
        cached = seg.views.get(k)
        if cached is None or cached[0] != n:
            cached = seg.views[k] = (n, _columns(seg.recs[k][:n]))
        return self._frame(window, int(T), n, cached[1], g)

    def frames(self, windows: Iterable[int] | None = None, timeout: float = 1.0,
               out: dict[int, SharedFrame] | None = None) -> dict[int, SharedFrame]:
        """Consistent copies of several windows from one read (same generation and ``T``);
        ``out``: earlier ``frames()`` whose memory is reused."""
        self._check()
        ws = tuple(self.windows if windows is None else (int(w) for w in windows))
        reuse = [getattr((out or {}).get(w), "_recs", None) for w in ws]
        g, h, bases, _, _ = self._read([self._index(w) for w in ws], timeout=timeout, out=reuse)
        T, n = int(h["T"]), int(h["n_symbols"])
        return {w: self._frame(w, T, n, _columns(b[:n]), g, b) for w, b in zip(ws, bases)}

    @property
    def published_ns(self) -> tuple[int, int]:
        """``(CLOCK_REALTIME, CLOCK_MONOTONIC)`` ns of the writer's last publish (a plain
        read: it may already be newer than the data last read)."""
        return self._live_seg().core.published()

    def _counters(self, h: Any) -> dict[str, int]:
        names = self.ident.counter_names
        vals = h["counters"][:len(names)].tolist()
        return dict(zip(names, vals))

    def _stats_obj(self, h: Any, sj: bytes | None) -> Any:
        """The writer's ``Stats`` rebuilt (cached per stats publish), counters as of ``h``."""
        key = int(h["stats_ns"])
        if self._stats_cache is None or self._stats_cache[0] != key:
            self._stats_cache = (key, stats_from_state(msgspec.json.decode(sj) if sj else {}))
        s = self._stats_cache[1]
        apply_counters(s, self._counters(h))
        return s

    @property
    def counters(self) -> dict[str, int]:
        """The writer's counters as of its last publish (``engine.*``: the engine's)."""
        self._check()
        _, h, _, _, _ = self._read([])
        return self._counters(h)

    @property
    def stats(self) -> dict[str, Any]:
        """The snapshot document's ``stats``: counters as of the last publish, the rest
        (histograms, gap list) as of the writer's last stats publish (``stats_interval``)."""
        self._check()
        _, h, _, sj, _ = self._read([], stats=True)
        s = self._stats_obj(h, sj)
        sync_engine_counters(s, _FrozenEngine((), -1, {}, self._engine_counters(h)))
        return s.as_dict()

    def _engine_counters(self, h: Any) -> dict[str, int]:
        return {k[7:]: v for k, v in self._counters(h).items() if k.startswith("engine.")}

    def snapshot(self, windows: Iterable[int] | None = None, timeout: float = 1.0) -> dict[str, Any]:
        """The ``fastfeed snapshot`` document, from one consistent copy of the segment."""
        self._check()
        ws = tuple(self.windows if windows is None else (int(w) for w in windows))
        ks = [self._index(w) for w in ws]
        _, h, bases, sj, _ = self._read(ks, stats=True, timeout=timeout)
        n = int(h["n_symbols"])
        recs = [b[:n] for b in bases]
        syms = list(self._sync_symbols(n)[:n])
        engine = _FrozenEngine(ws, int(h["T"]), {w: _Columns(r) for w, r in zip(ws, recs)},
                               self._engine_counters(h))
        return snapshot_document(self.feed, engine, _Symbols(syms), self._stats_obj(h, sj), ws)

    def _second_count(self) -> int:
        h = np.frombuffer(self._live_seg().mm, HEADER_DTYPE, count=1)[0]
        return int(h["second.count"])

    def last_second(self) -> tuple[int, dict[str, Any]] | None:
        """``(T, info)`` of the last completed second the writer announced, or None."""
        self._check()
        _, h, _, _, ij = self._read([], info=True)
        T = int(h["second.T"])
        if T < 0:
            return None
        count = int(h["second.count"])
        self.seconds_skipped += max(0, count - self._seconds_seen - 1)
        self._seconds_seen = count
        info: dict[str, Any] = msgspec.json.decode(ij) if ij else {}
        info.setdefault("reason", reason_name(int(h["second.reason"])))
        info.setdefault("reported", int(h["second.reported"]))
        info.setdefault("expected", int(h["second.expected"]))
        info.setdefault("latency_us", nan_to_none(float(h["second.latency_us"])))
        info.setdefault("since_last_bar_us", nan_to_none(float(h["second.since_last_bar_us"])))
        return T, info

    # ------------------------------------------------------------------ waiting
    def _wait(self, second: bool, timeout: float | None, mode: str | None) -> bool:
        m = WAIT_MODES[mode or self.wait_mode]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            seg = self._live_seg()
            remaining = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            seen = self._seen_second if second else self._seen_update
            code, cur = seg.core.wait(second, seen, remaining, m, self.spin, self.gone_after)
            if code == 1 and seg.core.state != _shm.STATE_CLOSED:
                if second:
                    self._seen_second = cur
                else:
                    self._seen_update = cur
                return True
            if code == 0:
                return False
            self._note_down(-1 if code == 1 else code)
            # the writer is down: wait for the next one (its segment is news by itself),
            # or for this one to beat again (it was stalled, not dead)
            while True:
                if self._try_attach():
                    if not second:
                        return True
                    break
                if self._status_code() == 0:
                    self._note_up()
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                time.sleep(REATTACH_POLL)

    def wait_update(self, timeout: float | None = None, mode: str | None = None) -> bool:
        """Block until the writer publishes something this reader has not waited for
        (returns at once if it already did); True, or False after ``timeout`` s.

        Survives the writer's death: it waits for the next writer (and returns True once
        re-attached).  ``mode``: ``"futex"`` / ``"spin"`` (default: ``attach``'s).
        """
        return self._wait(False, timeout, mode)

    def wait_second(self, timeout: float | None = None, mode: str | None = None) -> tuple[int, dict[str, Any]] | None:
        """Block until the writer announces a completed second; ``(T, info)`` of the
        newest (seconds announced meanwhile are counted in :attr:`seconds_skipped`), or
        None after ``timeout`` s."""
        if not self._wait(True, timeout, mode):
            return None
        return self.last_second()

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Leave the segment (zero-copy frames already taken stay readable)."""
        if self._seg is not None:
            self._seg.release()
            self._seg = None

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
