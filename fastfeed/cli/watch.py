"""``fastfeed watch``: a live terminal view of one window across the universe.

``build_view`` is a pure function of a window's columns and the stats document, so it
renders the same headlessly (tests) as in a terminal.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import textwrap
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

from ..engine.window import WindowFrame
from ..errors import AuthError
from ..feeds.registry import FEEDS
from .common import CliError, add_connection_args, add_command, make_feed, parse_windows_arg, report_recording


def _price(x: float) -> str:
    """A price: 2 decimals from 1 up; below 1, 4 significant digits without trailing
    zeros beyond the second decimal (0.93, 0.0525, 0.00001234)."""
    if not np.isfinite(x):
        return "—"
    a = abs(x)
    if a >= 1 or a == 0:
        return f"{x:,.2f}"
    places = max(2, 3 - math.floor(math.log10(a)))
    text = f"{x:.{places}f}".rstrip("0")
    return text if len(text.split(".")[1]) >= 2 else f"{x:.2f}"


def _clock(as_of: int | None) -> str:
    """Epoch second ``as_of`` as a UTC clock time (``14:03:21 UTC``); ``—`` when None."""
    if as_of is None:
        return "—"
    return datetime.fromtimestamp(int(as_of), timezone.utc).strftime("%H:%M:%S UTC")


def _volume(x: float) -> str:
    if x >= 1e9:
        return f"{x / 1e9:.2f}B"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.4g}"


#: columns of the tables; movers show fewer so two fit side by side in 80 columns
_MOVER_COLUMNS = ("symbol", "return", "close", "volume")
_LEADER_COLUMNS = ("symbol", "return", "close", "vwap", "volume", "bars")


def _table(title: str, frame: WindowFrame, rows: np.ndarray, ret: np.ndarray,
           columns: Sequence[str] = _LEADER_COLUMNS) -> Table:
    t = Table(title=title, title_justify="left", expand=True, pad_edge=False)
    for name in columns:
        t.add_column(name, justify="left" if name == "symbol" else "right", no_wrap=True)
    for r in rows.tolist():
        rv = ret[r]
        style = "green" if rv > 0 else ("red" if rv < 0 else "")
        cells = {
            "symbol": frame.symbols[r],
            "return": Text(f"{rv * 100:+.2f}%" if np.isfinite(rv) else "—", style=style),
            "close": _price(frame.close[r]),
            "vwap": _price(frame.vwap[r]),
            "volume": _volume(frame.volume[r]),
            "bars": str(int(frame.count[r])),
        }
        t.add_row(*(cells[c] for c in columns))
    return t


def fit_rows(top: int, height: int) -> int:
    """Rows per table so that the whole view fits ``height`` terminal lines (at least 3)."""
    # 2 x (title, borders, header: 5 lines) + header + 2-line status + the cursor line
    return max(3, min(top, (height - 14) // 2))


def _top(values: np.ndarray, mask: np.ndarray, k: int, largest: bool) -> np.ndarray:
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return idx
    v = values[idx]
    order = np.argsort(-v if largest else v, kind="stable")[:k]
    return idx[order]


class FitLine:
    """One line of ``parts`` joined by `` · ``: the parts that do not fit the width are
    left out, lowest priority first (``priority``: lower is kept longer); if the parts
    kept still do not fit, the line is cut with an ellipsis. Never wraps."""

    def __init__(self, parts: Sequence[tuple[str, int]], style: str = "") -> None:
        self.parts = list(parts)
        self.style = style

    def text(self, width: int) -> Text:
        kept = list(self.parts)
        while len(kept) > 1 and len(_SEP.join(p for p, _ in kept)) > width:
            kept.remove(max(kept, key=lambda pp: pp[1]))
        t = Text(_SEP.join(p for p, _ in kept), style=self.style, no_wrap=True, overflow="ellipsis")
        t.truncate(width, overflow="ellipsis")
        return t

    @property
    def plain(self) -> str:
        return _SEP.join(p for p, _ in self.parts)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.text(options.max_width)


_SEP = " · "


class ConnectionState:
    """What the connection is doing, from the feed's events: ``connecting``,
    ``connected``, ``retrying in N s``, ``disconnected``, ``auth refused``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.state = "connecting"
        self.retry_at: float | None = None

    def on_event(self, kind: str, info: dict[str, Any]) -> None:
        if kind == "connected":
            self.state, self.retry_at = "connected", None
        elif self.state == "auth refused":
            pass  # final: the disconnect that follows does not hide it
        elif kind == "disconnected":
            self.state = "disconnected"
        elif kind == "reconnecting":
            self.state = "retrying"
            self.retry_at = self._clock() + float(info.get("delay", 0.0))
        elif kind == "auth_failed":
            self.state, self.retry_at = "auth refused", None

    def note_fatal(self, error: BaseException | None) -> None:
        """The session's fatal error, if any: an ``AuthError`` is ``auth refused``."""
        if isinstance(error, AuthError):
            self.state, self.retry_at = "auth refused", None

    def describe(self) -> str:
        if self.state == "retrying" and self.retry_at is not None:
            return f"retrying in {max(0.0, self.retry_at - self._clock()):.0f} s"
        return self.state


