"""Errors of the NATS relay and its consumers (their texts never hold a credential)."""
from __future__ import annotations

from ..feed import ConfigurationError
from ..feeds.base import AuthError

__all__ = ["RelayError", "RelayConfigError", "NatsAuthError", "JetStreamNotEnabled", "StreamNotFound"]


class RelayError(ConnectionError):
    """The relay or a consumer cannot work with the NATS server (not retried)."""


class RelayConfigError(ConfigurationError):
    """A bad NATS URL, option or credentials file."""


class NatsAuthError(AuthError):
    """The NATS server refused our credentials (an ``AuthError``: the CLI exits 2)."""


class JetStreamNotEnabled(RelayError):
    """The NATS server runs without JetStream (start it with ``-js``)."""


class StreamNotFound(RelayError):
    """No relay stream for this feed on the server (is ``fastfeed relay`` running?)."""
