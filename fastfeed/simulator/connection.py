"""The simulator's connection: one accepted client, whatever its feed.

:class:`SimConnection` holds what every dialect shares: the picows callbacks, the key
check, the output queue (many frames per ``transport.write``), hang-ups and the ground
truth of what was sent. Each dialect subclasses it (:mod:`.vantafin`, :mod:`.massive`,
:mod:`.sfox`) with its handshake, control messages and data encoding; the data
production loop is :class:`fastfeed.simulator.producer.Producer`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from picows import WSListener, WSMsgType  # type: ignore[attr-defined]

from .market import CryptoUpdate
from .producer import Producer
from .wire import encode_json, ws_frame

if TYPE_CHECKING:
    from .server import Simulator

__all__ = ["BAR_DTYPE", "SimConnection"]

log = logging.getLogger("fastfeed.simulator")

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

class SimConnection(Producer, WSListener):
    """One accepted client connection; subclasses speak one feed (``feed``)."""

    feed = ""

    def __init__(self, sim: "Simulator", url_key: Optional[str], index: int) -> None:
        super().__init__()
        self.sim = sim
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
        self._massive_acc: Optional[dict[str, np.ndarray]] = None

    # -- picows callbacks ----------------------------------------------------------------

    def on_ws_connected(self, transport: Any) -> None:
        self.transport = transport
        self.sim.connections.append(self)
        self._hello()
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
            self._handle(msg)
        except Exception as exc:  # a simulator bug must not kill the server
            log.exception("simulator: handling %r failed", msg)
            self._error(f"internal error: {exc}")
        self.flush()

    # -- the dialect's part --------------------------------------------------------------

    def _hello(self) -> None:
        """What the server says (and checks) right after the upgrade."""
        raise NotImplementedError

    def _handle(self, msg: Any) -> None:
        """One parsed client message."""
        raise NotImplementedError

    def _status(self, status: str, message: str) -> None:
        raise NotImplementedError

    def _error(self, message: str) -> None:
        self._status("error", message)

    def _market_status(self, market: str) -> None:
        """Tell the client the market is ``market`` (dialects without it send nothing)."""

    # -- protocol ------------------------------------------------------------------------

    def _key_ok(self, key: Optional[str]) -> bool:
        want = self.sim.config.api_key
        return want is None or key == want

    def _check_key(self, key: Optional[str]) -> bool:
        if self._key_ok(key):
            self.authenticated = True
            self._status("auth_success", "authenticated")
            self._after_auth()
            return True
        self._status("auth_failed", "authentication failed")
        self.flush()
        self.hang_up(1008, "authentication failed")
        return False

    def _after_auth(self) -> None:
        """The key was accepted (and acknowledged): the ``policy_close`` fault closes now."""
        if self.faulty and self.sim.config.faults.policy_close:
            self.flush()
            self.hang_up(1008, "policy violation")

    # -- output --------------------------------------------------------------------------

    def _control(self, obj: Any) -> None:
        self._queue(ws_frame(encode_json(obj)))

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

    def sent_updates(self) -> list[tuple[int, CryptoUpdate]]:
        """Every sFOX update this connection sent: ``(sequence, CryptoUpdate)`` in send order."""
        return list(self._rec_updates)
