"""fastfeed._ext.decode: the fill loop, latency buckets, sFOX state; fuzzed sessions."""
from __future__ import annotations

import json
import math

import msgspec
import numpy as np
import pytest
from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st

from fastfeed._ext.decode import PV_TYPICAL, PV_VWAP, BarFiller, LatencyBuckets, SfoxState
from fastfeed.feeds import massive, vantafin
from fastfeed.errors import UniverseFull
from feed_helpers import StandInEngine, StandInUniverse, make

RECV = 1_700_000_002_500_000_000


def filler(bar_type=vantafin.LiveQuote, fields=vantafin.BAR_FIELDS, pv=PV_TYPICAL, capacity=4):
    u = StandInUniverse(8)
    e = StandInEngine(8, max_future_skew=1e12)
    return BarFiller(bar_type, fields, u, UniverseFull, e, pv, capacity), u, e


def q(t="A", o=1.0, h=2.0, l=0.5, c=1.5, v=10.0, ts=1_700_000_001_000):
    return vantafin.LiveQuote(t, o, h, l, c, v, ts)


def test_fill_reads_slots_and_matches_getattr():
    f, u, e = filler()
    msgs = [q("A"), q("B", 3, 4, 2, 3.5, 7, 1_700_000_002_999), vantafin.Status("x")]
    assert f.fill(msgs) == 2
    assert list(f.rows[:2]) == [-2, -3] and len(u) == 0  # no row before a bar is accepted
    assert f.process(msgs, RECV) == 2
    assert list(f.rows[:2]) == [0, 1] and list(f.seconds[:2]) == [1_700_000_001, 1_700_000_002]
    assert f.pv[1] == pytest.approx(7 * (4 + 2 + 3.5) / 3)
    assert f.others == [vantafin.Status("x")] and f.max_s == 1_700_000_002
    for i, m in enumerate(msgs[:2]):  # the slot reads give what attribute access gives
        assert [f.open[i], f.high[i], f.low[i], f.close[i], f.volume[i]] == [
            getattr(m, k) for k in ("open", "high", "low", "close", "volume")]
        assert f.seconds[i] == m.timestamp // 1000 and u.symbol(int(f.rows[i])) == m.ticker


def test_fill_single_object_and_non_bar():
    f, u, e = filler()
    assert f.fill(q()) == 1 and f.others is None
    assert f.fill(vantafin.MarketStatus("open")) == 0 and f.others == [vantafin.MarketStatus("open")]
    assert f.fill(None) == 0 and f.others == [None]
    assert f.fill([]) == 0 and f.others is None


def test_fill_grows_and_values_checks():
    f, u, e = filler(capacity=1)
    bad = [q(v=-1), q(h=0.1, l=0.2), q(o=math.nan), q(c=math.inf), q(ts=-5)]
    assert f.fill([q("A"), *bad, q("B")]) == 2 and f.values_errors == 5
    assert f.capacity >= 7


def test_wrong_python_types_in_slots_are_values_errors_not_crashes():
    f, u, e = filler()
    # Structs built in Python skip msgspec's validation: the filler must still be safe
    weird = [vantafin.LiveQuote("A", "x", 1, 1, 1, 1, 1000), vantafin.LiveQuote(5, 1, 1, 1, 1, 1, 1000),
             vantafin.LiveQuote("A", 1, 1, 1, 1, 1, 10**30), vantafin.LiveQuote("A", 1, 1, 1, 1, 1, 1.5),
             vantafin.LiveQuote("A", 1, 1, 1, 1, 1, True)]
    assert f.fill(weird) == 0 and f.values_errors == 5


def test_universe_overflow_skips_bar():
    u = StandInUniverse(1)
    f = BarFiller(vantafin.LiveQuote, vantafin.BAR_FIELDS, u, UniverseFull, StandInEngine(), PV_TYPICAL)
    assert f.process([q("A"), q("B"), q("A")], RECV) == 2 and f.overflow == 1 and f.n == 3
    assert u.symbols == ["A"]


