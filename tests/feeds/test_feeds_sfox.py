"""sFOX ticker session: seed envelope, acks, bar derivation (docs/PROTOCOLS.md §2), sequence gaps."""
from __future__ import annotations

import json

import pytest

from fastfeed.feeds import AuthError, sfox
from feed_helpers import bars_of, make

SEED = (b'{"sequence":4,"recipient":"ticker.sfox.btcusd","timestamp":1649901842979345289,\n'
        b' "payload":{"amount":0.00005737,"exchange":"coinbase","high":41512.43,"last":41420.58,\n'
        b' "low":41058.82,"open":41141.31,"pair":"btcusd","route":"Smart","source":"ticker-info",\n'
        b' "timestamp":"2022-04-14T02:04:02.481Z","volume":1387.77211046,"vwap":41283.96339697249}}')
ACKS = [
    b'{"type":"success","sequence":1,"timestamp":1649901842000000000,"payload":{"action":"subscribe","feeds":["ticker.sfox.btcusd"]},"action":"subscribe"}',
    b'{"type":"success","sequence":2,"timestamp":1649901842000000000,"payload":{"action":"authenticate"},"action":"authenticate"}',
]
AUTH_ERROR = b'{"type":"error","sequence":2,"timestamp":1649901842000000000,"payload":{"action":"authenticate","error":"invalid api key"},"action":"authenticate"}'
T0 = 1649901842979345289  # 2022-04-14T02:04:02.979Z
DAY = 86400 * 10**9


class Feed:
    """Builds envelopes with consecutive sequence numbers."""

    def __init__(self, session, seq=1):
        self.s = session
        self.seq = seq

    def send(self, t, last, volume, vwap, pair="btcusd", **extra):
        p = {"last": last, "volume": volume, "vwap": vwap, "open": 1.0, "high": 2.0, "low": 0.5,
             "pair": pair, "amount": 0.1, "timestamp": "x"}
        p.update(extra)
        env = {"sequence": self.seq, "recipient": f"ticker.sfox.{pair}", "timestamp": t, "payload": p}
        self.seq += 1
        self.s.on_message(json.dumps(env).encode(), t + 1000)


def test_seed_first_update_is_a_baseline_bar():
    s, engine, universe, stats, events, _ = make("sfox")
    s.on_message(SEED, T0 + 10**6)
    assert stats.bars == 1 and stats.decode_errors == 0 and stats.sequence_gaps == 0
    bar = bars_of(engine, universe)[("btcusd", 1649901842)]
    assert bar == (41420.58, 41420.58, 41420.58, 41420.58, 0.0, 0.0)
    assert s.daily("btcusd") == {
        "open": 41141.31, "high": 41512.43, "low": 41058.82, "volume": 1387.77211046,
        "vwap": 41283.96339697249, "last": 41420.58, "timestamp_ns": T0,
    }
    assert s.daily("ethusd") is None


def test_differencing_and_merge_within_a_second():
    s, engine, universe, stats, _, _ = make("sfox")
    f = Feed(s)
    f.send(T0, 100.0, 10.0, 99.0)            # baseline in second S
    f.send(T0 + 3 * 10**9, 101.0, 12.0, 99.5)  # second S+3
    S = T0 // 10**9
    got = bars_of(engine, universe)
    assert got[("btcusd", S + 3)][:5] == (101.0, 101.0, 101.0, 101.0, pytest.approx(2.0))
    assert got[("btcusd", S + 3)][5] == pytest.approx(12 * 99.5 - 10 * 99.0)
    # two more updates in second S+4 merge into one bar
    t4 = (S + 4) * 10**9
    f.send(t4 + 1, 103.0, 13.0, 99.8)
    f.send(t4 + 5 * 10**8, 100.5, 15.0, 100.0)
    f.send(t4 + 9 * 10**8, 102.0, 15.5, 100.1)
    bar = bars_of(engine, universe)[("btcusd", S + 4)]
    assert bar[:4] == (103.0, 103.0, 100.5, 102.0)
    assert bar[4] == pytest.approx(15.5 - 12.0)
    assert bar[5] == pytest.approx(15.5 * 100.1 - 12 * 99.5)
    assert stats.bars == 5 and stats.sequence_gaps == 0


