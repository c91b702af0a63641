"""The Feed API as a strategy author uses it, against the simulator on loopback."""
import asyncio
import math
import threading

import numpy as np
import pytest

from fastfeed import Feed
from fastfeed.feed import ConfigurationError
from fastfeed.feeds import AuthError


def run(coro):
    return asyncio.run(coro)


def test_asyncio_mode_updates_windows_and_calls_back_once_per_message(sim):
    calls = []

    def on_update(rows, T):
        assert rows.dtype == np.int64
        calls.append((rows.copy(), T))

    async def main():
        async with Feed("vantafin", url=sim.url("vantafin"), windows=(60, 300), on_update=on_update) as feed:
            await feed.wait_connected(10)
            while feed.stats.bars < 2000:
                await asyncio.sleep(0.05)
            view = feed.window(60)
            copy = feed.window(60, copy=True)
            return feed, view, copy

    feed, view, copy = run(main())
    assert calls, "on_update was never called"
    assert len(calls) <= feed.stats.messages  # once per message, not per bar
    rows = np.concatenate([r for r, _ in calls])
    assert rows.max() < len(feed.universe)
    assert calls[-1][1] == feed.T
    assert len(copy.symbols) == len(feed.universe) == 300
    active = copy.count > 0
    assert active.all()
    # the copy is the engine's window: each row's figures are those of the bars it holds
    for row in range(0, len(copy.symbols), 37):
        h = feed.history(copy.symbols[row])
        held = h["second"] > feed.T - 60
        assert copy.count[row] == held.sum()
        assert (copy.high[row], copy.low[row]) == (h["high"][held].max(), h["low"][held].min())
        assert (copy.open[row], copy.close[row]) == (h["open"][held][0], h["close"][held][-1])
    # after close the views still show the same engine state as the copy
    np.testing.assert_array_equal(view.high, copy.high)


def test_history_snapshot_and_stats_agree(sim):
    async def main():
        async with Feed("vantafin", url=sim.url("vantafin"), windows=(60,)) as feed:
            await feed.wait_connected(10)
            while feed.stats.bars < 900:
                await asyncio.sleep(0.05)
        return feed

    feed = run(main())
    doc = feed.snapshot()
    sym = feed.universe.symbols[0]
    entry = doc["windows"]["60"][sym]
    hist = feed.history(sym)
    in_window = hist["second"] > doc["as_of"] - 60
    assert entry["count"] == int(in_window.sum())
    assert entry["high"] == hist["high"][in_window].max()
    assert entry["volume"] == pytest.approx(math.fsum(hist["volume"][in_window]), rel=1e-9)
    assert doc["stats"]["bars"] == feed.stats.bars > 0
    assert doc["stats"]["messages"] > 0 and doc["stats"]["frames"] >= doc["stats"]["messages"]
    with pytest.raises(KeyError, match="no 300s window"):
        feed.window(300)
    with pytest.raises(KeyError, match="has sent no bar"):
        feed.history("NOPE")


def test_background_thread_mode_gives_consistent_copies_from_another_thread(sim):
    seen_threads = set()
    feed = Feed("vantafin", url=sim.url("vantafin"), windows=(60, 300),
                on_update=lambda rows, T: seen_threads.add(threading.get_ident()))
    feed.start(wait_connected=10)
    try:
        deadline = 200
        while feed.stats.bars < 1500 and deadline:
            threading.Event().wait(0.05)
            deadline -= 1
        for _ in range(5):
            doc = feed.snapshot()
            # one read is one state of the engine (never torn by an update on the feed's
            # thread): the 300 s window holds everything the 60 s window holds
            short, long = doc["windows"]["60"], doc["windows"]["300"]
            assert short and set(short) <= set(long)
            for sym, b in short.items():
                c = long[sym]
                assert c["count"] >= b["count"] and c["volume"] >= b["volume"]
                assert c["high"] >= b["high"] and c["low"] <= b["low"] and c["close"] == b["close"]
    finally:
        feed.stop()
    assert seen_threads and threading.get_ident() not in seen_threads
    assert feed._thread is None


def test_thread_mode_raises_auth_error_from_start(sim):
    feed = Feed("vantafin", url=sim.url("vantafin", api_key="wrong-key"))
    with pytest.raises(AuthError) as e:
        feed.start(wait_connected=10)
    assert "wrong-key" not in str(e.value)
    feed.stop()


