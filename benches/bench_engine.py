"""Engine benchmarks (pytest-benchmark).

Run: ``python -m pytest benches/bench_engine.py --benchmark-only``
(add ``--benchmark-columns=min,median,mean,max,rounds`` for a compact table).

Every engine is first filled with ``depth`` seconds of bars for every row (steady
state: every clock advance really evicts a full second from every window).  The
``test_steady_*`` cases are the steady-state measurement (``fastfeed.bench.steady``): whole
market seconds at 12,000 and 1,000 rows, the decode of the same bars, and the ratios.  Rows in
a burst come in a random order, as a feed's would.  Per-bar figures are in
``extra_info`` (``ns_per_bar``, from the median); the targets are:
upsert <= 80 ns/bar for a 12,000-bar burst, clock advance for 12,000 rows x 3
windows <= 0.5 ms median, default full-universe configuration <= 1 GiB RSS.
"""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastfeed._ext.engine import Engine
from fastfeed.engine.universe import Universe

T0 = 1_700_000_000
WINDOWS = {"3w": (60, 300, 900), "1w": (60,)}


class Feed:
    """A filled engine plus a reusable burst: one bar per row for the next second."""

    def __init__(self, nrows, windows, capacity=16384, seed=0):
        self.engine = Engine(capacity, windows)
        self.n = nrows
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.rows = rng.permutation(nrows).astype(np.int64)
        self.secs = np.empty(nrows, dtype=np.int64)
        self.price = rng.uniform(10, 500, nrows)
        self.o, self.h, self.l, self.c = (np.empty(nrows) for _ in range(4))
        self.v = np.empty(nrows)
        self.pv = np.empty(nrows)
        self.t = T0
        for _ in range(self.engine.depth):
            self.next_burst()
            self.engine.upsert(self.rows, self.secs, self.o, self.h, self.l, self.c, self.v, self.pv)

    def next_burst(self):
        """Prepare (not apply) the bars of second t+1: a random walk per row."""
        self.t += 1
        n = self.n
        step = self.rng.normal(0, 1e-3, n)
        self.o[:] = self.price
        self.c[:] = self.price * (1 + step)
        spread = np.abs(self.rng.normal(0, 5e-4, n)) * self.price
        self.h[:] = np.maximum(self.o, self.c) + spread
        self.l[:] = np.minimum(self.o, self.c) - spread
        self.v[:] = self.rng.integers(0, 1000, n)
        self.pv[:] = self.v * (self.h + self.l + self.c) / 3
        self.price[:] = self.c
        self.secs.fill(self.t)

    def upsert(self):
        return self.engine.upsert(self.rows, self.secs, self.o, self.h, self.l, self.c, self.v, self.pv)


_feeds = {}


def feed(nrows, wkey):
    key = (nrows, wkey)
    if key not in _feeds:
        _feeds.clear()          # keep one ~0.8 GB engine alive at a time
        _feeds[key] = Feed(nrows, WINDOWS[wkey])
    return _feeds[key]


def _per_bar(benchmark, n):
    med = benchmark.stats.stats.median
    benchmark.extra_info["ns_per_bar"] = round(med / n * 1e9, 1)
    benchmark.extra_info["median_ms"] = round(med * 1e3, 4)


@pytest.mark.parametrize("wkey", list(WINDOWS))
@pytest.mark.parametrize("nrows", [1_000, 12_000])
def test_upsert_burst(benchmark, nrows, wkey):
    """Upsert a burst of one bar per row for a new second (clock already advanced)."""
    f = feed(nrows, wkey)

    def setup():
        f.next_burst()
        f.engine.advance_to(f.t)

    benchmark.pedantic(f.upsert, setup=setup, rounds=300, iterations=1, warmup_rounds=5)
    _per_bar(benchmark, nrows)


