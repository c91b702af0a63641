"""Feed sessions: the wire knowledge of each feed, behind the transport's Session protocol.

One module per vendor (:mod:`.vantafin`, :mod:`.sfox`, :mod:`.massive`) on top of
:mod:`.base` (the shared decode/count/event path); :mod:`.registry` holds each feed's
facts (URL, key variable, default topics, simulator path, session class).
``make_session(name, engine, universe, stats, *, topics, ...)`` builds the session the
transport (``fastfeed.transport.Connection``) drives; see docs/ARCHITECTURE.md.
"""
from __future__ import annotations

from typing import Any

from ..errors import AuthError
from ..transport.masking import mask_secrets
from ..transport.masking import mask_url as url_for_display
from .registry import FEEDS, FeedInfo, get, topic_list

__all__ = ["FEEDS", "AuthError", "BaseSession", "FeedInfo", "default_url", "make_session",
           "mask_secrets", "topic_list", "url_for_display"]


def default_url(name: str) -> str:
    """The production URL of feed ``name`` (no key in it)."""
    return get(name).url


def make_session(name: str, engine: Any, universe: Any, stats: Any, *, topics: Any,
                 api_key: str | None = None, on_batch: Any = None, on_event: Any = None,
                 **options: Any) -> Any:
    """Build the session of feed ``name`` ("vantafin" | "sfox" | "massive").

    ``options`` go to the feed's session class (e.g. ``pv="close"`` for vantafin,
    ``batch_capacity=``). Raises ``ValueError`` for an unknown feed or a bad topic.
    """
    return get(name).session_class()(engine, universe, stats, topics=topics, api_key=api_key,
                                     on_batch=on_batch, on_event=on_event, **options)


def __getattr__(name: str) -> Any:
    # the session machinery (and the compiled filler) is imported with the first session,
    # so that the registry costs nothing more than itself
    if name == "BaseSession":
        from .base import BaseSession

        return BaseSession
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
