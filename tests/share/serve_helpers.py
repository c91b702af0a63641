"""Running ``fastfeed`` commands as real processes in the share tests: stderr lines are
read on a thread and waited for by pattern (no sleeps)."""
from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np

from fastfeed.engine import Engine, Stats, Universe
from fastfeed.simulator.truth import with_pv
from fastfeed.snapshot import dump_json, snapshot_document

FASTFEED = [sys.executable, "-m", "fastfeed.cli"]


class Command:
    """``fastfeed ARGS`` in a process of its own; its stderr lines go to a queue."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.p = subprocess.Popen([*FASTFEED, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)
        self.lines: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.p.stderr:
            self.stderr.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, pattern: str, timeout: float = 60.0) -> re.Match:
        """The next stderr line matching ``pattern`` (a regex)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line like {pattern!r} within {timeout} s; stderr:\n{''.join(self.stderr)}") from None
            if line is None:
                raise AssertionError(f"ended (rc {self.p.wait()}) before a line like {pattern!r}; "
                                     f"stderr:\n{''.join(self.stderr)}")
            m = re.search(pattern, line)
            if m:
                return m

    def signal(self, sig: int, timeout: float = 30.0) -> int:
        self.p.send_signal(sig)
        return self.p.wait(timeout)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
        self.p.wait(10)


def wait_for(cond: Any, timeout: float, what: str) -> Any:
    """Poll ``cond()`` until it is true (returned) or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.01)


def reference(bars: np.ndarray, windows: tuple[int, ...], capacity: int = 512) -> dict:
    """The snapshot of an engine fed ``bars`` (send order) directly: the ground truth."""
    engine = Engine(capacity, windows)
    universe = Universe(capacity)
    t = with_pv(bars)
    rows = np.array([universe.row(s) for s in t["symbol"].tolist()], dtype=np.int64)
    cols = [np.ascontiguousarray(t[f]) for f in ("open", "high", "low", "close", "volume", "pv")]
    engine.upsert(rows, np.ascontiguousarray(t["second"]), *cols)
    return json.loads(dump_json(snapshot_document("vantafin", engine, universe, Stats())))


def windows_equal(got: dict, want: dict) -> list[str]:
    """Differences between two snapshot documents' windows (prices and counts exact,
    sums within 1e-9 relative); empty when equal."""
    out = []
    if got["as_of"] != want["as_of"]:
        out.append(f"as_of {got['as_of']} != {want['as_of']}")
    for w, rows in want["windows"].items():
        g = got["windows"].get(w, {})
        if g.keys() != rows.keys():
            out.append(f"window {w}: symbols differ ({len(g)} vs {len(rows)})")
            continue
        for sym, e in rows.items():
            f = g[sym]
            for k in ("open", "high", "low", "close", "count"):
                if f[k] != e[k]:
                    out.append(f"{w} {sym} {k}: {f[k]} != {e[k]}")
            for k in ("volume", "vwap"):
                if not (f[k] == e[k] or (f[k] is not None and e[k] is not None
                                         and abs(f[k] - e[k]) <= 1e-9 * max(abs(e[k]), 1e-300))):
                    out.append(f"{w} {sym} {k}: {f[k]} != {e[k]}")
    return out
