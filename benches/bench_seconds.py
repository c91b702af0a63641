"""Completed-second and strategy-thread benchmarks (pytest-benchmark).

Run: ``python -m pytest benches/bench_seconds.py --benchmark-only``

* ``test_tracker_burst``: the completed-second rule's work per engine update, for a
  12,000-bar burst in random order (``ns_per_bar`` in ``extra_info``), next to the
  engine's own upsert of the same burst;
* ``test_copy_frames``: what ``strategy_thread=True`` costs per delivered call: a
  consistent copy of every window for 12,000 instruments (3 windows: 60/300/900 s);
* ``test_second_latency`` (slow: a simulator process, ~15 s): the burst's last message ->
  ``on_second`` against -> the end of that read's engine update (``fastfeed bench --seconds``).
"""
import numpy as np
import pytest

from fastfeed._ext.engine import Engine
from fastfeed.strategy.callbacks import copy_frames
from fastfeed.engine.seconds import SecondTracker
from fastfeed.engine import Universe

T0 = 1_700_000_000
N = 12_000


def _burst(rng, t):
    rows = rng.permutation(N).astype(np.int64)
    return rows, np.full(N, t, dtype=np.int64)


def test_tracker_burst(benchmark):
    rng = np.random.default_rng(0)
    tracker = SecondTracker(16384, lambda T, info: None)
    state = {"t": T0}
    for _ in range(4):  # steady state: every row expected
        state["t"] += 1
        rows, secs = _burst(rng, state["t"])
        tracker.update(rows, secs, N, 0, 0, state["t"] - 900, state["t"])
    bursts = [_burst(rng, T0 + 5 + i) for i in range(64)]

    def one():
        state["t"] += 1
        rows, secs = bursts[state["t"] % 64]
        secs.fill(state["t"])
        tracker.update(rows, secs, N, 0, 0, state["t"] - 900, state["t"])

    benchmark(one)
    assert tracker.completed["complete"] > 0
    benchmark.extra_info["ns_per_bar"] = benchmark.stats.stats.median * 1e9 / N


@pytest.mark.parametrize("windows", [(60, 300, 900), (60,)], ids=["3w", "1w"])
def test_copy_frames(benchmark, windows):
    engine = Engine(16384, windows)
    universe = Universe(16384)
    for i in range(N):
        universe.row(f"T{i}")
    rows = np.arange(N, dtype=np.int64)
    price = np.full(N, 100.0)
    for s in range(3):
        engine.upsert(rows, np.full(N, T0 + s, dtype=np.int64), price, price, price, price, price, price)
    frames = benchmark(copy_frames, engine, universe)
    assert len(frames) == len(windows) and len(frames[60].close) == N
    benchmark.extra_info["bytes"] = sum(f.close.nbytes * 7 for f in frames.values())


@pytest.mark.slow
def test_second_latency(benchmark):
    from fastfeed.bench.seconds import run_second_bench

    doc = benchmark.pedantic(run_second_bench, kwargs=dict(seconds=20, speed=10.0), rounds=1, iterations=1)
    for c in doc["cases"]:
        key = f"tf{c['trade_fraction']:g}"
        benchmark.extra_info[key] = {k: c[k] for k in ("reasons", "update_us", "second_us", "rule_cost_us")}
        assert c["reconnects"] == 0
