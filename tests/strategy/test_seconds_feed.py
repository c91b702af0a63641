"""The completed second end to end: Feed(on_second=...) against the simulator on loopback.

The simulator records what it sent of every second (its burst, bars delayed past the
burst, tickers withheld), so each announcement is checked against what had been sent
when it was made: the reason, ``reported``, ``expected``, the windows' clock. Waits
are "until a condition holds" with generous ceilings; no timing is asserted.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from fastfeed import Feed
from fastfeed.simulator import Faults, upserted
from fastfeed.simulator.testing import SimThread
from waiting import until

pytestmark = pytest.mark.timeout(120)

E = 3  # expect_seconds (the default)


def run_seconds(n_seconds: int, *, sim: dict[str, Any], **feed_kw: Any):
    """Announcements ``(T, info, engine clock at the call)`` of a vantafin Feed, and what
    the simulator sent: ``(feed, calls, sent_seconds, sent_bars)``."""
    calls: list[tuple[int, dict, int]] = []
    box: dict[str, Feed] = {}

    def on_second(T: int, info: dict) -> None:
        calls.append((T, dict(info), int(box["feed"].engine.T)))

    with SimThread(**sim) as s:
        async def main() -> Feed:
            feed = box["feed"] = Feed("vantafin", url=s.url("vantafin"), windows=(10,), on_second=on_second, **feed_kw)
            async with feed:
                await feed.wait_connected(10)
                await until(lambda: len(calls) >= n_seconds)
            return feed

        feed = asyncio.run(main())
        sent = s.call(lambda sim: [c.sent_seconds() for c in sim.connections if c.feed == "vantafin"])
        bars = s.call(lambda sim: sim.sent_bars("vantafin"))
    assert len(sent) == 1, "one connection"
    return feed, calls, sent[0], bars


def expected_set(sent: dict, T: int) -> set[str]:
    """Tickers that reported (in the burst or delayed past it) in one of the E seconds before T."""
    out: set[str] = set()
    for s in range(T - E, T):
        if s in sent:
            out |= set(sent[s].burst) | set(sent[s].delayed)
    return out


def check_announcements(calls: list, sent: dict) -> None:
    """Every second that received bars once, in order; reason, counts and clock as sent."""
    announced = [T for T, _, _ in calls]
    assert announced == [s for s in sorted(sent) if s <= announced[-1]], "each second once, in order"
    for T, info, clock in calls:
        want = expected_set(sent, T)
        burst = set(sent[T].burst)
        assert info["reported"] == len(burst), T
        assert info["expected"] == len(want), T
        assert clock == info["clock"] == T, "windows as of T at the call"


def test_every_second_completes_when_every_ticker_reports():
    feed, calls, sent, _ = run_seconds(6, sim=dict(n_tickers=100, trade_fraction=1.0, speed=4.0, bars_per_frame=25))
    check_announcements(calls, sent)
    reasons = [info["reason"] for _, info, _ in calls]
    # nothing is expected in the first second: it goes quiet (or the next second comes first,
    # when a loaded machine delayed the simulator into sending two seconds in one write)
    assert reasons[0] in ("quiet", "next") and reasons[1:] == ["complete"] * (len(calls) - 1)
    assert all(info["reported"] == 100 for _, info, _ in calls)
    doc = feed.snapshot()["stats"]
    assert doc["seconds_completed"]["complete"] >= len(calls) - 1 and doc["late_bars"] == 0
    assert doc["second_latency_us"]["count"] >= len(calls)


def test_withheld_delayed_and_corrected_bars():
    faults = Faults(withhold_every=3, withhold_count=4, delay_every=4, delay_count=3, delay_ms=120,
                    correction_every=5, correction_lag=1, correction_count=4)
    feed, calls, sent, bars = run_seconds(
        12, sim=dict(n_tickers=100, trade_fraction=1.0, speed=4.0, bars_per_frame=25, faults=faults))
    check_announcements(calls, sent)
    for T, info, _ in calls:
        want = expected_set(sent, T)
        complete = bool(want) and want <= set(sent[T].burst)
        # not complete: quiet 20 ms after the burst, 250 ms before the next one (which comes
        # first only if a loaded machine held the simulator up)
        assert info["reason"] == "complete" if complete else info["reason"] in ("quiet", "next"), (T, info)
    reasons = [info["reason"] for _, info, _ in calls]
    assert "complete" in reasons and reasons.count("quiet") >= reasons.count("next") + 2
    assert any(sent[T].withheld for T, _, _ in calls) and any(sent[T].delayed for T, _, _ in calls)
    # bars that came after their second was announced are counted per second, never announced
    tracker = feed.second_tracker
    corrections = bars[bars["correction"]]
    last = calls[-1][0]
    checked = 0
    for T, _, _ in calls:
        n = tracker.late_of(T)
        if n is None or T > last - 2:
            continue
        assert n == len(sent[T].delayed) + int((corrections["second"] == T).sum()), T
        checked += 1
    assert checked >= 3
    assert feed.stats_dict()["late_bars"] >= sum(len(sent[T].delayed) for T, _, _ in calls[:-2])


def test_a_replay_announces_what_the_live_feed_announced(tmp_path):
    """The rule follows receive times: a recording replays to the same announcements."""
    from fastfeed.recording.replay import replay

    path = tmp_path / "live.ffr"
    faults = Faults(withhold_every=3, withhold_count=4, delay_every=4, delay_count=3, delay_ms=120,
                    correction_every=5, correction_lag=1, correction_count=4)
    feed, calls, sent, _ = run_seconds(
        8, sim=dict(n_tickers=100, trade_fraction=1.0, speed=4.0, bars_per_frame=25, faults=faults), record=path)
    again = []
    replay(path, feed=Feed("vantafin", url="replay:", windows=(10,),
                           on_second=lambda T, info: again.append((T, dict(info), int(info["clock"])))))

    def key(c):
        T, info, clock = c
        return T, info["reason"], info["reported"], info["expected"], info["late_bars"], clock

    assert [key(c) for c in again[:len(calls)]] == [key(c) for c in calls]
    assert {c[1]["reason"] for c in calls} >= {"complete", "quiet"}


def test_a_later_second_closes_a_second_that_cannot_complete():
    # half the tickers trade each second: the expected set never reports in full, and the
    # silence is longer than the test: each second closes when the next one begins
    feed, calls, sent, _ = run_seconds(
        6, sim=dict(n_tickers=100, trade_fraction=0.5, speed=4.0, bars_per_frame=25), second_quiet_ms=60_000)
    check_announcements(calls, sent)
    assert [info["reason"] for _, info, _ in calls] == ["next"] * len(calls)
    assert calls[-1][1]["expected"] > calls[-1][1]["reported"]


def test_sfox_pairs_every_three_seconds_close_through_quiet():
    pairs = ["btcusd", "ethusd", "solusd", "ltcusd", "xrpusd"]
    calls = []
    with SimThread(n_tickers=10, speed=4.0) as s:
        async def main():
            feed = Feed("sfox", url=s.url("sfox"), api_key="sim-key", windows=(10,),
                        subscribe=[f"ticker.sfox.{p}" for p in pairs], on_second=lambda T, i: calls.append((T, i)))
            async with feed:
                await feed.wait_connected(10)
                await until(lambda: len(calls) >= 6)

        asyncio.run(main())
        updates = s.call(lambda sim: [u for c in sim.connections for _, u in c.sent_updates()])
    per_second: dict[int, set[str]] = {}
    for u in updates:
        per_second.setdefault(u.ts_ns // 10**9, set()).add(u.pair)
    announced = [T for T, _ in calls]
    assert announced == [T for T in sorted(per_second) if T <= announced[-1]]
    for i, (T, info) in enumerate(calls):
        # each pair updates every 3 s: all of them are expected, about a third report (the
        # first two seconds may come in one write: then a later second closes the first)
        assert info["reason"] == "quiet" or (i == 0 and info["reason"] == "next")
        assert info["reported"] == len(per_second[T])
    assert calls[-1][1]["expected"] == len(pairs) > calls[-1][1]["reported"]


def test_feed_options_are_checked():
    for bad in (dict(second_quiet_ms=0), dict(expect_seconds=0), dict(lag_warn_s=-1), dict(clock_rate=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Feed("vantafin", url="ws://127.0.0.1:1/v1/stocks", **bad)


def truth_window(bars: np.ndarray, T: int, W: int) -> dict[str, tuple]:
    """(open, high, low, close, volume, count) per symbol of window W as of T, from what was sent."""
    held = upserted(bars[(bars["second"] > T - W) & (bars["second"] <= T)])
    out: dict[str, list] = {}
    for b in held:  # sorted by (second, symbol)
        e = out.get(b["symbol"])
        if e is None:
            out[b["symbol"]] = [b["open"], b["high"], b["low"], b["close"], b["volume"], 1]
        else:
            e[1], e[2], e[3] = max(e[1], b["high"]), min(e[2], b["low"]), b["close"]
            e[4] += b["volume"]
            e[5] += 1
    return {k: tuple(v) for k, v in out.items()}


def assert_frame_matches(frame: Any, bars: np.ndarray, T: int) -> None:
    want = truth_window(bars, T, frame.window)
    assert frame.as_of == T
    got = {sym: i for i, sym in enumerate(frame.symbols) if frame.count[i] > 0}
    assert set(got) == set(want)
    for sym, (o, h, lo, c, v, n) in want.items():
        i = got[sym]
        assert (frame.open[i], frame.high[i], frame.low[i], frame.close[i], frame.count[i]) == (o, h, lo, c, n), sym
        assert frame.volume[i] == pytest.approx(v, rel=1e-9)


def test_wait_second_in_thread_mode_returns_consistent_copies():
    with SimThread(n_tickers=60, trade_fraction=1.0, speed=5.0, bars_per_frame=20) as s:
        feed = Feed("vantafin", url=s.url("vantafin"), windows=(5, 10))
        got = []
        with feed:
            for _ in range(4):
                got.append(feed.wait_second(timeout=20))
        bars = s.call(lambda sim: sim.sent_bars("vantafin"))
    Ts = [sec.T for sec in got]
    assert Ts == sorted(set(Ts))
    for sec in got:
        assert set(sec.frames) == {5, 10} and sec.info["clock"] == sec.T
        for frame in sec.frames.values():
            assert_frame_matches(frame, bars, sec.T)


def test_next_second_asyncio():
    with SimThread(n_tickers=60, trade_fraction=1.0, speed=5.0, bars_per_frame=20) as s:
        async def main():
            async with Feed("vantafin", url=s.url("vantafin"), windows=(5,)) as feed:
                await feed.wait_connected(10)
                first = await feed.next_second(timeout=20)
                second = await feed.next_second(timeout=20)
                await asyncio.sleep(1.0)  # a consumer that falls behind gets the newest second
                third = await feed.next_second(timeout=20)
                with pytest.raises(TimeoutError):
                    await feed.next_second(timeout=0.001)
                return first, second, third

        first, second, third = asyncio.run(main())
        bars = s.call(lambda sim: sim.sent_bars("vantafin"))
    assert first.T < second.T < third.T
    assert third.info["skipped"] >= 1 and third.T >= second.T + 2
    for sec in (first, second, third):
        assert_frame_matches(sec.frames[5], bars, sec.T)


# --------------------------------------------------------------------------- slow strategies

SLOW = dict(n_tickers=12_000, trade_fraction=0.5, speed=10.0, bars_per_frame=100)


def test_slow_strategy_on_its_own_thread_keeps_the_feed_exact():
    seen: dict[str, Any] = {}
    threads: set[int] = set()

    def on_second(T, info):
        threads.add(threading_ident())
        seen["second"] = (T, feed.window(10))
        time.sleep(0.3)

    def on_update(rows, T):
        seen["update"] = (T, feed.window(10), rows.copy())
        time.sleep(0.3)

    with SimThread(max_seconds=20, **SLOW) as s:
        feed = Feed("vantafin", url=s.url("vantafin"), windows=(10, 30), on_second=on_second,
                    on_update=on_update, strategy_thread=True, clock_rate=SLOW["speed"])

        async def main():
            async with feed:
                await feed.wait_connected(10)
                total = lambda: s.call(lambda sim: len(sim.sent_bars("vantafin")))  # noqa: E731
                await until(lambda: s.call(lambda sim: all(c._producer.done() for c in sim.connections)), 30)
                n = total()
                await until(lambda: feed.stats.bars == n, 30)
                await until(lambda: "second" in seen and "update" in seen, 10)
                return n

        n = asyncio.run(main())
        bars = s.call(lambda sim: sim.sent_bars("vantafin"))
    stats = feed.stats_dict()
    assert stats["reconnects"] == 0 and stats["bars"] == n == len(bars)
    assert stats["seconds_skipped"] > 0 and stats["updates_skipped"] > 0
    assert threads and threading_ident() not in threads
    for key in ("second", "update"):  # what the strategy read was a consistent state
        T, frame = seen[key][:2]
        assert_frame_matches(frame, bars, T)
    assert_frame_matches(feed.window(10, copy=True), bars, feed.T)  # and the feed is exact
    assert stats["callback_us"][f"on_second ({__name__}.{on_second.__qualname__})"]["p50"] >= 300_000


def test_slow_strategy_on_the_feed_thread_is_named_by_the_lag_warning(caplog):
    events = []

    def on_second(T, info):
        time.sleep(0.3)

    with SimThread(max_seconds=60, **SLOW) as s:
        async def main():
            async with Feed("vantafin", url=s.url("vantafin"), windows=(10,), on_second=on_second,
                            clock_rate=SLOW["speed"], on_event=lambda k, i: events.append((k, i))) as feed:
                await feed.wait_connected(10)
                await until(lambda: any(k == "lag" for k, _ in events), 30)
            return feed

        with caplog.at_level("WARNING", logger="fastfeed"):
            feed = asyncio.run(main())
    info = next(i for k, i in events if k == "lag")
    name = f"on_second ({__name__}.{on_second.__qualname__})"
    assert info["lag_s"] > 1.0 and info["callback"] == name
    assert any(name in r.getMessage() and "strategy_thread=True" in r.getMessage() for r in caplog.records)
    assert feed.stats_dict()["lag_ms"]["max"] > 1000


def threading_ident() -> int:
    import threading

    return threading.get_ident()
