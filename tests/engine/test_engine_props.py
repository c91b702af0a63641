"""Property tests: random and adversarial sequences through Engine and the reference.

After every step: T, counters, accepted count, last_rows, every window (high/low/open/
close/count exact; volume/vwap within 1e-9 relative of math.fsum, vwap NaN iff
volume 0) and the history of a row must agree.
"""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastfeed._ext.engine import Engine
from fastfeed.engine.reference import ReferenceEngine, assert_history_match, assert_windows_match, bars

N = 4
BASE = 1_000

# price levels: constants, ties, a 1e6 -> 1.0 level jump, awkward decimals
PRICES = st.one_of(
    st.sampled_from([1.0, 1.0, 2.0, 3.0, 0.1, 0.3, 1e6, 1e6 + 0.5, 1e6 - 0.25]),
    st.floats(min_value=1e-3, max_value=1e7, allow_nan=False, allow_infinity=False),
)
VOLUMES = st.one_of(
    st.sampled_from([0.0, 0.0, 1.0, 0.1, 0.2, 0.3, 1e6, 1e-6, 12345.678]),
    st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False),
    # 24 orders of magnitude: makes compensated add/remove leave residues
    st.builds(lambda m, e: m * 10.0 ** e, st.floats(0.0, 1.0), st.integers(-8, 16)),
)
BAD = st.sampled_from([math.nan, math.inf, -math.inf])


@st.composite
def bar(draw, nrows):
    row = draw(st.one_of(st.integers(0, nrows - 1), st.integers(0, nrows - 1),
                         st.sampled_from([-1, nrows, 2**40])))
    # offset relative to the current clock: mostly near it, some far past/future
    off = draw(st.one_of(st.integers(-3, 2), st.integers(-25, 25), st.sampled_from([-200, 0, 0, 1, 500])))
    a, b = draw(PRICES), draw(PRICES)
    h, l = max(a, b), min(a, b)
    o = draw(st.sampled_from([h, l, (h + l) / 2, a]))
    c = draw(st.sampled_from([h, l, (h + l) / 2, b]))
    v = draw(VOLUMES)
    pv = v * draw(st.sampled_from([c, (h + l) / 2, o]))
    kind = draw(st.integers(0, 44))
    if kind == 0:
        v = -1.0                       # invalid: negative volume
    elif kind == 1:
        h, l = l - 1.0, h              # invalid: high < low
    elif kind == 2:
        o = draw(BAD)                  # invalid: non-finite
    elif kind == 3:
        pv = draw(BAD)
    elif kind == 4:
        o = h * 1.5 + 1.0              # invalid: open above high
    elif kind == 5:
        c = l * 0.5                    # invalid: close below low
    elif kind == 6:                    # invalid: a price <= 0 (the bar is otherwise consistent)
        l = draw(st.sampled_from([0.0, -0.0, -1.0]))
        o = c = draw(st.sampled_from([l, h]))
    elif kind == 7:                    # invalid: every price negative, in order
        o, h, l, c = -o, -l, -h, -c
    return (row, off, o, h, l, c, v, pv)


@st.composite
def scenario(draw):
    # 1, 2, 3 windows, and 4, 5, 7 (the lane kernels do two windows at a time: pairs,
    # an odd last window, and more than one pair)
    windows = draw(st.sampled_from([(3, 7), (5,), (2, 4, 9), (1, 6), (10, 4, 2),
                                    (9, 2, 5, 3), (1, 2, 3, 5, 8), (7, 1, 6, 2, 5, 3, 4)]))
    depth = max(windows) + draw(st.sampled_from([0, 0, 1, 5]))
    steps = draw(st.lists(st.one_of(
        st.tuples(st.just("upsert"), st.lists(bar(N), min_size=1, max_size=8),
                  st.one_of(st.just(math.nan), st.floats(-3, 3))),
        st.tuples(st.just("advance"), st.one_of(st.integers(0, 3), st.integers(0, 40))),
    ), min_size=1, max_size=40))
    return windows, depth, steps