class BarRate:
    """Bars per second over whole seconds: bars arrive as one burst per second, so a
    rate over the refresh interval would flip between bursts and silence. ``add(t,
    bars)`` takes a sample (monotonic seconds, total bars); ``rate`` compares it with
    the sample whose age is closest to a whole number of seconds (1 to 3), None before
    one second has passed."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, t: float, bars: int) -> float | None:
        self._samples.append((t, bars))
        while self._samples and t - self._samples[0][0] > 3.5:
            self._samples.popleft()
        best = None
        for t0, b0 in self._samples:
            age = t - t0
            if age < 0.95:
                continue
            off = abs(age - round(age))
            if best is None or off < best[0] - 1e-6:
                best = (off, age, b0)
        if best is None:
            return None
        return (bars - best[2]) / best[1]


def status_line(stats: dict[str, Any], bars_per_s: float | None,
                state: dict[str, Any] | None = None, connection: str | None = None) -> FitLine:
    """Feed health in one line: connection, market, throughput, errors, latency,
    reconnects, gaps (the less important parts give way on a narrow terminal)."""
    proc = stats.get("processing_latency_us", {}) or {}
    lat = stats.get("feed_latency_ms", {}) or {}
    errors = stats.get("decode_errors", 0) + stats.get("unknown_messages", 0) + stats.get("protocol_errors", 0)
    parts = []
    if connection:
        parts.append((connection, 0))
    # the market status the vendor sent (open, closed, extended-hours; None: never told)
    market = (state or {}).get("market")
    if market:
        parts.append((f"market {market}", 0))
    parts += [
        (f"{bars_per_s:,.0f} bars/s" if bars_per_s is not None else "— bars/s", 1),
        (f"bars {stats.get('bars', 0):,}", 3),
        (f"errors {errors}", 2),
        (f"p99 processing {proc.get('p99'):.0f} µs" if proc.get("p99") is not None else "p99 processing —", 4),
        (f"p99 feed latency {lat.get('p99'):.1f} ms" if lat.get("p99") is not None else "p99 feed latency —", 4),
        (f"reconnects {stats.get('reconnects', 0)}", 5),
        (f"gaps {stats.get('gaps', 0)}", 5),
        (f"stale {stats.get('stale_dropped', 0)}", 6),
    ]
    done = stats.get("seconds_completed") or {}
    if sum(done.values()):
        # the completed-second rule: latency from a second's first bar, and why seconds closed
        p99 = (stats.get("second_latency_us") or {}).get("p99")
        mix = " ".join(f"{k} {100 * v / sum(done.values()):.0f}%" for k, v in done.items())
        parts.append((f"second p99 {p99 / 1e3:.0f} ms ({mix})" if p99 is not None else f"second ({mix})", 3))
    bad = errors or connection in ("auth refused", "disconnected") or (connection or "").startswith("retrying")
    return FitLine(parts, style="bold yellow" if bad else "bold")


def rank_rows(frame: WindowFrame, top: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Window returns, the active mask and the row ids of gainers, losers and volume leaders."""
    live = (frame.count > 0) & np.isfinite(frame.open) & (frame.open > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.where(live, frame.close / frame.open - 1.0, np.nan)
    ranks = {
        "gainers": _top(ret, live, top, largest=True),
        "losers": _top(ret, live, top, largest=False),
        "leaders": _top(frame.volume, frame.count > 0, top, largest=True),
    }
    return ret, live, ranks


def build_view(frame: WindowFrame, stats: dict[str, Any], top: int, *, title: str,
               bars_per_s: float | None = None, state: dict[str, Any] | None = None,
               connection: str | None = None, url: str | None = None) -> Group:
    """Header, top movers (window return close/open-1), volume leaders and a status line."""
    ret, live, ranks = rank_rows(frame, top)
    gainers, losers, leaders = ranks["gainers"], ranks["losers"], ranks["leaders"]
    header_parts = [(title, 2), (f"window {frame.window}s", 0), (f"as of {_clock(frame.as_of)}", 1),
                    (f"{int(live.sum()):,} of {len(frame.symbols):,} instruments active", 1)]
    if url:
        header_parts.append((url, 3))
    header = FitLine(header_parts, style="bold cyan")
    grid = Table.grid(expand=True)
    grid.add_column(ratio=1)
    grid.add_column(ratio=1)
    grid.add_row(
        _table("Top gainers", frame, gainers, ret, _MOVER_COLUMNS),
        _table("Top losers", frame, losers, ret, _MOVER_COLUMNS),
    )
    return Group(header, grid, _table("Volume leaders", frame, leaders, ret),
                 status_line(stats, bars_per_s, state, connection))


def _has_key(feed: str, api_key: str | None) -> bool:
    return bool(api_key or os.environ.get(FEEDS[feed].api_key_env, ""))


def run_watch(args: argparse.Namespace, windows: Sequence[int], *, make_feed: Callable[..., Any],
              after: Callable[[Any], None]) -> int:
    """Run the live view until Ctrl-C or ``--duration``; returns the exit code."""
    console = Console(stderr=False)
    sim = None
    if args.url is None and not _has_key(args.feed, args.api_key):
        from ..simulator.market import DEFAULT_PAIRS
        from ..simulator.testing import SimProcess

        console.print(f"[dim]no --url and no API key: starting the built-in simulator ({args.tickers:,} tickers)…[/dim]")
        sim = SimProcess(["--tickers", str(args.tickers)]).start()
        args.url = sim.url(args.feed, api_key=None)
        args.api_key = sim.api_key
        if args.feed == "sfox" and not args.subscribe:
            args.subscribe = [f"ticker.sfox.{p}" for p in DEFAULT_PAIRS]
    try:
        connection = ConnectionState()
        feed = make_feed(args, windows, on_event=connection.on_event)
        try:
            asyncio.run(_watch_loop(feed, args, console, connection))
        except KeyboardInterrupt:
            pass
        after(feed)
    finally:
        if sim is not None:
            sim.stop()
    return 0


@contextlib.contextmanager
def logs_through(console: Console) -> Iterator[None]:
    """While the live view runs, log records go through ``console`` (rich prints them
    above the view) instead of the root logger's stream handlers, which would print
    over it."""
    root = logging.getLogger()
    saved = [h for h in root.handlers if isinstance(h, logging.StreamHandler)]
    handler = RichHandler(console=console, show_path=False, markup=False, rich_tracebacks=False)
    handler.setLevel(min((h.level for h in saved), default=logging.WARNING))
    for h in saved:
        root.removeHandler(h)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        for h in saved:
            root.addHandler(h)


async def _watch_loop(feed: Any, args: argparse.Namespace, console: Console,
                      connection: ConnectionState | None = None) -> None:
    await feed.start_async()
    feed.track_seconds()  # the status line shows the completed-second latency and reasons
    title = f"fastfeed · {feed.feed_name}"
    started = time.monotonic()
    rate = BarRate()
    rate.add(started, 0)
    try:
        with logs_through(console), Live(console=console, auto_refresh=False, transient=False) as live:
            while True:
                await asyncio.sleep(args.refresh)
                now = time.monotonic()
                stats = feed.stats_dict()
                top = fit_rows(args.top, console.size.height) if console.is_terminal else args.top
                if connection is not None:
                    connection.note_fatal(getattr(feed.session, "fatal", None))
                view = build_view(feed.window(args.window), stats, top, title=title,
                                  bars_per_s=rate.add(now, stats["bars"]),
                                  state=getattr(feed.session, "state", None),
                                  connection=connection.describe() if connection else None,
                                  url=feed.url)
                live.update(view, refresh=True)
                if feed._task.done():  # drawn once more first: the status says why
                    feed._task.result()  # raises the fatal error (e.g. AuthError)
                    break
                if args.duration is not None and now - started >= args.duration:
                    break
    finally:
        await feed.close()


# --------------------------------------------------------------------------- the command
WATCH_EPILOG = textwrap.dedent(
    """\
    With no --url and no API key, starts the built-in simulator and watches it.
    Ctrl-C exits.

    examples:
      fastfeed watch                                   # the simulator, 12,000 tickers
      fastfeed watch --window 300 --top 20
      fastfeed watch --feed sfox --url wss://ws.sfox.com/ws --subscribe ticker.sfox.btcusd
      VANTAFIN_API_KEY=... fastfeed watch              # the real Vantafin feed, LS.*
      fastfeed watch --attach market                   # the segment of `fastfeed serve --share market`
    """
)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = add_command(sub, "watch", cmd_watch,
                    help="live terminal table: top movers, volume leaders, VWAP, feed health",
                    description="Watch a feed live in the terminal.",
                    epilog=WATCH_EPILOG)
    add_connection_args(p)
    p.add_argument("--window", type=int, default=60, help="window shown, seconds (default 60)")
    p.add_argument("--windows", default=None, help="windows kept (default: 60,300,900 plus --window)")
    p.add_argument("--top", type=int, default=10, help="rows per table (default 10)")
    p.add_argument("--refresh", type=float, default=0.5, help="seconds between redraws (default 0.5)")
    p.add_argument("--duration", type=float, default=None, help="exit after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--tickers", type=int, default=12000, help="simulator only: number of tickers (default 12000)")
    p.add_argument("--record", metavar="FILE", help="also record every raw message to FILE")
    p.add_argument("--attach", metavar="NAME",
                   help="watch the shared-memory segment NAME of `fastfeed serve --share NAME` (no connection)")
    return p


def cmd_watch(args: argparse.Namespace) -> int:
    if args.attach:
        return watch_attached(args)
    if args.windows:
        windows = parse_windows_arg(args.windows)
    else:
        windows = tuple(sorted({60, 300, 900, args.window}))
    if args.window <= 0:
        raise CliError(f"--window {args.window}: a window is a positive number of seconds")
    if args.window not in windows:
        raise CliError(f"--window {args.window} is not among --windows {','.join(map(str, windows))}")
    if args.top <= 0:
        raise CliError("--top must be positive")
    return run_watch(args, windows, make_feed=make_feed, after=report_recording)


def watch_attached(args: argparse.Namespace) -> int:
    """The live view of a ``fastfeed serve`` segment: redrawn on each refresh from a
    consistent copy, until Ctrl-C or ``--duration`` (a writer gone is shown, then followed)."""
    from ..share.reader import attach

    if args.top <= 0:
        raise CliError("--top must be positive")
    console = Console(stderr=False)
    with attach(args.attach, timeout=10.0) as reader:
        if args.window not in reader.windows:
            raise CliError(f"--window {args.window} is not among the segment's windows {reader.windows}")
        title = f"fastfeed · {reader.feed} · segment {args.attach}"
        started = last_t = time.monotonic()
        last_bars, rate = None, 0.0
        try:
            with Live(console=console, auto_refresh=False, transient=False) as live:
                while args.duration is None or time.monotonic() - started < args.duration:
                    frame, stats = reader.window(args.window, copy=True), reader.stats
                    now = time.monotonic()
                    if last_bars is not None:
                        rate = (stats["bars"] - last_bars) / max(now - last_t, 1e-9)
                    last_t, last_bars = now, stats["bars"]
                    top = fit_rows(args.top, console.size.height) if console.is_terminal else args.top
                    state = {"market": f"writer {reader.status}"} if reader.status != "live" else None
                    live.update(build_view(frame, stats, top, title=title, bars_per_s=rate, state=state), refresh=True)
                    time.sleep(args.refresh)
        except KeyboardInterrupt:
            pass
    return 0
