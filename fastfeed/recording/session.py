"""Recording a live session: the session proxy and ``attach_recorder``."""
from __future__ import annotations

import os
import time
from typing import Any, Callable

from ..transport.session import SessionProxy
from .writer import Writer

__all__ = ["RecordingSession", "wrap_session_for_recording", "attach_recorder", "engine_config"]


class RecordingSession(SessionProxy):
    """A feed session that records what it receives, then forwards it.

    Wraps any object implementing the transport's ``Session`` contract: each callback
    queues a record on ``writer`` first (the payload is copied: it is valid only during
    the call) and then calls the wrapped session. Other attributes (``subscribe``,
    ``state``, ``fatal``, ``on_buffer_end``, ``defer_until_buffer_end``, ...) are the
    wrapped session's.

    On a :class:`fastfeed.transport.Connection`, messages are not recorded through
    :attr:`on_message`: the connection hands :attr:`raw_tap` to its Cython listener,
    which copies each message into the writer's blocks in C before handing it to the
    wrapped session (:attr:`tapped_sink`, or its C sink) — no Python call of the recorder
    per message. :attr:`on_message` (a Cython callable doing the same) is for everyone else.
    """

    def __init__(self, session: Any, writer: Writer) -> None:
        super().__init__(session)
        self._keep(writer=writer, raw_tap=writer.tap, tapped_sink=session.on_message,
                   on_message=writer.tap.sink(session.on_message))

    def on_connected(self, send: Callable[[bytes], None]) -> None:
        self.writer.connected(time.time_ns())
        self.session.on_connected(send)

    def on_disconnected(self, reason: str) -> None:
        self.writer.disconnected(time.time_ns(), str(reason))
        self.session.on_disconnected(reason)


def wrap_session_for_recording(session: Any, path: str | os.PathLike[str], feed: str,
                               url: str = "", *, topics: list[str] | tuple[str, ...] = (),
                               engine: Any = None, compression: str | None = None,
                               **writer_options: Any) -> tuple[RecordingSession, Callable[[], dict[str, Any]]]:
    """Wrap a feed session so that everything it receives is recorded to ``path``.

    Returns ``(recording_session, close)``: give ``recording_session`` to the
    ``Connection`` instead of ``session``; call ``close()`` when the connection is done
    (it flushes, writes the end record, and returns the writer's summary dict:
    path, messages, bytes, dropped, error). The topics and the engine's configuration
    (capacity, windows, depth, max_future_skew) are stored in the header so that replay
    rebuilds the same engine; they are taken from ``session.topics`` / ``session.engine``
    unless given. ``writer_options`` go to :class:`Writer` (``flush_interval``,
    ``max_pending``, ``fsync``, ``on_error``, ...).
    """
    if not topics:
        topics = tuple(getattr(session, "topics", None) or ())
    if engine is None:
        engine = getattr(session, "engine", None)
    meta: dict[str, Any] = {"topics": list(topics)}
    if engine is not None:
        meta["engine"] = engine_config(engine)
    try:
        from .. import __version__
        meta["fastfeed"] = __version__
    except Exception:  # pragma: no cover
        pass
    writer = Writer(path, feed=feed, url=url, meta=meta, compression=compression,
                    **writer_options)
    rs = RecordingSession(session, writer)

    def close() -> dict[str, Any]:
        writer.close()
        return writer.summary()

    return rs, close


def attach_recorder(feed: Any, path: str | os.PathLike[str], **options: Any
                    ) -> Callable[[], dict[str, Any]]:
    """Record everything a :class:`fastfeed.Feed` receives to ``path``.

    Call it before the feed starts (the connection takes ``feed.session`` when it is
    built). Returns ``close()``: call it after the feed stopped; it finishes the file
    and returns the summary (``path``, ``messages``, ``bytes``, ``dropped``, ``error``).
    ``options``: ``compression="zstd"``, ``fsync=True``, ``on_error=callback``, ...

    Example::

        feed = fastfeed.Feed("vantafin", url=url)
        close = attach_recorder(feed, "day.ffr")
        async with feed:
            await asyncio.sleep(60)
        print(close())
    """
    if getattr(feed, "_conn", None) is not None:
        raise RuntimeError("attach the recorder before the feed starts")
    feed.session, close = wrap_session_for_recording(feed.session, path, feed.feed_name,
                                                     feed.url, **options)
    return close


def engine_config(engine: Any) -> dict[str, Any]:
    """The engine settings replay needs to rebuild an identical engine."""
    cfg: dict[str, Any] = {}
    for k in ("capacity", "windows", "depth", "max_future_skew"):
        v = getattr(engine, k, None)
        if v is not None:
            cfg[k] = list(v) if isinstance(v, tuple) else v
    return cfg


