"""Replay a recording through the same feed session and engine; export its bars.

``replay(path)`` rebuilds what the live process had: a :class:`fastfeed.Feed` of the
recorded feed (not connected), whose session gets every recorded message with its
*recorded* receive time as "now", and the recorded connection boundaries (so
reconnects and gaps are counted as they were live). Same file, same options → the
same windows and the same snapshot document, every time.

What a recording cannot reproduce, and replay therefore leaves out: transport counters
(``frames``, ``protocol_errors`` and ``protocol_errors_by_kind``: frames the transport
rejected never reached the session, so they were never recorded) and the processing
latency (a wall-clock measurement of the live process; its histogram is left empty).

"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .format import CONNECTED, DISCONNECTED, MESSAGE
from .reader import Reader

__all__ = ["ReplayResult", "replay", "replay_session", "parse_speed", "engine_settings", "recorded_topics"]

_PLACEHOLDER_TOPICS = {"sfox": ("ticker.sfox.btcusd",)}


def parse_speed(text: str | float | None) -> float | None:
    """``"max"`` → ``None`` (as fast as possible); ``"1.0"``, ``"10"``, ``"10x"`` → factor."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        speed = float(text)
    else:
        t = text.strip().lower()
        if t in ("max", "inf", ""):
            return None
        if t.endswith("x"):
            t = t[:-1]
        try:
            speed = float(t)
        except ValueError:
            raise ValueError(f"speed {text!r}: use max or a factor such as 1.0 or 10") from None
    if not math.isfinite(speed):
        return None
    if speed <= 0:
        raise ValueError(f"speed {text!r} must be positive (or max)")
    return speed


# --------------------------------------------------------------------------- driving a session


@dataclass
class ReplayResult:
    """What a replay did: the feed (engine, universe, stats) and the reader's report."""

    feed_name: str
    feed: Any  # fastfeed.Feed, or None when a bare session was driven
    engine: Any
    universe: Any
    stats: Any
    report: dict[str, Any]  # Reader.report(): records, skipped bytes, problems, complete
    messages: int = 0
    connects: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    elapsed: float = 0.0  # wall seconds the replay took
    bars: int = 0

    def snapshot(self, windows: Iterable[int] | None = None) -> dict[str, Any]:
        """The ``fastfeed snapshot`` document of the replayed state."""
        from ..snapshot import snapshot_document

        market = getattr(self.feed, "market", None) if self.feed is not None else None
        return snapshot_document(self.feed_name, self.engine, self.universe, self.stats, windows,
                                 market=market)

    @property
    def bars_per_second(self) -> float:
        return self.bars / self.elapsed if self.elapsed > 0 else float("nan")


class _Progress:
    """A rich progress bar over file bytes, on stderr; a no-op when disabled."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.enabled = enabled
        self._p = None
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                       TimeRemainingColumn, TransferSpeedColumn)

            self._p = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                               DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                               console=Console(stderr=True), transient=True)
            self._p.start()
            self._task = self._p.add_task(label, total=total)

    def update(self, done: int) -> None:
        if self._p is not None:
            self._p.update(self._task, completed=done)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None


def _no_send(data: bytes) -> None:
    """Replay's ``send``: subscribe/auth messages go nowhere."""


def replay_session(reader: Reader, session: Any, *, stats: Any = None,
                   on_event: Callable[[str, dict], None] | None = None,
                   speed: float | None = None, progress: bool = False,
                   url: str = "", batch_per_read: bool = True) -> dict[str, int | None]:
    """Drive any ``Session`` with the records of ``reader`` (the transport's part).

    ``CONNECTED`` → ``on_event("connected")`` then ``session.on_connected(no-op send)``
    (and ``stats.reconnects += 1`` from the second one on, as the transport does);
    ``MESSAGE`` → ``stats.messages``/``stats.bytes`` counted (the listener's job live),
    then ``session.on_message(payload, recorded recv_ns)``;
    ``DISCONNECTED`` → ``on_event("disconnected")`` then ``session.on_disconnected``.
    ``speed``: ``None`` as fast as possible, else a factor of the recorded pace.
    ``batch_per_read``: as the live ``Connection`` does, turn the session's
    ``defer_until_buffer_end`` on (when it has one) and call ``session.on_buffer_end()``
    at the end of each socket read — the messages of one read share their ``recv_ns``
    (the listener reads the clock once per read), so a change of ``recv_ns`` (or a
    connection record, or the end) is a read boundary: the engine sees the same updates
    as it did live.
    Returns counts: messages, connects, first_ns, last_ns.
    """
    on_message = session.on_message
    buffer_end = getattr(session, "on_buffer_end", None)
    if not callable(buffer_end):
        buffer_end = None
    elif batch_per_read and hasattr(session, "defer_until_buffer_end"):
        session.defer_until_buffer_end = True
    read_ns: int | None = None  # recv_ns of the read whose messages the session may hold
    connects = 0
    messages = 0
    first_ns: int | None = None
    last_ns: int | None = None
    prog = _Progress(progress, reader.size, os.path.basename(reader.path))
    t0 = time.perf_counter()
    every = 256
    try:
        for kind, ns, payload in reader:
            if speed is not None and kind == MESSAGE:
                if first_ns is None:
                    first_ns = ns
                delay = (ns - first_ns) / 1e9 / speed - (time.perf_counter() - t0)
                if delay > 0:
                    time.sleep(delay)
            if buffer_end is not None and read_ns is not None and (kind != MESSAGE or ns != read_ns):
                read_ns = None
                buffer_end()
            if kind == MESSAGE:
                messages += 1
                if stats is not None:  # the transport's listener counts these live
                    stats.messages += 1
                    stats.bytes += len(payload)
                on_message(payload, ns)
                read_ns = ns
                if progress and messages % every == 0:
                    prog.update(reader.bytes_read)
            elif kind == CONNECTED:
                connects += 1
                if connects > 1 and stats is not None:
                    stats.reconnects += 1
                if on_event is not None:
                    on_event("connected", {"connects": connects, "url": url, "recv_ns": ns})
                session.on_connected(_no_send)
            elif kind == DISCONNECTED:
                reason = payload.decode("utf-8", "replace")
                if on_event is not None:
                    on_event("disconnected", {"reason": reason, "url": url, "recv_ns": ns})
                session.on_disconnected(reason)
            if first_ns is None:
                first_ns = ns
            last_ns = ns
        if buffer_end is not None and read_ns is not None:
            buffer_end()
    finally:
        prog.close()
    flush = getattr(session, "flush_stats", None)
    if flush is not None:
        flush(last_ns)
    return {"messages": messages, "connects": connects, "first_ns": first_ns, "last_ns": last_ns}


