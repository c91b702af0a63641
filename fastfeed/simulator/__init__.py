"""Simulated market-data websocket server (Vantafin ``/v1/stocks``, sFOX ``/ws``, Massive ``/stocks``).

See PROTOCOLS.md; ``fastfeed.simulator.testing`` runs it in-loop, in a thread or as a subprocess.
"""
from .faults import Faults
from .market import Market
from .server import BAR_DTYPE, FEEDS, SimConfig, SimConnection, Simulator, ws_frame
from .testing import SimProcess, SimThread, serve
from .truth import TRUTH_DTYPE, sfox_bars, upserted, with_pv

__all__ = [
    "BAR_DTYPE",
    "FEEDS",
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
