"""The upsert paths added on branch upsert3 (docs/ENGINE.md, "Semantics": arguments).

``upsert`` reads an exact 1-D native int64/float64 ndarray in place and takes anything
else through the buffer protocol; both must give the same engine, and what the buffer
protocol rejects must still raise.
"""
import array

import numpy as np
import pytest

from fastfeed._ext.engine import Engine
from fastfeed.engine.reference import bars

T0 = 1_700_000_000


class Sub(np.ndarray):
    """An ndarray subclass: not an exact ndarray, so it takes the buffer-protocol path."""


def _state(e):
    return [e.window_copy(w) for w in e.windows], e.counters


def _assert_same(a, b):
    (wa, ca), (wb, cb) = _state(a), _state(b)
    assert ca == cb
    for x, y in zip(wa, wb):
        for f in ("open", "high", "low", "close", "volume", "vwap", "count"):
            np.testing.assert_array_equal(getattr(x, f), getattr(y, f))


def _batch(seed):
    rng = np.random.default_rng(seed)
    n = 40
    rows = rng.integers(-1, 9, n)              # includes a bad row
    secs = T0 + rng.integers(0, 12, n)
    c = rng.integers(100, 120, n) / 100.0
    h = c + rng.integers(0, 5, n) / 100.0
    lo = c - rng.integers(0, 5, n) / 100.0
    o = np.clip(c + rng.integers(-3, 4, n) / 100.0, lo, h)
    v = rng.integers(0, 50, n).astype(float)
    return [rows.astype(np.int64), secs.astype(np.int64), o, h, lo, c, v, v * c]


@pytest.mark.parametrize("convert", [
    lambda a: a.view(Sub),                                  # subclass
    lambda a: memoryview(a),                                # plain buffer
    lambda a: array.array("q" if a.dtype.kind == "i" else "d", a.tolist()),
    lambda a: np.repeat(a, 2)[::2],                         # strided exact ndarray
])
def test_in_place_and_buffer_protocol_arguments_give_the_same_engine(convert):
    a, b = Engine(8, (3, 5)), Engine(8, (3, 5))
    for seed in range(5):
        cols = _batch(seed)
        assert a.upsert(*cols) == b.upsert(*[convert(x) for x in cols])
        assert a.last_rows().tolist() == b.last_rows().tolist()
    _assert_same(a, b)


def test_mixed_argument_kinds_and_n():
    a, b = Engine(8, (3, 5)), Engine(8, (3, 5))
    cols = _batch(9)
    mixed = [memoryview(x) if i % 2 else x for i, x in enumerate(cols)]
    assert a.upsert(*cols, n=25) == b.upsert(*mixed, n=25)
    _assert_same(a, b)


def test_in_place_path_still_rejects_what_the_buffer_protocol_rejects():
    e = Engine(4, (5,))
    rows, secs, o, h, l, c, v, pv = bars([0, 1], [T0] * 2, 1.0)
    with pytest.raises(TypeError, match="seconds"):
        e.upsert(rows, secs.astype(">i8"), o, h, l, c, v, pv)      # byte-swapped
    with pytest.raises(TypeError, match="close"):
        e.upsert(rows, secs, o, h, l, c.astype(">f8"), v, pv)
    with pytest.raises(TypeError, match="volume"):
        e.upsert(rows, secs, o, h, l, c, v.reshape(2, 1), pv)      # 2-D
    with pytest.raises(TypeError, match="pv"):
        e.upsert(rows, secs, o, h, l, c, v, pv.astype(np.uint64))
    with pytest.raises(TypeError, match="rows"):
        e.upsert(rows.astype(np.uint64), secs, o, h, l, c, v, pv)
    with pytest.raises(TypeError):
        e.upsert(rows, secs, o, [1.0, 1.0], l, c, v, pv)           # not a buffer
    assert e.counters["accepted"] == 0
    assert e.upsert(rows, secs, o, h, l, c, v, pv) == 2            # nothing left held


# -- deque pushes (ff_push / ff_key_cmp in ext/engine_lanes.h) ---------------------------
from fastfeed.engine.reference import ReferenceEngine, assert_windows_match  # noqa: E402


def _near(x, steps):
    """x moved by ``steps`` ulps (the same float32 as x for small steps)."""
    for _ in range(abs(steps)):
        x = np.nextafter(x, np.inf if steps > 0 else -np.inf)
    return float(x)


@pytest.mark.parametrize("windows", [(6,), (3, 9), (2, 5, 9), (9, 2, 5, 4)])
@pytest.mark.parametrize("level", [1.25, 2.0001, 3.14159])     # on and off the 1e-4 grid
def test_pushes_that_pop_past_the_mirrored_entries_match_the_reference(windows, level):
    """A push that pops two or more entries leaves the entry before the new back
    unmirrored; the next push that pops the back must then decide from the ring entry's
    key (exact grid key, float32, or the store on a float32 tie).  Highs and lows walk
    through ties, one-ulp neighbours and deep pops; every window is checked after every
    bar and after a correction of the latest bar."""
    e, ref = Engine(2, windows), ReferenceEngine(2, windows)
    # a descending staircase (every entry kept), then a bar above most of it (pops >= 2),
    # then bars that pop exactly the back (the entry before it is not mirrored)
    steps = [0, -3, -6, -9, -12, -4, -5, -2, -2, -7, 1, -1, -15, -14, -14, 2, -20, -19, -18]
    sec = 1_700_000_000
    for j, d in enumerate(steps):
        h = _near(level, d) if abs(d) <= 3 else level * (1 + d / 1000.0)
        lo = _near(level / 2, -d) if abs(d) <= 3 else level / 2 * (1 - d / 1000.0)
        args = bars([j % 2], [sec + j], lo, h, lo, lo, 1.0 + j)
        assert e.upsert(*args) == ref.upsert(*args)
        assert_windows_match(e, ref)
    # correct the latest bar of row 0 to a lower high / higher low (a deque member gets
    # less extreme), then to a higher one
    last0 = max(j for j in range(len(steps)) if j % 2 == 0)
    for f in (0.999, 1.002):
        h = level * f
        args = bars([0], [sec + last0], level / 2, h, level / 2, level / 2, 3.0)
        assert e.upsert(*args) == ref.upsert(*args)
        assert_windows_match(e, ref)
