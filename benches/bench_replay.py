"""Record/replay benchmarks (issue #6).

- ``test_read``: ``Reader`` alone over an uncompressed recording (records/s, MB/s).
- ``test_replay``: ``fastfeed.replay.replay`` of a full-market recording (12,000
  tickers, 100 bars per message, uncompressed and zstd) → ``bars_per_s``.
  Target: >= 1.5 M bars/s from an uncompressed file.
- ``test_live_path``: the live path's per-message work (``session.on_message`` with
  decode + engine update) over one full-market second, without and with the recorder
  (``RecordingSession`` + writer thread) → ``bars_per_s`` of each and, on the
  ``recorded`` case, ``overhead`` = 1 - recorded/plain (median rounds). In-process, so
  the denominator has no socket cost: an upper bound of the overhead on a real
  connection. Target: <= 10%.

Run: ``python -m pytest benches/bench_replay.py --benchmark-only``
or ``python benches/bench_replay.py`` for a quick printout of the same figures.
"""
from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time

import pytest

from fastfeed.record import RecordingSession, Reader, Writer

try:
    from fastfeed._ext.engine import Engine  # noqa: F401
    HAVE_ENGINE = True
except ImportError:  # engine not built
    HAVE_ENGINE = False

N = 12_000  # tickers: one full-market second
SECONDS = 30  # seconds in the replay file (360,000 bars)
T0 = 1_700_000_000


def tickers(n: int) -> list[str]:
    rng = random.Random(7)
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.randint(1, 5))))
    return sorted(out)


def second_messages(second: int, per_msg: int, syms: list[str], rng: random.Random) -> list[bytes]:
    bars = []
    for s in syms:
        p = round(rng.uniform(5, 500), 2)
        c = round(p * rng.uniform(0.999, 1.001), 2)
        bars.append({"type": "live_quote_second", "ticker": s, "open": p,
                     "high": round(max(p, c) * 1.0005, 2), "low": round(min(p, c) * 0.9995, 2),
                     "close": c, "volume": rng.randint(1, 50_000), "timestamp": second * 1000})
    if per_msg == 1:
        return [json.dumps(b, separators=(",", ":")).encode() for b in bars]
    return [json.dumps(bars[i:i + per_msg], separators=(",", ":")).encode()
            for i in range(0, len(bars), per_msg)]


def make_recording(path: str, seconds: int = SECONDS, per_msg: int = 100,
                   compression: str | None = None) -> int:
    """A recording of ``seconds`` full-market seconds; returns the number of bars."""
    rng = random.Random(1)
    syms = tickers(N)
    w = Writer(path, feed="vantafin", url="ws://127.0.0.1:1/v1/stocks",
               meta={"topics": ["LS.*"], "engine": {"windows": [60, 300, 900], "capacity": 16384,
                                                   "depth": 900, "max_future_skew": 5.0}},
               compression=compression, start_ns=T0 * 10**9)
    w.connected(T0 * 10**9)
    for k in range(seconds):
        s = T0 + k
        base = (s + 1) * 10**9
        for j, m in enumerate(second_messages(s, per_msg, syms, rng)):
            w.message(m, base + j * 1000)
    w.close()
    return seconds * N


@pytest.fixture(scope="module")
def files():
    d = tempfile.mkdtemp(prefix="ffbench-")
    out = {}
    for comp in (None, "zstd"):
        if comp == "zstd":
            try:
                import zstandard  # noqa: F401
            except ImportError:
                continue
        p = os.path.join(d, f"market-{comp or 'raw'}.ffr")
        out[comp or "none"] = (p, make_recording(p, compression=comp))
    yield out
    for p, _ in out.values():
        os.unlink(p)
    os.rmdir(d)


def _report(benchmark, bars: int, **info) -> None:
    st = benchmark.stats.stats
    benchmark.extra_info.update(bars=bars, bars_per_s=round(bars / st.median),
                                best_bars_per_s=round(bars / st.min), **info)


def test_read(benchmark, files):
    path, bars = files["none"]
    size = os.path.getsize(path)

    def run():
        n = 0
        with Reader(path) as r:
            for _ in r:
                n += 1
        return n

    n = benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    st = benchmark.stats.stats
    benchmark.extra_info.update(records=n, records_per_s=round(n / st.median),
                                mb_per_s=round(size / st.median / 1e6, 1), file_mb=round(size / 1e6, 1))
    _report(benchmark, bars)


