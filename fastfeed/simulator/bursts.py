"""Burst shaping for the completed-second tests, and its ground truth.

With the ``withhold_*`` and ``delay_*`` fault settings a connection sends a second's burst
without some tickers (withheld: never sent for that second) and with some bars held back
and sent ``delay_ms`` after the burst (late for a client that already judged the second
complete).  Each second a connection sends is recorded (:class:`SecondSent`), so a test
can tell what a client had received of second ``T`` when it announced ``T``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .faults import Faults
from .market import StockSecond

__all__ = ["NO_ROWS", "SecondSent", "shape", "per_second"]

NO_ROWS = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class SecondSent:
    """What a connection sent of one second (ticker symbols, sorted)."""

    second: int
    burst: tuple[str, ...]      # sent in the second's burst
    delayed: tuple[str, ...]    # sent ``delay_ms`` after the burst
    withheld: tuple[str, ...]   # traded, never sent for this second


def _take(bars: StockSecond, idx: np.ndarray) -> StockSecond:
    return StockSecond(bars.second, bars.rows[idx], bars.open[idx], bars.high[idx], bars.low[idx],
                       bars.close[idx], bars.volume[idx])


def shape(bars: StockSecond, offset: int, faults: Faults) -> tuple[StockSecond, StockSecond | None, np.ndarray]:
    """``(burst, delayed or None, withheld rows)`` of one second; ``offset``: seconds since
    the simulator's first second (the fault schedule counts from it)."""
    keep = np.ones(len(bars), dtype=bool)
    withheld = NO_ROWS
    if faults.withhold_every and offset % faults.withhold_every < faults.withhold_for:
        k = min(faults.withhold_count, len(bars))
        mid = (len(bars) - k) // 2  # from the middle: corrections take the first bars, delays the last
        keep[mid:mid + k] = False
        withheld = bars.rows[mid:mid + k]
    delayed = None
    if faults.delay_every and offset % faults.delay_every == 0 and faults.delay_count:
        idx = np.flatnonzero(keep)[-faults.delay_count:]
        if len(idx):
            delayed = _take(bars, idx)
            keep[idx] = False
    return _take(bars, np.flatnonzero(keep)), delayed, withheld


def per_second(tickers: Sequence[str], log: Iterable[tuple[int, np.ndarray, np.ndarray, np.ndarray]]) -> dict[int, SecondSent]:
    """``{second: SecondSent}`` from a connection's log of ``(second, burst, delayed, withheld)`` rows."""
    tick = np.asarray(tickers)

    def names(rows: np.ndarray) -> tuple[str, ...]:
        return tuple(sorted(tick[rows].tolist()))

    return {s: SecondSent(s, names(b), names(d), names(w)) for s, b, d, w in log}
