"""The simulator's command-line options and its blocking run loop.

Shared by ``python -m fastfeed.simulator`` and ``fastfeed simulate`` (which wires
:func:`add_arguments` and :func:`run` into its sub-parser).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
from typing import Any, Optional

from .faults import Faults
from .server import SimConfig, Simulator

__all__ = ["add_arguments", "build_parser", "config_from_args", "run", "main"]


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the simulator's options to ``p`` (used by ``fastfeed simulate``)."""
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free port; default 8765)")
    p.add_argument("--seed", type=int, default=0, help="market seed (default 0)")
    p.add_argument("--tickers", type=int, default=12_000, help="stock universe size (default 12000)")
    p.add_argument("--trade-fraction", type=float, default=0.5,
                   help="probability that a ticker trades in a second (default 0.5)")
    p.add_argument("--bars-per-frame", type=int, default=100, help="bars per frame (default 100)")
    p.add_argument("--always-array", action="store_true", help="send arrays even at 1 bar per frame")
    p.add_argument("--speed", type=float, default=1.0,
                   help="simulated seconds per wall second (default 1: live)")
    p.add_argument("--max-rate", action="store_true",
                   help="send seconds as fast as each client reads (benchmarks)")
    p.add_argument("--max-seconds", type=int, default=None, help="simulated seconds per connection, then idle")
    p.add_argument("--start-second", type=int, default=None, help="first simulated second (epoch s)")
    p.add_argument("--api-key", default=os.environ.get("FASTFEED_SIM_API_KEY", "sim-key"),
                   help="key clients must present (env FASTFEED_SIM_API_KEY; default 'sim-key')")
    p.add_argument("--no-auth", action="store_true", help="accept any key or none")
    p.add_argument("--market-closed", action="store_true", help="send market_status closed instead of data")
    p.add_argument("--sfox-interval", type=int, default=3, help="seconds between updates of a pair (default 3)")
    p.add_argument("--record", action="store_true", help="keep the ground truth in memory (grows)")
    p.add_argument("--fault", action="append", default=[], metavar="NAME=VALUE",
                   help="fault injection, e.g. drop_after=500, drop_mode=abrupt, fragment_every=10 "
                        f"(names: {', '.join(Faults.__dataclass_fields__)})")
    p.add_argument("--tls-cert", default=None, help="serve wss:// with this certificate (PEM)")
    p.add_argument("--tls-key", default=None, help="private key of --tls-cert (PEM)")
    p.add_argument("--json", action="store_true", help="print one JSON line {port, urls} (for scripts)")
    return p


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(
        prog="fastfeed simulate",
        description="Simulated Vantafin / sFOX / Massive websocket feeds on loopback, speaking the wire protocols fastfeed implements.",
    ))


def _fault_value(v: str) -> Any:
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v


def config_from_args(args: argparse.Namespace) -> SimConfig:
    faults: dict[str, Any] = {}
    for item in args.fault:
        name, _, value = item.partition("=")
        if name not in Faults.__dataclass_fields__:
            raise SystemExit(f"fastfeed simulate: --fault: unknown fault {name!r} "
                             f"(known: {', '.join(Faults.__dataclass_fields__)})")
        faults[name] = _fault_value(value)
    ctx = None
    if args.tls_cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    return SimConfig(
        seed=args.seed, n_tickers=args.tickers, trade_fraction=args.trade_fraction,
        bars_per_frame=args.bars_per_frame, always_array=args.always_array, speed=args.speed,
        max_rate=args.max_rate, max_seconds=args.max_seconds, start_second=args.start_second,
        api_key=None if args.no_auth else args.api_key, market_open=not args.market_closed,
        sfox_interval=args.sfox_interval, record=args.record, host=args.host, port=args.port,
        ssl_context=ctx, faults=Faults(**faults),
    )


async def _serve(cfg: SimConfig, as_json: bool) -> None:
    sim = await Simulator(cfg).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    urls = sim.urls()
    if as_json:
        print(json.dumps({"port": sim.port, "urls": urls, "start_second": sim.start_second}), flush=True)
    else:
        print(f"fastfeed simulator on {cfg.host}:{sim.port} (seed {cfg.seed}, {cfg.n_tickers} tickers, "
              f"{'max rate' if cfg.max_rate else f'speed {cfg.speed:g}'})", flush=True)
        for feed, u in urls.items():
            print(f"  {feed:9s} {u}", flush=True)
        if cfg.api_key is not None:
            print("  key: required (add ?apiKey=<key> or send the auth message; not shown)", flush=True)
        print("Ctrl-C to stop.", flush=True)
    try:
        await stop.wait()
    finally:
        await sim.stop()


def run(args: argparse.Namespace) -> int:
    """Run the simulator until Ctrl-C / SIGTERM (blocking). Returns an exit code."""
    cfg = config_from_args(args)
    try:
        asyncio.run(_serve(cfg, args.json))
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    return run(build_parser().parse_args(argv))


