"""``fastfeed snapshot``: listen for a while, then print the rolling windows."""
from __future__ import annotations

import argparse
import asyncio
import textwrap
from typing import Any

from .common import (EXIT_OK, CliError, add_connection_args, add_command, check_bars, listen, make_feed,
                     parse_windows_arg, report_recording)

SNAPSHOT_EPILOG = textwrap.dedent(
    """\
    Prints one document and exits 0:
      {"feed": ..., "as_of": T, "market": "open"|"extended-hours"|"closed"|null,
       "windows": {"60": {"AAPL": {"open", "high", "low", "close", "volume", "vwap",
       "count"}}}, "stats": {...}}
    Instruments with no bar in a window are omitted; NaN is null. With no bar because
    the market is closed, one line on stderr says so.
    Exit 2 when access is refused (key refused or missing, HTTP 401/403, CLOSE 1008);
    1 on any other failure, including messages arriving but none usable (--feed may
    not match the URL).

    examples:
      fastfeed snapshot --url ws://127.0.0.1:8765/v1/stocks --api-key sim-key --duration 5 --windows 60
      fastfeed snapshot --feed sfox --url ws://127.0.0.1:8765/ws --api-key sim-key \\
          --subscribe ticker.sfox.btcusd ticker.sfox.ethusd --duration 10 --windows 60,300 --format table
      fastfeed snapshot --attach market --windows 60 --format csv   # from `fastfeed serve --share market`
    """
)

#: seconds ``--attach`` waits for a live writer
ATTACH_TIMEOUT = 10.0


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = add_command(sub, "snapshot", cmd_snapshot,
                    help="listen for a while, then print the rolling windows (JSON, CSV or a table)",
                    description="Connect, listen for --duration seconds (reconnecting as usual), print the windows.",
                    epilog=SNAPSHOT_EPILOG)
    add_connection_args(p)
    p.add_argument("--duration", type=float, metavar="SECONDS", help="how long to listen (required unless --attach)")
    p.add_argument("--attach", metavar="NAME",
                   help="read the shared-memory segment NAME of `fastfeed serve --share NAME` instead of connecting")
    p.add_argument("--windows", default=None,
                   help="comma-separated window lengths in seconds (default 60,300,900; with --attach: the segment's)")
    p.add_argument("--format", choices=("json", "csv", "table"), default="json", help="output format (default json)")
    p.add_argument("--record", metavar="FILE", help="also record every raw message to FILE (see `fastfeed replay`)")
    return p


def cmd_snapshot(args: argparse.Namespace) -> int:
    from ..snapshot import print_document

    if args.attach:
        return snapshot_attached(args)
    windows = parse_windows_arg(args.windows or "60,300,900")
    if args.duration is None:
        raise CliError("--duration is required (or --attach NAME to read a `fastfeed serve` segment)")
    if args.duration <= 0:
        raise CliError("--duration must be a positive number of seconds")
    feed = make_feed(args, windows)
    asyncio.run(listen(feed, args.duration))
    report_recording(feed)
    if feed.error is not None:
        raise feed.error
    if not feed.connected_once:
        raise CliError(f"could not connect to {feed.url} within {args.duration:g} s: "
                       f"{feed.last_error or 'no connection'}")
    check_bars(feed)
    doc = feed.snapshot(windows)
    print_document(doc, args.format)
    return EXIT_OK


def snapshot_attached(args: argparse.Namespace) -> int:
    """The document from a live segment: no connection (a missing writer or window: exit 1)."""
    from ..share.reader import attach
    from ..snapshot import print_document

    windows = parse_windows_arg(args.windows) if args.windows else None
    with attach(args.attach, timeout=ATTACH_TIMEOUT) as reader:
        try:
            doc = reader.snapshot(windows)
        except KeyError as e:
            raise CliError(f"--windows: {e.args[0]}") from None
    print_document(doc, args.format)
    return EXIT_OK
