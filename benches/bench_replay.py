"""Record/replay benchmarks.

- ``test_read``: ``Reader`` alone over an uncompressed recording (records/s, MB/s).
- ``test_replay``: ``fastfeed.recording.replay.replay`` of a full-market recording (12,000
  tickers, 100 bars per message, uncompressed and zstd) → ``bars_per_s``.
  Target: >= 1.5 M bars/s from an uncompressed file.
- ``test_live_path_overhead``: the live path's per-message work (``session.on_message``:
  decode + engine update) over full-market seconds, on two warmed feeds, one plain and
  one behind the recorder (``RecordingSession`` + writer thread), same messages →
  ``overhead_cpu`` (main + writer thread CPU vs plain: robust on a loaded machine) and
  ``overhead_wall``. In-process, so the denominator has no socket cost: an upper
  bound of the overhead on a real connection. Target: <= 10%.
- ``test_loopback_recording_overhead``: the same comparison over the whole live path
  (simulator process → loopback → transport → session → engine), 1 and 100 bars per
  frame → ``overhead`` (bars/s) and ``overhead_cpu`` (bars per CPU second).

Run: ``python -m pytest benches/bench_replay.py --benchmark-only``
or ``python benches/bench_replay.py`` for a quick printout of the same figures.
"""
from __future__ import annotations

import gc
import json
import os
import random
import sys
import tempfile
import time

import pytest

from fastfeed.recording import RecordingSession, Reader, Writer

from fastfeed.engine import Engine  # noqa: F401  (no engine, no replay: collection fails)

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


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_replay(benchmark, files, compression):
    from fastfeed.recording.replay import replay

    if compression not in files:
        pytest.skip("zstandard not installed")
    path, bars = files[compression]
    cpu: list[float] = []

    def run():
        c = time.process_time()
        res = replay(path)
        cpu.append(time.process_time() - c)
        return res.stats.bars  # the result (an engine) is freed before the next round

    def setup():
        gc.collect()

    got = benchmark.pedantic(run, setup=setup, rounds=7, iterations=1, warmup_rounds=2)
    assert got == bars
    import statistics

    # bars per CPU second: less sensitive than wall time to other processes on the machine
    _report(benchmark, bars, compression=compression, file_mb=round(os.path.getsize(path) / 1e6, 1),
            bars_per_cpu_s=round(bars / statistics.median(cpu)), target_bars_per_s=1_500_000)


def shifted(msgs: list[bytes], k: int) -> list[bytes]:
    """The messages of second T0 as second T0 + k (same bars, new timestamps)."""
    a, b = b'"timestamp":%d' % (T0 * 1000), b'"timestamp":%d' % ((T0 + k) * 1000)
    return [m.replace(a, b) for m in msgs]


