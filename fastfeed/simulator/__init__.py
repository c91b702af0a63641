"""Simulated market-data WebSocket server speaking every feed fastfeed reads, on loopback.

* :mod:`.server` — :class:`Simulator` / :class:`SimConfig` (the picows server, the clock);
* :mod:`.connection` and :mod:`.producer` — one client connection and its data production;
* :mod:`.vantafin`, :mod:`.massive`, :mod:`.sfox` — one module per dialect
  (:mod:`.stocks`: what the two stock dialects share); :mod:`.wire` — frames;
* :mod:`.market`, :mod:`.faults`, :mod:`.truth` — deterministic market, fault injection,
  ground truth;
* :mod:`.testing` — run it in-loop, in a thread or as a subprocess; :mod:`.options` —
  the command line (``python -m fastfeed.simulator``, ``fastfeed simulate``).
"""
from .connection import BAR_DTYPE, SimConnection
from .faults import Faults
from .market import Market
from .server import SimConfig, Simulator
from .testing import SimProcess, SimThread, serve
from .truth import TRUTH_DTYPE, sfox_bars, upserted, with_pv
from .wire import ws_frame

__all__ = [
    "BAR_DTYPE",
    "Faults",
    "Market",
    "SimConfig",
    "SimConnection",
    "SimProcess",
    "SimThread",
    "Simulator",
    "serve",
    "ws_frame",
    "TRUTH_DTYPE",
    "sfox_bars",
    "upserted",
    "with_pv",
]
