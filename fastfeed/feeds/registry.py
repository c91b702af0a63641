"""The single home of each feed's facts: name, production URL, API-key variable, default
topics, simulator path, session class and how a second's bars arrive.

The Feed, the CLI, the simulator, replay and the bench read them from here; nothing else
spells a feed's URL, key variable or path. Importing this module imports no feed module
(the session class is loaded on first use).
"""
from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError

__all__ = ["FEEDS", "FeedInfo", "get", "names", "topic_list"]


@dataclass(frozen=True)
class FeedInfo:
    """What fastfeed knows about one feed."""

    #: the feed's name: ``Feed(feed=...)``, ``--feed``, the recording header
    name: str
    #: the vendor's production WebSocket URL (no key in it)
    url: str
    #: environment variable holding the API key
    api_key_env: str
    #: topics subscribed when none are given; empty: they must be named
    default_topics: tuple[str, ...]
    #: a valid topic, for messages and for replaying a recording that stored none
    example_topic: str
    #: the path the simulator serves this feed on
    simulator_path: str
    #: whether the key may travel in the URL (``?apiKey=``) rather than in an auth message
    key_in_url: bool
    #: ``"module:Class"`` of the feed's session (``fastfeed.feeds.<name>``)
    session: str
    #: seconds over which the bars of one second arrive: 0 when they come as a burst after
    #: the second, 1.0 when they arrive during it (sFOX: a pair's update carries its own time)
    bar_spread_s: float = 0.0

    def session_class(self) -> Any:
        """The feed's session class (imports its module)."""
        module, cls = self.session.split(":")
        return getattr(importlib.import_module(module), cls)


#: every feed fastfeed speaks, by name
FEEDS: dict[str, FeedInfo] = {
    "vantafin": FeedInfo(
        name="vantafin", url="wss://socket.vantafin.com/v1/stocks", api_key_env="VANTAFIN_API_KEY",
        default_topics=("LS.*",), example_topic="LS.AAPL", simulator_path="/v1/stocks",
        key_in_url=True, session="fastfeed.feeds.vantafin:VantafinSession"),
    "sfox": FeedInfo(
        name="sfox", url="wss://ws.sfox.com/ws", api_key_env="SFOX_API_KEY",
        default_topics=(), example_topic="ticker.sfox.btcusd", simulator_path="/ws",
        key_in_url=False, session="fastfeed.feeds.sfox:SfoxSession", bar_spread_s=1.0),
    "massive": FeedInfo(
        name="massive", url="wss://socket.massive.com/stocks", api_key_env="MASSIVE_API_KEY",
        default_topics=("A.*",), example_topic="A.AAPL", simulator_path="/stocks",
        key_in_url=True, session="fastfeed.feeds.massive:MassiveSession"),
}


def names() -> tuple[str, ...]:
    """The feed names, in their declared order."""
    return tuple(FEEDS)


def get(name: str) -> FeedInfo:
    """The facts of feed ``name``; :class:`ConfigurationError` (a ``ValueError``) if unknown."""
    info = FEEDS.get(name)
    if info is None:
        raise ConfigurationError(f"unknown feed {name!r}: choose one of {', '.join(FEEDS)}")
    return info


def topic_list(topics: str | Iterable[str]) -> list[str]:
    """Topics as a list: a string is one comma-separated list (``"LS.AAPL,LS.MSFT"``), as
    ``--subscribe`` takes it, and so is each string of an iterable; blanks are dropped."""
    if isinstance(topics, str):
        topics = [topics]
    out = []
    for item in topics:
        if not isinstance(item, str):
            raise TypeError(f"topics must be strings, got {type(item).__name__}")
        out.extend(t.strip() for t in item.split(",") if t.strip())
    return out