def test_asyncio_auth_failure_ends_the_feed_with_a_clear_error(sim):
    async def main():
        feed = Feed("sfox", url=sim.url("sfox"), api_key="bad-key", subscribe=["ticker.sfox.btcusd"])
        async with feed:
            with pytest.raises(AuthError):
                await feed.wait_closed()
        return feed

    feed = run(main())
    assert isinstance(feed.error, AuthError)
    assert "bad-key" not in repr(feed) + str(feed.error)


def test_sfox_feed_derives_bars_from_the_ticker(sim):
    async def main():
        async with Feed("sfox", url=sim.url("sfox"), api_key="sim-key",
                        subscribe=["ticker.sfox.btcusd", "ticker.sfox.ethusd"], windows=(300,)) as feed:
            await feed.wait_connected(10)
            while feed.stats.bars < 6:
                await asyncio.sleep(0.05)
            return feed.window(300, copy=True)

    w = run(main())
    assert set(w.symbols) == {"btcusd", "ethusd"}
    assert (w.count > 0).all() and np.isfinite(w.close).all()


def test_configuration_errors_are_clear(monkeypatch):
    monkeypatch.delenv("VANTAFIN_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="VANTAFIN_API_KEY"):
        Feed("vantafin")
    with pytest.raises(ConfigurationError, match="unknown feed"):
        Feed("nyse", url="ws://127.0.0.1:1/")
    with pytest.raises(ConfigurationError, match="needs topics"):
        Feed("sfox", url="ws://127.0.0.1:1/ws")
    with pytest.raises(ValueError):
        Feed("vantafin", url="ws://127.0.0.1:1/v1/stocks", windows=(60, 120), depth=100)


def test_key_from_environment_is_used_and_never_shown(monkeypatch):
    monkeypatch.setenv("VANTAFIN_API_KEY", "vf-live-SECRET123")
    feed = Feed("vantafin")
    assert feed.url == "wss://socket.vantafin.com/v1/stocks"
    assert "SECRET123" not in repr(feed)
    masked = Feed("vantafin", url="ws://127.0.0.1:1/v1/stocks?apiKey=vf-live-SECRET123")
    assert "SECRET123" not in masked.url and "apiKey=***" in masked.url


def test_dataframe_exports(sim):
    async def main():
        async with Feed("vantafin", url=sim.url("vantafin"), windows=(60,)) as feed:
            await feed.wait_connected(10)
            while feed.stats.bars < 300:
                await asyncio.sleep(0.05)
            return feed.window(60, copy=True)

    w = run(main())
    pd = pytest.importorskip("pandas")
    df = w.to_pandas()
    assert list(df.columns) == ["open", "high", "low", "close", "volume", "vwap", "count"]
    assert df.index.name == "symbol" and len(df) == len(w.symbols)
    pa = pytest.importorskip("pyarrow")
    assert w.to_arrow().num_rows == len(w.symbols)


def test_missing_optional_package_is_a_clear_error(monkeypatch):
    import builtins

    from fastfeed.engine.window import WindowFrame

    real_import = builtins.__import__

    def no_polars(name, *a, **k):
        if name == "polars":
            raise ImportError("no polars")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_polars)
    e = np.zeros(1)
    w = WindowFrame(60, None, ["A"], e, e, e, e, e, e, e.astype(np.int64))
    with pytest.raises(ImportError, match=r"pip install 'fastfeed\[polars\]'"):
        w.to_polars()


def test_record_option_captures_the_session_and_replays_to_the_same_windows(sim, tmp_path):
    from fastfeed.recording.replay import replay

    path = tmp_path / "live.ffr"

    async def main():
        async with Feed("vantafin", url=sim.url("vantafin"), windows=(60, 300), record=path) as feed:
            await feed.wait_connected(10)
            while feed.stats.bars < 1200:
                await asyncio.sleep(0.05)
        return feed

    feed = run(main())
    assert feed.recording["messages"] == feed.stats.messages and not feed.recording["error"]
    assert "sim-key" not in path.read_bytes().decode("latin-1")
    live = feed.snapshot()
    again = replay(path).snapshot()
    assert again["as_of"] == live["as_of"]
    assert again["windows"] == live["windows"]
    assert again["stats"]["bars"] == live["stats"]["bars"]


