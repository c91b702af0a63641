"""Every exception a user of fastfeed can catch, in one place.

``ConfigurationError`` and ``UniverseFull`` are raised by constructors and calls with
bad arguments; ``AuthError`` and ``ConnectionRejected`` end a feed (never retried);
``RecordingError`` / ``FormatError`` come from recordings.
"""
from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigurationError",
    "ConnectionRejected",
    "FormatError",
    "RecordingError",
    "TransportError",
    "UniverseFull",
    # the NATS relay and its consumers
    "RelayError",
    "RelayConfigError",
    "NatsAuthError",
    "JetStreamNotEnabled",
    "StreamNotFound",
]


class ConfigurationError(ValueError):
    """The feed cannot start as configured (unknown feed, missing key or topics)."""


class AuthError(Exception):
    """The feed refused the API key: a configuration error, never retried."""


class UniverseFull(Exception):
    """Raised when a new symbol does not fit in the universe's capacity."""


class TransportError(ConnectionError):
    """A transport failure; its text never contains the API key."""


class ConnectionRejected(TransportError):
    """The server refused us in a way reconnecting cannot fix (HTTP 401/403, CLOSE 1008)."""


class RecordingError(Exception):
    """A recording cannot be written or read (bad header, missing codec, ...)."""


class FormatError(RecordingError):
    """The file is not a fastfeed recording, or its header is damaged."""


# ------------------------------------------------------------------ the NATS relay


class RelayError(ConnectionError):
    """The relay or a consumer cannot work with the NATS server (not retried)."""


class RelayConfigError(ConfigurationError):
    """A bad NATS URL, option or credentials file."""


class NatsAuthError(AuthError):
    """The NATS server refused our credentials (an ``AuthError``: the commands exit 2)."""


class JetStreamNotEnabled(RelayError):
    """The NATS server runs without JetStream (start it with ``-js``)."""


class StreamNotFound(RelayError):
    """No relay stream for this feed on the server (is ``fastfeed relay`` running?)."""
