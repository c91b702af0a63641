"""End-to-end loopback benchmarks: simulator process -> picows -> feed session -> Engine.

The simulator runs in its own process (max-rate mode: every ticker trades every second,
frames of 1 or 100 bars, writes paced by TCP flow control), pinned to the other core when
there are two; this process is pinned to the first core for the duration of the module.
Each benchmark round times the full fastfeed path over ``ROUND_BARS`` bars on a connection
that is already streaming (connect, subscribe and the first second are in the untimed
setup): frame arrival -> decode -> fill -> ``Engine.upsert`` -> rolling windows updated.

``extra_info``: ``bars_per_s`` (from the median round), ``bars_per_s_best``,
``bars_per_round``, ``cpu_s_per_million_bars``, and the engine's counters (to see that
every bar was accepted).  ``test_e2e_burst_latency`` runs the real-cadence mode
(one full-universe burst per simulated second, 20x time compression) and reports the
burst -> cross-section-ready percentiles (docs/BENCHMARKS.md has the definition).

Run: ``python -m pytest benches/bench_e2e.py --benchmark-only``
(``--benchmark-json out.json`` carries the extra_info).
"""
from __future__ import annotations

import asyncio
import gc
import os
import statistics
import time
from typing import Any, Callable

import pytest

from fastfeed.bench.orchestration import cores
from fastfeed.engine import Engine
from fastfeed.bench.worker import BurstTracker
from fastfeed.transport.session import SessionProxy
from fastfeed.simulator.testing import SimProcess

ROUND_BARS = {1: 300_000, 100: 1_200_000}
WINDOWS = {"1w": (60,), "3w": (60, 300, 900)}
KEY = "bench-key"


@pytest.fixture(scope="module", autouse=True)
def _pin_client():
    client, _ = cores()
    if not client:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, client)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _sim(args: list[str]) -> SimProcess:
    sp = SimProcess(args, api_key=KEY).start()
    _, sim_cpus = cores()
    if sim_cpus and sp.proc is not None:
        os.sched_setaffinity(sp.proc.pid, sim_cpus)
    return sp


class SessionProbe(SessionProxy):
    """Wraps a fastfeed session: time per call and burst accounting (cadence mode).

    Works whether the session applies bars per message or, when the transport batches
    per read (``defer_until_buffer_end``), in ``on_buffer_end()``: bars are counted
    after each call that may apply them, with the receive time of the first message
    since the previous application (the burst's first message when a burst starts).
    The listener calls :meth:`on_message` in Python (``message_sink`` is hidden), so
    every message is timed.
    """

    message_sink = None

    def __init__(self, inner: Any, engine: Any, stats: Any, tracker: BurstTracker) -> None:
        from hdrh.histogram import HdrHistogram

        super().__init__(inner)
        self._keep(engine=engine, stats=stats, tracker=tracker,
                   cpu_hist=HdrHistogram(10, 10_000_000_000, 3),  # wall ns inside on_message
                   flush_hist=HdrHistogram(10, 10_000_000_000, 3),  # wall ns inside on_buffer_end
                   _first=0,  # recv_ns of the first message not yet applied
                   _last=0)

    @property
    def on_buffer_end(self) -> Callable[[], None]:
        self.session.on_buffer_end  # AttributeError when the session has none
        return self._on_buffer_end

    def _applied(self, n: int) -> None:
        self.tracker.add(self.engine.T, n, self._first, self._last)
        self._first = 0

    def on_message(self, payload: Any, recv_ns: int) -> None:
        stats = self.stats
        if not self._first:
            self._first = recv_ns
        self._last = recv_ns
        b0 = stats.bars
        t0 = time.perf_counter_ns()
        self.session.on_message(payload, recv_ns)
        t1 = time.perf_counter_ns()
        self.cpu_hist.record_value(max(10, t1 - t0))
        n = stats.bars - b0
        if n:
            self._applied(n)

    def _on_buffer_end(self) -> None:
        stats = self.stats
        b0 = stats.bars
        t0 = time.perf_counter_ns()
        self.session.on_buffer_end()
        t1 = time.perf_counter_ns()
        n = stats.bars - b0
        if n:
            self.flush_hist.record_value(max(10, t1 - t0))
            self._applied(n)


@pytest.fixture(scope="module", params=[(1, 1000), (1, 12000), (100, 1000), (100, 12000)],
                ids=lambda p: f"{p[0]}bpf-{p[1] // 1000}k")
def maxrate_sim(request):
    bpf, tickers = request.param
    sp = _sim(["--max-rate", "--tickers", str(tickers), "--trade-fraction", "1", "--bars-per-frame", str(bpf)])
    sp.bench = (bpf, tickers)  # type: ignore[attr-defined]
    try:
        yield sp
    finally:
        sp.stop()


