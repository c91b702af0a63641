"""Helpers to run the simulator for tests and benchmarks.

* in the running loop::

      async with serve(n_tickers=100, speed=50) as sim:
          url = sim.url("vantafin")

* in a background thread (its own loop)::

      with SimThread(n_tickers=100) as sim:
          url = sim.url("vantafin"); bars = sim.call(lambda s: s.sent_bars())

* in a subprocess (own core, own GIL: benchmarks)::

      with SimProcess(["--max-rate", "--bars-per-frame", "100"]) as sim:
          url = sim.url("vantafin")
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.parse
from typing import Any, AsyncIterator, Callable, Optional

from .server import SimConfig, Simulator

__all__ = ["serve", "SimThread", "SimProcess"]


@contextlib.asynccontextmanager
async def serve(config: Optional[SimConfig] = None, **kw: Any) -> AsyncIterator[Simulator]:
    """Run a simulator in the current event loop for the duration of the ``async with``."""
    sim = Simulator(config, **kw) if config is not None else Simulator(**kw)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


class SimThread:
    """A simulator in a daemon thread with its own event loop."""

    def __init__(self, config: Optional[SimConfig] = None, **kw: Any) -> None:
        if config is None:
            kw.setdefault("port", 0)
            config = SimConfig(**kw)
        self.config = config
        self.sim: Optional[Simulator] = None
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self._stop: Optional[asyncio.Event] = None
        self._error: Optional[BaseException] = None

    def start(self, timeout: float = 10.0) -> "SimThread":
        self._thread = threading.Thread(target=self._main, name="fastfeed-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("simulator thread did not start")
        if self._error is not None:
            raise self._error
        return self

    def _main(self) -> None:
        async def body() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                self.sim = await Simulator(self.config).start()
            except BaseException as exc:
                self._error = exc
                self._ready.set()
                return
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await self.sim.stop()

        asyncio.run(body())

    def call(self, fn: Callable[[Simulator], Any], timeout: float = 30.0) -> Any:
        """Run ``fn(sim)`` on the simulator's loop thread and return its result."""
        assert self.loop is not None and self.sim is not None

        async def wrap() -> Any:
            return fn(self.sim)  # type: ignore[arg-type]

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout)

    def url(self, feed: str = "vantafin", api_key: Optional[str] = "", *, key_in_url: bool = True) -> str:
        assert self.sim is not None
        return self.sim.url(feed, api_key, key_in_url=key_in_url)

    def stop(self, timeout: float = 10.0) -> None:
        if self.loop is not None and self._stop is not None and self._thread is not None:
            if self._thread.is_alive():
                self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)

    def __enter__(self) -> "SimThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class SimProcess:
    """``python -m fastfeed.simulator --json --port 0 <args>`` as a child process."""

    def __init__(self, args: Optional[list[str]] = None, *, api_key: str = "sim-key",
                 env: Optional[dict[str, str]] = None) -> None:
        self.args = list(args or [])
        self.api_key = api_key
        self.env = env
        self.proc: Optional[subprocess.Popen[str]] = None
        self.port = 0
        self.urls: dict[str, str] = {}
        self.start_second: Optional[int] = None

    def start(self, timeout: float = 30.0) -> "SimProcess":
        env = dict(os.environ if self.env is None else self.env)
        env["FASTFEED_SIM_API_KEY"] = self.api_key  # not on the command line (ps would show it)
        cmd = [sys.executable, "-m", "fastfeed.simulator", "--json", "--port", "0", *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        box: dict[str, Any] = {}

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            box["line"] = self.proc.stdout.readline()

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout)
        line = box.get("line")
        if not line:
            self.stop()
            raise RuntimeError("simulator process did not report its port")
        info = json.loads(line)
        self.port = info["port"]
        self.urls = info["urls"]
        self.start_second = info.get("start_second")
        return self

    def url(self, feed: str = "vantafin", api_key: Optional[str] = "") -> str:
        u = self.urls[feed]
        key = self.api_key if api_key == "" else api_key
        if key is not None and feed != "sfox":
            u += "?apiKey=" + urllib.parse.quote(key, safe="")
        return u

    def stop(self, timeout: float = 10.0) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def __enter__(self) -> "SimProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


