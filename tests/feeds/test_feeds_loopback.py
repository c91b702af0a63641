"""End to end on loopback: simulator → transport.Connection → feed session → Engine.

The engine's bars and windows are compared with the simulator's ground truth (what it
sent, corrections included), under the faults the simulator injects. No timings are
asserted: waits are "until a condition holds" with generous ceilings.
"""
from __future__ import annotations

import asyncio
import math
from typing import Any, Callable

import pytest

from fastfeed import feeds
from fastfeed.engine.reference import ReferenceEngine, assert_windows_match
from fastfeed.simulator import Faults, SimConfig, Simulator
from fastfeed.engine.stats import Stats
from fastfeed.transport import Connection
from fastfeed.engine.universe import Universe
from feed_helpers import Engine, bars_of
from waiting import until

pytestmark = pytest.mark.timeout(120)

START = 1_700_000_000
WINDOWS = (5, 10, 30)


def cfg(**kw: Any) -> SimConfig:
    faults = kw.pop("faults", {})
    base = dict(n_tickers=40, trade_fraction=0.6, bars_per_frame=8, max_rate=True, max_seconds=30,
                start_second=START, faults=Faults(**faults))
    base.update(kw)
    return SimConfig(**base)


def producers_done(sim: Simulator, connections: int = 1) -> bool:
    """At least ``connections`` connections were served and every producer started has finished."""
    cs = sim.connections
    return (len(cs) >= connections and all(c._producer is not None for c in cs[:connections])
            and all(c._producer is None or c._producer.done() for c in cs))


class Run:
    """One feed session over a Connection to ``sim``."""

    def __init__(self, sim: Simulator, feed: str, *, topics=None, api_key=None, key_in_url=True,
                 conn_kw: dict | None = None, **opts):
        self.sim = sim
        self.stats = Stats()
        self.universe = Universe(1024)
        self.engine = Engine(1024, WINDOWS, 64, 5.0)
        self.events: list[tuple[str, dict]] = []
        self.batches = 0
        self.batch_rows: set[int] = set()
        default = {"vantafin": "LS.*", "massive": "A.*", "sfox": ["ticker.sfox.btcusd", "ticker.sfox.ethusd"]}
        self.session = feeds.make_session(
            feed, self.engine, self.universe, self.stats, topics=topics or default[feed],
            api_key=api_key, on_batch=self._on_batch, on_event=lambda k, i: self.events.append((k, i)), **opts)
        url = sim.url(feed, None if not key_in_url else "")
        self.conn = Connection(url, self.session, stats=self.stats, backoff_initial=0.01, backoff_max=0.05,
                               seed=1, on_event=lambda k, i: self.events.append((k, i)), **(conn_kw or {}))
        self.task: asyncio.Future | None = None

    def _on_batch(self, rows, T) -> None:
        assert len(rows) > 0 and T == self.engine.T
        self.batches += 1
        self.batch_rows.update(int(r) for r in rows)

    async def __aenter__(self) -> "Run":
        self.task = asyncio.ensure_future(self.conn.run())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.conn.stop()
        try:
            await asyncio.wait_for(self.task, 5)
        except Exception:
            pass
        self.session.flush_stats()


def truth_bars(sim: Simulator) -> dict[tuple[str, int], tuple[float, ...]]:
    """The last bar sent for each (symbol, second): corrections replace."""
    out: dict[tuple[str, int], tuple[float, ...]] = {}
    for r in sim.sent_bars():
        out[(str(r["symbol"]), int(r["second"]))] = tuple(float(r[k]) for k in ("open", "high", "low", "close", "volume"))
    return out


def assert_engine_holds(run: Run, want: dict, pv: Callable[[tuple], float]) -> None:
    got = bars_of(run.engine, run.universe)
    assert set(got) == set(want)
    for key, bar in want.items():
        assert got[key][:5] == bar, key
        assert got[key][5] == pytest.approx(pv(bar), rel=1e-12, abs=1e-9), key
    # windows: the engine against the reference fed with the ground truth
    ref = ReferenceEngine(1024, WINDOWS, 64, math.inf)
    for (sym, s), bar in sorted(want.items(), key=lambda kv: kv[0][1]):
        ref.upsert_one(run.universe.get(sym), s, *bar, pv(bar))
    assert_windows_match(run.engine, ref)


