"""``SegmentWriter``: publish an engine's windows to a named shared-memory segment.

One writer per name.  Creating it takes the name: an exclusive ``flock`` on the
segment's file descriptor, held for the writer's life and dropped by the kernel when
the process dies (even by SIGKILL).  So at start:

* no segment of that name: create it (mode 0600);
* a segment whose lock is held: a live writer owns it -> :class:`SegmentBusy`;
* a segment whose lock is free: its writer died -> unlink it (readers that still map
  it keep their copy) and create a new one, with a new epoch.

Call :meth:`SegmentWriter.publish` after every engine update (the feed's ``on_batch``),
:meth:`SegmentWriter.publish_second` when a second completes, and
:meth:`SegmentWriter.close` at the end (also run at interpreter exit): the segment is
marked closed, readers are woken, and the name is unlinked, so nothing stays in
``/dev/shm``.  A heartbeat thread (no GIL) beats every ``heartbeat_interval`` s; readers
call the writer gone when the beat is older than their ``gone_after``.
"""
from __future__ import annotations

import fcntl
import logging
import math
import mmap
import os
import threading
import time
import weakref
from typing import Any, Callable

import msgspec
import numpy as np

from .._ext import shm as _shm
from ..errors import SegmentBusy
from .layout import HEADER_DTYPE, check_name, reason_code, shm_path
from .stats_state import StateEncoder

__all__ = ["SegmentWriter", "ENGINE_COUNTERS"]

log = logging.getLogger("fastfeed.share")

#: engine counters published (as ``engine.<name>``), in this order
ENGINE_COUNTERS = ("accepted", "inserted", "replaced", "stale_dropped", "future_rejected",
                   "invalid_rejected", "bad_row")

# fds holding a writer's lock: closed in a forked child, so that a child outliving its
# parent does not keep the name locked (flock belongs to the open file description)
_LOCK_FDS: set[int] = set()


def _close_locks_in_child() -> None:
    for fd in list(_LOCK_FDS):
        try:
            os.close(fd)
        except OSError:
            pass
    _LOCK_FDS.clear()


os.register_at_fork(after_in_child=_close_locks_in_child)


def describe_segment(fd: int) -> str:
    """Who wrote the segment behind ``fd`` (for messages): pid, feed, epoch, heartbeat age."""
    try:
        head = os.pread(fd, HEADER_DTYPE.itemsize, 0)
        if len(head) < HEADER_DTYPE.itemsize:
            return "no header"
        h = np.frombuffer(head, HEADER_DTYPE, count=1)[0]
        age = (_shm.mono_ns() - int(h["heartbeat_ns"])) / 1e9
        feed = bytes(h["feed"]).decode("utf-8", "replace")
        return f"pid {int(h['writer_pid'])}, feed {feed!r}, epoch {int(h['epoch'])}, last heartbeat {age:.1f} s ago"
    except OSError as e:
        return f"unreadable: {e}"


def create_segment(name: str, size: int, *, attempts: int = 20) -> tuple[int, mmap.mmap, bool]:
    """Create the segment ``name`` of ``size`` bytes, taking its lock (see the module doc).

    Returns ``(fd, mapping, reclaimed)``; ``fd`` holds the lock until closed.
    """
    path = shm_path(name)
    reclaimed = False
    for _ in range(attempts):
        fd = _shm.shm_open(name, os.O_RDWR | os.O_CREAT, 0o600)
        keep = False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SegmentBusy(
                    f"shared-memory segment {name!r} is in use by a live writer "
                    f"({describe_segment(fd)}): stop it or choose another name") from None
            st = os.fstat(fd)
            try:
                cur = os.stat(path)
            except FileNotFoundError:
                continue  # unlinked between our open and our lock: start again
            if (cur.st_ino, cur.st_dev) != (st.st_ino, st.st_dev):
                continue  # replaced meanwhile: start again
            if st.st_size:
                log.warning("segment %s: reclaiming the stale segment of a dead writer (%s)",
                            name, describe_segment(fd))
                _shm.shm_unlink(name)
                reclaimed = True
                continue
            os.fchmod(fd, 0o600)
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            keep = True
            return fd, mm, reclaimed
        finally:
            if not keep:
                os.close(fd)
    raise SegmentBusy(f"could not create segment {name!r}: {attempts} attempts raced with other writers")


