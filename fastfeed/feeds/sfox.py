"""sFOX websocket ticker feed ``ticker.sfox.<pair>`` (docs/PROTOCOLS.md §2, with its bar rule).

Data messages are envelopes without a tag, ``{sequence, recipient, timestamp, payload}``;
acknowledgements carry ``type`` (``success`` / ``error``) and ``action``. One Struct
with optional fields decodes both in one pass (``type`` present → ack), so there is no
second parse. Ticker values are cumulative since 00:00 UTC; the feed's filler
(:class:`fastfeed._ext.decode.SfoxFiller`, the same Cython path as the bar feeds')
differences them into per-second bars and keeps the 24-hour values as given; what it
notes (sequence gaps, unknown recipients, invalid updates, disorder) and the acks reach
:meth:`SfoxSession._handle_other`.
"""
from __future__ import annotations

import re
from typing import Any

import msgspec

from .._ext.decode import SfoxFiller
from ..errors import UniverseFull
from .base import BaseSession

TOPIC_PREFIX = "ticker.sfox."

_TOPIC = re.compile(r"ticker\.sfox\.([a-z0-9]{2,24})")


class Payload(msgspec.Struct, gc=False):
    """A ticker payload or an ack payload: every field optional, unknown ones ignored."""

    last: float | None = None
    volume: float | None = None
    vwap: float | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    amount: float | None = None
    pair: str | None = None
    timestamp: str | None = None
    action: str | None = None
    feeds: list[str] | None = None
    error: str | None = None


class Envelope(msgspec.Struct, gc=False):
    """Data: ``sequence, recipient, timestamp`` (epoch ns), ``payload``; acks add ``type``."""

    type: str | None = None
    sequence: int | None = None
    recipient: str | None = None
    timestamp: int | None = None
    payload: Payload | None = None
    action: str | None = None


class _SeqProbe(msgspec.Struct):
    sequence: Any = None


decoder = msgspec.json.Decoder(Envelope)
_seq_probe = msgspec.json.Decoder(_SeqProbe)
element_decoder = decoder

_encode = msgspec.json.Encoder().encode


def auth_message(api_key: str) -> bytes:
    return _encode({"type": "authenticate", "apiKey": api_key, "enterprise": "true"})


def subscribe_message(topics: list[str]) -> bytes:
    return _encode({"type": "subscribe", "feeds": topics})


def unsubscribe_message(topics: list[str]) -> bytes:
    return _encode({"type": "unsubscribe", "feeds": topics})


def check_topic(topic: str) -> str:
    if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
        raise ValueError(f"bad topic {topic!r}: expected ticker.sfox.<pair>, e.g. ticker.sfox.btcusd")
    return topic


