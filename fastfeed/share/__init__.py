"""Shared memory: one feed handler, many strategy processes.

``SegmentWriter`` publishes an engine's windows, symbols, clock, counters and completed
seconds to a named POSIX shared-memory segment; ``attach(name)`` reads them from any
process of the same user, without ever blocking the writer.  Format and protocols:
``docs/SHARED_MEMORY.md``.
"""
from ..errors import NoWriter, SegmentBusy, SegmentFormatError
from .reader import Reader, SharedFrame, attach
from .writer import SegmentWriter

__all__ = ["NoWriter", "Reader", "SegmentBusy", "SegmentFormatError", "SegmentWriter", "SharedFrame", "attach"]
