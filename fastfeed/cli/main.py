"""The ``fastfeed`` command: watch, simulate, snapshot, bench, record, replay, export, serve, relay.

Exit codes: 0 success; 1 a failure with a one-line message on stderr (no traceback for
expected errors); 2 authentication refused (or bad command-line usage, as argparse does);
130 interrupted. A reader that stops reading stdout early (``fastfeed replay FILE | head``)
ends the command quietly with 0, as standard tools do.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from . import bench, export, record, relay, replay, serve, simulate, snapshot, watch
from ..feeds import mask_secrets
from .common import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, exit_status, formatter

#: the sub-commands, in the order ``fastfeed --help`` lists them
COMMANDS = (watch, simulate, snapshot, bench, record, replay, export, serve, relay)


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
    """Run one command; the exit code. Output still buffered is flushed here, so that a
    closed stdout (the reader went away) is noticed here and not at interpreter exit."""
    try:
        try:
            return _run(argv)
        finally:
            if sys.stdout is not None:  # None: started with stdout closed (>&-)
                sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_OK


def _discard_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered cannot fail again at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout replaced (tests) or without a descriptor
        pass


def _run(argv: Sequence[str] | None) -> int:
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
    except BrokenPipeError:
        raise  # the reader of stdout went away: main() ends quietly
    except Exception as e:
        status = exit_status(e)
        if status is None:
            raise
        code, line = status
        print(f"fastfeed: {mask_secrets(line)}", file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
