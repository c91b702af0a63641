"""Shared-memory segment benchmarks (pytest-benchmark + the process benchmarks of
``fastfeed.share.bench``).

Run: ``python -m pytest benches/bench_share.py --benchmark-only -s``

* ``publish`` after an engine update of 100 bars (12,000 rows, windows 60/300/900) and
  after a clock advance (every row), and the whole update side by side with the
  engine alone (``extra_info``: ``overhead_ratio``);
* a consistent copy of 12,000 rows x 3 windows (``frames()``; and reusing an earlier
  copy's memory, ``frames(out=...)``) and of one window;
* writer throughput without and with 8 reader processes copying windows
  (``wall_ratio``, ``cpu_ratio``: target >= 0.95 where the readers have their own cores);
* publish -> ``wait_update`` returns in another process, futex and spin: p50/p99 us.

The process benchmarks print their result (one JSON line each) and put it in
``extra_info``; their ``benchmark`` timing is the run itself (one round).
"""
import json

import numpy as np
import pytest

from fastfeed.share import SegmentWriter, attach
from fastfeed.share import bench as sb


@pytest.fixture(scope="module")
def market():
    m = sb.Market(12000, (60, 300, 900))
    w = SegmentWriter(f"ffbench-suite-{id(m)}", m.engine, m.universe, m.stats, stats_interval=0)
    m.warm(30, 100, w)
    yield m, w
    w.close()


def test_publish_after_100_bar_update(benchmark, market):
    m, w = market
    bs = m.second(100)
    for b in bs:
        m.engine.upsert(*b)
    w.publish()
    rows = np.ascontiguousarray(bs[-1][0])
    benchmark(w.publish, rows)
    benchmark.extra_info["us_per_row_and_window"] = benchmark.stats.stats.median * 1e6 / (100 * 3)


def test_publish_after_clock_advance(benchmark, market):
    m, w = market
    benchmark(w.publish_all)
    benchmark.extra_info["rows"] = 12000


def test_consistent_copy_12000_rows_3_windows(benchmark, market):
    m, w = market
    r = attach(w.name, timeout=5)
    frames = benchmark(r.frames)
    assert len(frames[60].symbols) == 12000
    r.close()


def test_consistent_copy_12000_rows_3_windows_reusing_memory(benchmark, market):
    m, w = market
    r = attach(w.name, timeout=5)
    keep = r.frames()
    benchmark(r.frames, out=keep)
    r.close()


def test_consistent_copy_one_window(benchmark, market):
    m, w = market
    r = attach(w.name, timeout=5)
    benchmark(r.window, 60, copy=True)
    r.close()


def _once(benchmark, fn, **kw):
    out = benchmark.pedantic(fn, kwargs=kw, rounds=1, iterations=1)
    benchmark.extra_info.update(out)
    print(json.dumps(out))
    return out


def test_update_cost_side_by_side(benchmark):
    _once(benchmark, sb.publish_cost, seconds=10, warm=20)


@pytest.mark.parametrize("mode", ["busy", "wait"])
def test_writer_throughput_with_8_readers(benchmark, mode):
    _once(benchmark, sb.writer_throughput, readers=8, phases=6, reader_mode=mode)


@pytest.mark.parametrize("mode,spin", [("futex", 0.0), ("spin", 0.0), ("spin", 0.003)])
def test_publish_to_wait_update_latency(benchmark, mode, spin):
    _once(benchmark, sb.wake_latency, mode=mode, spin=spin, n=1000)
