"""Replay: recorded messages through the same session and engine give the same state."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

import fastfeed.recording as rec
from fastfeed.recording import CONNECTED, MESSAGE, Reader, Writer
from fastfeed.recording.replay import parse_speed, replay

T0 = 1_700_000_000
#: stats the recording cannot reproduce (transport-level / wall clock): see RECORDING.md
NOT_RECORDED = ("frames", "protocol_errors", "protocol_errors_by_kind", "processing_latency_us",
                "lag_ms")


def _bar(tk, s, o, h, lo, c, v):
    return {"type": "live_quote_second", "ticker": tk, "open": o, "high": h, "low": lo,
            "close": c, "volume": v, "timestamp": s * 1000}


def _messages(n_seconds=400, tickers=("AAPL", "MSFT", "NVDA", "TSLA")):
    """(payload, recv_ns, kind) of a small Vantafin session with faults of every kind."""
    out = [(b"", T0 * 10**9, CONNECTED),
           (json.dumps({"type": "status", "status": "connected", "message": "hi"}).encode(),
            T0 * 10**9 + 1, MESSAGE)]
    for s in range(T0, T0 + n_seconds):
        ns = (s + 1) * 10**9 + 1_000_000
        bars = [_bar(tk, s, 100 + i + (s % 7), 101 + i + (s % 7), 99 + i, 100.5 + i, 10 * (i + 1) + s % 13)
                for i, tk in enumerate(tickers)]
        out.append((json.dumps(bars).encode(), ns, MESSAGE))
        if s % 17 == 0:  # a correction of an earlier second
            out.append((json.dumps([_bar("AAPL", s - 2, 1, 2, 0.5, 1.5, 999)]).encode(), ns + 1, MESSAGE))
        if s % 29 == 0:  # malformed JSON, an unknown type, a bad element among good ones
            out.append((b'[{"type":"live_quote_second","ticker":', ns + 2, MESSAGE))
            out.append((b'{"type":"weird","x":1}', ns + 3, MESSAGE))
            out.append((json.dumps([_bar("MSFT", s, 1, 2, 0.5, 1.5, 5), {"type": "live_quote_second"}]).encode(),
                        ns + 4, MESSAGE))
        if s % 53 == 0:  # a bar from far in the future (rejected), and a stale one
            out.append((json.dumps([_bar("AAPL", s + 3600, 1, 2, 0.5, 1.5, 5)]).encode(), ns + 5, MESSAGE))
            out.append((json.dumps([_bar("AAPL", s - 5000, 1, 2, 0.5, 1.5, 5)]).encode(), ns + 6, MESSAGE))
        if s == T0 + 150:  # a reconnect (no second missed)
            out.append((b"server closed (1001)", ns + 7, rec.DISCONNECTED))
            out.append((b"", ns + 8, CONNECTED))
    return out


def _write(path, msgs, meta=None, **kw):
    w = Writer(path, feed="vantafin", url="ws://127.0.0.1:9/v1/stocks?apiKey=sim-key",
               meta={"topics": ["LS.*"], "engine": {"windows": [60, 300], "depth": 300,
                                                   "capacity": 64, "max_future_skew": 5.0},
                     **(meta or {})}, start_ns=T0 * 10**9, **kw)
    for payload, ns, kind in msgs:
        if kind == MESSAGE:
            w.message(payload, ns)
        elif kind == CONNECTED:
            w.connected(ns)
        else:
            w.disconnected(ns, payload.decode())
    w.close()
    assert w.error is None
    return w


def _direct(msgs, windows=(60, 300)):
    """What a live Feed would hold after receiving msgs (driven without a recording)."""
    from fastfeed.feed import Feed

    feed = Feed("vantafin", url="ws://127.0.0.1:9/v1/stocks", windows=windows, capacity=64)
    connects = 0
    for payload, ns, kind in msgs:
        if kind == MESSAGE:
            feed.stats.messages += 1
            feed.stats.bytes += len(payload)
            feed.session.on_message(payload, ns)
        elif kind == CONNECTED:
            connects += 1
            if connects > 1:
                feed.stats.reconnects += 1
            feed._emit("connected", {})
            feed.session.on_connected(lambda b: None)
        else:
            feed._emit("disconnected", {"reason": payload.decode()})
            feed.session.on_disconnected(payload.decode())
    feed.session.flush_stats(msgs[-1][1])
    feed._flush_stats()
    feed.stats.processing_latency.reset()
    feed.stats.lag.reset()
    return feed


def _strip(doc):
    d = json.loads(json.dumps(doc))
    for k in NOT_RECORDED:
        d["stats"].pop(k, None)
    return d


@pytest.fixture(scope="module")
def session_msgs():
    return _messages()


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_replay_equals_the_session_that_received_the_messages(tmp_path, session_msgs, compression):
    if compression:
        pytest.importorskip("zstandard")
    p = tmp_path / "s.ffr"
    _write(p, session_msgs, compression=compression)
    res = replay(p)
    assert res.engine.windows == (60, 300) and res.engine.depth == 300
    doc = res.snapshot()
    live = _direct(session_msgs).snapshot()
    assert doc == live
    assert doc["as_of"] == T0 + 400 - 1
    st = doc["stats"]
    assert st["messages"] == sum(1 for m in session_msgs if m[2] == MESSAGE)
    assert st["reconnects"] == 1 and st["gaps"] == 0  # reconnected without missing a second
    assert st["decode_errors"] > 0 and st["unknown_messages"] > 0
    assert st["future_rejected"] > 0 and st["stale_dropped"] > 0 and st["replaced"] > 0
    assert set(doc["windows"]) == {"60", "300"}
    assert set(doc["windows"]["60"]) == {"AAPL", "MSFT", "NVDA", "TSLA"}
    assert res.report["complete"] and res.report["skipped_bytes"] == 0


def test_same_file_twice_gives_byte_identical_output(tmp_path, session_msgs):
    from fastfeed.snapshot import dump_json

    p = tmp_path / "s.ffr"
    _write(p, session_msgs)
    a = dump_json(replay(p).snapshot())
    b = dump_json(replay(p).snapshot())
    assert a == b


def test_a_gap_across_a_reconnect_is_reported_as_live(tmp_path):
    msgs = [(b"", T0 * 10**9, CONNECTED)]
    for s in list(range(T0, T0 + 30)) + list(range(T0 + 50, T0 + 60)):
        if s == T0 + 50:
            msgs += [(b"lost", (T0 + 31) * 10**9, rec.DISCONNECTED), (b"", (s + 1) * 10**9, CONNECTED)]
        msgs.append((json.dumps([_bar("AAPL", s, 1, 2, 0.5, 1.5, 10)]).encode(), (s + 1) * 10**9, MESSAGE))
    p = tmp_path / "g.ffr"
    _write(p, msgs)
    doc = replay(p).snapshot()
    assert doc["stats"]["gaps"] == 1 and doc["stats"]["gap_list"] == [[T0 + 29, T0 + 50]]
    assert doc == _direct(msgs).snapshot()


def test_replay_uses_recorded_times_not_the_wall_clock(tmp_path):
    # bars from 2023 received in 2023: accepted; the same bars "received" now would be
    # fine too, but bars 10 s ahead of their recorded receive time must be rejected
    msgs = [(json.dumps([_bar("AAPL", T0 + 10, 1, 2, 0.5, 1.5, 10)]).encode(), T0 * 10**9, MESSAGE),
            (json.dumps([_bar("AAPL", T0, 1, 2, 0.5, 1.5, 10)]).encode(), T0 * 10**9, MESSAGE)]
    p = tmp_path / "t.ffr"
    _write(p, msgs)
    doc = replay(p).snapshot()
    assert doc["stats"]["future_rejected"] == 1 and doc["as_of"] == T0


def test_windows_option_and_recorded_engine_settings(tmp_path, session_msgs):
    p = tmp_path / "s.ffr"
    _write(p, session_msgs)
    res = replay(p, windows=(60,))
    assert res.engine.windows == (60,) and res.engine.depth == 300  # depth as recorded
    assert res.snapshot()["windows"]["60"] == replay(p).snapshot()["windows"]["60"]


def test_torn_file_replays_every_intact_message(tmp_path, session_msgs):
    p = tmp_path / "s.ffr"
    _write(p, session_msgs)
    data = p.read_bytes()
    t = tmp_path / "torn.ffr"
    t.write_bytes(data[: len(data) - 40])  # inside the END record... and the last message
    with Reader(t) as r:
        n = sum(1 for x in r if x.kind == MESSAGE)
    res = replay(t)
    assert res.messages == n and res.report["skipped_bytes"] > 0
    assert not res.report["complete"]


def test_replay_into_an_existing_feed_calls_its_callbacks(tmp_path, session_msgs):
    from fastfeed.feed import Feed

    p = tmp_path / "s.ffr"
    _write(p, session_msgs)
    updates, events = [], []
    feed = Feed("vantafin", url="ws://x/v1/stocks", windows=(60, 300), capacity=64,
                on_update=lambda rows, T: updates.append((len(rows), T)),
                on_event=lambda k, i: events.append(k))
    res = replay(p, feed=feed)
    assert res.feed is feed
    assert updates and updates[-1][1] == T0 + 399
    assert events.count("connected") == 2 and events.count("disconnected") == 1
    # the feed ends in the state a replay into a fresh feed reaches
    assert feed.snapshot()["windows"] == replay(p, windows=(60, 300)).snapshot()["windows"]


def test_speed_parsing():
    assert parse_speed("max") is None and parse_speed(None) is None
    assert parse_speed("1.0") == 1.0 and parse_speed("10x") == 10.0 and parse_speed(2) == 2.0
    with pytest.raises(ValueError):
        parse_speed("fast")
    with pytest.raises(ValueError):
        parse_speed("-1")


def test_paced_replay_gives_the_same_result(tmp_path):
    msgs = [(json.dumps([_bar("AAPL", T0 + i, 1, 2, 0.5, 1.5, 10)]).encode(),
             (T0 + i) * 10**9 + 1_000_000 * i, MESSAGE) for i in range(5)]
    p = tmp_path / "p.ffr"
    _write(p, msgs)
    assert replay(p, speed=1000.0).snapshot() == replay(p).snapshot()


# --------------------------------------------------------------------------- live → replay


def _run_live(tmp_path, feed_name, faults, windows=(60, 300), compression=None):
    """Run a Feed against the simulator with a recorder attached; return (live doc, path)."""
    from fastfeed.feed import Feed
    from fastfeed.recording import wrap_session_for_recording
    from fastfeed.simulator.testing import serve

    path = tmp_path / f"{feed_name}.ffr"

    async def main():
        async with serve(n_tickers=60, bars_per_frame=25, max_rate=True, max_seconds=600,
                         sfox_interval=1, faults=faults) as sim:
            kw = {"subscribe": ["ticker.sfox.btcusd", "ticker.sfox.ethusd", "ticker.sfox.solusd"]} \
                if feed_name == "sfox" else {}
            feed = Feed(feed_name, url=sim.url(feed_name), api_key="sim-key", windows=windows,
                        idle_timeout=5.0, **kw)
            feed.session, close = wrap_session_for_recording(
                feed.session, path, feed.feed_name, feed.url, compression=compression)
            await feed.start_async()
            end = sim.end_second() - 1
            deadline = time.monotonic() + 60
            last, still = None, 0
            while time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                t = feed.T
                if feed_name != "sfox" and t == end:
                    break
                still = still + 1 if t == last and t is not None else 0
                last = t
                if still >= 20:
                    break
            await feed.close()
            summary = close()
            assert summary["error"] is None and summary["dropped"] == 0
            return feed.snapshot(windows), feed

    return asyncio.run(main()) + (path,)


@pytest.mark.parametrize("feed_name", ["vantafin", "sfox", "massive"])
def test_recorded_live_session_with_faults_replays_to_the_same_snapshot(tmp_path, feed_name):
    from fastfeed.simulator.faults import Faults

    faults = Faults(drop_after=15, connections=2, correction_every=3, fragment_every=4,
                    garbage_every=7, malformed_every=5, binary_every=11, invalid_utf8_after=0,
                    sequence_gap_every=9 if feed_name == "sfox" else 0)
    live, feed, path = _run_live(tmp_path, feed_name, faults)
    st = live["stats"]
    assert st["reconnects"] >= 2  # the two faulted connections dropped
    assert st["bars"] > 0 and st["decode_errors"] > 0
    assert live["windows"]["60"]
    assert b"sim-key" not in path.read_bytes()
    res = replay(path)
    doc = res.snapshot((60, 300))
    assert _strip(doc) == _strip(live)
    assert doc["stats"]["frames"] == 0  # not in a recording
    assert res.report["complete"] and res.report["skipped_bytes"] == 0


def test_recorded_live_session_zstd_replays_to_the_same_snapshot(tmp_path):
    pytest.importorskip("zstandard")
    from fastfeed.simulator.faults import Faults

    live, _, path = _run_live(tmp_path, "vantafin",
                              Faults(drop_after=10, connections=1, correction_every=2,
                                     malformed_every=3), compression="zstd")
    with Reader(path) as r:
        assert r.header.compressed
    assert _strip(replay(path).snapshot((60, 300))) == _strip(live)
