"""``fastfeed simulate``: run the built-in market simulator on loopback."""
from __future__ import annotations

import argparse
import textwrap
from typing import Any

from .common import EXIT_OK, add_command

SIMULATE_EPILOG = textwrap.dedent(
    """\
    Serves Vantafin on /v1/stocks, sFOX on /ws and Massive on /stocks; clients present
    the key (default sim-key) as ?apiKey= or in the feed's auth message. Ctrl-C stops it.

    examples:
      fastfeed simulate                                  # 12,000 tickers, live pace, port 8765
      fastfeed simulate --tickers 2000 --speed 10        # ten simulated seconds per second
      fastfeed simulate --fault drop_after=500 --fault drop_mode=abrupt --fault correction_every=5
      fastfeed simulate --market-closed                  # market_status instead of data
      fastfeed simulate --port 0 --json                  # any free port, one JSON line for scripts
    """
)



def add_parser(sub: Any) -> argparse.ArgumentParser:
    from ..simulator.options import add_arguments, run

    p = add_command(sub, "simulate", lambda a: run(a) or EXIT_OK,
                    help="run the built-in market simulator (Vantafin, sFOX and Massive dialects) on loopback",
                    description="A real WebSocket server speaking the vendors' protocols, with fault injection.",
                    epilog=SIMULATE_EPILOG)
    add_arguments(p)
    return p
