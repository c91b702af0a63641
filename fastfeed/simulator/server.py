"""The simulator server: a real picows WebSocket server speaking the feeds of PROTOCOLS.md.

Paths: ``/v1/stocks`` Vantafin (``LS``), ``/ws`` sFOX ticker, ``/stocks`` Massive/Polygon
per-second aggregates (``A``).  One asyncio loop serves every connection; each subscribed
connection has a producer task that walks the simulated clock and writes whole seconds of
bars as pre-framed WebSocket frames, many frames per ``transport.write`` (coalesced), and
honours ``pause_writing``/``resume_writing`` (flow control) so max-rate mode sends exactly
as fast as the client reads.

Ground truth: each connection records what it wrote (``SimConnection.sent_bars()``,
``Simulator.sent_bars()``), in send order, corrections flagged.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import json
import logging
import math
import socket
import struct
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Optional

import msgspec
import numpy as np
from picows import WSListener, WSMsgType, ws_create_server  # type: ignore[attr-defined]

from .._ext.simencode import encode_massive_frames, encode_vantafin_frames
from ..transport import _MaskingAdapter
from . import bursts
from .faults import Faults
from .market import CryptoUpdate, Market, StockSecond

__all__ = ["SimConfig", "Simulator", "SimConnection", "ws_frame", "BAR_DTYPE", "FEEDS"]

log = logging.getLogger("fastfeed.simulator")

FEEDS = {"vantafin": "/v1/stocks", "sfox": "/ws", "massive": "/stocks"}
_PATH_FEED = {v: k for k, v in FEEDS.items()}

BAR_DTYPE = np.dtype(
    [
        ("symbol", "U16"),
        ("second", "i8"),
        ("open", "f8"),
        ("high", "f8"),
        ("low", "f8"),
        ("close", "f8"),
        ("volume", "f8"),
        ("correction", "?"),
    ]
)


def ws_frame(payload: bytes, opcode: int = 1, fin: bool = True, rsv1: bool = False) -> bytes:
    """A server-side (unmasked) WebSocket frame."""
    b0 = opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0)
    n = len(payload)
    if n < 126:
        return bytes((b0, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", b0, 126, n) + payload
    return struct.pack("!BBQ", b0, 127, n) + payload


@dataclass
class SimConfig:
    """Simulator settings (see ``python -m fastfeed.simulator --help``)."""

    seed: int = 0
    n_tickers: int = 12_000
    trade_fraction: float = 0.5
    bars_per_frame: int = 100
    #: send arrays even for one bar per frame (Vantafin sends a bare object at 1 bar/frame)
    always_array: bool = False
    #: simulated seconds per wall second (1: the simulated clock is wall time)
    speed: float = 1.0
    #: send seconds as fast as the client reads (flow control), ignoring ``speed``
    max_rate: bool = False
    #: stop producing after this many simulated seconds per connection (None: unbounded)
    max_seconds: Optional[int] = None
    #: first simulated second (epoch s); default: now (speed 1) or far enough in the past
    #: that bars never run ahead of the wall clock
    start_second: Optional[int] = None
    #: required API key (None: any key, or none, is accepted)
    api_key: Optional[str] = "sim-key"
    market_open: bool = True
    sfox_interval: int = 3
    sfox_require_auth: bool = True
    record: bool = True
    host: str = "127.0.0.1"
    port: int = 0
    write_chunk: int = 256 * 1024
    ssl_context: Any = None
    faults: Faults = field(default_factory=Faults)

    def __post_init__(self) -> None:
        if isinstance(self.faults, dict):
            self.faults = Faults(**self.faults)
        if self.bars_per_frame < 1:
            raise ValueError("bars_per_frame must be >= 1")
        if self.speed <= 0:
            raise ValueError("speed must be > 0")


def _iso_ms(ms: int) -> str:
    d = _dt.datetime.fromtimestamp(ms // 1000, tz=_dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


_enc = msgspec.json.Encoder()


class SimConnection(WSListener):
    """One accepted client connection (any feed)."""

    def __init__(self, sim: "Simulator", feed: str, url_key: Optional[str], index: int) -> None:
        super().__init__()
        self.sim = sim
        self.feed = feed
        self.url_key = url_key
        self.index = index
        self.faulty = sim.config.faults.any and (
            sim.config.faults.connections == 0 or index < sim.config.faults.connections
        )
        self.transport: Any = None
        self.authenticated = False
        self.closed = False
        self.sub_all = False
        self.sub: set[str] = set()
        self.received: list[Any] = []  # client messages (parsed), for tests
        self.data_frames = 0
        self.array_frames = 0
        self.frames_written = 0
        self.bytes_written = 0
        self.malformed_sent = 0
        self.garbage_sent = 0
        self.seconds_sent = 0
        self.first_second: Optional[int] = None
        self.last_second: Optional[int] = None
        self.sequence = 0
        self.sequence_gaps = 0
        self.close_code_received: Optional[int] = None  # code of the client's CLOSE
        self.pongs_received = 0
        self._out: list[bytes] = []
        self._out_size = 0
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._producer: Optional[asyncio.Task] = None
        self._pending_drop = False
        self._pending_stall = False
        self._rec: list[tuple] = []
        self._rec_updates: list[tuple[int, CryptoUpdate]] = []
        self._rec_seconds: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        self._massive_acc: Optional[dict[str, np.ndarray]] = None

    # -- picows callbacks ----------------------------------------------------------------

    def on_ws_connected(self, transport: Any) -> None:
        self.transport = transport
        self.sim.connections.append(self)
        if self.feed == "vantafin":
            self._control({"type": "status", "status": "connected", "message": "Connected Successfully"})
            if self.url_key is not None:
                self._check_key(self.url_key)
        elif self.feed == "massive":
            self._control([{"ev": "status", "status": "connected", "message": "Connected Successfully"}])
            if self.url_key is not None:
                self._check_key(self.url_key)
        else:
            if self.url_key is not None and self._key_ok(self.url_key):
                self.authenticated = True
        self.flush()

    def on_ws_disconnected(self, transport: Any) -> None:
        self.closed = True
        self._can_write.set()
        if self._producer is not None and not self._producer.done():
            self._producer.cancel()
        if not self.sim.config.record:
            # nothing to export: forget the connection (a long run sees many reconnects)
            self._massive_acc = None
            try:
                self.sim.connections.remove(self)
            except ValueError:
                pass

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        if frame.msg_type == WSMsgType.PONG:
            self.pongs_received += 1
            return
        if frame.msg_type == WSMsgType.CLOSE:
            self.close_code_received = int(frame.get_close_code())
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code() or 1000)
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        try:
            msg = json.loads(frame.get_payload_as_bytes())
        except ValueError:
            self._error("invalid JSON")
            return
        self.received.append(msg)
        try:
            if self.feed == "sfox":
                self._on_sfox(msg)
            else:
                self._on_polygon_like(msg)
        except Exception as exc:  # a simulator bug must not kill the server
            log.exception("simulator: handling %r failed", msg)
            self._error(f"internal error: {exc}")
        self.flush()

    # -- protocol ------------------------------------------------------------------------

    def _key_ok(self, key: Optional[str]) -> bool:
        want = self.sim.config.api_key
        return want is None or key == want

    def _check_key(self, key: Optional[str]) -> bool:
        if self._key_ok(key):
            self.authenticated = True
            self._status("auth_success", "authenticated")
            return True
        self._status("auth_failed", "authentication failed")
        self.flush()
        self.hang_up(1008, "authentication failed")
        return False

    def _status(self, status: str, message: str) -> None:
        if self.feed == "massive":
            self._control([{"ev": "status", "status": status, "message": message}])
        else:
            self._control({"type": "status", "status": status, "message": message})

    def _error(self, message: str) -> None:
        if self.feed == "sfox":
            self._sfox_ack("error", "unknown", {"action": "unknown", "error": message})
        else:
            self._status("error", message)

    def _on_polygon_like(self, msg: Any) -> None:
        prefix = "LS." if self.feed == "vantafin" else "A."
        if not isinstance(msg, dict) or not isinstance(msg.get("action"), str):
            self._error("invalid message: expected {\"action\": ..., \"params\": ...}")
            return
        action = msg["action"]
        params = msg.get("params")
        if action == "auth":
            if self.authenticated:
                self._status("auth_success", "authenticated")
            else:
                self._check_key(params if isinstance(params, str) else None)
            return
        if action not in ("subscribe", "unsubscribe"):
            self._error(f"unknown action: {action}")
            return
        if not self.authenticated:
            self._error("not authenticated")
            return
        if not isinstance(params, str) or not params:
            self._error("invalid params")
            return
        topics = [t.strip() for t in params.split(",") if t.strip()]
        bad = [t for t in topics if not t.startswith(prefix)]
        if bad:
            self._error(f"unknown channel: {','.join(bad)}")
            return
        for t in topics:
            sym = t[len(prefix):]
            if action == "subscribe":
                if sym == "*":
                    self.sub_all = True
                else:
                    self.sub.add(sym)
            else:
                if sym == "*":
                    self.sub_all = False
                    self.sub.clear()
                else:
                    self.sub.discard(sym)
        verb = "subscribed to" if action == "subscribe" else "unsubscribed from"
        self._status("success", f"{verb}: {','.join(topics)}")
        if action == "subscribe":
            self._start_producer()

    def _sfox_ack(self, kind: str, action: str, payload: dict) -> None:
        self.sequence += 1
        self._control(
            {
                "type": kind,
                "sequence": self.sequence,
                "timestamp": time.time_ns(),
                "payload": payload,
                "action": action,
            }
        )

    def _on_sfox(self, msg: Any) -> None:
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            self._sfox_ack("error", "unknown", {"action": "unknown", "error": "invalid message"})
            return
        kind = msg["type"]
        if kind == "authenticate":
            if self._key_ok(msg.get("apiKey")):
                self.authenticated = True
                self._sfox_ack("success", "authenticate", {"action": "authenticate"})
            else:
                self._sfox_ack("error", "authenticate", {"action": "authenticate", "error": "invalid api key"})
                self.flush()
                self.hang_up(1008, "invalid api key")
            return
        if kind not in ("subscribe", "unsubscribe"):
            self._sfox_ack("error", kind, {"action": kind, "error": f"unknown type: {kind}"})
            return
        feeds = msg.get("feeds")
        if not isinstance(feeds, list) or not all(isinstance(f, str) for f in feeds):
            self._sfox_ack("error", kind, {"action": kind, "error": "feeds must be a list of strings"})
            return
        if self.sim.config.sfox_require_auth and not self.authenticated:
            self._sfox_ack("error", kind, {"action": kind, "error": "not authenticated"})
            return
        for f in feeds:
            pair = f.rsplit(".", 1)[-1] if f.startswith("ticker.sfox.") else None
            if pair is None:
                continue
            if kind == "subscribe":
                self.sub.add(pair)
            else:
                self.sub.discard(pair)
        self._sfox_ack("success", kind, {"action": kind, "feeds": feeds})
        if kind == "subscribe":
            self._start_producer()

    # -- output --------------------------------------------------------------------------

    def _control(self, obj: Any) -> None:
        self._queue(ws_frame(_enc.encode(obj)))

    def _queue(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)
        self.frames_written += 1

    def send_raw(self, data: bytes) -> None:
        """Write raw bytes now (tests: hand-crafted frames, see :func:`ws_frame`)."""
        self._queue(data)
        self.flush()

    def flush(self) -> None:
        """Write everything queued in one ``transport.write``."""
        if not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        self._out_size = 0
        t = self.transport
        if t is None or self.closed or t.is_disconnected or t.is_close_frame_sent:
            return
        self.bytes_written += len(data)
        t.underlying_transport.write(data)

    def hang_up(self, code: int = 1001, reason: str = "", abrupt: bool = False) -> None:
        """Close the connection: CLOSE ``code`` then hang up, or ``abrupt``: TCP reset, no CLOSE."""
        t = self.transport
        if t is None or t.is_disconnected:
            return
        if abrupt:
            try:
                sock = t.underlying_transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except Exception:
                pass
            t.underlying_transport.abort()
            return
        self.flush()
        if not t.is_close_frame_sent:
            t.send_close(code, reason.encode())
        # wait for the client's CLOSE (on_ws_frame hangs up then), at most 2 s
        asyncio.get_running_loop().call_later(2.0, t.disconnect, True)

    # -- data production ----------------------------------------------------------------

    def _start_producer(self) -> None:
        if self._producer is None and not self.closed:
            self._producer = asyncio.get_running_loop().create_task(self._produce())

    async def _produce(self) -> None:
        sim = self.sim
        cfg = sim.config
        faults = cfg.faults
        try:
            s = sim.first_second_for_new_subscriber()
            end = sim.end_second()
            last_status = 0.0
            while not self.closed:
                if not cfg.market_open:
                    now = time.monotonic()
                    if now - last_status >= 5.0:
                        last_status = now
                        self._market_status("closed")
                        self.flush()
                    await asyncio.sleep(0.2)
                    continue
                if end is not None and s >= end:
                    self.flush()
                    return
                ready = sim.ready_until()
                if s >= ready:
                    self.flush()
                    await asyncio.sleep(max(0.001, sim.wall_time_of(s + 1) - time.time()))
                    continue
                self._emit_second(s)
                s += 1
                slow = self.faulty and faults.write_delay > 0  # slow writer: one write per second
                if (self._out_size >= cfg.write_chunk or s >= ready or self._pending_drop
                        or self._pending_stall or slow):
                    self.flush()
                    if self._pending_drop:
                        self._pending_drop = False
                        self.hang_up(1001, "server going away (simulated drop)", abrupt=faults.drop_mode == "abrupt")
                        return
                    if self._pending_stall:
                        self._pending_stall = False
                        await self._stall(faults.stall_seconds)
                    if faults.write_delay and self.faulty:
                        await asyncio.sleep(faults.write_delay)
                    if not self._can_write.is_set():
                        await self._can_write.wait()
                    else:
                        await asyncio.sleep(0)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("simulator producer failed")
            self.hang_up(1011, "simulator error")

    async def _stall(self, seconds: float) -> None:
        t = self.transport
        try:
            t.underlying_transport.pause_reading()  # pings go unanswered
        except Exception:
            pass
        await asyncio.sleep(seconds)
        if not self.closed:
            try:
                t.underlying_transport.resume_reading()
            except Exception:
                pass

    def _market_status(self, market: str) -> None:
        ms = int(time.time() * 1000)
        if self.feed == "massive":
            self._control([{"ev": "status", "status": "market_" + market, "message": f"market is {market}"}])
        elif self.feed == "vantafin":
            self._control({"type": "market_status", "market": market, "timestamp": ms})

    def _data_frame(self, payload: bytes) -> None:
        """Queue one data frame, applying the frame-level faults."""
        self.data_frames += 1
        n = self.data_frames
        f = self.sim.config.faults
        if not self.faulty:
            self._queue(ws_frame(payload))
            return
        if f.fragment_every and n % f.fragment_every == 0 and len(payload) > f.fragment_size:
            step = max(1, f.fragment_size)
            pieces = [payload[i:i + step] for i in range(0, len(payload), step)]
            for k, piece in enumerate(pieces):
                self._queue(ws_frame(piece, opcode=1 if k == 0 else 0, fin=k == len(pieces) - 1))
        else:
            self._queue(ws_frame(payload))
        if f.garbage_every and n % f.garbage_every == 0:
            self.garbage_sent += 1
            self._queue(ws_frame(b'{"type":"live_quote_second","ticker":"GARB'))
        if f.binary_every and n % f.binary_every == 0:
            self._queue(ws_frame(b"\x00\x01\x02binary", opcode=2))
        if f.rsv_after and n == f.rsv_after:
            self._queue(ws_frame(b'{"type":"status","status":"info","message":"rsv"}', rsv1=True))
        if f.invalid_utf8_after and n == f.invalid_utf8_after:
            self._queue(ws_frame(b'{"type":"status","status":"info","message":"\xff\xfe\xc0"}'))
        if f.drop_after and n == f.drop_after:
            self._pending_drop = True
        if f.stall_after and n == f.stall_after:
            self._pending_stall = True

    def _stock_rows(self) -> Optional[np.ndarray]:
        if self.sub_all:
            return None
        idx = self.sim.market.index
        return np.array(sorted(idx[s] for s in self.sub if s in idx), dtype=np.int64)

    def _emit_second(self, s: int) -> None:
        if self.first_second is None:
            self.first_second = s
        self.last_second = s
        self.seconds_sent += 1
        sim = self.sim
        if s > sim.high_water:
            sim.high_water = s
        if self.feed == "sfox":
            self._emit_sfox(s)
            return
        rows = self._stock_rows()
        if rows is not None and len(rows) == 0:
            return
        bars = sim.market.stock_second(s, rows)
        f = sim.config.faults
        delayed, withheld = None, bursts.NO_ROWS
        if self.faulty and (f.withhold_every or f.delay_every):
            bars, delayed, withheld = bursts.shape(bars, s - sim.start_second, f)
        if sim.config.record:
            self._rec_seconds.append((s, bars.rows, delayed.rows if delayed is not None else bursts.NO_ROWS, withheld))
        self._emit_bars(bars, False)
        if delayed is not None:
            asyncio.get_running_loop().call_later(f.delay_ms / 1000.0, self._emit_delayed, delayed)
        if self.faulty and f.correction_every and (s - sim.start_second) % f.correction_every == 0:
            s0 = s - f.correction_lag
            if self.first_second is not None and s0 >= self.first_second:
                old = sim.market.stock_second(s0, rows)
                k = min(f.correction_count, len(old))
                if k:
                    sub = StockSecond(s0, old.rows[:k], old.open[:k], old.high[:k], old.low[:k], old.close[:k], old.volume[:k])
                    self._emit_bars(sim.market.correction(sub, s - s0), True)

    def _emit_bars(self, bars: StockSecond, correction: bool) -> None:
        n = len(bars)
        if n == 0:
            return
        cfg = self.sim.config
        if cfg.record:
            self._rec.append((bars, correction))
        per = cfg.bars_per_frame
        if self.feed == "vantafin" and not self.faulty:
            # fast path: C encoder writes whole frames (no per-frame faults on this connection)
            out, nf = encode_vantafin_frames(
                self.sim._ls_prefix, bars.rows, bars.open, bars.high, bars.low, bars.close,
                bars.volume, bars.second * 1000, per, not cfg.always_array)
            self.data_frames += nf
            self.array_frames += 0 if (per == 1 and not cfg.always_array) else nf
            self._queue(out)
            self.frames_written += nf - 1
            return
        if self.feed == "massive":
            fa = self._massive_arrays(bars)
            if not self.faulty:
                out, nf = encode_massive_frames(
                    self.sim._a_prefix, bars.rows, fa["v"], fa["av"], fa["op"], fa["vw4"], bars.open,
                    bars.close, bars.high, bars.low, fa["a4"], fa["z"], bars.second * 1000, per)
                self.data_frames += nf
                self.array_frames += nf
                self._queue(out)
                self.frames_written += nf - 1
                return
            objs = self._massive_objects(bars, fa)
        else:
            objs = self.sim._vantafin_objects(bars)
        faults = cfg.faults
        for i in range(0, n, per):
            chunk = objs[i:i + per]
            if per == 1 and not cfg.always_array and self.feed == "vantafin":
                self._data_frame(chunk[0])
                continue
            self.array_frames += 1
            if self.faulty and faults.malformed_every and self.array_frames % faults.malformed_every == 0:
                self.malformed_sent += 1
                bad = (b'{"type":"live_quote_second","ticker":"BAD","open":"oops","volume":-1}'
                       if self.feed == "vantafin" else b'{"ev":"A","sym":"BAD","v":"oops"}')
                chunk = chunk[: len(chunk) // 2] + [bad] + chunk[len(chunk) // 2:]
            self._data_frame(b"[" + b",".join(chunk) + b"]")

    def _emit_delayed(self, bars: StockSecond) -> None:
        if not self.closed:
            self._emit_bars(bars, False)
            self.flush()

    def _massive_arrays(self, bars: StockSecond) -> dict[str, np.ndarray]:
        """Per-bar fields of the ``A`` aggregates (day accumulators kept per connection)."""
        acc = self._massive_acc
        n_all = self.sim.market.n_tickers
        if acc is None:
            acc = self._massive_acc = {
                "av": np.zeros(n_all, np.int64),
                "pv": np.zeros(n_all, np.float64),
                "op": np.zeros(n_all, np.int64),
                "trades": np.zeros(n_all, np.int64),
            }
        r = bars.rows
        v = bars.volume
        vw = (bars.high + bars.low + bars.close) / 300.0
        acc["av"][r] += v
        acc["pv"][r] += vw * v
        acc["trades"][r] += 1 + (v // 100)
        op = acc["op"]
        first = op[r] == 0
        op[r[first]] = bars.open[first]
        av = acc["av"][r]
        return {
            "v": v, "av": av, "op": op[r],
            "vw4": np.rint(vw * 1e4).astype(np.int64),
            "a4": np.rint(acc["pv"][r] / av * 1e4).astype(np.int64),
            "z": av // np.maximum(1, acc["trades"][r]),
        }

    def _massive_objects(self, bars: StockSecond, f: dict[str, np.ndarray]) -> list[bytes]:
        pre = self.sim._a_prefix
        ms0 = bars.second * 1000

        def c2(x: int) -> str:
            return f"{x // 100}.{x % 100:02d}"

        def f4(x: int) -> str:
            return f"{x // 10000}.{x % 10000:04d}"

        return [
            b'%s%d,"av":%d,"op":%s,"vw":%s,"o":%s,"c":%s,"h":%s,"l":%s,"a":%s,"z":%d,"s":%d,"e":%d}'
            % (pre[row], vol, av, c2(op).encode(), f4(vw).encode(), c2(o).encode(), c2(c).encode(),
               c2(h).encode(), c2(lo).encode(), f4(a).encode(), z, ms0, ms0 + 1000)
            for row, vol, av, op, vw, o, c, h, lo, a, z in zip(
                bars.rows.tolist(), f["v"].tolist(), f["av"].tolist(), f["op"].tolist(), f["vw4"].tolist(),
                bars.open.tolist(), bars.close.tolist(), bars.high.tolist(), bars.low.tolist(),
                f["a4"].tolist(), f["z"].tolist())
        ]

    def _emit_sfox(self, s: int) -> None:
        if not self.sub:
            return
        cfg = self.sim.config
        f = cfg.faults
        for u in self.sim.market.crypto_updates(s, cfg.sfox_interval, sorted(self.sub)):
            self.sequence += 1
            if self.faulty and f.sequence_gap_every and self.sequence % f.sequence_gap_every == 0:
                self.sequence += 1
                self.sequence_gaps += 1
            if cfg.record:
                self._rec_updates.append((self.sequence, u))
            msg = {
                "sequence": self.sequence,
                "recipient": f"ticker.sfox.{u.pair}",
                "timestamp": u.ts_ns,
                "payload": {
                    "amount": u.amount,
                    "exchange": "coinbase",
                    "high": u.high,
                    "last": u.last,
                    "low": u.low,
                    "open": u.open,
                    "pair": u.pair,
                    "route": "Smart",
                    "source": "ticker-info",
                    "timestamp": _iso_ms(u.trade_ms),
                    "volume": u.volume,
                    "vwap": u.vwap,
                },
            }
            self._data_frame(_enc.encode(msg))

    # -- ground truth ----------------------------------------------------------------------

    def sent_bars(self) -> np.ndarray:
        """Every bar this connection sent (stocks feeds), in send order (``BAR_DTYPE``)."""
        tick = np.asarray(self.sim.market.tickers)
        parts = []
        for bars, corr in self._rec:
            a = np.empty(len(bars), BAR_DTYPE)
            a["symbol"] = tick[bars.rows]
            a["second"] = bars.second
            a["open"] = bars.open / 100.0
            a["high"] = bars.high / 100.0
            a["low"] = bars.low / 100.0
            a["close"] = bars.close / 100.0
            a["volume"] = bars.volume
            a["correction"] = corr
            parts.append(a)
        return np.concatenate(parts) if parts else np.empty(0, BAR_DTYPE)

    def sent_seconds(self) -> dict[int, bursts.SecondSent]:
        """Per second (stocks feeds): the tickers sent in its burst, delayed past it, withheld."""
        return bursts.per_second(self.sim.market.tickers, self._rec_seconds)

    def sent_updates(self) -> list[tuple[int, CryptoUpdate]]:
        """Every sFOX update this connection sent: ``(sequence, CryptoUpdate)`` in send order."""
        return list(self._rec_updates)


class Simulator:
    """The simulator server (run it inside a running asyncio loop).

    ``sim = await Simulator(SimConfig(...)).start()`` ... ``sim.url("vantafin")`` ...
    ``await sim.stop()``.  For threads/subprocesses see ``fastfeed.simulator.testing``.
    """

    def __init__(self, config: Optional[SimConfig] = None, **kw: Any) -> None:
        if config is None:
            config = SimConfig(**kw)
        elif kw:
            raise TypeError("pass either a SimConfig or keyword arguments")
        self.config = config
        self.market = Market(seed=config.seed, n_tickers=config.n_tickers, trade_fraction=config.trade_fraction)
        self.connections: list[SimConnection] = []
        self._server: Any = None
        self.port = 0
        self.high_water = -1
        self._accepted = 0
        self.t0_wall = time.time()
        self.start_second = 0
        tick = self.market.tickers
        self._ls_prefix = [
            b'{"type":"live_quote_second","ticker":"%s","open":' % t.encode() for t in tick
        ]
        self._a_prefix = [b'{"ev":"A","sym":"%s","v":' % t.encode() for t in tick]

    # -- clock ------------------------------------------------------------------------------

    def _init_clock(self) -> None:
        cfg = self.config
        now = time.time()
        self.t0_wall = now
        if cfg.start_second is not None:
            self.start_second = int(cfg.start_second)
        elif cfg.max_rate:
            horizon = cfg.max_seconds if cfg.max_seconds else 7 * 86400
            self.start_second = int(now) - int(horizon) - 2
        elif cfg.speed > 1:
            horizon = cfg.max_seconds if cfg.max_seconds else 86400
            self.start_second = int(now) - int(math.ceil(horizon * (1 - 1 / cfg.speed))) - 2
        else:
            self.start_second = int(now)
            if cfg.speed == 1:
                # speed 1 from now: the simulated clock *is* wall time (anchored at the start of
                # the current second, not at ``now``, which would make it lag by up to 1 s), so
                # the burst of second s goes out right after wall time s + 1
                self.t0_wall = float(self.start_second)
        self.high_water = self.start_second - 1

    def sim_clock(self, now: Optional[float] = None) -> float:
        """Simulated time (epoch s, float); never ahead of the wall clock."""
        now = time.time() if now is None else now
        cfg = self.config
        if cfg.max_rate:
            return float("inf")
        return min(self.start_second + (now - self.t0_wall) * cfg.speed, now)

    def ready_until(self) -> int:
        """Seconds ``< ready_until()`` are complete (their bars can be sent)."""
        c = self.sim_clock()
        return 1 << 62 if c == float("inf") else int(math.floor(c))

    def wall_time_of(self, sim_t: float) -> float:
        """Wall time at which the simulated clock reaches ``sim_t``."""
        cfg = self.config
        return max(self.t0_wall + (sim_t - self.start_second) / cfg.speed, sim_t)

    def first_second_for_new_subscriber(self) -> int:
        if self.config.max_rate:
            return max(self.start_second, self.high_water + 1)
        return max(self.start_second, self.ready_until())

    def end_second(self) -> Optional[int]:
        m = self.config.max_seconds
        return None if m is None else self.start_second + int(m)

    # -- encoding ---------------------------------------------------------------------------

    def _vantafin_objects(self, bars: StockSecond) -> list[bytes]:
        pre = self._ls_prefix
        ts = bars.second * 1000
        return [
            b'%s%d.%02d,"high":%d.%02d,"low":%d.%02d,"close":%d.%02d,"volume":%d,"timestamp":%d}'
            % (pre[r], o // 100, o % 100, h // 100, h % 100, lo // 100, lo % 100, c // 100, c % 100, v, ts)
            for r, o, h, lo, c, v in zip(
                bars.rows.tolist(), bars.open.tolist(), bars.high.tolist(), bars.low.tolist(),
                bars.close.tolist(), bars.volume.tolist()
            )
        ]

    # -- life cycle -------------------------------------------------------------------------

    def _factory(self, request: Any) -> Optional[SimConnection]:
        raw = request.path.decode("latin-1") if isinstance(request.path, bytes) else str(request.path)
        parts = urllib.parse.urlsplit(raw)
        feed = _PATH_FEED.get(parts.path)
        if feed is None:
            return None
        q = urllib.parse.parse_qs(parts.query)
        key = (q.get("apiKey") or q.get("apikey") or [None])[0]
        idx = self._accepted
        self._accepted += 1
        return SimConnection(self, feed, key, idx)

    async def start(self) -> "Simulator":
        self._init_clock()
        kw: dict[str, Any] = {}
        if self.config.ssl_context is not None:
            kw["ssl"] = self.config.ssl_context
        self._server = await ws_create_server(
            self._factory,
            self.config.host,
            self.config.port,
            enable_auto_pong=True,
            max_frame_size=1 << 20,
            logger_name=_MaskingAdapter(logging.getLogger("fastfeed.simulator.ws"),
                                        [self.config.api_key] if self.config.api_key else []),
            **kw,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self, timeout: float = 1.0) -> None:
        """CLOSE 1001 every connection, wait up to ``timeout`` for the answers, then hang up."""
        open_ = [c for c in self.connections if not c.closed]
        for c in open_:
            try:
                c.hang_up(1001, "simulator stopping")
            except Exception:
                pass
        end = time.monotonic() + timeout
        while any(not c.closed for c in open_) and time.monotonic() < end:
            await asyncio.sleep(0.01)
        for c in open_:
            if not c.closed and c.transport is not None:
                try:
                    c.transport.disconnect(False)
                except Exception:
                    pass
        if self._server is not None:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            except (asyncio.TimeoutError, Exception):
                pass
            self._server = None

    async def __aenter__(self) -> "Simulator":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # -- addresses & ground truth ------------------------------------------------------------

    def url(self, feed: str = "vantafin", api_key: Optional[str] = "", *, key_in_url: bool = True) -> str:
        """URL of ``feed``; the configured key is put in ``?apiKey=`` unless ``key_in_url`` is false
        (``api_key=None`` or ``key_in_url=False``: no key in the URL; a string: that key)."""
        scheme = "wss" if self.config.ssl_context is not None else "ws"
        u = f"{scheme}://{self.config.host}:{self.port}{FEEDS[feed]}"
        key = self.config.api_key if api_key == "" else api_key
        if key_in_url and key is not None and feed != "sfox":
            u += "?apiKey=" + urllib.parse.quote(key, safe="")
        return u

    def urls(self) -> dict[str, str]:
        return {f: self.url(f, api_key=None) for f in FEEDS}

    def sent_bars(self, feed: Optional[str] = None) -> np.ndarray:
        """Every bar sent on every connection (optionally of one feed), connection by connection."""
        parts = [c.sent_bars() for c in self.connections if feed is None or c.feed == feed]
        parts = [p for p in parts if len(p)]
        return np.concatenate(parts) if parts else np.empty(0, BAR_DTYPE)
