"""The steady clock step of three windows, against the reference.

When the engine has 3 windows and the clock moves one second with every window losing
exactly one second, the eviction runs one pass over the rows in C: a straight-line row
kernel for rows that hold the evicted second in every window (and more than one bar in
each), the general code for every other row.  These tests drive full-depth histories
through that pass over many rows (several 64-row groups, rows the engine never sees,
rows that fall silent), with windows in any order, prices on and off the 1e-4 grid
(a moved max/min front takes its value from its deque key or from the store), moved
fronts several per row, gaps after the evicted second (the earliest bar is found by a
scan), and volume level jumps that cancel the sums (the exact recompute), and compare
every window with the reference after every second.

The pass is compiled twice (SSE2 and AVX2, chosen by CPUID); every test here runs under
each copy the CPU has (the ``isa`` fixture forces it with the private hook
``fastfeed._ext.engine._set_evict_isa`` and restores "auto" after).  The pass also takes
one-second steps in the fill phase after a start (the longest windows not full yet: a
row holds the evicted second of the short windows only, or the clock is below a window's
length so that window loses nothing); ``internals["evict3_fill_rows"]`` (private) counts
the rows it did so, which the fill-phase test checks.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastfeed._ext import engine as _engine
from fastfeed._ext.engine import Engine
from fastfeed.engine.reference import ReferenceEngine, assert_windows_match

T0 = 1_700_000_000
CAPACITY = 300          # rows 0..299, presence padded to 320: five 64-row groups
USED = 200              # rows 200..299 never get a bar (an empty stretch of the pass)


def _isas():
    out = ["sse2"]
    prev = _engine._set_evict_isa("auto")
    try:
        _engine._set_evict_isa("avx2")
        out.append("avx2")
    except ValueError:
        pass
    finally:
        _engine._set_evict_isa(prev)
    return out


@pytest.fixture(autouse=True, params=_isas())
def isa(request):
    """Every test of this module under each copy of the pass this CPU runs."""
    prev = _engine._set_evict_isa(request.param)
    yield request.param
    _engine._set_evict_isa("auto")
    assert prev in ("auto", "sse2", "avx2")


@st.composite
def steady_case(draw):
    wins = draw(st.permutations([2, 5, 11]))          # the shortest window need not be first
    depth = draw(st.sampled_from([11, 13]))
    return (tuple(wins), depth, draw(st.integers(0, 2**32 - 1)),
            draw(st.booleans()), draw(st.sampled_from([0.0, 0.05, 0.3])))


def second_of_bars(rng, t, cents, off_grid, p_silent, cancel_rows):
    rows = rng.permutation(USED)
    keep = rng.random(USED) >= p_silent
    rows = rows[keep]
    rows = rows[(rows % 50) != 7] if t % 40 < 20 else rows   # some rows silent for long stretches
    n = len(rows)
    step = rng.integers(-3, 4, n)
    c0 = cents[rows]
    c1 = np.maximum(c0 + step, 1)
    cents[rows] = c1
    o, c = c0 / 100, c1 / 100
    wide = rng.random(n) < 0.05                        # bars that become the max and min of every window
    h = np.maximum(o, c) + np.where(wide, 5.0, rng.integers(0, 3, n) / 100)
    lo = np.maximum(np.minimum(o, c) - np.where(wide, 0.5 * np.minimum(o, c), rng.integers(0, 3, n) / 100), 0.01)
    if off_grid:
        o, h, lo, c = o * 1.000000123, h * 1.000000123, lo * 1.000000123, c * 1.000000123
    v = rng.integers(1, 1000, n).astype(np.float64)
    # some rows: volumes ~1e12 for two seconds, then 0: once those leave a window, its
    # sums must be exactly 0 (vwap NaN), not the residue of the cancellation
    canc = np.isin(rows, cancel_rows)
    v[canc] = np.where(t % 9 < 2, rng.random(canc.sum()) * 1e12, 0.0)
    pv = v * c
    return rows.astype(np.int64), np.full(n, t, dtype=np.int64), o, h, lo, c, v, pv


@settings(max_examples=5, deadline=None,     # x each ISA copy: ~10 s each on a 2-core VM
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(steady_case())
def test_steady_one_second_steps_of_three_windows_match_the_reference(case):
    wins, depth, seed, off_grid, p_silent = case
    rng = np.random.default_rng(seed)
    eng = Engine(CAPACITY, wins, depth=depth)
    ref = ReferenceEngine(CAPACITY, wins, depth=depth)
    cents = rng.integers(100, 5000, USED)
    cancel_rows = rng.choice(USED, 10, replace=False)
    for i in range(3 * depth + 10):
        t = T0 + i
        batch = second_of_bars(rng, t, cents, off_grid, p_silent, cancel_rows)
        if i % 3 != 2:
            eng.advance_to(t)                          # the step alone (what it evicted is
            ref.advance_to(t)                          # seen before new bars cover it)
            assert_windows_match(eng, ref)
        assert eng.upsert(*batch) == ref.upsert(*batch)
        assert_windows_match(eng, ref)
    assert eng.counters == ref.counters
    assert eng.internals["sum_recomputes"] > 0         # the cancelled sums were recomputed


def test_a_bar_that_is_every_windows_max_and_min_leaves_all_six_fronts():
    """One row whose oldest bar is the strict max and min of every window: all six
    fronts move on the same step (off the price grid: the values come from the store)."""
    wins = (3, 2, 4)
    eng, ref = Engine(70, wins), ReferenceEngine(70, wins)
    for i in range(12):
        t = T0 + i
        rows = np.arange(70, dtype=np.int64)
        wide = (i % 4 == 0)
        o = np.full(70, 10.000000123)
        h = o + (5.0 if wide else 0.25)
        lo = o - (5.0 if wide else 0.25)
        v = np.full(70, 2.0)
        batch = (rows, np.full(70, t, dtype=np.int64), o, h, lo, o.copy(), v, v * o)
        eng.advance_to(t)
        ref.advance_to(t)
        assert_windows_match(eng, ref)
        assert eng.upsert(*batch) == ref.upsert(*batch)
        assert_windows_match(eng, ref)


def test_the_steady_step_recomputes_a_row_whose_sums_cancelled():
    """A row whose huge bar leaves the shortest window in a steady step: the step itself
    recomputes that window's sums exactly (counted in internals), whatever the others do."""
    wins, rows = (2, 5, 11), 128
    eng = Engine(rows, wins, depth=11)
    ref = ReferenceEngine(rows, wins, depth=11)
    rng = np.random.default_rng(5)
    r = np.arange(rows, dtype=np.int64)
    for i in range(30):
        t = T0 + i
        c = np.round(rng.uniform(10, 20, rows), 2)
        v = np.ones(rows)
        if i == 20:
            v[17] = 3e11                               # row 17's level jump, for one second
        batch = (r, np.full(rows, t, dtype=np.int64), c, c + 0.01, c - 0.01, c, v, v * c)
        before = eng.internals["sum_recomputes"]
        eng.advance_to(t)
        ref.advance_to(t)
        if i == 22:                                    # the 3e11 bar leaves window 2 now
            assert eng.internals["sum_recomputes"] > before
        assert_windows_match(eng, ref)
        assert eng.upsert(*batch) == ref.upsert(*batch) == rows
        assert_windows_match(eng, ref)


