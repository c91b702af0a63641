"""Bytes on the simulator's wire: server-side WebSocket frames and JSON control messages."""
from __future__ import annotations

import struct

import msgspec

__all__ = ["encode_json", "ws_frame"]

#: JSON encoder of control messages
encode_json = msgspec.json.Encoder().encode


def ws_frame(payload: bytes, opcode: int = 1, fin: bool = True, rsv1: bool = False) -> bytes:
    """A server-side (unmasked) WebSocket frame."""
    b0 = opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0)
    n = len(payload)
    if n < 126:
        return bytes((b0, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", b0, 126, n) + payload
    return struct.pack("!BBQ", b0, 127, n) + payload
