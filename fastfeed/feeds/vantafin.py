"""Vantafin stocks socket: per-second live quotes ``LS.{ticker}`` (docs/PROTOCOLS.md §1).

A message is one JSON object or an array of objects, tagged by ``type`` (first on the
wire): ``live_quote_second`` (a bar), ``status`` (connection/auth/subscribe flow) and
``market_status``. Bars: ``s = timestamp // 1000`` and
``pv = volume * (high + low + close) / 3`` (or ``volume * close`` with ``pv="close"``).
"""
from __future__ import annotations

import re
from typing import Any, Union

import msgspec

from .._ext.decode import PV_CLOSE, PV_TYPICAL, BarFiller
from ..errors import UniverseFull
from .base import BaseSession


_TOPIC = re.compile(r"LS\.(\*|[A-Za-z0-9][A-Za-z0-9._/:\-]{0,31})")


class LiveQuote(msgspec.Struct, tag_field="type", tag="live_quote_second", gc=False):
    """One per-second bar (seed). ``timestamp``: window start, epoch ms.

    ``gc=False`` (here and on every feed Struct): the fields are scalars and strings, so
    no cycle is possible, and millions of short-lived Structs stay out of the GC.
    """

    ticker: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    timestamp: int


class Status(msgspec.Struct, tag_field="type", tag="status", gc=False):
    status: str
    message: str = ""


class MarketStatus(msgspec.Struct, tag_field="type", tag="market_status", gc=False):
    market: str
    timestamp: int | None = None


Message = Union[LiveQuote, Status, MarketStatus]

#: one Decoder for the whole feed: an object or an array of objects
decoder = msgspec.json.Decoder(Union[LiveQuote, Status, MarketStatus, list[Message]])
#: one element of an array (the per-element fallback)
element_decoder = msgspec.json.Decoder(Message)

_encode = msgspec.json.Encoder().encode

BAR_FIELDS = ("ticker", "open", "high", "low", "close", "volume", "timestamp", None)


def auth_message(api_key: str) -> bytes:
    return _encode({"action": "auth", "params": api_key})


def subscribe_message(topics: list[str]) -> bytes:
    return _encode({"action": "subscribe", "params": ",".join(topics)})


def unsubscribe_message(topics: list[str]) -> bytes:
    return _encode({"action": "unsubscribe", "params": ",".join(topics)})


def check_topic(topic: str, prefix: str = "LS", pattern: re.Pattern = _TOPIC) -> str:
    if not isinstance(topic, str) or not pattern.fullmatch(topic):
        raise ValueError(
            f"bad topic {topic!r}: expected {prefix}.{{TICKER}} (letters, digits, . / : - _) "
            f"or {prefix}.*"
        )
    return topic


class VantafinSession(BaseSession):
    """Session for the Vantafin ``LS`` socket.

    :param pv: ``"typical"`` (default: ``volume × (high + low + close) / 3``) or ``"close"``.
    :param batch_capacity: initial size of the batch arrays (they grow if needed).

    If the key is already in the URL (``?apiKey=``), pass ``api_key=None``: no auth
    message is sent then.
    """

    name = "vantafin"
    tag_field = "type"
    known_tags = frozenset({"live_quote_second", "status", "market_status"})
    topic_prefix = "LS"
    decoder = decoder
    element_decoder = element_decoder

    bar_type: type = LiveQuote
    status_type: type = Status
    bar_fields: tuple = BAR_FIELDS
    pv_modes = {"typical": PV_TYPICAL, "close": PV_CLOSE}
    default_pv = "typical"

    def __init__(self, engine: Any, universe: Any, stats: Any, *, pv: str | None = None,
                 batch_capacity: int = 1024, **kw: Any) -> None:
        pv = self.default_pv if pv is None else pv
        if pv not in self.pv_modes:
            raise ValueError(f"pv must be one of {', '.join(map(repr, self.pv_modes))}, not {pv!r}")
        super().__init__(engine, universe, stats, **kw)
        self.pv = pv
        self._bind(BarFiller(self.bar_type, self.bar_fields, universe, UniverseFull, engine,
                             self.pv_modes[pv], batch_capacity))

    # topics
    def _check_topic(self, topic: str) -> str:
        return check_topic(topic)

    def _symbols_of(self, topics: Any) -> set[str]:
        return {t[len(self.topic_prefix) + 1:] for t in topics if not t.endswith(".*")}

    def _wire_topics(self, topics: list[str]) -> list[str]:
        wildcard = f"{self.topic_prefix}.*"
        return [wildcard] if wildcard in topics else topics

    # wire
    def _auth_messages(self) -> list[bytes]:
        return [auth_message(self._api_key)] if self._api_key else []

    def _subscribe_message(self, topics: list[str]) -> bytes:
        return subscribe_message(self._wire_topics(topics))

    def _unsubscribe_message(self, topics: list[str]) -> bytes:
        return unsubscribe_message(topics)

    # control
    def _handle_other(self, msg: Any, recv_ns: int) -> None:
        if type(msg) is self.status_type:
            self._on_status(msg.status, self._scrub(msg.message))
        elif type(msg) is MarketStatus:
            self.state["market"] = msg.market
            self.state["market_timestamp"] = msg.timestamp
            self._emit("market_status", {"market": msg.market, "timestamp": msg.timestamp})
        else:  # pragma: no cover - the decoder only yields the types above
            self.stats.unknown_messages += 1

    def _on_status(self, status: str, message: str) -> None:
        state = self.state
        state["last_status"] = {"status": status, "message": message}
        if status == "connected":
            state["connected"] = True
        elif status == "auth_success":
            state["authenticated"] = True
        elif status == "auth_failed":
            self.on_refused(f"{status}: {message}")
        elif status.startswith("market_"):  # Massive: {"ev":"status","status":"market_closed"}
            state["market"] = status[len("market_"):]
            self._emit("market_status", {"market": state["market"], "timestamp": None})
        elif status == "error":
            if self._refuse_unauthenticated(message):
                return
            state["last_error"] = message
            self._emit("error", {"message": message})
            self._logger("status_error", "%s: server error: %s", self.name, message)

