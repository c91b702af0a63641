"""Pure compute, no I/O and no JSON: the rolling engine and what it needs.

* :class:`Engine` / :class:`WindowView` — the bar store and rolling OHLCV/VWAP kernels
  (compiled: ``fastfeed._ext.engine``);
* :class:`Universe` — symbol -> dense row id, bounded;
* :class:`Stats` — the counters and latency histograms every layer adds to;
* :class:`WindowFrame` — one window's columns with the symbols;
* :mod:`.reference` — a plain-Python engine with the same semantics (for tests);
* :mod:`.seconds` — the completed-second rule (``SecondTracker`` over the compiled
  ``SecondCounter``), stated plainly in :mod:`.seconds_reference`.
"""
from .._ext.engine import DEPTH_LIMIT, Engine, WindowView
from ..errors import UniverseFull
from .stats import Stats, sync_engine_counters
from .universe import Universe
from .window import WindowFrame

__all__ = ["DEPTH_LIMIT", "Engine", "Stats", "Universe", "UniverseFull", "WindowFrame", "WindowView",
           "sync_engine_counters"]