def typical(bar: tuple) -> float:
    o, h, l, c, v = bar
    return v * (h + l + c) / 3


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- Vantafin -------------------------------------------------------------------------------


@pytest.mark.parametrize("bars_per_frame", [1, 8])
def test_vantafin_clean_stream_matches_ground_truth(bars_per_frame):
    async def main():
        async with Simulator(cfg(bars_per_frame=bars_per_frame)) as sim:
            async with Run(sim, "vantafin") as r:
                n = lambda: len(sim.sent_bars())  # noqa: E731
                await until(lambda: producers_done(sim) and r.stats.bars == n() and n() > 0)
                assert r.session.state["authenticated"] and r.session.state["connected"]
            assert r.session.state["connected"] is False
            assert r.stats.decode_errors == 0 and r.stats.unknown_messages == 0
            assert r.stats.bars == len(sim.sent_bars()) and r.batches > 0
            assert_engine_holds(r, truth_bars(sim), typical)
            assert r.stats.processing_latency.get_total_count() > 0

    run(main())


@pytest.mark.parametrize("drop_mode", ["close", "abrupt"])
def test_read_buffer_batching_one_bar_per_frame_exact_accounting(drop_mode):
    """1 bar per frame, deferral on (the Connection's default): one engine update per
    socket read, yet every bar sent (corrections included) is in the engine, across a
    dropped connection, and on_batch reported every row that changed."""
    faults = dict(correction_every=3, correction_count=2, drop_after=6, drop_mode=drop_mode, connections=1)

    async def main():
        async with Simulator(cfg(bars_per_frame=1, faults=faults)) as sim:
            async with Run(sim, "vantafin", topics=["LS.*"]) as r:
                assert r.session.defer_until_buffer_end is True
                n = lambda: len(sim.sent_bars())  # noqa: E731
                await until(lambda: producers_done(sim, 2) and r.stats.bars == n())
            sent = sim.sent_bars()
            assert r.stats.reconnects == 1 and r.stats.bars == len(sent)
            assert r.stats.messages >= len(sent)  # one message per bar (+ status messages)
            assert 0 < r.batches < len(sent)      # reads held several messages: fewer updates than bars
            assert r.session.filler.pending == 0
            assert_engine_holds(r, truth_bars(sim), typical)
            assert r.batch_rows == {r.universe.get(str(s)) for s in sent["symbol"]}

    run(main())


def test_batch_per_read_false_keeps_one_update_per_message():
    async def main():
        async with Simulator(cfg(bars_per_frame=1, max_seconds=5)) as sim:
            async with Run(sim, "vantafin", conn_kw={"batch_per_read": False}) as r:
                assert r.session.defer_until_buffer_end is False
                n = lambda: len(sim.sent_bars())  # noqa: E731
                await until(lambda: producers_done(sim) and r.stats.bars == n() > 0)
            assert r.batches == len(sim.sent_bars())
            assert_engine_holds(r, truth_bars(sim), typical)

    run(main())


def test_bars_before_a_close_in_the_same_read_are_applied():
    """Bar messages followed by a CLOSE (and more frames after it) in one write: the bars
    before the CLOSE reach the engine, nothing after it does."""
    from fastfeed.simulator.wire import ws_frame

    def bar(sym: str, s: int) -> bytes:
        return (b'{"type":"live_quote_second","ticker":"%s","open":1.0,"high":2.0,"low":0.5,'
                b'"close":1.5,"volume":10,"timestamp":%d}' % (sym.encode(), s * 1000))

    async def main():
        async with Simulator(cfg(market_open=False)) as sim:
            async with Run(sim, "vantafin") as r:
                await until(lambda: r.session.state["market"] == "closed")
                frames = [ws_frame(bar(f"Z{i}", START + i)) for i in range(5)]
                frames.append(ws_frame(b"\x03\xe8", opcode=8))  # CLOSE 1000
                frames.append(ws_frame(bar("AFTER", START + 9)))
                sim.connections[0].send_raw(b"".join(frames))
                await until(lambda: r.stats.bars == 5 and r.conn.connects >= 2)
            assert r.session.filler.pending == 0
            got = bars_of(r.engine, r.universe)
            assert sorted(got) == [(f"Z{i}", START + i) for i in range(5)]

    run(main())


