"""Peer clients that ``fastfeed bench`` runs on the same simulated data as fastfeed.

Each peer is an ``async`` function ``run(url, meter, stop, **opts)`` that connects to
the simulator, consumes bars until ``stop`` is set, and counts every bar it finished
processing in ``meter.bars`` (plain attribute, read by the harness's sampler).  The
harness measures; the peers only do their work and count.

The peers:

``websockets-json``
    The common Python path: the ``websockets`` client, ``json.loads``, one dataclass
    per message, and rolling OHLCV/VWAP per ticker in plain Python
    (:class:`PyRolling`).  Speaks the Vantafin ``LS`` dialect, like fastfeed's
    headline figures.
``massive``
    The official ``massive`` client (formerly Polygon's), pointed at the simulator's
    Massive dialect (``ws://HOST:PORT/stocks``) unchanged: ``feed="HOST:PORT"``,
    ``secure=False``, ``subscriptions=["A.*"]``.  Its processor callback receives the
    client's ``EquityAgg`` dataclasses and, by default, applies them to the same
    :class:`PyRolling` aggregation (``aggregate=False``: count only, the client's
    own cost alone; the ratio to fastfeed is then the most conservative).
``floor``
    picows + msgspec decode only, no engine: fastfeed's own transport
    (``fastfeed.transport.Connection``, Cython listener) with a session that decodes
    every message with a ``msgspec`` Decoder of tagged Structs and does nothing
    else.  End-to-end fastfeed divided by this is the share of the decode-only
    ceiling that fastfeed keeps while filling rings and updating windows.

Optional dependencies (``pip install fastfeed[bench]``): ``websockets`` and
``massive``; each peer raises :class:`PeerUnavailable` when its package is missing.
"""
from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from ..feeds import massive, vantafin

__all__ = [
    "PEERS",
    "Meter",
    "PeerUnavailable",
    "PyRolling",
    "run_floor",
    "run_massive",
    "run_websockets_json",
]

DEFAULT_KEY = "bench"


class _Stop(Exception):
    """Raised in a peer's callback to end its client's loop."""


class PeerUnavailable(RuntimeError):
    """The peer's optional package is not installed."""


class Meter:
    """What a client has processed so far (read by the harness's sampler)."""

    __slots__ = ("bars", "messages", "errors", "first_recv_ns", "extra")

    def __init__(self) -> None:
        self.bars = 0
        self.messages = 0
        self.errors = 0
        self.first_recv_ns = 0
        self.extra: dict[str, Any] = {}


# ----------------------------------------------------------------------------------
# Plain-Python rolling OHLCV/VWAP: what a careful Python user writes.
# ----------------------------------------------------------------------------------


class _Ticker:
    __slots__ = ("secs", "o", "h", "l", "c", "v", "pv", "base", "heads", "sv", "spv", "n")

    def __init__(self, nw: int) -> None:
        self.secs: list[int] = []
        self.o: list[float] = []
        self.h: list[float] = []
        self.l: list[float] = []
        self.c: list[float] = []
        self.v: list[float] = []
        self.pv: list[float] = []
        self.base = 0  # absolute index of secs[0]
        self.heads = [0] * nw  # absolute index of each window's oldest bar
        self.sv = [0.0] * nw
        self.spv = [0.0] * nw
        self.n = 0  # absolute index one past the newest bar


class PyRolling:
    """Rolling OHLCV/VWAP per ticker in plain Python.

    Incremental volume and price*volume sums per window, upsert of a bar for the
    second already held, eviction as the ticker's own bars advance; open/high/low/
    close are computed when the cross-section is read (:meth:`snapshot`).  Bars older
    than the ticker's newest are ignored (counted in ``late``).  Deliberately lean:
    a stronger peer makes the comparison more conservative.
    """

    def __init__(self, windows: tuple[int, ...] = (60, 300, 900)) -> None:
        self.windows = tuple(windows)
        self.tickers: dict[str, _Ticker] = {}
        self.T = -1
        self.late = 0

    def update(self, sym: str, s: int, o: float, h: float, l: float, c: float, v: float, pv: float) -> None:
        t = self.tickers.get(sym)
        if t is None:
            t = self.tickers[sym] = _Ticker(len(self.windows))
        if s > self.T:
            self.T = s
        secs = t.secs
        if secs and secs[-1] == s:  # upsert: replace the newest bar
            i = len(secs) - 1
            ov, opv = t.v[i], t.pv[i]
            for wi in range(len(self.windows)):
                t.sv[wi] += v - ov
                t.spv[wi] += pv - opv
            t.o[i] = o
            t.h[i] = h
            t.l[i] = l
            t.c[i] = c
            t.v[i] = v
            t.pv[i] = pv
            return
        if secs and s < secs[-1]:
            self.late += 1
            return
        secs.append(s)
        t.o.append(o)
        t.h.append(h)
        t.l.append(l)
        t.c.append(c)
        t.v.append(v)
        t.pv.append(pv)
        t.n += 1
        base = t.base
        sv, spv, heads = t.sv, t.spv, t.heads
        for wi, w in enumerate(self.windows):
            sv[wi] += v
            spv[wi] += pv
            hd = heads[wi]
            cut = s - w
            while secs[hd - base] <= cut:
                sv[wi] -= t.v[hd - base]
                spv[wi] -= t.pv[hd - base]
                hd += 1
            heads[wi] = hd
        oldest = min(heads)
        if oldest - base > 256:
            k = oldest - base
            for lst in (t.secs, t.o, t.h, t.l, t.c, t.v, t.pv):
                del lst[:k]
            t.base = oldest

    def snapshot(self, window: int) -> dict[str, tuple[float, float, float, float, float, float, int]]:
        """``{ticker: (open, high, low, close, volume, vwap, count)}`` as of ``T``."""
        wi = self.windows.index(window)
        cut = self.T - window
        out = {}
        nan = math.nan
        for sym, t in self.tickers.items():
            lo = t.heads[wi] - t.base
            k = lo
            while k < len(t.secs) and t.secs[k] <= cut:
                k += 1
            if k >= len(t.secs):
                out[sym] = (nan, nan, nan, nan, 0.0, nan, 0)
                continue
            if k == lo:
                vol, pv = t.sv[wi], t.spv[wi]
            else:
                vol, pv = math.fsum(t.v[k:]), math.fsum(t.pv[k:])
            out[sym] = (
                t.o[k],
                max(t.h[k:]),
                min(t.l[k:]),
                t.c[-1],
                vol,
                pv / vol if vol else nan,
                len(t.secs) - k,
            )
        return out


