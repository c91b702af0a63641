"""The ``fastfeed`` command line: one module per sub-command, :mod:`.common` for what they
share, :mod:`.main` for the parser and the exit codes (``fastfeed.cli:main``)."""
from .main import build_parser, main

__all__ = ["build_parser", "main"]