def test_vantafin_faults_corrections_malformed_garbage_fragments():
    faults = dict(correction_every=4, correction_count=3, malformed_every=3, garbage_every=7, fragment_every=5,
                  fragment_size=50)

    async def main():
        async with Simulator(cfg(faults=faults)) as sim:
            async with Run(sim, "vantafin") as r:
                n = lambda: len(sim.sent_bars())  # noqa: E731
                await until(lambda: producers_done(sim) and r.stats.bars == n() and n() > 0
                            and r.stats.decode_errors >= sim.connections[0].malformed_sent + sim.connections[0].garbage_sent)
            c = sim.connections[0]
            assert c.malformed_sent > 0 and c.garbage_sent > 0
            sent = sim.sent_bars()
            assert sent["correction"].any()
            by_kind = dict(r.stats.decode_errors_by_kind)
            assert by_kind == {"validation": c.malformed_sent, "json": c.garbage_sent}
            assert r.stats.bars == len(sent)  # every real bar, corrections included, reached the engine
            assert r.stats.replaced == int(sent["correction"].sum())
            assert_engine_holds(r, truth_bars(sim), typical)

    run(main())


def test_vantafin_reconnect_resubscribes_with_exact_bar_accounting():
    async def main():
        async with Simulator(cfg(faults=dict(drop_after=5, drop_mode="close", connections=1))) as sim:
            async with Run(sim, "vantafin", topics=["LS.*"]) as r:
                n = lambda: len(sim.sent_bars())  # noqa: E731
                await until(lambda: producers_done(sim, 2) and r.stats.bars == n())
            c0, c1 = sim.connections[:2]
            assert c1.first_second == c0.last_second + 1
            assert c1.received == [{"action": "subscribe", "params": "LS.*"}]  # key in URL: no auth message
            assert r.stats.reconnects == 1 and r.stats.bars == len(sim.sent_bars())
            assert_engine_holds(r, truth_bars(sim), typical)

    run(main())


def test_vantafin_auth_message_success_and_failure():
    async def main():
        async with Simulator(cfg(max_seconds=3)) as sim:
            async with Run(sim, "vantafin", api_key="sim-key", key_in_url=False) as r:
                await until(lambda: producers_done(sim) and r.stats.bars == len(sim.sent_bars()) > 0)
                assert r.session.state["authenticated"]
            assert sim.connections[0].received[0] == {"action": "auth", "params": "sim-key"}
        async with Simulator(cfg(max_seconds=3)) as sim:
            r = Run(sim, "vantafin", api_key="wrong-key", key_in_url=False)
            with pytest.raises(feeds.AuthError) as ei:
                await asyncio.wait_for(r.conn.run(), 20)
            assert "wrong-key" not in str(ei.value) and len(sim.connections) == 1  # no retry loop

    run(main())


def test_vantafin_market_closed_is_state():
    async def main():
        async with Simulator(cfg(market_open=False)) as sim:
            async with Run(sim, "vantafin") as r:
                await until(lambda: r.session.state["market"] == "closed")
            assert any(k == "market_status" and i["market"] == "closed" for k, i in r.events)
            assert r.stats.bars == 0

    run(main())


# --- Massive --------------------------------------------------------------------------------


def test_massive_dialect_with_malformed_elements_and_reconnect():
    faults = dict(malformed_every=2, drop_after=4, connections=1)

    async def main():
        async with Simulator(cfg(faults=faults)) as sim:
            async with Run(sim, "massive", api_key="sim-key", key_in_url=False) as r:
                n = lambda: len(sim.sent_bars())  # noqa: E731
                await until(lambda: producers_done(sim, 2) and r.stats.bars == n())
            c0 = sim.connections[0]
            assert c0.malformed_sent > 0
            assert dict(r.stats.decode_errors_by_kind) == {"validation": c0.malformed_sent}
            assert sim.connections[1].received[0] == {"action": "auth", "params": "sim-key"}
            want = truth_bars(sim)
            got = bars_of(r.engine, r.universe)
            assert set(got) == set(want)
            for key, bar in want.items():
                assert got[key][:5] == bar
                o, h, l, c, v = bar
                # pv = v * vw, vw sent with 4 decimals
                assert got[key][5] == pytest.approx(v * (h + l + c) / 3, abs=v * 5e-5 + 1e-9)

    run(main())


