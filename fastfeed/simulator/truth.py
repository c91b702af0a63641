"""Ground truth helpers: turn what the simulator sent into the bars an engine should hold.

* :func:`upserted` applies the upsert rule (a later bar for the same ``(symbol, second)``
  replaces the earlier one: corrections) to ``Simulator.sent_bars()``.
* :func:`with_pv` adds ``pv`` per the Vantafin bar rule of docs/PROTOCOLS.md §1 (typical price, or close).
* :func:`sfox_bars` derives the per-second bars of docs/PROTOCOLS.md §2 from the sFOX
  updates a connection sent (``SimConnection.sent_updates()``).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .market import CryptoUpdate

__all__ = ["TRUTH_DTYPE", "upserted", "with_pv", "sfox_bars"]

TRUTH_DTYPE = np.dtype(
    [("symbol", "U16"), ("second", "i8"), ("open", "f8"), ("high", "f8"), ("low", "f8"),
     ("close", "f8"), ("volume", "f8"), ("pv", "f8")]
)


def with_pv(bars: np.ndarray, price: str = "typical") -> np.ndarray:
    """``bars`` (``BAR_DTYPE``) as ``TRUTH_DTYPE``: ``pv = volume * (h + l + c) / 3`` (or ``* close``)."""
    out = np.empty(len(bars), TRUTH_DTYPE)
    for f in ("symbol", "second", "open", "high", "low", "close", "volume"):
        out[f] = bars[f]
    if price == "close":
        out["pv"] = bars["volume"] * bars["close"]
    else:
        out["pv"] = bars["volume"] * (bars["high"] + bars["low"] + bars["close"]) / 3.0
    return out


def upserted(bars: np.ndarray) -> np.ndarray:
    """The last bar sent for each ``(symbol, second)``, sorted by (second, symbol)."""
    last: dict[tuple[str, int], int] = {}
    for i, (sym, sec) in enumerate(zip(bars["symbol"].tolist(), bars["second"].tolist())):
        last[(sym, sec)] = i
    idx = np.array(sorted(last.values(), key=lambda i: (int(bars["second"][i]), str(bars["symbol"][i]))),
                   dtype=np.int64)
    return bars[idx] if len(idx) else bars[:0]


def sfox_bars(updates: Iterable[tuple[int, CryptoUpdate] | CryptoUpdate]) -> np.ndarray:
    """Per-second bars from sFOX updates in arrival order (docs/PROTOCOLS.md §2), ``TRUTH_DTYPE``.

    Price: ``last`` (open first, high/low max/min, close last in the second); volume and pv
    from differencing the cumulative ``volume``/``vwap`` against the previous update of the
    pair (baseline 0 on the first update; on a UTC-day reset ``dv = V``, ``dpv = V * W``).
    Several updates in one second merge into one bar.
    """
    prev: dict[str, tuple[int, float, float]] = {}  # pair -> (ts_ns, V, W)
    bars: dict[tuple[str, int], list[float]] = {}
    order: list[tuple[str, int]] = []
    for item in updates:
        u = item[1] if isinstance(item, tuple) else item
        s = u.ts_ns // 1_000_000_000
        V, W = u.volume, u.vwap
        p = prev.get(u.pair)
        if p is None:
            dv = dpv = 0.0
        elif V < p[1] or s // 86400 > (p[0] // 1_000_000_000) // 86400:
            dv, dpv = V, V * W
        else:
            dv, dpv = V - p[1], V * W - p[1] * p[2]
        prev[u.pair] = (u.ts_ns, V, W)
        key = (u.pair, s)
        b = bars.get(key)
        if b is None:
            bars[key] = [u.last, u.last, u.last, u.last, dv, dpv]
            order.append(key)
        else:
            b[1] = max(b[1], u.last)
            b[2] = min(b[2], u.last)
            b[3] = u.last
            b[4] += dv
            b[5] += dpv
    out = np.empty(len(order), TRUTH_DTYPE)
    for i, key in enumerate(order):
        o, h, low, c, v, pv = bars[key]
        out[i] = (key[0], key[1], o, h, low, c, v, pv)
    return out
