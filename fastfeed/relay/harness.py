"""Relay processes for tests and benchmarks: the real ``fastfeed relay`` command and
consumer processes built as a user builds one (``Feed(url="nats://...")``).

``python -m fastfeed.relay.harness consume --nats URL [...]`` runs such a Feed, prints
one JSON status line on stdout every ``--status-every`` seconds (its counters and the
source's position) and obeys commands on stdin, one per line:

* ``dump PATH`` — write :func:`windows_document` of the feed to PATH, answer
  ``{"dumped": PATH}``;
* ``stop`` — stop cleanly, answer ``{"stopped": ...}``.

:class:`HarnessProcess` starts either and talks to it: the relay's JSON state lines
(``--json-status``) come on its stderr, its windows from ``--windows-out`` at exit.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Optional

__all__ = ["windows_document", "HarnessProcess", "consume_main", "main", "make_feed", "same_windows"]


def make_feed(feed: str, url: str, *, windows: tuple[int, ...], capacity: int,
              api_key: Optional[str] = None, on_update: Any = None, on_event: Any = None,
              connection_options: Optional[dict[str, Any]] = None) -> Any:
    """A test/bench ``Feed`` (fast reconnects to a vendor URL; a NATS URL reads a relay)."""
    from ..feed import Feed
    from .config import is_nats_url

    subscribe = ["ticker.sfox.btcusd", "ticker.sfox.ethusd"] if feed == "sfox" else None
    if connection_options is None and not is_nats_url(url):
        connection_options = {"backoff_initial": 0.02, "backoff_max": 0.5}
    return Feed(feed, url=url, api_key=api_key, subscribe=subscribe, windows=windows,
                capacity=capacity, on_update=on_update, on_event=on_event,
                connection_options=connection_options)


def windows_document(feed: Any) -> dict[str, Any]:
    """Every window of ``feed`` as ``{W: {symbol: [o, h, l, c, v, vwap, count]}}`` (rows
    with bars only), the clock and the stats: what two feeds must agree on."""
    out: dict[str, Any] = {"T": feed.T, "windows": {}}
    for w in feed.windows:
        f = feed.window(w, copy=True)
        rows = {}
        for i, sym in enumerate(f.symbols):
            n = int(f.count[i])
            if n:
                rows[sym] = [float(f.open[i]), float(f.high[i]), float(f.low[i]), float(f.close[i]),
                             float(f.volume[i]), float(f.vwap[i]), n]
        out["windows"][str(w)] = rows
    out["stats"] = feed.stats_dict()
    return out


def same_windows(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Differences between two :func:`windows_document` s (empty: identical, NaN == NaN)."""
    diffs = []
    if a["T"] != b["T"]:
        diffs.append(f"T {a['T']} != {b['T']}")
    for w, ra in a["windows"].items():
        rb = b["windows"].get(w, {})
        for sym in sorted(set(ra) | set(rb)):
            va, vb = ra.get(sym), rb.get(sym)
            if va is None or vb is None:
                diffs.append(f"window {w} {sym}: only in {'first' if vb is None else 'second'}")
            elif any(x != y and not (isinstance(x, float) and math.isnan(x) and math.isnan(y))
                     for x, y in zip(va, vb)):
                diffs.append(f"window {w} {sym}: {va} != {vb}")
            if len(diffs) > 20:
                return diffs
    return diffs


# ------------------------------------------------------------------ process side


