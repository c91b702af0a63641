"""How a ``Feed`` runs its user's code beyond a plain ``on_update``: ``on_second``,
``next_second`` and ``wait_second``, inline or on a strategy thread, timed.

:class:`Callbacks` is the session's ``on_batch`` once a feed needs it, driven by the feed's
thread once per engine update (:meth:`Callbacks.on_batch`) and by a timer on the feed's
loop (the ``quiet`` deadline of the completed-second rule, :mod:`fastfeed.engine.seconds`).
A feed that uses none of this has no ``Callbacks`` at all: the filler calls ``on_update``
itself, the one Python call per update, and times it in C (``LagMonitor.attach``).
"""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable, NamedTuple

import numpy as np

from ..engine import WindowFrame
from ..engine.seconds import DEFAULT_EXPECT_SECONDS, DEFAULT_QUIET_MS, SecondTracker
from .lag import LagMonitor, callback_name
from .thread import StrategyThread

__all__ = ["Callbacks", "Second", "check_options", "copy_frames"]


class Second(NamedTuple):
    """One announced second as ``next_second``/``wait_second`` return it.

    ``frames``: ``{window seconds: WindowFrame}``, the consumer's own copies taken when
    ``T`` was announced (``frames[60].close`` ...).
    """

    T: int
    info: dict
    frames: dict


def check_options(second_quiet_ms: float, expect_seconds: int, lag_warn_s: float, clock_rate: float) -> None:
    """``ValueError`` naming the first bad option."""
    if not second_quiet_ms > 0:
        raise ValueError(f"second_quiet_ms must be > 0, not {second_quiet_ms!r}")
    if int(expect_seconds) != expect_seconds or expect_seconds < 1:
        raise ValueError(f"expect_seconds must be a whole number >= 1, not {expect_seconds!r}")
    if not lag_warn_s > 0:
        raise ValueError(f"lag_warn_s must be > 0, not {lag_warn_s!r}")
    if not clock_rate > 0:
        raise ValueError(f"clock_rate must be > 0, not {clock_rate!r}")


def copy_frames(engine: Any, universe: Any) -> dict[int, WindowFrame]:
    """Consistent copies of every window for the known instruments (call on the feed's thread)."""
    n = len(universe)
    symbols = universe.symbols[:n]
    T = int(engine.T)
    out = {}
    for W in engine.windows:
        v = engine.window(W)
        out[W] = WindowFrame(W, T if T >= 0 else None, symbols,
                             v.open[:n].copy(), v.high[:n].copy(), v.low[:n].copy(), v.close[:n].copy(),
                             v.volume[:n].copy(), v.vwap[:n].copy(), v.count[:n].copy())
    return out