def run(windows, depth, steps, skew=2.0, nrows=N, start=False):
    """Drive engine and reference through ``steps`` (offsets from the clock), comparing
    after every step; ``start``: one bar first, so that the first batch is not the one
    that starts the clock."""
    eng = Engine(nrows, windows, depth, max_future_skew=skew)
    ref = ReferenceEngine(nrows, windows, depth, max_future_skew=skew)
    if start:
        eng.upsert(*bars([0], [BASE], 1.0))
        ref.upsert(*bars([0], [BASE], 1.0))
    for step in steps:
        base = max(ref.T, BASE)
        if step[0] == "advance":
            eng.advance_to(base + step[1])
            ref.advance_to(base + step[1])
        else:
            batch, now_off = step[1], step[2]
            cols = list(zip(*batch))
            rows = np.array(cols[0], dtype=np.int64)
            secs = np.array([base + off for off in cols[1]], dtype=np.int64)
            vals = [np.array(c, dtype=np.float64) for c in cols[2:]]
            now = base + now_off if not math.isnan(now_off) else math.nan
            # the accept rule asked before the batch, each bar against the current clock
            assert eng.accepts(secs, *vals[:5], now=now, pv=vals[5]).tolist() == \
                ref.accepts(secs, *vals[:5], now=now, pv=vals[5]).tolist()
            got = eng.upsert(rows, secs, *vals, now=now)
            want = ref.upsert(rows, secs, *vals, now=now)
            assert got == want
            assert eng.last_rows().tolist() == ref.last_rows().tolist()     # first-seen order
        assert eng.counters == ref.counters
        assert_windows_match(eng, ref)
    for r in range(nrows):
        assert_history_match(eng, ref, r)
    return eng


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_engine_matches_reference_on_random_sequences(sc):
    run(*sc)


@st.composite
def trending(draw):
    """Long monotone / constant / level-jump runs: stress deque fronts and sum cancellation."""
    windows = draw(st.sampled_from([(3, 7), (2, 4, 9), (8,)]))
    depth = max(windows) + draw(st.sampled_from([0, 3]))
    shape = draw(st.sampled_from(["up", "down", "const", "jump", "zigzag"]))
    n = draw(st.integers(5, 40))
    gaps = draw(st.lists(st.sampled_from([1, 1, 1, 0, 2, 3, 12]), min_size=n, max_size=n))
    steps = []
    for i in range(n):
        if shape == "up":
            p = 1.0 + i
        elif shape == "down":
            p = 100.0 - i
        elif shape == "const":
            p = 5.0
        elif shape == "jump":
            p = 1e6 if i < n // 2 else 1.0
        else:
            p = 1.0 if i % 2 else 1e6
        v = 1e6 if (shape == "jump" and i < n // 2) else draw(st.sampled_from([0.0, 1.0, 0.1]))
        rows = draw(st.lists(st.integers(0, N - 1), min_size=1, max_size=N, unique=True))
        batch = [(r, gaps[i], p, p, p, p, v, v * p) for r in rows]
        steps.append(("upsert", batch, math.nan))
        if draw(st.integers(0, 4)) == 0:      # a correction of a bar just sent
            r, off, *_ = batch[0]
            q, v = draw(PRICES), draw(VOLUMES)
            steps.append(("upsert", [(r, 0, q, q, q, q, v, v * q)], math.nan))
    return windows, depth, steps


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trending())
def test_engine_matches_reference_on_adversarial_runs(sc):
    # trending(): each batch offset is "gap seconds after the current clock"
    windows, depth, steps = sc
    run(windows, depth, steps)


@st.composite
def late_and_corrected(draw):
    """Bars arriving out of order and corrections (better and worse) inside windows."""
    windows = draw(st.sampled_from([(4, 9), (6,), (2, 5, 9)]))
    depth = max(windows) + draw(st.sampled_from([0, 4]))
    steps = [("upsert", [(r, 0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0) for r in range(N)], math.nan)]
    for _ in range(draw(st.integers(5, 40))):
        row = draw(st.integers(0, N - 1))
        off = draw(st.integers(-depth - 1, 1))
        a, b = draw(PRICES), draw(PRICES)
        v = draw(VOLUMES)
        steps.append(("upsert", [(row, off, a, max(a, b), min(a, b), b, v, v * b)], math.nan))
    return windows, depth, steps


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(late_and_corrected())
def test_engine_matches_reference_with_late_bars_and_corrections(sc):
    run(*sc)




