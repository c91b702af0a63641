"""The recording file format: constants, header, record framing (docs/RECORDING.md).

A recording holds every complete (reassembled) text message a feed session received,
byte for byte, with its receive time in nanoseconds, plus the connection boundaries
(connected / disconnected). :mod:`fastfeed.recording.writer` writes it,
:mod:`fastfeed.recording.reader` reads it; both take the layout from here.
"""
from __future__ import annotations

import json
import mmap
import struct
import zlib
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..errors import FormatError, RecordingError
from ..transport.masking import mask_url

__all__ = [
    "MAGIC", "FORMAT_VERSION", "FLAG_ZSTD", "MESSAGE", "CONNECTED", "DISCONNECTED", "END",
    "ZSTD_BLOCK", "BATCH", "KIND_NAMES", "ENTRY_DTYPE", "REC_OVERHEAD", "Header", "Record",
    "Problem", "encode_header", "encode_record", "decode_header",
]

#: First 8 bytes of every recording. ``\x89`` catches 7-bit transfers, ``\r\n`` catches
#: line-ending conversion, ``\x1a`` stops ``type`` on DOS, the final ``\n`` catches the
#: reverse conversion (the PNG trick).
MAGIC = b"\x89FFR\r\n\x1a\n"
FORMAT_VERSION = 1
FLAG_ZSTD = 0x0001  # header flag: the body contains zstd blocks

# record kinds
MESSAGE = 1  # payload: the raw text message (UTF-8 bytes, as received)
CONNECTED = 2  # payload: empty, or a UTF-8 JSON object
DISCONNECTED = 3  # payload: the reason, UTF-8 text
END = 4  # payload: UTF-8 JSON summary written by a clean close
ZSTD_BLOCK = 16  # payload: u32 entry count, u32 raw length, one zstd frame of a batch
BATCH = 17  # payload: u32 entry count, count x (u32 len, u8 kind, i64 recv_ns), the payloads

KIND_NAMES = {
    MESSAGE: "message",
    CONNECTED: "connected",
    DISCONNECTED: "disconnected",
    END: "end",
    ZSTD_BLOCK: "zstd_block",
    BATCH: "batch",
}
KNOWN_KINDS = frozenset(KIND_NAMES)
KNOWN_KIND_BYTES = np.array(sorted(KIND_NAMES), dtype=np.uint8)

# file header: magic, version, flags, start_ns, meta_len; then meta JSON; then CRC-32
FILE_HDR = struct.Struct("<8sHHqI")
# record: payload length, kind, recv_ns; then payload; then CRC-32 of header + payload
REC_HDR = struct.Struct("<IBq")
CRC = struct.Struct("<I")
BLOCK_HDR = struct.Struct("<II")
COUNT = struct.Struct("<I")
#: one entry of a batch's table: payload length, kind, recv_ns (13 bytes, packed)
ENTRY_DTYPE = np.dtype([("len", "<u4"), ("kind", "u1"), ("ns", "<i8")])
REC_OVERHEAD = REC_HDR.size + CRC.size  # 17 bytes per record
MAX_PAYLOAD = 1 << 30  # a larger length field is corruption
MAX_META = 1 << 20

# resynchronisation after damage: a candidate record must have a known kind, a length
# under RESYNC_MAX_PAYLOAD and a recv_ns within 20 years of the header's start time
# before its CRC is even computed (random bytes pass all three about once in 50,000)
RESYNC_SPAN_NS = 20 * 366 * 86_400 * 10**9
RESYNC_MAX_PAYLOAD = 64 << 20

@dataclass(frozen=True)
class Header:
    """What a recording's header says."""

    version: int
    flags: int
    start_ns: int
    feed: str
    url: str  # credentials masked
    meta: dict[str, Any]  # the whole metadata object (feed, url, topics, engine, ...)
    size: int  # header length in bytes: records start here

    @property
    def compressed(self) -> bool:
        return bool(self.flags & FLAG_ZSTD)


class Record(NamedTuple):
    """One record: ``kind`` (:data:`MESSAGE`, ...), ``recv_ns``, ``payload`` (bytes)."""

    kind: int
    recv_ns: int
    payload: bytes

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, f"kind{self.kind}")


class Problem(NamedTuple):
    """A damaged region the reader skipped: file ``offset``, ``length`` bytes, ``reason``."""

    offset: int
    length: int
    reason: str


def encode_header(feed: str, url: str, start_ns: int, *, flags: int = 0,
                  meta: dict[str, Any] | None = None) -> bytes:
    """The header bytes of a new recording (the URL is masked here, whatever the caller did)."""
    m: dict[str, Any] = {"feed": feed, "url": mask_url(url)}
    for k, v in (meta or {}).items():
        if k not in m:
            m[k] = v
    mb = json.dumps(m, separators=(",", ":"), sort_keys=False).encode()
    if len(mb) > MAX_META:
        raise RecordingError("recording metadata too large")
    head = FILE_HDR.pack(MAGIC, FORMAT_VERSION, flags, start_ns, len(mb)) + mb
    return head + CRC.pack(zlib.crc32(head))


def encode_record(kind: int, recv_ns: int, payload: bytes | bytearray | memoryview) -> bytes:
    """One framed record (used by tests and tools; the writer inlines this)."""
    h = REC_HDR.pack(len(payload), kind, recv_ns)
    return b"".join((h, payload, CRC.pack(zlib.crc32(payload, zlib.crc32(h)))))



def decode_header(buf: bytes | mmap.mmap | memoryview) -> Header:
    """Parse and check a header at the start of ``buf``; :class:`FormatError` if bad."""
    n = len(buf)
    if n < len(MAGIC) or bytes(buf[: len(MAGIC)]) != MAGIC:
        if n < len(MAGIC) and MAGIC.startswith(bytes(buf[:n])):
            raise FormatError(f"torn header: file has only {n} bytes")
        raise FormatError("not a fastfeed recording (bad magic)")
    if n < FILE_HDR.size:
        raise FormatError(f"torn header: file has only {n} bytes")
    _, version, flags, start_ns, meta_len = FILE_HDR.unpack_from(buf, 0)
    if version > FORMAT_VERSION or version < 1:
        raise FormatError(f"unsupported recording format version {version} "
                          f"(this fastfeed reads version {FORMAT_VERSION})")
    if meta_len > MAX_META:
        raise FormatError("damaged header (metadata length)")
    end = FILE_HDR.size + meta_len
    if n < end + CRC.size:
        raise FormatError(f"torn header: file has only {n} bytes")
    (crc,) = CRC.unpack_from(buf, end)
    if zlib.crc32(buf[:end]) != crc:
        raise FormatError("damaged header (checksum mismatch)")
    try:
        meta = json.loads(bytes(buf[FILE_HDR.size:end]))
        if not isinstance(meta, dict):
            raise ValueError("metadata is not an object")
    except ValueError as e:
        raise FormatError(f"damaged header (metadata: {e})") from None
    return Header(version, flags, start_ns, str(meta.get("feed", "")), str(meta.get("url", "")),
                  meta, end + CRC.size)


