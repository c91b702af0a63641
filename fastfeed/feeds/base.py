"""Session machinery shared by the feeds: decode with fallback, counting, events, topics.

A feed module supplies the wire knowledge (Structs, one ``msgspec.json.Decoder``,
message builders, topic rules); :class:`BaseSession` runs the per-message path:

1. decode the whole message at once (one object or an array of objects);
2. if that fails, decode the array element by element (``list[msgspec.Raw]``), so one
   bad element of 100 loses only that element; every loss is counted by kind
   (``json``, ``validation``, ``utf8``, ``values``) or as an unknown message;
3. the feed's filler (:class:`fastfeed._ext.decode.BarFiller`, Cython) fills the batch
   arrays and makes one ``engine.upsert`` per socket read; control messages go to the
   feed's handler.

The filler *is* the message path: the transport's listener hands it each message in C
(:meth:`BaseSession.message_sink`), Python callers use :attr:`BaseSession.on_message`
(the filler's); this module supplies the slow paths (decode fallback, counting, logs,
events). Nothing raises out of either.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from .._ext.decode import BarFiller
from ..engine.stats import sync_engine_counters
from ..errors import AuthError
from ..log import RateLimitedLog
from ..transport.masking import mask_secrets, remember_secret
from .registry import FEEDS, topic_list

log = logging.getLogger("fastfeed.feeds")

EventCallback = Callable[[str, dict], None]
BatchCallback = Callable[[Any, int], None]
GapCallback = Callable[[int, int], None]

#: how often (ns of receive time) buffered latencies and engine counters reach ``Stats``
FLUSH_EVERY_NS = 250_000_000


class _Probe(msgspec.Struct):
    """Reads only the tag of a message that failed to decode (to tell unknown from bad)."""

    type: Any = msgspec.UNSET
    ev: Any = msgspec.UNSET


_probe = msgspec.json.Decoder(_Probe)
_raw_list = msgspec.json.Decoder(list[msgspec.Raw])


def _invalid_utf8(raw: Any) -> bool:
    """True when ``raw`` is not valid UTF-8 (classified by the bytes, not by which exception
    the installed msgspec raises: 0.22 raised ``UnicodeDecodeError``, 0.23 ``DecodeError``)."""
    try:
        bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _snippet(payload: Any, limit: int = 80) -> str:
    b = bytes(memoryview(payload)[:limit])
    return repr(b) + ("..." if len(payload) > limit else "")


class BaseSession:
    """The Session protocol of ARCHITECTURE.md, with the per-message decode path.

    Subclasses set :attr:`name`, :attr:`tag_field`, :attr:`known_tags`, build
    :attr:`decoder` / :attr:`element_decoder` and their filler (:meth:`_bind`), and
    implement :meth:`_auth_messages`, :meth:`_subscribe_message`,
    :meth:`_unsubscribe_message`, :meth:`_check_topic` and :meth:`_handle_other`.

    ``on_batch(rows, T)`` is called after each engine update that accepted bars;
    ``on_gap(before, after)`` when the first update after :meth:`expect_gap` skipped
    whole seconds; ``on_event(kind, info)`` for control events.
    """

    name = "base"
    tag_field = "type"
    known_tags: frozenset[str] = frozenset()
    decoder: msgspec.json.Decoder
    element_decoder: msgspec.json.Decoder
    filler: BarFiller

    def __init__(
        self,
        engine: Any,
        universe: Any,
        stats: Any,
        *,
        topics: str | Iterable[str] = (),
        api_key: str | None = None,
        on_batch: BatchCallback | None = None,
        on_event: EventCallback | None = None,
        on_gap: GapCallback | None = None,
    ) -> None:
        self.engine = engine
        self.universe = universe
        self.stats = stats
        self._api_key = api_key or None
        remember_secret(self._api_key)
        self.on_batch = on_batch
        self.on_event = on_event
        self.on_gap = on_gap
        self.fatal: BaseException | None = None
        self.state: dict[str, Any] = {
            "connected": False,
            "authenticated": False,
            "market": None,
            "last_status": None,
            "last_error": None,
        }
        self._send: Callable[[bytes], None] | None = None
        self._topics: dict[str, None] = {}  # ordered set
        self._logger = RateLimitedLog(log)
        self._add_topics(topic_list(topics))

    # ------------------------------------------------------------------ identity
    @property
    def api_key_env(self) -> str:
        """The environment variable of this feed's key (from the registry)."""
        return FEEDS[self.name].api_key_env

    def __repr__(self) -> str:  # never the key
        return (
            f"{type(self).__name__}(topics={len(self._topics)}, "
            f"api_key={'***' if self._api_key else None}, state={self.state!r})"
        )

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(self._topics)

    def _scrub(self, text: str) -> str:
        """``text`` with every key masked (server text may echo what we sent, or the URL's key)."""
        return mask_secrets(text, (self._api_key,) if self._api_key else ())

    def on_refused(self, reason: str) -> None:
        """Access was refused (``reason``: what the server did, without the key): make it
        final. Sets :attr:`fatal` to an :class:`AuthError` (the transport stops
        reconnecting and raises it), emits ``auth_failed`` and logs one line.

        The transport calls it for HTTP 401/403 on the upgrade and a CLOSE 1008; the feeds
        call it for an ``auth_failed`` status and for a "not authenticated" error."""
        reason = self._scrub(reason)
        self.state["authenticated"] = False
        self.state["last_error"] = reason
        if self.fatal is None:
            self.fatal = AuthError(
                f"{self.name} refused access ({reason}); check the key (env {self.api_key_env}) "
                "— not retrying",
                key_env=self.api_key_env, reason=reason,
            )
            self._emit("auth_failed", {"message": reason})
            # INFO: the AuthError itself reaches the caller (the CLI prints it as its one line)
            self._logger("auth", "%s: access refused: %s", self.name, reason, level=logging.INFO)

    def _refuse_unauthenticated(self, message: str) -> bool:
        """A server error saying the client is not authenticated (answering a subscribe
        sent without a valid key) refuses access; True when ``message`` was one."""
        if "not authenticated" not in message.lower():
            return False
        self.on_refused(message if self._api_key else f"{message}; no key was given")
        return True

    def _emit(self, kind: str, info: dict) -> None:
        if self.on_event is not None:
            try:
                self.on_event(kind, info)
            except Exception:
                log.exception("%s: on_event(%r) raised", self.name, kind)

    # ------------------------------------------------------------------ topics
    def _check_topic(self, topic: str) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _symbols_of(self, topics: Iterable[str]) -> set[str]:
        """Symbols a subscription to ``topics`` names explicitly (not wildcards)."""
        return set()

    def _add_topics(self, topics: list[str]) -> list[str]:
        checked = [self._check_topic(t) for t in topics]
        new = [t for t in dict.fromkeys(checked) if t not in self._topics]
        index = self.universe.index
        want = {s for s in self._symbols_of([*self._topics, *new]) if s not in index}
        free = self.universe.capacity - len(self.universe)
        if len(want) > free:
            raise ValueError(
                f"{self.name}: subscribing to {len(want)} new symbols but the universe has room "
                f"for {free} more (capacity {self.universe.capacity}); raise capacity"
            )
        for t in new:
            self._topics[t] = None
        return new

    def subscribe(self, topics: str | Iterable[str]) -> None:
        """Add topics (validated: ``ValueError`` names the bad one); sent now if connected."""
        new = self._add_topics(topic_list(topics))
        if new and self._send is not None:
            msg = self._subscribe_message(new)
            if msg is not None:
                self._send(msg)

    def unsubscribe(self, topics: str | Iterable[str]) -> None:
        """Remove topics; an unsubscribe is sent now if connected."""
        gone = [self._check_topic(t) for t in topic_list(topics)]
        gone = [t for t in dict.fromkeys(gone) if t in self._topics]
        for t in gone:
            del self._topics[t]
        if gone and self._send is not None:
            msg = self._unsubscribe_message(gone)
            if msg is not None:
                self._send(msg)

    # ------------------------------------------------------------------ wire messages
    def _auth_messages(self) -> list[bytes]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _subscribe_message(self, topics: list[str]) -> bytes | None:  # pragma: no cover
        raise NotImplementedError

    def _unsubscribe_message(self, topics: list[str]) -> bytes | None:  # pragma: no cover
        raise NotImplementedError

    # ------------------------------------------------------------------ Session protocol
    def on_connected(self, send: Callable[[bytes], None]) -> None:
        """Send auth (when a key was given) and one subscribe of every current topic."""
        self._send = send
        self.state["connected"] = True
        self.state["authenticated"] = False
        self._reset_connection_state()
        for m in self._auth_messages():
            send(m)
        if self._topics:
            msg = self._subscribe_message(list(self._topics))
            if msg is not None:
                send(msg)

    def on_disconnected(self, reason: str) -> None:
        self.filler.flush_pending()
        self._send = None
        self.state["connected"] = False
        self.state["authenticated"] = False
        self.flush_stats()

    def _reset_connection_state(self) -> None:
        """Forget what belonged to the previous connection (e.g. sequence numbers)."""

    def _bind(self, filler: BarFiller) -> None:
        """Make ``filler`` this session's message path: it decodes with :attr:`decoder`,
        upserts, calls ``on_batch``/``on_gap`` and this session's slow paths."""
        self.filler = filler
        filler.bind(self.decoder.decode, self.stats, self.engine, self.on_batch, self._after_fill,
                    self.flush_stats, self._decode_failed, self._internal_error, self.on_gap)

    def set_on_batch(self, on_batch: BatchCallback | None) -> None:
        """Replace ``on_batch`` (on the feed's thread; e.g. a Feed that starts tracking
        completed seconds while it runs)."""
        self.on_batch = on_batch
        self.filler.on_batch = on_batch

    def expect_gap(self, before: int) -> None:
        """The connection was re-established with the clock at ``before``: the first engine
        update after it reports a gap (``on_gap(before, T)``) if it skipped whole seconds."""
        self.filler.gap_from = before

    # ------------------------------------------------------------------ the message path
    @property
    def on_message(self) -> Callable[[Any, int], None]:
        """``on_message(payload, recv_ns)``: the filler's (Cython) decode, fill and upsert of
        one complete text message; never raises. ``stats.messages`` / ``stats.bytes`` are
        counted by the transport's listener."""
        return self.filler.on_message

    @property
    def on_buffer_end(self) -> Callable[[], int]:
        """``on_buffer_end()``: the transport finished handing over one read buffer: upsert
        what waits (the filler's ``flush_pending``). Never raises."""
        return self.filler.flush_pending

    def message_sink(self) -> Any:
        """The filler's C sink (a capsule, ``ext/sink.pxd``) for the transport's listener: each
        message is handed over with one C call, its read's end with another. The pointer is
        borrowed: the listener keeps this session referenced."""
        return self.filler.message_sink()

    # ------------------------------------------------------------------ read-buffer batching
    @property
    def defer_until_buffer_end(self) -> bool:
        """When true, bars of consecutive messages wait for :meth:`on_buffer_end`: one
        ``engine.upsert`` per transport read buffer instead of one per message.

        Opt-in for a transport that calls :meth:`on_buffer_end` after the last message of
        every read (and before waiting for more data); off by default.
        """
        return bool(self.filler.deferred)

    @defer_until_buffer_end.setter
    def defer_until_buffer_end(self, on: bool) -> None:
        if not on:
            self.filler.flush_pending()
        self.filler.deferred = bool(on)

    def _internal_error(self, e: BaseException) -> None:
        """A bug, not bad input: count it, log it (rate-limited), keep the connection."""
        try:
            self.stats.count_decode_error("internal")
            self._logger("internal", "%s: error handling a message: %s", self.name,
                         self._scrub(repr(e)), level=logging.ERROR)
        except Exception:
            pass

    def _decode_failed(self, payload: Any, recv_ns: int, err: BaseException) -> None:
        """The slow path of the Cython ``on_message``: decoding the whole message raised."""
        try:
            if isinstance(err, (msgspec.DecodeError, UnicodeDecodeError)):
                self.filler.apply(self._decode_elements(payload, err), recv_ns)
            else:
                self._internal_error(err)
        except Exception as e:
            self._internal_error(e)

    def _after_fill(self, recv_ns: int) -> None:
        """What a message had beyond bars: values errors, overflow, control elements."""
        filler = self.filler
        stats = self.stats
        if filler.values_errors:
            stats.count_decode_error("values", filler.values_errors)
            self._logger("values", "%s: %d bar(s) with impossible numbers skipped (NaN/inf, "
                         "negative volume, high < low, bad time, junk symbol)", self.name, filler.values_errors)
        if filler.overflow:
            stats.universe_overflow += filler.overflow
            self._logger("overflow", "%s: universe full (capacity %d, no row idle): %d bar(s) of "
                         "new symbols skipped", self.name, self.universe.capacity, filler.overflow,
                         level=logging.ERROR)
        others = filler.others
        if others is not None:
            for m in others:
                self._handle_other(m, recv_ns)

    def _handle_other(self, msg: Any, recv_ns: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ slow path
    def _decode_elements(self, payload: Any, err: Exception) -> list:
        """The message failed to decode as a whole: keep every element that decodes."""
        if isinstance(err, msgspec.ValidationError) or _invalid_utf8(payload):
            try:
                raws = _raw_list.decode(payload)
            except msgspec.ValidationError:  # valid JSON but not an array: one bad object
                raws = None
            except (msgspec.DecodeError, UnicodeDecodeError) as e:  # e.g. also truncated
                raws, err = None, e
            if raws is not None:
                good = []
                for raw in raws:
                    try:
                        good.append(self.element_decoder.decode(raw))
                    except (msgspec.DecodeError, UnicodeDecodeError) as e:
                        self._count_bad_element(raw, e)
                return good
        self._count_bad_element(payload, err)
        return []

    def _count_bad_element(self, raw: Any, err: Exception) -> None:
        if not isinstance(err, msgspec.ValidationError) and _invalid_utf8(raw):
            self.stats.count_decode_error("utf8")
            self._logger("utf8", "%s: invalid UTF-8 in a message: %s", self.name, self._scrub(_snippet(raw)))
            return
        if not isinstance(err, msgspec.ValidationError):
            self.stats.count_decode_error("json")
            # str(err), not err: a log record keeping the exception would keep its traceback's
            # frames, and with them views of the transport's buffer
            self._logger("json", "%s: malformed JSON (%s): %s", self.name, str(err), self._scrub(_snippet(raw)))
            return
        try:
            tag = getattr(_probe.decode(raw), self.tag_field)
        except Exception:
            tag = msgspec.UNSET
        if isinstance(tag, str) and tag not in self.known_tags:
            self.stats.unknown_messages += 1
            self._logger("unknown", "%s: unknown message %s=%r skipped", self.name, self.tag_field, tag,
                         level=logging.INFO)
            return
        self.stats.count_decode_error("validation")
        self._logger("validation", "%s: invalid message (%s): %s", self.name, str(err),
                     self._scrub(_snippet(raw)))

    # ------------------------------------------------------------------ stats
    def flush_stats(self, now_ns: int | None = None) -> None:
        """Move buffered latencies into ``stats`` and copy the engine's drop counters.

        Runs by itself at most every ``FLUSH_EVERY_NS`` of receive time while messages
        arrive, whenever the engine refuses bars, and on disconnect; call it before
        reading ``stats`` for up-to-date latency histograms.
        """
        if now_ns is None:
            now_ns = time.time_ns()
        self.filler.next_flush = now_ns + FLUSH_EVERY_NS
        stats = self.stats
        self.filler.processing_latency.flush_into(stats.processing_latency)
        self.filler.feed_latency.flush_into(stats.feed_latency)
        sync_engine_counters(stats, self.engine)
