"""Massive ``A.*`` dialect: aggregates with/without vw, status flow, bad elements."""
from __future__ import annotations

import json

import pytest

from fastfeed.feeds import AuthError
from feed_helpers import bars_of, make

RECV = 1_700_000_002_500_000_000


def agg(sym="AAPL", s=1700000001000, o=10.0, h=11.0, l=9.0, c=10.5, v=100, vw=10.2, **kw):
    d = {"ev": "A", "sym": sym, "v": v, "av": 5000, "op": 9.5, "vw": vw, "o": o, "c": c,
         "h": h, "l": l, "a": 10.1, "z": 12, "s": s, "e": s + 1000}
    if vw is None:
        del d["vw"]
    d.update(kw)
    return d


def test_aggregates_pv_from_vw_else_typical():
    s, engine, universe, stats, _, _ = make("massive")
    s.on_message(json.dumps([agg("A"), agg("B", vw=None)]).encode(), RECV)
    got = bars_of(engine, universe)
    assert stats.bars == 2 and stats.decode_errors == 0
    assert got[("A", 1700000001)] == (10.0, 11.0, 9.0, 10.5, 100.0, pytest.approx(100 * 10.2))
    assert got[("B", 1700000001)][5] == pytest.approx(100 * (11 + 9 + 10.5) / 3)


def test_status_flow_and_auth():
    s, engine, universe, stats, events, sent = make("massive", api_key="MK-SECRET", topics=["A.AAPL", "A.MSFT"])
    s.on_connected(sent.append)
    assert [json.loads(m) for m in sent] == [
        {"action": "auth", "params": "MK-SECRET"},
        {"action": "subscribe", "params": "A.AAPL,A.MSFT"},
    ]
    s.on_message(b'[{"ev":"status","status":"connected","message":"Connected Successfully"}]', RECV)
    s.on_message(b'[{"ev":"status","status":"auth_success","message":"authenticated"}]', RECV)
    assert s.state["authenticated"] and s.fatal is None
    s.on_message(b'[{"ev":"status","status":"market_closed","message":"market is closed"}]', RECV)
    assert s.state["market"] == "closed" and events[-1][0] == "market_status"
    s.on_message(b'[{"ev":"status","status":"auth_failed","message":"authentication failed"}]', RECV)
    assert isinstance(s.fatal, AuthError) and "MASSIVE_API_KEY" in str(s.fatal)
    assert "MK-SECRET" not in repr(s) + str(s.fatal)


def test_bad_element_and_unknown_event():
    s, engine, universe, stats, _, _ = make("massive")
    msgs = [agg(f"T{i}") for i in range(100)]
    msgs[5] = agg("T5", v=-3)
    msgs[6] = {"ev": "AM", "sym": "X"}
    msgs[7] = agg("T7", h="x")
    s.on_message(json.dumps(msgs).encode(), RECV)
    assert stats.bars == 97
    assert stats.unknown_messages == 1
    assert dict(stats.decode_errors_by_kind) == {"values": 1, "validation": 1}


@pytest.mark.parametrize("bad", ["LS.AAPL", "A.", "A.X,Y", "AM.*"])
def test_topics(bad):
    s, *_ = make("massive", topics=["A.*"])
    with pytest.raises(ValueError, match=r"A\.\{TICKER\}"):
        s.subscribe(bad)


def test_only_the_fields_read_are_validated():
    """The fields the engine does not need (``av op a z e``, anything unknown) are skipped
    whatever their JSON type, as msgspec skips undeclared fields; a field it needs that is
    missing or mistyped loses that element only, counted as ``validation``."""
    s, engine, universe, stats, _, _ = make("massive")
    odd = agg("A", av="many", op=None, a=[1, {"x": 2}], z={"k": True}, e="later", otc=False)
    missing = agg("B")
    del missing["h"]
    mistyped_time = agg("C", s=1700000001000.0)
    mistyped_vwap = agg("D", vw="10.2")
    s.on_message(json.dumps([odd, missing, mistyped_time, mistyped_vwap, agg("E")]).encode(), RECV)
    got = bars_of(engine, universe)
    assert stats.bars == 2 and set(universe.symbols) == {"A", "E"}
    assert got[("A", 1700000001)] == got[("E", 1700000001)]
    assert dict(stats.decode_errors_by_kind) == {"validation": 3}


def test_vwap_null_or_absent_is_typical_price():
    s, engine, universe, stats, _, _ = make("massive")
    s.on_message(json.dumps([agg("A", vw=None), {**agg("B"), "vw": None}]).encode(), RECV)
    got = bars_of(engine, universe)
    assert stats.bars == 2 and stats.decode_errors == 0
    assert got[("A", 1700000001)][5] == got[("B", 1700000001)][5] == pytest.approx(100 * (11 + 9 + 10.5) / 3)


def test_bad_json_in_a_skipped_field_loses_the_message():
    """A skipped field must still be JSON: the array does not parse, so it counts once as ``json``."""
    s, engine, universe, stats, _, _ = make("massive")
    body = json.dumps([agg("A"), agg("B")]).replace('"z": 12', '"z": 12x', 1).encode()
    s.on_message(body, RECV)
    assert stats.bars == 0 and dict(stats.decode_errors_by_kind) == {"json": 1}