class LivePath:
    """Two warmed feeds, one plain and one recording, fed the same full-market seconds.

    Windows (60,) keep the rings small, so a warm-up of 60 s touches every page and
    the rounds measure steady state (no first-touch page faults). ``round()`` feeds
    the next ``per_round`` seconds to both and returns the main thread's CPU and wall
    seconds of each; the writer thread's CPU is in ``writer.cpu_seconds``.
    """

    def __init__(self, per_msg: int, path: str, per_round: int = 2) -> None:
        from fastfeed.feed import Feed

        self.base = second_messages(T0, per_msg, tickers(N), random.Random(3))
        self.per_round = per_round
        self.k = 0
        self.plain = Feed("vantafin", url="ws://127.0.0.1:1/v1/stocks", windows=(60,))
        self.rec = Feed("vantafin", url="ws://127.0.0.1:1/v1/stocks", windows=(60,))
        self.writer = Writer(path, feed="vantafin", url="")
        self.rec_session = RecordingSession(self.rec.session, self.writer)
        for _ in range(60 // per_round):
            self.round()

    def _feed(self, on_message, seconds) -> tuple[float, float]:
        c, w = time.thread_time(), time.perf_counter()
        for k, msgs in seconds:
            ns = (T0 + k + 1) * 10**9
            for m in msgs:
                on_message(m, ns)
        return time.thread_time() - c, time.perf_counter() - w

    def round(self) -> tuple[tuple[float, float], tuple[float, float]]:
        seconds = [(self.k + i, shifted(self.base, self.k + i)) for i in range(self.per_round)]
        self.k += self.per_round
        a = self._feed(self.plain.session.on_message, seconds)
        b = self._feed(self.rec_session.on_message, seconds)
        return a, b

    def close(self) -> float:
        """Close the writer; its thread's CPU seconds."""
        self.writer.close()
        return self.writer.cpu_seconds


@pytest.mark.parametrize("per_msg", [100, 1])
def test_live_path_overhead(benchmark, per_msg, tmp_path):
    """Recording overhead on the live path. The benchmark times the recorded feed's
    rounds; extra_info has both feeds' medians: ``overhead_cpu`` (main thread + writer
    thread CPU, robust to a loaded machine) and ``overhead_wall``."""
    import statistics

    lp = LivePath(per_msg, str(tmp_path / "live.ffr"))
    w0 = lp.writer.cpu_seconds
    plain, rec = [], []

    def run():
        a, b = lp.round()
        plain.append(a)
        rec.append(b)

    benchmark.pedantic(run, rounds=15, iterations=1)
    wcpu = lp.close() - w0
    bars = N * lp.per_round
    pc = statistics.median(x[0] for x in plain)
    rc = statistics.median(x[0] for x in rec) + wcpu / len(rec)
    pw = statistics.median(x[1] for x in plain)
    rw = statistics.median(x[1] for x in rec)
    benchmark.extra_info.update(
        per_msg=per_msg, bars=bars,
        plain_bars_per_s=round(bars / pw), recorded_bars_per_s=round(bars / rw),
        plain_bars_per_cpu_s=round(bars / pc), recorded_bars_per_cpu_s=round(bars / rc),
        overhead_cpu=round(rc / pc - 1, 4), overhead_wall=round(rw / pw - 1, 4),
        writer_cpu_share=round(wcpu / len(rec) / pc, 4), target_overhead=0.10)


# --------------------------------------------------------------------------- loopback


LOOPBACK_SECONDS = {1: 20, 100: 100}  # simulated seconds (x 12,000 bars) per round


async def _loopback_round(url: str, n_bars: int, record_to: str | None) -> dict:
    """One Feed (session + engine) on a max-rate simulator, optionally recording:
    bars/s over the last 3/4 of ``n_bars``, and the process's CPU seconds meanwhile."""
    import asyncio

    from fastfeed.feed import Feed
    from fastfeed.recording import attach_recorder

    feed = Feed("vantafin", url=url, windows=(60,))
    close = attach_recorder(feed, record_to) if record_to else None
    st = feed.stats
    await feed.start_async()
    try:
        while st.bars < n_bars // 4:
            await asyncio.sleep(0.002)
        b0, t0, c0 = st.bars, time.perf_counter(), time.process_time()
        while st.bars - b0 < n_bars * 3 // 4:
            await asyncio.sleep(0.002)
        b1, t1, c1 = st.bars, time.perf_counter(), time.process_time()
    finally:
        await feed.close()
        if close is not None:
            close()
    return {"bars": b1 - b0, "seconds": t1 - t0, "cpu": c1 - c0}


@pytest.fixture(scope="module", params=[1, 100], ids=lambda n: f"{n}_bars_per_frame")
def loopback_sim(request):
    from fastfeed.simulator.testing import SimProcess

    bpf = request.param
    with SimProcess(["--max-rate", "--tickers", "12000", "--trade-fraction", "1",
                     "--bars-per-frame", str(bpf)]) as sp:
        sp.bars_per_frame = bpf  # type: ignore[attr-defined]
        yield sp


def test_loopback_recording_overhead(benchmark, loopback_sim, tmp_path):
    """The whole live path over loopback (simulator in its own process → transport →
    session → engine), alternating rounds without and with recording. ``overhead``:
    1 - recorded/plain bars/s (medians); ``overhead_cpu``: the same per CPU second of
    this process (all threads, the writer's included)."""
    import asyncio
    import statistics

    bpf = loopback_sim.bars_per_frame
    n_bars = LOOPBACK_SECONDS[bpf] * N
    res: dict[str, list[dict]] = {"plain": [], "recorded": []}
    path = str(tmp_path / "loop.ffr")

    def one_pair():
        res["plain"].append(asyncio.run(_loopback_round(loopback_sim.url("vantafin"), n_bars, None)))
        res["recorded"].append(asyncio.run(_loopback_round(loopback_sim.url("vantafin"), n_bars, path)))

    benchmark.pedantic(one_pair, rounds=5, iterations=1, warmup_rounds=1)
    rate = {k: statistics.median(r["bars"] / r["seconds"] for r in v) for k, v in res.items()}
    cpu = {k: statistics.median(r["bars"] / r["cpu"] for r in v) for k, v in res.items()}
    benchmark.extra_info.update(
        bars_per_frame=bpf, plain_bars_per_s=round(rate["plain"]),
        recorded_bars_per_s=round(rate["recorded"]),
        overhead=round(1 - rate["recorded"] / rate["plain"], 4),
        plain_bars_per_cpu_s=round(cpu["plain"]), recorded_bars_per_cpu_s=round(cpu["recorded"]),
        overhead_cpu=round(1 - cpu["recorded"] / cpu["plain"], 4), target_overhead=0.10)
    print(f"\n{bpf} bars/frame: {benchmark.extra_info}")


# --------------------------------------------------------------------------- quick printout


def _main() -> None:  # pragma: no cover - manual
    import statistics

    from fastfeed.recording.replay import replay

    d = tempfile.mkdtemp(prefix="ffbench-")
    for comp in (None, "zstd"):
        p = os.path.join(d, f"m-{comp}.ffr")
        t = time.perf_counter()
        bars = make_recording(p, compression=comp)
        print(f"write {comp or 'none':5}: {bars:,} bars, {os.path.getsize(p) / 1e6:.1f} MB "
              f"in {time.perf_counter() - t:.2f} s (incl. JSON generation)")
        times, cpus = [], []
        replay(p)  # warm-up: imports, decoder and engine code paths
        for _ in range(7):
            gc.collect()
            t, c = time.perf_counter(), time.process_time()
            n = replay(p).stats.bars
            times.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
        assert n == bars
        print(f"replay {comp or 'none':5}: median {bars / statistics.median(times) / 1e6:.2f} M bars/s "
              f"(best {bars / min(times) / 1e6:.2f}; per CPU second {bars / statistics.median(cpus) / 1e6:.2f})")
        os.unlink(p)
    for per_msg in (100, 1):
        lp = LivePath(per_msg, os.path.join(d, "live.ffr"))
        w0 = lp.writer.cpu_seconds
        rounds = [lp.round() for _ in range(15)]
        wcpu = lp.close() - w0
        pc = statistics.median(a[0] for a, _ in rounds)
        rc = statistics.median(b[0] for _, b in rounds) + wcpu / len(rounds)
        pw = statistics.median(a[1] for a, _ in rounds)
        rw = statistics.median(b[1] for _, b in rounds)
        bars = N * lp.per_round
        print(f"live path {per_msg:3} bars/msg: plain {bars / pw / 1e6:.2f} M bars/s, recorded "
              f"{bars / rw / 1e6:.2f} M bars/s (wall overhead {100 * (rw / pw - 1):.1f}%); "
              f"CPU overhead incl. writer thread {100 * (rc / pc - 1):.1f}%")
        os.unlink(os.path.join(d, "live.ffr"))
    os.rmdir(d)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main())