class _Control:
    """Status lines out, commands in (a reader thread hands stdin lines to the loop)."""

    def __init__(self, stdin: bool) -> None:
        self.loop = asyncio.get_running_loop()
        self.commands: asyncio.Queue[str] = asyncio.Queue()
        if stdin:  # commands on stdin (its end: stop); else run until SIGINT/SIGTERM
            threading.Thread(target=self._read, daemon=True).start()
        self.stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.loop.add_signal_handler(sig, self.stop.set)
            except (NotImplementedError, RuntimeError):
                pass

    def _read(self) -> None:
        for line in sys.stdin:
            self.loop.call_soon_threadsafe(self.commands.put_nowait, line.strip())
        self.loop.call_soon_threadsafe(self.commands.put_nowait, "stop")

    @staticmethod
    def say(doc: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(doc, default=str) + "\n")
        sys.stdout.flush()

    async def serve(self, feed: Any, status: Callable[[], dict[str, Any]], every: float) -> None:
        """Answer commands and print status until ``stop``."""
        while not self.stop.is_set():
            self.say({"status": status()})
            stop = asyncio.ensure_future(self.stop.wait())
            get = asyncio.ensure_future(self.commands.get())
            done, _ = await asyncio.wait({stop, get}, timeout=every, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if get not in done:
                get.cancel()
                continue
            cmd = get.result()
            verb, _, arg = cmd.partition(" ")
            if verb == "dump":
                doc = windows_document(feed)
                doc["status"] = status()
                with open(arg, "w") as f:
                    json.dump(doc, f)
                self.say({"dumped": arg, "status": doc["status"]})
            elif verb == "stop":
                break


async def consume_main(args: argparse.Namespace) -> int:
    from ..errors import NatsAuthError, RelayError
    from .source import source_for_feed

    ctl = _Control(args.stdin_control)
    events: list[tuple[str, dict]] = []
    lat: list[int] = []

    def on_event(kind: str, info: dict) -> None:
        if len(events) < 10_000:
            events.append((kind, info))

    def on_update(rows: Any, T: int) -> None:
        # receipt at the relay (recv_ns of the read just applied) -> engine updated here
        src = holder.get("src")
        if src is not None and src.caught_up and src._last_recv_ns and len(lat) < 2_000_000:
            lat.append(time.time_ns() - src._last_recv_ns)

    holder: dict[str, Any] = {}
    # a consumer as a user writes one: a Feed whose URL is the relay's NATS server
    feed = make_feed(args.feed, args.nats, windows=args.windows, capacity=args.capacity,
                     on_event=on_event, on_update=on_update if args.latency else None,
                     connection_options={"warm_start": args.warm_start, "idle_timeout": args.idle_timeout})
    await feed.start_async()
    src = holder["src"] = feed._conn
    task = feed._task
    def status() -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for k, _ in events:
            kinds[k] = kinds.get(k, 0) + 1
        doc = {"role": "consumer", "bars": feed.stats.bars, "messages": feed.stats.messages,
               "T": feed.T, "gaps": feed.stats.gaps, "events": kinds, **src.counters()}
        if args.latency:
            doc["latency_samples"] = len(lat)
        return doc

    serve = asyncio.ensure_future(ctl.serve(feed, status, args.status_every))
    done, _ = await asyncio.wait({task, serve}, return_when=asyncio.FIRST_COMPLETED)
    if task in done and task.exception() is not None:
        exc = task.exception()
        serve.cancel()
        ctl.say({"error": str(exc), "kind": type(exc).__name__})
        return 2 if isinstance(exc, NatsAuthError) else 1
    await feed.close()
    if args.latency and args.latency_out:
        with open(args.latency_out, "w") as f:
            json.dump(lat, f)
    ctl.say({"stopped": status(), "events_list": [[k, i] for k, i in events[:200]]})
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fastfeed.relay.harness")
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("consume")
    s.add_argument("--nats", required=True)
    s.add_argument("--feed", default="vantafin")
    s.add_argument("--windows", type=lambda t: tuple(int(x) for x in t.split(",")), default=(5, 10, 30))
    s.add_argument("--capacity", type=int, default=1024)
    s.add_argument("--status-every", type=float, default=0.2)
    s.add_argument("--stdin-control", action="store_true",
                   help="read commands (dump PATH, stop) on stdin; its end stops the process")
    s.add_argument("--warm-start", type=float, default=None)
    s.add_argument("--idle-timeout", type=float, default=15.0)
    s.add_argument("--latency", action="store_true")
    s.add_argument("--latency-out", default=None)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    return asyncio.run(consume_main(args))


# ------------------------------------------------------------------ test/bench side


class HarnessProcess:
    """A relay (``fastfeed relay ARGS --json-status``) or a consumer
    (``python -m fastfeed.relay.harness consume ARGS``) as a child process.

    :meth:`wait` polls its latest status line until a predicate holds; :meth:`dump`
    asks for its windows; :meth:`stop` ends it cleanly, :meth:`kill` with ``SIGKILL``.
    """

    def __init__(self, role: str, args: list[str], *, env: Optional[dict[str, str]] = None) -> None:
        self.role = role
        self.args = args
        self.env = env
        self.proc: Optional[subprocess.Popen[str]] = None
        self.status: dict[str, Any] = {}
        self.lines: list[dict[str, Any]] = []
        self._cv = threading.Condition()
        self.exit_doc: Optional[dict[str, Any]] = None  # the "stopped" (or "error") line
        self.error_doc: Optional[dict[str, Any]] = None  # the "error" line, if any

    def start(self) -> "HarnessProcess":
        env = dict(os.environ if self.env is None else self.env)
        if self.role == "relay":  # the real command; its JSON state lines come on stderr
            cmd = [sys.executable, "-m", "fastfeed.cli", "relay", "--json-status", "--status-every", "0.2", *self.args]
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
            lines = self.proc.stderr
        else:
            cmd = [sys.executable, "-m", "fastfeed.relay.harness", self.role, "--stdin-control", *self.args]
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
            lines = self.proc.stdout
        threading.Thread(target=self._pump, args=(lines,), daemon=True).start()
        return self

    def _pump(self, lines: Any) -> None:
        for line in lines:
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            with self._cv:
                if "status" in doc:
                    self.status = doc["status"]
                if "stopped" in doc or "error" in doc:
                    self.exit_doc = doc
                if "error" in doc:
                    self.error_doc = doc
                if "status" not in doc or len(doc) > 1:
                    self.lines.append(doc)
                self._cv.notify_all()
        with self._cv:
            self._cv.notify_all()

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 60.0, what: str = "") -> dict[str, Any]:
        """Wait until ``pred(status)`` holds; ``AssertionError`` (with the last status) if not."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                if self.status and pred(self.status):
                    return self.status
                if self.error_doc is not None:
                    raise AssertionError(f"{self.role} failed: {self.error_doc}")
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc is not None and self.proc.poll() is not None):
                    raise AssertionError(f"{self.role}: {what or 'condition'} not reached; last status {self.status}")
                self._cv.wait(min(left, 0.5))

    def wait_line(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for d in self.lines:
                    if pred(d):
                        return d
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.role}: no such line; got {self.lines[-3:]}")
                self._cv.wait(min(left, 0.5))

    def send(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def dump(self, path: str, timeout: float = 60.0) -> dict[str, Any]:
        """The process's :func:`windows_document` (the relay: stopped, from ``--windows-out``)."""
        if self.role == "relay":
            assert self.stop(timeout) == 0, self.exit_doc
            with open(path) as f:
                return json.load(f)
        self.send(f"dump {path}")
        self.wait_line(lambda d: d.get("dumped") == path, timeout)
        with open(path) as f:
            return json.load(f)

    def stop(self, timeout: float = 30.0) -> Optional[int]:
        """Stop cleanly (the relay: SIGTERM; a consumer: ``stop`` on stdin); the exit code."""
        p = self.proc
        if p is None or p.poll() is not None:
            return None if p is None else p.returncode
        if self.role == "relay":
            p.send_signal(signal.SIGTERM)
        else:
            try:
                self.send("stop")
            except (BrokenPipeError, OSError):
                pass
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait()

    def kill(self) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()

    def returncode(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def __enter__(self) -> "HarnessProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.kill()


if __name__ == "__main__":
    sys.exit(main())
