"""``fastfeed record``: record a feed's raw messages to a file (no UI)."""
from __future__ import annotations

import argparse
import asyncio
import sys
import textwrap
import time
from typing import Any

from .common import (EXIT_OK, CliError, add_connection_args, add_command, check_bars, listen, make_feed,
                     parse_windows_arg)

def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"



RECORD_EPILOG = textwrap.dedent(
    """\
    Records every message the feed receives (raw bytes, receive time in ns, connection
    boundaries) to FILE, without a UI, until --duration elapses or Ctrl-C. The API key
    is never written (the URL is stored with apiKey=***). Format: docs/RECORDING.md.

    examples:
      fastfeed record --url ws://127.0.0.1:8765/v1/stocks --api-key sim-key --out day.ffr --duration 60
      fastfeed record --feed sfox --url wss://ws.sfox.com/ws --subscribe ticker.sfox.btcusd \\
          --out btc.ffr --compress zstd
      fastfeed replay day.ffr --windows 60,300 --format table
    """
)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = add_command(sub, "record", cmd_record,
                    help="record a feed's raw messages to a file (no UI)",
                    description="Connect and record every received message to a file for `fastfeed replay`.",
                    epilog=RECORD_EPILOG)
    add_connection_args(p)
    p.add_argument("--out", "-o", required=True, metavar="FILE", help="recording to write (replaced if it exists)")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--windows", default="60,300,900", help="engine windows stored in the header as replay's default (default 60,300,900)")
    p.add_argument("--compress", choices=("none", "zstd"), default="none", help="zstd-compress the file in blocks (needs zstandard; default none)")
    p.add_argument("--fsync", action="store_true", help="fsync after every write (survives power loss, slower)")
    return p


def cmd_record(args: argparse.Namespace) -> int:
    from ..recording.session import attach_recorder

    if args.duration is not None and args.duration <= 0:
        raise CliError("--duration must be a positive number of seconds")
    windows = parse_windows_arg(args.windows)
    feed = make_feed(args, windows)
    close = attach_recorder(feed, args.out, fsync=args.fsync,
                            compression=None if args.compress == "none" else args.compress)
    t0 = time.monotonic()
    interrupted = False
    try:
        try:
            asyncio.run(listen(feed, args.duration))
        except KeyboardInterrupt:
            interrupted = True
    finally:
        summary = close()
    took = time.monotonic() - t0
    print(f"fastfeed: recorded {summary['messages']:,} messages ({_mib(summary['bytes'])}) "
          f"to {summary['path']} in {took:.1f} s"
          + (f"; {summary['dropped']:,} dropped" if summary["dropped"] else "")
          + (" (interrupted)" if interrupted else ""), file=sys.stderr)
    if summary["error"]:
        raise CliError(summary["error"])
    if feed.error is not None:
        raise feed.error
    if not feed.connected_once:
        raise CliError(f"could not connect to {feed.url}")
    check_bars(feed)
    return EXIT_OK