@st.composite
def worse_corrections(draw):
    """A random walk filling the windows, then corrections that make held bars less
    extreme (a deque member gets a lower high / higher low: the segment rescan path),
    mixed with new bars and clock steps."""
    windows = draw(st.sampled_from([(4, 9), (3, 6, 12), (10,)]))
    depth = max(windows) + draw(st.sampled_from([0, 3]))
    n = max(windows) + draw(st.integers(0, 6))
    walk = draw(st.lists(st.sampled_from([-2.0, -1.0, 0.0, 1.0, 2.0]), min_size=n, max_size=n))
    steps = []
    price = 100.0
    for i, d in enumerate(walk):
        price += d
        steps.append(("upsert", [(r, 1 if i else 0, price, price + r, price - r, price, 1.0, price)
                                 for r in range(N)], math.nan))
    for _ in range(draw(st.integers(1, 30))):
        kind = draw(st.integers(0, 5))
        if kind == 0:
            steps.append(("advance", draw(st.integers(0, 3))))
            continue
        r = draw(st.integers(0, N - 1))
        off = draw(st.integers(-max(windows), 0))
        mid = draw(st.sampled_from([90.0, 95.0, 100.0, 105.0, 110.0]))
        spread = draw(st.sampled_from([0.0, 0.5, 3.0]))
        steps.append(("upsert", [(r, off, mid, mid + spread, mid - spread, mid, 2.0, 2 * mid)],
                      math.nan))
    return windows, depth, steps


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worse_corrections())
def test_engine_matches_reference_with_worse_corrections(sc):
    run(*sc)


@pytest.mark.slow
@settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(scenario(), trending(), late_and_corrected(), worse_corrections()))
def test_engine_matches_reference_long_fuzz(sc):
    """Opt-in (-m slow): all the generators above, many more examples."""
    run(*sc)


NB = 40          # rows of the burst tests


def burst_bar(row, gap, a, b, v, kind):
    """A bar of a burst from a few drawn numbers: valid, or invalid one way or another."""
    h, l = max(a, b), min(a, b)
    o, c = a, b
    if kind == 0:
        v = -1.0                       # invalid: negative volume
    elif kind == 1:
        o = h + 1.0                    # invalid: open above high
    elif kind == 2:
        c = math.nan                   # invalid: non-finite
    elif kind == 3:
        row = NB                       # bad row
    return (row, gap, o, h, l, c, v, v * c)


@st.composite
def bursts(draw):
    """Whole-second bursts (many rows, some twice, some invalid or out of range),
    each one or more seconds after the last, with jumps past windows and depth."""
    windows = draw(st.sampled_from([(3, 7), (2, 5, 9), (6,), (9, 2, 5, 3), (1, 2, 3, 5, 8),
                                    (7, 1, 6, 2, 5, 3, 4)]))
    depth = max(windows) + draw(st.sampled_from([0, 2]))
    steps = []
    levels = st.sampled_from([1.0, 2.0, 3.0, 0.5, 1e6, 1e6 + 0.5, 0.001])
    for _ in range(draw(st.integers(2, 8))):
        if draw(st.integers(0, 6)) == 0:
            steps.append(("advance", draw(st.integers(0, 3))))
        gap = draw(st.sampled_from([1, 1, 1, 2, 3, depth + 1]))
        size = draw(st.sampled_from([32, 36, 40, 40, 55]))
        rows = draw(st.lists(st.integers(0, NB - 1), min_size=size, max_size=size))
        a, b = draw(levels), draw(levels)
        vols = draw(st.lists(st.sampled_from([0.0, 1.0, 0.1, 1e6, 12345.678]), min_size=4, max_size=4))
        kinds = draw(st.lists(st.integers(0, 24), min_size=size, max_size=size))
        batch = [burst_bar(r, gap, a * (1 + (r % 3) / 7), b * (1 + (r % 5) / 11), vols[r % 4], k)
                 for r, k in zip(rows, kinds)]
        steps.append(("upsert", batch, draw(st.sampled_from([math.nan, math.nan, 0.0, 2.0]))))
    return windows, depth, steps


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bursts())
def test_engine_matches_reference_on_whole_second_bursts(sc):
    windows, depth, steps = sc
    run(windows, depth, steps, nrows=NB, start=True)


def test_engine_matches_reference_with_more_windows_than_one_eviction_call():
    """70 windows: the eviction kernel takes 64 windows per call, so a row's one-second
    step needs two calls (and the general K code, not the 3-window one)."""
    rng = np.random.default_rng(11)
    windows = tuple(int(w) for w in rng.permutation(np.arange(1, 71)))
    steps, price = [], 100.0
    for t in range(160):
        batch = []
        for r in range(3):
            if rng.random() < 0.85:
                price = max(0.01, round(price + rng.normal(0, 0.5), 2))
                spread = round(float(rng.uniform(0, 0.3)), 2)
                v = float(rng.choice([0.0, 1.0, 250.0, 1e6]))
                batch.append((r, 0, price, price + spread, price - spread / 2, price, v, v * price))
        if batch:
            steps.append(("upsert", batch, math.nan))
        steps.append(("advance", 1 if t % 37 else 3))
    run(windows, 75, steps, nrows=3)
