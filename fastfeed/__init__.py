"""fastfeed: whole-market live per-second bars rolled into OHLCV/VWAP windows.

``Feed`` is the entry point; ``Engine`` and ``Universe`` are the building blocks for
code that brings its own bars. Everything but the exceptions is imported on first use:
``import fastfeed`` loads no transport (picows), no recorder thread machinery.
"""
from __future__ import annotations

import importlib
from typing import Any

from .errors import AuthError, ConfigurationError, UniverseFull

__version__ = "0.1.0"

#: public name -> module that defines it (imported on first access)
_LAZY = {
    "Engine": "fastfeed.engine",
    "Stats": "fastfeed.engine",
    "Universe": "fastfeed.engine",
    "WindowFrame": "fastfeed.engine",
    "Feed": "fastfeed.feed",
    "Reader": "fastfeed.recording.reader",
    "attach_recorder": "fastfeed.recording.session",
    "replay": "fastfeed.recording.replay",
    "export_parquet": "fastfeed.recording.export",
    "attach": "fastfeed.share.reader",
}

__all__ = sorted(["AuthError", "ConfigurationError", "UniverseFull", "__version__", *_LAZY])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fastfeed' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
