from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import uuid

import pytest

from fastfeed.share.layout import shm_path

HERE = os.path.dirname(os.path.abspath(__file__))
PROC = os.path.join(HERE, "shm_proc.py")


class Proc:
    """A ``shm_proc.py`` process; its stdout JSON lines are read on a thread."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.p = subprocess.Popen([sys.executable, PROC, *args], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.p.pid

    def _read(self) -> None:
        for line in self.p.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                self.lines.put({"event": "text", "text": line})
        self.lines.put({"event": "eof"})

    def _read_err(self) -> None:
        for line in self.p.stderr:
            self.stderr.append(line)

    def expect(self, event: str, timeout: float = 30.0) -> dict:
        """The next line with ``event`` (earlier other lines are kept in ``seen``)."""
        while True:
            try:
                msg = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"{self.args[:2]}: no {event!r} within {timeout} s; seen {self.seen}; "
                                     f"stderr {''.join(self.stderr)[-2000:]}") from None
            self.seen.append(msg)
            if msg.get("event") == event:
                return msg
            if msg.get("event") == "eof":
                raise AssertionError(f"{self.args[:2]} ended (rc {self.p.wait()}) before {event!r}; "
                                     f"seen {self.seen}; stderr {''.join(self.stderr)[-2000:]}")

    def send(self, line: str) -> None:
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def wait(self, timeout: float = 30.0) -> int:
        return self.p.wait(timeout)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(10)


@pytest.fixture
def shm_name():
    """A segment name of this test only; the test must leave nothing behind."""
    name = f"fftest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield name
    path = shm_path(name)
    if os.path.exists(path):
        os.unlink(path)


@pytest.fixture
def procs():
    started: list[Proc] = []

    def start(*args: str) -> Proc:
        p = Proc(*args)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()
