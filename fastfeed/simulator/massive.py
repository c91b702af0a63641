"""The simulator's Massive (Polygon) dialect: ``/stocks``, ``A.<ticker>`` per-second aggregates.

Control messages are arrays (``[{"ev": "status", ...}]``); each aggregate carries the day's
accumulated volume, open, VWAP and average trade size, kept per connection.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .._ext.simencode import encode_massive_frames
from .market import StockSecond
from .stocks import StockConnection

__all__ = ["MassiveConnection"]


def prefixes(tickers: list[str]) -> list[bytes]:
    """The constant start of each ticker's aggregate object (computed once per simulator)."""
    return [b'{"ev":"A","sym":"%s","v":' % t.encode() for t in tickers]


class MassiveConnection(StockConnection):
    feed = "massive"
    topic_prefix = "A."
    malformed = b'{"ev":"A","sym":"BAD","v":"oops"}'

    def _status(self, status: str, message: str) -> None:
        self._control([{"ev": "status", "status": status, "message": message}])

    def _market_status(self, market: str) -> None:
        self._control([{"ev": "status", "status": "market_" + market, "message": f"market is {market}"}])

    def _encode(self, bars: StockSecond) -> Optional[list[bytes]]:
        fa = self._massive_arrays(bars)
        if not self.faulty:
            out, nf = encode_massive_frames(
                self.sim.cached("massive.prefix", prefixes), bars.rows, fa["v"], fa["av"], fa["op"],
                fa["vw4"], bars.open, bars.close, bars.high, bars.low, fa["a4"], fa["z"],
                bars.second * 1000, self.sim.config.bars_per_frame)
            self._fast_frames(out, nf, True)
            return None
        return self._massive_objects(bars, fa)

    def _massive_arrays(self, bars: StockSecond) -> dict[str, np.ndarray]:
        """Per-bar fields of the ``A`` aggregates (day accumulators kept per connection)."""
        acc = self._massive_acc
        n_all = self.sim.market.n_tickers
        if acc is None:
            acc = self._massive_acc = {
                "av": np.zeros(n_all, np.int64),
                "pv": np.zeros(n_all, np.float64),
                "op": np.zeros(n_all, np.int64),
                "trades": np.zeros(n_all, np.int64),
            }
        r = bars.rows
        v = bars.volume
        vw = (bars.high + bars.low + bars.close) / 300.0
        acc["av"][r] += v
        acc["pv"][r] += vw * v
        acc["trades"][r] += 1 + (v // 100)
        op = acc["op"]
        first = op[r] == 0
        op[r[first]] = bars.open[first]
        av = acc["av"][r]
        return {
            "v": v, "av": av, "op": op[r],
            "vw4": np.rint(vw * 1e4).astype(np.int64),
            "a4": np.rint(acc["pv"][r] / av * 1e4).astype(np.int64),
            "z": av // np.maximum(1, acc["trades"][r]),
        }

    def _massive_objects(self, bars: StockSecond, f: dict[str, np.ndarray]) -> list[bytes]:
        pre = self.sim.cached("massive.prefix", prefixes)
        ms0 = bars.second * 1000

        def c2(x: int) -> str:
            return f"{x // 100}.{x % 100:02d}"

        def f4(x: int) -> str:
            return f"{x // 10000}.{x % 10000:04d}"

        return [
            b'%s%d,"av":%d,"op":%s,"vw":%s,"o":%s,"c":%s,"h":%s,"l":%s,"a":%s,"z":%d,"s":%d,"e":%d}'
            % (pre[row], vol, av, c2(op).encode(), f4(vw).encode(), c2(o).encode(), c2(c).encode(),
               c2(h).encode(), c2(lo).encode(), f4(a).encode(), z, ms0, ms0 + 1000)
            for row, vol, av, op, vw, o, c, h, lo, a, z in zip(
                bars.rows.tolist(), f["v"].tolist(), f["av"].tolist(), f["op"].tolist(), f["vw4"].tolist(),
                bars.open.tolist(), bars.close.tolist(), bars.high.tolist(), bars.low.tolist(),
                f["a4"].tolist(), f["z"].tolist())
        ]
