"""The relay's publishing side: every vendor message, as received, into JetStream.

:class:`RelayPublisher` takes the raw messages of one vendor connection (through
:class:`RelaySession`, a wrapper of the feed session the transport drives) and the
transport's events, and publishes them to the feed's JetStream stream from its own
thread, so nothing NATS does can hold up the vendor socket.

The vendor side costs one copy of each message into a bounded buffer
(``buffer_bytes``, default 256 MiB): when NATS is slow or down the relay keeps reading
the vendor and, past the bound, drops the *oldest* buffered reads (counted in
``dropped_messages``, one log line at most every 5 s). On reconnect it publishes what
it kept, in order.

Exactly once, in order. Every entry has the id ``<epoch>-<seq>`` (``Nats-Msg-Id``):
JetStream stores an id once, so a publish retried after a lost acknowledgement is not
stored twice. Every entry also names the id published just before it
(``Nats-Expected-Last-Msg-Id``): JetStream refuses an entry whose predecessor is not the
stream's last, so entries are never stored out of order — after a reconnect the relay
asks the stream for its last entry, skips what is stored, and goes on from there. Only
the last entry of each read asks for an acknowledgement: it can only be stored after
all before it.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
import time
from typing import Any, Callable, Optional

from ..log import RateLimitedLog
from ..transport.session import SessionProxy
from . import natsio, wire
from .client import (DEFAULT_DUPLICATE_WINDOW, DEFAULT_MAX_AGE, connect, ensure_stream,
                     last_entry)
from .config import NatsConfig
from ..errors import RelayError

__all__ = ["RelayPublisher", "RelaySession", "DEFAULT_BUFFER_BYTES", "attach_publisher"]

log = logging.getLogger("fastfeed.relay")

MiB = 1 << 20
DEFAULT_BUFFER_BYTES = 256 * MiB
#: bytes an entry costs in the buffer beyond its payload (tuple, bytes header)
ENTRY_OVERHEAD = 100

_RAW, _EVENT = 0, 1
#: messages are copied into slabs of this size, recycled once every entry in them is
#: settled: no fresh memory (page faults) per message
SLAB_BYTES = 1 << 20
#: free slabs kept for reuse at most
MAX_FREE_SLABS = 64


class _Slab:
    """A copy buffer shared by the entries copied into it; when the last of them (and
    the producer) lets go, its bytearray goes back to the free list (``pool``)."""

    __slots__ = ("buf", "pool")

    def __init__(self, buf: Any, pool: Optional[list[bytearray]]) -> None:
        self.buf = buf
        self.pool = pool

    def __del__(self) -> None:
        pool = self.pool
        if pool is not None and len(pool) < MAX_FREE_SLABS:
            pool.append(self.buf)  # atomic under the GIL, from whichever thread


class _Unit:
    """One socket read (its messages, in order) or one event: the buffer's unit."""

    __slots__ = ("first", "kind", "items", "nbytes", "sent_at", "void")

    def __init__(self, first: int, kind: int, items: list[tuple[_Slab, int, int, int]], nbytes: int) -> None:
        self.first = first  # relay sequence of items[0]
        self.kind = kind
        self.items = items  # (slab, offset, length, recv_ns); events: recv_ns -1
        self.nbytes = nbytes
        self.sent_at = 0.0
        self.void = False  # nothing in it could be published (all over max_payload)

    @property
    def last(self) -> int:
        return self.first + len(self.items) - 1