def engine_settings(header_meta: dict[str, Any], windows: Sequence[int] | None,
                     depth: int | None, capacity: int | None,
                     max_future_skew: float | None) -> dict[str, Any]:
    """Engine settings for a replay: explicit options, else the recorded ones, else defaults."""
    rec = header_meta.get("engine") or {}
    ws = tuple(int(w) for w in (windows or rec.get("windows") or (60, 300, 900)))
    rec_depth = rec.get("depth")
    if depth is None and rec_depth is not None:
        depth = max(int(rec_depth), max(ws))
    return {
        "windows": ws,
        "depth": depth,
        "capacity": int(capacity or rec.get("capacity") or 16384),
        "max_future_skew": float(max_future_skew if max_future_skew is not None
                                 else rec.get("max_future_skew", 5.0)),
    }


def recorded_topics(header_meta: dict[str, Any], feed_name: str) -> tuple[str, ...] | None:
    topics = tuple(header_meta.get("topics") or ())
    if topics:
        return topics
    return _PLACEHOLDER_TOPICS.get(feed_name)  # None: the Feed's default for that feed


def replay(path: str | os.PathLike[str], *, feed: Any = None,
           windows: Sequence[int] | None = None, depth: int | None = None,
           capacity: int | None = None, max_future_skew: float | None = None,
           speed: float | str | None = None, progress: bool = False,
           on_update: Callable[[np.ndarray, int], None] | None = None,
           on_event: Callable[[str, dict], None] | None = None,
           session_options: dict[str, Any] | None = None) -> ReplayResult:
    """Replay the recording at ``path`` and return the resulting state.

    Without ``feed``, builds a :class:`fastfeed.Feed` of the recorded feed (not
    connected) with the recorded engine settings (``windows``, ``depth``, ``capacity``,
    ``max_future_skew`` override them), and drives its session. With ``feed``, drives
    that (unstarted) Feed instead: its ``on_update`` callback and ``on_event`` see the
    replay as they would see the live feed. ``speed``: ``None``/``"max"`` as fast as
    possible, else a factor of the recorded pace (``1.0`` real time).
    """
    from ..feed import Feed

    spd = parse_speed(speed)
    reader = Reader(path)
    try:
        h = reader.header
        if feed is None:
            cfg = engine_settings(h.meta, windows, depth, capacity, max_future_skew)
            feed = Feed(feed=h.feed, url=h.url or "replay:", api_key=None,
                        subscribe=recorded_topics(h.meta, h.feed), windows=cfg["windows"],
                        depth=cfg["depth"], capacity=cfg["capacity"],
                        max_future_skew=cfg["max_future_skew"], on_update=on_update,
                        on_event=on_event, session_options=session_options)
        elif feed.feed_name != h.feed:
            raise ValueError(f"{reader.path} is a {h.feed} recording, the feed is {feed.feed_name}")
        bars0 = feed.stats.bars
        t0 = time.perf_counter()
        counts = replay_session(reader, feed.session, stats=feed.stats, on_event=feed._emit,
                                speed=spd, progress=progress, url=h.url)
        elapsed = time.perf_counter() - t0
        # processing latency and lag measure the live process's wall clock: not in a recording
        feed._flush_stats()
        feed.stats.processing_latency.reset()
        feed.stats.lag.reset()
        return ReplayResult(h.feed, feed, feed.engine, feed.universe, feed.stats,
                            reader.report(), counts["messages"], counts["connects"],
                            counts["first_ns"], counts["last_ns"], elapsed,
                            feed.stats.bars - bars0)
    finally:
        reader.close()
