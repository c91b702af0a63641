"""NATS relay: one vendor connection, published to JetStream; consumers on other hosts.

* :class:`RelayPublisher` (+ :func:`attach_publisher`): the relay side — every vendor
  message as received, with its receive time and read boundaries, plus the transport's
  events, into the stream ``FASTFEED_<FEED>`` (subjects ``fastfeed.<feed>.raw`` /
  ``.events``).
* :class:`NatsSource` (+ :func:`source_for_feed`): the consumer side — the same surface
  as the transport's ``Connection``, driving a feed session from the stream (warm start,
  resume by sequence).
* :class:`NatsConfig`: URL, credentials (URL or ``FASTFEED_NATS_*``), TLS; never shown.
* :class:`~fastfeed.relay.natsserver.NatsServer`: the real ``nats-server`` on loopback.

``docs/RELAY.md`` describes the wire format and the guarantees. Needs ``nats-py``
(``pip install 'fastfeed[nats]'``), imported only when a relay part is used.
"""
from __future__ import annotations

from typing import Any

from .config import NatsConfig, is_nats_url, mask_nats_url
from ..errors import JetStreamNotEnabled, NatsAuthError, RelayConfigError, RelayError, StreamNotFound

__all__ = [
    "NatsConfig", "is_nats_url", "mask_nats_url",
    "RelayError", "RelayConfigError", "NatsAuthError", "JetStreamNotEnabled", "StreamNotFound",
    "RelayPublisher", "RelaySession", "attach_publisher", "NatsSource", "source_for_feed",
]

_LAZY = {
    "RelayPublisher": "publisher", "RelaySession": "publisher", "attach_publisher": "publisher",
    "NatsSource": "source", "source_for_feed": "source",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(name)
    import importlib

    try:
        m = importlib.import_module(f".{mod}", __name__)
    except ImportError as exc:  # nats-py missing
        if "nats" in str(exc):
            raise ImportError("the NATS relay needs nats-py: pip install 'fastfeed[nats]'") from exc
        raise
    return getattr(m, name)
