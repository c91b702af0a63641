"""NATS relay benchmarks, real processes on loopback (fastfeed.relay.bench).

- ``test_relay_overhead``: fastfeed's max-rate bars/s on the simulator (12,000 tickers,
  100 bars per frame) without and with the relay publishing to the real nats-server
  (JetStream, file store), alternated in fresh processes → ``ratio`` (target >= 0.90),
  plus CPU seconds per million bars of the vendor thread and of the publisher thread.
- ``test_relay_overhead_inprocess``: the same captured full-market messages through a
  plain session and a relayed one → ``vendor_thread_ratio`` (the vendor thread's CPU,
  publisher on another core), ``vendor_thread_ratio_same_core``, ``process_cpu_ratio``
  (the whole relay process, publishing included). Free of the simulator's and the NATS
  server's competition for the cores, unlike ``test_relay_overhead`` on a 2-core box.
- ``test_relay_latency``: at the simulator's real cadence (one 12,000-ticker burst per
  second), relay socket read → consumer engine updated, p50/p90/p99 over every update of
  1, 4 and 16 consumer processes.
- ``test_warm_start``: a stream holding 900 s of a 12,000-ticker market; seconds until a
  new consumer applied all of it (target < 20 s), its windows checked equal to the relay's.

Run: ``python -m pytest benches/bench_relay.py --benchmark-only -s`` (or
``python -m fastfeed.relay.bench [--quick]`` for the same figures as JSON). Each case
takes 1-3 minutes; the figures are in ``extra_info`` and printed.
"""
from __future__ import annotations

import json

import pytest

from fastfeed.relay import bench

pytestmark = pytest.mark.timeout(1800)


def _once(benchmark, fn):
    out = {}

    def run():
        out.update(fn())

    benchmark.pedantic(run, rounds=1, iterations=1)
    return out


def test_relay_overhead(benchmark):
    r = _once(benchmark, bench.relay_overhead)
    benchmark.extra_info.update({k: v for k, v in r.items() if k != "runs"})
    print("\nrelay overhead:", json.dumps(r, default=str))


def test_relay_overhead_inprocess(benchmark):
    r = _once(benchmark, bench.relay_overhead_inprocess)
    benchmark.extra_info.update(r)
    print("\nrelay overhead (in process):", json.dumps(r, default=str))


def test_relay_latency(benchmark):
    r = _once(benchmark, bench.relay_latency)
    benchmark.extra_info.update(r)
    print("\nrelay latency:", json.dumps(r, default=str))


def test_warm_start(benchmark):
    r = _once(benchmark, bench.warm_start)
    benchmark.extra_info.update(r)
    assert r.get("windows_equal") is True
    print("\nwarm start:", json.dumps(r, default=str))