@pytest.mark.parametrize("wkey", list(WINDOWS))
@pytest.mark.parametrize("nrows", [1_000, 12_000])
def test_clock_advance(benchmark, nrows, wkey):
    """advance_to(T+1): evict one second from every window for every row (+ update)."""
    f = feed(nrows, wkey)

    def setup():
        # apply the previous second's burst (untimed) so the evicted second is full
        f.next_burst()
        f.upsert()

    benchmark.pedantic(lambda: f.engine.advance_to(f.t + 1), setup=setup, rounds=300,
                       iterations=1, warmup_rounds=5)
    benchmark.extra_info["rows"] = nrows
    benchmark.extra_info["median_ms"] = round(benchmark.stats.stats.median * 1e3, 4)


@pytest.mark.parametrize("nrows", [12_000])
def test_burst_with_clock_advance(benchmark, nrows):
    """The full per-second job: the burst's first bar advances the clock, then the rest."""
    f = feed(nrows, "3w")
    benchmark.pedantic(f.upsert, setup=f.next_burst, rounds=300, iterations=1, warmup_rounds=5)
    _per_bar(benchmark, nrows)


def test_correction_burst(benchmark):
    """Every row re-sends the current second with a higher high (replacement fast path)."""
    f = feed(12_000, "3w")

    def setup():
        f.next_burst()
        f.upsert()
        f.h *= 1.0001
        f.v += 1

    benchmark.pedantic(f.upsert, setup=setup, rounds=200, iterations=1, warmup_rounds=3)
    _per_bar(benchmark, 12_000)


def test_late_burst(benchmark):
    """A whole burst arrives one second late (out of order: middle insert into deques)."""
    f = feed(12_000, "3w")
    secs = np.empty(12_000, dtype=np.int64)

    def setup():
        f.next_burst()
        f.engine.advance_to(f.t + 1)      # the clock is already one second further
        secs.fill(f.t)

    def late():
        return f.engine.upsert(f.rows, secs, f.o, f.h, f.l, f.c, f.v, f.pv)

    benchmark.pedantic(late, setup=setup, rounds=100, iterations=1, warmup_rounds=2)
    f.t += 1
    _per_bar(benchmark, 12_000)


def test_worse_correction_burst(benchmark):
    """Every row corrects its bar of 30 s ago to a lower high and higher low.

    The slow path: when the corrected bar is a deque member, the seconds between its
    deque predecessor and it are rescanned from the store (counted in
    ``internals["deque_rebuilds"]``)."""
    f = feed(12_000, "3w")
    n = 12_000
    secs = np.empty(n, dtype=np.int64)
    o, h, l, c, v, pv = (np.empty(n) for _ in range(6))

    def setup():
        f.next_burst()
        f.upsert()
        secs.fill(f.t - 30)
        mid = f.price
        o[:] = mid
        c[:] = mid
        h[:] = mid            # highs and lows collapse onto one price: worse for both deques
        l[:] = mid
        v[:] = 1.0
        pv[:] = mid

    def correct():
        return f.engine.upsert(f.rows, secs, o, h, l, c, v, pv)

    before = f.engine.internals["deque_rebuilds"]
    benchmark.pedantic(correct, setup=setup, rounds=30, iterations=1, warmup_rounds=1)
    rebuilds = f.engine.internals["deque_rebuilds"] - before
    benchmark.extra_info["rebuilds_per_burst"] = round(rebuilds / 31, 1)
    _per_bar(benchmark, n)


# -- steady state: fastfeed.bench.steady, per market second ---------------------
@pytest.fixture(scope="module")
def steady_runners():
    """Filled engines at 12,000 and 1,000 rows (default capacity, 60/300/900), 100-bar calls."""
    from fastfeed.bench import steady
    _feeds.clear()
    out = {}
    for nrows in (12_000, 1_000):
        run = steady._Runner(Engine(16384, (60, 300, 900)), steady.Market(nrows, nrows), 100)
        for _ in range(run.engine.depth):
            run.market.next_second()
            run.second()
        out[nrows] = run
    yield out
    out.clear()


@pytest.mark.parametrize("nrows", [12_000, 1_000])
def test_steady_second(benchmark, steady_runners, nrows):
    """One market second in steady state: 1 bar per row in random order, 100-bar upserts,
    the first of which advances the clock (eviction from every window)."""
    run = steady_runners[nrows]
    benchmark.pedantic(run.second, setup=run.market.next_second, rounds=100, iterations=1,
                       warmup_rounds=3)
    _per_bar(benchmark, nrows)


