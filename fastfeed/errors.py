"""Every exception a user of fastfeed can catch, in one place.

``ConfigurationError`` and ``UniverseFull`` are raised by constructors and calls with
bad arguments; ``AuthError`` and ``ConnectionRejected`` end a feed (never retried);
``RecordingError`` / ``FormatError`` come from recordings; ``SegmentBusy``,
``SegmentFormatError`` and ``NoWriter`` from shared-memory segments (``fastfeed.share``).
"""
from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigurationError",
    "ConnectionRejected",
    "FormatError",
    "NoWriter",
    "RecordingError",
    "SegmentBusy",
    "SegmentFormatError",
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
    """The vendor refused access: a configuration error, never retried.

    Raised for an ``auth_failed`` status (or sFOX's ``error`` for ``authenticate``), a
    "not authenticated" error answering a subscribe, HTTP 401/403 on the upgrade and a
    CLOSE 1008 after the auth step.  ``key_env`` names the environment variable of the
    feed's key (``None`` when unknown) and ``reason`` says what the server did; neither,
    nor the message, ever contains the key.
    """

    def __init__(self, message: str, *, key_env: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.key_env = key_env
        self.reason = reason or message


class UniverseFull(Exception):
    """Raised when a new symbol does not fit in the universe's capacity."""


class TransportError(ConnectionError):
    """A transport failure; its text never contains the API key."""


class ConnectionRejected(TransportError):
    """The server refused us in a way reconnecting cannot fix (HTTP 401/403, CLOSE 1008).

    ``reason``: what the server did, in a few words (e.g. ``"HTTP 401 on the upgrade"``).
    A feed session turns it into an :class:`AuthError`; a bare ``Connection`` raises this.
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class RecordingError(Exception):
    """A recording cannot be written or read (bad header, missing codec, ...)."""


class FormatError(RecordingError):
    """The file is not a fastfeed recording, or its header is damaged."""


class SegmentBusy(RuntimeError):
    """Another live process already writes a shared-memory segment of this name."""


class SegmentFormatError(ValueError):
    """The named segment is not a fastfeed segment of a format version this code reads."""


class NoWriter(TimeoutError):
    """No live writer published the named segment within the time allowed."""


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
