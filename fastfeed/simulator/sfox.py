"""The simulator's sFOX dialect: ``/ws``, ``ticker.sfox.<pair>`` cumulative ticker updates."""
from __future__ import annotations

import datetime as _dt
import time
from typing import Any

from .connection import SimConnection
from .wire import encode_json

__all__ = ["SfoxConnection"]


def _iso_ms(ms: int) -> str:
    d = _dt.datetime.fromtimestamp(ms // 1000, tz=_dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"




class SfoxConnection(SimConnection):
    feed = "sfox"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.updates_sent = 0
        self.out_of_order_sent = 0  # updates re-sent after a newer one (fault)
        self._previous: dict[str, Any] = {}  # pair -> its last update sent

    def _hello(self) -> None:
        if self.url_key is not None and self._key_ok(self.url_key):
            self.authenticated = True

    def _handle(self, msg: Any) -> None:
        self._on_sfox(msg)

    def _status(self, status: str, message: str) -> None:  # sFOX has no status messages
        pass

    def _error(self, message: str) -> None:
        self._sfox_ack("error", "unknown", {"action": "unknown", "error": message})

    def _sfox_ack(self, kind: str, action: str, payload: dict) -> None:
        self.sequence += 1
        self._control(
            {
                "type": kind,
                "sequence": self.sequence,
                "timestamp": time.time_ns(),
                "payload": payload,
                "action": action,
            }
        )

    def _on_sfox(self, msg: Any) -> None:
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            self._sfox_ack("error", "unknown", {"action": "unknown", "error": "invalid message"})
            return
        kind = msg["type"]
        if kind == "authenticate":
            if self._key_ok(msg.get("apiKey")):
                self.authenticated = True
                self._sfox_ack("success", "authenticate", {"action": "authenticate"})
                self._after_auth()
            else:
                self._sfox_ack("error", "authenticate", {"action": "authenticate", "error": "invalid api key"})
                self.flush()
                self.hang_up(1008, "invalid api key")
            return
        if kind not in ("subscribe", "unsubscribe"):
            self._sfox_ack("error", kind, {"action": kind, "error": f"unknown type: {kind}"})
            return
        feeds = msg.get("feeds")
        if not isinstance(feeds, list) or not all(isinstance(f, str) for f in feeds):
            self._sfox_ack("error", kind, {"action": kind, "error": "feeds must be a list of strings"})
            return
        if self.sim.config.sfox_require_auth and not self.authenticated:
            self._sfox_ack("error", kind, {"action": kind, "error": "not authenticated"})
            return
        for f in feeds:
            pair = f.rsplit(".", 1)[-1] if f.startswith("ticker.sfox.") else None
            if pair is None:
                continue
            if kind == "subscribe":
                self.sub.add(pair)
            else:
                self.sub.discard(pair)
        self._sfox_ack("success", kind, {"action": kind, "feeds": feeds})
        if kind == "subscribe":
            self._start_producer()

    def _emit_data(self, s: int) -> None:
        if not self.sub:
            return
        cfg = self.sim.config
        f = cfg.faults
        for u in self.sim.market.crypto_updates(s, cfg.sfox_interval, sorted(self.sub)):
            self.sequence += 1
            if self.faulty and f.sequence_gap_every and self.sequence % f.sequence_gap_every == 0:
                self.sequence += 1
                self.sequence_gaps += 1
            if cfg.record:
                self._rec_updates.append((self.sequence, u))
            self._data_frame(self._update_message(u))
            self.updates_sent += 1
            if self.faulty and f.sfox_out_of_order_every and self.updates_sent % f.sfox_out_of_order_every == 0:
                previous = self._previous.get(u.pair)
                if previous is not None:  # the pair's previous update again: older than u
                    self.sequence += 1
                    self.out_of_order_sent += 1
                    self._data_frame(self._update_message(previous))
            self._previous[u.pair] = u

    def _update_message(self, u: Any) -> bytes:
        """The ticker message of update ``u`` with the current sequence number."""
        msg = {
            "sequence": self.sequence,
            "recipient": f"ticker.sfox.{u.pair}",
            "timestamp": u.ts_ns,
            "payload": {
                "amount": u.amount,
                "exchange": "coinbase",
                "high": u.high,
                "last": u.last,
                "low": u.low,
                "open": u.open,
                "pair": u.pair,
                "route": "Smart",
                "source": "ticker-info",
                "timestamp": _iso_ms(u.trade_ms),
                "volume": u.volume,
                "vwap": u.vwap,
            },
        }
        return encode_json(msg)