def test_massive_vw_pv():
    f, u, e = filler(massive.Agg, massive.BAR_FIELDS, PV_VWAP)
    a = massive.Agg("X", 10.0, 1.0, 2.0, 3.0, 0.5, 5000, 1.7)
    b = massive.Agg("Y", 10.0, 1.0, 2.0, 3.0, 0.5, 5000, None)
    assert f.fill([a, b]) == 2
    assert f.pv[0] == pytest.approx(17.0) and f.pv[1] == pytest.approx(10 * (3 + 0.5 + 2) / 3)
    assert f.fill([massive.Agg("X", 10.0, 1.0, 2.0, 3.0, 0.5, 5000, math.nan)]) == 0
    with pytest.raises(ValueError):
        BarFiller(vantafin.LiveQuote, vantafin.BAR_FIELDS, u, UniverseFull, e, PV_VWAP)
    with pytest.raises(TypeError):
        BarFiller(vantafin.LiveQuote, ("nope",) + vantafin.BAR_FIELDS[1:], u, UniverseFull, e)


def test_latency_buckets_precision_and_flush():
    b = LatencyBuckets()
    h = HdrHistogram(1, 10**10, 3)
    values = [1, 5, 127, 128, 1000, 123_456, 9_999_999, 2**40]
    for v in values:
        b.add(v)
    b.add(-4)  # clamped to 1
    assert b.pending == len(values) + 1
    assert b.flush_into(h) == len(values) + 1 and b.pending == 0
    assert h.get_total_count() == len(values) + 1
    assert h.get_max_value() == 10**10 or h.get_max_value() == pytest.approx(10**10, rel=0.01)  # clamped
    for v in values[:-1]:
        idx = int(np.flatnonzero(_one(v))[0])
        assert LatencyBuckets.bucket_value(idx) == pytest.approx(v, rel=0.008)
    assert b.flush_into(h) == 0


def _one(v):
    b = LatencyBuckets()
    b.add(v)
    return b.array


def test_sfox_state_baseline_merge_reset_disorder():
    u = StandInUniverse(4)
    out = BarFiller(None, None, u, UniverseFull, StandInEngine(), capacity=1)
    st_ = SfoxState(4)
    S = 1_649_901_842
    assert st_.update(out, 2, S * 10**9, 100.0, 10.0, 99.0, 1, 2, 0.5) == 1
    assert (out.open[0], out.volume[0], out.pv[0], out.seconds[0], out.rows[0]) == (100.0, 0.0, 0.0, S, 2)
    st_.update(out, 2, S * 10**9 + 5, 101.0, 11.0, 99.1, 1, 2, 0.5)  # same second: merged
    assert (out.open[0], out.high[0], out.low[0], out.close[0]) == (100.0, 101.0, 100.0, 101.0)
    assert out.volume[0] == pytest.approx(1.0) and out.pv[0] == pytest.approx(11 * 99.1 - 10 * 99.0)
    assert st_.update(out, 2, S * 10**9 + 1, 1.0, 1.0, 1.0, 1, 2, 0.5) == 0 and st_.disorder == 1
    st_.update(out, 2, (S + 1) * 10**9, 102.0, 2.0, 100.0, 1, 2, 0.5)  # volume drop: reset
    assert out.volume[0] == 2.0 and out.pv[0] == 200.0 and st_.resets == 1
    assert st_.day_volume[2] == 2.0 and st_.day_last[2] == 102.0
    with pytest.raises(IndexError):
        st_.update(out, 9, 0, 1, 1, 1, 1, 1, 1)
    st_.reset()
    st_.update(out, 2, (S + 2) * 10**9, 103.0, 3.0, 100.0, 1, 2, 0.5)
    assert out.volume[0] == 0.0  # baseline again


# ---------------------------------------------------------------------------- fuzz

GOOD, VALUES, VALIDATION, UNKNOWN, CONTROL = range(5)