class Callbacks:
    """The user's callbacks and the completed-second rule of one feed (see the module).

    :param feed: the ``Feed`` (its engine, universe, stats, session and loop).
    :param monitor: the feed's :class:`LagMonitor` (times the callbacks, words the lag warning).
    :param spread_s: the feed's ``bar_spread_s`` (``fastfeed.feeds.registry``).
    :param strategy_thread: run ``on_update``/``on_second`` on a thread of their own with
        latest-state semantics (:mod:`fastfeed.strategy.thread`).
    :param publisher: the feed's shared-memory ``SegmentWriter`` (``Feed(share=...)``): on the
        feed's thread, every update is published before the user's ``on_update`` and every
        completed second before ``on_second``; with it the completed-second rule always runs.
    """

    def __init__(self, feed: Any, monitor: LagMonitor, *,
                 on_update: Callable[[np.ndarray, int], None] | None = None,
                 on_second: Callable[[int, dict], None] | None = None,
                 second_quiet_ms: float = DEFAULT_QUIET_MS, expect_seconds: int = DEFAULT_EXPECT_SECONDS,
                 strategy_thread: bool = False, spread_s: float = 0.0, publisher: Any = None) -> None:
        self.feed = feed
        self.publisher = publisher
        self.engine = feed.engine
        self.stats = feed.stats
        self.on_update = on_update
        self.on_second = on_second
        self._names = (callback_name("on_update", on_update), callback_name("on_second", on_second))
        self.quiet_ms = float(second_quiet_ms)
        self.expect_seconds = int(expect_seconds)
        self._spread_s = float(spread_s)
        self.monitor = monitor
        self.tracker: SecondTracker | None = None
        self._strategy_thread = bool(strategy_thread)
        self._thread: StrategyThread | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._consuming = False  # next_second/wait_second in use: copy at every announcement
        self._latest: Second | None = None
        self._latest_skipped = 0
        self._cv = threading.Condition()
        self._waiters: list[asyncio.Future] = []
        self._closed = False

    # ------------------------------------------------------------------ set-up
    def start(self) -> None:
        """Begin (the feed's thread): with ``on_second``, the completed-second rule runs."""
        if self.on_second is not None or self.publisher is not None:
            self.track_seconds()

    def track_seconds(self) -> SecondTracker:
        """Start the completed-second rule (idempotent; on the feed's thread). Seconds up to
        the current clock are not announced: the clock's second was already under way."""
        if self.tracker is None:
            self.tracker = SecondTracker(self.engine.capacity, self._announce, quiet_ms=self.quiet_ms,
                                         expect_seconds=self.expect_seconds, floor=int(self.engine.T),
                                         spread_s=self._spread_s)
            self.feed.session.filler.before_second = self._before_second
        return self.tracker

    def _strategy(self) -> StrategyThread:
        if self._thread is None:
            feed = self.feed

            def wake(fn: Callable[[], None]) -> None:
                loop = feed._loop
                if loop is not None and not loop.is_closed():
                    try:
                        loop.call_soon_threadsafe(fn)
                    except RuntimeError:  # the loop closed meanwhile
                        pass

            self._thread = StrategyThread(
                capacity=self.engine.capacity, stats=self.stats, call=self.monitor.call,
                copy_frames=self.frames, wake_feed=wake, clock=lambda: int(self.engine.T),
                on_update=self.on_update, on_second=self.on_second,
                update_name=self._names[0], second_name=self._names[1])
        return self._thread

    def frames(self) -> dict[int, WindowFrame]:
        """Copies of every window now (the feed's thread)."""
        return copy_frames(self.engine, self.feed.universe)

    def frames_here(self) -> dict[int, WindowFrame] | None:
        """The frames of the strategy-thread call in progress, when called from that thread."""
        t = self._thread
        if t is not None and threading.current_thread() is t.thread:
            return t.current
        return None

    def _before_second(self, second: int) -> None:
        """The filler is about to upsert bars of a new second (feed thread)."""
        if self.tracker is not None:
            self.tracker.before_second(second, self.feed.session.filler.batch_first_ns)

    # ------------------------------------------------------------------ per update (feed thread)
    def on_batch(self, rows: np.ndarray, T: int) -> None:
        """The session's ``on_batch`` (the filler measured the lag already)."""
        if self.publisher is not None:
            self.publisher.publish(rows)
        tr = self.tracker
        if tr is not None:
            f = self.feed.session.filler
            if tr.counter.open_s >= 0:  # quiet before this batch came, and no timer said so yet
                tr.poll(received_ns=f.batch_first_ns)
            tr.update(f.rows, f.seconds, f.n, f.batch_first_ns, f.batch_last_ns, T - self.engine.depth, T)
            if self._timer is None and tr.counter.open_s >= 0:
                self._arm()
        if self.on_update is not None:
            if self._strategy_thread:
                self._strategy().post_update(rows, T)
            else:
                self.monitor.call(self._names[0], self.on_update, rows, T)

    # ------------------------------------------------------------------ quiet timer
    def _arm(self) -> None:
        loop = self.feed._loop
        tr = self.tracker
        if loop is None or tr is None or self._closed or not loop.is_running():
            return
        deadline = tr.deadline_ns()
        if deadline is None:
            return
        self._timer = loop.call_later(max(0.0, (deadline - time.time_ns()) / 1e9), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        tr = self.tracker
        if tr is None or self._closed:
            return
        tr.poll()
        if tr.counter.open_s >= 0:
            self._arm()

    # ------------------------------------------------------------------ announcements
    def _announce(self, T: int, info: dict) -> None:
        """The tracker closed ``T`` (feed thread): count it, call back, hand it over."""
        stats = self.stats
        info["clock"] = int(self.engine.T)
        stats.seconds_completed[info["reason"]] += 1
        stats.second_latency.record_value(min(max(int(info["latency_us"]), 1), 3_600_000_000))
        stats.second_since_last_bar.record_value(min(max(int(info["since_last_bar_us"]), 1), 3_600_000_000))
        if self.publisher is not None:
            self.publisher.publish_second(T, info)
        frames = None
        if self.on_second is not None:
            if self._strategy_thread:
                frames = self.frames()
                self._strategy().post_second(T, dict(info), frames)
            else:
                self.monitor.call(self._names[1], self.on_second, T, info)
        if self._consuming:
            self._hand_over(Second(T, dict(info), frames if frames is not None else self.frames()))

    def _hand_over(self, sec: Second) -> None:
        with self._cv:
            if self._latest is not None:  # the consumer has not taken the previous one
                self._latest_skipped += 1
                self.stats.seconds_skipped += 1
            sec.info["skipped"] = self._latest_skipped
            self._latest = sec
            self._cv.notify_all()
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def _take(self) -> Second | None:
        with self._cv:
            sec, self._latest = self._latest, None
            if sec is not None:
                self._latest_skipped = 0
            return sec

    def start_consuming(self) -> None:
        """``next_second``/``wait_second`` from now on (the feed's thread)."""
        self.track_seconds()
        self._consuming = True

    async def next_second(self, timeout: float | None = None) -> Second:
        """The next announced second (the newest, when several were announced meanwhile)."""
        self.start_consuming()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            sec = self._take()
            if sec is not None:
                return sec
            if self._closed:
                raise ConnectionError("the feed is closed")
            fut = loop.create_future()
            self._waiters.append(fut)
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"no second announced within {timeout} s")
            try:
                await asyncio.wait_for(fut, remaining)
            except asyncio.TimeoutError:
                raise TimeoutError(f"no second announced within {timeout} s") from None

    def wait_second(self, timeout: float | None = None) -> Second:
        """Thread mode: block until the next announced second (the newest; see ``next_second``)."""
        with self._cv:
            if not self._cv.wait_for(lambda: self._latest is not None or self._closed, timeout):
                raise TimeoutError(f"no second announced within {timeout} s")
        sec = self._take()
        if sec is None:
            raise ConnectionError("the feed is closed")
        return sec

    # ------------------------------------------------------------------ stats, end
    def flush_stats(self) -> None:
        """The late-bar count into ``stats`` (the feed's thread)."""
        if self.tracker is not None:
            self.stats.late_bars = self.tracker.late_bars

    def close(self) -> None:
        """Stop the timer and the strategy thread; wake consumers (they get ConnectionError)."""
        self._closed = True
        if self.tracker is not None:
            self.feed.session.filler.before_second = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._thread is not None:
            self._thread.stop()
        with self._cv:
            self._cv.notify_all()
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)
