"""Recording files: the raw messages of a live session, with their receive times.

A recording holds every complete (reassembled) text message a feed session received,
byte for byte, with its receive time in nanoseconds, plus the connection boundaries
(connected / disconnected). ``docs/RECORDING.md`` documents the format byte by byte.

Writing (:class:`Writer`, :class:`RecordingSession`) costs the event loop one ``memcpy``
of the payload into a preallocated block (``fastfeed._ext.listener.RecordTap``; on a
``Connection`` the Cython listener does it, no Python call per message); a writer
thread writes each block as one ``BATCH`` record (one ``writev``), or compresses
blocks into zstd blocks. If the writer falls
too far behind, or the disk fails, recording stops with a clear error
(:attr:`Writer.error`, logged once) while the feed keeps running.

Reading (:class:`Reader`) never raises for damage after the header: a torn tail (a
process killed mid-write) or a corrupt record is detected by its length and CRC-32,
skipped, and reported in :attr:`Reader.problems` / :attr:`Reader.skipped_bytes`;
every complete record before it (and after it, when the reader can resynchronise)
is returned.

Example::

    with Reader("session.ffr") as r:
        print(r.header.feed, r.header.url)
        for rec in r:
            if rec.kind == MESSAGE:
                handle(rec.payload, rec.recv_ns)
        print(r.skipped_bytes, r.problems)
"""
from __future__ import annotations

import atexit
import json
import logging
import mmap
import os
import re
import struct
import threading
import time
import weakref
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from .._ext.listener import RecordTap

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "MESSAGE",
    "CONNECTED",
    "DISCONNECTED",
    "END",
    "ZSTD_BLOCK",
    "BATCH",
    "KIND_NAMES",
    "RecordingError",
    "FormatError",
    "Header",
    "Record",
    "Problem",
    "Writer",
    "Reader",
    "RecordingSession",
    "wrap_session_for_recording",
    "attach_recorder",
    "mask_url",
]

log = logging.getLogger("fastfeed.record")

# --------------------------------------------------------------------------- format

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
_KNOWN_KINDS = frozenset(KIND_NAMES)
_KNOWN_KIND_BYTES = np.array(sorted(KIND_NAMES), dtype=np.uint8)

# file header: magic, version, flags, start_ns, meta_len; then meta JSON; then CRC-32
_FILE_HDR = struct.Struct("<8sHHqI")
# record: payload length, kind, recv_ns; then payload; then CRC-32 of header + payload
_REC_HDR = struct.Struct("<IBq")
_CRC = struct.Struct("<I")
_BLOCK_HDR = struct.Struct("<II")
_COUNT = struct.Struct("<I")
#: one entry of a batch's table: payload length, kind, recv_ns (13 bytes, packed)
ENTRY_DTYPE = np.dtype([("len", "<u4"), ("kind", "u1"), ("ns", "<i8")])
MAX_BATCH_ENTRIES = 4096  # entries per batch the writer writes (the tap's block size in entries)
REC_OVERHEAD = _REC_HDR.size + _CRC.size  # 17 bytes per record
MAX_PAYLOAD = 1 << 30  # a larger length field is corruption
MAX_META = 1 << 20

# resynchronisation after damage: a candidate record must have a known kind, a length
# under _RESYNC_MAX_PAYLOAD and a recv_ns within 20 years of the header's start time
# before its CRC is even computed (random bytes pass all three about once in 50,000)
_RESYNC_SPAN_NS = 20 * 366 * 86_400 * 10**9
_RESYNC_MAX_PAYLOAD = 64 << 20

_KEY_RE = re.compile(r"(?i)((?:api[_-]?key|apikey|key|token|secret)=)[^&#\s]*")


def mask_url(url: str) -> str:
    """``url`` with the values of ``apiKey=`` (and similar credential parameters) masked."""
    return _KEY_RE.sub(r"\1***", url)


class RecordingError(Exception):
    """A recording cannot be written or read (bad header, missing codec, ...)."""


class FormatError(RecordingError):
    """The file is not a fastfeed recording, or its header is damaged."""


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
    head = _FILE_HDR.pack(MAGIC, FORMAT_VERSION, flags, start_ns, len(mb)) + mb
    return head + _CRC.pack(zlib.crc32(head))


