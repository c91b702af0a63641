"""``Feed``: the public entry point — one live feed, its engine and its windows.

Two ways to run it:

* asyncio: ``async with Feed(...) as feed: ...`` (or ``await feed.wait_closed()``);
  everything (network, decoding, engine updates, ``on_update``) runs on the caller's
  event loop.
* background thread: ``feed.start()`` / ``feed.stop()`` for code that is not asyncio;
  the feed runs its own event loop on a daemon thread.  Use ``copy=True`` reads (or
  ``snapshot()``): they run on the feed's thread between messages, so they are
  consistent.

Zero-copy reads (``feed.window(60)``) return views into the engine's arrays. They are
valid until the next update: read them inside ``on_update`` (asyncio or thread mode)
or on the event loop between awaits; elsewhere ask for a copy.

The completed second (``on_second``, ``next_second``, ``wait_second``) and slow
strategies (``strategy_thread``, ``lag_warn_s``): ``fastfeed.strategy``, docs/SECONDS.md.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .engine import Engine, Stats, Universe, WindowFrame, sync_engine_counters
from .engine.seconds import SecondTracker
from .errors import ConfigurationError
from .feeds import make_session, registry, topic_list
from .snapshot import snapshot_document
from .strategy.callbacks import Callbacks, Second, check_options
from .strategy.lag import LagMonitor, callback_name
from .transport.connection import Connection
from .transport.masking import mask_url

__all__ = ["Feed", "WindowFrame", "ConfigurationError"]

UpdateCallback = Callable[[np.ndarray, int], None]
SecondCallback = Callable[[int, dict], None]
EventCallback = Callable[[str, dict], None]


class Feed:
    """A live feed rolled into OHLCV/VWAP windows.

    :param feed: ``"vantafin"`` (stocks, ``LS.*``), ``"sfox"`` (crypto ticker) or
        ``"massive"`` (Polygon/Massive per-second aggregates, ``A.*``).
    :param url: WebSocket URL; default the vendor's real URL. A ``nats://`` (or ``tls://``)
        URL reads the stream of a ``fastfeed relay`` instead (warm start from ``now - depth``,
        then live; credentials from the URL or ``FASTFEED_NATS_*``).
    :param api_key: default from ``VANTAFIN_API_KEY`` / ``SFOX_API_KEY`` /
        ``MASSIVE_API_KEY``.  Never printed, logged or stored.
    :param subscribe: topics, a list or one comma-separated string (``"LS.AAPL,LS.MSFT"``);
        default ``LS.*`` (Vantafin), ``A.*`` (Massive); required for sFOX.
    :param windows: rolling windows in seconds.
    :param depth: seconds of bars kept (default: the largest window).
    :param capacity: most instruments the universe holds (rows preallocated).
    :param on_update: ``on_update(rows, T)`` once per engine update that changed rows (one per socket read):
        ``rows`` is an int64 array of row ids (a view valid during the call), ``T`` the clock.
    :param on_second: ``on_second(T, info)`` once per second ``T`` that received bars, in
        order, when its cross-section is judged complete: ``info["reason"]`` is
        ``"complete"`` (every expected instrument reported), ``"quiet"`` (nothing for
        ``second_quiet_ms`` after ``T``'s last bar) or ``"next"`` (a later second began);
        also ``reported``, ``expected``, ``latency_us``, ``since_last_bar_us``,
        ``late_bars``, ``clock``.  Late bars of an announced second never call it again.
    :param second_quiet_ms: the ``quiet`` silence, ms (default 20).
    :param expect_seconds: an instrument is expected in ``T`` when it reported in one of
        the ``expect_seconds`` seconds before ``T`` (default 3).
    :param strategy_thread: run ``on_update``/``on_second`` on a thread of their own with
        latest-state semantics: the feed never waits for them; they get consistent copies
        (``feed.window(W)`` on that thread returns them); seconds they were too slow for
        are counted in ``stats.seconds_skipped``.
    :param lag_warn_s: warn (rate-limited log line, ``on_event("lag", ...)``) when the
        feed falls this many seconds behind its own clock, naming the callback that causes it.
    :param clock_rate: the feed's seconds per wall second, for the lag: 1 for a live feed,
        ``k`` for a simulator running at ``--speed k``.
    :param on_event: ``on_event(kind, info)`` for connection events, gaps, sequence gaps.
    :param connection_options: more keyword arguments for the transport's ``Connection``
        (e.g. ``backoff_initial``, ``backoff_max``, ``max_message_size``), or for a NATS URL
        for ``fastfeed.relay.NatsSource`` (e.g. ``warm_start``, ``batch``).
    :param record: path of a recording file: every raw message received is written to it
        (``fastfeed replay`` reads it back); finished when the feed closes, and its
        summary is in ``feed.recording``.  A write failure stops the recording, not the feed.
    :param share: name of a shared-memory segment (``/dev/shm/<name>``, mode 0600) this
        feed publishes its windows, symbols, clock and counters to after every update;
        other processes read it with ``fastfeed.attach(name)``.  Removed when the feed closes.
        Raises ``SegmentBusy`` if a live writer already owns the name; ``feed.segment``
        is the writer.
    :param journal: a directory: every raw message is journaled there (recording files
        rotated hourly, kept ``journal_keep`` seconds), and the constructor first replays
        the journal's last ``depth`` seconds of receive time through the session and
        engine (a warm start: ``feed.warm_start`` says what was replayed; ``on_update``
        and ``on_event`` are not called for replayed data); the outage is reported as a
        gap.  ``feed.journal`` is the journal's writer (``bytes_written``, ``error``).
    :param journal_keep: seconds of journal kept (default 2 days).
    """

    def __init__(
        self,
        feed: str = "vantafin",
        url: str | None = None,
        api_key: str | None = None,
        subscribe: Iterable[str] | None = None,
        windows: Sequence[int] = (60, 300, 900),
        *,
        depth: int | None = None,
        capacity: int = 16384,
        max_future_skew: float = 5.0,
        on_update: UpdateCallback | None = None,
        on_second: SecondCallback | None = None,
        second_quiet_ms: float = 20.0,
        expect_seconds: int = 3,
        strategy_thread: bool = False,
        lag_warn_s: float = 1.0,
        clock_rate: float = 1.0,
        on_event: EventCallback | None = None,
        ping_interval: float = 5.0,
        idle_timeout: float = 15.0,
        ssl_context: Any = None,
        session_options: dict[str, Any] | None = None,
        connection_options: dict[str, Any] | None = None,
        record: str | os.PathLike[str] | None = None,
        share: str | None = None,
        journal: str | os.PathLike[str] | None = None,
        journal_keep: float = 2 * 86400.0,
    ) -> None:
        info = registry.get(feed)
        self.feed_name = feed
        if api_key is None:
            api_key = os.environ.get(info.api_key_env) or None
        if url is None:
            if not api_key:
                raise ConfigurationError(
                    f"no API key for {feed}: set {info.api_key_env} or pass api_key=..., "
                    "or pass url= of a simulator (`fastfeed simulate`)"
                )
            url = info.url
        topics = tuple(topic_list(subscribe)) if subscribe is not None else info.default_topics
        if not topics:
            raise ConfigurationError(f"{feed} needs topics to subscribe, e.g. {info.example_topic}")
        self._url = url
        self.topics = topics
        self.stats = Stats()
        self.universe = Universe(capacity)
        self.engine = Engine(capacity, tuple(windows), depth, max_future_skew)
        self._user_on_event = on_event
        check_options(second_quiet_ms, expect_seconds, lag_warn_s, clock_rate)
        self._callback_options = dict(on_update=on_update, on_second=on_second, second_quiet_ms=second_quiet_ms,
                                      expect_seconds=expect_seconds, strategy_thread=strategy_thread,
                                      spread_s=info.bar_spread_s)
        self._callbacks: Callbacks | None = None
        self._user_on_update = on_update
        self._reconnecting = False
        self._warming = False  # replaying the journal: no user callbacks
        self.segment: Any = None  # the fastfeed.share.SegmentWriter, with share=
        self.session = make_session(
            feed,
            self.engine,
            self.universe,
            self.stats,
            topics=topics,
            api_key=api_key,
            # the user's callback is the one Python call per engine update (a journal's
            # warm start needs one in between, to keep replayed data from the user)
            on_batch=self._on_batch if journal is not None else on_update,
            on_event=self._emit,
            on_gap=self._on_gap,
            **(session_options or {}),
        )
        # the lag and on_update's duration are measured in C after every engine update
        self._lag = LagMonitor(self.stats, lag_warn_s, emit=self._emit, clock_rate=clock_rate,
                               spread_s=info.bar_spread_s)
        self._lag.attach(self.session.filler, callback_name("on_update", on_update))
        self.warm_start: Any = None  # fastfeed.share.journal.WarmStart, with journal=
        self.journal: Any = None  # the journal's writer, with journal=
        self._close_journal: Callable[[], dict[str, Any]] | None = None
        if journal is not None:
            self._warm_start(journal)
        if share is not None:  # after the warm start: publishes everything once
            from .share.writer import SegmentWriter

            self.segment = SegmentWriter(share, self.engine, self.universe, self.stats, feed=feed,
                                        before_stats=self._flush_stats)
        if journal is not None:  # last: a feed that failed to start writes no journal file
            from .share.journal import journal_session

            self.session, self._close_journal = journal_session(self.session, journal, feed, url, keep=journal_keep)
            self.journal = self.session.writer
        if on_second is not None or (strategy_thread and on_update is not None) or self.segment is not None:
            self._ensure_callbacks()
        self._stop_requested: asyncio.Event | None = None  # thread mode: set by stop()
        self._close_recording: Callable[[], dict[str, Any]] | None = None
        self.recording: dict[str, Any] | None = None  # the recorder's summary, once closed
        if record is not None:
            from .recording.session import attach_recorder

            self._close_recording = attach_recorder(self, record)
        self._conn_kwargs = dict(ping_interval=ping_interval, idle_timeout=idle_timeout, ssl_context=ssl_context)
        self._conn_kwargs.update(connection_options or {})
        self._conn: Connection | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.connected_once = False  # True once a connection was established

    # ------------------------------------------------------------------ identity
    @property
    def url(self) -> str:
        """The URL with any ``apiKey`` value masked."""
        return mask_url(self._url)

    def __repr__(self) -> str:
        return f"Feed(feed={self.feed_name!r}, url={self.url!r}, topics={list(self.topics)!r}, windows={self.engine.windows})"

    @property
    def windows(self) -> tuple[int, ...]:
        return tuple(self.engine.windows)

    @property
    def T(self) -> int | None:
        """The clock: the largest bar second seen (epoch s), ``None`` before any bar."""
        t = int(self.engine.T)
        return t if t >= 0 else None

    def _warm_start(self, directory: str | os.PathLike[str]) -> None:
        """Replay the journal's last ``depth`` seconds (no user callbacks); the outage
        until the first live bar is then reported as a gap."""
        from .share.journal import warm_start

        self._warming = True
        try:
            self.warm_start = warm_start(directory, self.session, feed=self.feed_name, depth=self.engine.depth)
        finally:
            self._warming = False
        if self.warm_start.T is not None:
            self.session.expect_gap(self.warm_start.T)

    def _on_batch(self, rows: np.ndarray, T: int) -> None:
        """An engine update with a journal: the user's callback, except for replayed data
        (a segment publishes through the callbacks' runner, which ``share=`` always installs)."""
        if self._user_on_update is not None and not self._warming:
            self._user_on_update(rows, T)

    # ------------------------------------------------------------------ events
    def _emit(self, kind: str, info: dict) -> None:
        if kind == "disconnected":
            self._reconnecting = True
        elif kind == "connected":
            self.connected_once = True
            if self._reconnecting:
                # every bar from before the drop is applied by now: T is the last second before
                self._reconnecting = False
                t = int(self.engine.T)
                if t >= 0:
                    self.session.expect_gap(t)
        if self._user_on_event is not None and not self._warming:
            try:
                self._user_on_event(kind, info)
            except Exception:  # a user's callback must not break the feed
                import logging

                logging.getLogger("fastfeed").exception("on_event callback failed")

    def _on_gap(self, before: int, T: int) -> None:
        """The first bars after a reconnect skipped whole seconds: report the gap."""
        self.stats.record_gap(before, int(T))
        self._emit("gap", {"last_before": before, "first_after": int(T)})

    # ------------------------------------------------------------------ asyncio mode
    async def __aenter__(self) -> "Feed":
        await self.start_async()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def start_async(self) -> None:
        """Start connecting on the running loop (returns at once; see ``wait_connected``)."""
        if self._task is not None:
            raise RuntimeError("feed already started")
        self._loop = asyncio.get_running_loop()
        self._conn = self._open_source()
        self._task = asyncio.ensure_future(self._conn.run())

    def _open_source(self) -> Any:
        """Where messages come from, chosen in this one place: the vendor's WebSocket
        (``Connection``), or for a ``nats://``/``tls://`` URL a relay's stream
        (``fastfeed.relay.NatsSource``, same surface)."""
        from .relay.config import is_nats_url

        if is_nats_url(self._url):
            from .relay.source import source_for_feed

            kw = {k: v for k, v in self._conn_kwargs.items() if k != "ping_interval"}
            return source_for_feed(self, self._url, **kw)
        return Connection(self._url, self.session, stats=self.stats, on_event=self._emit, **self._conn_kwargs)

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected and authenticated (or data flows).

        Raises the feed's fatal error (e.g. ``AuthError``) if it ends first, and
        ``TimeoutError`` after ``timeout`` seconds.
        """
        if self._task is None:
            raise RuntimeError("feed not started")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._ready():
            if self._task.done():
                self._task.result()  # raises the fatal error (e.g. AuthError)
                raise ConnectionError("feed closed before connecting")
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"no connection to {self.url} within {timeout} s: {self.last_error or 'no answer'}")
            await asyncio.sleep(0.01)

    def _ready(self) -> bool:
        return bool(self.session.state.get("authenticated")) or self.stats.bars > 0

    async def wait_closed(self) -> None:
        """Wait until the feed ends: ``close()``/``stop()``, or a fatal error (raised here)."""
        if self._task is None:
            raise RuntimeError("feed not started")
        await asyncio.shield(self._task)

    async def close(self) -> None:
        """Disconnect and stop reconnecting.  Windows stay readable."""
        if self._conn is not None:
            await self._conn.stop()
        if self._task is not None:
            await asyncio.wait([self._task])  # its error, if any, stays in ``self.error``
        if self._callbacks is not None:
            self._callbacks.close()
        if self._close_recording is not None:
            close, self._close_recording = self._close_recording, None
            self.recording = close()
        if self._close_journal is not None:
            close, self._close_journal = self._close_journal, None
            close()
        if self.segment is not None:
            self.segment.close()

    @property
    def last_error(self) -> str | None:
        """The last connection problem (key masked), e.g. why connecting fails."""
        return self._conn.last_error if self._conn is not None else None

    @property
    def error(self) -> BaseException | None:
        """The error that ended the feed, if any (e.g. ``AuthError``)."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            return self._task.exception()
        return None

    @property
    def market(self) -> str | None:
        """The last market status the vendor sent (``"open"``, ``"extended-hours"``,
        ``"closed"``), ``None`` when never told."""
        return self.session.state.get("market")

    # ------------------------------------------------------------------ thread mode
    def start(self, wait_connected: float | None = 10.0) -> "Feed":
        """Run the feed on a background thread with its own event loop.

        Waits up to ``wait_connected`` seconds for the first connection (``None``: do
        not wait) and raises its error (e.g. ``AuthError``) or ``TimeoutError``.
        """
        if self._thread is not None:
            raise RuntimeError("feed already started")
        started: concurrent.futures.Future = concurrent.futures.Future()

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._thread_main(started, wait_connected))
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name=f"fastfeed-{self.feed_name}", daemon=True)
        self._thread.start()
        try:
            started.result()
        except BaseException:
            self._thread.join()
            self._thread = None
            raise
        return self

    async def _thread_main(self, started: concurrent.futures.Future, wait: float | None) -> None:
        self._stop_requested = asyncio.Event()
        await self.start_async()
        try:
            if wait is not None:
                await self.wait_connected(wait)
        except BaseException as e:
            await self.close()
            started.set_exception(e)
            return
        started.set_result(None)
        waiter = asyncio.ensure_future(self._stop_requested.wait())
        assert self._task is not None
        await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        await self.close()  # the feed's error, if any, stays in ``self.error``

    def stop(self, timeout: float = 10.0) -> None:
        """Stop a feed started with ``start()`` and join its thread."""
        if self._thread is None or self._loop is None:
            return
        stop = self._stop_requested
        if stop is not None:
            try:
                self._loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop already ended (the feed failed)
                pass
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> "Feed":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _on_feed_thread(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run ``fn`` between messages on the feed's loop (consistent), from any thread."""
        loop = self._loop
        if loop is None or not loop.is_running() or self._thread is None or threading.current_thread() is self._thread:
            return fn()
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def call() -> None:
            try:
                fut.set_result(fn())
            except BaseException as e:
                fut.set_exception(e)

        loop.call_soon_threadsafe(call)
        return fut.result(timeout)

    # ------------------------------------------------------------------ reads
    def _flush_stats(self) -> None:
        """Move the session's buffered latencies into ``stats`` (feed thread only)."""
        self.session.flush_stats()
        self._lag.flush_into(self.stats)
        if self._callbacks is not None:
            self._callbacks.flush_stats()

    def window(self, seconds: int, copy: bool = False) -> WindowFrame:
        """One window's columns for the known instruments.

        ``copy=False``: zero-copy views, valid until the next update (read them on the
        feed's loop, e.g. inside ``on_update``).  ``copy=True``: a consistent copy, safe
        from any thread.
        """
        if seconds not in self.engine.windows:
            raise KeyError(f"no {seconds}s window: this feed keeps {self.windows}")
        if self._callbacks is not None:
            frames = self._callbacks.frames_here()
            if frames is not None:  # inside a strategy-thread callback: its consistent copies
                return frames[seconds]

        def read() -> WindowFrame:
            v = self.engine.window_copy(seconds) if copy else self.engine.window(seconds)
            n = len(self.universe)
            symbols = list(self.universe.symbols) if copy else self.universe.symbols
            return WindowFrame(
                seconds, self.T, symbols[:n],
                v.open[:n], v.high[:n], v.low[:n], v.close[:n], v.volume[:n], v.vwap[:n], v.count[:n],
            )

        return self._on_feed_thread(read) if copy else read()

    # ------------------------------------------------------------------ completed seconds
    def _ensure_callbacks(self) -> Callbacks:
        """The callbacks' runner, created on first need (on the feed's thread): from then on
        it is the session's ``on_batch`` and times the user's callbacks itself."""
        if self._callbacks is None:
            cb = Callbacks(self, self._lag, publisher=self.segment, **self._callback_options)
            self._callbacks = cb
            self._lag.time_in_c(False)
            self.session.set_on_batch(cb.on_batch)
            cb.start()
        return self._callbacks

    @property
    def second_tracker(self) -> SecondTracker | None:
        """The completed-second rule's state once in use: ``open_second``, ``late_of(T)``
        (late bars per recent second), ``completed`` (by reason).  Read it on the feed's thread."""
        return self._callbacks.tracker if self._callbacks is not None else None

    def track_seconds(self) -> None:
        """Apply the completed-second rule without a callback (its stats only; ``watch``)."""
        self._on_feed_thread(lambda: self._ensure_callbacks().track_seconds())

    async def next_second(self, timeout: float | None = None) -> Second:
        """asyncio: wait for the next announced second; returns ``Second(T, info, frames)``
        (``frames``: ``{W: WindowFrame}``, copies taken at the announcement).  When the
        caller was slower than the feed, the newest second comes back and
        ``info["skipped"]`` says how many it missed (``stats.seconds_skipped``).  Seconds
        are announced from the first call on.  Raises ``TimeoutError``.
        """
        return await self._ensure_callbacks().next_second(timeout)

    def wait_second(self, timeout: float | None = None) -> Second:
        """Thread mode (``feed.start()``): block until the next announced second; returns
        ``Second(T, info, frames)`` like :meth:`next_second`.  Raises ``TimeoutError``."""
        if self._thread is not None and threading.current_thread() is self._thread:
            raise RuntimeError("wait_second() would block the feed's own thread: use next_second()")
        cb = self._on_feed_thread(self._ensure_callbacks)
        self._on_feed_thread(cb.start_consuming)
        return cb.wait_second(timeout)

    def snapshot(self, windows: Iterable[int] | None = None) -> dict[str, Any]:
        """The ``fastfeed snapshot`` document (a consistent copy, safe from any thread)."""
        def read() -> dict[str, Any]:
            self._flush_stats()
            return snapshot_document(self.feed_name, self.engine, self.universe, self.stats, windows,
                                     market=self.market)

        return self._on_feed_thread(read)

    def history(self, symbol: str, seconds: int | None = None) -> dict[str, np.ndarray]:
        """Bars held for ``symbol`` (ascending second; the last ``seconds`` seconds if given)."""
        row = self.universe.get(symbol)
        if row < 0:
            raise KeyError(f"{symbol!r} has sent no bar on this feed")
        return self._on_feed_thread(lambda: self.engine.history(row, seconds))

    def stats_dict(self) -> dict[str, Any]:
        """``stats`` as in the snapshot document (consistent, safe from any thread)."""

        def read() -> dict[str, Any]:
            self._flush_stats()
            sync_engine_counters(self.stats, self.engine)
            return self.stats.as_dict()

        return self._on_feed_thread(read)

    # ------------------------------------------------------------------ topics
    def subscribe(self, topics: str | Iterable[str]) -> None:
        """Add topics, a list or one comma-separated string (sent now if connected, and on
        every reconnect)."""
        topics = topic_list(topics)
        self._on_feed_thread(lambda: self.session.subscribe(topics))
        self.topics = tuple(dict.fromkeys((*self.topics, *topics)))

    def unsubscribe(self, topics: str | Iterable[str]) -> None:
        """Drop topics, a list or one comma-separated string (their instruments keep their
        rows and history)."""
        topics = topic_list(topics)
        self._on_feed_thread(lambda: self.session.unsubscribe(topics))
        self.topics = tuple(t for t in self.topics if t not in topics)