@st.composite
def fill_case(draw):
    wins = draw(st.permutations([3, 11, 26]))         # the shortest window need not be first
    depth = draw(st.sampled_from([26, 29]))
    start = draw(st.sampled_from([T0, 1, 9]))         # 1, 9: the clock below a window's length
    return (tuple(wins), depth, start, draw(st.integers(0, 2**32 - 1)),
            draw(st.booleans()), draw(st.sampled_from([0.0, 0.05, 0.3])))


@settings(max_examples=4, deadline=None,     # x each ISA copy
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(fill_case())
def test_fill_phase_one_second_steps_match_the_reference(case):
    """From an empty engine, one-second steps while the longest windows fill: each step
    every window loses one second or nothing (a row holds the evicted second of some
    windows only; with a clock below a window's length, that window loses nothing at
    all).  The fast pass takes those rows (counted in internals["evict3_fill_rows"]);
    rows silent for stretches, prices on and off the grid, cancelling volume jumps."""
    wins, depth, start, seed, off_grid, p_silent = case
    rng = np.random.default_rng(seed)
    eng = Engine(CAPACITY, wins, depth=depth)
    ref = ReferenceEngine(CAPACITY, wins, depth=depth)
    cents = rng.integers(100, 5000, USED)
    cancel_rows = rng.choice(USED, 10, replace=False)
    for i in range(max(wins) + 6):
        t = start + i
        batch = second_of_bars(rng, t, cents, off_grid, p_silent, cancel_rows)
        if i % 3 != 2:
            eng.advance_to(t)
            ref.advance_to(t)
            assert_windows_match(eng, ref)
        assert eng.upsert(*batch) == ref.upsert(*batch)
        assert_windows_match(eng, ref)
    assert eng.counters == ref.counters
    assert eng.internals["evict3_fill_rows"] > 0       # the fast pass did fill-phase rows


def test_set_evict_isa_names():
    assert _engine._set_evict_isa("sse2") in ("auto", "sse2", "avx2")
    assert _engine._set_evict_isa("auto") == "sse2"
    with pytest.raises(ValueError):
        _engine._set_evict_isa("avx512")
