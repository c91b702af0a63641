"""LagMonitor: callback timing, the lag against the feed's own clock, the warning's cause."""
import logging
import time

import pytest

from fastfeed.lag import LagMonitor, callback_name
from fastfeed.stats import Stats

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
