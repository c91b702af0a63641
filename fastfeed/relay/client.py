"""The NATS client side shared by the relay and its consumers: connect, stream, last entry.

Built on ``nats-py``. Connecting maps the server's refusals to our errors
(:class:`NatsAuthError` for bad or missing credentials, :class:`JetStreamNotEnabled`),
keeps reconnecting for ever once connected, and logs the client's errors rate-limited
with credentials masked (``nats-py``'s own handler would print tracebacks).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Optional

from ..log import RateLimitedLog
from . import wire
from .config import NatsConfig
from ..errors import JetStreamNotEnabled, NatsAuthError, RelayError, StreamNotFound

__all__ = ["connect", "ensure_stream", "stream_info", "last_entry", "DEFAULT_MAX_AGE",
           "DEFAULT_DUPLICATE_WINDOW", "parse_duration"]

log = logging.getLogger("fastfeed.relay")

DEFAULT_MAX_AGE = 86_400.0  # seconds a stream keeps entries (1 day)
DEFAULT_DUPLICATE_WINDOW = 120.0  # seconds JetStream remembers message ids

_AUTH_WORDS = ("authorization violation", "authentication", "user authentication expired",
               "authorization", "nkey", "credentials")


def parse_duration(text: str | float | int) -> float:
    """``"1d"``, ``"12h"``, ``"90m"``, ``"30s"`` or a number of seconds → seconds."""
    if isinstance(text, (int, float)):
        v = float(text)
    else:
        t = text.strip().lower()
        mult = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0}.get(t[-1:], None)
        try:
            v = float(t[:-1]) * mult if mult else float(t)
        except ValueError:
            raise ValueError(f"bad duration {text!r}: use e.g. 1d, 12h, 90m, 30s") from None
    if not v > 0:
        raise ValueError(f"duration {text!r} must be positive")
    return v


def _is_auth_error(exc: BaseException) -> bool:
    import nats.errors

    if isinstance(exc, (nats.errors.AuthorizationError, nats.errors.InvalidUserCredentialsError)):
        return True
    text = str(exc).lower()
    return any(w in text for w in _AUTH_WORDS)


async def connect(cfg: NatsConfig, *, name: str, timeout: float = 10.0,
                  disconnected_cb: Optional[Callable[[], Awaitable[None]]] = None,
                  reconnected_cb: Optional[Callable[[], Awaitable[None]]] = None,
                  closed_cb: Optional[Callable[[], Awaitable[None]]] = None,
                  pending_size: int = 64 << 20, ping_interval: float = 2.0,
                  ratelog: Optional[RateLimitedLog] = None) -> Any:
    """Connect to ``cfg``'s servers, retrying for up to ``timeout`` seconds.

    Raises :class:`NatsAuthError` at once when credentials are refused, and
    :class:`RelayError` when no server answered in time. Once connected, the client
    reconnects by itself for ever (the callbacks tell when it is down and back).
    """
    import nats

    rl = ratelog or RateLimitedLog(log, 5.0)
    refused: list[BaseException] = []
    connecting = True

    async def error_cb(exc: Exception) -> None:
        if connecting and _is_auth_error(exc):
            refused.append(exc)
        rl("nats-error", "%s: NATS: %s: %s", cfg.display_url, type(exc).__name__, cfg.mask(str(exc)))

    def auth_error(exc: BaseException) -> NatsAuthError:
        return NatsAuthError(f"{cfg.display_url}: NATS refused the credentials "
                             f"({cfg.mask(str(exc)).strip()})")

    kw = cfg.connect_options()
    deadline = time.monotonic() + timeout
    last: Optional[BaseException] = None
    try:
        while True:
            task = asyncio.ensure_future(nats.connect(
                name=name, error_cb=error_cb, disconnected_cb=disconnected_cb,
                reconnected_cb=reconnected_cb, closed_cb=closed_cb,
                allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.25,
                connect_timeout=max(0.5, min(2.0, timeout)), ping_interval=ping_interval,
                max_outstanding_pings=3, pending_size=pending_size, **kw))
            # nats-py retries a refused login for ever: watch its error callback
            while not task.done() and not refused and time.monotonic() < deadline:
                await asyncio.wait({task}, timeout=0.05)
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
                if refused:
                    raise auth_error(refused[0])
                raise RelayError(f"{cfg.display_url}: no NATS server answered within {timeout:g} s")
            try:
                return task.result()
            except Exception as exc:  # nats-py raises its own errors, OSError, TimeoutError
                if _is_auth_error(exc):
                    raise auth_error(exc) from None
                last = exc
            if time.monotonic() >= deadline:
                raise RelayError(f"{cfg.display_url}: no NATS server answered within {timeout:g} s "
                                 f"({type(last).__name__}: {cfg.mask(str(last))})") from None
            await asyncio.sleep(0.2)
    finally:
        connecting = False


def _js_error(exc: BaseException, cfg_url: str) -> Optional[BaseException]:
    """Our error for a JetStream API failure that retrying cannot fix, else ``None``."""
    import nats.errors
    import nats.js.errors as jse

    if isinstance(exc, (jse.ServiceUnavailableError, nats.errors.NoRespondersError)) or (
            isinstance(exc, jse.APIError) and getattr(exc, "err_code", None) in (10076, 10039)):
        return JetStreamNotEnabled(
            f"{cfg_url}: JetStream is not enabled on this NATS server (start it with "
            "`nats-server -js`, or enable jetstream in its configuration)")
    return None


async def stream_info(js: Any, name: str, cfg_url: str) -> Any:
    """The stream's info; :class:`StreamNotFound` / :class:`JetStreamNotEnabled`."""
    import nats.js.errors as jse

    try:
        return await js.stream_info(name)
    except jse.NotFoundError:
        raise StreamNotFound(f"{cfg_url}: no stream {name!r} (is `fastfeed relay` running "
                             "for this feed?)") from None
    except Exception as exc:
        mapped = _js_error(exc, cfg_url)
        if mapped is not None:
            raise mapped from None
        raise


