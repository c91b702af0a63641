"""Feed sessions: wire knowledge of each feed, behind the Session protocol.

``make_session(name, engine, universe, stats, *, topics, ...)`` builds the session the
transport (``fastfeed.transport.Connection``) drives; see docs/ARCHITECTURE.md.
"""
from __future__ import annotations

from typing import Any

from .base import AuthError, BaseSession

__all__ = ["FEEDS", "AuthError", "BaseSession", "default_url", "make_session", "url_for_display"]

#: the feeds fastfeed speaks
FEEDS = ("vantafin", "sfox", "massive")

_URLS = {
    "vantafin": "wss://socket.vantafin.com/v1/stocks",
    "sfox": "wss://ws.sfox.com/ws",
    "massive": "wss://socket.massive.com/stocks",
}


def _module(name: str) -> Any:
    if name == "vantafin":
        from . import vantafin as m
    elif name == "sfox":
        from . import sfox as m
    elif name == "massive":
        from . import massive as m
    else:
        raise ValueError(f"unknown feed {name!r}: choose one of {', '.join(FEEDS)}")
    return m


def default_url(name: str) -> str:
    """The production URL of feed ``name`` (no key in it)."""
    if name not in _URLS:
        raise ValueError(f"unknown feed {name!r}: choose one of {', '.join(FEEDS)}")
    return _URLS[name]


def url_for_display(url: str) -> str:
    """``url`` with any key-like query value masked: ``...?apiKey=***`` (the transport's rule)."""
    from ..transport import mask_url

    return mask_url(url)


def make_session(name: str, engine: Any, universe: Any, stats: Any, *, topics: Any,
                 api_key: str | None = None, on_batch: Any = None, on_event: Any = None,
                 **options: Any) -> BaseSession:
    """Build the session of feed ``name`` ("vantafin" | "sfox" | "massive").

    ``options`` go to the feed's session class (e.g. ``pv="close"`` for vantafin,
    ``batch_capacity=``). Raises ``ValueError`` for an unknown feed or a bad topic.
    """
    return _module(name).SESSION(engine, universe, stats, topics=topics, api_key=api_key,
                                 on_batch=on_batch, on_event=on_event, **options)