@pytest.mark.skipif(not HAVE_ENGINE, reason="fastfeed._ext.engine not built")
@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_replay(benchmark, files, compression):
    from fastfeed.replay import replay

    if compression not in files:
        pytest.skip("zstandard not installed")
    path, bars = files[compression]

    def run():
        return replay(path)

    res = benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    assert res.stats.bars == bars
    _report(benchmark, bars, compression=compression, file_mb=round(os.path.getsize(path) / 1e6, 1),
            target_bars_per_s=1_500_000)


_plain_median: dict[int, float] = {}


@pytest.mark.skipif(not HAVE_ENGINE, reason="fastfeed._ext.engine not built")
@pytest.mark.parametrize("per_msg", [100, 1])
@pytest.mark.parametrize("mode", ["plain", "recorded"])
def test_live_path(benchmark, mode, per_msg, tmp_path):
    from fastfeed.feed import Feed

    rng = random.Random(3)
    syms = tickers(N)
    seconds = [second_messages(T0 + k, per_msg, syms, rng) for k in range(3)]
    state = {}

    def setup():
        feed = Feed("vantafin", url="ws://127.0.0.1:1/v1/stocks", windows=(60, 300, 900))
        session = feed.session
        w = None
        if mode == "recorded":
            w = Writer(tmp_path / "live.ffr", feed="vantafin", url="")
            session = RecordingSession(session, w)
        state["w"], state["k"] = w, 0
        return (session,), {}

    def run(session):
        on_message = session.on_message
        for k, msgs in enumerate(seconds):
            ns = (T0 + k + 1) * 10**9
            for m in msgs:
                on_message(m, ns)

    def teardown():
        if state.get("w") is not None:
            state["w"].close()

    # setup runs before every round; the writer is closed after the measurement
    benchmark.pedantic(run, setup=setup, rounds=7, iterations=1, warmup_rounds=1)
    teardown()
    bars = N * len(seconds)
    _report(benchmark, bars, per_msg=per_msg, mode=mode)
    med = benchmark.stats.stats.median
    if mode == "plain":
        _plain_median[per_msg] = med
    elif per_msg in _plain_median:
        benchmark.extra_info["overhead"] = round(1 - _plain_median[per_msg] / med, 4)
        benchmark.extra_info["target_overhead"] = 0.10


# --------------------------------------------------------------------------- quick printout


def _main() -> None:  # pragma: no cover - manual
    import statistics

    from fastfeed.feed import Feed
    from fastfeed.replay import replay

    d = tempfile.mkdtemp(prefix="ffbench-")
    for comp in (None, "zstd"):
        p = os.path.join(d, f"m-{comp}.ffr")
        t = time.perf_counter()
        bars = make_recording(p, compression=comp)
        print(f"write {comp or 'none':5}: {bars:,} bars, {os.path.getsize(p) / 1e6:.1f} MB "
              f"in {time.perf_counter() - t:.2f} s (incl. JSON generation)")
        times = []
        for _ in range(5):
            t = time.perf_counter()
            res = replay(p)
            times.append(time.perf_counter() - t)
        assert res.stats.bars == bars
        print(f"replay {comp or 'none':5}: median {bars / statistics.median(times) / 1e6:.2f} M bars/s "
              f"(best {bars / min(times) / 1e6:.2f})")
        os.unlink(p)
    rng = random.Random(3)
    syms = tickers(N)
    for per_msg in (100, 1):
        seconds = [second_messages(T0 + k, per_msg, syms, rng) for k in range(3)]
        res = {}
        for mode in ("plain", "recorded") * 4:
            feed = Feed("vantafin", url="ws://127.0.0.1:1/v1/stocks", windows=(60, 300, 900))
            session, w = feed.session, None
            if mode == "recorded":
                w = Writer(os.path.join(d, "live.ffr"), feed="vantafin", url="")
                session = RecordingSession(session, w)
            on_message = session.on_message
            t = time.perf_counter()
            for k, msgs in enumerate(seconds):
                ns = (T0 + k + 1) * 10**9
                for m in msgs:
                    on_message(m, ns)
            res.setdefault(mode, []).append(time.perf_counter() - t)
            if w is not None:
                w.close()
        bars = N * len(seconds)
        a, b = statistics.median(res["plain"]), statistics.median(res["recorded"])
        print(f"live path {per_msg:3} bars/msg: plain {bars / a / 1e6:.2f} M bars/s, recorded "
              f"{bars / b / 1e6:.2f} M bars/s, overhead {100 * (1 - a / b):.1f}%")
    os.unlink(os.path.join(d, "live.ffr"))
    os.rmdir(d)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main())
