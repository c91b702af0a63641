"""fastfeed: whole-market live per-second bars rolled into OHLCV/VWAP windows.

``Feed`` is the entry point; ``Engine`` and ``Universe`` are the building blocks for
code that brings its own bars.
"""
from ._ext.engine import Engine
from .feed import ConfigurationError, Feed
from .feeds import AuthError
from .frame import WindowFrame
from .recording.format import Reader, attach_recorder
from .recording.replay import export_parquet, replay
from .stats import Stats
from .universe import Universe, UniverseFull

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "ConfigurationError",
    "Engine",
    "Feed",
    "Reader",
    "Stats",
    "Universe",
    "UniverseFull",
    "WindowFrame",
    "__version__",
    "attach_recorder",
    "export_parquet",
    "replay",
]
