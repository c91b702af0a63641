"""The ``fastfeed`` command: watch, simulate, snapshot, bench, record, replay, export.

Exit codes: 0 success; 1 a failure with a one-line message on stderr (no traceback for
expected errors); 2 authentication refused (or bad command-line usage, as argparse does).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import textwrap
from typing import Any, Callable, Sequence

from .common import EXIT_AUTH, EXIT_FAIL, EXIT_OK, CliError, add_connection_args
from .common import formatter as _formatter


def _is_auth_error(e: BaseException) -> bool:
    try:
        from ..feeds import AuthError
    except ImportError:  # pragma: no cover - feeds always define it
        return type(e).__name__ == "AuthError"
    return isinstance(e, AuthError)


# --------------------------------------------------------------------------- snapshot
SNAPSHOT_EPILOG = textwrap.dedent(
    """\
    Prints one document and exits 0:
      {"feed": ..., "as_of": T, "windows": {"60": {"AAPL": {"open", "high", "low",
       "close", "volume", "vwap", "count"}}}, "stats": {...}}
    Instruments with no bar in a window are omitted; NaN is null.
    Exit 2 when the key is refused, 1 on any other failure.

    examples:
      fastfeed snapshot --url ws://127.0.0.1:8765/v1/stocks --api-key sim-key --duration 5 --windows 60
      fastfeed snapshot --feed sfox --url ws://127.0.0.1:8765/ws --api-key sim-key \\
          --subscribe ticker.sfox.btcusd ticker.sfox.ethusd --duration 10 --windows 60,300 --format table
    """
)


def _add_snapshot(sub: Any) -> None:
    p = sub.add_parser(
        "snapshot",
        help="listen for a while, then print the rolling windows (JSON, CSV or a table)",
        description="Connect, listen for --duration seconds (reconnecting as usual), print the windows.",
        epilog=SNAPSHOT_EPILOG,
        formatter_class=_formatter,
    )
    add_connection_args(p)
    p.add_argument("--duration", type=float, required=True, metavar="SECONDS", help="how long to listen")
    p.add_argument("--windows", default="60,300,900", help="comma-separated window lengths in seconds (default 60,300,900)")
    p.add_argument("--format", choices=("json", "csv", "table"), default="json", help="output format (default json)")
    p.add_argument("--record", metavar="FILE", help="also record every raw message to FILE (see `fastfeed replay`)")
    p.set_defaults(func=cmd_snapshot)


def _make_feed(args: argparse.Namespace, windows: Sequence[int], **kw: Any):
    from ..feed import ConfigurationError, Feed

    try:
        return Feed(
            feed=args.feed,
            url=args.url,
            api_key=args.api_key,
            subscribe=args.subscribe,
            windows=windows,
            record=getattr(args, "record", None),
            **kw,
        )
    except (ConfigurationError, ValueError) as e:
        raise CliError(str(e)) from None


def _parse_windows(text: str) -> tuple[int, ...]:
    from ..snapshot import parse_windows

    try:
        return parse_windows(text)
    except ValueError as e:
        raise CliError(f"--windows: {e}") from None


def _report_recording(feed: Any) -> None:
    """One stderr line if a recording lost data or failed (the feed itself went on)."""
    rec = feed.recording
    if rec and (rec.get("error") or rec.get("dropped")):
        print(f"fastfeed: recording {rec.get('path')}: {rec.get('error') or ''} "
              f"({rec.get('dropped', 0)} messages not recorded)", file=sys.stderr)


async def _listen(feed: Any, duration: float) -> str | None:
    """Run ``feed`` for ``duration`` seconds; returns the last connection problem if it never connected."""
    await feed.start_async()
    try:
        try:
            await asyncio.wait_for(asyncio.shield(feed._task), timeout=duration)
        except asyncio.TimeoutError:
            pass
    finally:
        await feed.close()
    err = feed.error
    if err is not None:
        raise err
    if not feed.connected_once:
        return feed.last_error or "no connection"
    return None


def cmd_snapshot(args: argparse.Namespace) -> int:
    from ..snapshot import print_document

    windows = _parse_windows(args.windows)
    if args.duration <= 0:
        raise CliError("--duration must be a positive number of seconds")
    feed = _make_feed(args, windows)
    problem = asyncio.run(_listen(feed, args.duration))
    _report_recording(feed)
    if problem is not None:
        raise CliError(f"could not connect to {feed.url} within {args.duration:g} s: {problem}")
    doc = feed.snapshot(windows)
    print_document(doc, args.format)
    return EXIT_OK


# --------------------------------------------------------------------------- watch
WATCH_EPILOG = textwrap.dedent(
    """\
    With no --url and no API key, starts the built-in simulator and watches it.
    Ctrl-C exits.

    examples:
      fastfeed watch                                   # the simulator, 12,000 tickers
      fastfeed watch --window 300 --top 20
      fastfeed watch --feed sfox --url wss://ws.sfox.com/ws --subscribe ticker.sfox.btcusd
      VANTAFIN_API_KEY=... fastfeed watch              # the real Vantafin feed, LS.*
    """
)


def _add_watch(sub: Any) -> None:
    p = sub.add_parser(
        "watch",
        help="live terminal table: top movers, volume leaders, VWAP, feed health",
        description="Watch a feed live in the terminal.",
        epilog=WATCH_EPILOG,
        formatter_class=_formatter,
    )
    add_connection_args(p)
    p.add_argument("--window", type=int, default=60, help="window shown, seconds (default 60)")
    p.add_argument("--windows", default=None, help="windows kept (default: 60,300,900 plus --window)")
    p.add_argument("--top", type=int, default=10, help="rows per table (default 10)")
    p.add_argument("--refresh", type=float, default=0.5, help="seconds between redraws (default 0.5)")
    p.add_argument("--duration", type=float, default=None, help="exit after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--tickers", type=int, default=12000, help="simulator only: number of tickers (default 12000)")
    p.add_argument("--record", metavar="FILE", help="also record every raw message to FILE")
    p.set_defaults(func=cmd_watch)


def cmd_watch(args: argparse.Namespace) -> int:
    from .watch import run_watch

    if args.windows:
        windows = _parse_windows(args.windows)
    else:
        windows = tuple(sorted({60, 300, 900, args.window}))
    if args.window not in windows:
        raise CliError(f"--window {args.window} is not among --windows {windows}")
    if args.top <= 0:
        raise CliError("--top must be positive")
    return run_watch(args, windows, make_feed=_make_feed, after=_report_recording)


# --------------------------------------------------------------------------- simulate
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


def _add_simulate(sub: Any) -> None:
    from ..simulator.options import add_arguments, run

    p = sub.add_parser(
        "simulate",
        help="run the built-in market simulator (Vantafin, sFOX and Massive dialects) on loopback",
        description="A real WebSocket server speaking the vendors' protocols, with fault injection.",
        epilog=SIMULATE_EPILOG,
        formatter_class=_formatter,
    )
    add_arguments(p)
    p.set_defaults(func=lambda a: run(a) or EXIT_OK)


def _add_optional(sub: Any, module: str, adder: str) -> None:
    """Register the sub-commands another module provides (skipped if it is absent)."""
    import importlib

    try:
        mod = importlib.import_module(f"fastfeed.{module}")
    except ImportError:
        return
    getattr(mod, adder)(sub)


# --------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="fastfeed",
        description="Whole-market live per-second bars rolled into OHLCV/VWAP windows at native speed.",
        epilog="Run `fastfeed COMMAND --help` for a command's options and examples.",
        formatter_class=_formatter,
    )
    parser.add_argument("--version", action="version", version=f"fastfeed {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log connection events to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_watch(sub)
    _add_simulate(sub)
    _add_snapshot(sub)
    _add_optional(sub, "cli.bench", "add_bench_parser")
    for adder in ("add_record_parser", "add_replay_parser", "add_export_parser"):
        _add_optional(sub, "cli.record", adder)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_FAIL
    # scripts (snapshot) want a clean stderr: only errors unless -v
    quiet = args.command in ("snapshot",)
    logging.basicConfig(
        level=logging.INFO if args.verbose else (logging.ERROR if quiet else logging.WARNING),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except CliError as e:
        print(f"fastfeed: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except BaseException as e:
        if _is_auth_error(e):
            print(f"fastfeed: authentication failed: {e}", file=sys.stderr)
            return EXIT_AUTH
        if isinstance(e, (OSError, ValueError, TimeoutError, ConnectionError)):
            print(f"fastfeed: {type(e).__name__}: {e}", file=sys.stderr)
            return EXIT_FAIL
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
