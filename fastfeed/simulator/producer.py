"""The data producer of a simulator connection: walks the simulated clock and writes
whole seconds of data, honouring flow control and the injected faults.

Each subscribed connection runs one producer task (:meth:`Producer._produce`); the
dialect supplies ``_emit_data(second)`` (its encoding of one second) and
``_market_status(market)``; :meth:`Producer._data_frame` queues one data frame with the
frame-level faults (fragments, garbage, binary, RSV, invalid UTF-8, drops, stalls).
"""
from __future__ import annotations

import asyncio
import logging
import time

from .wire import ws_frame

__all__ = ["Producer"]

log = logging.getLogger("fastfeed.simulator")


class Producer:
    """Mixin of :class:`fastfeed.simulator.connection.SimConnection`: the data production."""

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
        if f.oversize_after and n == f.oversize_after:
            self._queue(ws_frame(b'"' + b"x" * max(0, f.oversize_bytes - 2) + b'"'))
        if f.drop_after and n == f.drop_after:
            self._pending_drop = True
        if f.stall_after and n == f.stall_after:
            self._pending_stall = True

    def _emit_second(self, s: int) -> None:
        if self.first_second is None:
            self.first_second = s
        self.last_second = s
        self.seconds_sent += 1
        sim = self.sim
        if s > sim.high_water:
            sim.high_water = s
        self._emit_data(s)
