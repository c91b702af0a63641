"""The recording reader: never raises for damage after the header.

A torn tail (a process killed mid-write) or a corrupt record is detected by its length
and CRC-32, skipped, and reported in :attr:`Reader.problems` / :attr:`Reader.skipped_bytes`;
every complete record before it (and after it, when the reader can resynchronise) is
returned.

Example::

    with Reader("session.ffr") as r:
        print(r.header.feed, r.header.url)
        for rec in r:
            if rec.kind == MESSAGE:
                handle(rec.payload, rec.recv_ns)
        print(r.skipped_bytes, r.problems)
"""
from __future__ import annotations

import json
import logging
import mmap
import os
import zlib
from typing import Any, Iterator

import numpy as np

from ..errors import FormatError, RecordingError
from .format import (BATCH, BLOCK_HDR, COUNT, CRC, END, ENTRY_DTYPE, KNOWN_KIND_BYTES, MAX_PAYLOAD,
                     MESSAGE, REC_HDR, REC_OVERHEAD, RESYNC_MAX_PAYLOAD, RESYNC_SPAN_NS, ZSTD_BLOCK,
                     Problem, Record, decode_header)

__all__ = ["Reader", "read_records"]

log = logging.getLogger("fastfeed.record")

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
        size, kind, ns = REC_HDR.unpack_from(mv, pos)
        if size > MAX_PAYLOAD:
            return "damaged record (length)"
        rend = pos + REC_OVERHEAD + size
        if rend > end:
            return "torn record (truncated file)"
        (crc,) = CRC.unpack_from(mv, rend - 4)
        if zlib.crc32(mv[pos:rend - 4]) != crc:
            return "damaged record (checksum mismatch)"
        return kind, ns, size, rend

    def _resync(self, mv: memoryview, pos: int, end: int) -> int:
        """Offset of the next intact record after pos, or -1.

        Candidates are found with numpy, 1 MiB at a time: offsets whose kind byte is a
        known kind (JSON text never has those bytes), then length, time and CRC checks.
        """
        lo = self.header.start_ns - RESYNC_SPAN_NS
        hi = self.header.start_ns + RESYNC_SPAN_NS
        unpack = REC_HDR.unpack_from
        last = end - REC_OVERHEAD  # the last offset where a record could start
        q0 = pos + 1
        step = 1 << 20
        while q0 <= last:
            q1 = min(q0 + step, last + 1)
            kb = np.frombuffer(mv, np.uint8, q1 - q0, q0 + 4)  # kind byte of each candidate
            for q in (np.flatnonzero(np.isin(kb, KNOWN_KIND_BYTES)) + q0).tolist():
                size, kind, ns = unpack(mv, q)
                if (lo <= ns <= hi and size <= RESYNC_MAX_PAYLOAD
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
            p0 = pos + REC_HDR.size
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
        if nb < COUNT.size:
            self._problem(offset, nb, "damaged batch (header)")
            return
        (n,) = COUNT.unpack_from(b, 0)
        t0 = COUNT.size
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
        if len(block) < BLOCK_HDR.size:
            self._problem(offset, len(block), "damaged zstd block (header)")
            return
        n, raw_len = BLOCK_HDR.unpack_from(block, 0)
        try:
            raw = zstandard.ZstdDecompressor().decompress(bytes(block[BLOCK_HDR.size:]),
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