@pytest.mark.parametrize("mode", ["close", "abrupt"])
def test_reconnect_that_misses_seconds_is_reported_as_a_gap(mode):
    from fastfeed.simulator.faults import Faults
    from fastfeed.simulator.testing import SimThread

    events = []
    faults = Faults(drop_after=5, drop_mode=mode, connections=1)
    with SimThread(n_tickers=100, trade_fraction=1.0, speed=20.0, bars_per_frame=50, faults=faults) as s:
        async def main():
            # the first retry waits >= 0.5 s: at 20x that misses at least 10 simulated seconds
            async with Feed("vantafin", url=s.url("vantafin"), windows=(60,),
                            connection_options={"backoff_initial": 1.0, "backoff_max": 1.0},
                            on_event=lambda k, i: events.append((k, i))) as feed:
                await feed.wait_connected(10)
                while feed.stats.gaps == 0 or feed.stats.bars < 2000:
                    await asyncio.sleep(0.05)
            return feed

        feed = run(main())
    assert feed.stats.reconnects == 1
    (before, after), = feed.stats.gap_list
    assert after >= before + 10 and before > 0
    gap_events = [i for k, i in events if k == "gap"]
    assert gap_events == [{"last_before": before, "first_after": after}]
    kinds = [k for k, _ in events]
    assert kinds.index("disconnected") < kinds.index("gap")
    assert feed.stats_dict()["gaps"] == 1


def test_a_closed_feed_is_garbage_collected(sim):
    """Nothing the connection hands to C keeps a closed feed (and its engine's memory) alive."""
    import gc
    import weakref

    async def run():
        feed = Feed("vantafin", url=sim.url("vantafin"), windows=(60,), capacity=1024,
                    on_update=lambda rows, T: None)
        await feed.start_async()
        await feed.wait_connected(10)
        for _ in range(2000):  # until bars flow (at most 20 s)
            if feed.stats.bars:
                break
            await asyncio.sleep(0.01)
        await feed.close()
        assert feed.stats.bars > 0
        return weakref.ref(feed), weakref.ref(feed.session)

    feed_ref, session_ref = asyncio.run(run())
    gc.collect()
    assert feed_ref() is None and session_ref() is None


@pytest.mark.parametrize("feed_name,faults,key,reason", [
    ("vantafin", {}, None, "not authenticated; no key was given"),
    ("sfox", {}, None, "subscribe: not authenticated; no key was given"),
    ("massive", {}, None, "not authenticated; no key was given"),
    ("vantafin", {"reject_status": 401}, "sim-key", "HTTP 401 on the upgrade"),
    ("massive", {"reject_status": 403}, "sim-key", "HTTP 403 on the upgrade"),
    ("vantafin", {"policy_close": True}, "sim-key", "server closed (1008: policy violation) after connecting"),
    ("sfox", {"policy_close": True}, "sim-key", "server closed (1008: policy violation) after connecting"),
])
def test_feed_raises_auth_error_whenever_access_is_refused(feed_name, faults, key, reason, monkeypatch):
    from fastfeed.simulator import Faults
    from fastfeed.simulator.testing import SimThread

    for var in ("VANTAFIN_API_KEY", "SFOX_API_KEY", "MASSIVE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    topics = ["ticker.sfox.btcusd"] if feed_name == "sfox" else None

    async def main(url):
        events = []
        feed = Feed(feed_name, url=url, api_key=key, subscribe=topics, on_event=lambda k, i: events.append(k),
                    connection_options={"backoff_initial": 0.01, "backoff_max": 0.05})
        async with feed:
            with pytest.raises(AuthError) as e:
                await asyncio.wait_for(feed.wait_closed(), 20)
        assert events.count("auth_failed") == 1 and events.count("connected") <= 1  # never retried
        return e.value

    with SimThread(n_tickers=20, speed=20.0, sfox_interval=1, faults=Faults(**faults)) as s:
        err = run(main(s.url(feed_name, api_key=None)))
    assert err.reason == reason and err.key_env == f"{feed_name.upper()}_API_KEY"
    assert "sim-key" not in str(err)
