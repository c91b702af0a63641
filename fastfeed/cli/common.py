"""Pieces every ``fastfeed`` sub-command shares: exit codes, errors, connection options."""
from __future__ import annotations

import argparse

EXIT_OK, EXIT_FAIL, EXIT_AUTH = 0, 1, 2
FEED_CHOICES = ("vantafin", "sfox", "massive")
DEFAULT_TOPICS_HELP = "topics (default LS.* for vantafin, A.* for massive; required for sfox)"


class CliError(Exception):
    """An expected failure: printed as one line on stderr, exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


def formatter(prog: str) -> argparse.HelpFormatter:
    """Help that keeps the epilog's examples as written."""
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def add_connection_args(p: argparse.ArgumentParser, *, subscribe_help: str = DEFAULT_TOPICS_HELP) -> None:
    """``--feed --url --api-key --subscribe``, as every connecting command takes them."""
    p.add_argument("--feed", choices=FEED_CHOICES, default="vantafin", help="which feed's protocol (default: vantafin)")
    p.add_argument("--url", help="WebSocket URL (default: the vendor's real URL)")
    p.add_argument(
        "--api-key",
        help="API key (default: $VANTAFIN_API_KEY / $SFOX_API_KEY / $MASSIVE_API_KEY); never printed or stored",
    )
    p.add_argument("--subscribe", nargs="+", metavar="TOPIC", help=subscribe_help)
