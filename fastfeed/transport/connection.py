"""WebSocket transport: one reconnecting connection that hands complete text messages to a session.

``Connection`` owns the socket life cycle (docs/PROTOCOLS.md §4): connect to ``ws://`` or
``wss://`` (TLS verified by default), answer pings and CLOSE, send our own pings when the
line is quiet, treat a connection silent beyond ``idle_timeout`` as dead, reconnect with
exponential backoff and jitter (first retry fast, capped), and call the session back on
every (re)connect so it can authenticate and resubscribe.  The frame-level rules (RSV bits,
UTF-8, binary frames, continuation frames) live in the Cython listener
``fastfeed._ext.listener.FeedListener``.

The transport knows nothing about any feed.  Contract (docs/ARCHITECTURE.md)::

    class Session(Protocol):
        def on_connected(self, send: Callable[[bytes], None]) -> None
        def on_message(self, payload, recv_ns: int) -> None   # payload valid during the call only
        def on_disconnected(self, reason: str) -> None
        fatal: BaseException | None                           # set -> no reconnect, run() raises it
        # optional: one engine update per socket read instead of one per message
        def on_buffer_end(self) -> None                       # after the last message of each read
        defer_until_buffer_end: bool                          # turned on by Connection(batch_per_read=True)
        # optional: the session's C sink (a capsule, ext/sink.pxd): messages handed over in C
        def message_sink(self) -> capsule
        # optional (e.g. fastfeed.recording.RecordingSession): the listener copies each message
        # into raw_tap (a fastfeed._ext.listener.RawTap, in C), then calls the C sink, or else
        # tapped_sink (the session's on_message without the tap)
        raw_tap: RawTap; tapped_sink: Callable[[Any, int], None]

The API key is never shown: every URL, event, log line, ``repr`` and exception text that
leaves this module has ``apiKey=`` values (and the key itself) replaced by ``***``.
"""
from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import socket
import time
from typing import Any, Callable, Optional

from picows import WSCloseCode, WSError, ws_connect  # type: ignore[attr-defined]
from picows.common import WSHandshakeError, WSProtocolError

from .._ext.listener import KIND_TOO_BIG, FeedListener, RawTap
from ..engine.stats import Stats
from ..errors import ConnectionRejected, TransportError
from ..log import RateLimitedLog
from .masking import MaskingAdapter, mask_secrets, mask_url, remember_secret, secrets_of
from .session import Session

__all__ = [
    "Connection",
    "Session",
    "TransportError",
    "ConnectionRejected",
]

log = logging.getLogger("fastfeed.transport")

MiB = 1024 * 1024

#: CLOSE codes from the server after which reconnecting cannot help (auth/policy).
FATAL_CLOSE_CODES = (1008,)
#: HTTP statuses of a refused upgrade after which reconnecting cannot help.
FATAL_HTTP_STATUSES = (401, 403)
#: HTTP statuses of a refused upgrade whose ``Retry-After`` header the next attempt honours.
RETRY_AFTER_STATUSES = (429, 503)


def retry_after_seconds(headers: Any) -> Optional[float]:
    """The ``Retry-After`` header as seconds from now (delay-seconds or an HTTP date);
    ``None`` when absent or unreadable."""
    try:
        value = headers.get("Retry-After") if headers is not None else None
    except Exception:
        return None
    if not value:
        return None
    value = str(value).strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None



