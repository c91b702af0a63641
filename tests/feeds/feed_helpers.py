"""Shared helpers of the feed tests (no tests here): engine/universe and a session factory.

``make()`` uses the real ``Universe`` and the Cython ``Engine``; ``real=False`` gives
small stand-ins that record each ``upsert`` call.
"""
from __future__ import annotations

import numpy as np

from fastfeed import feeds
from fastfeed.engine import Engine, Stats, Universe
from fastfeed.errors import UniverseFull


class StandInUniverse:
    def __init__(self, capacity=16384):
        self.capacity = capacity
        self.index: dict[str, int] = {}
        self.symbols: list[str] = []
        self.overflow = 0

    def row(self, symbol):
        r = self.index.get(symbol)
        if r is not None:
            return r
        if len(self.symbols) >= self.capacity:
            self.overflow += 1
            raise UniverseFull(f"universe full ({self.capacity})")
        self.index[symbol] = len(self.symbols)
        self.symbols.append(symbol)
        return self.index[symbol]

    def get(self, symbol):
        return self.index.get(symbol, -1)

    def symbol(self, row):
        return self.symbols[row]

    def __len__(self):
        return len(self.symbols)


class StandInEngine:
    """Keeps the latest bar per (row, second); accepts everything not in the future."""

    def __init__(self, capacity=16384, windows=(60, 300, 900), depth=None, max_future_skew=5.0):
        self.capacity = capacity
        self.windows = windows
        self.max_future_skew = max_future_skew
        self.depth = depth if depth is not None else max(windows)
        self.bars: dict[tuple[int, int], tuple] = {}
        self.calls: list[int] = []
        self.T = -1
        self.counters = dict.fromkeys(
            ("accepted", "inserted", "replaced", "stale_dropped", "future_rejected",
             "invalid_rejected", "bad_row"), 0)
        self._last = np.zeros(0, dtype=np.int64)

    def upsert(self, rows, seconds, open, high, low, close, volume, pv, n=-1, now=float("nan")):
        n = len(rows) if n < 0 else n
        self.calls.append(n)
        acc = 0
        got = []
        for i in range(n):
            s = int(seconds[i])
            if now == now and s > now + self.max_future_skew:
                self.counters["future_rejected"] += 1
                continue
            key = (int(rows[i]), s)
            self.counters["replaced" if key in self.bars else "inserted"] += 1
            self.bars[key] = (float(open[i]), float(high[i]), float(low[i]), float(close[i]),
                              float(volume[i]), float(pv[i]))
            self.T = max(self.T, s)
            acc += 1
            got.append(key[0])
        self.counters["accepted"] += acc
        self._last = np.unique(np.array(got, dtype=np.int64))
        return acc

    def last_rows(self):
        return self._last


def make(name="vantafin", topics=None, capacity=1024, real=True, **kw):
    """(session, engine, universe, stats, events, sent) for feed ``name``."""
    if real:
        engine = Engine(capacity, (60, 300, 900), None, 1e12)
        universe = Universe(capacity)
    else:
        engine = StandInEngine(capacity, max_future_skew=1e12)
        universe = StandInUniverse(capacity)
    stats = Stats()
    events: list = []
    default_topics = {"vantafin": "LS.*", "massive": "A.*", "sfox": "ticker.sfox.btcusd"}[name]
    s = feeds.make_session(name, engine, universe, stats,
                           topics=default_topics if topics is None else topics,
                           on_event=lambda k, i: events.append((k, i)), **kw)
    sent: list[bytes] = []
    return s, engine, universe, stats, events, sent


def bars_of(engine, universe):
    """{(symbol, second): (o, h, l, c, v, pv)} of everything the engine holds."""
    if hasattr(engine, "bars"):  # stand-in and reference engines keep a dict
        return {(universe.symbol(r), s): b for (r, s), b in engine.bars.items()}
    out = {}
    for sym in universe.symbols:
        h = engine.history(universe.get(sym))
        for i, sec in enumerate(h["second"].tolist()):
            out[(sym, sec)] = tuple(float(h[k][i]) for k in ("open", "high", "low", "close", "volume", "pv"))
    return out
