"""Rejected bars never take a universe row; junk symbols are bad values; a full universe
recycles idle rows.  Through the real feed session (C fill path), the real Engine and
Universe, and on loopback against a server that sends junk first."""
from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastfeed import feeds
from fastfeed.engine import Engine, Stats, Universe

DEPTH = 900  # the engine of make(): windows (60, 300, 900), depth 900
T0 = 1_700_000_000


def quote(ticker, s, o=10.0, h=11.0, l=9.0, c=10.5, v=100.0):
    return {"type": "live_quote_second", "ticker": ticker, "open": o, "high": h, "low": l,
            "close": c, "volume": v, "timestamp": s * 1000}


def send(session, quotes, now_s):
    """One message of ``quotes``, received at ``now_s`` (epoch seconds)."""
    session.on_message(json.dumps(quotes).encode(), int(now_s * 1e9))


def universe_state(universe, engine):
    """Everything a user can see of the universe: symbols, index and each row's bars."""
    hist = {}
    for r, sym in enumerate(universe.symbols):
        h = engine.history(r)
        hist[sym] = {k: v.tolist() for k, v in h.items()}
    return list(universe.symbols), dict(universe.index), hist, engine.T


def make(name="vantafin", capacity=64):
    """(session, engine, universe, stats): the real engine with the default 5 s skew."""
    engine, universe, stats = Engine(capacity, (60, 300, DEPTH), None, 5.0), Universe(capacity), Stats()
    topics = {"vantafin": "LS.*", "sfox": "ticker.sfox.btcusd"}[name]
    return feeds.make_session(name, engine, universe, stats, topics=topics), engine, universe, stats


def seeded(capacity=64):
    s, engine, universe, stats = make(capacity=capacity)
    send(s, [quote("AAPL", T0 - 10), quote("MSFT", T0 - 5), quote("BRK.A", T0)], T0 + 0.5)
    assert universe.symbols == ["AAPL", "MSFT", "BRK.A"] and engine.T == T0
    return s, engine, universe, stats


# -- a rejected bar: future, stale, inconsistent numbers, or a junk symbol ------------------
SYMBOLS = st.sampled_from(["AAPL", "MSFT", "NEW1", "NEW2", "btcusd", "X.Y"])
JUNK = st.sampled_from(["", "A" * 33, "A" * 10_000, "A B", "TAB\t", "NUL\x00", "é", "📈",
                        "\x7f", "LF\n"])


@st.composite
def rejected_bar(draw):
    kind = draw(st.sampled_from(["future", "stale", "open_above_high", "close_below_low",
                                 "zero_price", "negative_price", "junk_symbol"]))
    sym = draw(JUNK) if kind == "junk_symbol" else draw(SYMBOLS)
    s = T0 - draw(st.integers(0, DEPTH - 1))
    o, h, l, c = 10.0, 11.0, 9.0, 10.5
    if kind == "future":
        s = T0 + draw(st.integers(60, 86_400 * 400))      # now is T0 + 0.5, skew 5 s
    elif kind == "stale":
        s = T0 - DEPTH - draw(st.integers(0, 10**6))
    elif kind == "open_above_high":
        o = h + draw(st.floats(0.01, 1e6))
    elif kind == "close_below_low":
        c = l - draw(st.floats(0.01, 8.9))
    elif kind == "zero_price":
        o = l = 0.0
    elif kind == "negative_price":
        o, h, l, c = -2.0, -1.0, -3.0, -1.5
    return quote(sym, s, o, h, l, c, draw(st.floats(0, 1e9)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(rejected_bar(), min_size=1, max_size=8), min_size=1, max_size=6))
def test_any_sequence_of_rejected_bars_leaves_the_universe_exactly_as_it_was(messages):
    s, engine, universe, stats = seeded()
    before = universe_state(universe, engine)
    for m in messages:
        send(s, m, T0 + 0.5)
    assert universe_state(universe, engine) == before
    assert stats.bars == 3


def test_rejected_bars_of_new_symbols_are_counted_by_kind_and_take_no_row():
    s, engine, universe, stats = seeded()
    send(s, [quote("FUT", T0 + 86_400), quote("OLD", T0 - DEPTH), quote("BAD", T0, o=12.0),
             quote("NEW", T0)], T0 + 0.5)
    assert universe.symbols == ["AAPL", "MSFT", "BRK.A", "NEW"]
    c = engine.counters
    assert (c["future_rejected"], c["stale_dropped"], c["invalid_rejected"]) == (1, 1, 1)
    assert c["bad_row"] == 0 and engine.history(0)["second"].tolist() == [T0 - 10]


def test_a_new_symbol_gets_its_row_with_its_first_accepted_bar_in_one_batch():
    s, engine, universe, stats = seeded()
    # NEW's first bar is stale once ADV moved the clock in the same message; its second is not
    send(s, [quote("ADV", T0 + DEPTH), quote("NEW", T0 - 1), quote("NEW", T0 + DEPTH)], T0 + DEPTH)
    assert universe.symbols == ["AAPL", "MSFT", "BRK.A", "ADV", "NEW"]
    assert engine.history(universe.get("NEW"))["second"].tolist() == [T0 + DEPTH]
    assert engine.counters["stale_dropped"] == 1


@pytest.mark.parametrize("sym", ["", "A" * 33, "A" * 10_000, "BAD SYM", "CTRL\x01", "DEL\x7f",
                                 "📈", "ÄPFEL", "\t"])
