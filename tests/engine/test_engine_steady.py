"""Steady state against the reference: a full-depth history (windows 60/300/900 s).

Hypothesis draws the market (a few rows, random walks on a cent grid, flat stretches,
level jumps, zero volumes, silent seconds, late bars and corrections); more than 900
seconds are applied one per clock step, so every window fills, evicts and wraps the
store and the deque rings many times.  Engine and reference are compared every few
seconds and at every second of the last stretch: T, counters, every window
(high/low/open/close/count exact, volume and vwap within 1e-9 of math.fsum) and the
history of every row.
"""
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastfeed._ext.engine import Engine
from fastfeed.engine.reference import ReferenceEngine, assert_history_match, assert_windows_match

ROWS = 3
WINDOWS = (60, 300, 900)
T0 = 1_700_000_000


@st.composite
def market(draw):
    seconds = draw(st.integers(930, 1_150))
    seed = draw(st.integers(0, 2**32 - 1))
    return seconds, seed, draw(st.sampled_from(["walk", "flat", "jumps", "trend"]))


def bars_of_second(rng, t, price, shape):
    """One second of bars: some rows silent, some late or corrected."""
    rows, secs, vals = [], [], []
    for r in range(ROWS):
        if rng.random() < 0.05:
            continue                                   # silent this second
        if shape == "flat":
            step = 0 if rng.random() < 0.9 else int(rng.integers(-3, 4))
        elif shape == "jumps" and rng.random() < 0.01:
            step = int(rng.choice([-1, 1])) * price[r] // 2
        elif shape == "trend":
            step = int(rng.integers(0, 3))
        else:
            step = int(rng.integers(-5, 6))
        price[r] = max(1, price[r] + step)
        o = price[r]
        c = max(1, o + int(rng.integers(-3, 4)))
        h = max(o, c) + int(rng.integers(0, 3))
        lo = max(1, min(o, c) - int(rng.integers(0, 3)))
        v = 0.0 if rng.random() < 0.1 else float(rng.integers(1, 10_000))
        late = int(rng.integers(1, 4)) if rng.random() < 0.03 else 0
        rows.append(r)
        secs.append(t - late)
        vals.append((o / 100, h / 100, lo / 100, c / 100, v, v * (h + lo + c) / 300))
        if rng.random() < 0.03:                        # a correction of the same bar
            if rng.random() < 0.5:                     # more extreme
                k = rng.uniform(0.5, 1.5)
                h2, l2 = h / 100 * max(k, 1), lo / 100 * min(k, 1)
            else:                                      # less extreme: the deque rescan path
                h2, l2 = max(o, c) / 100, min(o, c) / 100
            rows.append(r)
            secs.append(t - late)
            vals.append((o / 100, h2, l2, c / 100, v + 1, (v + 1) * c / 100))
    cols = list(zip(*vals)) if vals else [()] * 6
    return (np.array(rows, dtype=np.int64), np.array(secs, dtype=np.int64),
            *[np.array(x, dtype=np.float64) for x in cols])


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(market())
def test_engine_matches_reference_in_steady_state_with_full_depth(m):
    seconds, seed, shape = m
    rng = np.random.default_rng(seed)
    eng = Engine(ROWS, WINDOWS)
    ref = ReferenceEngine(ROWS, WINDOWS)
    price = [int(rng.integers(100, 100_000)) for _ in range(ROWS)]
    for i in range(seconds):
        t = T0 + i
        batch = bars_of_second(rng, t, price, shape)
        if rng.random() < 0.01:
            eng.advance_to(t)                          # the clock moves first, then the bars
            ref.advance_to(t)
        assert eng.upsert(*batch) == ref.upsert(*batch)
        if i % 37 == 0 or i >= seconds - 15:
            assert eng.counters == ref.counters
            assert_windows_match(eng, ref)
    assert eng.T == T0 + seconds - 1 and eng.counters["accepted"] > 0.9 * ROWS * seconds
    w900 = eng.window(900)
    assert (w900.count > 800).all()                    # every window really is full depth
    for r in range(ROWS):
        assert_history_match(eng, ref, r)
