"""The simulator: deterministic data, protocol flows of each feed, faults, ground truth."""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any, Callable, Optional

import numpy as np
import pytest

from fastfeed.simulator import Faults, Market, SimConfig, SimProcess, SimThread, Simulator
from fastfeed.simulator.options import add_arguments, build_parser, config_from_args
from fastfeed.transport import Connection, ConnectionRejected
from waiting import until

pytestmark = pytest.mark.timeout(60)

T0 = 1_700_000_000


class Client:
    """Records parsed messages; sends a script of messages on connect."""

    def __init__(self, *script: Any) -> None:
        self.fatal: Optional[BaseException] = None
        self.script = [json.dumps(m).encode() if not isinstance(m, bytes) else m for m in script]
        self.msgs: list[Any] = []
        self.raw: list[bytes] = []
        self.send: Any = None

    def on_connected(self, send: Callable[[bytes], Any]) -> None:
        self.send = send
        for m in self.script:
            send(m)

    def on_message(self, payload: Any, recv_ns: int) -> None:
        b = bytes(payload)
        self.raw.append(b)
        self.msgs.append(json.loads(b))

    def on_disconnected(self, reason: str) -> None:
        pass

    def flat(self) -> list[dict]:
        out = []
        for m in self.msgs:
            out.extend(m if isinstance(m, list) else [m])
        return out


def small(**kw: Any) -> SimConfig:
    base: dict[str, Any] = dict(n_tickers=30, trade_fraction=0.7, bars_per_frame=10, max_rate=True,
                                max_seconds=12, start_second=T0)
    base.update(kw)
    return SimConfig(**base)


async def session(sim: Simulator, client: Client, feed: str, pred: Callable[[], bool], **kw: Any) -> Connection:
    url = kw.pop("url", None) or sim.url(feed, **kw)
    conn = Connection(url, client, backoff_initial=0.01, backoff_max=0.05)
    task = asyncio.ensure_future(conn.run())
    try:
        await until(lambda: pred() or task.done())
    finally:
        await conn.stop()
        try:
            await asyncio.wait_for(task, 5)
        except Exception:
            pass
    return conn


def done(sim: Simulator) -> bool:
    return bool(sim.connections) and all(c._producer is not None and c._producer.done() for c in sim.connections)


# --- market -----------------------------------------------------------------------------------


