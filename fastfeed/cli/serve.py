"""``fastfeed serve``: the headless feed handler -- one connection, its windows published
to shared memory for any number of strategy processes, optionally journaled for warm
restarts and exposed as Prometheus metrics."""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import textwrap
from typing import Any

from .common import EXIT_OK, CliError, add_command, add_connection_args, make_feed, parse_windows_arg

SERVE_EPILOG = textwrap.dedent(
    """\
    Runs until SIGTERM or Ctrl-C (exit 0: the segment is removed, the journal closed).
    Logs one stderr line per state change (connected, reconnecting, gap, market status).
    Exit 2 when the key is refused, 1 on any other failure (e.g. the name is in use).

    Strategies read the segment from their own processes:
      fastfeed.attach(NAME).window(60, copy=True)
      fastfeed snapshot --attach NAME --windows 60 --format table
      fastfeed watch --attach NAME

    examples:
      fastfeed serve --url ws://127.0.0.1:8765/v1/stocks --api-key sim-key --share market
      fastfeed serve --share market --journal /var/lib/fastfeed/journal --metrics 127.0.0.1:9108
    """
)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = add_command(sub, "serve", cmd_serve,
                    help="headless feed handler: publish the windows to shared memory for other processes",
                    description="Connect, keep the windows and publish them to a shared-memory segment "
                                "(read with fastfeed.attach, snapshot --attach, watch --attach).",
                    epilog=SERVE_EPILOG)
    add_connection_args(p)
    p.add_argument("--windows", default="60,300,900", help="comma-separated window lengths in seconds (default 60,300,900)")
    p.add_argument("--share", required=True, metavar="NAME", help="shared-memory segment name (/dev/shm/NAME, mode 0600)")
    p.add_argument("--journal", metavar="DIR", help="journal every raw message to DIR and warm-start from it")
    p.add_argument("--journal-keep", type=float, default=2 * 86400.0, metavar="SECONDS",
                   help="seconds of journal kept (default 172800: 2 days)")
    p.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus metrics at http://HOST:PORT/metrics")
    return p


def say(line: str) -> None:
    print(f"fastfeed serve: {line}", file=sys.stderr, flush=True)


def describe_event(kind: str, info: dict[str, Any], url: str) -> str | None:
    """The stderr line for a feed event, None for events that are not a state change."""
    if kind == "connected":
        return f"connected to {url}"
    if kind == "disconnected":
        return f"disconnected: {info.get('reason', '')}"
    if kind == "reconnecting":
        return f"reconnecting in {float(info.get('delay', 0.0)):.2f} s (attempt {info.get('attempt', '?')})"
    if kind == "gap":
        return f"gap: no bars for seconds {info['last_before'] + 1} .. {info['first_after'] - 1}"
    if kind == "market_status":
        return f"market status: {info.get('market')}"
    if kind == "auth_failed":
        return "authentication refused"
    return None


def cmd_serve(args: argparse.Namespace) -> int:
    windows = parse_windows_arg(args.windows)
    if args.journal_keep <= 0:
        raise CliError("--journal-keep must be a positive number of seconds")
    if args.metrics:
        from ..share.metrics import parse_host_port

        try:
            parse_host_port(args.metrics)
        except ValueError as e:
            raise CliError(str(e)) from None
    url_box: list[str] = [""]

    def on_event(kind: str, info: dict) -> None:
        line = describe_event(kind, info, url_box[0])
        if line is not None:
            say(line)

    feed = make_feed(args, windows, share=args.share, journal=args.journal, journal_keep=args.journal_keep,
                     on_event=on_event)
    url_box[0] = feed.url
    if feed.warm_start is not None:
        ws = feed.warm_start
        say(f"warm start: {ws.messages} messages from {len(ws.files)} journal file(s) in {ws.elapsed:.2f} s, "
            f"clock {ws.T if ws.T is not None else '-'}")
    try:
        asyncio.run(_serve(feed, args))
    finally:
        if feed.segment is not None and not feed.segment.closed:  # e.g. the metrics port was taken
            feed.segment.close()
    if feed.error is not None:
        raise feed.error
    return EXIT_OK


async def _serve(feed: Any, args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics = None
    try:
        if args.metrics:
            from ..share.metrics import FeedCollector, serve_metrics

            collector = FeedCollector(feed.stats, feed=feed.feed_name, universe=feed.universe, engine=feed.engine,
                                      journal=feed.journal, share=feed.segment)
            metrics, _ = serve_metrics(args.metrics, collector)
            host, port = metrics.server_address[:2]
            say(f"metrics at http://{host}:{port}/metrics")
        await feed.start_async()
        say(f"serving {feed.feed_name} windows {','.join(map(str, feed.windows))} as segment {args.share!r}")
        stopped = asyncio.ensure_future(stop.wait())
        ended = asyncio.ensure_future(feed.wait_closed())
        await asyncio.wait({stopped, ended}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if stop.is_set():
            say("stopping")
        await feed.close()
        if ended.done():
            ended.exception()  # retrieved: the error stays in feed.error
        else:
            ended.cancel()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if metrics is not None:
            metrics.shutdown()
