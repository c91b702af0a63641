"""The recording writer: the event loop copies, a background thread writes.

Writing costs the event loop one ``memcpy`` of the payload into a preallocated block
(a :class:`fastfeed._ext.listener.RawTap`; on a ``Connection`` the Cython listener does
it, no Python call per message); a writer thread writes each block as one ``BATCH``
record (one ``writev``), or compresses blocks into zstd blocks. If the writer falls too
far behind, or the disk fails, recording stops with a clear error (:attr:`Writer.error`,
logged once) while the feed keeps running.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import weakref
import zlib
from typing import Any, Callable

import numpy as np

from .._ext.listener import TAG_MESSAGE, RawBlock, RawTap
from ..errors import RecordingError
from ..transport.masking import mask_url
from .format import (BATCH, BLOCK_HDR, CONNECTED, COUNT, CRC, DISCONNECTED, END, ENTRY_DTYPE, FLAG_ZSTD, MESSAGE,
                     REC_HDR, ZSTD_BLOCK, encode_header)

__all__ = ["Writer", "batch_table"]

# the tap's tags are the record kinds: the listener tags what it receives TAG_MESSAGE
if TAG_MESSAGE != MESSAGE:  # pragma: no cover - a build mismatch
    raise ImportError(f"the listener's TAG_MESSAGE ({TAG_MESSAGE}) is not MESSAGE ({MESSAGE})")

log = logging.getLogger("fastfeed.record")

_live_writers: "weakref.WeakSet[Writer]" = weakref.WeakSet()


def batch_table(block: RawBlock) -> tuple[bytes, int]:
    """The entry table of a ``BATCH`` record for a tapped block (``ENTRY_DTYPE``, packed:
    length, kind, receive time per entry; the tap's tags are the record kinds) and the
    number of MESSAGE entries. Three vector copies per block, no per-entry Python."""
    table = np.empty(block.n, ENTRY_DTYPE)
    table["len"] = np.frombuffer(block.lengths(), np.uint32)
    kinds = np.frombuffer(block.tags(), np.uint8)
    table["kind"] = kinds
    table["ns"] = np.frombuffer(block.times(), np.int64)
    return table.tobytes(), int(np.count_nonzero(kinds == MESSAGE))


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
        self._meta = dict(meta or {})
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

        # the queue: the transport's raw tap (Cython): every entry is copied with memcpy into
        # preallocated blocks (payloads back to back, per-entry length/tag/time); no Python
        # object per message. The listener writes into it directly (Connection +
        # RecordingSession); Python callers go through message() / connected() /
        # disconnected(). The writer thread lays each block out as a BATCH record.
        self._wake = threading.Event()
        # blocks of up to 4096 entries / 1 MiB of payload (fewer writer-thread hand-offs of the
        # GIL than smaller ones); up to 16 written blocks are kept for reuse (~17 MiB)
        self._tap = RawTap(block_payload=1 << 20, max_entries=4096, max_free=16, max_pending=max_pending,
                           wake_bytes=wake_bytes, wake=self._wake.set, on_overflow=self._overflow)
        self._busy = False  # the writer thread holds entries not yet written
        self._closing = False
        self._block: list[tuple[bytes, bytes, int, int, int]] = []  # zstd: the open block
        self._block_bytes = 0
        self._block_t = 0.0
        self._thread = threading.Thread(target=self._run, name="fastfeed-recorder", daemon=True)
        self._thread.start()
        if not _live_writers:  # the exit hook is registered by the first writer, and only once
            atexit.unregister(_close_live_writers)
            atexit.register(_close_live_writers)
        _live_writers.add(self)

    # ---------------------------------------------------------------- hot path
    def message(self, payload: bytes | bytearray | memoryview, recv_ns: int) -> None:
        """Queue one received message (copied: the caller's buffer may be reused)."""
        self._tap.message(payload, recv_ns)

    @property
    def tap(self) -> RawTap:
        """The producer side (``fastfeed._ext.listener.RawTap``): the transport's
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
                        table, nmsg = batch_table(b)
                        payloads = b.payloads()
                        self._write_record(BATCH, b.first_ns, COUNT.pack(b.n), table, payloads)
                        payloads.release()
                        self.messages += nmsg
                    else:
                        if not self._block:
                            self._block_t = time.monotonic()
                        table, nmsg = batch_table(b)
                        self._block.append((table, bytes(b.payloads()), b.n, nmsg, b.first_ns))
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
        raw = b"".join([COUNT.pack(n), *(p[0] for p in parts), *(p[1] for p in parts)])
        payload = BLOCK_HDR.pack(n, len(raw)) + self._zc.compress(raw)
        self._write_record(ZSTD_BLOCK, parts[0][4], payload)
        self.messages += sum(p[3] for p in parts)

    def _write_record(self, kind: int, ns: int, payload: Any, *more: Any) -> None:
        """One record whose payload is ``payload`` followed by ``more`` (bytes-likes)."""
        if kind != END:
            self.before_record(ns)
        size = len(payload) + sum(map(len, more))
        h = REC_HDR.pack(size, kind, ns)
        crc = zlib.crc32(payload, zlib.crc32(h))  # releases the GIL when large
        for m in more:
            crc = zlib.crc32(m, crc)
        self._writev([h, payload, *more, CRC.pack(crc)])
        if self.fsync:
            os.fsync(self._f.fileno())
        self.bytes_written += len(h) + size + CRC.size

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

    # ---------------------------------------------------------------- files (writer thread)
    def before_record(self, recv_ns: int) -> None:
        """Called on the writer thread before each record but the end record, with the
        record's receive time: a subclass may :meth:`continue_in` a new file here."""

    def continue_in(self, path: str | os.PathLike[str], start_ns: int) -> None:
        """Writer thread only (from :meth:`before_record`): finish the current file with
        its end record and go on writing into a new recording at ``path`` (same feed, URL,
        metadata and compression; its header starts at ``start_ns``)."""
        self._write_end()
        self._f.close()
        flags = FLAG_ZSTD if self.compression else 0
        hdr = encode_header(self.feed, self.url, start_ns, flags=flags, meta=self._meta)
        self.path = os.fspath(path)
        self._f = open(self.path, "wb", buffering=0)  # noqa: SIM115 - the writer thread's
        self._f.write(hdr)
        self.bytes_written += len(hdr)

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