class Connection:
    """A reconnecting WebSocket connection feeding one session.

    :param url: ``ws://`` or ``wss://`` URL (may carry ``?apiKey=``; it is never shown).
    :param session: see :class:`Session`.
    :param stats: shared counters: frames, messages, bytes, protocol_errors (added by the
        listener once per socket read) and reconnects (successful re-connections).
    :param ping_interval: send a PING after this many seconds without any frame.
    :param idle_timeout: no frame (data or PONG) for this long: the connection is dead,
        it is aborted and reconnected.
    :param backoff_initial: first retry delay (before jitter, which scales it by 0.5..1).
    :param backoff_max: cap of the doubling retry delay, and of the wait a ``Retry-After``
        header of an HTTP 429/503 answering the upgrade asks for (at least that long, logged).
    :param max_message_size: largest frame and largest reassembled message (1009 beyond).
    :param ssl_context: TLS context for ``wss://``; ``None``: the default, verifying one.
    :param on_event: ``on_event(name, info: dict)`` for "connected", "disconnected",
        "reconnecting", "protocol_error".
    :param handshake_timeout: seconds allowed for TCP connect + TLS + upgrade.
    :param stable_after: a connection that lived this long resets the backoff.
    :param read_buffer_limit: picows' read buffer only grows; when it exceeds this many
        bytes (checked by the watchdog) the connection is recycled to free it.  Default
        ``4 * max_message_size``.
    :param recv_buffer_size: ``SO_RCVBUF`` of the socket (Linux doubles it).  It bounds the
        bytes one read can return, hence how far picows' read buffer grows (about
        2 x (rcvbuf + largest frame)); a full-market burst (~1.7 MB) fits easily.  ``None``
        keeps the OS autotuning (up to ``net.ipv4.tcp_rmem`` max, often 6-32 MiB).
    :param extra_headers: extra HTTP headers for the upgrade request.
    :param seed: seed of the jitter (tests).
    :param batch_per_read: when the session has ``on_buffer_end`` and
        ``defer_until_buffer_end`` (the feed sessions do), turn the latter on: the bars of
        all messages of one socket read are applied in one engine update, at the end of the
        read.  ``False`` leaves the session as it is.  Either way the listener calls
        ``session.on_buffer_end()`` (when the session has it) after the last message of
        every read and when the connection is lost, before ``on_disconnected``, so nothing
        waits past a read, a drop or :meth:`stop`.
    """

    def __init__(
        self,
        url: str,
        session: Session,
        *,
        stats: Optional[Stats] = None,
        ping_interval: float = 5.0,
        idle_timeout: float = 15.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        max_message_size: int = 16 * MiB,
        ssl_context: Any = None,
        on_event: Optional[Callable[[str, dict], Any]] = None,
        handshake_timeout: float = 10.0,
        stable_after: float = 10.0,
        read_buffer_limit: Optional[int] = None,
        recv_buffer_size: Optional[int] = 4 * MiB,
        extra_headers: Any = None,
        seed: Optional[int] = None,
        batch_per_read: bool = True,
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"not a ws:// or wss:// URL: {mask_url(url)!r}")
        if ping_interval <= 0 or idle_timeout <= 0:
            raise ValueError("ping_interval and idle_timeout must be > 0")
        if backoff_initial < 0 or backoff_max < backoff_initial:
            raise ValueError("need 0 <= backoff_initial <= backoff_max")
        self._url = url
        self._secrets = secrets_of(url)
        remember_secret(*self._secrets)
        self.display_url = mask_url(url)
        self.session = session
        self.stats = stats if stats is not None else Stats()
        self.ping_interval = float(ping_interval)
        self.idle_timeout = float(idle_timeout)
        self.backoff_initial = float(backoff_initial)
        self.backoff_max = float(backoff_max)
        self.max_message_size = int(max_message_size)
        self.ssl_context = ssl_context
        self.on_event = on_event
        self.handshake_timeout = handshake_timeout
        self.stable_after = stable_after
        self.read_buffer_limit = int(read_buffer_limit or 4 * self.max_message_size)
        self.recv_buffer_size = recv_buffer_size
        self.extra_headers = extra_headers
        self._rng = random.Random(seed)
        self._picows_logger = MaskingAdapter(logging.getLogger("fastfeed.transport.ws"), self._secrets)
        self._ratelog = RateLimitedLog(log, interval=5.0)
        self.batch_per_read = bool(batch_per_read)
        if self.batch_per_read and callable(getattr(session, "on_buffer_end", None)) \
                and hasattr(session, "defer_until_buffer_end"):
            session.defer_until_buffer_end = True  # type: ignore[attr-defined]

        self._transport: Any = None
        #: listener of the current connection (None between connections) / of the last one
        self.listener: Optional[FeedListener] = None
        self.last_listener: Optional[FeedListener] = None
        self._stopping = False
        self._stop_event: Optional[asyncio.Event] = None
        self._running = False
        self._done: Optional[asyncio.Event] = None
        self._disc_reason: Optional[str] = None
        self._close_code: Optional[int] = None
        self.connects = 0  # successful connections (handshakes) so far
        self.attempt = 0  # consecutive failed attempts (backoff exponent)
        self.last_error: Optional[str] = None
        self._retry_after: Optional[float] = None  # seconds a 429/503 asked us to wait
        self._too_big_counted = False  # this connection's listener counted a message_too_big

    # -- public API ---------------------------------------------------------------------

    def __repr__(self) -> str:
        state = "connected" if self.connected else ("stopping" if self._stopping else "idle")
        return f"Connection({self.display_url!r}, {state}, connects={self.connects})"

    @property
    def connected(self) -> bool:
        t = self._transport
        return t is not None and not t.is_disconnected and not t.is_close_frame_sent

    def send(self, data: bytes | bytearray | memoryview | str) -> bool:
        """Send one text message; ``False`` (nothing sent) when not connected."""
        t = self._transport
        if t is None or t.is_disconnected or t.is_close_frame_sent:
            return False
        if isinstance(data, str):
            data = data.encode()
        t.send(1, data)  # WSMsgType.TEXT
        return True

    async def stop(self, timeout: float = 5.0) -> None:
        """Close the connection (CLOSE 1000) and make :meth:`run` return."""
        self._stopping = True
        if self._stop_event is not None:
            self._stop_event.set()
        self._hang_up(WSCloseCode.OK, "client stopping", graceful=True)
        if self._running and self._done is not None:
            try:
                await asyncio.wait_for(self._done.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def run(self) -> None:
        """Connect and serve until :meth:`stop` or a fatal error (raised, never retried).

        A stopped connection stays stopped (``stop()`` before ``run()`` makes it return at once).
        """
        if self._running:
            raise RuntimeError("Connection.run() is already running")
        self._running = True
        self._stop_event = asyncio.Event()
        if self._stopping:
            self._stop_event.set()
        self._done = asyncio.Event()
        try:
            await self._run()
        finally:
            self._running = False
            self._transport = None
            self._done.set()

    # -- main loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self.attempt = 0
        while not self._stopping:
            self._raise_if_fatal()
            self._disc_reason = None
            self._close_code = None
            started = loop.time()
            connected = False
            try:
                transport, listener = await self._connect()
            except ConnectionRejected as exc:
                self._refused(exc.reason)
                raise
            except _Stopped:
                break
            except Exception as exc:  # network errors, handshake errors, timeouts
                reason = f"connect failed: {type(exc).__name__}: {self._mask(str(exc))}"
                self.last_error = reason
                self._ratelog("connect", "%s", f"{self.display_url}: {reason}", level=logging.WARNING)
            else:
                connected = True
                await self._serve(transport, listener)
            if self._stopping:
                break
            self._raise_if_fatal()
            if self._close_code in FATAL_CLOSE_CODES:
                rejected = ConnectionRejected(
                    f"{self.display_url}: server closed the connection with code "
                    f"{self._close_code} ({self._disc_reason}); not reconnecting",
                    reason=f"{self._disc_reason} after connecting",
                )
                self._refused(rejected.reason)
                raise rejected
            if connected and loop.time() - started >= self.stable_after:
                self.attempt = 0
            delay = self.backoff_delay(self.attempt)
            self.attempt += 1
            retry_after, self._retry_after = self._retry_after, None
            if retry_after is not None and delay < retry_after:
                delay = min(retry_after, self.backoff_max)
                log.warning("%s: server asked to retry after %g s: next attempt in %.3f s%s",
                            self.display_url, retry_after, delay,
                            " (capped at backoff_max)" if delay < retry_after else "")
            self._emit("reconnecting", delay=delay, attempt=self.attempt)
            try:
                await asyncio.wait_for(self._stop_event.wait(), delay)  # type: ignore[union-attr]
            except asyncio.TimeoutError:
                pass
        self._raise_if_fatal()

    def backoff_delay(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (0-based): doubling, capped, jittered x0.5..1."""
        base = min(self.backoff_max, self.backoff_initial * (2.0 ** min(attempt, 60)))
        return base * (0.5 + 0.5 * self._rng.random())

    async def _connect(self) -> tuple[Any, FeedListener]:
        stats = self.stats
        session = self.session
        # a session with a raw tap (e.g. a recording session) hands it over: the listener
        # copies each message into it in C, then calls the untapped sink
        tap = getattr(session, "raw_tap", None)
        if not isinstance(tap, RawTap):
            tap = None
        # the sink: the session's C sink when it has one (messages handed over in C, its
        # buffer end included), else its on_message (tapped_sink when the listener taps)
        buffer_end = None
        if getattr(session, "message_sink", None) is not None:
            sink = session  # the listener takes its C sink and keeps it referenced
        else:
            sink = session.tapped_sink if tap is not None else session.on_message  # type: ignore[attr-defined]
            buffer_end = getattr(session, "on_buffer_end", None)
            if not callable(buffer_end):
                buffer_end = None
        mms = self.max_message_size

        def factory() -> FeedListener:
            ln = FeedListener(sink, self, stats, mms, buffer_end, tap)
            self.listener = self.last_listener = ln
            self._too_big_counted = False
            return ln

        kwargs: dict[str, Any] = {}
        if self.recv_buffer_size:
            size = int(self.recv_buffer_size)

            async def socket_factory(parsed: Any) -> socket.socket:
                # SO_RCVBUF must be set before connect (window scaling); resolve without
                # blocking the loop and try each address in turn
                loop = asyncio.get_running_loop()
                infos = await loop.getaddrinfo(parsed.host, parsed.port, type=socket.SOCK_STREAM)
                last: Optional[BaseException] = None
                for family, type_, proto, _, addr in infos:
                    s = socket.socket(family, type_, proto)
                    try:
                        s.setblocking(False)
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
                        await loop.sock_connect(s, addr)
                        return s
                    except OSError as exc:
                        s.close()
                        last = exc
                raise last if last is not None else OSError(f"cannot resolve {parsed.host}")

            kwargs["socket_factory"] = socket_factory
        coro = ws_connect(
            factory,
            self._url,
            ssl_context=self.ssl_context,
            websocket_handshake_timeout=self.handshake_timeout,
            logger_name=self._picows_logger,
            enable_auto_ping=False,
            enable_auto_pong=False,  # the listener answers pings (and counts them)
            max_frame_size=self.max_message_size,
            extra_headers=self.extra_headers,
            **kwargs,
        )
        task = asyncio.ensure_future(asyncio.wait_for(coro, self.handshake_timeout + 1.0))
        stop_wait = asyncio.ensure_future(self._stop_event.wait())  # type: ignore[union-attr]
        try:
            await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
        if not task.done():
            task.cancel()
            try:
                await task
            except BaseException:
                pass
            raise _Stopped()
        try:
            transport, listener = task.result()
        except WSHandshakeError as exc:
            status = getattr(getattr(exc, "response", None), "status", None)
            if status is not None and int(status) in FATAL_HTTP_STATUSES:
                raise ConnectionRejected(
                    f"{self.display_url}: upgrade refused with HTTP {int(status)}; not reconnecting",
                    reason=f"HTTP {int(status)} on the upgrade") from None
            if status is not None and int(status) in RETRY_AFTER_STATUSES:
                self._retry_after = retry_after_seconds(getattr(exc.response, "headers", None))
            raise TransportError(self._mask(f"handshake failed: {exc}")) from None
        except asyncio.TimeoutError:
            raise TransportError("connect/handshake timed out") from None
        except (OSError, WSError) as exc:
            raise TransportError(self._mask(f"{type(exc).__name__}: {exc}")) from None
        if self._stopping:
            self._hang_up(WSCloseCode.OK, "client stopping", graceful=True)
        return transport, listener

    async def _serve(self, transport: Any, listener: FeedListener) -> None:
        """Watch one live connection until it is gone: pings, idle limit, fatal, stop."""
        loop = asyncio.get_running_loop()
        waiter = asyncio.ensure_future(transport.wait_disconnected())
        tick = max(0.01, min(0.25, self.ping_interval / 4, self.idle_timeout / 4))
        last_ping = loop.time()
        check_every = min(1.0, 4 * tick)
        next_buffer_check = loop.time() + check_every
        try:
            while True:
                done, _ = await asyncio.wait({waiter}, timeout=tick)
                if done:
                    break
                if self._stopping:
                    self._hang_up(WSCloseCode.OK, "client stopping", graceful=True)
                    continue
                if self.session.fatal is not None:
                    self._disc_reason = self._disc_reason or "session error (fatal)"
                    self._hang_up(WSCloseCode.OK, "client giving up", graceful=True)
                    continue
                if listener.closing:
                    continue
                idle = listener.idle_ns() / 1e9
                now = loop.time()
                if idle >= self.idle_timeout:
                    self._disc_reason = f"idle timeout: no frame for {idle:.1f} s"
                    self._ratelog("idle", "%s", f"{self.display_url}: {self._disc_reason}", level=logging.WARNING)
                    self._hang_up(WSCloseCode.GOING_AWAY, "idle timeout", graceful=False)
                    continue
                if idle >= self.ping_interval and now - last_ping >= self.ping_interval:
                    last_ping = now
                    try:
                        transport.send_ping(b"ff")
                    except Exception:
                        pass
                if now >= next_buffer_check:
                    next_buffer_check = now + check_every
                    size = self._read_buffer_size(transport)
                    if size > self.read_buffer_limit:
                        self._disc_reason = (
                            f"read buffer grew to {size} bytes (> {self.read_buffer_limit}): recycling"
                        )
                        self._ratelog("rbuf", "%s", f"{self.display_url}: {self._disc_reason}", level=logging.WARNING)
                        self._hang_up(WSCloseCode.GOING_AWAY, "recycling connection", graceful=True)
        finally:
            if not waiter.done():
                waiter.cancel()
            try:
                await waiter
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # picows-detected local failure (e.g. frame too big)
                reason = f"{type(exc).__name__}: {self._mask(str(exc))}"
                self.last_error = reason
                if self._disc_reason is None:
                    self._disc_reason = reason
                if (isinstance(exc, WSProtocolError) and getattr(exc, "code", None) == WSCloseCode.MESSAGE_TOO_BIG
                        and not self._too_big_counted):
                    # one frame over max_message_size: picows closed with 1009 from its header,
                    # before the listener saw it; counted like a message that grew too big
                    self.stats.protocol_errors += 1
                    self._ws_protocol_error(KIND_TOO_BIG, self._mask(str(exc)), WSCloseCode.MESSAGE_TOO_BIG)
            listener.flush_stats()

    @staticmethod
    def _read_buffer_size(transport: Any) -> int:
        """Free space of picows' read buffer (~its size between reads): it never shrinks."""
        try:
            proto = transport.underlying_transport.get_protocol()
            return len(proto.get_buffer(-1))
        except Exception:
            return 0

    def _hang_up(self, code: int, reason: str, graceful: bool) -> None:
        t = self._transport
        if t is None or t.is_disconnected:
            return
        try:
            if not t.is_close_frame_sent:
                t.send_close(code, reason.encode())
            if graceful:
                t.disconnect(True)
            else:
                asyncio.get_running_loop().call_later(0.01, t.disconnect, False)
        except Exception:
            pass

    def _refused(self, reason: str) -> None:
        """Access was refused (HTTP 401/403, CLOSE 1008): tell the session, which may make
        it its own fatal error (e.g. ``AuthError``); :meth:`_raise_if_fatal` raises that."""
        self.last_error = reason
        on_refused = getattr(self.session, "on_refused", None)
        if callable(on_refused):
            try:
                on_refused(self._mask(reason))
            except Exception as exc:
                self._ratelog("on_refused", "%s", f"session.on_refused raised {type(exc).__name__}: {self._mask(str(exc))}", level=logging.ERROR)
        self._raise_if_fatal()

    def _raise_if_fatal(self) -> None:
        fatal = getattr(self.session, "fatal", None)
        if fatal is not None:
            raise fatal

    def _mask(self, text: str) -> str:
        return mask_secrets(text, self._secrets)

    def _emit(self, name: str, **info: Any) -> None:
        info.setdefault("url", self.display_url)
        if name == "reconnecting":
            log.info("%s: reconnecting in %.3f s (attempt %d)", self.display_url, info["delay"], info["attempt"])
        cb = self.on_event
        if cb is not None:
            try:
                cb(name, info)
            except Exception as exc:
                self._ratelog("on_event", "%s", f"on_event callback raised {type(exc).__name__}: {self._mask(str(exc))}", level=logging.ERROR)

    # -- listener callbacks (rare events only) -----------------------------------------

    def _ws_connected(self, transport: Any) -> None:
        if self._stopping:
            # a handshake that completed after stop() (its connect was cancelled): drop it
            if self.listener is not None:
                self.listener.abandon()
            try:
                transport.send_close(WSCloseCode.OK, b"client stopping")
                transport.disconnect(True)
            except Exception:
                pass
            return
        self._transport = transport
        self.connects += 1
        if self.connects > 1:
            self.stats.reconnects += 1
        self._emit("connected", connects=self.connects)
        log.info("%s: connected", self.display_url)
        try:
            self.session.on_connected(self.send)
        except Exception as exc:
            self._ratelog("on_connected", "%s", f"session.on_connected raised {type(exc).__name__}: {self._mask(str(exc))}", level=logging.ERROR)

    def _ws_disconnected(self, transport: Any) -> None:
        if transport is self._transport:
            self._transport = None
            self.listener = None
        reason = self._disc_reason or ("client stopped" if self._stopping else "connection lost")
        self._disc_reason = reason
        self._emit("disconnected", reason=reason, code=self._close_code)
        log.info("%s: disconnected: %s", self.display_url, reason)
        try:
            self.session.on_disconnected(reason)
        except Exception as exc:
            self._ratelog("on_disconnected", "%s", f"session.on_disconnected raised {type(exc).__name__}: {self._mask(str(exc))}", level=logging.ERROR)

    def _ws_protocol_error(self, kind: str, detail: str, close_code: int) -> None:
        self.stats.protocol_errors_by_kind[kind] += 1
        if kind == KIND_TOO_BIG:
            self._too_big_counted = True  # picows' own 1009 for it is not counted again
        if close_code:
            self._disc_reason = f"protocol error ({kind}): {detail}"
        self._emit("protocol_error", kind=kind, detail=detail, close_code=close_code or None)
        self._ratelog("proto:" + kind, "%s", f"{self.display_url}: protocol error ({kind}): {detail}", level=logging.WARNING)

    def _ws_close_received(self, code: int, reason: Optional[str]) -> None:
        self._close_code = code
        r = self._mask(reason or "")
        self._disc_reason = f"server closed ({code}{': ' + r if r else ''})"

    def _ws_sink_error(self, exc: BaseException) -> None:
        self.stats.session_errors += 1
        self._ratelog("sink", "%s", f"session.on_message raised {type(exc).__name__}: {self._mask(str(exc))}", level=logging.ERROR)


class _Stopped(Exception):
    pass