class SfoxSession(BaseSession):
    """Session for the sFOX ticker feed.

    The pair (``btcusd``) is the universe symbol. ``session.sequence_gaps`` mirrors
    ``stats.sequence_gaps``; each gap also calls ``on_event("sequence_gap", {...})``.
    ``session.daily(pair)`` gives the latest 24-hour values as sFOX sent them.
    """

    name = "sfox"
    tag_field = "type"
    known_tags = frozenset({"success", "error"})
    decoder = decoder
    element_decoder = element_decoder

    def __init__(self, engine: Any, universe: Any, stats: Any, **kw: Any) -> None:
        super().__init__(engine, universe, stats, **kw)
        self._bind(SfoxFiller(Envelope, Payload, universe, UniverseFull, engine, TOPIC_PREFIX))
        #: the per-pair state (previous update, current bar, 24-hour values)
        self.sfox = self.filler.state

    # topics
    def _check_topic(self, topic: str) -> str:
        return check_topic(topic)

    def _symbols_of(self, topics: Any) -> set[str]:
        return {t[len(TOPIC_PREFIX):] for t in topics}

    # wire
    def _auth_messages(self) -> list[bytes]:
        return [auth_message(self._api_key)] if self._api_key else []

    def _subscribe_message(self, topics: list[str]) -> bytes:
        return subscribe_message(topics)  # one request for every feed (40 requests/min limit)

    def _unsubscribe_message(self, topics: list[str]) -> bytes:
        return unsubscribe_message(topics)

    def _reset_connection_state(self) -> None:
        # sequence numbers are per connection; the per-pair cumulative state is kept: the
        # first update after a reconnect differences against the last one before it
        self.filler.reset_sequence()

    # data
    def daily(self, pair: str) -> dict[str, float] | None:
        """Latest 24-hour (since 00:00 UTC) values of ``pair`` as given, or None."""
        row = self.universe.index.get(pair)
        st = self.sfox
        if row is None or st.day_t[row] < 0:
            return None
        return {
            "open": float(st.day_open[row]), "high": float(st.day_high[row]),
            "low": float(st.day_low[row]), "volume": float(st.day_volume[row]),
            "vwap": float(st.day_vwap[row]), "last": float(st.day_last[row]),
            "timestamp_ns": int(st.day_t[row]),
        }

    def _on_sequence_gap(self, expected: int, got: int, recipient: str | None) -> None:
        self.stats.sequence_gaps += 1
        self._emit("sequence_gap", {"expected": expected, "got": got, "recipient": recipient})
        self._logger("sequence_gap", "sfox: sequence gap: expected %d, got %d", expected, got)

    def _decode_elements(self, payload: Any, err: Exception) -> list:
        good = super()._decode_elements(payload, err)
        if not good:  # a message that did not decode still took its sequence number
            try:
                seq = _seq_probe.decode(payload).sequence
            except Exception:
                seq = None
            if isinstance(seq, int):
                expected = self.filler.note_sequence(seq)
                if expected >= 0:
                    self._on_sequence_gap(expected, seq, None)
        return good

    def _handle_other(self, msg: Any, recv_ns: int) -> None:
        """An ack (``Envelope``), or a note of the filler (a tuple, see ``SfoxFiller``)."""
        if type(msg) is not tuple:
            self._on_ack(msg)
            return
        kind = msg[0]
        if kind == "sequence_gap":
            self._on_sequence_gap(msg[1], msg[2], msg[3])
        elif kind == "unknown":
            self.stats.unknown_messages += 1
            self._logger("unknown", "sfox: message for unknown recipient %r skipped", msg[1])
        elif kind == "validation":
            self.stats.count_decode_error("validation")
            self._logger("validation", "sfox: ticker without timestamp/last/volume skipped")
        elif kind == "disorder":
            self.stats.sfox_out_of_order += 1
            self._logger("disorder", "sfox: update older than the previous one for %s skipped", msg[1])

    def _on_ack(self, env: Envelope) -> None:
        action = env.action or (env.payload.action if env.payload is not None else None)
        state = self.state
        if env.type == "success":
            state["last_status"] = {"status": "success", "action": action}
            if action == "authenticate":
                state["authenticated"] = True
            elif action == "subscribe" and env.payload is not None and env.payload.feeds:
                state.setdefault("subscribed", set()).update(env.payload.feeds)
            elif action == "unsubscribe" and env.payload is not None and env.payload.feeds:
                state.setdefault("subscribed", set()).difference_update(env.payload.feeds)
        elif env.type == "error":
            error = self._scrub((env.payload.error if env.payload is not None else None) or "error")
            state["last_error"] = f"{action}: {error}"
            if action == "authenticate":
                self.on_refused(f"authenticate: {error}")
            elif self._refuse_unauthenticated(f"{action}: {error}"):
                pass
            else:
                self._emit("error", {"action": action, "message": error})
                self._logger("status_error", "sfox: %s failed: %s", action, error)
        else:
            self.stats.unknown_messages += 1
            self._logger("unknown", "sfox: unknown message type %r skipped", env.type)

