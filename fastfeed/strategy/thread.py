"""``Feed(strategy_thread=True)``: the user's callbacks on their own thread, latest state.

The feed's thread only *posts* (it never waits for the strategy):

* an announced second: ``(T, info, frames)`` with frames copied when ``T`` was announced;
  if the strategy has not taken the previous one yet, that one is dropped and counted
  (``stats.seconds_skipped``, ``info["skipped"]`` of the one delivered);
* an engine update: the rows it touched are marked; when the strategy is idle the feed
  copies the windows at once and hands them over, otherwise it copies them (once) when
  the strategy asks for more, or hands over the copy of the next announced second.  ``on_update`` then gets the rows updated since its
  previous call, and ``stats.updates_skipped`` counts the updates merged into one call.

A call gets consistent copies of every window (``feed.window(W)`` on the strategy thread
returns them); the copies cost what copying ``rows x 7 columns x windows`` float64
costs, on the feed's thread, once per delivered call (see docs/SECONDS.md for figures).
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import numpy as np

__all__ = ["StrategyThread"]

log = logging.getLogger("fastfeed")

Frames = dict  # {window seconds: WindowFrame}


class StrategyThread:
    """Runs ``on_second``/``on_update`` on a daemon thread (see the module).

    :param call: ``call(name, fn, *args)`` runs one callback (timed, exceptions caught).
    :param copy_frames: ``copy_frames() -> {W: WindowFrame}``; the feed's thread only.
    :param wake_feed: ``wake_feed(fn)`` runs ``fn`` on the feed's thread soon (thread-safe);
        ``None`` when there is no running loop: the copy then waits for the next update.
    :param clock: the engine's clock (read on the feed's thread).
    """

    def __init__(self, *, capacity: int, stats: Any, call: Callable[..., None],
                 copy_frames: Callable[[], Frames], wake_feed: Callable[[Callable[[], None]], None] | None,
                 clock: Callable[[], int],
                 on_update: Callable[[np.ndarray, int], None] | None,
                 on_second: Callable[[int, dict], None] | None,
                 update_name: str = "on_update", second_name: str = "on_second") -> None:
        self.stats = stats
        self._call = call
        self._copy_frames = copy_frames
        self._wake_feed = wake_feed
        self._clock = clock
        self.on_update = on_update
        self.on_second = on_second
        self._names = (update_name, second_name)
        self._cv = threading.Condition()
        self._second: tuple[int, dict, Frames] | None = None
        self._update: tuple[np.ndarray, int, Frames] | None = None
        self._skipped_seconds = 0   # dropped since the last second delivered
        self._idle = False          # the strategy waits for work (set under the lock)
        self._want_copy = False     # updates are waiting without a copy: copy at the next chance
        self._stopping = False
        self._marked = np.zeros(capacity, dtype=bool)  # rows updated since the last copy (feed thread)
        self._merged = 0            # updates since the last copy (feed thread)
        self.current: Frames | None = None  # the frames of the call in progress
        self._thread = threading.Thread(target=self._main, name="fastfeed-strategy", daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    # ------------------------------------------------------------------ feed thread
    def post_second(self, T: int, info: dict, frames: Frames) -> None:
        with self._cv:
            if self._second is not None:
                self._skipped_seconds += 1
                self.stats.seconds_skipped += 1
            info["skipped"] = self._skipped_seconds
            self._second = (T, info, frames)
            self._cv.notify()
            waiting = self._want_copy
        if waiting:  # updates wait for a copy: this one is of the same state
            self._publish_update(T, frames)

    def post_update(self, rows: np.ndarray, T: int) -> None:
        self._marked[rows] = True
        self._merged += 1
        with self._cv:
            copy_now = self._idle and self._update is None
            if not copy_now:
                self._want_copy = True
        if copy_now:
            self._publish_update(T)

    def _publish_update(self, T: int, frames: Frames | None = None) -> None:
        if self._merged == 0:
            return
        rows = np.flatnonzero(self._marked)
        self._marked[rows] = False
        merged, self._merged = self._merged, 0
        if frames is None:
            frames = self._copy_frames()
        with self._cv:
            if self._update is not None:  # not taken yet: merge into the newer one
                rows = np.union1d(self._update[0], rows)
                merged += 1
            self.stats.updates_skipped += merged - 1
            self._update = (rows, T, frames)
            self._want_copy = False
            self._cv.notify()

    # ------------------------------------------------------------------ strategy thread
    def _main(self) -> None:
        upd_name, sec_name = self._names
        while True:
            with self._cv:
                while self._second is None and self._update is None and not self._stopping:
                    if self._want_copy and self._wake_feed is not None and not self._idle:
                        # updates came while we were busy: ask the feed for one copy of now
                        self._wake_feed(self._request_copy)
                    self._idle = True
                    self._cv.wait()
                self._idle = False
                if self._stopping:
                    return
                second, self._second = self._second, None
                update, self._update = self._update, None
                if second is not None:
                    self._skipped_seconds = 0
            # the second first: its frames are older than (or as old as) the update's
            if second is not None and self.on_second is not None:
                self.current = second[2]
                self._call(sec_name, self.on_second, second[0], second[1], on_feed_thread=False)
            if update is not None and self.on_update is not None:
                self.current = update[2]
                self._call(upd_name, self.on_update, update[0], update[1], on_feed_thread=False)
            self.current = None

    def _request_copy(self) -> None:
        """On the feed thread (woken by the strategy): copy if updates still wait."""
        if self._want_copy:
            self._publish_update(self._clock())

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to end after its current call; wait up to ``timeout`` seconds."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
