"""Sockets only: one reconnecting WebSocket connection handing complete text messages to a
session. Knows no feed and no file format.

* :mod:`.connection` — :class:`Connection` (connect, handshake, ping/idle watchdog, reconnect
  with backoff, events) and the :class:`Session` protocol; the frame rules live in the
  compiled listener ``fastfeed._ext.listener.FeedListener``;
* :mod:`.masking` — the one key-masking function (:func:`mask_secrets` / :func:`mask_url`).

``Connection`` (and picows with it) is imported on first use, so that the masking
functions cost no picows import.
"""
from __future__ import annotations

from typing import Any

from ..errors import ConnectionRejected, TransportError
from .masking import MaskingAdapter, mask_secrets, mask_url

__all__ = ["Connection", "ConnectionRejected", "MaskingAdapter", "Session", "TransportError",
           "mask_secrets", "mask_url"]


def __getattr__(name: str) -> Any:
    if name in ("Connection", "Session"):
        from . import connection

        return getattr(connection, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
