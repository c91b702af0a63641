"""Engine steady state beside the decode yardstick, in one process.

:func:`measure` runs a market of one bar per row per second, rows in a fresh random
order every second, through two engines (``rows_large`` and ``rows_small`` rows;
default capacity 16,384, windows 60/300/900): ``depth`` seconds fill the windows
(untimed), then ``seconds`` more are timed.  For every timed second it also decodes
the same bars as the Vantafin feed receives them (JSON arrays of ``bars_per_message``
``live_quote_second`` objects) with the feed's own msgspec Decoder.  The three take
turns in blocks of ``block`` seconds (each in its own steady state, the 1,000-row
engine with its state in cache as a lone engine would have it), so a load change on
the machine moves all three; the figures are medians over the timed seconds and the
ratios are ratios of those medians.  Times are the thread's CPU time (``time.thread_time_ns``):
on a shared machine, time spent descheduled is not counted (the caches another
process cooled down still are):

* ``engine_over_decode`` = engine ns/bar at ``rows_large`` / decode ns/bar (target <= 0.25);
* ``large_over_small`` = engine ns/bar at ``rows_large`` / at ``rows_small`` (target <= 1.3).

The engine time of a second is the whole job: ``upsert`` calls of ``batch`` bars (one
per message by default), the first of which advances the clock and evicts a second
from every window.  ``alloc_bytes_per_bar`` is tracemalloc's peak growth over a few
extra seconds of upserts divided by their bars (0 when nothing is allocated per bar).
"""
from __future__ import annotations

import math
import random
import statistics
import time
import tracemalloc
from typing import Any, Callable

import msgspec
import numpy as np

__all__ = ["measure", "Market", "TARGETS"]

T0 = 1_700_000_000
#: the targets for the two ratios (at most)
TARGETS = {"engine_over_decode": 0.25, "large_over_small": 1.3}


def tickers(n: int, seed: int = 7) -> list[str]:
    """``n`` distinct upper-case symbols of 1-5 letters."""
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.randint(1, 5))))
    return sorted(out)