def test_utc_midnight_reset_by_volume_drop_and_by_day():
    s, engine, universe, stats, _, _ = make("sfox")
    f = Feed(s)
    midnight = (T0 // DAY + 1) * DAY
    f.send(midnight - 2 * 10**9, 100.0, 500.0, 90.0)  # baseline, 23:59:58
    f.send(midnight + 1 * 10**9, 101.0, 3.0, 101.0)    # volume dropped: reset
    bar = bars_of(engine, universe)[("btcusd", midnight // 10**9 + 1)]
    assert bar[4:] == (3.0, pytest.approx(3.0 * 101.0))
    # later UTC day although the volume did not drop: reset too
    f.send(midnight + DAY + 10**9, 102.0, 4.0, 100.0)
    bar = bars_of(engine, universe)[("btcusd", (midnight + DAY) // 10**9 + 1)]
    assert bar[4:] == (4.0, pytest.approx(400.0))
    # same day, growing volume: plain differencing again
    f.send(midnight + DAY + 5 * 10**9, 102.5, 6.0, 101.0)
    bar = bars_of(engine, universe)[("btcusd", (midnight + DAY) // 10**9 + 5)]
    assert bar[4:] == (pytest.approx(2.0), pytest.approx(6 * 101.0 - 400.0))
    assert s.sfox.resets == 2


def test_pairs_are_independent_rows():
    s, engine, universe, stats, _, _ = make("sfox", topics=["ticker.sfox.btcusd", "ticker.sfox.ethusd"])
    f = Feed(s)
    f.send(T0, 100.0, 10.0, 99.0)
    f.send(T0, 2000.0, 50.0, 1990.0, pair="ethusd")
    f.send(T0 + 10**9, 2001.0, 51.0, 1991.0, pair="ethusd")
    assert universe.get("btcusd") == 0 and universe.get("ethusd") == 1
    assert bars_of(engine, universe)[("ethusd", T0 // 10**9 + 1)][4] == pytest.approx(1.0)


def test_sequence_gaps_counted_with_event_and_reset_on_reconnect():
    s, engine, universe, stats, events, sent = make("sfox")
    s.on_connected(sent.append)
    f = Feed(s, seq=10)
    f.send(T0, 100.0, 10.0, 99.0)
    f.seq = 12  # one message lost
    f.send(T0 + 10**9, 100.0, 10.0, 99.0)
    assert stats.sequence_gaps == 1
    assert events[-1] == ("sequence_gap", {"expected": 11, "got": 12, "recipient": "ticker.sfox.btcusd"})
    f.seq = 5  # disorder is a gap too
    f.send(T0 + 2 * 10**9, 100.0, 10.0, 99.0)
    assert stats.sequence_gaps == 2
    s.on_disconnected("test")
    s.on_connected(sent.append)
    f.seq = 1  # a new connection starts over: no gap
    f.send(T0 + 3 * 10**9, 100.0, 10.0, 99.0)
    assert stats.sequence_gaps == 2


def test_malformed_message_keeps_its_sequence_number():
    s, engine, universe, stats, events, _ = make("sfox")
    f = Feed(s)
    f.send(T0, 100.0, 10.0, 99.0)
    s.on_message(b'{"sequence":2,"recipient":"ticker.sfox.btcusd","timestamp":1,"payload":{"last":"x"}}', T0)
    f.seq = 3
    f.send(T0 + 10**9, 100.0, 11.0, 99.0)
    assert stats.sequence_gaps == 0 and stats.decode_errors_by_kind["validation"] == 1


def test_acks_subscribe_message_and_auth():
    s, engine, universe, stats, events, sent = make(
        "sfox", api_key="SFOX-SECRET", topics=["ticker.sfox.btcusd", "ticker.sfox.ethusd"])
    s.on_connected(sent.append)
    assert [json.loads(m) for m in sent] == [
        {"type": "authenticate", "apiKey": "SFOX-SECRET", "enterprise": "true"},
        {"type": "subscribe", "feeds": ["ticker.sfox.btcusd", "ticker.sfox.ethusd"]},
    ]
    for a in ACKS:
        s.on_message(a, T0)
    assert s.state["authenticated"] and "ticker.sfox.btcusd" in s.state["subscribed"]
    assert stats.unknown_messages == 0 and stats.decode_errors == 0
    s.unsubscribe("ticker.sfox.ethusd")
    assert json.loads(sent[-1]) == {"type": "unsubscribe", "feeds": ["ticker.sfox.ethusd"]}


def test_auth_error_is_fatal_without_the_key():
    s, engine, universe, stats, events, sent = make("sfox", api_key="SFOX-SECRET")
    s.on_message(AUTH_ERROR, T0)
    assert isinstance(s.fatal, AuthError)
    assert "invalid api key" in str(s.fatal) and "SFOX-SECRET" not in str(s.fatal) + repr(s)


def test_no_auth_without_key():
    s, *_, sent = make("sfox")
    s.on_connected(sent.append)
    assert [json.loads(m) for m in sent] == [{"type": "subscribe", "feeds": ["ticker.sfox.btcusd"]}]


def test_bad_input_counted():
    s, engine, universe, stats, _, _ = make("sfox")
    f = Feed(s)
    f.send(T0, 100.0, -1.0, 99.0)
    s.on_message(b'{"sequence":9,"recipient":"ticker.sfox.btcusd","timestamp":5,"payload":{"volume":1.0}}', T0)
    s.on_message(b'{"sequence":10,"recipient":"orderbook.sfox.btcusd","timestamp":5,"payload":{}}', T0)
    s.on_message(b'{"type":"pong","sequence":11}', T0)
    s.on_message(b"not json", T0)
    assert dict(stats.decode_errors_by_kind) == {"values": 1, "validation": 1, "json": 1}
    assert stats.unknown_messages == 2 and stats.bars == 0


@pytest.mark.parametrize("bad", ["btcusd", "ticker.sfox.", "ticker.sfox.BTC-USD", "ticker.kraken.btcusd"])
def test_topics(bad):
    s, *_ = make("sfox")
    with pytest.raises(ValueError, match="ticker.sfox"):
        s.subscribe([bad])


def test_decoder_tells_acks_from_data_in_one_pass():
    env = sfox.decoder.decode(SEED)
    assert env.type is None and env.payload.last == 41420.58
    ack = sfox.decoder.decode(ACKS[0])
    assert ack.type == "success" and ack.payload.feeds == ["ticker.sfox.btcusd"]