# --- sFOX -----------------------------------------------------------------------------------


def sfox_truth(sim: Simulator) -> dict[tuple[str, int], tuple[float, ...]]:
    """The sFOX bar rule (docs/PROTOCOLS.md §2, "Bars from ticker updates") applied to every update sent, in order (state kept across connections)."""
    prev: dict[str, tuple[int, float, float]] = {}
    bars: dict[tuple[str, int], list[float]] = {}
    for c in sim.connections:
        for _, u in c.sent_updates():
            s = u.ts_ns // 10**9
            p = prev.get(u.pair)
            if p is None:
                dv = dpv = 0.0
            elif u.volume < p[1] or s // 86400 > (p[0] // 10**9) // 86400:
                dv, dpv = u.volume, u.volume * u.vwap
            else:
                dv, dpv = u.volume - p[1], u.volume * u.vwap - p[1] * p[2]
            prev[u.pair] = (u.ts_ns, u.volume, u.vwap)
            b = bars.get((u.pair, s))
            if b is None:
                bars[(u.pair, s)] = [u.last, u.last, u.last, u.last, dv, dpv]
            else:
                b[1], b[2], b[3] = max(b[1], u.last), min(b[2], u.last), u.last
                b[4] += dv
                b[5] += dpv
    return {k: tuple(v) for k, v in bars.items()}


def sfox_updates(sim: Simulator) -> int:
    return sum(len(c.sent_updates()) for c in sim.connections)


