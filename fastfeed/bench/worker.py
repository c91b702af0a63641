"""The ``fastfeed bench`` worker: one client measured in its own process.

``python -m fastfeed.bench.worker SPEC`` runs the case described by the JSON ``SPEC``
(fastfeed or a peer, throughput or cadence) and prints one JSON line with its
measurements (bars/s, CPU, burst latencies, peak RSS).
"""
from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any, Callable, Optional

from ..feeds.registry import FEEDS
from .orchestration import peak_rss_mb, pin

__all__ = ["BurstTracker", "worker_main"]


class BurstTracker:
    """Burst → cross-section-ready latency (ns) of full-universe bursts.

    ``add(T, n, recv_ns, last_recv_ns)`` is called after bars were applied: ``T`` the
    clock after them (the burst's second), ``n`` bars applied, ``recv_ns`` the receive
    time (``time.time_ns()``) of the first message they came from, ``last_recv_ns`` of the
    last (default: the same).  A burst is ready when ``expected``
    bars of its second have been applied; its latency is ``time.time_ns()`` then minus
    the ``recv_ns`` of its first message.
    """

    def __init__(self, expected: int, skip: int = 2, keep: int = 100_000) -> None:
        from hdrh.histogram import HdrHistogram

        self.expected = expected
        self.skip = skip
        self.keep = keep
        self.hist = HdrHistogram(1_000, 600_000_000_000, 3)  # 1 µs .. 600 s, in ns
        # decomposition: first -> last message arrival of the burst, and last arrival -> ready
        self.span_hist = HdrHistogram(1_000, 600_000_000_000, 3)
        self.tail_hist = HdrHistogram(1_000, 600_000_000_000, 3)
        self.last = 0
        self.samples: list[int] = []
        self.cur: Optional[int] = None
        self.first = 0
        self.count = 0
        self.done = False
        self.ready = 0  # bursts completed (including skipped)
        self.incomplete = 0  # bursts superseded by a later second before completing

    def add(self, T: int, n: int, recv_ns: int, last_recv_ns: int = 0) -> None:
        if T != self.cur:
            if self.cur is not None and not self.done:
                self.incomplete += 1
            self.cur = T
            self.first = recv_ns
            self.count = 0
            self.done = False
        self.count += n
        self.last = last_recv_ns or recv_ns
        if not self.done and self.count >= self.expected:
            now = time.time_ns()
            lat = now - self.first
            self.done = True
            self.ready += 1
            if self.ready > self.skip:
                cap = 600_000_000_000
                self.hist.record_value(min(max(1_000, lat), cap))
                self.span_hist.record_value(min(max(1_000, self.last - self.first), cap))
                self.tail_hist.record_value(min(max(1_000, now - self.last), cap))
                if len(self.samples) < self.keep:
                    self.samples.append(lat)

    @property
    def measured(self) -> int:
        return max(0, self.ready - self.skip)


def _hist_doc(h: Any, scale: float) -> dict[str, Any]:
    if h.get_total_count() == 0:
        return {"count": 0}
    out = {f"p{p:g}": h.get_value_at_percentile(p) / scale for p in (50.0, 90.0, 99.0, 99.9)}
    out["max"] = h.get_max_value() / scale
    out["min"] = h.get_min_value() / scale
    out["mean"] = h.get_mean_value() / scale
    out["count"] = h.get_total_count()
    return out


class _UpdateCounter:
    """``on_batch`` for the burst cases: hands each engine update's bars to the tracker
    with the receive times of the update's first and last message (the filler's
    ``batch_first_ns``/``batch_last_ns``), and counts the updates."""

    def __init__(self, session: Any, stats: Any, tracker: BurstTracker) -> None:
        self.filler, self.stats, self.tracker = session.filler, stats, tracker
        self.bars = stats.bars
        self.calls = 0

    def on_batch(self, rows: Any, T: int) -> None:
        n = self.stats.bars - self.bars
        self.bars = self.stats.bars
        self.calls += 1
        self.tracker.add(T, n, self.filler.batch_first_ns, self.filler.batch_last_ns)


