"""``fastfeed watch``: a live terminal view of one window across the universe.

``build_view`` is a pure function of a window's columns and the stats document, so it
renders the same headlessly (tests) as in a terminal.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import textwrap
import time
from typing import Any, Callable, Sequence

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..engine.window import WindowFrame
from ..feeds.registry import FEEDS
from .common import CliError, add_connection_args, add_command, make_feed, parse_windows_arg, report_recording


def _price(x: float) -> str:
    return "—" if not np.isfinite(x) else (f"{x:,.2f}" if abs(x) >= 1 else f"{x:.6f}")


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


def status_line(stats: dict[str, Any], bars_per_s: float, state: dict[str, Any] | None = None) -> Text:
    """Feed health in one line: throughput, latency, reconnects, gaps, errors."""
    proc = stats.get("processing_latency_us", {}) or {}
    lat = stats.get("feed_latency_ms", {}) or {}
    errors = stats.get("decode_errors", 0) + stats.get("unknown_messages", 0) + stats.get("protocol_errors", 0)
    parts = [
        f"{bars_per_s:,.0f} bars/s",
        f"bars {stats.get('bars', 0):,}",
        f"p99 processing {proc.get('p99'):.0f} µs" if proc.get("p99") is not None else "p99 processing —",
        f"p99 feed latency {lat.get('p99'):.1f} ms" if lat.get("p99") is not None else "p99 feed latency —",
        f"reconnects {stats.get('reconnects', 0)}",
        f"gaps {stats.get('gaps', 0)}",
        f"errors {errors}",
        f"stale {stats.get('stale_dropped', 0)}",
    ]
    done = stats.get("seconds_completed") or {}
    if sum(done.values()):
        # the completed-second rule: latency from a second's first bar, and why seconds closed
        lat = (stats.get("second_latency_us") or {}).get("p99")
        mix = " ".join(f"{k} {100 * v / sum(done.values()):.0f}%" for k, v in done.items())
        parts.append(f"second p99 {lat / 1e3:.0f} ms ({mix})" if lat is not None else f"second ({mix})")
    market = (state or {}).get("market")
    if market:
        parts.append(f"market {market}")
    return Text("  ·  ".join(parts), style="bold" if errors == 0 else "bold yellow")


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


def build_view(frame: WindowFrame, stats: dict[str, Any], top: int, *, title: str, bars_per_s: float = 0.0,
               state: dict[str, Any] | None = None) -> Group:
    """Top movers (window return close/open-1), volume leaders and a status line."""
    ret, live, ranks = rank_rows(frame, top)
    gainers, losers, leaders = ranks["gainers"], ranks["losers"], ranks["leaders"]
    header = Text(
        f"{title}  ·  window {frame.window}s  ·  as of {frame.as_of if frame.as_of is not None else '—'}"
        f"  ·  {int(live.sum()):,} of {len(frame.symbols):,} instruments active",
        style="bold cyan",
    )
    grid = Table.grid(expand=True)
    grid.add_column(ratio=1)
    grid.add_column(ratio=1)
    grid.add_row(
        _table("Top gainers", frame, gainers, ret, _MOVER_COLUMNS),
        _table("Top losers", frame, losers, ret, _MOVER_COLUMNS),
    )
    return Group(header, grid, _table("Volume leaders", frame, leaders, ret), status_line(stats, bars_per_s, state))


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
        feed = make_feed(args, windows)
        try:
            asyncio.run(_watch_loop(feed, args, console))
        except KeyboardInterrupt:
            pass
        after(feed)
    finally:
        if sim is not None:
            sim.stop()
    return 0


async def _watch_loop(feed: Any, args: argparse.Namespace, console: Console) -> None:
    await feed.start_async()
    feed.track_seconds()  # the status line shows the completed-second latency and reasons
    title = f"fastfeed · {feed.feed_name} · {feed.url}"
    started = time.monotonic()
    last_t, last_bars, rate = started, 0, 0.0
    try:
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while True:
                await asyncio.sleep(args.refresh)
                if feed._task.done():
                    feed._task.result()  # raises the fatal error (e.g. AuthError)
                    break
                now = time.monotonic()
                stats = feed.stats_dict()
                rate = (stats["bars"] - last_bars) / max(now - last_t, 1e-9)
                last_t, last_bars = now, stats["bars"]
                top = fit_rows(args.top, console.size.height) if console.is_terminal else args.top
                view = build_view(feed.window(args.window), stats, top, title=title, bars_per_s=rate,
                                  state=getattr(feed.session, "state", None))
                live.update(view, refresh=True)
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
    if args.window not in windows:
        raise CliError(f"--window {args.window} is not among --windows {windows}")
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
