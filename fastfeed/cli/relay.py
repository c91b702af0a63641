"""``fastfeed relay``: hold the one vendor connection and publish it to NATS JetStream (headless)."""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import textwrap
import time
from typing import Any

from ..errors import AuthError, NatsAuthError, RelayError
from .common import EXIT_AUTH, EXIT_FAIL, EXIT_OK, CliError, add_command, add_connection_args, make_feed, parse_windows_arg

RELAY_EPILOG = textwrap.dedent(
    """\
    Holds the vendor connection and publishes every message as received (no re-encoding),
    with its receive time and read boundaries, plus connection events, to the JetStream
    stream FASTFEED_<FEED> (created if missing: file storage, --max-age). Consumers on any
    host read it with --url nats://HOST:PORT (watch, snapshot, record) or
    Feed(feed, url="nats://HOST:PORT"): a warm start from now - depth, then live, the
    relay's windows exactly. Publishing never blocks the vendor socket: up to --buffer MiB
    wait while NATS is slow or down, then the oldest are dropped (counted).

    NATS credentials: nats://USER:PASSWORD@HOST:PORT, nats://TOKEN@HOST:PORT, ?creds=FILE,
    ?nkey=FILE, or FASTFEED_NATS_USER/_PASSWORD/_TOKEN/_CREDS/_NKEY; TLS: tls://... with
    ?ca=FILE&cert=FILE&key=FILE. Never printed (URLs are shown masked). Wire format and
    guarantees: docs/RELAY.md.

    State lines go to stderr every --status-every seconds. Exit codes: 0 stopped by
    SIGTERM/SIGINT (after publishing what it could), 1 NATS unusable (e.g. JetStream not
    enabled), 2 credentials refused (by the vendor or by NATS).

    examples:
      nats-server -js -sd /tmp/ff-js -a 127.0.0.1 -p 4222 &
      fastfeed relay --url ws://127.0.0.1:8765/v1/stocks --api-key sim-key --nats nats://127.0.0.1:4222
      fastfeed relay --feed sfox --subscribe ticker.sfox.btcusd --nats nats://relay:pw@nats1:4222 --max-age 12h
    """
)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = add_command(sub, "relay", cmd_relay,
                    help="publish a feed to NATS JetStream for consumers on other hosts (no UI)",
                    description="Hold the vendor connection and publish every message to a NATS JetStream stream.",
                    epilog=RELAY_EPILOG)
    add_connection_args(p)
    p.add_argument("--nats", required=True, metavar="URL", help="NATS server, nats://HOST:PORT (or tls://; credentials see below)")
    p.add_argument("--stream", help="JetStream stream name (default FASTFEED_<FEED>)")
    p.add_argument("--max-age", default="1d", help="how long the stream keeps messages: 1d, 12h, 90m, 30s (default 1d)")
    p.add_argument("--buffer", type=float, default=256.0, metavar="MiB", help="most MiB held while NATS is slow or down; then the oldest are dropped (default 256)")
    p.add_argument("--windows", default="60,300,900", help="the relay's own engine windows, as consumers would use (default 60,300,900)")
    p.add_argument("--heartbeat", type=float, default=5.0, metavar="SECONDS", help="publish a heartbeat after this long without anything else (default 5)")
    p.add_argument("--status-every", type=float, default=10.0, metavar="SECONDS", help="a state line on stderr this often (default 10)")
    p.add_argument("--json-status", action="store_true", help="state lines as JSON objects (for scripts)")
    p.add_argument("--windows-out", metavar="FILE", help="at exit, write the relay's windows and stats to FILE (JSON)")
    return p


def cmd_relay(args: argparse.Namespace) -> int:
    from ..relay.client import parse_duration

    try:
        max_age = parse_duration(args.max_age)
    except ValueError as e:
        raise CliError(f"--max-age: {e}") from None
    if not args.buffer > 0:
        raise CliError("--buffer must be a positive number of MiB")
    windows = parse_windows_arg(args.windows)
    feed = make_feed(args, windows)
    return asyncio.run(_run(args, feed, max_age))


class _StateLines:
    """State lines on stderr: human-readable, or JSON objects with ``--json-status``."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def say(self, key: str, doc: dict[str, Any]) -> None:
        if self.as_json:  # {"status": {...}}, {"stopped": {...}}, or {"error": ..., "kind": ...}
            line = json.dumps(doc if key == "error" else {key: doc}, default=str)
        elif key == "error":
            line = f"fastfeed relay: {doc['error']}"
        else:
            line = "fastfeed relay: " + key + " " + " ".join(
                f"{k}={v}" for k, v in doc.items() if k in _SHOWN and v is not None)
        print(line, file=sys.stderr, flush=True)


_SHOWN = ("vendor", "T", "bars", "messages", "nats", "published", "acked_through", "buffered_bytes",
          "dropped_messages", "resends", "nats_disconnects", "last_error")


async def _run(args: argparse.Namespace, feed: Any, max_age: float) -> int:
    from ..relay.publisher import RelayPublisher, attach_publisher

    out = _StateLines(args.json_status)
    pub = RelayPublisher(args.nats, args.feed, stream=args.stream, buffer_bytes=int(args.buffer * (1 << 20)),
                         max_age=max_age, heartbeat=args.heartbeat)
    try:
        await pub.start_async()
    except (NatsAuthError, RelayError) as exc:
        out.say("error", {"error": str(exc), "kind": type(exc).__name__})  # masked by the relay
        return EXIT_AUTH if isinstance(exc, NatsAuthError) else EXIT_FAIL
    attach_publisher(feed, pub)

    def status() -> dict[str, Any]:
        conn = feed._conn
        st = pub.stats()
        return {"vendor": "up" if conn is not None and conn.connected else "down", "T": feed.T,
                "bars": feed.stats.bars, "messages": feed.stats.messages,
                "nats": "up" if st["connected"] else "down",
                "vendor_idle_ms": _idle_ms(conn), **st}

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    code = EXIT_OK
    await feed.start_async()
    try:
        assert feed._task is not None
        while not stop.is_set() and not feed._task.done():
            out.say("status", status())
            waiter = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, feed._task}, timeout=args.status_every, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        exc = feed.error
        if exc is not None:  # the vendor connection ended by itself: refused key, ...
            out.say("error", {"error": f"vendor: {exc}", "kind": type(exc).__name__})
            code = EXIT_AUTH if isinstance(exc, AuthError) else EXIT_FAIL
    finally:
        await feed.close()
        t0 = time.monotonic()
        await pub.stop_async(timeout=10.0)  # publishes what it holds, within the timeout
        final = status()
        final["flush_s"] = round(time.monotonic() - t0, 3)
        out.say("stopped", final)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if args.windows_out:
        from ..relay.harness import windows_document

        doc = windows_document(feed)
        doc["status"] = final
        with open(args.windows_out, "w") as f:
            json.dump(doc, f)
    return code


def _idle_ms(conn: Any) -> float | None:
    ln = getattr(conn, "listener", None)
    return ln.idle_ns() / 1e6 if ln is not None else None

