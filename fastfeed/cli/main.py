"""The ``fastfeed`` command: watch, simulate, snapshot, bench, record, replay, export, relay.

Exit codes: 0 success; 1 a failure with a one-line message on stderr (no traceback for
expected errors); 2 authentication refused (or bad command-line usage, as argparse does);
130 interrupted.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from . import bench, export, record, relay, replay, simulate, snapshot, watch
from .common import EXIT_FAIL, EXIT_INTERRUPTED, exit_status, formatter

#: the sub-commands, in the order ``fastfeed --help`` lists them
COMMANDS = (watch, simulate, snapshot, bench, record, replay, export, relay)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="fastfeed",
        description="Whole-market live per-second bars rolled into OHLCV/VWAP windows at native speed.",
        epilog="Run `fastfeed COMMAND --help` for a command's options and examples.",
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"fastfeed {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log connection events to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
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
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as e:
        status = exit_status(e)
        if status is None:
            raise
        code, line = status
        print(f"fastfeed: {line}", file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
