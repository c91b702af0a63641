"""The completed second: when is the cross-section of second ``T`` complete?

A full-market feed sends the bars of second ``T`` as a burst with no end-of-burst marker.
:class:`SecondTracker` decides, update by update, when the burst of ``T`` is over and
calls ``on_close(T, info)`` **exactly once per second that received bars, in order**:

* ``"complete"``: every instrument expected in ``T`` has reported ``T`` (checked after
  each engine update);
* ``"quiet"``: no bar of ``T`` arrived for ``quiet_ms`` after ``T``'s last bar
  (:meth:`SecondTracker.poll`, driven by a timer at :meth:`SecondTracker.deadline_ns`).
  For a feed whose bars arrive *during* their second (``spread_s`` = 1: sFOX), the
  silence counts from the end of ``T`` at the earliest (at most ``spread_s`` after the
  last bar): a lull inside the second does not close it;
* ``"next"``: a bar of a later second arrived first (:meth:`SecondTracker.before_second`
  closes ``T`` before that bar reaches the engine, so the windows are still as of ``T``).

Reasons follow receive times: a later second received after ``T``'s quiet deadline
closes ``T`` as ``quiet`` even when no timer ran (a replay, a busy loop).

The **expected set** of ``T`` is the instruments that reported in any of the
``expect_seconds`` seconds before ``T`` (late reports included): a halted or delisted
instrument drops out by itself after ``expect_seconds`` seconds, a new one counts from
the second after its first bar. With no expected instrument (the first second, or after
a pause longer than ``expect_seconds``) a second closes by ``quiet`` or ``next`` only.

Bars of a second already announced (late bars, corrections) — or of a second that got
its first bar after a later second opened — are *late*: they are counted (``late_bars``
in ``info`` since the previous call, :meth:`SecondTracker.late_of` per second) and never
announce anything.

``info`` holds ``reason``, ``reported`` and ``expected`` (instrument counts),
``latency_us`` (from the receive time of ``T``'s first bar to the call),
``since_last_bar_us`` (from the receive time of ``T``'s last bar so far) and
``late_bars``.

Costs: a few array accesses per bar in Cython (``fastfeed._ext.seconds.SecondCounter``),
O(expect_seconds) per update; nothing at all for a feed that does not ask for it.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from .._ext.seconds import SecondCounter

__all__ = ["REASONS", "SecondTracker", "DEFAULT_QUIET_MS", "DEFAULT_EXPECT_SECONDS"]

#: the reasons a second is announced, in the order ``stats.seconds_completed`` lists them
REASONS = ("complete", "quiet", "next")
DEFAULT_QUIET_MS = 20.0
DEFAULT_EXPECT_SECONDS = 3

CloseCallback = Callable[[int, dict], None]


class SecondTracker:
    """The completion rule over one engine's updates.

    :param capacity: the engine's row capacity.
    :param on_close: ``on_close(T, info)``, once per second, in order (see the module).
        Called from :meth:`update` or :meth:`poll`; the counts are final for ``T`` when
        it is called.
    :param quiet_ms: ``second_quiet_ms``: how long after ``T``'s last bar a silence
        closes ``T``.
    :param expect_seconds: how many seconds back a report makes an instrument expected.
    :param floor: seconds ``<= floor`` are never announced (the clock when tracking began).
    :param spread_s: how long after the start of ``T`` its bars may still arrive (0: bars
        come as a burst after the second; 1.0: during the second, as sFOX updates do).
    :param counter: the counting kernel (default :class:`SecondCounter`; tests pass the
        plain reference).
    """

    def __init__(self, capacity: int, on_close: CloseCallback, *, quiet_ms: float = DEFAULT_QUIET_MS,
                 expect_seconds: int = DEFAULT_EXPECT_SECONDS, floor: int = -1, spread_s: float = 0.0,
                 counter: Any = None) -> None:
        if quiet_ms <= 0:
            raise ValueError("second_quiet_ms must be > 0")
        if int(expect_seconds) < 1:
            raise ValueError("expect_seconds must be >= 1")
        self.counter = counter if counter is not None else SecondCounter(capacity, int(expect_seconds), int(floor))
        self.on_close = on_close
        self.quiet_ms = float(quiet_ms)
        self.quiet_ns = int(quiet_ms * 1e6)
        self.expect_seconds = int(expect_seconds)
        self.spread_ns = int(spread_s * 1e9)
        self.first_ns = 0  # receive time of the open second's first bar
        self.last_ns = 0   # ... of its last bar so far
        self.completed = dict.fromkeys(REASONS, 0)

    @property
    def open_second(self) -> int | None:
        """The second being collected (not announced yet), or ``None``."""
        s = self.counter.open_s
        return s if s >= 0 else None

    @property
    def late_bars(self) -> int:
        """Late bars in all (bars of seconds already announced)."""
        return int(self.counter.late_bars)

    def late_of(self, second: int) -> int | None:
        """Late bars ``second`` received so far (``None``: too far back to be held)."""
        n = self.counter.late_of(second)
        return None if n < 0 else int(n)

    def before_second(self, second: int, received_ns: int | None = None) -> None:
        """Bars of ``second``, received at ``received_ns``, are about to reach the engine: if
        later than the open second, that one closes now, while the windows are still as of
        it — reason ``quiet`` if they came after its quiet deadline (the timer was late, or
        there is none: a replay), else ``next``."""
        open_s = self.counter.open_s
        if 0 <= open_s < second:
            deadline = self.deadline_ns()
            late = received_ns is not None and deadline is not None and received_ns >= deadline
            self._close("quiet" if late else "next")

    def update(self, rows: np.ndarray, seconds: np.ndarray, n: int, first_ns: int, last_ns: int,
               lo: int, hi: int) -> None:
        """One engine update: the bars ``(rows[i], seconds[i])``, ``i < n``, in arrival order.

        ``first_ns``/``last_ns``: receive times (epoch ns) of the update's first and last
        message; ``lo``/``hi``: bars with a second ``<= lo`` (dropped as too old) or
        ``> hi`` (rejected: beyond the engine's clock) are not counted.  A bar of a second
        later than the open one closes it (reason ``next``) unless :meth:`before_second`
        did already.
        """
        k = self.counter
        i = 0
        while True:
            i = k.feed(rows, seconds, i, n, lo, hi)
            if k.opened:
                self.first_ns = first_ns
            if k.saw_open:
                self.last_ns = last_ns
            if i >= n:
                break
            self._close("next")
        if k.open_s >= 0 and k.complete():
            self._close("complete")

    def deadline_ns(self) -> int | None:
        """When the open second goes quiet (epoch ns), ``None`` when none is open."""
        T = self.counter.open_s
        if T < 0:
            return None
        last = self.last_ns
        if self.spread_ns:  # not before T's bars can have arrived, nor spread_s after the last one
            last = max(last, min(T * 1_000_000_000 + self.spread_ns, last + self.spread_ns))
        return last + self.quiet_ns

    def poll(self, now_ns: int | None = None, received_ns: int | None = None) -> bool:
        """Close the open second if it has been quiet for ``quiet_ms`` — by ``now_ns``, or,
        given ``received_ns``, before data received then (a replay, a late timer); True if
        it closed."""
        deadline = self.deadline_ns()
        if deadline is None:
            return False
        now = time.time_ns() if now_ns is None else now_ns
        if (now if received_ns is None else received_ns) < deadline:
            return False
        self._close("quiet", now)
        return True

    def _close(self, reason: str, now_ns: int | None = None) -> None:
        k = self.counter
        T = int(k.open_s)
        now = time.time_ns() if now_ns is None else now_ns
        info = {
            "reason": reason,
            "reported": int(k.reported),
            "expected": int(k.expected()),
            "latency_us": (now - self.first_ns) / 1e3,
            "since_last_bar_us": (now - self.last_ns) / 1e3,
            "late_bars": int(k.late_since),
        }
        k.close()
        self.completed[reason] += 1
        self.on_close(T, info)
