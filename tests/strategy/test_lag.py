"""LagMonitor: callback timing, the lag against the feed's own clock, the warning's cause."""
import json
import logging
import time

import pytest

from fastfeed import Feed
from fastfeed.strategy.lag import LagMonitor, callback_name
from fastfeed.engine import Stats

S = 1_700_000_000
NS = 1_000_000_000


def test_lag_is_measured_against_the_best_delivery_seen():
    stats = Stats()
    m = LagMonitor(stats, warn_s=1.0)
    m.observe(S, (S + 1) * NS + 30_000_000)  # bar end + 30 ms: the feed's own delay
    assert m.lag_ns == 0
    m.observe(S + 1, (S + 2) * NS + 530_000_000)
    assert m.lag_ns == 500_000_000
    m.flush_into(stats)
    assert stats.as_dict()["lag_ms"]["max"] == pytest.approx(500, rel=0.01)


def test_clock_rate_and_spread():
    fast = LagMonitor(Stats(), clock_rate=10.0)  # a simulator at speed 10 keeping up
    for k in range(20):
        fast.observe(S + 10 * k, (S * NS) // 10 + k * NS)
        assert fast.lag_ns == 0
    sfox = LagMonitor(Stats(), spread_s=1.0)  # updates arrive anywhere inside their second
    sfox.observe(S, S * NS + 10_000_000)
    sfox.observe(S + 1, (S + 1) * NS + 990_000_000)
    assert sfox.lag_ns == 0


def test_warning_names_the_callback_that_took_the_feed_thread(caplog):
    events = []
    m = LagMonitor(Stats(), warn_s=1.0, emit=lambda k, i: events.append(i))

    def strategy(T):
        time.sleep(0.05)

    name = callback_name("on_second", strategy)
    for _ in range(3):
        m.call(name, strategy, 0)
    with caplog.at_level(logging.WARNING, logger="fastfeed"):
        m.observe(S, (S + 1) * NS)
        m.observe(S + 1, (S + 4) * NS)  # 2 s behind
    assert events and events[0]["callback"] == name and events[0]["lag_s"] == pytest.approx(2.0)
    assert name in caplog.text and "strategy_thread=True" in caplog.text


def test_warning_without_a_busy_callback_blames_the_process(caplog):
    events = []
    m = LagMonitor(Stats(), warn_s=1.0, emit=lambda k, i: events.append(i))
    m.call("on_update (quick)", lambda: None)
    time.sleep(0.02)
    with caplog.at_level(logging.WARNING, logger="fastfeed"):
        m.observe(S, (S + 1) * NS)
        m.observe(S + 1, (S + 4) * NS)
    assert events[0]["callback"] is None and "too slow for this feed" in caplog.text


def test_a_failing_callback_is_counted_and_logged_not_raised(caplog):
    stats = Stats()
    m = LagMonitor(stats)

    def boom(*a):
        raise RuntimeError("strategy bug")

    with caplog.at_level(logging.ERROR, logger="fastfeed"):
        m.call("on_update (boom)", boom, 1, 2)
        m.call("on_update (boom)", boom, 1, 2)  # rate-limited: one line
    assert stats.callback_errors == 2
    assert caplog.text.count("raised (the feed goes on)") == 1 and "RuntimeError: strategy bug" in caplog.text
    assert stats.as_dict()["callback_us"]["on_update (boom)"]["count"] == 2


# --------------------------------------------------------------------------- inside a Feed

def _bars(second: int, tickers=("AAPL", "MSFT")) -> bytes:
    return json.dumps([{"type": "live_quote_second", "ticker": t, "open": 10.0, "high": 10.5, "low": 9.5,
                        "close": 10.2, "volume": 100, "timestamp": second * 1000} for t in tickers]).encode()


def test_a_plain_on_update_is_the_fillers_one_python_call_and_is_timed_there():
    calls = []

    def on_update(rows, T):
        calls.append((rows.tolist(), T))

    feed = Feed("vantafin", url="ws://127.0.0.1:1/v1/stocks", windows=(10,), on_update=on_update)
    filler = feed.session.filler
    assert filler.on_batch is on_update  # no wrapper between the C chain and the user's code
    assert filler.before_second is None  # the completed-second hook is off
    for k in range(3):
        feed.session.on_message(_bars(S + k), (S + k + 1) * NS + 5_000_000)
    assert [T for _, T in calls] == [S, S + 1, S + 2] and calls[0][0] == [0, 1]
    st = feed.stats_dict()
    assert st["callback_us"][callback_name("on_update", on_update)]["count"] == 3
    assert st["lag_ms"]["count"] == 3


def test_a_failing_plain_on_update_is_counted_as_the_callbacks_error(caplog):
    def on_update(rows, T):
        raise RuntimeError("strategy bug")

    feed = Feed("vantafin", url="ws://127.0.0.1:1/v1/stocks", windows=(10,), on_update=on_update)
    with caplog.at_level(logging.ERROR, logger="fastfeed"):
        feed.session.on_message(_bars(S), (S + 1) * NS)
        feed.session.on_message(_bars(S + 1), (S + 2) * NS)
    st = feed.stats_dict()
    assert st["callback_errors"] == 2 and st["bars"] == 4
    assert st["decode_errors_by_kind"].get("internal", 0) == 0
    assert "RuntimeError: strategy bug" in caplog.text


def test_on_second_puts_the_rule_between_the_filler_and_on_update():
    got = []
    feed = Feed("vantafin", url="ws://127.0.0.1:1/v1/stocks", windows=(10,),
                on_update=lambda rows, T: got.append(("update", T)),
                on_second=lambda T, info: got.append((info["reason"], T)))
    assert feed.session.filler.before_second is not None
    for k in range(3):
        feed.session.on_message(_bars(S + k), (S + k + 1) * NS)
    # S (nothing expected yet) closes before S+1's bars reach the engine, as "quiet" by the
    # receive times; S+1 and S+2 complete within their own update, before on_update
    assert got == [("update", S), ("quiet", S), ("complete", S + 1), ("update", S + 1),
                   ("complete", S + 2), ("update", S + 2)]