class _Client:
    """fastfeed's own path, built the way a user builds it."""

    def __init__(self, url: str, tickers: int, windows: tuple[int, ...], probe: BurstTracker | None = None):
        from fastfeed.feeds import make_session
        from fastfeed.engine.stats import Stats
        from fastfeed.transport import Connection
        from fastfeed.engine.universe import Universe

        self.engine = Engine(16384, windows)
        self.universe = Universe(16384)
        self.stats = Stats()
        self.session = make_session("vantafin", self.engine, self.universe, self.stats, topics=["LS.*"],
                                    api_key=KEY)
        self.probe = SessionProbe(self.session, self.engine, self.stats, probe) if probe is not None else None
        self.conn = Connection(url, self.probe or self.session, stats=self.stats)
        self.tickers = tickers
        self.task: asyncio.Future | None = None

    async def start(self) -> None:
        self.task = asyncio.ensure_future(self.conn.run())
        deadline = time.monotonic() + 30
        while self.stats.bars < self.tickers:
            if self.task.done():
                self.task.result()
                raise RuntimeError("connection ended")
            if time.monotonic() > deadline:
                raise TimeoutError("no data from the simulator")
            await asyncio.sleep(0.001)

    async def consume(self, n: int) -> tuple[float, float]:
        """Wait until ``n`` more bars were applied; (wall s, CPU s)."""
        stats = self.stats
        target = stats.bars + n
        t0, c0 = time.perf_counter(), time.process_time()
        while stats.bars < target:
            await asyncio.sleep(0.001)
        return time.perf_counter() - t0, time.process_time() - c0

    async def stop(self) -> None:
        await self.conn.stop()
        if self.task is not None:
            try:
                await asyncio.wait_for(self.task, 5)
            except Exception:  # noqa: BLE001
                pass


@pytest.mark.parametrize("windows", list(WINDOWS), ids=list(WINDOWS))
def test_e2e_throughput(benchmark, maxrate_sim, windows):
    bpf, tickers = maxrate_sim.bench
    n = ROUND_BARS[bpf]
    loop = asyncio.new_event_loop()
    clients: list[_Client] = []
    timings: list[tuple[float, float]] = []

    def setup():
        if clients:
            loop.run_until_complete(clients.pop().stop())
            gc.collect()  # the stopped client's engine (~1 GiB) goes before the next one is built
        c = _Client(maxrate_sim.urls["vantafin"], tickers, WINDOWS[windows])
        loop.run_until_complete(c.start())
        clients.append(c)
        return (), {}

    def round_():
        timings.append(loop.run_until_complete(clients[-1].consume(n)))

    try:
        benchmark.pedantic(round_, setup=setup, rounds=5, iterations=1, warmup_rounds=1)
        c = clients[-1]
        walls = [w for w, _ in timings]
        med = statistics.median(walls)
        benchmark.extra_info.update(
            bars_per_frame=bpf, universe=tickers, windows=list(WINDOWS[windows]), bars_per_round=n,
            bars_per_s=n / med, bars_per_s_best=n / min(walls),
            cpu_s_per_million_bars=statistics.median(cpu / n * 1e6 for _, cpu in timings),
            engine_counters=dict(c.engine.counters), decode_errors=c.stats.decode_errors,
        )
        assert c.stats.decode_errors == 0
        assert c.engine.counters["stale_dropped"] == 0 and c.engine.counters["future_rejected"] == 0
    finally:
        for c in clients:
            loop.run_until_complete(c.stop())
        loop.close()


@pytest.mark.parametrize("bpf", [100, 1], ids=lambda b: f"{b}bpf")
def test_e2e_burst_latency(benchmark, bpf):
    """Burst -> cross-section ready, 12,000-bar bursts at 20x time compression."""
    tickers, bursts, skip = 12_000, 40, 3
    sp = _sim(["--tickers", str(tickers), "--trade-fraction", "1", "--bars-per-frame", str(bpf),
               "--speed", "20"])
    loop = asyncio.new_event_loop()
    tracker = BurstTracker(tickers, skip=skip)
    client = _Client(sp.urls["vantafin"], tickers, (60, 300, 900), probe=tracker)

    async def run():
        await client.start()
        deadline = time.monotonic() + 60
        while tracker.measured < bursts and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    try:
        benchmark.pedantic(lambda: loop.run_until_complete(run()), rounds=1, iterations=1)
        h = tracker.hist
        benchmark.extra_info.update(
            bars_per_frame=bpf, universe=tickers, bursts=tracker.measured, incomplete=tracker.incomplete,
            **{f"burst_ms_p{p:g}": h.get_value_at_percentile(p) / 1e6 for p in (50.0, 99.0, 99.9)},
            burst_ms_max=h.get_max_value() / 1e6,
            message_cpu_us_p50=client.probe.cpu_hist.get_value_at_percentile(50) / 1e3,  # type: ignore[union-attr]
        )
        assert tracker.measured >= bursts
    finally:
        loop.run_until_complete(client.stop())
        loop.close()
        sp.stop()
