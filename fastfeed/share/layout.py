"""The segment's format on the Python side: names, the header and record dtypes.

Byte offsets are not written here: they come from the compiled C header
(``ext/ffshm.h``, through ``fastfeed._ext.shm.LAYOUT``), the one home of the layout;
this module gives them numpy types.  ``docs/SHARED_MEMORY.md`` documents every field.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._ext import shm as _shm

__all__ = [
    "SHM_DIR", "MAGIC", "VERSION", "PAGE", "REC_DTYPE", "HEADER_DTYPE", "REASONS",
    "check_name", "shm_path", "Identity", "identity", "reason_code", "reason_name",
]

#: where Linux keeps POSIX shared-memory objects
SHM_DIR = "/dev/shm"
MAGIC = _shm.MAGIC
VERSION = _shm.VERSION
PAGE = _shm.PAGE
L = _shm.LAYOUT

#: one (window, row) record, 64 bytes
REC_DTYPE = np.dtype([
    ("open", "<f8"), ("high", "<f8"), ("low", "<f8"), ("close", "<f8"),
    ("volume", "<f8"), ("vwap", "<f8"), ("count", "<i8"), ("updated", "<u8"),
])
assert REC_DTYPE.itemsize == L["rec_size"]

_FIELDS = [
    ("magic", "<u8"), ("version", "<u4"), ("header_bytes", "<u4"), ("epoch", "<u8"),
    ("segment_bytes", "<u8"), ("writer_pid", "<i8"), ("state", "<u4"), ("n_windows", "<u4"),
    ("capacity", "<u8"), ("depth", "<u8"), ("windows", ("<u4", (_shm.MAX_WINDOWS,))),
    ("feed", f"S{_shm.NAME_BYTES}"), ("off_symrefs", "<u8"), ("off_heap", "<u8"),
    ("heap_bytes", "<u8"), ("off_windows", "<u8"), ("window_bytes", "<u8"), ("off_info", "<u8"),
    ("info_bytes", "<u8"), ("off_stats", "<u8"), ("stats_bytes", "<u8"), ("n_counters", "<u4"),
    ("n_reader_slots", "<u4"), ("heartbeat_period_ns", "<u8"), ("heartbeat_ns", "<u8"),
    ("heartbeats", "<u8"), ("generation", "<u8"), ("update_seq", "<u4"), ("second_seq", "<u4"),
    ("T", "<i8"), ("n_symbols", "<u8"), ("publishes", "<u8"), ("rows_published", "<u8"),
    ("publish_ns", "<i8"), ("publish_mono_ns", "<i8"), ("stats_len", "<u8"), ("stats_ns", "<i8"),
    ("second.T", "<i8"), ("second.reason", "<u4"), ("second.reported", "<i8"),
    ("second.expected", "<i8"), ("second.latency_us", "<f8"), ("second.since_last_bar_us", "<f8"),
    ("second.count", "<u8"), ("second.published_ns", "<i8"), ("second.info_len", "<u8"),
    ("counters", ("<i8", (_shm.MAX_COUNTERS,))),
    ("counter_names", (f"S{_shm.NAME_BYTES}", (_shm.MAX_COUNTERS,))),
]
#: the 4096-byte header (offsets from ``LAYOUT``)
HEADER_DTYPE = np.dtype({
    "names": [n for n, _ in _FIELDS],
    "formats": [f for _, f in _FIELDS],
    "offsets": [L[n] for n, _ in _FIELDS],
    "itemsize": L["header_size"],
})

#: ``info["reason"]`` of a completed second <-> its code in the segment (0: none, 4: other)
REASONS = {"complete": 1, "quiet": 2, "next": 3}
_REASON_NAMES = {v: k for k, v in REASONS.items()}


def reason_code(reason: Any) -> int:
    return 0 if reason is None else REASONS.get(str(reason), 4)


def reason_name(code: int) -> str | None:
    return None if code == 0 else _REASON_NAMES.get(int(code), "other")


def check_name(name: str) -> str:
    """A segment name without the leading ``/``; ``ValueError`` if it cannot be one."""
    if not isinstance(name, str):
        raise TypeError(f"segment name must be str, got {type(name).__name__}")
    n = name[1:] if name.startswith("/") else name
    if not n or "/" in n or "\0" in n or n in (".", "..") or len(n.encode()) > 200:
        raise ValueError(f"bad shared-memory segment name {name!r}: 1-200 bytes, no '/' after the first")
    return n


def shm_path(name: str) -> str:
    return os.path.join(SHM_DIR, check_name(name))


@dataclass(frozen=True)
class Identity:
    """What a segment says about itself (fixed for its life)."""

    epoch: int
    writer_pid: int
    feed: str
    windows: tuple[int, ...]
    capacity: int
    depth: int
    segment_bytes: int
    counter_names: tuple[str, ...]
    heartbeat_period: float  # seconds
    off_symrefs: int
    off_heap: int
    heap_bytes: int
    off_windows: int
    window_bytes: int
    info_bytes: int
    stats_bytes: int


def identity(header: Any) -> Identity:
    """Parse the identity fields of a header (a buffer of at least 4096 bytes)."""
    h = np.frombuffer(header, HEADER_DTYPE, count=1)[0]
    if int(h["magic"]) != MAGIC:
        raise ValueError("not a fastfeed segment (bad magic)")
    k = int(h["n_windows"])
    nc = int(h["n_counters"])
    return Identity(
        epoch=int(h["epoch"]),
        writer_pid=int(h["writer_pid"]),
        feed=bytes(h["feed"]).decode("utf-8", "replace"),
        windows=tuple(int(w) for w in h["windows"][:k]),
        capacity=int(h["capacity"]),
        depth=int(h["depth"]),
        segment_bytes=int(h["segment_bytes"]),
        counter_names=tuple(bytes(c).decode() for c in h["counter_names"][:nc]),
        heartbeat_period=int(h["heartbeat_period_ns"]) / 1e9,
        off_symrefs=int(h["off_symrefs"]),
        off_heap=int(h["off_heap"]),
        heap_bytes=int(h["heap_bytes"]),
        off_windows=int(h["off_windows"]),
        window_bytes=int(h["window_bytes"]),
        info_bytes=int(h["info_bytes"]),
        stats_bytes=int(h["stats_bytes"]),
    )


def nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else x
