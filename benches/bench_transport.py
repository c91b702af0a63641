"""Transport throughput over loopback: Connection + Cython listener against the simulator.

The simulator runs in its own process in max-rate mode (12,000 tickers all trading, frames
of 1 or 100 bars, writes coalesced, paced by TCP flow control), so it sends exactly as fast
as this process reads.  The session is a no-op: the figure is the transport's ceiling
(socket read, frame parse, checks, UTF-8 validation, hand-off of a zero-copy payload).

Each round opens a connection, subscribes ``LS.*`` and receives ``ROUND_SECONDS`` of the
market; ``extra_info`` holds the rates measured over the last 3/4 of the messages of the
best round (the first quarter warms TCP windows and buffers up) (``frames_per_s``, ``messages_per_s``, ``bars_per_s``, ``mb_per_s``).

``test_session_engine_throughput``: the same loopback with the real Vantafin session and
engine behind the Connection (a ``Feed``, windows (60,)), with read-buffer batching on
(``batch_per_read=True``, the default: one engine update per socket read) and off (one
per message) → ``bars_per_s`` (median of the rounds) and ``best_bars_per_s``.

Run: ``python -m pytest benches/bench_transport.py --benchmark-only -s``
"""
from __future__ import annotations

import asyncio
import time

import pytest

from fastfeed.simulator import SimProcess
from fastfeed.engine import Engine  # noqa: F401  (no engine, no session benchmark: collection fails)
from fastfeed.engine.stats import Stats
from fastfeed.transport import Connection

ROUND_SECONDS = {1: 200, 100: 1000}  # simulated seconds of 12,000 bars per round
WARMUP_FRACTION = 0.25  # the first quarter of a round (TCP window, buffers growing) is not measured


class NoopSession:
    fatal = None

    def on_connected(self, send):
        send(b'{"action":"subscribe","params":"LS.*"}')

    def on_message(self, payload, recv_ns):
        pass

    def on_disconnected(self, reason):
        pass


@pytest.fixture(scope="module", params=[1, 100], ids=lambda n: f"{n}_bars_per_frame")
def sim(request):
    bpf = request.param
    with SimProcess(["--max-rate", "--tickers", "12000", "--trade-fraction", "1",
                     "--bars-per-frame", str(bpf)]) as sp:
        sp.bars_per_frame = bpf  # type: ignore[attr-defined]
        yield sp


async def _one_round(url: str, n_messages: int) -> dict:
    st = Stats()
    conn = Connection(url, NoopSession(), stats=st)
    task = asyncio.ensure_future(conn.run())
    try:
        while st.messages < 4 + n_messages * WARMUP_FRACTION:
            await asyncio.sleep(0.002)
        m0, f0, b0, t0 = st.messages, st.frames, st.bytes, time.perf_counter()
        while st.messages - m0 < n_messages * (1 - WARMUP_FRACTION):
            await asyncio.sleep(0.002)
        m1, f1, b1, t1 = st.messages, st.frames, st.bytes, time.perf_counter()
        rbuf = conn._read_buffer_size(conn._transport)
    finally:
        await conn.stop()
        await task
    dt = t1 - t0
    return {"messages": m1 - m0, "frames": f1 - f0, "bytes": b1 - b0, "seconds": dt, "read_buffer": rbuf}


def test_transport_throughput(benchmark, sim):
    bpf = sim.bars_per_frame
    n_messages = ROUND_SECONDS[bpf] * 12_000 // bpf
    results: list[dict] = []

    def round_():
        results.append(asyncio.run(_one_round(sim.url(), n_messages)))

    benchmark.pedantic(round_, rounds=5, iterations=1, warmup_rounds=1)
    best = max(results[1:] or results, key=lambda r: r["messages"] / r["seconds"])
    dt = best["seconds"]
    benchmark.extra_info.update(
        bars_per_frame=bpf,
        frames_per_s=round(best["frames"] / dt),
        messages_per_s=round(best["messages"] / dt),
        bars_per_s=round(best["messages"] * bpf / dt),
        mb_per_s=round(best["bytes"] / dt / 1e6, 1),
        read_buffer_free_bytes=best["read_buffer"],
        median_bars_per_s=round(sorted(r["messages"] * bpf / r["seconds"] for r in results)[len(results) // 2]),
    )
    print(f"\n{bpf} bars/frame: {benchmark.extra_info}")
    assert best["messages"] >= n_messages * (1 - WARMUP_FRACTION)


SESSION_ROUND_SECONDS = {1: 20, 100: 100}  # simulated seconds of 12,000 bars per round


async def _session_round(url: str, n_bars: int, batch_per_read: bool) -> float:
    from fastfeed.feed import Feed

    feed = Feed("vantafin", url=url, windows=(60,),
                connection_options={"batch_per_read": batch_per_read})
    st = feed.stats
    await feed.start_async()
    try:
        while st.bars < n_bars * WARMUP_FRACTION:
            await asyncio.sleep(0.002)
        b0, t0 = st.bars, time.perf_counter()
        while st.bars - b0 < n_bars * (1 - WARMUP_FRACTION):
            await asyncio.sleep(0.002)
        b1, t1 = st.bars, time.perf_counter()
    finally:
        await feed.close()
    return (b1 - b0) / (t1 - t0)


@pytest.mark.parametrize("batch_per_read", [True, False], ids=["batch_per_read", "per_message"])
def test_session_engine_throughput(benchmark, sim, batch_per_read):
    bpf = sim.bars_per_frame
    n_bars = SESSION_ROUND_SECONDS[bpf] * 12_000
    rates: list[float] = []

    def round_():
        rates.append(asyncio.run(_session_round(sim.url("vantafin"), n_bars, batch_per_read)))

    benchmark.pedantic(round_, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(bars_per_frame=bpf, batch_per_read=batch_per_read,
                                bars_per_s=round(sorted(rates)[len(rates) // 2]),
                                best_bars_per_s=round(max(rates)))
    print(f"\n{bpf} bars/frame, batch_per_read={batch_per_read}: {benchmark.extra_info}")