def test_junk_symbols_are_values_errors_and_get_no_row(sym):
    s, engine, universe, stats = seeded()
    send(s, [quote(sym, T0), quote("GOOD", T0)], T0 + 0.5)
    assert universe.symbols == ["AAPL", "MSFT", "BRK.A", "GOOD"]
    assert stats.decode_errors_by_kind["values"] == 1


@pytest.mark.parametrize("sym", ["BRK.A", "btcusd", "A" * 32, "X", "BTC-USD", "~!#$%^&*()"])
def test_usable_symbols_get_rows(sym):
    s, engine, universe, stats = seeded()
    send(s, [quote(sym, T0)], T0 + 0.5)
    assert universe.get(sym) >= 0 and stats.decode_errors == 0


def test_full_universe_recycles_an_idle_row_and_forgets_its_old_symbol():
    from fastfeed.snapshot import snapshot_document

    s, engine, universe, stats = make(capacity=3)
    send(s, [quote("OLD", T0), quote("KEEP1", T0), quote("KEEP2", T0)], T0 + 0.5)
    t1 = T0 + DEPTH  # OLD's last bar is T0 <= t1 - depth: it holds none any more
    send(s, [quote("KEEP1", t1), quote("KEEP2", t1), quote("NEWC", t1, c=10.75)], t1 + 0.5)
    assert universe.symbols == ["NEWC", "KEEP1", "KEEP2"] and universe.get("OLD") == -1
    assert stats.rows_recycled == 1 and universe.rows_recycled == 1 and stats.universe_overflow == 0
    h = engine.history(0)
    assert h["second"].tolist() == [t1] and h["close"].tolist() == [10.75]
    for w in engine.windows:
        assert engine.window(w).count[0] == 1 and engine.window(w).close[0] == 10.75
    doc = snapshot_document("vantafin", engine, universe, stats, engine.windows)
    assert "OLD" not in json.dumps(doc) and doc["stats"]["rows_recycled"] == 1
    # every row busy now: the next new symbol is refused (counted), nothing else changes
    before = universe_state(universe, engine)
    send(s, [quote("REFUSED", t1)], t1 + 0.5)
    assert universe_state(universe, engine) == before
    assert stats.universe_overflow == 1 and universe.overflow == 1


def test_a_row_recycled_was_cleared_even_if_the_engine_still_held_bars_of_it():
    s, engine, universe, stats = make(capacity=2)
    send(s, [quote("A", T0), quote("B", T0)], T0 + 0.5)
    engine.forget_row(0)
    assert engine.history(0)["second"].tolist() == [] and engine.window(60).count[0] == 0
    assert np.isnan(engine.window(60).close[0]) and engine.is_idle(0) and not engine.is_idle(1)


def test_sfox_new_pairs_get_rows_only_on_an_accepted_bar():
    s, engine, universe, stats = make("sfox", capacity=4)

    def upd(pair, t_s, last=100.0, vol=10.0, seq=[0]):
        seq[0] += 1
        return {"sequence": seq[0], "recipient": f"ticker.sfox.{pair}",
                "timestamp": int(t_s * 1e9),
                "payload": {"last": last, "volume": vol, "vwap": last, "open": last,
                            "high": last, "low": last}}

    for m in (upd("btcusd", T0), upd("ethusd", T0 + 86_400), upd("bad pair", T0)):
        s.on_message(json.dumps(m).encode(), int((T0 + 0.5) * 1e9))
    assert universe.symbols == ["btcusd"]
    s.on_message(json.dumps(upd("btcusd", T0 + 1, 101.0, 15.0)).encode(), int((T0 + 1.5) * 1e9))
    assert engine.history(0)["volume"].tolist() == [0.0, 5.0]


# -- loopback: a server that sends 16,384 junk symbols a day ahead, then 50 real tickers --
def test_junk_then_real_server_keeps_every_real_ticker():
    from picows import WSListener, WSMsgType, WSUpgradeResponse, WSUpgradeResponseWithListener, \
        ws_create_server

    from fastfeed import Feed

    now = int(time.time())
    junk = [quote(f"J{i}", now + 86_400) for i in range(16_384)]
    real = [quote(f"R{i}", now - 1) for i in range(50)]

    class Junk(WSListener):
        def on_ws_connected(self, transport):
            for k in range(0, len(junk), 1024):
                transport.send(WSMsgType.TEXT, json.dumps(junk[k:k + 1024]).encode())
            transport.send(WSMsgType.TEXT, json.dumps(real).encode())

    async def main():
        server = await ws_create_server(
            lambda r: WSUpgradeResponseWithListener(WSUpgradeResponse.create_101_response(), Junk()),
            "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        feed = Feed(feed="vantafin", url=f"ws://127.0.0.1:{port}/v1/stream", api_key="k",
                    capacity=16_384)
        try:
            await feed.start_async()
            deadline = time.monotonic() + 60
            while feed.engine.counters["future_rejected"] + feed.stats.bars < 16_384 + 50:
                assert time.monotonic() < deadline, feed.stats_dict()
                await asyncio.sleep(0.01)
            assert sorted(feed.universe.symbols) == sorted(q["ticker"] for q in real)
            assert feed.stats.bars == 50 and feed.engine.counters["future_rejected"] == 16_384
        finally:
            await feed.close()
            server.close()

    asyncio.run(main())
