"""Massive (formerly Polygon) per-second aggregates ``A.{ticker}`` / ``A.*`` (docs/PROTOCOLS.md §3).

Messages are JSON arrays of objects tagged by ``ev`` (first on the wire): ``A`` (a
per-second aggregate: ``sym, v, av, op, vw, o, c, h, l, a, z, s, e``) and ``status``
(``connected`` / ``auth_success`` / ``auth_failed`` / ``success`` / ``error``), the
flow the official ``massive`` client expects. Bars: ``s = s // 1000`` (epoch ms of the
window start), ``pv = v * vw`` when ``vw`` is present, else the typical price.
"""
from __future__ import annotations

import re
from typing import Union

import msgspec

from .._ext.decode import PV_CLOSE, PV_TYPICAL, PV_VWAP
from .vantafin import VantafinSession, auth_message, check_topic, subscribe_message, unsubscribe_message

__all__ = ["Agg", "Status", "MassiveSession", "auth_message", "subscribe_message", "unsubscribe_message"]


_TOPIC = re.compile(r"A\.(\*|[A-Za-z0-9][A-Za-z0-9._/:\-]{0,31})")


class Agg(msgspec.Struct, tag_field="ev", tag="A", gc=False):
    """One per-second aggregate; only the fields fastfeed uses are declared."""

    sym: str
    v: float
    o: float
    c: float
    h: float
    l: float  # noqa: E741 - the wire name
    s: int
    vw: float | None = None


class Status(msgspec.Struct, tag_field="ev", tag="status", gc=False):
    status: str
    message: str = ""


Message = Union[Agg, Status]

decoder = msgspec.json.Decoder(Union[Agg, Status, list[Message]])
element_decoder = msgspec.json.Decoder(Message)

BAR_FIELDS = ("sym", "o", "h", "l", "c", "v", "s", "vw")


class MassiveSession(VantafinSession):
    """Session for Massive's ``A.*`` dialect (same status flow and messages as Vantafin's).

    :param pv: ``"vwap"`` (default: ``v * vw``, typical price when ``vw`` is absent),
        ``"typical"`` or ``"close"``.
    """

    name = "massive"
    tag_field = "ev"
    known_tags = frozenset({"A", "status"})
    topic_prefix = "A"
    decoder = decoder
    element_decoder = element_decoder
    bar_type = Agg
    status_type = Status
    bar_fields = BAR_FIELDS
    pv_modes = {"vwap": PV_VWAP, "typical": PV_TYPICAL, "close": PV_CLOSE}
    default_pv = "vwap"

    def _check_topic(self, topic: str) -> str:
        return check_topic(topic, "A", _TOPIC)