# ----------------------------------------------------------------------------------
# Peer 1: websockets + json + a dataclass per message + PyRolling
# ----------------------------------------------------------------------------------


@dataclass(slots=True)
class LiveQuoteSecond:
    type: str
    ticker: str
    open: float
    high: float
    low: float
    close: float
    volume: int
    timestamp: int


async def run_websockets_json(
    url: str,
    meter: Meter,
    stop: asyncio.Event,
    *,
    api_key: str = DEFAULT_KEY,
    topics: str = "LS.*",
    windows: tuple[int, ...] = (60, 300, 900),
    on_batch: Callable[[int, int, int], None] | None = None,
    **_: Any,
) -> None:
    """The common Python path on the Vantafin ``LS`` dialect."""
    try:
        import websockets
        from websockets.asyncio.client import connect
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise PeerUnavailable("websockets is not installed (pip install 'fastfeed[bench]')") from e
    import time

    roll = PyRolling(windows)
    loads = json.loads
    async with connect(url, max_size=None, compression=None, open_timeout=10) as ws:
        await ws.send(json.dumps({"action": "auth", "params": api_key}))
        await ws.send(json.dumps({"action": "subscribe", "params": topics}))

        async def closer() -> None:
            await stop.wait()
            await ws.close()

        closer_task = asyncio.ensure_future(closer())
        try:
            async for raw in ws:  # ends when closer() closes the socket
                recv_ns = time.time_ns()
                if not meter.first_recv_ns:
                    meter.first_recv_ns = recv_ns
                data = loads(raw)
                items = data if isinstance(data, list) else (data,)
                meter.messages += 1
                n = 0
                for d in items:
                    if d.get("type") != "live_quote_second":
                        continue
                    q = LiveQuoteSecond(**d)
                    roll.update(
                        q.ticker, q.timestamp // 1000, q.open, q.high, q.low, q.close,
                        float(q.volume), q.volume * (q.high + q.low + q.close) / 3.0,
                    )
                    n += 1
                meter.bars += n
                if on_batch is not None and n:
                    on_batch(roll.T, n, recv_ns)
        except websockets.ConnectionClosed:
            pass
        finally:
            closer_task.cancel()
    meter.extra["tickers"] = len(roll.tickers)


# ----------------------------------------------------------------------------------
# Peer 2: the official massive client, unchanged
# ----------------------------------------------------------------------------------


