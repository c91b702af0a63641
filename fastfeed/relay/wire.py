"""What the relay puts on NATS: subjects, stream, headers, events — one home for each.

Subjects (``<feed>`` is ``vantafin``, ``sfox`` or ``massive``):

* ``fastfeed.<feed>.raw`` — one NATS message per vendor message, its payload the vendor's
  bytes exactly as received (reassembled, never re-encoded). Headers:

  ``Nats-Msg-Id: <epoch>-<seq>``
      JetStream de-duplication key: the relay's epoch (its start time, ns) and a
      sequence number counting every entry (messages and events) the relay made.
  ``Nats-Expected-Last-Msg-Id: <id>``
      the id of the entry published just before (absent after a resynchronisation):
      JetStream refuses an entry whose predecessor is not the last one stored, so the
      stream never holds the relay's entries out of order.
  ``Ff-Ns: <recv_ns>``
      when the relay's socket read that completed the message returned (epoch ns).
  ``Ff-End: 1``
      on the last message of each socket read (the read boundary).

* ``fastfeed.<feed>.events`` — transport and relay events, payload a JSON object
  ``{"kind": ..., "ns": <epoch ns>, "info": {...}}``; same headers but ``Ff-Ns``/``Ff-End``.

Both go to one JetStream stream (default ``FASTFEED_<FEED>``) holding
``fastfeed.<feed>.>``, so consumers read messages and events in one order.
"""
from __future__ import annotations

import time
from typing import Any, Optional

import msgspec

__all__ = [
    "subjects", "stream_name", "raw_subject", "events_subject", "msg_id", "parse_msg_id",
    "encode_event", "decode_event", "Event", "PubAck", "decode_ack", "hpub",
    "H_MSG_ID", "H_EXPECTED_LAST", "H_RECV_NS", "H_READ_END", "WRONG_LAST_MSG_ID",
    "EVENT_KINDS_DERIVED", "RELAY_EVENT_KINDS",
]

H_MSG_ID = "Nats-Msg-Id"
H_EXPECTED_LAST = "Nats-Expected-Last-Msg-Id"
H_RECV_NS = "Ff-Ns"
H_READ_END = "Ff-End"

#: JetStream error code: the expected last message id is not the stream's last one
WRONG_LAST_MSG_ID = 10070
STREAM_NOT_FOUND = 10059

#: events a consumer re-derives itself from the raw messages (its own session and Feed
#: see the same messages): relayed for observers, not replayed into a consumer
EVENT_KINDS_DERIVED = frozenset({"gap", "market_status", "auth_failed", "sequence_gap", "error", "status"})
#: events only the relay knows of
RELAY_EVENT_KINDS = frozenset({"relay_started", "relay_stopped", "relay_dropped", "heartbeat"})


def raw_subject(feed: str) -> str:
    return f"fastfeed.{feed}.raw"


def events_subject(feed: str) -> str:
    return f"fastfeed.{feed}.events"


def subjects(feed: str) -> str:
    """The stream's subject filter for ``feed``: ``fastfeed.<feed>.>``."""
    return f"fastfeed.{feed}.>"


def stream_name(feed: str) -> str:
    """The default stream name of ``feed``: ``FASTFEED_<FEED>``."""
    return "FASTFEED_" + feed.upper()


def msg_id(epoch: int, seq: int) -> str:
    return f"{epoch}-{seq}"


def parse_msg_id(mid: Optional[str]) -> tuple[int, int] | None:
    """``(epoch, seq)`` of a relay message id, ``None`` for anything else."""
    if not mid:
        return None
    e, sep, s = mid.partition("-")
    if not sep or not e.isdigit() or not s.isdigit():
        return None
    return int(e), int(s)


class Event(msgspec.Struct, omit_defaults=True):
    kind: str
    ns: int
    info: dict[str, Any] = {}


_event_enc = msgspec.json.Encoder()
_event_dec = msgspec.json.Decoder(Event)


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)


def encode_event(kind: str, info: dict[str, Any] | None = None, ns: int | None = None) -> bytes:
    """The payload of an event (values that JSON cannot hold become strings)."""
    return _event_enc.encode(Event(kind, time.time_ns() if ns is None else ns, _jsonable(info or {})))


def decode_event(payload: bytes) -> Event:
    """Parse an event payload (``msgspec.DecodeError``/``ValidationError`` when bad)."""
    return _event_dec.decode(payload)


class _AckError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class PubAck(msgspec.Struct):
    """JetStream's answer to a publish: stored (``seq``), a duplicate, or an ``error``."""

    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: Optional[_AckError] = None


_ack_dec = msgspec.json.Decoder(PubAck)


def decode_ack(payload: bytes) -> PubAck:
    try:
        return _ack_dec.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return PubAck(error=_AckError(0, 0, f"unreadable ack: {payload[:80]!r}"))


def hpub(subject: bytes, reply: bytes, mid: bytes, expected: Optional[bytes],
         recv_ns: int, end: bool, payload: bytes) -> tuple[bytes, bytes]:
    """One NATS ``HPUB`` command as ``(command line + headers, payload)``; the caller
    writes ``payload`` and ``b"\\r\\n"`` after it (no copy of the payload here).

    ``recv_ns < 0``: no ``Ff-Ns`` header (events)."""
    h = b"NATS/1.0\r\nNats-Msg-Id: %s\r\n%s%s%s\r\n" % (
        mid,
        b"Nats-Expected-Last-Msg-Id: %s\r\n" % expected if expected else b"",
        b"Ff-Ns: %d\r\n" % recv_ns if recv_ns >= 0 else b"",
        b"Ff-End: 1\r\n" if end else b"")
    n = len(h)
    if reply:
        return b"HPUB %s %s %d %d\r\n%s" % (subject, reply, n, n + len(payload), h), payload
    return b"HPUB %s %d %d\r\n%s" % (subject, n, n + len(payload), h), payload