def test_market_is_deterministic_per_seed_and_realistic():
    a, b, c = Market(seed=7, n_tickers=2000), Market(seed=7, n_tickers=2000), Market(seed=8, n_tickers=2000)
    assert a.tickers == b.tickers and len(set(a.tickers)) == 2000 and a.tickers[0] == "AAPL"
    x, y, z = a.stock_second(T0), b.stock_second(T0), c.stock_second(T0)
    for f in ("rows", "open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(x, f), getattr(y, f))
    assert not np.array_equal(x.close[:50], z.close[:50])
    assert 0.4 < len(x) / 2000 < 0.6  # trade_fraction 0.5
    assert (x.low >= 1).all() and (x.high >= np.maximum(x.open, x.close)).all()
    assert (x.low <= np.minimum(x.open, x.close)).all() and (x.volume >= 1).all()
    assert x.open.min() < 1000 and x.open.max() > 10000  # $1 .. $1000 levels (cents)
    # a random walk, not noise: consecutive closes are close to each other
    full = Market(seed=7, n_tickers=50, trade_fraction=1.0)
    closes = np.array([full.stock_second(T0 + k).close for k in range(100)])
    steps = np.abs(np.diff(closes, axis=0)) / closes[:-1]
    assert np.median(steps) < 0.002 and np.ptp(closes, axis=0).max() > 0


def test_crypto_cumulative_fields_and_utc_midnight_reset():
    m = Market(seed=1)
    midnight = (T0 // 86400 + 1) * 86400
    before = m.crypto_updates(midnight - 1, interval=1)
    after = m.crypto_updates(midnight, interval=1)
    later = m.crypto_updates(midnight + 5, interval=1)
    for b, a, l in zip(before, after, later):
        assert a.pair == b.pair
        assert a.volume < b.volume  # reset at 00:00 UTC
        assert l.volume > a.volume and l.low <= a.low <= a.high <= l.high
        assert a.low <= a.last <= a.high and a.ts_ns // 10**9 == midnight
        assert len(str(a.ts_ns)) == 19
    assert {u.pair for u in m.crypto_updates(T0, interval=3)} < set(m.pair_names)


# --- Vantafin -----------------------------------------------------------------------------------


def test_vantafin_flow_auth_message_subscribe_unsubscribe():
    async def main():
        async with Simulator(small(max_seconds=None, max_rate=False, speed=5)) as sim:
            c = Client({"action": "subscribe", "params": "LS.AAPL"},  # before auth: refused
                       {"action": "auth", "params": "sim-key"},
                       {"action": "subscribe", "params": "LS.AAPL,LS.MSFT"})
            await session(sim, c, "vantafin", lambda: sum(
                1 for m in c.flat() if m.get("type") == "live_quote_second") >= 6, api_key=None)
            types = [(m.get("type"), m.get("status")) for m in c.flat()]
            assert types[:4] == [("status", "connected"), ("status", "error"), ("status", "auth_success"),
                                 ("status", "success")]
            assert c.flat()[3]["message"] == "subscribed to: LS.AAPL,LS.MSFT"
            data = [m for m in c.flat() if m.get("type") == "live_quote_second"]
            assert {m["ticker"] for m in data} <= {"AAPL", "MSFT"}
            m0 = data[0]
            assert list(m0) == ["type", "ticker", "open", "high", "low", "close", "volume", "timestamp"]
            assert isinstance(m0["volume"], int) and m0["timestamp"] % 1000 == 0
            assert m0["timestamp"] <= time.time() * 1000  # never in the future

    asyncio.run(main())


def test_vantafin_unsubscribe_stops_data():
    async def main():
        async with Simulator(small(max_seconds=None, max_rate=False, speed=20)) as sim:
            c = Client({"action": "subscribe", "params": "LS.*"})
            # a second client that stays subscribed is the clock: the seconds it receives
            # after the unsubscribe were sent to the first client too, had it not unsubscribed
            witness = Client({"action": "subscribe", "params": "LS.*"})
            conns = [Connection(sim.url(), c), Connection(sim.url(), witness)]
            tasks = [asyncio.ensure_future(x.run()) for x in conns]

            def seconds(client: Client) -> set[int]:
                return {m["timestamp"] for m in client.flat() if m.get("type") == "live_quote_second"}

            await until(lambda: seconds(c) and seconds(witness))
            c.send(b'{"action":"unsubscribe","params":"LS.*"}')
            await until(lambda: any("unsubscribed from: LS.*" in str(m.get("message")) for m in c.flat()))
            n, last = len(c.flat()), max(seconds(witness))
            await until(lambda: len({s for s in seconds(witness) if s > last}) >= 3)
            assert len(c.flat()) == n
            for x in conns:
                await x.stop()
            await asyncio.gather(*tasks)

    asyncio.run(main())


def test_vantafin_auth_failed_then_close_1008():
    async def main():
        async with Simulator(small()) as sim:
            c = Client()
            conn = Connection(sim.url(api_key="bad"), c, backoff_initial=0.01)
            with pytest.raises(ConnectionRejected):
                await asyncio.wait_for(conn.run(), 10)
            assert [m["status"] for m in c.msgs] == ["connected", "auth_failed"]
            assert conn.last_listener.close_code == 1008

    asyncio.run(main())


def test_wrong_path_is_404_and_retried():
    async def main():
        async with Simulator(small()) as sim:
            conn = Connection(f"ws://127.0.0.1:{sim.port}/nope", Client(), backoff_initial=0.01)
            task = asyncio.ensure_future(conn.run())
            await until(lambda: conn.last_error is not None)
            assert "404" in conn.last_error
            await conn.stop()
            await task

    asyncio.run(main())


def test_market_closed_sends_market_status_instead_of_data():
    async def main():
        async with Simulator(small(market_open=False)) as sim:
            c = Client({"action": "subscribe", "params": "LS.*"})
            await session(sim, c, "vantafin", lambda: any(m.get("type") == "market_status" for m in c.flat()))
            ms = [m for m in c.flat() if m.get("type") == "market_status"][0]
            assert ms["market"] == "closed" and isinstance(ms["timestamp"], int)
            assert not any(m.get("type") == "live_quote_second" for m in c.flat())

    asyncio.run(main())


def test_same_seed_same_bytes_and_ground_truth_matches_the_wire():
    async def one() -> tuple[list[bytes], np.ndarray]:
        async with Simulator(small(faults=Faults(correction_every=3, correction_count=4))) as sim:
            c = Client({"action": "subscribe", "params": "LS.*"})
            await session(sim, c, "vantafin", lambda: done(sim) and len(
                [m for m in c.flat() if m.get("type") == "live_quote_second"]) == len(sim.sent_bars()))
            return c.raw, sim.sent_bars()

    raw1, t1 = asyncio.run(one())
    raw2, t2 = asyncio.run(one())
    assert raw1 == raw2 and np.array_equal(t1, t2)
    data = [m for r in raw1 for m in (json.loads(r) if r.startswith(b"[") else [json.loads(r)])
            if m.get("type") == "live_quote_second"]
    assert len(data) == len(t1)
    for m, t in zip(data, t1):
        assert (m["ticker"], m["timestamp"] // 1000, m["open"], m["high"], m["low"], m["close"], m["volume"]) == (
            t["symbol"], t["second"], t["open"], t["high"], t["low"], t["close"], t["volume"])
    corr = t1[t1["correction"]]
    assert len(corr) > 0
    # a correction re-sends an earlier (symbol, second) with new values
    first = {(r["symbol"], r["second"]): r for r in t1[~t1["correction"]]}
    for r in corr:
        old = first[(r["symbol"], r["second"])]
        assert r["volume"] > old["volume"]
        assert r["second"] < t1[~t1["correction"]]["second"].max()


def test_speed_compression_starts_in_the_past_and_never_runs_ahead():
    async def main():
        async with Simulator(small(max_rate=False, speed=200, max_seconds=60, start_second=None)) as sim:
            c = Client({"action": "subscribe", "params": "LS.*"})
            await session(sim, c, "vantafin", lambda: done(sim))
            secs = [m["timestamp"] // 1000 for m in c.flat() if m.get("type") == "live_quote_second"]
            assert secs == sorted(secs) and secs[-1] - secs[0] >= 50
            assert secs[-1] < time.time()

    asyncio.run(main())


def test_speed_one_clock_is_wall_time():
    """At speed 1 (default start) the simulated clock is the wall clock, not the wall clock
    minus the fraction of the second the simulator started in; second s is sent once wall
    time passed s + 1 (never before; how soon after is not asserted)."""
    async def main():
        async with Simulator(small(max_rate=False, speed=1, max_seconds=None, start_second=None)) as sim:
            for _ in range(3):
                now = time.time()
                assert abs(sim.sim_clock(now) - now) < 0.05
                assert sim.wall_time_of(sim.start_second + 1) == pytest.approx(sim.start_second + 1, abs=0.05)
                await asyncio.sleep(0.02)

            class Timed(Client):
                def on_message(self, payload: Any, recv_ns: int) -> None:
                    super().on_message(payload, recv_ns)
                    self.t.append(recv_ns)

            c = Timed({"action": "subscribe", "params": "LS.*"})
            c.t = []

            def bars() -> list[tuple[int, int]]:
                out = []
                for msg, t in zip(c.msgs, c.t):
                    for m in msg if isinstance(msg, list) else [msg]:
                        if m.get("type") == "live_quote_second":
                            out.append((m["timestamp"] // 1000, t))
                return out

            await session(sim, c, "vantafin", lambda: len(bars()) > 0)
            for second, recv_ns in bars():
                assert recv_ns / 1e9 >= second + 1

    asyncio.run(main())


# --- sFOX -----------------------------------------------------------------------------------


def test_sfox_flow_acks_sequence_envelope_and_payload():
    async def main():
        async with Simulator(small(max_seconds=30, sfox_interval=3)) as sim:
            c = Client({"type": "subscribe", "feeds": ["ticker.sfox.btcusd"]},  # before auth: error
                       {"type": "authenticate", "apiKey": "sim-key", "enterprise": "true"},
                       {"type": "subscribe", "feeds": ["ticker.sfox.btcusd", "ticker.sfox.ethusd"]})
            await session(sim, c, "sfox", lambda: done(sim))
            m = c.msgs
            assert (m[0]["type"], m[0]["payload"]["error"]) == ("error", "not authenticated")
            assert (m[1]["type"], m[1]["action"]) == ("success", "authenticate")
            assert (m[2]["type"], m[2]["payload"]["feeds"]) == ("success", ["ticker.sfox.btcusd", "ticker.sfox.ethusd"])
            assert [x["sequence"] for x in m] == list(range(1, len(m) + 1))
            data = m[3:]
            assert len(data) == 20  # 2 pairs x 30 s / 3 s
            d = data[0]
            assert list(d) == ["sequence", "recipient", "timestamp", "payload"]
            assert d["recipient"] in ("ticker.sfox.btcusd", "ticker.sfox.ethusd")
            assert len(str(d["timestamp"])) == 19
            p = d["payload"]
            assert list(p) == ["amount", "exchange", "high", "last", "low", "open", "pair", "route", "source",
                               "timestamp", "volume", "vwap"]
            assert p["timestamp"].endswith("Z") and "T" in p["timestamp"]
            sent = sim.connections[0].sent_updates()
            assert [s for s, _ in sent] == [x["sequence"] for x in data]
            assert [u.volume for _, u in sent] == [x["payload"]["volume"] for x in data]

    asyncio.run(main())


def test_sfox_sequence_gaps_are_injected_and_recorded():
    async def main():
        async with Simulator(small(max_seconds=30, sfox_interval=1, faults=Faults(sequence_gap_every=7))) as sim:
            c = Client({"type": "authenticate", "apiKey": "sim-key"},
                       {"type": "subscribe", "feeds": ["ticker.sfox.btcusd"]})
            await session(sim, c, "sfox", lambda: done(sim))
            seq = [m["sequence"] for m in c.msgs]
            gaps = sum(1 for a, b in zip(seq, seq[1:]) if b != a + 1)
            assert gaps == sim.connections[0].sequence_gaps > 0

    asyncio.run(main())


def test_sfox_bad_key_error_then_close_1008():
    async def main():
        async with Simulator(small()) as sim:
            c = Client({"type": "authenticate", "apiKey": "bad"})
            conn = Connection(sim.url("sfox"), c)
            with pytest.raises(ConnectionRejected):
                await asyncio.wait_for(conn.run(), 10)
            assert c.msgs[0]["type"] == "error" and c.msgs[0]["payload"]["error"] == "invalid api key"

    asyncio.run(main())


# --- Massive ---------------------------------------------------------------------------------


def test_massive_aggregates_flow():
    async def main():
        async with Simulator(small()) as sim:
            c = Client({"action": "auth", "params": "sim-key"}, {"action": "subscribe", "params": "A.*"})
            await session(sim, c, "massive", lambda: done(sim), api_key=None)
            assert c.msgs[0] == [{"ev": "status", "status": "connected", "message": "Connected Successfully"}]
            assert c.msgs[1][0]["status"] == "auth_success" and c.msgs[2][0]["status"] == "success"
            aggs = [m for m in c.flat() if m.get("ev") == "A"]
            assert len(aggs) == len(sim.sent_bars()) > 0
            a = aggs[0]
            assert list(a) == ["ev", "sym", "v", "av", "op", "vw", "o", "c", "h", "l", "a", "z", "s", "e"]
            assert a["e"] - a["s"] == 1000 and a["s"] % 1000 == 0
            for x, t in zip(aggs, sim.sent_bars()):
                assert (x["sym"], x["s"] // 1000, x["o"], x["h"], x["l"], x["c"], x["v"]) == (
                    t["symbol"], t["second"], t["open"], t["high"], t["low"], t["close"], t["volume"])
            by = {}
            for x in aggs:  # accumulated volume grows per symbol
                assert x["av"] >= by.get(x["sym"], 0) + x["v"]
                by[x["sym"]] = x["av"]

    asyncio.run(main())


# --- running it ---------------------------------------------------------------------------------


def test_cli_parser_and_config():
    p = build_parser()
    args = p.parse_args(["--port", "0", "--tickers", "10", "--bars-per-frame", "5", "--max-rate",
                         "--fault", "drop_after=3", "--fault", "drop_mode=abrupt", "--no-auth"])
    cfg = config_from_args(args)
    assert (cfg.n_tickers, cfg.bars_per_frame, cfg.max_rate, cfg.api_key) == (10, 5, True, None)
    assert cfg.faults.drop_after == 3 and cfg.faults.drop_mode == "abrupt"
    sub = argparse.ArgumentParser()
    add_arguments(sub)
    assert sub.parse_args([]).port == 8765


def test_thread_and_subprocess_runners():
    with SimThread(n_tickers=20, max_rate=True, max_seconds=5, start_second=T0) as st:
        url = st.url()

        async def main(u: str) -> Client:
            c = Client({"action": "subscribe", "params": "LS.*"})
            conn = Connection(u, c)
            task = asyncio.ensure_future(conn.run())
            await until(lambda: sum(1 for m in c.flat() if m.get("type") == "live_quote_second") > 10)
            await conn.stop()
            await task
            return c

        asyncio.run(main(url))
        n = st.call(lambda sim: len(sim.sent_bars()))
        assert n > 10
    with SimProcess(["--tickers", "20", "--max-rate", "--max-seconds", "5"]) as sp:
        assert sp.url().endswith("?apiKey=sim-key")
        c = asyncio.run(main(sp.url()))
        assert c.flat()[1]["status"] == "auth_success"
    assert sp.proc is not None and sp.proc.returncode == 0


def test_truth_helpers_sfox_bars_upsert_and_pv():
    from fastfeed.simulator import sfox_bars, upserted, with_pv
    from fastfeed.simulator.market import CryptoUpdate

    m = Market(seed=3)
    midnight = (T0 // 86400 + 1) * 86400
    ups = [u for s in range(midnight - 4, midnight + 3) for u in m.crypto_updates(s, interval=1, pairs=["btcusd"])]
    b = sfox_bars(ups)
    assert list(b["second"]) == list(range(midnight - 4, midnight + 3))
    assert b["volume"][0] == 0 and b["pv"][0] == 0  # baseline
    assert b["volume"][1] == pytest.approx(ups[1].volume - ups[0].volume)
    assert b["volume"][4] == pytest.approx(ups[4].volume)  # reset at 00:00 UTC: dv = V
    assert b["pv"][4] == pytest.approx(ups[4].volume * ups[4].vwap)
    # two updates in one second merge
    u0 = ups[1]
    extra = CryptoUpdate(u0.pair, u0.ts_ns + 1000, u0.last + 5, 0.1, u0.open, u0.high, u0.low,
                         u0.volume + 0.5, u0.vwap, u0.trade_ms)
    b2 = sfox_bars([ups[0], ups[1], extra])
    assert len(b2) == 2 and b2["high"][1] == u0.last + 5 and b2["close"][1] == u0.last + 5
    assert b2["volume"][1] == pytest.approx(u0.volume + 0.5 - ups[0].volume)

    from fastfeed.simulator import BAR_DTYPE
    raw = np.array([("A", 1, 1, 2, 1, 2, 10, False), ("B", 1, 5, 5, 5, 5, 1, False),
                    ("A", 1, 1, 3, 1, 3, 12, True)], BAR_DTYPE)
    u = upserted(raw)
    assert list(u["symbol"]) == ["A", "B"] and u["volume"][0] == 12
    assert with_pv(u)["pv"][0] == pytest.approx(12 * (3 + 1 + 3) / 3)


def test_max_rate_honours_flow_control_when_the_client_stops_reading():
    async def main():
        async with Simulator(small(n_tickers=2000, trade_fraction=1.0, bars_per_frame=100, max_seconds=None,
                                   record=False)) as sim:
            c = Client({"action": "subscribe", "params": "LS.*"})
            conn = Connection(sim.url(), c, idle_timeout=30, ping_interval=30)
            c.on_message = lambda p, ns: None  # type: ignore[method-assign]
            task = asyncio.ensure_future(conn.run())
            await until(lambda: bool(sim.connections) and sim.connections[0].bytes_written > 5_000_000)
            conn._transport.underlying_transport.pause_reading()
            await asyncio.sleep(0.5)
            srv = sim.connections[0]
            w0 = srv.bytes_written
            await asyncio.sleep(0.3)
            assert not srv._can_write.is_set()  # paused by pause_writing
            assert srv.bytes_written - w0 <= 2 * sim.config.write_chunk  # nothing piles up
            assert srv.transport.underlying_transport.get_write_buffer_size() < 8 * sim.config.write_chunk
            conn._transport.underlying_transport.resume_reading()
            await until(lambda: srv.bytes_written > w0 + 5_000_000)
            await conn.stop()
            await task

    asyncio.run(main())


def test_slow_writer_still_delivers_everything():
    async def main():
        async with Simulator(small(max_seconds=6, faults=Faults(write_delay=0.05))) as sim:
            c = Client({"action": "subscribe", "params": "LS.*"})
            await session(sim, c, "vantafin", lambda: done(sim) and len(
                [m for m in c.flat() if m.get("type") == "live_quote_second"]) == len(sim.sent_bars()))
            assert len(sim.sent_bars()) > 50
            assert len(c.raw) > 6  # one write per simulated second, each after a pause

    asyncio.run(main())


@pytest.mark.parametrize("per", [1, 3, 100])
def test_c_frame_encoders_match_the_python_formatting(per):
    from fastfeed._ext.simencode import encode_massive_frames, encode_vantafin_frames
    from fastfeed.simulator import massive, vantafin, ws_frame

    sim = Simulator(SimConfig(n_tickers=700, trade_fraction=0.8))
    bars = sim.market.stock_second(T0)
    prefix = vantafin.prefixes(sim.market.tickers)
    objs = vantafin.json_objects(prefix, bars)
    out, nf = encode_vantafin_frames(prefix, bars.rows, bars.open, bars.high, bars.low, bars.close,
                                     bars.volume, bars.second * 1000, per, True)
    groups = [objs[i:i + per] for i in range(0, len(objs), per)]
    want = b"".join(ws_frame(g[0] if per == 1 else b"[" + b",".join(g) + b"]") for g in groups)
    assert nf == len(groups) and bytes(out) == want
    c_py, c_c = (massive.MassiveConnection(sim, None, 0) for _ in range(2))
    fa, fb = c_py._massive_arrays(bars), c_c._massive_arrays(bars)
    objs = c_py._massive_objects(bars, fa)
    out, nf = encode_massive_frames(massive.prefixes(sim.market.tickers), bars.rows, fb["v"], fb["av"], fb["op"], fb["vw4"], bars.open,
                                    bars.close, bars.high, bars.low, fb["a4"], fb["z"], bars.second * 1000, per)
    want = b"".join(ws_frame(b"[" + b",".join(objs[i:i + per]) + b"]") for i in range(0, len(objs), per))
    assert bytes(out) == want
    for o in objs[:50]:
        json.loads(o)
