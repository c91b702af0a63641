"""Recordings: the raw messages of a live session with their receive times, and all
built on them.

* :mod:`.format` — the file layout (docs/RECORDING.md): constants, header, record framing;
* :mod:`.writer` — :class:`Writer` (the event loop copies, a thread writes);
* :mod:`.reader` — :class:`Reader` (damage is skipped and reported, never raised);
* :mod:`.session` — :class:`RecordingSession` / :func:`attach_recorder` (record a live feed);
* :mod:`.replay` — :func:`replay` (the recording through the same session and engine);
* :mod:`.export` — :func:`export_parquet`.
"""
from ..errors import FormatError, RecordingError
from .export import EXPORT_COLUMNS, export_parquet
from .format import (BATCH, CONNECTED, DISCONNECTED, END, ENTRY_DTYPE, FORMAT_VERSION, KIND_NAMES,
                     MAGIC, MESSAGE, ZSTD_BLOCK, Header, Problem, Record)
from .reader import Reader, read_records
from .replay import ReplayResult, parse_speed, replay, replay_session
from .session import RecordingSession, attach_recorder, wrap_session_for_recording
from .writer import Writer

__all__ = [
    "BATCH", "CONNECTED", "DISCONNECTED", "END", "ENTRY_DTYPE", "EXPORT_COLUMNS", "FORMAT_VERSION",
    "FormatError", "Header", "KIND_NAMES", "MAGIC", "MESSAGE", "Problem", "Reader", "Record",
    "RecordingError", "RecordingSession", "ReplayResult", "Writer", "ZSTD_BLOCK", "attach_recorder",
    "export_parquet", "parse_speed", "read_records", "replay", "replay_session",
    "wrap_session_for_recording",
]
