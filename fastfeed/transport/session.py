"""The Session contract the transport drives, and the one proxy that wraps a session.

A session is anything with ``on_connected``, ``on_message``, ``on_disconnected`` and
``fatal`` (see :class:`Session`); the optional members let the transport batch per socket
read, hand messages over in C and copy them into a raw tap.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Protocol

__all__ = ["Session", "SessionProxy"]


class Session(Protocol):
    """What :class:`fastfeed.transport.Connection` calls.

    Optional members (looked up with ``getattr``): ``on_buffer_end()`` after the last
    message of every socket read, ``defer_until_buffer_end`` (set by the connection when it
    batches per read), ``message_sink()`` (a capsule of the C sink, see ``ext/sink.pxd``:
    the listener then hands messages over without a Python call) and ``raw_tap`` (a
    ``fastfeed._ext.listener.RawTap``: every message is copied into it first) and
    ``on_refused(reason)`` (the peer refused access: HTTP 401/403 on the upgrade or a CLOSE
    1008; the session may set ``fatal``, which is then raised instead of
    ``ConnectionRejected``).
    """

    fatal: Optional[BaseException]

    def on_connected(self, send: Callable[[bytes], Any]) -> None: ...

    def on_message(self, payload: Any, recv_ns: int) -> None: ...

    def on_disconnected(self, reason: str) -> None: ...


class SessionProxy:
    """A session that forwards every member to the wrapped ``session``.

    Subclasses override what they add (recording, timing, chunking) and keep their own
    attributes on the proxy with :meth:`_keep` (later assignments to them stay on the
    proxy, as do class attributes); assigning any other attribute sets it on the wrapped
    session.
    """

    def __init__(self, session: Any) -> None:
        self._keep(session=session)

    def _keep(self, **attrs: Any) -> None:
        """Set ``attrs`` on the proxy itself, not on the wrapped session."""
        for name, value in attrs.items():
            object.__setattr__(self, name, value)

    def on_connected(self, send: Callable[[bytes], Any]) -> None:
        self.session.on_connected(send)

    def on_message(self, payload: Any, recv_ns: int) -> None:
        self.session.on_message(payload, recv_ns)

    def on_disconnected(self, reason: str) -> None:
        self.session.on_disconnected(reason)

    @property
    def fatal(self) -> Optional[BaseException]:
        return self.session.fatal

    @fatal.setter
    def fatal(self, value: Optional[BaseException]) -> None:
        self.session.fatal = value

    @property
    def defer_until_buffer_end(self) -> bool:
        """The wrapped session's read-buffer batching switch (``AttributeError`` if none)."""
        return self.session.defer_until_buffer_end

    @defer_until_buffer_end.setter
    def defer_until_buffer_end(self, on: bool) -> None:
        self.session.defer_until_buffer_end = on

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "session"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__ or hasattr(type(self), name):
            object.__setattr__(self, name, value)
        else:
            setattr(self.session, name, value)
