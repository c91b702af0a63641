"""The engine's Cython API: a user's module ``cimport``s it from the installed package.

The test writes a small strategy module, compiles it (Cython + the C compiler, into a
temporary directory, with the installed package as the only include path), drives an
Engine through it from ``nogil`` code and checks the results against the Python API of
a second Engine fed the same bars.
"""
import importlib.util
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastfeed
from fastfeed._ext.engine import Engine
from fastfeed.engine.reference import bars

T0 = 1_700_000_000
PACKAGE_ROOT = pathlib.Path(fastfeed.__file__).resolve().parent.parent

STRATEGY = textwrap.dedent('''
    # cython: language_level=3
    from libc.stdint cimport int64_t
    from libc.math cimport NAN
    from fastfeed._ext.engine cimport Engine, WindowRow, bar_fate, BAR_ACCEPTED, BAR_INVALID

    def one_by_one(Engine e, const int64_t[::1] rows, const int64_t[::1] secs,
                   const double[::1] o, const double[::1] h, const double[::1] l,
                   const double[::1] c, const double[::1] v, const double[::1] pv, double now):
        cdef Py_ssize_t i, acc = 0
        with nogil:
            for i in range(rows.shape[0]):
                acc += e.upsert_bar(rows[i], secs[i], o[i], h[i], l[i], c[i], v[i], pv[i], now)
        return acc

    def batch(Engine e, const int64_t[::1] rows, const int64_t[::1] secs,
              const double[::1] o, const double[::1] h, const double[::1] l,
              const double[::1] c, const double[::1] v, const double[::1] pv, double now):
        cdef Py_ssize_t acc
        with nogil:
            acc = e.upsert_bars(rows.shape[0], &rows[0], &secs[0], &o[0], &h[0], &l[0],
                                &c[0], &v[0], &pv[0], now)
        return acc

    def advance(Engine e, int64_t second):
        with nogil:
            e.advance(second)
        return e.clock()

    def read(Engine e, int64_t W, int64_t row):
        cdef WindowRow w
        with nogil:
            w = e.read(e.window_index(W), row)
        return (w.open, w.high, w.low, w.close, w.volume, w.vwap, w.count)

    def read_rows(Engine e, int64_t W, const int64_t[::1] rows):
        cdef WindowRow out[64]
        cdef Py_ssize_t i, n = rows.shape[0]
        assert n <= 64
        with nogil:
            e.read_rows(e.window_index(W), &rows[0], n, out)
        return [(out[i].open, out[i].high, out[i].low, out[i].close, out[i].volume,
                 out[i].vwap, out[i].count) for i in range(n)]

    def fate(Engine e, int64_t second, double o, double h, double l, double c, double v):
        cdef int f
        with nogil:
            f = bar_fate(second, o, h, l, c, v, v * c, e.clock(), e.depth, e.max_future_skew, NAN)
        return f, f == BAR_ACCEPTED, f == BAR_INVALID
''')

BUILD = textwrap.dedent('''
    import sys
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension
    ext = Extension("ff_user_strategy", ["ff_user_strategy.pyx"])
    dist = Distribution({"ext_modules": cythonize([ext], include_path=[sys.argv[1]], quiet=True)})
    cmd = dist.get_command_obj("build_ext")
    cmd.inplace = True
    dist.run_command("build_ext")
''')


@pytest.fixture(scope="module")
def strategy(tmp_path_factory):
    """The compiled user module (compiled once for the tests of this file)."""
    assert (PACKAGE_ROOT / "fastfeed" / "_ext" / "engine.pxd").is_file(), \
        "engine.pxd is not installed with the package"
    d = tmp_path_factory.mktemp("cimport")
    (d / "ff_user_strategy.pyx").write_text(STRATEGY)
    out = subprocess.run([sys.executable, "-c", BUILD, str(PACKAGE_ROOT)], cwd=d,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    so = next(d.glob("ff_user_strategy*.so"))
    spec = importlib.util.spec_from_file_location("ff_user_strategy", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def market(seed=0, n=200, nrows=8):
    rng = np.random.default_rng(seed)
    rows = rng.integers(-1, nrows + 1, n)                 # some bad rows
    secs = T0 + np.sort(rng.integers(0, 30, n)) - rng.integers(0, 3, n)   # some late
    secs[50::13] -= 15                                    # some stale (depth 12)
    o = rng.uniform(10, 20, n)
    h, l = o + rng.uniform(0, 1, n), o - rng.uniform(0, 1, n)
    c = rng.uniform(l, h)
    o[::17] = h[::17] + 1.0                               # invalid: open above high
    v = rng.uniform(0, 100, n)
    return [np.ascontiguousarray(x) for x in bars(rows, secs, o, h, l, c, v)]


@pytest.mark.parametrize("mode", ["one_by_one", "batch"])
def test_cython_upserts_from_nogil_match_the_python_api(strategy, mode):
    nrows, windows = 8, (3, 10)
    a, b = Engine(nrows, windows, depth=12), Engine(nrows, windows, depth=12)
    cols = market()
    for i in range(0, len(cols[0]), 25):                  # batches of 25 bars
        part = [x[i:i + 25].copy() for x in cols]
        got = getattr(strategy, mode)(a, *part, T0 + 22.0)
        assert got == b.upsert(*part, now=T0 + 22.0)
        if mode == "batch":
            assert a.last_rows().tolist() == b.last_rows().tolist()
    assert_same_windows(strategy, a, b)
    later = b.T + 4                                       # evicts part of every window
    assert strategy.advance(a, later) == later
    b.advance_to(later)
    assert_same_windows(strategy, a, b)
    assert a.counters == b.counters
    assert min(a.counters[k] for k in ("invalid_rejected", "future_rejected", "stale_dropped", "bad_row")) > 0


def assert_same_windows(strategy, a, b):
    """Every (window, row) read through the Cython API equals the Python views of b."""
    seen = 0
    for W in b.windows:
        want = b.window(W)
        exp = np.array([[getattr(want, f)[r] for f in ("open", "high", "low", "close", "volume",
                                                       "vwap", "count")] for r in range(b.capacity)])
        got = np.array([strategy.read(a, W, r) for r in range(b.capacity)])
        assert np.array_equal(got, exp, equal_nan=True), W
        rows = np.array([3, 0, 7, 3], dtype=np.int64)
        assert np.array_equal(np.array(strategy.read_rows(a, W, rows)), got[rows], equal_nan=True)
        seen += int((want.count > 0).sum())
    assert seen > 0


def test_cython_reads_of_unknown_windows_and_rows_say_so(strategy):
    e = Engine(4, (5,))
    e.upsert(*bars([1], [T0], 2.0, v=3.0))
    assert strategy.read(e, 5, 1) == (2.0, 2.0, 2.0, 2.0, 3.0, 2.0, 1)
    for W, r in ((6, 1), (5, 4), (5, -1)):
        got = strategy.read(e, W, r)
        assert got[6] == -1 and all(x != x for x in got[:6])


def test_cython_bar_fate_is_the_engines_rule(strategy):
    e = Engine(4, (5,))
    e.upsert(*bars([1], [T0], 2.0))
    assert strategy.fate(e, T0, 2.0, 2.0, 2.0, 2.0, 1.0)[1]
    assert strategy.fate(e, T0, 2.5, 2.0, 1.0, 1.5, 1.0)[2]          # open above high
    assert strategy.fate(e, T0 - 5, 2.0, 2.0, 2.0, 2.0, 1.0)[0] == 3   # stale (depth 5)
    assert e.accepts(np.array([T0 - 5, T0]), *(np.array([2.0, 2.0]),) * 5).tolist() == [False, True]