async def run_massive(
    url: str,
    meter: Meter,
    stop: asyncio.Event,
    *,
    api_key: str = DEFAULT_KEY,
    topics: str = "A.*",
    aggregate: bool = True,
    windows: tuple[int, ...] = (60, 300, 900),
    on_batch: Callable[[int, int, int], None] | None = None,
    **_: Any,
) -> None:
    """The official client against ``ws://HOST:PORT/stocks`` (``url`` gives host:port)."""
    try:
        from massive import WebSocketClient
    except ImportError as e:  # pragma: no cover
        raise PeerUnavailable("massive is not installed (pip install 'fastfeed[bench]')") from e
    import logging
    import time
    from urllib.parse import urlsplit

    logging.getLogger("WebSocketClient").setLevel(logging.ERROR)
    parts = urlsplit(url)
    hostport = parts.netloc
    client = WebSocketClient(
        api_key=api_key,
        feed=hostport,  # url = f"ws://{feed}/{market}"
        market="stocks",
        secure=parts.scheme == "wss",
        subscriptions=[topics],
        max_reconnects=0,
    )
    roll = PyRolling(windows)

    async def processor(msgs: list) -> None:
        if stop.is_set():
            raise _Stop  # reliable: the client swallows cancellation inside wait_for()
        recv_ns = time.time_ns()  # after the client's own json.loads + parse of this message
        if not meter.first_recv_ns:
            meter.first_recv_ns = recv_ns
        meter.messages += 1
        n = 0
        if aggregate:
            for m in msgs:
                if m.event_type != "A":
                    continue
                v = m.volume or 0.0
                vw = m.vwap if m.vwap is not None else m.close
                roll.update(m.symbol, m.start_timestamp // 1000, m.open, m.high, m.low, m.close, v, v * vw)
                n += 1
        else:
            n = len(msgs)
        meter.bars += n
        if on_batch is not None and n:
            t = roll.T if aggregate else msgs[-1].start_timestamp // 1000
            on_batch(t, n, recv_ns)

    task = asyncio.ensure_future(client.connect(processor, max_size=None, compression=None))
    stop_task = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            try:
                task.result()  # raise the client's error (e.g. AuthError)
            except _Stop:
                pass
    finally:
        stop_task.cancel()
        if not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 2.0)
            except (_Stop, asyncio.TimeoutError):
                pass
            except Exception:  # noqa: BLE001 - closing races are not the peer's result
                pass
        if not task.done():
            try:
                await client.close()
            except Exception:  # noqa: BLE001
                pass
            task.cancel()
            try:
                await asyncio.wait_for(task, 2.0)
            except BaseException:  # noqa: BLE001
                pass
    meter.extra["tickers"] = len(roll.tickers)


# ----------------------------------------------------------------------------------
# Peer 3: the floor — fastfeed's transport + msgspec decode only
# ----------------------------------------------------------------------------------


class DecodeOnlySession:
    """A feed session that decodes every message and keeps nothing (the floor).

    Implements the transport's Session protocol.  ``dialect`` is ``"vantafin"`` or
    ``"massive"``; it uses that feed's own Decoder and Structs (``fastfeed.feeds``), so
    the floor pays exactly the decode fastfeed pays, and nothing after it.

    ``on_batch(T, n, recv_ns)`` (burst measurement only) is called after each message
    that held bars, once it is decoded: ``T`` the second of its last bar, ``n`` its bars,
    ``recv_ns`` the message's receive time.
    """

    def __init__(self, meter: Meter, *, dialect: str = "vantafin", api_key: str = DEFAULT_KEY,
                 topics: str | None = None, on_batch: Callable[[int, int, int], None] | None = None) -> None:
        self.meter = meter
        self.on_batch = on_batch
        self.fatal: BaseException | None = None
        self.dialect = dialect
        self.api_key = api_key
        if dialect == "vantafin":
            self.topics = topics or "LS.*"
            self._dec, self._bar, self._ms = vantafin.decoder, vantafin.LiveQuote, "timestamp"
        elif dialect == "massive":
            self.topics = topics or "A.*"
            self._dec, self._bar, self._ms = massive.decoder, massive.Agg, "s"
        else:
            raise ValueError(f"unknown dialect {dialect!r}")

    def on_connected(self, send: Callable[[bytes], None]) -> None:
        # both dialects authenticate and subscribe with the same {"action", "params"} messages
        send(vantafin.auth_message(self.api_key))
        send(vantafin.subscribe_message([self.topics]))

    def on_message(self, payload: Any, recv_ns: int) -> None:
        m = self.meter
        try:
            out = self._dec.decode(payload)
        except Exception:  # noqa: BLE001 - the floor counts, never raises
            m.errors += 1
            return
        m.messages += 1
        if not m.first_recv_ns:
            m.first_recv_ns = recv_ns
        last = None
        if type(out) is list:
            bar = self._bar
            n = 0
            for x in out:
                if type(x) is bar:
                    n += 1
                    last = x
            m.bars += n
        elif type(out) is self._bar:
            n, last = 1, out
            m.bars += 1
        if self.on_batch is not None and last is not None:
            self.on_batch(getattr(last, self._ms) // 1000, n, recv_ns)

    def on_disconnected(self, reason: str) -> None:
        pass


async def run_floor(
    url: str,
    meter: Meter,
    stop: asyncio.Event,
    *,
    api_key: str = DEFAULT_KEY,
    dialect: str = "vantafin",
    topics: str | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
    **_: Any,
) -> None:
    """fastfeed's transport + decode only."""
    from ..transport.connection import Connection

    session = DecodeOnlySession(meter, dialect=dialect, api_key=api_key, topics=topics, on_batch=on_batch)
    conn = Connection(url, session)
    task = asyncio.ensure_future(conn.run())
    stop_task = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
    finally:
        stop_task.cancel()
        await conn.stop()
        if not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass


PeerFn = Callable[..., Awaitable[None]]

#: name → (runner, dialect it consumes)
PEERS: dict[str, tuple[PeerFn, str]] = {
    "websockets-json": (run_websockets_json, "vantafin"),
    "massive": (run_massive, "massive"),
    "floor": (run_floor, "vantafin"),
}
