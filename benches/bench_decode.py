"""Decode + fill benchmarks per feed, 1 and 100 bars per message.

Each round processes one full-market second: ``N`` bars of ``N`` tickers, sent as
``N`` messages of 1 bar or ``N/100`` messages of 100 bars. ``extra_info`` carries
``bars_per_s`` and ``ns_per_bar`` (median round) and ``best_ns_per_bar`` (fastest round).

- ``decode``: ``msgspec`` decode of every message only (the floor);
- ``decode_fill``: decode + the Cython fill (slot reads) of the 7 bar columns;
- ``session``: the whole ``session.on_message`` path with ``engine.upsert``, each round
  the next market second
  (the compiled Engine; a bench run without it fails at collection).

Run: ``python -m pytest benches/bench_decode.py --benchmark-only``
"""
from __future__ import annotations

import json
import random
import time

import numpy as np
import pytest

from fastfeed import feeds
from fastfeed.engine import Engine, Stats, Universe

N = 12_000
T0 = 1_700_000_000


class NullEngine:
    """Accepts everything: ``decode`` and ``decode_fill`` measure the decoder and the fill
    without the engine's work (``session`` measures them with it)."""

    T = -1
    counters: dict = {}

    def upsert(self, rows, seconds, open, high, low, close, volume, pv, n=-1, now=float("nan")):
        return n

    def last_rows(self):
        return np.zeros(0, dtype=np.int64)


def tickers(n: int) -> list[str]:
    rng = random.Random(7)
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.randint(1, 5))))
    return sorted(out)


def bar_dict(feed: str, sym: str, rng: random.Random, second: int = T0) -> dict:
    p = round(rng.uniform(5, 500), 2)
    o, c = p, round(p * rng.uniform(0.999, 1.001), 2)
    h, l = round(max(o, c) * 1.0005, 2), round(min(o, c) * 0.9995, 2)
    v = rng.randint(1, 50_000)
    if feed == "vantafin":
        return {"type": "live_quote_second", "ticker": sym, "open": o, "high": h, "low": l,
                "close": c, "volume": v, "timestamp": second * 1000}
    return {"ev": "A", "sym": sym, "v": v, "av": v * 40, "op": o, "vw": round((h + l + c) / 3, 4),
            "o": o, "c": c, "h": h, "l": l, "a": p, "z": 100, "s": second * 1000, "e": second * 1000 + 1000}


def messages(feed: str, per_msg: int, second: int = T0) -> list[bytes]:
    """One market second: every ticker's bar, ``per_msg`` bars per message."""
    rng = random.Random(second)
    bars = [bar_dict(feed, s, rng, second) for s in tickers(N)]
    if per_msg == 1 and feed == "vantafin":
        return [json.dumps(b, separators=(",", ":")).encode() for b in bars]
    return [json.dumps(bars[i:i + per_msg], separators=(",", ":")).encode() for i in range(0, N, per_msg)]


def build(feed: str, real_engine: bool):
    universe = Universe(16384)
    for s in tickers(N):
        universe.row(s)
    engine = Engine(16384, (60, 300, 900), None, 1e12) if real_engine else NullEngine()
    session = feeds.make_session(feed, engine, universe, Stats(), topics=["LS.*" if feed == "vantafin" else "A.*"])
    return session, engine


def report(benchmark, bars: int, **info) -> None:
    """bars/s and ns/bar from the median round (the shared machine is noisy) and the best."""
    st = benchmark.stats.stats
    benchmark.extra_info.update(bars=bars, bars_per_s=round(bars / st.median),
                                ns_per_bar=round(st.median / bars * 1e9, 1),
                                best_ns_per_bar=round(st.min / bars * 1e9, 1), **info)


FEEDS = ["vantafin", "massive"]
PER_MSG = [1, 100]


@pytest.mark.parametrize("per_msg", PER_MSG)
@pytest.mark.parametrize("feed", FEEDS)
def test_decode(benchmark, feed, per_msg):
    msgs = messages(feed, per_msg)
    session, _ = build(feed, False)
    decode = session.decoder.decode

    def run():
        for m in msgs:
            decode(m)

    benchmark(run)
    report(benchmark, N, feed=feed, bars_per_message=per_msg)


@pytest.mark.parametrize("per_msg", PER_MSG)
@pytest.mark.parametrize("feed", FEEDS)
def test_decode_fill(benchmark, feed, per_msg):
    msgs = messages(feed, per_msg)
    session, _ = build(feed, False)
    decode = session.decoder.decode
    fill = session.filler.fill

    def run():
        n = 0
        for m in msgs:
            n += fill(decode(m))
        return n

    assert benchmark(run) == N
    report(benchmark, N, feed=feed, bars_per_message=per_msg)


SESSION_ROUNDS = 20


#: messages per simulated read buffer in the ``buffer`` mode (~450 1-bar quotes fill 64 KiB)
BUFFER_MESSAGES = 100


@pytest.mark.parametrize("upsert", ["message", "buffer"])
@pytest.mark.parametrize("per_msg", PER_MSG)
@pytest.mark.parametrize("feed", FEEDS)
def test_session(benchmark, feed, per_msg, upsert):
    """The live shape: each round is the next market second (new bars, the clock advances).

    ``upsert="buffer"``: ``defer_until_buffer_end`` with ``on_buffer_end()`` every
    ``BUFFER_MESSAGES`` messages, as a transport would call it after each read.
    """
    seconds = [messages(feed, per_msg, T0 + k) for k in range(SESSION_ROUNDS + 1)]
    session, engine = build(feed, True)
    on_message = session.on_message
    stats = session.stats
    it = iter(seconds)
    session.defer_until_buffer_end = upsert == "buffer"
    end = session.on_buffer_end

    def setup():
        return (next(it), time.time_ns()), {}

    def run(msgs, now):
        if upsert == "buffer":
            for i in range(0, len(msgs), BUFFER_MESSAGES):
                for m in msgs[i:i + BUFFER_MESSAGES]:
                    on_message(m, now)
                end()
        else:
            for m in msgs:
                on_message(m, now)

    run(seconds[0], time.time_ns())  # warm-up second: rows assigned, engine memory touched
    next(it)
    benchmark.pedantic(run, setup=setup, rounds=SESSION_ROUNDS, iterations=1)
    assert stats.decode_errors == 0 and stats.bars == N * (SESSION_ROUNDS + 1)
    report(benchmark, N, feed=feed, bars_per_message=per_msg, upsert=upsert, engine=type(engine).__name__)


def test_sfox_session(benchmark):
    universe = Universe(64)
    session = feeds.make_session("sfox", Engine(64, (60,), None, 1e12),
                                 universe, Stats(), topics=["ticker.sfox.btcusd"])
    t = T0 * 10**9
    msgs = []
    for i in range(1000):
        env = {"sequence": i + 1, "recipient": "ticker.sfox.btcusd", "timestamp": t + i * 3 * 10**8,
               "payload": {"amount": 0.1, "exchange": "coinbase", "high": 41512.43, "last": 41420.58 + i,
                           "low": 41058.82, "open": 41141.31, "pair": "btcusd", "route": "Smart",
                           "source": "ticker-info", "timestamp": "2022-04-14T02:04:02.481Z",
                           "volume": 1387.7 + i, "vwap": 41283.96}}
        msgs.append(json.dumps(env).encode())

    def run():
        session.on_disconnected("bench")  # sequence restarts each round
        session.on_connected(lambda b: None)
        for m in msgs:
            session.on_message(m, t)

    benchmark(run)
    report(benchmark, len(msgs), feed="sfox", bars_per_message=1)
