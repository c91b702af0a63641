"""The consumer side: a feed session driven from the relay's JetStream stream.

:class:`NatsSource` has the surface of the transport's ``Connection`` (``run()``,
``stop()``, ``send()``, ``connected``, ``display_url``, ``last_error``) and drives a
feed session exactly as the live transport drove the relay's: ``on_message(payload,
recv_ns)`` with the relay's receive time, ``on_buffer_end()`` at the relay's socket-read
boundaries, ``on_connected``/``on_disconnected`` at the relay's connection events. Same
messages, same order, same boundaries: the engine ends with the relay's windows.

Warm start: the first read starts ``warm_start`` seconds back (JetStream start time), so
the windows are rebuilt before the source is live (:attr:`caught_up`, event
``caught_up``). Then it follows the stream without a gap or a duplicate: it tracks the
last stream sequence it applied and, after anything (NATS restart, lost consumer, a
delivery out of order), reads on from the next one. A relay entry it already applied
(relay id ``<epoch>-<seq>``) is never applied twice; entries the relay dropped show as a
``relay_dropped`` event; a relay restart (new epoch) as a disconnect and reconnect, so the
feed reports the gap.

Faults: NATS down → ``disconnected`` (source ``nats``) and back; no entry (not even the
relay's heartbeat) for ``idle_timeout`` → ``disconnected`` (``idle timeout``), like a
silent vendor; a consumer slower than the stream reads at its own pace (bounded pulls:
``batch`` messages / ``max_bytes``), its lag in :attr:`lag_messages` /
:attr:`lag_seconds`.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import json
import logging
import time
from typing import Any, Callable, Optional

import msgspec

from ..log import RateLimitedLog
from . import natsio, wire
from .client import connect, stream_info
from .config import NatsConfig
from ..errors import RelayError, StreamNotFound

__all__ = ["NatsSource", "DEFAULT_WARM_MARGIN", "source_for_feed"]

log = logging.getLogger("fastfeed.relay")

MiB = 1 << 20
#: seconds read before the engine's depth on a warm start (bars arriving late, clock skew)
DEFAULT_WARM_MARGIN = 60.0


def _no_send(data: Any) -> bool:
    """What a relay consumer sends upstream: nothing (the relay holds the subscription)."""
    return False


def _ack_fields(reply: str) -> tuple[str, int, int, int]:
    """``(consumer, stream seq, consumer seq, pending)`` from a JetStream delivery's reply
    subject (``$JS.ACK.<stream>.<consumer>.<n>.<sseq>.<dseq>.<ts>.<pending>``, or the v2
    form with domain and account hash)."""
    t = reply.split(".")
    k = 4 if len(t) == 9 else 6
    return t[k - 1], int(t[k + 1]), int(t[k + 2]), int(t[k + 4])


class NatsSource:
    """Drive ``session`` from the relay stream of ``feed`` on the NATS server at ``nats``.

    :param nats: NATS URL (credentials from it or ``FASTFEED_NATS_*``) or a :class:`NatsConfig`.
    :param session: a feed session (the transport's ``Session`` contract).
    :param feed: the relay's feed name (subjects ``fastfeed.<feed>.*``).
    :param stats: the feed's ``Stats`` (messages and bytes are counted here, as the
        transport's listener does live).
    :param on_event: ``on_event(kind, info)``: ``connected``/``disconnected`` (the relay's
        vendor connection, or this source's own NATS link: ``info["source"]``),
        ``relay_dropped``, ``relay_started``, ``relay_stopped``, ``reconnecting``,
        ``protocol_error`` (from the relay), ``caught_up``, ``lag``.
    :param warm_start: seconds of history read first (``None``: only new entries).
    :param idle_timeout: no entry for this long: reported as a disconnect.
    :param batch: messages per pull request; ``max_bytes``: bytes per pull request.
    :param batch_per_read: as ``Connection``: one engine update per relay socket read.
    """

    def __init__(self, nats: str | NatsConfig, session: Any, *, feed: str, stats: Any = None,
                 on_event: Optional[Callable[[str, dict], Any]] = None,
                 stream: Optional[str] = None, warm_start: Optional[float] = 900.0 + DEFAULT_WARM_MARGIN,
                 idle_timeout: float = 15.0, batch: int = 512, max_bytes: int = 32 * MiB,
                 heartbeat: float = 1.0, expires: float = 5.0, connect_timeout: float = 10.0,
                 lag_warn: float = 5.0, batch_per_read: bool = True, ssl_context: Any = None,
                 name: Optional[str] = None) -> None:
        self.cfg = nats if isinstance(nats, NatsConfig) else NatsConfig.from_url(nats, ssl_context=ssl_context)
        self.display_url = self.cfg.display_url
        self.session = session
        self.feed = feed
        self.stats = stats
        self.on_event = on_event
        self.stream = stream or wire.stream_name(feed)
        self.warm_start = warm_start
        self.idle_timeout = float(idle_timeout)
        self.batch = int(batch)
        self.max_bytes = int(max_bytes)
        self.heartbeat = float(heartbeat)
        self.expires = float(expires)
        self.connect_timeout = float(connect_timeout)
        self.lag_warn = float(lag_warn)
        self.name = name or f"fastfeed-consumer-{feed}"
        self._subjects = (wire.raw_subject(feed), wire.events_subject(feed))

        self._on_message = session.on_message
        end = getattr(session, "on_buffer_end", None)
        self._buffer_end = end if callable(end) else None
        if batch_per_read and self._buffer_end is not None and hasattr(session, "defer_until_buffer_end"):
            session.defer_until_buffer_end = True

        # position ---------------------------------------------------------------
        self.last_sseq = 0  # stream sequence of the last entry applied
        self._dseq = 0  # consumer sequence of the last delivery (per consumer)
        self.epoch: Optional[int] = None  # the relay epoch being followed
        self.relay_seq = 0  # relay sequence of the last entry applied
        # state ------------------------------------------------------------------
        self._up = False  # the session was told "connected" (and not since "disconnected")
        self._relay_up = True  # the relay's vendor connection, as its events say
        self._local_down: Optional[str] = None  # why this source reported a disconnect
        self._read_open = False
        self.caught_up = False
        self.lag_messages = 0
        self.lag_seconds = 0.0
        self._last_recv_ns = 0
        self._last_entry = time.monotonic()
        self._last_activity = time.monotonic()
        # counters ---------------------------------------------------------------
        self.entries = 0  # stream entries applied (messages + events)
        self.relay_dropped = 0  # relay entries missing from the stream (its buffer overflowed)
        self.duplicates_skipped = 0
        self.resets = 0  # consumers re-created (NATS restart, lost consumer, order)
        self.nats_disconnects = 0
        self.bad_entries = 0
        self.connects = 0
        self.last_error: Optional[str] = None
        self._ratelog = RateLimitedLog(log, 5.0)
        # NATS -------------------------------------------------------------------
        self._nc: Any = None
        self._js: Any = None
        self._consumer: Optional[str] = None
        self._inbox = ""
        self._outstanding = 0
        self._reset_wanted = False
        self._stopping = False
        self._stop_event: Optional[asyncio.Event] = None
        self._running = False
        self._started_ns = 0
        self._t0 = 0.0

    def __repr__(self) -> str:
        return (f"NatsSource({self.display_url!r}, stream={self.stream!r}, "
                f"seq={self.last_sseq}, {'up' if self._up else 'down'})")

    # ------------------------------------------------------------------ Connection surface
    @property
    def connected(self) -> bool:
        return self._up

    def send(self, data: Any) -> bool:
        """Nothing goes upstream through a relay: always ``False``."""
        return False

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop reading and make :meth:`run` return."""
        self._stopping = True
        if self._stop_event is not None:
            self._stop_event.set()

    async def run(self) -> None:
        """Read the stream until :meth:`stop` or a fatal error (raised: credentials
        refused, JetStream not enabled)."""
        if self._running:
            raise RuntimeError("NatsSource.run() is already running")
        self._running = True
        self._stop_event = asyncio.Event()
        if self._stopping:
            return
        self._t0 = time.monotonic()
        try:
            natsio.check()
            self._nc = await self._connect()
            if self._nc is None:  # stopped before any server answered
                return
            natsio.fast_headers(self._nc)
            self._js = self._nc.jetstream(timeout=5.0)
            await self._wait_for_stream()
            if self._stopping:
                return
            self._inbox = self._nc.new_inbox()
            await self._nc.subscribe(self._inbox, cb=self._on_delivery,
                                     pending_msgs_limit=4 * self.batch + 64,
                                     pending_bytes_limit=4 * self.max_bytes + 4 * MiB)
            self._connected_event("nats", {"stream": self.stream})
            try:
                await self._new_consumer()
            except Exception as exc:  # e.g. JetStream still recovering: _watch retries
                self.last_error = f"{type(exc).__name__}: {self.cfg.mask(str(exc))}"
                self._reset_wanted = True
            await self._watch()
        finally:
            self._finish()
            self._running = False
            if self._consumer is not None and self._nc is not None and self._nc.is_connected:
                try:  # (else the server drops it after its inactive threshold)
                    await asyncio.wait_for(self._js.delete_consumer(self.stream, self._consumer), 2.0)
                except Exception:
                    pass
            if self._nc is not None:
                try:
                    await self._nc.close()
                except Exception:
                    pass

    # ------------------------------------------------------------------ consumer
    async def _retry(self, attempt: Callable[[], Any], retried: type[BaseException], what: str) -> Any:
        """``await attempt()`` until it returns, once a second while it raises ``retried``
        (logged, kept in :attr:`last_error`); ``None`` if stopped first."""
        while not self._stopping:
            try:
                return await attempt()
            except retried as exc:
                self.last_error = str(exc)
                self._ratelog(what, "%s; %s", exc, what)
            try:
                await asyncio.wait_for(self._stop_event.wait(), 1.0)  # type: ignore[union-attr]
            except asyncio.TimeoutError:
                pass
        return None

    async def _connect(self) -> Any:
        """Connect, retrying while no server answers (like the transport with a vendor);
        refused credentials raise at once."""
        return await self._retry(
            lambda: connect(self.cfg, name=self.name, timeout=self.connect_timeout,
                            disconnected_cb=self._on_nats_down, reconnected_cb=self._on_nats_back,
                            ratelog=self._ratelog),
            RelayError, "retrying")

    async def _wait_for_stream(self) -> None:
        await self._retry(lambda: stream_info(self._js, self.stream, self.display_url), StreamNotFound,
                          "waiting for it")

    async def _new_consumer(self) -> None:
        """(Re)create the ephemeral pull consumer from the next stream sequence (or the
        warm-start time) and ask for the first batch."""
        from nats.js import api

        old, self._consumer = self._consumer, None
        if old is not None:
            try:
                await self._js.delete_consumer(self.stream, old)
            except Exception:
                pass
        if self.last_sseq:
            policy = dict(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.last_sseq + 1)
        elif self.warm_start:
            start = _dt.datetime.fromtimestamp(time.time() - self.warm_start, tz=_dt.timezone.utc)
            policy = dict(deliver_policy=api.DeliverPolicy.BY_START_TIME, opt_start_time=start)
        else:
            policy = dict(deliver_policy=api.DeliverPolicy.NEW)
        cfg = api.ConsumerConfig(ack_policy=api.AckPolicy.NONE, filter_subject=wire.subjects(self.feed),
                                 inactive_threshold=max(30.0, 4 * self.idle_timeout), mem_storage=True,
                                 num_replicas=1, **policy)
        info = await self._js.add_consumer(self.stream, config=cfg)
        self._consumer = info.name
        self._dseq = 0
        self._outstanding = 0
        self._reset_wanted = False
        self._last_activity = time.monotonic()
        if not self.last_sseq and info.num_pending == 0 and not self.caught_up:
            self._caught_up()
        await self._pull()

    async def _pull(self) -> None:
        req = json.dumps({"batch": self.batch, "max_bytes": self.max_bytes,
                          "expires": int(self.expires * 1e9),
                          "idle_heartbeat": int(self.heartbeat * 1e9)}).encode()
        self._outstanding += self.batch
        await self._nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self._consumer}", req,
                               reply=self._inbox)

    async def _watch(self) -> None:
        """Until stopped: keep pulls flowing, re-create a lost consumer, report silence."""
        tick = 0.1
        assert self._stop_event is not None
        while not self._stopping:
            try:
                await asyncio.wait_for(self._stop_event.wait(), tick)
                break
            except asyncio.TimeoutError:
                pass
            now = time.monotonic()
            nc = self._nc
            if not nc.is_connected:
                continue
            try:
                if self._reset_wanted or now - self._last_activity > 3 * self.heartbeat + self.expires:
                    if not self._reset_wanted:
                        self._ratelog("lost", "%s: no delivery nor heartbeat for %.1f s: "
                                      "re-creating the consumer at stream sequence %d",
                                      self.display_url, now - self._last_activity, self.last_sseq + 1)
                    self.resets += 1
                    await self._new_consumer()
                elif self._outstanding <= self.batch // 2:
                    await self._pull()
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {self.cfg.mask(str(exc))}"
                self._ratelog("consumer", "%s: consumer: %s", self.display_url, self.last_error)
                self._reset_wanted = True
            idle = now - self._last_entry
            if self._up and self._local_down is None and idle >= self.idle_timeout:
                self._disconnected_event("idle", f"idle timeout: nothing from the relay for {idle:.1f} s")
            if self.caught_up and self._last_recv_ns:
                self.lag_seconds = max(0.0, time.time() - self._last_recv_ns / 1e9) if self.lag_messages else 0.0
                if self.lag_seconds > self.lag_warn:
                    self._ratelog("lag", "%s: consumer is %.1f s (%d messages) behind the relay",
                                  self.display_url, self.lag_seconds, self.lag_messages)

    # ------------------------------------------------------------------ deliveries
    async def _on_delivery(self, msg: Any) -> None:
        self._last_activity = time.monotonic()
        reply = msg.reply
        if not reply:  # a status message: heartbeat, request expired/completed
            hdrs = msg.headers or {}
            status = hdrs.get("Status", "")
            if status in ("404", "408", "409"):
                try:
                    self._outstanding = max(0, self._outstanding - int(hdrs.get("Nats-Pending-Messages", 0) or 0))
                except ValueError:
                    self._outstanding = 0
                if status == "409" and "deleted" in (hdrs.get("Description", "") or "").lower():
                    self._reset_wanted = True
                if status in ("404", "408") and hdrs.get("Nats-Pending-Messages") is None:
                    self._outstanding = max(0, self._outstanding - self.batch)
            return
        try:
            consumer, sseq, dseq, pending = _ack_fields(reply)
        except (ValueError, IndexError):
            self.bad_entries += 1
            return
        if consumer != self._consumer:
            return  # a late delivery of a consumer we replaced
        self._outstanding -= 1
        if dseq != self._dseq + 1:  # a delivery went missing: read on from what we have
            self._reset_wanted = True
            return
        self._dseq = dseq
        if sseq <= self.last_sseq:
            return  # overlap after a re-created consumer
        self.lag_messages = pending
        try:
            self._apply(msg)
        except Exception as exc:  # a bug, not bad input: count, log, go on
            self.bad_entries += 1
            self._ratelog("apply", "%s: error applying stream entry %d: %r", self.display_url, sseq, exc)
        self.last_sseq = sseq
        if pending == 0 and not self.caught_up:
            self._caught_up()
        if self._outstanding <= self.batch // 2 and not self._reset_wanted and self._nc.is_connected:
            try:  # keep the next batch coming while this one is applied
                await self._pull()
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {self.cfg.mask(str(exc))}"

    def _apply(self, msg: Any) -> None:
        hdrs = msg.headers or {}
        parsed = wire.parse_msg_id(hdrs.get(wire.H_MSG_ID))
        if parsed is None:
            self.bad_entries += 1
            self._ratelog("foreign", "%s: entry without a relay id on %s skipped", self.display_url, msg.subject)
            return
        epoch, rseq = parsed
        if epoch != self.epoch:
            if self.epoch is not None:
                self._relay_restarted(epoch)
            self.epoch = epoch
        elif rseq <= self.relay_seq:
            self.duplicates_skipped += 1
            return
        elif rseq != self.relay_seq + 1:
            missing = rseq - self.relay_seq - 1
            self.relay_dropped += missing
            self._emit("relay_dropped", {"entries": missing, "source": "relay", "epoch": epoch})
        self.relay_seq = rseq
        self.entries += 1
        self._last_entry = time.monotonic()
        if self._local_down is not None:
            self._back_up()
        if msg.subject == self._subjects[0]:
            data = msg.data
            recv_ns = int(hdrs[wire.H_RECV_NS])
            self._last_recv_ns = recv_ns
            st = self.stats
            if st is not None:  # the transport's listener counts these live
                st.messages += 1
                st.bytes += len(data)
            self._on_message(data, recv_ns)
            if wire.H_READ_END in hdrs:
                self._read_open = False
                if self._buffer_end is not None:
                    self._buffer_end()
            else:
                self._read_open = True
        else:
            self._relay_event(msg.data)

    def _relay_event(self, payload: bytes) -> None:
        try:
            ev = wire.decode_event(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.bad_entries += 1
            return
        kind, info = ev.kind, dict(ev.info)
        info["source"] = "relay"
        info["relay_ns"] = ev.ns
        if kind == "connected":
            self._end_read()
            self._relay_up = True
            if self._up:
                self.session.on_connected(_no_send)  # the relay's session restarted here too
            else:
                self._connected_event("relay", info)
        elif kind == "disconnected":
            self._relay_up = False
            self._disconnected_event("relay", str(info.get("reason", "relay: vendor disconnected")), info)
        elif kind == "heartbeat" or kind in wire.EVENT_KINDS_DERIVED:
            return  # liveness only / re-derived by this consumer's own session and feed
        else:  # reconnecting, protocol_error, relay_started/stopped/dropped
            self._emit(kind, info)

    def _relay_restarted(self, epoch: int) -> None:
        """A new relay epoch: the old relay's vendor connection is gone (a gap)."""
        self._relay_up = False
        self._disconnected_event("relay", "relay restarted", {"old_epoch": self.epoch, "epoch": epoch})
        self._relay_up = True
        self.relay_seq = 0

    # ------------------------------------------------------------------ session state
    def _end_read(self) -> None:
        if self._read_open:
            self._read_open = False
            if self._buffer_end is not None:
                self._buffer_end()

    def _connected_event(self, source: str, info: Optional[dict] = None) -> None:
        self.connects += 1
        if source == "relay" and self.connects > 1 and self.stats is not None:
            self.stats.reconnects += 1  # a vendor reconnect of the relay, as live
        self._up = True
        self._local_down = None
        self._emit("connected", {**(info or {}), "source": source, "connects": self.connects})
        try:
            self.session.on_connected(_no_send)
        except Exception as exc:
            self._ratelog("on_connected", "session.on_connected raised %r", exc)

    def _disconnected_event(self, source: str, reason: str, info: Optional[dict] = None) -> None:
        self._end_read()
        if source != "relay":
            self._local_down = reason
        if not self._up:
            return
        self._up = False
        self._emit("disconnected", {**(info or {}), "source": source, "reason": reason})
        try:
            self.session.on_disconnected(reason)
        except Exception as exc:
            self._ratelog("on_disconnected", "session.on_disconnected raised %r", exc)

    def _back_up(self) -> None:
        """Entries flow again after a local disconnect (NATS down, relay silent)."""
        self._local_down = None
        if self._relay_up and not self._up:
            self._connected_event("nats", {"resumed_at": self.last_sseq + 1})

    def _caught_up(self) -> None:
        self.caught_up = True
        # processing latency counts from the relay's receipt: history read by the warm
        # start would show its age, so the histogram starts over once live
        flush = getattr(self.session, "flush_stats", None)
        if callable(flush) and self.stats is not None:
            flush()
            self.stats.processing_latency.reset()
        self._emit("caught_up", {"entries": self.entries, "stream_seq": self.last_sseq,
                                 "seconds": round(time.monotonic() - self._t0, 3)})

    def _emit(self, kind: str, info: dict) -> None:
        info.setdefault("url", self.display_url)
        cb = self.on_event
        if cb is not None:
            try:
                cb(kind, info)
            except Exception as exc:
                self._ratelog("on_event", "on_event callback raised %r", exc)

    def _finish(self) -> None:
        self._end_read()
        if self._up:
            self._up = False
            self._emit("disconnected", {"source": "nats", "reason": "client stopped"})
            try:
                self.session.on_disconnected("client stopped")
            except Exception:
                pass
        flush = getattr(self.session, "flush_stats", None)
        if callable(flush):
            try:
                flush()
            except Exception:
                pass

    # ------------------------------------------------------------------ NATS link
    async def _on_nats_down(self) -> None:
        if self._stopping:
            return
        self.nats_disconnects += 1
        self._disconnected_event("nats", "NATS connection lost")

    async def _on_nats_back(self) -> None:
        self._reset_wanted = True  # the server may have restarted: a consumer it knows

    def counters(self) -> dict[str, Any]:
        return {
            "stream": self.stream, "stream_seq": self.last_sseq, "epoch": self.epoch,
            "relay_seq": self.relay_seq, "entries": self.entries, "caught_up": self.caught_up,
            "lag_messages": self.lag_messages, "lag_seconds": round(self.lag_seconds, 3),
            "relay_dropped": self.relay_dropped, "duplicates_skipped": self.duplicates_skipped,
            "resets": self.resets, "nats_disconnects": self.nats_disconnects,
            "bad_entries": self.bad_entries,
        }


def source_for_feed(feed: Any, nats: str | NatsConfig, **options: Any) -> NatsSource:
    """A :class:`NatsSource` driving ``feed``'s session, counting into its stats and
    reporting through its events (the gap logic included), warm-starting from the
    engine's depth plus :data:`DEFAULT_WARM_MARGIN` unless ``warm_start`` is given.
    What ``Feed(url="nats://...")`` runs in place of the transport's ``Connection``."""
    options.setdefault("warm_start", float(feed.engine.depth) + DEFAULT_WARM_MARGIN)
    return NatsSource(nats, feed.session, feed=feed.feed_name, stats=feed.stats,
                      on_event=feed._emit, **options)
