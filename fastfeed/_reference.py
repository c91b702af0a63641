"""Plain-Python reference engine: the meaning of :class:`fastfeed._ext.engine.Engine`.

Slow on purpose and obviously right: bars live in a dict keyed by ``(row, second)``
and every window is recomputed by brute force (``math.fsum`` for the sums) when it is
read.  The tests drive the same sequences through this and the Cython engine and
compare after every step.  The rules (see ``docs/ENGINE.md``, "Semantics"):

* a bar is rejected, in this order, as ``bad_row`` (row outside ``[0, capacity)``),
  ``invalid_rejected`` (a non-finite number, ``volume < 0``, a price <= 0, open or
  close outside ``[low, high]``, or ``second < 0``), ``future_rejected`` (``second >
  now + max_future_skew`` when ``now`` is not NaN), ``stale_dropped`` (``second <= T
  - depth``);
* otherwise it is accepted: the clock ``T`` moves to ``max(T, second)`` and the bar
  is stored, replacing (``replaced``) or adding (``inserted``) the bar of its
  ``(row, second)``;
* window ``W`` as of ``T`` holds the bars with ``T - W < second <= T``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ReferenceEngine", "ReferenceWindow", "bars", "assert_windows_match", "assert_history_match"]

FIELDS = ("open", "high", "low", "close", "volume", "pv")


@dataclass
class ReferenceWindow:
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    vwap: np.ndarray
    count: np.ndarray


def valid_bar(second, o, h, l, c, v, pv):
    """Finite numbers, second >= 0, volume >= 0, every price > 0, low <= open, close <= high."""
    prices = (o, h, l, c)
    return (all(math.isfinite(x) for x in (*prices, v, pv)) and second >= 0 and v >= 0
            and all(p > 0 for p in prices) and l <= o <= h and l <= c <= h)


class ReferenceEngine:
    def __init__(self, capacity=16384, windows=(60, 300, 900), depth=None, max_future_skew=5.0):
        self.capacity = int(capacity)
        self.windows = tuple(int(w) for w in windows)
        self.depth = int(depth) if depth is not None else max(self.windows)
        self.max_future_skew = float(max_future_skew)
        self.T = -1
        self.bars: dict[tuple[int, int], tuple[float, ...]] = {}
        self.counters = dict.fromkeys(
            ("accepted", "inserted", "replaced", "stale_dropped", "future_rejected",
             "invalid_rejected", "bad_row"), 0)
        self._last_rows: list[int] = []

    # -- writes ---------------------------------------------------------------------
    def upsert_one(self, row, second, o, h, l, c, v, pv, now=math.nan):
        row, second = int(row), int(second)
        bar = (float(o), float(h), float(l), float(c), float(v), float(pv))
        if not 0 <= row < self.capacity:
            self.counters["bad_row"] += 1
            return False
        fate = self._fate(second, bar, now)
        if fate is not None:
            self.counters[fate] += 1
            return False
        self.advance_to(second)
        key = (row, second)
        self.counters["replaced" if key in self.bars else "inserted"] += 1
        self.bars[key] = bar
        self.counters["accepted"] += 1
        return True

    def _fate(self, second, bar, now):
        """The counter that rejects the bar now, or None when it would be accepted."""
        if not valid_bar(second, *bar):
            return "invalid_rejected"
        if not math.isnan(now) and second > now + self.max_future_skew:
            return "future_rejected"
        if self.T >= 0 and second <= self.T - self.depth:
            return "stale_dropped"
        return None

    def accepts(self, seconds, o, h, l, c, v, now=math.nan, pv=None):
        pv = [0.0] * len(seconds) if pv is None else pv
        return np.array([self._fate(int(seconds[i]), tuple(float(x[i]) for x in (o, h, l, c, v, pv)), now)
                         is None for i in range(len(seconds))], dtype=bool)

    def upsert(self, rows, seconds, o, h, l, c, v, pv, n=-1, now=math.nan):
        n = len(rows) if n < 0 else n
        accepted = 0
        touched: dict[int, None] = {}
        for i in range(n):
            if self.upsert_one(rows[i], seconds[i], o[i], h[i], l[i], c[i], v[i], pv[i], now):
                accepted += 1
                touched[int(rows[i])] = None
        self._last_rows = list(touched)
        return accepted

    def advance_to(self, second):
        second = int(second)
        if second > self.T:
            self.T = second
            # forget bars older than the depth (they can never be read again)
            self.bars = {k: b for k, b in self.bars.items() if k[1] > self.T - self.depth}

    def last_rows(self):
        return np.array(self._last_rows, dtype=np.int64)

    # -- reads ----------------------------------------------------------------------
    def row_window(self, row, W):
        """(open, high, low, close, volume, vwap, count) of one row, brute force."""
        held = sorted((s, b) for (r, s), b in self.bars.items() if r == row and self.T - W < s <= self.T)
        if not held:
            return (math.nan, math.nan, math.nan, math.nan, 0.0, math.nan, 0)
        vol = math.fsum(b[4] for _, b in held)
        pv = math.fsum(b[5] for _, b in held)
        return (held[0][1][0], max(b[1] for _, b in held), min(b[2] for _, b in held),
                held[-1][1][3], vol, pv / vol if vol != 0 else math.nan, len(held))

    def window(self, W):
        if W not in self.windows:
            raise KeyError(W)
        cols = [np.full(self.capacity, np.nan) for _ in range(6)]
        cols[4][:] = 0.0
        count = np.zeros(self.capacity, dtype=np.int64)
        for row in {r for r, _ in self.bars}:
            *vals, cnt = self.row_window(row, W)
            for col, x in zip(cols, vals):
                col[row] = x
            count[row] = cnt
        return ReferenceWindow(*cols, count)

    def history(self, row, seconds=None):
        lo = self.T - (self.depth if seconds is None else int(seconds))
        held = sorted((s, b) for (r, s), b in self.bars.items() if r == row and s > lo)
        out = {"second": np.array([s for s, _ in held], dtype=np.int64)}
        for j, name in enumerate(FIELDS):
            out[name] = np.array([b[j] for _, b in held], dtype=np.float64)
        return out


# -- test helpers (used by tests/test_engine*.py and benches) -------------------------
def bars(rows, seconds, o, h=None, l=None, c=None, v=1.0, pv=None):
    """Arrays for Engine.upsert from scalars or sequences (broadcast to len(rows))."""
    rows = np.asarray(rows, dtype=np.int64)
    n = len(rows)

    def col(x):
        return np.broadcast_to(np.asarray(x, dtype=np.float64), (n,)).copy()

    o = col(o)
    h = o.copy() if h is None else col(h)
    l = o.copy() if l is None else col(l)
    c = o.copy() if c is None else col(c)
    v = col(v)
    pv = v * c if pv is None else col(pv)
    return rows, np.broadcast_to(np.asarray(seconds, dtype=np.int64), (n,)).copy(), o, h, l, c, v, pv


def assert_windows_match(engine, ref, rel=1e-9):
    """high/low/open/close/count exact; volume/vwap within rel of math.fsum; vwap NaN iff volume 0."""
    assert engine.T == ref.T
    for W in engine.windows:
        a, b = engine.window(W), ref.window(W)
        for name in ("open", "high", "low", "close", "count"):
            x, y = getattr(a, name), getattr(b, name)
            bad = ~((x == y) | (np.isnan(x) & np.isnan(y))) if x.dtype.kind == "f" else x != y
            assert not bad.any(), f"W={W} {name}: rows {np.flatnonzero(bad)} engine {x[bad]} ref {y[bad]}"
        for name in ("volume", "vwap"):
            x, y = getattr(a, name), getattr(b, name)
            assert np.array_equal(np.isnan(x), np.isnan(y)), f"W={W} {name} NaN mismatch: {x} vs {y}"
            m = ~np.isnan(y)
            err = np.abs(x[m] - y[m])
            with np.errstate(invalid="ignore"):
                ok = (x[m] == y[m]) | (err <= rel * np.abs(y[m]))
            assert ok.all(), f"W={W} {name}: engine {x[m][~ok]} ref {y[m][~ok]}"
        assert np.array_equal(np.isnan(b.vwap), b.volume == 0)


def assert_history_match(engine, ref, row):
    a, b = engine.history(row), ref.history(row)
    assert np.array_equal(a["second"], b["second"])
    for name in FIELDS:
        assert np.array_equal(a[name], b[name]), name