class _Owned:
    """What must be undone at close (kept apart from the writer for weakref.finalize)."""

    def __init__(self, name: str, fd: int, mm: mmap.mmap, core: Any) -> None:
        self.name, self.fd, self.mm, self.core = name, fd, mm, core
        self.ino = os.fstat(fd).st_ino
        self.pid = os.getpid()
        self.thread: threading.Thread | None = None
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if os.getpid() != self.pid:  # a forked child exiting: the segment is its parent's
            return
        core = self.core
        core.mark_closed()
        core.stop_heartbeat()
        if self.thread is not None:
            self.thread.join(5.0)
        try:  # unlink only our own segment (the name could have been removed by hand)
            if os.stat(shm_path(self.name)).st_ino == self.ino:
                _shm.shm_unlink(self.name)
        except FileNotFoundError:
            pass
        core.release()
        try:
            self.mm.close()
        except BufferError:  # pragma: no cover - a view of the writer's mapping is alive
            pass
        _LOCK_FDS.discard(self.fd)
        os.close(self.fd)


class SegmentWriter:
    """Publishes ``engine``'s windows, ``universe``'s symbols and ``stats`` to the
    shared-memory segment ``name`` (``/dev/shm/<name>``, mode 0600).

    :param engine: a ``fastfeed`` ``Engine`` (its ``window(W)`` views are read; its
        ``capacity`` and ``windows`` size the segment).
    :param universe: the ``Universe`` giving the engine's rows their symbols.
    :param stats: the feed's ``Stats`` (integer counters go out with every publish, the
        whole object -- histograms included -- every ``stats_interval`` s); None: none.
    :param feed: the feed's name (the snapshot document's ``feed``).
    :param heartbeat_interval: seconds between heartbeats.
    :param stats_interval: at most this often (seconds) ``publish`` also publishes the
        whole stats object (~0.1-1 ms when latencies were recorded); 0: never by itself.
    :param before_stats: called before the stats are read for publishing (e.g. the
        session's ``flush_stats``).
    :raises SegmentBusy: a live writer owns ``name``.

    Not thread-safe: call ``publish*`` from the thread that updates the engine.
    """

    def __init__(
        self,
        name: str,
        engine: Any,
        universe: Any,
        stats: Any = None,
        *,
        feed: str = "",
        heartbeat_interval: float = 0.1,
        stats_interval: float = 1.0,
        before_stats: Callable[[], Any] | None = None,
        heap_per_row: int = 32,
    ) -> None:
        self.name = check_name(name)
        if not heartbeat_interval > 0:
            raise ValueError(f"heartbeat_interval must be > 0, got {heartbeat_interval!r}")
        self._engine = engine
        self._universe = universe
        self._stats = stats
        self._before_stats = before_stats
        self._stats_interval = float(stats_interval)
        self._encoder = StateEncoder()
        self.windows = tuple(int(w) for w in engine.windows)
        views = [engine.window(w) for w in self.windows]
        layout = _shm.segment_layout(int(engine.capacity), len(self.windows), heap_per_row)
        sources, names = self._counter_sources(engine, stats)
        fd, mm, self.reclaimed = create_segment(self.name, layout["segment_bytes"])
        try:
            core = _shm.WriterCore(mm, views)
            self.epoch = time.time_ns()
            core.init(layout, self.epoch, os.getpid(), self.windows, int(engine.depth),
                      feed.encode()[:31], names, int(heartbeat_interval * 1e9))
            core.set_counter_sources(sources)
        except BaseException:
            os.close(fd)
            try:
                _shm.shm_unlink(self.name)
            except OSError:
                pass
            raise
        _LOCK_FDS.add(fd)
        self._core = core
        self._owned = _Owned(self.name, fd, mm, core)
        self._finalizer = weakref.finalize(self, self._owned.close)
        self.counter_names = tuple(names)
        self.feed = feed
        self._nsym = 0
        self._T: int | None = None
        self._empty = np.empty(0, dtype=np.int64)
        self._next_stats = 0.0
        self.stats_too_big = 0
        # everything the engine already holds (e.g. after a warm start), then go live
        self.publish_all()
        self.publish_stats()
        core.go_live()
        t = threading.Thread(target=core.run_heartbeat, name=f"fastfeed-shm-{self.name}", daemon=True)
        self._owned.thread = t
        t.start()

    @staticmethod
    def _counter_sources(engine: Any, stats: Any) -> tuple[list, list[str]]:
        sources: list[tuple[Any, str, Any]] = []
        names: list[str] = []
        if hasattr(engine, "counters"):
            sources.append((engine, "counters", ENGINE_COUNTERS))
            names += [f"engine.{c}" for c in ENGINE_COUNTERS]
        if stats is not None:
            for attr, v in vars(stats).items():
                if type(v) is int and not attr.startswith("_") and len(names) < _shm.MAX_COUNTERS:
                    sources.append((stats, attr, None))
                    names.append(attr)
        return sources, names

    # ------------------------------------------------------------------ publishing
    def _add_symbols(self, n: int) -> None:
        syms = self._universe.symbols
        self._core.add_symbols(self._nsym, [s.encode() for s in syms[self._nsym:n]])
        self._nsym = n

    def publish(self, rows: Any = None) -> int:
        """Publish the rows the last engine update changed (``engine.last_rows()`` if
        ``rows`` is None); every row when the clock ``T`` moved since the last publish.
        Returns the generation published.  ~0.1 us per row and window (GIL released for
        the copy); never waits for readers.
        """
        n = len(self._universe)
        if n != self._nsym:
            self._add_symbols(n)
        T = int(self._engine.T)
        if T != self._T:
            self._T = T
            g = self._core.publish(self._empty, 0, True, T, n)
        else:
            if rows is None:
                rows = self._engine.last_rows()
            elif not (isinstance(rows, np.ndarray) and rows.dtype == np.int64 and rows.flags.c_contiguous):
                rows = np.ascontiguousarray(rows, dtype=np.int64)
            g = self._core.publish(rows, len(rows), False, T, n)
        if self._stats_interval > 0 and self._stats is not None:
            now = time.monotonic()
            if now >= self._next_stats:
                self.publish_stats(now)
        return g

    def publish_all(self) -> int:
        """Publish every row (e.g. after changing the engine other than by ``upsert``)."""
        n = len(self._universe)
        if n != self._nsym:
            self._add_symbols(n)
        self._T = int(self._engine.T)
        return self._core.publish(self._empty, 0, True, self._T, n)

    def publish_stats(self, now: float | None = None) -> bool:
        """Publish the whole stats object now (histograms included); False if its JSON
        does not fit the segment's stats area (counted in ``stats_too_big``)."""
        if self._stats is None:
            return False
        if self._before_stats is not None:
            self._before_stats()
        self._next_stats = (time.monotonic() if now is None else now) + self._stats_interval
        doc = msgspec.json.encode(self._encoder.encode(self._stats))
        ok = self._core.write_stats(doc)
        if not ok:
            self.stats_too_big += 1
            if self.stats_too_big == 1:
                log.warning("segment %s: stats of %d bytes exceed the segment's stats area; "
                            "readers keep the last that fitted", self.name, len(doc))
        return ok

    def publish_second(self, T: int, info: dict[str, Any]) -> int:
        """Announce the completed second ``T`` (``info`` as ``on_second`` receives it:
        ``reason``, ``reported``, ``expected``, ``latency_us``, ``since_last_bar_us``, ...)
        and wake ``wait_second`` sleepers.  Also publishes the stats."""
        def num(key: str, default: float) -> float:
            v = info.get(key)
            try:
                return default if v is None else float(v)
            except (TypeError, ValueError):
                return default

        blob = msgspec.json.encode(info)
        g = self._core.write_second(int(T), reason_code(info.get("reason")),
                                    int(num("reported", -1)), int(num("expected", -1)),
                                    num("latency_us", math.nan), num("since_last_bar_us", math.nan),
                                    blob)
        if self._stats is not None:
            self.publish_stats()
        return g

    # ------------------------------------------------------------------ state
    @property
    def generation(self) -> int:
        return int(self._core.generation)

    @property
    def readers(self) -> int:
        """Reader processes attached now (dead ones are reaped about once a second)."""
        return int(self._core.readers())

    @property
    def closed(self) -> bool:
        return self._owned.closed

    def close(self) -> None:
        """Publish the final stats, mark the segment closed (readers see it at once),
        stop the heartbeat and unlink the name.  Idempotent."""
        if self._owned.closed:
            return
        try:
            self.publish_all()
            self.publish_stats()
        except Exception:  # the segment must still be removed
            log.exception("segment %s: final publish failed", self.name)
        self._finalizer()

    def __enter__(self) -> "SegmentWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"generation {self.generation}"
        return f"SegmentWriter({self.name!r}, windows={self.windows}, epoch={self.epoch}, {state})"