class RelayPublisher:
    """Publish a vendor connection's messages and events to JetStream.

    :param nats: NATS URL (credentials from the URL or ``FASTFEED_NATS_*``) or a
        :class:`NatsConfig`.
    :param feed: ``vantafin`` | ``sfox`` | ``massive``: the subjects are
        ``fastfeed.<feed>.raw`` and ``fastfeed.<feed>.events``.
    :param stream: stream name (default ``FASTFEED_<FEED>``); created when missing
        (file storage, ``max_age`` seconds, ``compression``) unless ``create_stream=False``.
    :param buffer_bytes: bound of what waits for NATS (payload bytes + 100 per message).
    :param max_inflight_bytes: published and not yet acknowledged, at most (about).
    :param heartbeat: seconds of silence after which a ``heartbeat`` event is published
        (consumers tell a quiet market from a dead relay by it).
    :param ack_timeout: an acknowledgement this late: publish again from the oldest
        unacknowledged entry (de-duplication makes that safe).
    :param epoch: the relay's epoch (default: its start time in ns); ids are
        ``<epoch>-<seq>``.

    Producer methods (:meth:`message`, :meth:`end_of_read`, :meth:`event`) are called
    from one thread (the feed's event loop) and never block; :meth:`event` may also be
    called from the publisher's own thread. :meth:`start` connects (raising
    :class:`~fastfeed.errors.NatsAuthError`,
    :class:`~fastfeed.errors.JetStreamNotEnabled`, ``RelayError``); :meth:`stop`
    publishes what is buffered (up to its timeout) and disconnects.
    """

    def __init__(self, nats: str | NatsConfig, feed: str, *, stream: Optional[str] = None,
                 max_age: float = DEFAULT_MAX_AGE, buffer_bytes: int = DEFAULT_BUFFER_BYTES,
                 max_inflight_bytes: int = 8 * MiB, heartbeat: float = 5.0,
                 ack_timeout: float = 10.0, duplicate_window: float = DEFAULT_DUPLICATE_WINDOW,
                 compression: Optional[str] = "s2", create_stream: bool = True,
                 connect_timeout: float = 10.0, epoch: Optional[int] = None,
                 ssl_context: Any = None, name: Optional[str] = None) -> None:
        self.cfg = nats if isinstance(nats, NatsConfig) else NatsConfig.from_url(nats, ssl_context=ssl_context)
        self.feed = feed
        self.stream = stream or wire.stream_name(feed)
        self.max_age = float(max_age)
        self.buffer_bytes = int(buffer_bytes)
        # in flight counts against the buffer: at most a quarter of it
        self.max_inflight_bytes = max(1, min(int(max_inflight_bytes), self.buffer_bytes // 4))
        self.heartbeat = float(heartbeat)
        self.ack_timeout = float(ack_timeout)
        self.duplicate_window = float(duplicate_window)
        self.compression = compression
        self.create_stream = create_stream
        self.connect_timeout = float(connect_timeout)
        self.epoch = int(epoch if epoch is not None else time.time_ns())
        self.name = name or f"fastfeed-relay-{feed}"
        self._subj = (wire.raw_subject(feed).encode(), wire.events_subject(feed).encode())
        self._epoch_b = b"%d-" % self.epoch

        # producer side (feed thread) -------------------------------------------------
        self._read: list[tuple[_Slab, int, int, int]] = []  # messages of the read in progress
        self._read_bytes = 0
        self._free_slabs: list[bytearray] = []
        self._slab = _Slab(bytearray(SLAB_BYTES), self._free_slabs)
        self._slab_pos = 0
        self._lock = threading.Lock()  # guards _unsent, _unsent_bytes, _seq, drop counters
        self._unsent: collections.deque[_Unit] = collections.deque()
        self._unsent_bytes = 0
        self._seq = 0  # last relay sequence given out
        self.dropped_messages = 0
        self.dropped_bytes = 0
        self.peak_buffered_bytes = 0  # the most ever waiting (the bound's witness)
        self._drop_log = RateLimitedLog(log, 5.0)
        self._last_enqueue = time.monotonic()

        # publisher side (its thread) -------------------------------------------------
        self._inflight: collections.deque[_Unit] = collections.deque()
        self._inflight_bytes = 0
        self.acked_through = 0  # every entry <= this is stored (or was dropped)
        self._last_stored_id: Optional[bytes] = None
        self._prev_id: Optional[bytes] = None  # id of the entry published last (this round)
        self._round = 0
        self._resync = True  # ask the stream for its last entry before publishing
        self._unguarded = False  # the server has no last id: next publish names none
        self._connected = False
        self._backoff = 0.0
        self._reply_prefix = b""
        self._max_payload = 1 * MiB
        self.published = 0  # entries stored (acknowledged, duplicates excluded)
        self.duplicates = 0  # entries JetStream said it already had
        self.resends = 0  # times publishing restarted from the oldest unacknowledged entry
        self.too_large = 0  # messages over the server's max_payload (skipped, counted)
        self.chain_breaks = 0  # entries refused for naming a predecessor the stream lacked
        self.nats_disconnects = 0
        #: CPU seconds the publisher thread has used (benchmarks: the relay's own cost)
        self.cpu_seconds = 0.0
        self.last_error: Optional[str] = None
        self._ratelog = RateLimitedLog(log, 5.0)

        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._wake: Optional[asyncio.Event] = None
        self._sleeping = False
        self._stopping = False
        self._stop_deadline = 0.0
        self._started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._finished = threading.Event()

    def __repr__(self) -> str:
        return (f"RelayPublisher({self.cfg.display_url!r}, feed={self.feed!r}, stream={self.stream!r}, "
                f"buffered={self.buffered_bytes}, published={self.published}, dropped={self.dropped_messages})")

    # ------------------------------------------------------------------ producer side
    def message(self, payload: Any, recv_ns: int) -> None:
        """Queue one received message (copied; ``payload`` may be a short-lived view)."""
        n = len(payload)
        pos = self._slab_pos
        if pos + n > SLAB_BYTES:
            if n > SLAB_BYTES // 4:  # a large message: a buffer of its own
                self._read.append((_Slab(bytes(payload), None), 0, n, recv_ns))
                self._read_bytes += n
                return
            free = self._free_slabs
            self._slab = _Slab(free.pop() if free else bytearray(SLAB_BYTES), free)
            pos = 0
        slab = self._slab
        slab.buf[pos:pos + n] = payload
        self._slab_pos = pos + n
        self._read.append((slab, pos, n, recv_ns))
        self._read_bytes += n

    def end_of_read(self) -> None:
        """The socket read that delivered the queued messages is over: hand them on."""
        read = self._read
        if not read:
            return
        items = read.copy()
        read.clear()
        nbytes = self._read_bytes + ENTRY_OVERHEAD * len(items)
        self._read_bytes = 0
        self._enqueue(_RAW, items, nbytes)

    def event(self, kind: str, info: Optional[dict[str, Any]] = None) -> None:
        """Queue a transport or relay event, after the messages received before it.

        Shaped as a feed's ``on_event(kind, info)`` callback; call it from the feed's
        thread (or the publisher's, for its own events)."""
        if threading.current_thread() is not self._thread:
            self.end_of_read()
        payload = wire.encode_event(kind, info)
        self._enqueue(_EVENT, [(_Slab(payload, None), 0, len(payload), -1)], len(payload) + ENTRY_OVERHEAD)

    on_event = event

    def wrap(self, session: Any) -> "RelaySession":
        """``session`` with every message it receives also queued here (give the result
        to the transport instead of ``session``)."""
        return RelaySession(session, self)

    def _enqueue(self, kind: int, items: list[tuple[_Slab, int, int, int]], nbytes: int) -> None:
        dropped = 0
        with self._lock:
            unit = _Unit(self._seq + 1, kind, items, nbytes)
            self._seq += len(items)
            self._unsent.append(unit)
            self._unsent_bytes += nbytes
            limit = self.buffer_bytes - self._inflight_bytes
            while self._unsent_bytes > limit and len(self._unsent) > 1:
                old = self._unsent.popleft()
                self._unsent_bytes -= old.nbytes
                self.dropped_messages += len(old.items)
                self.dropped_bytes += old.nbytes
                dropped += len(old.items)
            if self._unsent_bytes > limit:  # one read larger than the room: its oldest go
                dropped += self._trim(self._unsent[0], self._unsent_bytes - max(0, limit))
            total = self._unsent_bytes + self._inflight_bytes
            if total > self.peak_buffered_bytes:
                self.peak_buffered_bytes = total
        self._last_enqueue = time.monotonic()
        if dropped:
            self._drop_log("drop", "%s: relay buffer full (%d MiB): dropped the %d oldest message(s) "
                           "(%d so far); NATS %s", self.cfg.display_url, self.buffer_bytes // MiB,
                           dropped, self.dropped_messages, "down" if not self._connected else "too slow")
        if self._sleeping and self._loop is not None:
            self._sleeping = False
            try:
                self._loop.call_soon_threadsafe(self._poke)
            except RuntimeError:  # the publisher's loop is closed
                pass

    def _trim(self, unit: _Unit, excess: int) -> int:
        """Drop the oldest messages of ``unit`` (not yet sent) until ``excess`` bytes are
        gone or one message is left; returns how many went. Caller holds the lock."""
        n = 0
        freed = 0
        items = unit.items
        while freed < excess and n < len(items) - 1:
            freed += items[n][2] + ENTRY_OVERHEAD
            n += 1
        if n:
            del items[:n]
            unit.first += n
            unit.nbytes -= freed
            self._unsent_bytes -= freed
            self.dropped_messages += n
            self.dropped_bytes += freed
        return n

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------------ counters
    @property
    def buffered_bytes(self) -> int:
        """Bytes waiting: not yet published, or published and not yet acknowledged."""
        return self._unsent_bytes + self._inflight_bytes

    @property
    def buffered_messages(self) -> int:
        with self._lock:
            n = sum(len(u.items) for u in self._unsent)
        return n + sum(len(u.items) for u in list(self._inflight))

    @property
    def connected(self) -> bool:
        return self._connected

    def stats(self) -> dict[str, Any]:
        """Counters: published, duplicates, dropped, buffered, resends, errors."""
        return {
            "stream": self.stream, "epoch": self.epoch, "last_seq": self._seq,
            "acked_through": self.acked_through, "published": self.published,
            "duplicates": self.duplicates, "dropped_messages": self.dropped_messages,
            "dropped_bytes": self.dropped_bytes, "buffered_bytes": self.buffered_bytes,
            "peak_buffered_bytes": self.peak_buffered_bytes,
            "resends": self.resends, "too_large": self.too_large, "chain_breaks": self.chain_breaks,
            "nats_disconnects": self.nats_disconnects, "connected": self._connected,
            "last_error": self.last_error,
        }

    # ------------------------------------------------------------------ life cycle
    def start(self, timeout: Optional[float] = None) -> "RelayPublisher":
        """Start the publisher thread; wait until connected with the stream ready.

        Raises the reason it could not (credentials refused, JetStream not enabled, no
        server within ``connect_timeout``)."""
        if self._thread is not None:
            raise RuntimeError("publisher already started")
        self._thread = threading.Thread(target=self._thread_main, name=f"fastfeed-relay-{self.feed}",
                                        daemon=True)
        self._thread.start()
        try:
            self._started.result(timeout if timeout is not None else self.connect_timeout + 30)
        except BaseException:
            self._stopping = True
            self._thread.join(5)
            raise
        return self

    async def start_async(self) -> "RelayPublisher":
        """:meth:`start` without blocking the running event loop."""
        await asyncio.get_running_loop().run_in_executor(None, self.start)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Publish what is buffered (for up to ``timeout`` s), then disconnect."""
        if self._thread is None:
            return
        self.end_of_read()
        if not self._stopping:
            self.event("relay_stopped", {"epoch": self.epoch})
        self._stop_deadline = time.monotonic() + timeout
        self._stopping = True
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._poke)
            except RuntimeError:
                pass
        self._finished.wait(timeout + 5)
        self._thread.join(5)
        left = self.buffered_bytes
        if left:
            log.warning("%s: relay stopped with %d bytes not published (NATS %s)", self.cfg.display_url,
                        left, "connected" if self._connected else "down")

    async def stop_async(self, timeout: float = 10.0) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.stop, timeout)

    # ------------------------------------------------------------------ publisher thread
    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # pragma: no cover - _main reports its own errors
            if not self._started.done():
                self._started.set_exception(exc)
        finally:
            self._finished.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        try:
            natsio.check()
            nc = await connect(self.cfg, name=self.name, timeout=self.connect_timeout,
                               disconnected_cb=self._on_disconnected,
                               reconnected_cb=self._on_reconnected,
                               pending_size=max(64 * MiB, 4 * self.max_inflight_bytes),
                               ratelog=self._ratelog)
        except BaseException as exc:
            self._started.set_exception(exc)
            return
        try:
            self._nc = nc
            self._js = nc.jetstream(timeout=5.0)
            self._max_payload = int(nc.max_payload or MiB)
            try:
                await self._ensure_stream()
                await self._do_resync()
            except BaseException as exc:
                self._started.set_exception(exc)
                return
            inbox = nc.new_inbox()
            self._reply_prefix = inbox.encode() + b"."
            await nc.subscribe(inbox + ".>", cb=self._on_ack)
            self._connected = True
            self.event("relay_started", {"epoch": self.epoch, "stream": self.stream,
                                         "buffer_bytes": self.buffer_bytes})
            self._started.set_result(None)
            await self._run()
        finally:
            try:
                await nc.close()
            except Exception:
                pass

    async def _ensure_stream(self) -> None:
        await ensure_stream(self._js, self.feed, self.stream, self.cfg.display_url,
                            max_age=self.max_age, duplicate_window=self.duplicate_window,
                            compression=self.compression, create=self.create_stream)

    async def _do_resync(self) -> None:
        """Learn what the stream already holds: skip our stored entries, chain on its last."""
        _, mid = await last_entry(self._js, self.stream)
        self._note_stored(mid)
        self._last_stored_id = mid.encode() if mid else None
        self._prev_id = None if self._unguarded else self._last_stored_id
        self._unguarded = False
        self._resync = False

    def _note_stored(self, mid: Optional[str]) -> None:
        parsed = wire.parse_msg_id(mid)
        if parsed is not None and parsed[0] == self.epoch and parsed[1] > self.acked_through:
            self.acked_through = parsed[1]
            self._release_acked()

    async def _run(self) -> None:
        assert self._wake is not None
        tick = max(0.02, min(0.25, self.heartbeat / 4)) if self.heartbeat > 0 else 0.25
        while True:
            self.cpu_seconds = time.thread_time()
            if self._stopping and (not self._unsent and not self._inflight
                                   or time.monotonic() >= self._stop_deadline):
                return
            if self._connected and self._nc.is_connected:
                try:
                    if self._resync:
                        await self._do_resync()
                    await self._send_ready()
                    self._check_timeouts()
                except Exception as exc:  # a JetStream API call failed: retry later
                    self._error(f"{type(exc).__name__}: {self.cfg.mask(str(exc))}")
                    self._requeue(resync=True)
                    await asyncio.sleep(self._next_backoff())
            if (not self._stopping and self.heartbeat > 0
                    and time.monotonic() - self._last_enqueue >= self.heartbeat):
                self.event("heartbeat", {"epoch": self.epoch})
            self._sleeping = True
            if self._unsent and self._connected and self._inflight_bytes < self.max_inflight_bytes:
                self._sleeping = False
                await asyncio.sleep(0)
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), tick)
            except asyncio.TimeoutError:
                pass
            self._sleeping = False
            self._wake.clear()

    def _next_backoff(self) -> float:
        self._backoff = min(2.0, max(0.05, self._backoff * 2))
        return self._backoff

    async def _send_ready(self) -> None:
        """Publish units while the in-flight bound allows (one write per unit)."""
        nc = self._nc
        while self._inflight_bytes < self.max_inflight_bytes:
            with self._lock:
                if not self._unsent:
                    return
                unit = self._unsent.popleft()
                self._unsent_bytes -= unit.nbytes
            if unit.last <= self.acked_through:
                continue  # stored before (found by a resync): nothing to send
            parts = self._frames(unit)
            unit.sent_at = time.monotonic()
            self._inflight.append(unit)
            self._inflight_bytes += unit.nbytes
            if parts:
                await natsio.send_raw(nc, b"".join(parts))  # one write of the whole unit
            else:  # nothing publishable in it (all too large): settled with those before it
                unit.void = True
                self._release_acked()

    def _frames(self, unit: _Unit) -> list[bytes]:
        """The HPUB commands of ``unit``'s entries not yet stored, chained on the entry
        published before; the last one asks for the acknowledgement (see ``wire.hpub``)."""
        subject = self._subj[unit.kind]
        epoch_b = self._epoch_b
        acked = self.acked_through
        maxp = self._max_payload - 512  # room for the headers
        items = unit.items
        first = unit.first
        # the entries to send: not stored yet, not over the server's max_payload
        idx = [i for i in range(max(0, acked + 1 - first), len(items)) if items[i][2] <= maxp]
        n_big = len(items) - max(0, acked + 1 - first) - len(idx)
        if n_big > 0:
            self.too_large += n_big
            self._ratelog("too-large", "%s: %d message(s) over the NATS server's max_payload (%d): "
                          "not relayed", self.cfg.display_url, n_big, self._max_payload)
        parts: list[bytes] = []
        append = parts.append
        prev = self._prev_id
        last_i = idx[-1] if idx else -1
        end_seq = unit.last if unit.kind == _RAW else -1
        for i in idx:
            slab, off, n, ns = items[i]
            payload = memoryview(slab.buf)[off:off + n]  # joined (copied) by the caller
            seq = first + i
            mid = epoch_b + b"%d" % seq
            reply = self._reply_prefix + b"%d.%d" % (self._round, seq) if i == last_i else b""
            head, _ = wire.hpub(subject, reply, mid, prev, ns, seq == end_seq, payload)
            append(head)
            append(payload)
            append(b"\r\n")
            prev = mid
        self._prev_id = prev
        return parts

    def _check_timeouts(self) -> None:
        if self._inflight and time.monotonic() - self._inflight[0].sent_at > self.ack_timeout:
            self._error(f"no acknowledgement for {self.ack_timeout:g} s: publishing again from "
                        f"entry {self.acked_through + 1}")
            self._requeue(resync=False)

    # ------------------------------------------------------------------ acknowledgements
    async def _on_ack(self, msg: Any) -> None:
        try:
            tail = msg.subject.rsplit(".", 2)
            rnd, seq = int(tail[-2]), int(tail[-1])
        except (ValueError, IndexError):
            return
        hdrs = msg.headers or {}
        status = hdrs.get("Status")
        if status == "503":  # no responders: the stream is gone
            if rnd == self._round and seq > self.acked_through:
                self._error(f"no stream for {wire.subjects(self.feed)}: creating {self.stream} again")
                try:
                    await self._ensure_stream()
                except Exception as exc:
                    self._error(str(exc))
                self._requeue(resync=True)
            return
        ack = wire.decode_ack(msg.data)
        if ack.error is None:
            if ack.duplicate:
                self.duplicates += 1
            if seq > self.acked_through:
                self._last_stored_id = self._epoch_b + b"%d" % seq
                self.acked_through = seq
                self._release_acked()
            self._backoff = 0.0
            return
        if rnd != self._round or seq <= self.acked_through:
            return  # an answer of an earlier round, or already settled
        err = ack.error
        if err.err_code == wire.WRONG_LAST_MSG_ID:
            # "wrong last msg ID: <id>": the stream's real last entry
            self.chain_breaks += 1
            last = err.description.rsplit(":", 1)[-1].strip() if ":" in err.description else ""
            self._note_stored(last or None)
            if last:
                self._last_stored_id = last.encode()
                self._requeue(resync=False)
            else:  # the server forgot its last id (restarted): ask the stream, then
                self._unguarded = True  # publish without naming a predecessor
                self._requeue(resync=True)
            return
        self._error(f"JetStream refused entry {seq}: {err.description} (code {err.err_code})")
        self._requeue(resync=err.err_code == wire.STREAM_NOT_FOUND)
        await asyncio.sleep(self._next_backoff())

    def _release_acked(self) -> None:
        acked = self.acked_through
        inflight = self._inflight
        while inflight and (inflight[0].last <= acked or inflight[0].void):
            u = inflight.popleft()
            self._inflight_bytes -= u.nbytes
            self.published += len(u.items)
        if self._unsent and self._inflight_bytes < self.max_inflight_bytes:
            self._poke()

    def _requeue(self, resync: bool) -> None:
        """Start a new round: everything unacknowledged goes back to the front, in order."""
        self._round += 1
        if self._inflight:
            self.resends += 1
        with self._lock:
            while self._inflight:
                u = self._inflight.pop()
                self._inflight_bytes -= u.nbytes
                self._unsent.appendleft(u)
                self._unsent_bytes += u.nbytes
        self._prev_id = self._last_stored_id
        if resync:
            self._resync = True

    def _error(self, text: str) -> None:
        self.last_error = text
        self._ratelog("error:" + text[:40], "%s: relay: %s", self.cfg.display_url, text)

    # ------------------------------------------------------------------ NATS state
    async def _on_disconnected(self) -> None:
        if self._connected and not self._stopping:
            self.nats_disconnects += 1
            log.warning("%s: relay lost NATS; buffering (up to %d MiB)", self.cfg.display_url,
                        self.buffer_bytes // MiB)
        self._connected = False
        self._requeue(resync=True)

    async def _on_reconnected(self) -> None:
        log.info("%s: relay reconnected to NATS; publishing %d buffered bytes", self.cfg.display_url,
                 self.buffered_bytes)
        self._requeue(resync=True)
        self._connected = True
        self._poke()


class RelaySession(SessionProxy):
    """A feed session whose received messages are also queued on a :class:`RelayPublisher`.

    Wraps any object implementing the transport's ``Session`` contract: each message is
    copied to the publisher, then handed to the wrapped session; at the end of each
    socket read the publisher is told (the read boundary travels with the messages) and
    then the wrapped session's ``on_buffer_end`` runs. Everything else (``state``,
    ``subscribe``, ...) is the wrapped session's.

    The listener calls :attr:`on_message` (a Python call per message: ``message_sink``
    is hidden so the publisher sees every message). Wrapping a recording session works:
    its ``raw_tap`` stays with the listener, which then calls :attr:`tapped_sink`.
    """

    message_sink = None  # the transport must call on_message / tapped_sink, not the C sink

    def __init__(self, session: Any, publisher: RelayPublisher) -> None:
        super().__init__(session)
        end = getattr(session, "on_buffer_end", None)
        self._keep(publisher=publisher, _inner_end=end if callable(end) else None)
        self._keep(on_message=self._sink(session.on_message))

    def _sink(self, inner: Callable[[Any, int], Any]) -> Callable[[Any, int], Any]:
        pub = self.publisher
        copy = pub.message
        if self._inner_end is not None:
            def on_message(payload: Any, recv_ns: int) -> Any:
                copy(payload, recv_ns)
                return inner(payload, recv_ns)
        else:  # no read boundaries from this session: each message is its own read
            end = pub.end_of_read

            def on_message(payload: Any, recv_ns: int) -> Any:
                copy(payload, recv_ns)
                end()
                return inner(payload, recv_ns)
        return on_message

    def on_buffer_end(self) -> None:
        self.publisher.end_of_read()
        if self._inner_end is not None:
            self._inner_end()

    @property
    def tapped_sink(self) -> Callable[[Any, int], Any]:
        """The recording session's untapped sink, through the publisher."""
        return self._sink(self.session.tapped_sink)

    def on_disconnected(self, reason: str) -> None:
        self.publisher.end_of_read()
        self.session.on_disconnected(reason)


def attach_publisher(feed: Any, publisher: RelayPublisher) -> None:
    """Relay everything a :class:`fastfeed.Feed` receives (call before the feed starts).

    The feed's session is wrapped (every message, with its read boundaries, goes to
    ``publisher`` before the feed's own decoding) and every event the feed reports
    (transport, session, gaps) is published too, before the user's ``on_event`` sees it.
    """
    if getattr(feed, "_conn", None) is not None:
        raise RuntimeError("attach the publisher before the feed starts")
    feed.session = publisher.wrap(feed.session)
    user = feed._user_on_event

    def on_event(kind: str, info: dict) -> None:
        publisher.event(kind, info)
        if user is not None:
            user(kind, info)

    feed._user_on_event = on_event