def encode_record(kind: int, recv_ns: int, payload: bytes | bytearray | memoryview) -> bytes:
    """One framed record (used by tests and tools; the writer inlines this)."""
    h = _REC_HDR.pack(len(payload), kind, recv_ns)
    return b"".join((h, payload, _CRC.pack(zlib.crc32(payload, zlib.crc32(h)))))


class _Connected(bytes):
    """A CONNECTED entry's payload in the writer's queue (the type carries the kind)."""


class _Disconnected(bytes):
    """A DISCONNECTED entry's payload in the writer's queue."""


_QUEUE_KIND = {bytes: MESSAGE, _Connected: CONNECTED, _Disconnected: DISCONNECTED}


def encode_batch(nss: list[int], datas: list[bytes], kinds: list[int] | None = None
                 ) -> tuple[bytes, int, int]:
    """The payload of a BATCH record: entries ``(kinds[i], nss[i], datas[i])``.

    ``kinds=None``: taken from the payloads' types (``bytes`` is MESSAGE; the writer
    queues connection boundaries as :class:`_Connected` / :class:`_Disconnected`).
    Returns ``(batch payload, payload bytes, MESSAGE entries)``. Every per-entry step
    is a C loop (map, numpy, join), not Python bytecode: this runs on the writer
    thread holding the GIL, so it must stay short.
    """
    n = len(datas)
    tab = np.empty(n, ENTRY_DTYPE)
    lens = np.fromiter(map(len, datas), np.int64, n)
    tab["len"] = lens
    tab["ns"] = nss
    if kinds is None:
        types = set(map(type, datas))
        if types == {bytes}:
            tab["kind"] = MESSAGE
            nmsg = n
        else:
            kinds = [_QUEUE_KIND.get(t, MESSAGE) for t in map(type, datas)]
    if kinds is not None:
        tab["kind"] = kinds
        nmsg = kinds.count(MESSAGE)
    payload = b"".join((_COUNT.pack(n), tab.tobytes(), *datas))
    return payload, int(lens.sum()), nmsg


def decode_header(buf: bytes | mmap.mmap | memoryview) -> Header:
    """Parse and check a header at the start of ``buf``; :class:`FormatError` if bad."""
    n = len(buf)
    if n < len(MAGIC) or bytes(buf[: len(MAGIC)]) != MAGIC:
        if n < len(MAGIC) and MAGIC.startswith(bytes(buf[:n])):
            raise FormatError(f"torn header: file has only {n} bytes")
        raise FormatError("not a fastfeed recording (bad magic)")
    if n < _FILE_HDR.size:
        raise FormatError(f"torn header: file has only {n} bytes")
    _, version, flags, start_ns, meta_len = _FILE_HDR.unpack_from(buf, 0)
    if version > FORMAT_VERSION or version < 1:
        raise FormatError(f"unsupported recording format version {version} "
                          f"(this fastfeed reads version {FORMAT_VERSION})")
    if meta_len > MAX_META:
        raise FormatError("damaged header (metadata length)")
    end = _FILE_HDR.size + meta_len
    if n < end + _CRC.size:
        raise FormatError(f"torn header: file has only {n} bytes")
    (crc,) = _CRC.unpack_from(buf, end)
    if zlib.crc32(buf[:end]) != crc:
        raise FormatError("damaged header (checksum mismatch)")
    try:
        meta = json.loads(bytes(buf[_FILE_HDR.size:end]))
        if not isinstance(meta, dict):
            raise ValueError("metadata is not an object")
    except ValueError as e:
        raise FormatError(f"damaged header (metadata: {e})") from None
    return Header(version, flags, start_ns, str(meta.get("feed", "")), str(meta.get("url", "")),
                  meta, end + _CRC.size)


# --------------------------------------------------------------------------- writer

_live_writers: "weakref.WeakSet[Writer]" = weakref.WeakSet()


@atexit.register
def _close_live_writers() -> None:  # pragma: no cover - interpreter exit
    for w in list(_live_writers):
        try:
            w.close(timeout=5.0)
        except Exception:
            pass


