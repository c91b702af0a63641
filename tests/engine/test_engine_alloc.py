"""Steady-state upserts and clock advances allocate nothing (tracemalloc)."""
import tracemalloc

import numpy as np

from fastfeed._ext.engine import Engine
from fastfeed.engine.reference import bars

T0 = 1_700_000_000


def test_steady_state_upserts_allocate_nothing():
    n = 2_000
    e = Engine(n, (5, 20), depth=30)
    rng = np.random.default_rng(1)
    rows = rng.permutation(n).astype(np.int64)
    batch = list(bars(rows, [T0] * n, rng.uniform(10, 20, n), v=rng.uniform(0, 100, n)))
    secs = batch[1]

    rows, secs, o, h, l, c, v, pv = batch

    def second(i):
        secs.fill(T0 + i)
        e.upsert(rows, secs, o, h, l, c, v, pv)

    for i in range(40):                      # warm up: fill the depth, buffers, views
        second(i)
    e.window(20)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for i in range(40, 140):             # 100 bursts = 200,000 bars, plus evictions
            second(i)
            e.upsert(rows, secs, o, h, l, c, v, pv)  # a full burst of corrections
            e.advance_to(T0 + i)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before == 0
    # Transient peak: only constant noise (tracemalloc's own result objects, the loop's
    # ints, the int upsert returns), ~100-300 bytes for 300 calls and 400,000 bars.
    # One object per bar or per call would show up as >= 9,600 bytes here.
    assert peak - before < 1024, peak - before
    assert e.counters["accepted"] == 240 * n