async def ensure_stream(js: Any, feed: str, name: str, cfg_url: str, *,
                        max_age: float = DEFAULT_MAX_AGE,
                        duplicate_window: float = DEFAULT_DUPLICATE_WINDOW,
                        compression: Optional[str] = "s2", create: bool = True) -> Any:
    """The relay's stream (file storage, ``max_age``), created when missing."""
    from nats.js import api

    try:
        return await stream_info(js, name, cfg_url)
    except StreamNotFound:
        if not create:
            raise
    cfg = api.StreamConfig(
        name=name, subjects=[wire.subjects(feed)], storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS, max_age=float(max_age),
        duplicate_window=float(min(duplicate_window, max_age)), num_replicas=1,
        description=f"fastfeed relay: raw {feed} messages and events",
        compression=api.StoreCompression(compression) if compression else None,
    )
    try:
        info = await js.add_stream(cfg)
    except Exception as exc:
        mapped = _js_error(exc, cfg_url)
        if mapped is not None:
            raise mapped from None
        raise RelayError(f"{cfg_url}: cannot create stream {name!r}: {exc}") from None
    log.info("%s: created stream %s (%s, max age %g s)", cfg_url, name, wire.subjects(feed), max_age)
    return info


async def last_entry(js: Any, name: str) -> tuple[int, Optional[str]]:
    """``(stream sequence, Nats-Msg-Id)`` of the stream's last entry; ``(0, None)`` if empty."""
    import nats.js.errors as jse

    info = await js.stream_info(name)
    last = int(info.state.last_seq or 0)
    if last == 0 or not info.state.messages:
        return last, None
    try:
        m = await js.get_msg(name, seq=last)
    except jse.NotFoundError:  # removed by max_age in between
        return last, None
    hdrs = m.headers or {}
    return last, hdrs.get(wire.H_MSG_ID)