class Writer:
    """Append records to a recording file from one thread (the event loop), written by a
    background thread.

    The hot-path methods (:meth:`message`, :meth:`connected`, :meth:`disconnected`; and
    the listener, through :attr:`tap`) copy the entry into the current block of the tap
    (4096 entries or 1 MiB of payload, preallocated and recycled) and return; they
    never block on I/O and never raise. A writer thread takes every block queued every
    ``flush_interval`` seconds (or sooner when more than ``wake_bytes`` are queued),
    sealing the one being filled, and writes each as one ``BATCH`` record (one CRC, one
    ``writev``; ``compression="zstd"``: compressed blocks of about ``block_size`` raw
    bytes). Entries keep their order (blocks are queued in the order they are sealed).

    If more than ``max_pending`` bytes are waiting (the disk cannot keep up) or a write
    fails (disk full, I/O error), recording stops: :attr:`error` says why, the error is
    logged once, later records are counted in :attr:`dropped`, and the feed goes on.
    Everything written before the stop is a valid recording.

    Parameters
    ----------
    path: the file to create (replaced if it exists).
    feed, url: stored in the header (the URL's ``apiKey=`` value is masked).
    meta: extra JSON-able metadata for the header (e.g. topics, engine configuration).
    compression: ``None`` or ``"zstd"`` (needs the ``zstandard`` package).
    """

    def __init__(self, path: str | os.PathLike[str], *, feed: str, url: str = "",
                 meta: dict[str, Any] | None = None, compression: str | None = None,
                 level: int = 3, block_size: int = 1 << 20, flush_interval: float = 0.25,
                 wake_bytes: int = 4 << 20, max_pending: int = 256 << 20,
                 fsync: bool = False, start_ns: int | None = None,
                 on_error: Callable[[str], None] | None = None) -> None:
        if compression not in (None, "none", "zstd"):
            raise ValueError(f"unknown compression {compression!r} (use None or 'zstd')")
        self.compression = "zstd" if compression == "zstd" else None
        self._zc = None
        if self.compression:
            try:
                import zstandard
            except ImportError:
                raise RecordingError(
                    "zstd compression needs the 'zstandard' package: pip install zstandard"
                ) from None
            self._zc = zstandard.ZstdCompressor(level=level)
        self.path = os.fspath(path)
        self.feed = feed
        self.url = mask_url(url)
        self.start_ns = time.time_ns() if start_ns is None else start_ns
        self.block_size = block_size
        self.flush_interval = flush_interval
        self.wake_bytes = wake_bytes
        self.max_pending = max_pending
        self.fsync = fsync
        self.on_error = on_error
        #: why recording stopped early (None while healthy or after a clean close)
        self.error: str | None = None
        self.messages = 0  # MESSAGE records written (counted by the writer thread)
        self._dropped_in = 0  # records refused after a stop (producer thread)
        self._dropped_out = 0  # records queued but discarded after a failure (writer thread)
        self.bytes_written = 0  # bytes in the file
        self.closed = False
        #: CPU seconds the writer thread has used (benchmarks: the recorder's cost)
        self.cpu_seconds = 0.0

        flags = FLAG_ZSTD if self.compression else 0
        hdr = encode_header(feed, url, self.start_ns, flags=flags, meta=meta)
        self._f = open(self.path, "wb", buffering=0)  # noqa: SIM115 - the writer thread's
        try:
            self._f.write(hdr)
            self._f.flush()
        except BaseException:
            self._f.close()
            raise
        self.bytes_written = len(hdr)

        # the queue: a recording tap (Cython): every entry is copied with memcpy into
        # preallocated blocks laid out as BATCH payloads; no Python object per message.
        # The listener writes into it directly (Connection + RecordingSession); Python
        # callers go through message() / connected() / disconnected().
        self._wake = threading.Event()
        # blocks of up to 4096 entries / 1 MiB of payload (fewer writer-thread hand-offs of the
        # GIL than smaller ones); up to 16 written blocks are kept for reuse (~17 MiB)
        self._tap = RecordTap(block_payload=1 << 20, max_free=16, max_pending=max_pending,
                              wake_bytes=wake_bytes, wake=self._wake.set, on_overflow=self._overflow)
        self._busy = False  # the writer thread holds entries not yet written
        self._closing = False
        self._block: list[tuple[bytes, bytes, int, int, int]] = []  # zstd: the open block
        self._block_bytes = 0
        self._block_t = 0.0
        self._thread = threading.Thread(target=self._run, name="fastfeed-recorder", daemon=True)
        self._thread.start()
        _live_writers.add(self)

    # ---------------------------------------------------------------- hot path
    def message(self, payload: bytes | bytearray | memoryview, recv_ns: int) -> None:
        """Queue one received message (copied: the caller's buffer may be reused)."""
        self._tap.message(payload, recv_ns)

    @property
    def tap(self) -> RecordTap:
        """The producer side (``fastfeed._ext.listener.RecordTap``): the transport's
        listener copies each message into it in C (see :class:`RecordingSession`)."""
        return self._tap

    def _overflow(self, pending: int) -> None:
        """The tap refused an entry: more than ``max_pending`` bytes wait for the writer."""
        self._stop(f"recording to {self.path} stopped: the writer fell behind by "
                   f"{pending / 2**20:.1f} MiB (disk too slow?)")

    def connected(self, recv_ns: int | None = None, info: dict[str, Any] | None = None) -> None:
        """Queue a connection boundary: a (re)connection was established."""
        payload = json.dumps(info, separators=(",", ":")).encode() if info else b""
        self._control(CONNECTED, recv_ns, payload)

    def disconnected(self, recv_ns: int | None = None, reason: str = "") -> None:
        """Queue a connection boundary: the connection was lost or closed."""
        self._control(DISCONNECTED, recv_ns, reason.encode("utf-8", "replace"))

    def _control(self, kind: int, recv_ns: int | None, payload: bytes) -> None:
        self._tap.entry(kind, payload, time.time_ns() if recv_ns is None else recv_ns)

    def _stop(self, why: str) -> None:
        self._tap.stop()
        if self.error is None:
            self.error = why
            log.error("%s", why)
            if self.on_error is not None:
                try:
                    self.on_error(why)
                except Exception:  # pragma: no cover
                    log.exception("recording on_error callback failed")
        self._wake.set()

    @property
    def recording(self) -> bool:
        """True while records are accepted (not stopped by an error, not closed)."""
        return not self._tap.stopped

    @property
    def dropped(self) -> int:
        """Records lost because recording stopped (refused, or queued and discarded)."""
        return self._tap.dropped + self._dropped_out

    @property
    def pending_bytes(self) -> int:
        """Payload bytes queued and not yet taken by the writer thread."""
        return self._tap.pending_bytes

    # ---------------------------------------------------------------- writer thread
    def _run(self) -> None:
        failed = False
        while True:
            self.cpu_seconds = time.thread_time()
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            closing = self._closing
            if not failed:
                try:
                    self._drain(final=closing)
                except Exception as e:  # OSError (ENOSPC, EIO), MemoryError, ...
                    failed = True
                    self._stop(f"recording to {self.path} stopped: {type(e).__name__}: {e}")
            if failed:
                self._discard()
            if closing:
                break
        self.cpu_seconds = time.thread_time()
        try:
            if not failed:
                self._write_end()
        except Exception as e:
            self._stop(f"recording to {self.path}: could not finish the file: {e}")
        finally:
            try:
                self._f.close()
            except Exception:
                pass

    def _discard(self) -> None:
        tap = self._tap
        tap.seal()
        b = tap.pop()
        while b is not None:
            self._dropped_out += b.n
            tap.release(b)
            b = tap.pop()
        for _, _, n, _, _ in self._block:
            self._dropped_out += n
        self._block, self._block_bytes = [], 0
        self._busy = False

    def _drain(self, final: bool) -> None:
        """Write every block the tap holds (the current one sealed first): one BATCH
        record each (one writev, no per-entry Python work), or zstd blocks."""
        zc = self._zc
        tap = self._tap
        self._busy = True
        try:
            tap.seal()
            while True:
                b = tap.pop()
                if b is None:
                    break
                try:
                    if zc is None:
                        table, payloads = b.table(), b.payloads()
                        self._write_record(BATCH, b.first_ns, table, payloads)
                        table.release()
                        payloads.release()
                        self.messages += b.nmsg
                    else:
                        if not self._block:
                            self._block_t = time.monotonic()
                        self._block.append((bytes(b.table())[_COUNT.size:], bytes(b.payloads()),
                                            b.n, b.nmsg, b.first_ns))
                        self._block_bytes += b.plen
                finally:
                    tap.release(b)
                if zc is not None and self._block_bytes >= self.block_size:
                    self._write_block()
            if zc is not None and self._block and (
                    final or time.monotonic() - self._block_t >= self.flush_interval):
                self._write_block()
        finally:
            self._busy = False

    def _write_block(self) -> None:
        assert self._zc is not None
        parts, self._block, self._block_bytes = self._block, [], 0
        n = sum(p[2] for p in parts)
        raw = b"".join([_COUNT.pack(n), *(p[0] for p in parts), *(p[1] for p in parts)])
        payload = _BLOCK_HDR.pack(n, len(raw)) + self._zc.compress(raw)
        self._write_record(ZSTD_BLOCK, parts[0][4], payload)
        self.messages += sum(p[3] for p in parts)

    def _write_record(self, kind: int, ns: int, payload: Any, *more: Any) -> None:
        """One record whose payload is ``payload`` followed by ``more`` (bytes-likes)."""
        size = len(payload) + sum(map(len, more))
        h = _REC_HDR.pack(size, kind, ns)
        crc = zlib.crc32(payload, zlib.crc32(h))  # releases the GIL when large
        for m in more:
            crc = zlib.crc32(m, crc)
        self._writev([h, payload, *more, _CRC.pack(crc)])
        if self.fsync:
            os.fsync(self._f.fileno())
        self.bytes_written += len(h) + size + _CRC.size

    def _writev(self, parts: list[bytes]) -> None:
        """One ``writev`` system call for a record (no copy, GIL released), retried on a
        short write."""
        fd = self._f.fileno()
        total = sum(map(len, parts))
        done = os.writev(fd, parts)
        while done < total:  # short write: send the rest
            rest = b"".join(parts)[done:]
            while rest:
                k = os.write(fd, rest)
                rest = rest[k:]
                done += k

    def _write_end(self) -> None:
        summary = {"messages": self.messages, "dropped": self.dropped, "error": self.error}
        self._write_record(END, time.time_ns(), json.dumps(summary).encode())
        if self.fsync:
            os.fsync(self._f.fileno())

    # ---------------------------------------------------------------- close
    def flush(self, timeout: float | None = 5.0) -> None:
        """Wait until everything queued so far has been handed to the OS (test helper;
        compressed records may still sit in the open block)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (self._tap.pending_entries or self._busy) and self._thread.is_alive():
            self._wake.set()
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.001)

    def close(self, timeout: float | None = None) -> None:
        """Write everything queued, an end record, and close the file (idempotent).
        Blocks until done (call it off the event loop, or accept a short wait)."""
        if self.closed:
            return
        self.closed = True
        self._tap.stop()
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)
        _live_writers.discard(self)

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def summary(self) -> dict[str, Any]:
        return {"path": self.path, "messages": self.messages, "bytes": self.bytes_written,
                "dropped": self.dropped, "error": self.error,
                "compression": self.compression}


# --------------------------------------------------------------------------- session wrapper


class RecordingSession:
    """A feed session that records what it receives, then forwards it.

    Wraps any object implementing the transport's ``Session`` contract: each callback
    queues a record on ``writer`` first (the payload is copied: it is valid only during
    the call) and then calls the wrapped session. Other attributes (``subscribe``,
    ``state``, ``fatal``, ``on_buffer_end``, ``defer_until_buffer_end``, ...) are the
    wrapped session's.

    On a :class:`fastfeed.transport.Connection`, messages are not recorded through
    :attr:`on_message`: the connection hands :attr:`record_tap` to its Cython listener,
    which copies each message into the writer's blocks in C and then calls
    :attr:`tapped_sink` (the wrapped session's ``on_message``) — no Python call of the
    recorder per message. :attr:`on_message` (a Cython callable doing the same) is for
    everyone else.
    """

    __slots__ = ("session", "writer", "on_message", "record_tap", "tapped_sink")

    def __init__(self, session: Any, writer: Writer) -> None:
        object.__setattr__(self, "session", session)
        object.__setattr__(self, "writer", writer)
        object.__setattr__(self, "record_tap", writer.tap)
        object.__setattr__(self, "tapped_sink", session.on_message)
        object.__setattr__(self, "on_message", writer.tap.sink(session.on_message))

    def on_connected(self, send: Callable[[bytes], None]) -> None:
        self.writer.connected(time.time_ns())
        self.session.on_connected(send)

    def on_disconnected(self, reason: str) -> None:
        self.writer.disconnected(time.time_ns(), str(reason))
        self.session.on_disconnected(reason)

    @property
    def on_buffer_end(self) -> Callable[[], Any]:
        """The wrapped session's ``on_buffer_end`` (``AttributeError`` if it has none)."""
        return self.session.on_buffer_end

    @property
    def defer_until_buffer_end(self) -> bool:
        """The wrapped session's read-buffer batching switch (``AttributeError`` if none)."""
        return self.session.defer_until_buffer_end

    @defer_until_buffer_end.setter
    def defer_until_buffer_end(self, on: bool) -> None:
        self.session.defer_until_buffer_end = on

    @property
    def fatal(self) -> BaseException | None:
        return getattr(self.session, "fatal", None)

    @fatal.setter
    def fatal(self, value: BaseException | None) -> None:
        self.session.fatal = value

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "session"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "fatal":
            self.session.fatal = value
        else:
            setattr(self.session, name, value)


def wrap_session_for_recording(session: Any, path: str | os.PathLike[str], feed: str,
                               url: str = "", *, topics: list[str] | tuple[str, ...] = (),
                               engine: Any = None, compression: str | None = None,
                               **writer_options: Any) -> tuple[RecordingSession, Callable[[], dict[str, Any]]]:
    """Wrap a feed session so that everything it receives is recorded to ``path``.

    Returns ``(recording_session, close)``: give ``recording_session`` to the
    ``Connection`` instead of ``session``; call ``close()`` when the connection is done
    (it flushes, writes the end record, and returns the writer's summary dict:
    path, messages, bytes, dropped, error). The topics and the engine's configuration
    (capacity, windows, depth, max_future_skew) are stored in the header so that replay
    rebuilds the same engine; they are taken from ``session.topics`` / ``session.engine``
    unless given. ``writer_options`` go to :class:`Writer` (``flush_interval``,
    ``max_pending``, ``fsync``, ``on_error``, ...).
    """
    if not topics:
        topics = tuple(getattr(session, "topics", None) or ())
    if engine is None:
        engine = getattr(session, "engine", None)
    meta: dict[str, Any] = {"topics": list(topics)}
    if engine is not None:
        meta["engine"] = engine_config(engine)
    try:
        from .. import __version__
        meta["fastfeed"] = __version__
    except Exception:  # pragma: no cover
        pass
    writer = Writer(path, feed=feed, url=url, meta=meta, compression=compression,
                    **writer_options)
    rs = RecordingSession(session, writer)

    def close() -> dict[str, Any]:
        writer.close()
        return writer.summary()

    return rs, close


def attach_recorder(feed: Any, path: str | os.PathLike[str], **options: Any
                    ) -> Callable[[], dict[str, Any]]:
    """Record everything a :class:`fastfeed.Feed` receives to ``path``.

    Call it before the feed starts (the connection takes ``feed.session`` when it is
    built). Returns ``close()``: call it after the feed stopped; it finishes the file
    and returns the summary (``path``, ``messages``, ``bytes``, ``dropped``, ``error``).
    ``options``: ``compression="zstd"``, ``fsync=True``, ``on_error=callback``, ...

    Example::

        feed = fastfeed.Feed("vantafin", url=url)
        close = attach_recorder(feed, "day.ffr")
        async with feed:
            await asyncio.sleep(60)
        print(close())
    """
    if getattr(feed, "_conn", None) is not None:
        raise RuntimeError("attach the recorder before the feed starts")
    feed.session, close = wrap_session_for_recording(feed.session, path, feed.feed_name,
                                                     feed.url, **options)
    return close


def engine_config(engine: Any) -> dict[str, Any]:
    """The engine settings replay needs to rebuild an identical engine."""
    cfg: dict[str, Any] = {}
    for k in ("capacity", "windows", "depth", "max_future_skew"):
        v = getattr(engine, k, None)
        if v is not None:
            cfg[k] = list(v) if isinstance(v, tuple) else v
    return cfg


# --------------------------------------------------------------------------- reader


class Reader:
    """Read a recording: the header, then its records in order.

    Iterating yields :class:`Record` tuples (``kind``, ``recv_ns``, ``payload`` bytes);
    zstd blocks are opened transparently. Damage never raises: a torn tail or a record
    failing its checksum is skipped; the reader then looks for the next intact record
    (``resync=True``) and reports each skipped region in :attr:`problems` (and logs a
    warning). A missing or damaged *header* raises :class:`FormatError`.

    After iteration: :attr:`records` (count), :attr:`messages`, :attr:`skipped_bytes`,
    :attr:`problems`, :attr:`complete` (True if the file ends with the writer's end
    record), :attr:`end_info` (that record's summary).
    """

    def __init__(self, path: str | os.PathLike[str], *, resync: bool = True,
                 kinds: frozenset[int] | set[int] | None = None) -> None:
        self.path = os.fspath(path)
        self.resync = resync
        self.kinds = kinds
        self._f = open(self.path, "rb")  # noqa: SIM115
        try:
            size = os.fstat(self._f.fileno()).st_size
            self._mm: mmap.mmap | None = None
            if size:
                self._mm = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)
                self.header = decode_header(self._mm)
            else:
                raise FormatError("torn header: the file is empty")
        except BaseException:
            self.close()
            raise
        self.size = size
        self._reset()

    def _reset(self) -> None:
        self.records = 0
        self.messages = 0
        self.skipped_bytes = 0
        self.problems: list[Problem] = []
        self.complete = False
        self.end_info: dict[str, Any] | None = None
        self.bytes_read = self.header.size
        self.first_ns: int | None = None
        self.last_ns: int | None = None

    # ------------------------------------------------------------------ parsing
    def _problem(self, offset: int, length: int, reason: str) -> None:
        self.skipped_bytes += length
        self.problems.append(Problem(offset, length, reason))
        log.warning("%s: skipped %d bytes at offset %d: %s", self.path, length, offset, reason)

    def _check(self, mv: memoryview, pos: int, end: int) -> tuple[int, int, int, int] | str:
        """(kind, ns, payload_len, record_end) of an intact record at pos, else a reason."""
        if end - pos < REC_OVERHEAD:
            return "torn record (truncated file)"
        size, kind, ns = _REC_HDR.unpack_from(mv, pos)
        if size > MAX_PAYLOAD:
            return "damaged record (length)"
        rend = pos + REC_OVERHEAD + size
        if rend > end:
            return "torn record (truncated file)"
        (crc,) = _CRC.unpack_from(mv, rend - 4)
        if zlib.crc32(mv[pos:rend - 4]) != crc:
            return "damaged record (checksum mismatch)"
        return kind, ns, size, rend

    def _resync(self, mv: memoryview, pos: int, end: int) -> int:
        """Offset of the next intact record after pos, or -1.

        Candidates are found with numpy, 1 MiB at a time: offsets whose kind byte is a
        known kind (JSON text never has those bytes), then length, time and CRC checks.
        """
        lo = self.header.start_ns - _RESYNC_SPAN_NS
        hi = self.header.start_ns + _RESYNC_SPAN_NS
        unpack = _REC_HDR.unpack_from
        last = end - REC_OVERHEAD  # the last offset where a record could start
        q0 = pos + 1
        step = 1 << 20
        while q0 <= last:
            q1 = min(q0 + step, last + 1)
            kb = np.frombuffer(mv, np.uint8, q1 - q0, q0 + 4)  # kind byte of each candidate
            for q in (np.flatnonzero(np.isin(kb, _KNOWN_KIND_BYTES)) + q0).tolist():
                size, kind, ns = unpack(mv, q)
                if (lo <= ns <= hi and size <= _RESYNC_MAX_PAYLOAD
                        and q + REC_OVERHEAD + size <= end
                        and not isinstance(self._check(mv, q, end), str)):
                    return q
            q0 = q1
        return -1

    def _iter_buf(self, mv: memoryview, start: int, end: int) -> Iterator[Record]:
        """Records of the file body mv[start:end], opening batches and blocks."""
        pos = start
        while pos < end:
            r = self._check(mv, pos, end)
            if isinstance(r, str):
                nxt = self._resync(mv, pos, end) if self.resync else -1
                if nxt < 0:
                    if r.startswith("torn") or end - pos < REC_OVERHEAD:
                        reason = r
                    else:
                        reason = f"{r}; no intact record after it"
                    self._problem(pos, end - pos, reason)
                    return
                self._problem(pos, nxt - pos, r)
                pos = nxt
                continue
            kind, ns, size, rend = r
            p0 = pos + _REC_HDR.size
            if kind == BATCH:
                yield from self._iter_batch(mv[p0:p0 + size], pos)
            elif kind == ZSTD_BLOCK:
                yield from self._iter_block(mv[p0:p0 + size], pos)
            else:
                if kind == END:
                    try:
                        self.end_info = json.loads(bytes(mv[p0:p0 + size]))
                    except ValueError:
                        self.end_info = {}
                    self.complete = True
                yield from self._emit(((kind, ns, bytes(mv[p0:p0 + size])),))
            pos = rend
            self.bytes_read = pos

    def _emit(self, recs: Any) -> Iterator[Record]:
        kinds = self.kinds
        for kind, ns, payload in recs:
            self.records += 1
            if kind == MESSAGE:
                self.messages += 1
            if self.first_ns is None:
                self.first_ns = ns
            self.last_ns = ns
            if kinds is None or kind in kinds:
                yield Record(kind, ns, payload)

    def _iter_batch(self, b: memoryview, offset: int) -> Iterator[Record]:
        """Entries of a batch payload ``b`` (of the record at file ``offset``)."""
        nb = len(b)
        if nb < _COUNT.size:
            self._problem(offset, nb, "damaged batch (header)")
            return
        (n,) = _COUNT.unpack_from(b, 0)
        t0 = _COUNT.size
        d0 = t0 + n * ENTRY_DTYPE.itemsize
        if d0 > nb:
            self._problem(offset, nb, "damaged batch (entry count)")
            return
        tab = np.frombuffer(b, ENTRY_DTYPE, n, t0)
        lens = tab["len"].astype(np.int64)
        ends = np.cumsum(lens) + d0
        if n and int(ends[-1]) != nb:
            self._problem(offset, nb, "damaged batch (entry lengths)")
            return
        ends_l = ends.tolist()
        starts_l = [d0, *ends_l[:-1]]
        yield from self._emit(zip(tab["kind"].tolist(), tab["ns"].tolist(),
                                  map(bytes, map(b.__getitem__, map(slice, starts_l, ends_l)))))

    def _iter_block(self, block: memoryview, offset: int) -> Iterator[Record]:
        try:
            import zstandard
        except ImportError:
            raise RecordingError("this recording uses zstd compression: "
                                 "pip install zstandard") from None
        if len(block) < _BLOCK_HDR.size:
            self._problem(offset, len(block), "damaged zstd block (header)")
            return
        n, raw_len = _BLOCK_HDR.unpack_from(block, 0)
        try:
            raw = zstandard.ZstdDecompressor().decompress(bytes(block[_BLOCK_HDR.size:]),
                                                          max_output_size=raw_len)
        except zstandard.ZstdError as e:
            self._problem(offset, len(block), f"damaged zstd block ({e})")
            return
        if len(raw) != raw_len:
            self._problem(offset, len(block), "damaged zstd block (length)")
            return
        with memoryview(raw) as rmv:
            yield from self._iter_batch(rmv, offset)

    def __iter__(self) -> Iterator[Record]:
        """Records in file order (a fresh pass each time; counters restart)."""
        if self._mm is None:
            raise ValueError("reader is closed")
        self._reset()
        with memoryview(self._mm) as mv:
            yield from self._iter_buf(mv, self.header.size, self.size)
            self.bytes_read = self.size

    def messages_only(self) -> Iterator[tuple[bytes, int]]:
        """``(payload, recv_ns)`` of the MESSAGE records only."""
        for rec in self:
            if rec.kind == MESSAGE:
                yield rec.payload, rec.recv_ns

    def report(self) -> dict[str, Any]:
        """What the last pass found: counts, damage, whether the file ended cleanly."""
        return {
            "path": self.path,
            "feed": self.header.feed,
            "url": self.header.url,
            "start_ns": self.header.start_ns,
            "records": self.records,
            "messages": self.messages,
            "complete": self.complete,
            "skipped_bytes": self.skipped_bytes,
            "problems": [p._asdict() for p in self.problems],
            "end": self.end_info,
        }

    def close(self) -> None:
        mm, self._mm = getattr(self, "_mm", None), None
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # a live iterator still holds a view; GC will close it
                pass
        self._f.close()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: str | os.PathLike[str]) -> list[Record]:
    """All intact records of a recording (convenience for small files and tests)."""
    with Reader(path) as r:
        return list(r)