def test_steady_decode_yardstick(benchmark):
    """The same kind of second as the feed receives it: Vantafin 100-bar JSON arrays,
    decoded by the feed's own Decoder (no fill, no engine)."""
    from fastfeed.bench import steady
    from fastfeed.feeds import vantafin
    m = steady.Market(12_000, 5)
    syms = steady.tickers(12_000)
    seconds = []
    for _ in range(8):
        m.next_second()
        seconds.append(m.messages(syms, 100))
    decode = vantafin.decoder.decode
    it = iter(range(10**9))

    def one_second():
        for msg in seconds[next(it) % 8]:
            decode(msg)

    benchmark.pedantic(one_second, rounds=100, iterations=1, warmup_rounds=3)
    _per_bar(benchmark, 12_000)


def test_steady_ratios(benchmark):
    """fastfeed.bench.steady.measure(): engine at 12k and 1k rows and the decode, interleaved
    second by second in one process (CPU time); ratios in extra_info (targets <= 0.25, <= 1.3)."""
    from fastfeed.bench import steady
    _feeds.clear()
    doc = benchmark.pedantic(lambda: steady.measure(seconds=60), rounds=1, iterations=1)
    benchmark.extra_info.update(
        engine_12000_ns=doc["engine_ns_per_bar"]["12000"], engine_1000_ns=doc["engine_ns_per_bar"]["1000"],
        decode_ns=doc["decode_ns_per_bar"], alloc_bytes_per_bar=doc["alloc_bytes_per_bar"], **doc["ratios"])
    print("\nsteady state:", doc["engine_ns_per_bar"], "decode", doc["decode_ns_per_bar"], doc["ratios"])


@pytest.mark.parametrize("nsym", [12_000])
def test_symbol_lookup(benchmark, nsym):
    """Known-symbol lookup on the hot path: ``universe.index.get(sym, -1)``."""
    u = Universe()
    syms = [f"SYM{i:05d}" for i in range(nsym)]
    for s in syms:
        u.row(s)
    get = u.index.get
    probe = [syms[i] for i in np.random.default_rng(0).permutation(nsym)]

    def lookup_all():
        for s in probe:
            get(s, -1)

    benchmark(lookup_all)
    benchmark.extra_info["ns_per_lookup"] = round(benchmark.stats.stats.median / nsym * 1e9, 1)


def test_symbol_row(benchmark):
    """``universe.row(sym)`` for known symbols (method call + dict probe)."""
    u = Universe()
    syms = [f"SYM{i:05d}" for i in range(12_000)]
    for s in syms:
        u.row(s)
    row = u.row

    def rows_all():
        for s in syms:
            row(s)

    benchmark(rows_all)
    benchmark.extra_info["ns_per_lookup"] = round(benchmark.stats.stats.median / 12_000 * 1e9, 1)


MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    sys.path.insert(0, {root!r})
    from benches.bench_engine import Feed

    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    base = rss()
    f = Feed(12_000, (60, 300, 900))        # default capacity 16384, depth 900: fills 900 s
    filled = rss()
    for _ in range(300):                     # keep running: must stay flat
        f.next_burst(); f.upsert()
    after = rss()
    print(json.dumps(dict(base=base, filled=filled, after=after,
                          peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)))
""")


def test_memory_default_full_universe(benchmark):
    """RSS of the default configuration filled with 12,000 rows x depth seconds (subprocess)."""
    import pathlib
    root = str(pathlib.Path(__file__).resolve().parent.parent)

    def measure():
        out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT.format(root=root)],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    m = benchmark.pedantic(measure, rounds=1, iterations=1)
    mib = {k: round(v / 2**20, 1) for k, v in m.items()}
    benchmark.extra_info.update({f"{k}_MiB": v for k, v in mib.items()})
    print("\nRSS MiB:", mib)
    assert m["after"] <= 2**30, mib
    assert m["after"] - m["filled"] < 16 * 2**20, mib      # flat over time
