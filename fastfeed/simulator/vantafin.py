"""The simulator's Vantafin dialect: ``/v1/stocks``, ``LS.<ticker>`` per-second bars."""
from __future__ import annotations

import time
from typing import Optional

from .._ext.simencode import encode_vantafin_frames
from .market import StockSecond
from .stocks import StockConnection

__all__ = ["VantafinConnection"]


def prefixes(tickers: list[str]) -> list[bytes]:
    """The constant start of each ticker's bar object (computed once per simulator)."""
    return [b'{"type":"live_quote_second","ticker":"%s","open":' % t.encode() for t in tickers]


def json_objects(prefix: list[bytes], bars: StockSecond) -> list[bytes]:
    """One ``live_quote_second`` object per bar (prices in cents on input), formatted in Python;
    ``encode_vantafin_frames`` writes the same bytes in C."""
    ts = bars.second * 1000
    return [
        b'%s%d.%02d,"high":%d.%02d,"low":%d.%02d,"close":%d.%02d,"volume":%d,"timestamp":%d}'
        % (prefix[r], o // 100, o % 100, h // 100, h % 100, lo // 100, lo % 100, c // 100, c % 100, v, ts)
        for r, o, h, lo, c, v in zip(
            bars.rows.tolist(), bars.open.tolist(), bars.high.tolist(), bars.low.tolist(),
            bars.close.tolist(), bars.volume.tolist()
        )
    ]


class VantafinConnection(StockConnection):
    feed = "vantafin"
    topic_prefix = "LS."
    single_object = True
    malformed = b'{"type":"live_quote_second","ticker":"BAD","open":"oops","volume":-1}'

    def _status(self, status: str, message: str) -> None:
        self._control({"type": "status", "status": status, "message": message})

    def _market_status(self, market: str) -> None:
        ms = int(time.time() * 1000)
        self._control({"type": "market_status", "market": market, "timestamp": ms})

    def _encode(self, bars: StockSecond) -> Optional[list[bytes]]:
        cfg = self.sim.config
        prefix = self.sim.cached("vantafin.prefix", prefixes)
        if not self.faulty:
            # fast path: C encoder writes whole frames (no per-frame faults on this connection)
            per = cfg.bars_per_frame
            out, nf = encode_vantafin_frames(
                prefix, bars.rows, bars.open, bars.high, bars.low, bars.close,
                bars.volume, bars.second * 1000, per, not cfg.always_array)
            self._fast_frames(out, nf, not (per == 1 and not cfg.always_array))
            return None
        return json_objects(prefix, bars)
