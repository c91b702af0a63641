"""Logging helpers shared by every layer."""
from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """At most one log line per ``interval`` seconds per kind; says how many it held back.

    ``ratelog(kind, msg, *args, level=logging.WARNING)`` logs ``msg % args`` on ``logger``
    unless a line of the same ``kind`` went out less than ``interval`` seconds ago; returns
    whether it logged.
    """

    def __init__(self, logger: logging.Logger, interval: float = 1.0) -> None:
        self.logger = logger
        self.interval = interval
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, kind: str, msg: str, *args: Any, level: int = logging.WARNING) -> bool:
        now = time.monotonic()
        if now < self._next.get(kind, 0.0):
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        self._next[kind] = now + self.interval
        held = self._held.pop(kind, 0)
        if held:
            msg += " (%d more like this since the last line)"
            args = (*args, held)
        self.logger.log(level, msg, *args)
        return True