class Market:
    """Bars of ``nrows`` instruments, one per row per second: a random walk in cents.

    :meth:`next_second` refills the column arrays in place (a fresh random row order
    each second); prices are whole cents, so the float64 the engine gets is the value a
    JSON parser reads from the message :meth:`messages` writes.
    """

    def __init__(self, nrows: int, seed: int = 0) -> None:
        self.n = nrows
        self.rng = np.random.default_rng(seed)
        self.cents = self.rng.integers(500, 50_000, nrows)
        self.t = T0
        self.rows = np.empty(nrows, dtype=np.int64)
        self.secs = np.empty(nrows, dtype=np.int64)
        self.o, self.h, self.l, self.c, self.v, self.pv = (np.empty(nrows) for _ in range(6))
        self.ic = {k: np.empty(nrows, dtype=np.int64) for k in ("o", "h", "l", "c", "v")}

    def next_second(self) -> None:
        n, rng = self.n, self.rng
        self.t += 1
        self.rows[:] = rng.permutation(n)
        o = self.cents[self.rows]
        c = np.maximum(o + rng.integers(-20, 21, n), 1)
        spread = rng.integers(0, 10, (2, n))
        h = np.maximum(o, c) + spread[0]
        lo = np.maximum(np.minimum(o, c) - spread[1], 1)
        self.cents[self.rows] = c
        for k, x in (("o", o), ("h", h), ("l", lo), ("c", c)):
            self.ic[k][:] = x
            getattr(self, k)[:] = x / 100.0
        self.ic["v"][:] = rng.integers(1, 5_000, n)
        self.v[:] = self.ic["v"]
        self.pv[:] = self.v * (self.h + self.l + self.c) / 3.0   # the Vantafin feed's pv
        self.secs.fill(self.t)

    def messages(self, symbols: list[str], per_message: int) -> list[bytes]:
        """This second's bars as Vantafin wire JSON: arrays of ``per_message`` quotes."""
        ic, rows, ts = self.ic, self.rows.tolist(), self.t * 1000
        cols = [ic[k].tolist() for k in ("o", "h", "l", "c", "v")]
        elems = [
            '{"type":"live_quote_second","ticker":"%s","open":%d.%02d,"high":%d.%02d,"low":%d.%02d,'
            '"close":%d.%02d,"volume":%d,"timestamp":%d}'
            % (symbols[r], o // 100, o % 100, h // 100, h % 100, lo // 100, lo % 100,
               c // 100, c % 100, v, ts)
            for r, o, h, lo, c, v in zip(rows, *cols)
        ]
        return [("[" + ",".join(elems[i:i + per_message]) + "]").encode()
                for i in range(0, len(elems), per_message)]


class _Runner:
    """One engine fed by one market, in batches of ``batch`` bars (views made once)."""

    def __init__(self, engine: Any, market: Market, batch: int) -> None:
        self.engine, self.market = engine, market
        m = market
        cols = (m.rows, m.secs, m.o, m.h, m.l, m.c, m.v, m.pv)
        self.calls = [tuple(x[i:i + batch] for x in cols) for i in range(0, m.n, batch)]
        self.upsert = engine.upsert

    def second(self) -> int:
        """Apply the prepared second; return the bars accepted."""
        upsert, acc = self.upsert, 0
        for args in self.calls:
            acc += upsert(*args)
        return acc

    def timed_second(self) -> float:
        """Prepare and apply the next second; return the engine's ns per bar."""
        self.market.next_second()
        t = time.thread_time_ns()
        acc = self.second()
        dt = time.thread_time_ns() - t
        if acc != self.market.n:
            raise RuntimeError(f"engine accepted {acc} of {self.market.n} bars")
        return dt / self.market.n


def _decode_ns_per_bar(decode: Callable[[bytes], Any], msgs: list[bytes], nbars: int) -> float:
    t = time.thread_time_ns()
    for m in msgs:
        decode(m)
    return (time.thread_time_ns() - t) / nbars


def _alloc_bytes_per_bar(runner: _Runner, seconds: int) -> float:
    for _ in range(2):                       # warm: whatever a first call caches
        runner.market.next_second()
        runner.second()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(seconds):
            runner.market.secs += 1          # the same bars one second later: no numpy temporaries
            runner.market.t += 1
            runner.second()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return (peak - before) / (seconds * runner.market.n)


def measure(rows_large: int = 12_000, rows_small: int = 1_000, seconds: int = 100,
            windows: tuple[int, ...] = (60, 300, 900), capacity: int = 16_384,
            batch: int = 100, bars_per_message: int = 100, seed: int = 0, block: int = 10,
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the steady-state comparison; return figures (ns/bar medians) and ratios.

    Takes ``depth + seconds`` market seconds per engine (depth = ``max(windows)``), about
    half a minute at the defaults on a 2-core VM; two default-size engines (~0.9 GB each)
    are alive at once.
    """
    from ..feeds import vantafin
    from ..engine import Engine

    if rows_large > capacity or rows_small > capacity:
        raise ValueError(f"rows must be <= capacity ({capacity})")
    say = progress or (lambda s: None)
    depth = max(windows)
    symbols = tickers(rows_large)
    runners = {}
    for nrows in (rows_large, rows_small):
        eng = Engine(capacity, windows)
        run = _Runner(eng, Market(nrows, seed + nrows), batch)
        for i in range(depth):
            if i % 100 == 0:
                say(f"filling {nrows:,} rows: {i}/{depth} s")
            run.market.next_second()
            run.second()
        runners[nrows] = run
    decode = vantafin.decoder.decode
    big, small = runners[rows_large], runners[rows_small]
    eng_large, eng_small, dec = [], [], []
    done = 0
    while done < seconds:
        say(f"timing: {done}/{seconds} s")
        n = min(block, seconds - done)
        for _ in range(n):
            eng_large.append(big.timed_second())
        for _ in range(n):
            big.market.next_second()
            msgs = big.market.messages(symbols, bars_per_message)
            dec.append(_decode_ns_per_bar(decode, msgs, rows_large))
        for _ in range(n):
            eng_small.append(small.timed_second())
        done += n
    say("allocations per bar")
    alloc = _alloc_bytes_per_bar(big, 5)
    med = statistics.median
    e_l, e_s, d = med(eng_large), med(eng_small), med(dec)
    ratios = {"engine_over_decode": e_l / d, "large_over_small": e_l / e_s}
    return {
        "rows_large": rows_large, "rows_small": rows_small, "capacity": capacity,
        "windows": list(windows), "seconds": seconds, "batch": batch, "block": block,
        "bars_per_message": bars_per_message,
        "engine_ns_per_bar": {str(rows_large): round(e_l, 1), str(rows_small): round(e_s, 1)},
        "engine_ns_per_bar_p90": {str(rows_large): round(_pct(eng_large, 0.9), 1),
                                  str(rows_small): round(_pct(eng_small, 0.9), 1)},
        "decode_ns_per_bar": round(d, 1),
        "decode_ns_per_bar_p90": round(_pct(dec, 0.9), 1),
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "targets": {k: {"target_max": t, "met": ratios[k] <= t} for k, t in TARGETS.items()},
        "alloc_bytes_per_bar": round(alloc, 3),
        "clock": "thread CPU time",
        "msgspec": msgspec.__version__,
    }


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def main(argv: list[str] | None = None) -> int:
    """``python -m fastfeed.bench.steady [SECONDS] [--spec JSON]``: print the figures as JSON.

    ``--spec`` holds :func:`measure`'s keyword arguments (what ``fastfeed bench`` passes,
    with ``cpus`` to pin the process); progress goes to stderr, one line per step
    prefixed ``progress:``.  The document gains ``peak_rss_mb`` (the process's ``ru_maxrss``).
    """
    import argparse
    import json
    import sys

    from .orchestration import peak_rss_mb, pin

    p = argparse.ArgumentParser(prog="python -m fastfeed.bench.steady")
    p.add_argument("seconds", nargs="?", type=int, default=None, help="timed seconds (default 100)")
    p.add_argument("--spec", default="{}", help="measure() keyword arguments as JSON")
    args = p.parse_args(argv)
    kw = json.loads(args.spec)
    cpus = kw.pop("cpus", None)
    if cpus:
        pin(0, set(cpus))
    if args.seconds is not None:
        kw["seconds"] = args.seconds
    if "windows" in kw:
        kw["windows"] = tuple(kw["windows"])

    def progress(msg: str) -> None:
        print("progress:", msg, file=sys.stderr, flush=True)

    doc = measure(progress=progress, **kw)
    doc["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(doc, indent=1), flush=True)
    return 0


if __name__ == "__main__":          # python -m fastfeed.bench.steady [seconds]
    raise SystemExit(main())