@pytest.mark.parametrize("start", [START, (START // 86400 + 1) * 86400 - 14])  # the second crosses UTC midnight
def test_sfox_bars_sequence_gaps_and_reset(start):
    async def main():
        faults = dict(sequence_gap_every=4)
        async with Simulator(cfg(start_second=start, faults=faults)) as sim:
            async with Run(sim, "sfox", api_key="sim-key") as r:
                await until(lambda: producers_done(sim) and r.stats.bars == sfox_updates(sim) > 0)
                assert r.session.state["authenticated"]
            c = sim.connections[0]
            assert c.received[:2] == [
                {"type": "authenticate", "apiKey": "sim-key", "enterprise": "true"},
                {"type": "subscribe", "feeds": ["ticker.sfox.btcusd", "ticker.sfox.ethusd"]},
            ]
            assert c.sequence_gaps > 0 and r.stats.sequence_gaps == c.sequence_gaps
            assert sum(1 for k, _ in r.events if k == "sequence_gap") == c.sequence_gaps
            assert r.stats.decode_errors == 0 and r.stats.unknown_messages == 0
            want = sfox_truth(sim)
            got = bars_of(r.engine, r.universe)
            assert set(got) == set(want)
            for key, bar in want.items():
                assert got[key][:4] == bar[:4]
                assert got[key][4:] == (pytest.approx(bar[4], rel=1e-9, abs=1e-9),
                                        pytest.approx(bar[5], rel=1e-9, abs=1e-6))
            if start % 86400 != 0 and start < (start // 86400 + 1) * 86400 < start + 30:
                assert r.session.sfox.resets > 0
            d = r.session.daily("btcusd")
            last = [u for cc in sim.connections for _, u in cc.sent_updates() if u.pair == "btcusd"][-1]
            assert d["volume"] == last.volume and d["vwap"] == last.vwap and d["last"] == last.last

    run(main())


def test_sfox_reconnect_restarts_sequence_without_false_gap():
    async def main():
        async with Simulator(cfg(faults=dict(drop_after=3, connections=1))) as sim:
            async with Run(sim, "sfox", api_key="sim-key") as r:
                await until(lambda: producers_done(sim, 2)
                            and r.stats.bars == sfox_updates(sim))
            assert r.stats.sequence_gaps == 0 and r.stats.reconnects == 1
            want = sfox_truth(sim)
            got = bars_of(r.engine, r.universe)
            assert set(got) == set(want)

    run(main())


def test_sfox_auth_failure_is_final():
    async def main():
        async with Simulator(cfg(max_seconds=3)) as sim:
            r = Run(sim, "sfox", api_key="bad-key")
            with pytest.raises(feeds.AuthError) as ei:
                await asyncio.wait_for(r.conn.run(), 20)
            assert "bad-key" not in str(ei.value) and "invalid api key" in str(ei.value)
            assert len(sim.connections) == 1

    run(main())


@pytest.mark.parametrize("feed", ["vantafin", "massive", "sfox"])
def test_every_feed_takes_the_c_path_and_it_matches_the_python_path(feed):
    """A feed session hands its filler's C sink to the listener: no message goes through a
    Python ``on_message`` call. The same stream through ``on_message`` (the proxy hides the
    C sink) leaves the engine in the same state."""
    from fastfeed.transport.session import SessionProxy

    class Counting(SessionProxy):
        def __init__(self, session, hide_c_sink):
            super().__init__(session)
            self._keep(calls=0)
            if hide_c_sink:
                self._keep(message_sink=None)

        def on_message(self, payload, recv_ns):
            self.calls += 1
            self.session.on_message(payload, recv_ns)

    topics = {"vantafin": ["LS.*"], "massive": ["A.*"], "sfox": ["ticker.sfox.btcusd", "ticker.sfox.ethusd"]}

    async def one(hide_c_sink):
        async with Simulator(cfg(max_seconds=20, sfox_interval=1)) as sim:
            engine, universe, stats = Engine(1024, WINDOWS, None, 1e12), Universe(1024), Stats()
            session = feeds.make_session(feed, engine, universe, stats, topics=topics[feed], api_key="sim-key")
            proxy = Counting(session, hide_c_sink)
            conn = Connection(sim.url(feed, api_key=None), proxy, stats=stats)
            task = asyncio.ensure_future(conn.run())

            def sent() -> int:
                if feed == "sfox":
                    return sum(len(c.sent_updates()) for c in sim.connections)
                return len(sim.sent_bars())

            await until(lambda: producers_done(sim) and sent() > 0 and stats.bars == sent())
            await conn.stop()
            await task
            return proxy.calls, stats.bars, bars_of(engine, universe)

    c_calls, c_bars, c_state = asyncio.run(one(False))
    py_calls, py_bars, py_state = asyncio.run(one(True))
    assert c_calls == 0 and py_calls > 0
    assert c_bars == py_bars > 0 and c_state == py_state


def _vantafin_with_decoder(decode):
    """A Vantafin session class whose decoder is ``decode(payload)`` (wrapping the feed's)."""
    from fastfeed.feeds import vantafin

    class Decoder:
        pass

    d = Decoder()
    d.decode = decode
    return type("Session", (vantafin.VantafinSession,), {"decoder": d})


def _run_c_path(session_class):
    """Every bar of a short stream through ``session_class`` on the C sink; (stats, sent bars)."""
    async def main():
        async with Simulator(cfg(max_seconds=8, bars_per_frame=1)) as sim:
            engine, universe, stats = Engine(1024, WINDOWS, None, 1e12), Universe(1024), Stats()
            session = session_class(engine, universe, stats, topics="LS.*", api_key="sim-key")
            conn = Connection(sim.url("vantafin", api_key=None), session, stats=stats)
            task = asyncio.ensure_future(conn.run())
            await until(lambda: producers_done(sim) and len(sim.sent_bars()) > 0
                        and stats.bars == len(sim.sent_bars()))
            await conn.stop()
            await task
            return stats, len(sim.sent_bars())

    return asyncio.run(main())


def test_the_c_path_lends_every_message_the_same_payload_object():
    """With the feed's own decoder nothing keeps the payload: one object serves the whole
    stream (no Python object made per message for it), released between messages."""
    from fastfeed.feeds import vantafin

    seen = set()

    def decode(payload):
        seen.add(id(payload))
        return vantafin.decoder.decode(payload)

    cls = _vantafin_with_decoder(decode)
    made = []

    class Recording(cls):
        def _bind(self, filler):
            super()._bind(filler)
            made.append(filler)

    stats, sent = _run_c_path(Recording)
    assert stats.bars == sent > 0 and stats.decode_errors == 0
    payload = made[0].payload
    assert seen == {id(payload)} and not payload.live and payload.exports == 0


def test_a_payload_the_decoder_keeps_is_released_after_the_call_and_replaced():
    """The C sink lends the decoder one reused payload object per message: kept past the
    call, it refuses to be read (ValueError, never another message's bytes), and the next
    message gets a fresh one; every bar arrives and nothing is counted as an error."""
    from fastfeed.feeds import vantafin

    kept = []

    def decode(payload):
        kept.append(payload)
        return vantafin.decoder.decode(payload)

    stats, sent = _run_c_path(_vantafin_with_decoder(decode))
    assert stats.bars == sent > 0 and stats.decode_errors == 0
    assert len(kept) >= sent and len({id(p) for p in kept}) == len(kept)
    for p in (kept[0], kept[-1]):
        assert len(p) == 0
        with pytest.raises(ValueError):
            bytes(p)
        with pytest.raises(ValueError):
            memoryview(p)


def test_a_payload_buffer_kept_past_the_call_is_counted_as_an_internal_error():
    """A decoder that keeps a buffer of the payload (a view still exported when it returns)
    breaks the sink contract: counted as an internal error per message, the stream goes on."""
    from fastfeed.feeds import vantafin

    views = []

    def decode(payload):
        views.append(memoryview(payload))
        return vantafin.decoder.decode(payload)

    stats, sent = _run_c_path(_vantafin_with_decoder(decode))
    assert stats.bars == sent > 0
    assert stats.decode_errors_by_kind["internal"] == stats.decode_errors == len(views)
    views.clear()


def test_a_message_that_fails_to_decode_on_the_c_path_goes_element_by_element():
    """The slow path of the C sink: a 100-bar array with one malformed element loses that
    element only (counted by kind); the rest reach the engine."""
    async def main():
        c = cfg(max_seconds=6, bars_per_frame=100, n_tickers=300, trade_fraction=1.0,
                faults=dict(malformed_every=2))
        async with Simulator(c) as sim:
            engine, universe, stats = Engine(1024, WINDOWS, None, 1e12), Universe(1024), Stats()
            session = feeds.make_session("vantafin", engine, universe, stats, topics="LS.*", api_key="sim-key")
            conn = Connection(sim.url("vantafin", api_key=None), session, stats=stats)
            task = asyncio.ensure_future(conn.run())
            await until(lambda: producers_done(sim) and stats.bars == len(sim.sent_bars()) > 0)
            await conn.stop()
            await task
            bad = sim.connections[0].malformed_sent
            assert bad > 0 and stats.decode_errors == bad
            assert dict(stats.decode_errors_by_kind) == {"validation": bad}

    asyncio.run(main())


def test_sfox_update_older_than_the_pairs_last_is_skipped_and_counted():
    async def main():
        async with Simulator(cfg(faults=dict(sfox_out_of_order_every=3))) as sim:
            async with Run(sim, "sfox", api_key="sim-key") as r:
                await until(lambda: producers_done(sim) and r.stats.bars == sfox_updates(sim) > 0)
                c = sim.connections[0]
                await until(lambda: r.stats.sfox_out_of_order == c.out_of_order_sent)
            assert c.out_of_order_sent > 0
            assert r.stats.as_dict()["sfox_out_of_order"] == c.out_of_order_sent
            assert r.stats.sequence_gaps == 0 and r.stats.decode_errors == 0
            want = sfox_truth(sim)  # the stale copies changed nothing
            got = bars_of(r.engine, r.universe)
            assert set(got) == set(want)
            for key, bar in want.items():
                assert got[key][:4] == bar[:4]
                assert got[key][4] == pytest.approx(bar[4], rel=1e-9, abs=1e-9)

    run(main())