@st.composite
def element(draw):
    kind = draw(st.sampled_from([GOOD, GOOD, GOOD, VALUES, VALIDATION, UNKNOWN, CONTROL]))
    i = draw(st.integers(0, 50))
    d = {"type": "live_quote_second", "ticker": f"T{i}", "open": 10.0, "high": 11.0, "low": 9.0,
         "close": 10.5, "volume": draw(st.integers(0, 10**6)), "timestamp": 1_700_000_001_000 + 1000 * draw(st.integers(0, 3))}
    if kind == VALUES:
        d.update(draw(st.sampled_from([{"volume": -1}, {"high": 1.0, "low": 2.0}])))
    elif kind == VALIDATION:
        choice = draw(st.integers(0, 4))
        if choice == 0:
            d["open"] = "x"
        elif choice == 1:
            del d["close"]
        elif choice == 2:
            d = draw(st.sampled_from([1, "s", None, [1], {"ticker": "X"}]))
        elif choice == 3:
            d["timestamp"] = 1.25
        else:
            d["open"] = "1e400"
    elif kind == UNKNOWN:
        d = {"type": draw(st.sampled_from(["trade", "quote", "x"])), "x": 1}
    elif kind == CONTROL:
        d = draw(st.sampled_from([{"type": "status", "status": "success", "message": "ok"},
                                  {"type": "market_status", "market": "open", "timestamp": 1}]))
    if draw(st.booleans()) and isinstance(d, dict) and "type" in d:  # tag not first
        d = {**{k: v for k, v in d.items() if k != "type"}, "type": d["type"]}
    return kind, d


@settings(max_examples=150, deadline=None)
@given(st.lists(element(), max_size=60), st.booleans(), st.integers(1, 4), st.booleans())
def test_random_arrays_never_raise_and_count_exactly(elems, as_object, parts, deferred):
    """Any mix of elements, sent as 1..4 messages, upserted per message or per buffer."""
    s, engine, universe, stats, _, _ = make(real=False, batch_capacity=4)
    s.defer_until_buffer_end = deferred
    step = max(1, -(-len(elems) // parts))
    for i in range(0, max(len(elems), 1), step):
        chunk = elems[i:i + step]
        if as_object and len(chunk) == 1:
            body = json.dumps(chunk[0][1])
        else:
            body = json.dumps([d for _, d in chunk])
        s.on_message(body.replace('"1e400"', "1e400").encode(), RECV)
    s.on_buffer_end()
    kinds = [k for k, _ in elems]
    assert stats.bars == kinds.count(GOOD)
    assert stats.decode_errors_by_kind["values"] == kinds.count(VALUES)
    assert stats.decode_errors_by_kind["validation"] == kinds.count(VALIDATION)
    assert stats.unknown_messages == kinds.count(UNKNOWN)
    assert stats.decode_errors == kinds.count(VALUES) + kinds.count(VALIDATION)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data):
    for name in ("vantafin", "sfox", "massive"):
        s, engine, universe, stats, _, _ = make(name, real=False)
        s.on_message(data, RECV)
        s.on_message(memoryview(data), RECV)
        assert stats.decode_errors_by_kind.get("internal", 0) == 0


def test_msgspec_rejects_what_the_fuzzer_assumes():
    with pytest.raises(msgspec.ValidationError):
        vantafin.element_decoder.decode(b'{"type":"live_quote_second","ticker":"A","open":1e400,"high":1,"low":1,"close":1,"volume":1,"timestamp":1}')


def test_fill_reuses_its_arrays_without_memory_growth():
    import tracemalloc

    s, engine, universe, stats, _, _ = make()
    body = json.dumps([{"type": "live_quote_second", "ticker": f"T{i}", "open": 1.0, "high": 2.0, "low": 0.5,
                        "close": 1.5, "volume": 10, "timestamp": 1_700_000_001_000} for i in range(100)]).encode()
    msg = vantafin.decoder.decode(body)
    f = s.filler
    for _ in range(10):
        f.process(msg, RECV)
    tracemalloc.start()
    try:
        f.fill(msg)
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(1000):
            f.fill(msg)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert f.n == 100 and grown < 1024  # 100,000 bars filled into the same arrays: no growth