def _fastfeed_parts(spec: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    from ..engine import Engine, Stats, Universe
    from ..feeds import make_session

    cap = 16384
    while cap < spec["tickers"] * 5 // 4:
        cap *= 2
    engine = Engine(capacity=cap, windows=tuple(spec["windows"]))
    universe = Universe(cap)
    stats = Stats()
    dialect = spec["case"]["dialect"]
    topics = FEEDS[dialect].default_topics
    session = make_session(dialect, engine, universe, stats, topics=topics, api_key=spec["api_key"])
    return engine, universe, stats, session


async def _worker_async(spec: dict[str, Any]) -> dict[str, Any]:
    from ..transport.connection import Connection
    from . import peers as P

    case = spec["case"]
    client = case["client"]
    mode = case["mode"]
    stop = asyncio.Event()
    tracker = BurstTracker(spec["tickers"], skip=spec["skip_bursts"]) if mode == "cadence" else None
    out: dict[str, Any] = {}
    conn = None
    engine = stats = updates = None

    if client == "fastfeed":
        engine, universe, stats, session = _fastfeed_parts(spec)
        if tracker is not None:
            # bursts are observed the way a strategy observes them: on_batch after each
            # engine update, on the transport's C path (no Python call per message)
            updates = _UpdateCounter(session, stats, tracker)
            session.set_on_batch(updates.on_batch)
        conn = Connection(spec["url"], session, stats=stats)

        def processed() -> int:
            return stats.bars

        async def body() -> None:
            await conn.run()

        task = asyncio.ensure_future(body())
    else:
        meter = P.Meter()
        if client == "massive-raw":
            fn, kw = P.run_massive, {"aggregate": False}
        else:
            fn, kw = P.PEERS[client][0], {}
        if client == "floor":
            kw["dialect"] = case["dialect"]
        if tracker is not None:
            kw["on_batch"] = tracker.add
        kw["windows"] = tuple(spec["windows"])

        def processed() -> int:
            return meter.bars

        task = asyncio.ensure_future(fn(spec["url"], meter, stop, api_key=spec["api_key"], **kw))

    deadline = time.monotonic() + spec["timeout"]

    async def wait_for(cond: Callable[[], bool]) -> None:
        while not cond():
            if task.done():
                task.result()  # raises the client's error
                raise RuntimeError("client stopped before the measurement ended")
            if time.monotonic() > deadline:
                raise TimeoutError("case timed out")
            await asyncio.sleep(0.005)

    try:
        await wait_for(lambda: processed() > 0)
        if mode == "throughput":
            await asyncio.sleep(spec["warmup"])
            samples = []
            nivcsw0 = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
            t_end = time.perf_counter() + spec["duration"]
            samples.append((time.perf_counter(), processed(), time.process_time()))
            while True:
                await asyncio.sleep(spec["interval"])
                samples.append((time.perf_counter(), processed(), time.process_time()))
                if samples[-1][0] >= t_end:
                    break
                if task.done():
                    break
            (ta, ba, ca), (tb, bb, cb) = samples[0], samples[-1]
            rates = sorted((b2 - b1) / (t2 - t1) for (t1, b1, _), (t2, b2, _) in zip(samples, samples[1:]))
            bars = bb - ba
            out.update(
                bars=bars,
                seconds=tb - ta,
                bars_per_s=bars / (tb - ta),
                bars_per_s_median_interval=rates[len(rates) // 2],
                bars_per_s_min_interval=rates[0],
                bars_per_s_max_interval=rates[-1],
                intervals=len(rates),
                cpu_s=cb - ca,
                cpu_util=(cb - ca) / (tb - ta),
                cpu_s_per_million_bars=(cb - ca) / bars * 1e6 if bars else None,
                preemptions_per_s=(resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - nivcsw0) / (tb - ta),
            )
        else:
            assert tracker is not None
            await wait_for(lambda: tracker.ready >= tracker.skip)
            if updates is not None:
                updates.calls = 0
            c0, t0 = time.process_time(), time.perf_counter()
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
            nivcsw0 = ru0.ru_nivcsw
            b0 = processed()
            await wait_for(lambda: tracker.measured >= spec["bursts"])
            c1, t1 = time.process_time(), time.perf_counter()
            b1 = processed()
            out.update(
                bursts=tracker.measured,
                burst_bars=tracker.expected,
                incomplete_bursts=tracker.incomplete,
                burst_latency_ms=_hist_doc(tracker.hist, 1e6),
                # first -> last message receive time of the burst (how the burst arrived)
                burst_arrival_span_ms=_hist_doc(tracker.span_hist, 1e6),
                # last message received -> cross-section ready
                burst_after_last_arrival_ms=_hist_doc(tracker.tail_hist, 1e6),
                burst_samples_ms=[round(x / 1e6, 4) for x in tracker.samples],
                seconds=t1 - t0,
                bars=b1 - b0,
                cpu_s=c1 - c0,
                cpu_util=(c1 - c0) / (t1 - t0),
                cpu_s_per_million_bars=(c1 - c0) / (b1 - b0) * 1e6 if b1 > b0 else None,
                preemptions_per_s=(resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - nivcsw0) / (t1 - t0),
                # page faults (first touch of ring memory, allocations) per measured burst
                minor_faults_per_burst=(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - ru0.ru_minflt)
                / max(1, tracker.measured),
            )
            if updates is not None:
                out["engine_updates_per_burst"] = updates.calls / max(1, tracker.measured)
    finally:
        stop.set()
        if conn is not None:
            try:
                await asyncio.wait_for(conn.stop(), 5.0)
            except Exception:  # noqa: BLE001
                pass
        try:
            await asyncio.wait_for(task, 10.0)
        except (asyncio.CancelledError, asyncio.TimeoutError):
            pass
        except Exception as e:  # noqa: BLE001 - reported, the measurement may still stand
            out.setdefault("client_error", repr(e))

    if client == "fastfeed":
        assert stats is not None and engine is not None
        try:
            session.flush_stats()  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001
            pass
        sd = stats.as_dict()
        out["frame_latency_us"] = sd.get("processing_latency_us")
        out["counters"] = {k: sd.get(k) for k in ("frames", "messages", "bars", "decode_errors",
                                                   "unknown_messages", "stale_dropped",
                                                   "future_rejected", "reconnects")}
        out["engine_counters"] = dict(engine.counters)
    else:
        out["counters"] = {"messages": meter.messages, "bars": meter.bars, "errors": meter.errors}  # type: ignore[possibly-undefined]
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def worker_main(spec: dict[str, Any]) -> dict[str, Any]:
    cpus = spec.get("cpus")
    if cpus:
        pin(0, set(cpus))
    import gc
    import logging

    logging.basicConfig(level=logging.ERROR)
    gc.collect()
    try:
        return asyncio.run(_worker_async(spec))
    except Exception as e:  # noqa: BLE001 - one line for the report
        return {"error": f"{type(e).__name__}: {e}", "peak_rss_mb": peak_rss_mb()}


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.stderr.write("usage: python -m fastfeed.bench.worker SPEC (JSON; internal to fastfeed bench)\n")
        return 2
    res = worker_main(json.loads(argv[0]))
    sys.stdout.write(json.dumps(res) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
