"""What the two Polygon-like stock dialects (Vantafin ``LS``, Massive ``A``) share: the
``{"action", "params"}`` control protocol and the per-second bars with corrections."""
from __future__ import annotations

import asyncio
from typing import Any, Optional

import numpy as np

from . import bursts
from .connection import SimConnection
from .market import StockSecond

__all__ = ["StockConnection"]


class StockConnection(SimConnection):
    """A stocks connection; subclasses set ``topic_prefix`` and the encoders."""

    topic_prefix = ""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        # per second sent: (second, burst rows, delayed rows, withheld rows); see sent_seconds()
        self._rec_seconds: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []

    def _hello(self) -> None:
        self._status("connected", "Connected Successfully")
        if self.url_key is not None:
            self._check_key(self.url_key)

    def _handle(self, msg: Any) -> None:
        self._on_action(msg)

    def _on_action(self, msg: Any) -> None:
        prefix = self.topic_prefix
        if not isinstance(msg, dict) or not isinstance(msg.get("action"), str):
            self._error("invalid message: expected {\"action\": ..., \"params\": ...}")
            return
        action = msg["action"]
        params = msg.get("params")
        if action == "auth":
            if self.authenticated:
                self._status("auth_success", "authenticated")
            else:
                self._check_key(params if isinstance(params, str) else None)
            return
        if action not in ("subscribe", "unsubscribe"):
            self._error(f"unknown action: {action}")
            return
        if not self.authenticated:
            self._error("not authenticated")
            return
        if not isinstance(params, str) or not params:
            self._error("invalid params")
            return
        topics = [t.strip() for t in params.split(",") if t.strip()]
        bad = [t for t in topics if not t.startswith(prefix)]
        if bad:
            self._error(f"unknown channel: {','.join(bad)}")
            return
        for t in topics:
            sym = t[len(prefix):]
            if action == "subscribe":
                if sym == "*":
                    self.sub_all = True
                else:
                    self.sub.add(sym)
            else:
                if sym == "*":
                    self.sub_all = False
                    self.sub.clear()
                else:
                    self.sub.discard(sym)
        verb = "subscribed to" if action == "subscribe" else "unsubscribed from"
        self._status("success", f"{verb}: {','.join(topics)}")
        if action == "subscribe":
            self._start_producer()

    def _stock_rows(self) -> Optional[np.ndarray]:
        if self.sub_all:
            return None
        idx = self.sim.market.index
        return np.array(sorted(idx[s] for s in self.sub if s in idx), dtype=np.int64)

    def _emit_data(self, s: int) -> None:
        sim = self.sim
        rows = self._stock_rows()
        if rows is not None and len(rows) == 0:
            return
        bars = sim.market.stock_second(s, rows)
        f = sim.config.faults
        delayed, withheld = None, bursts.NO_ROWS
        if self.faulty and (f.withhold_every or f.delay_every):
            bars, delayed, withheld = bursts.shape(bars, s - sim.start_second, f)
        if sim.config.record:
            self._rec_seconds.append((s, bars.rows, delayed.rows if delayed is not None else bursts.NO_ROWS, withheld))
        self._emit_bars(bars, False)
        if delayed is not None:
            asyncio.get_running_loop().call_later(f.delay_ms / 1000.0, self._emit_delayed, delayed)
        if self.faulty and f.correction_every and (s - sim.start_second) % f.correction_every == 0:
            s0 = s - f.correction_lag
            if self.first_second is not None and s0 >= self.first_second:
                old = sim.market.stock_second(s0, rows)
                k = min(f.correction_count, len(old))
                if k:
                    sub = StockSecond(s0, old.rows[:k], old.open[:k], old.high[:k], old.low[:k], old.close[:k], old.volume[:k])
                    self._emit_bars(sim.market.correction(sub, s - s0), True)

    def _emit_delayed(self, bars: StockSecond) -> None:
        if not self.closed:
            self._emit_bars(bars, False)
            self.flush()

    def sent_seconds(self) -> dict[int, bursts.SecondSent]:
        """Per second: the tickers sent in its burst, delayed past it, withheld."""
        return bursts.per_second(self.sim.market.tickers, self._rec_seconds)

    def _emit_bars(self, bars: StockSecond, correction: bool) -> None:
        n = len(bars)
        if n == 0:
            return
        cfg = self.sim.config
        if cfg.record:
            self._rec.append((bars, correction))
        objs = self._encode(bars)
        if objs is None:  # the dialect's C encoder queued whole frames
            return
        per = cfg.bars_per_frame
        faults = cfg.faults
        for i in range(0, n, per):
            chunk = objs[i:i + per]
            if per == 1 and not cfg.always_array and self.single_object:
                self._data_frame(chunk[0])
                continue
            self.array_frames += 1
            if self.faulty and faults.malformed_every and self.array_frames % faults.malformed_every == 0:
                self.malformed_sent += 1
                chunk = chunk[: len(chunk) // 2] + [self.malformed] + chunk[len(chunk) // 2:]
            self._data_frame(b"[" + b",".join(chunk) + b"]")

    #: one bar per frame is sent as a bare object (not an array) unless ``always_array``
    single_object = False
    #: the malformed element the ``malformed_every`` fault inserts
    malformed = b""

    def _encode(self, bars: StockSecond) -> Optional[list[bytes]]:
        """Queue the frames of ``bars`` (returning None), or return one JSON object per bar."""
        raise NotImplementedError

    def _fast_frames(self, out: bytes, nf: int, arrays: bool) -> None:
        """Queue ``nf`` frames a C encoder wrote back to back into ``out``."""
        self.data_frames += nf
        self.array_frames += nf if arrays else 0
        self._queue(out)
        self.frames_written += nf - 1
