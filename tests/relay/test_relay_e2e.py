"""Relay and consumers end to end on loopback: the simulator, the real nats-server, the
publisher and the consumer source in this process (the process tests are in
test_relay_processes.py). Windows are compared exactly (every window, every symbol)."""
from __future__ import annotations

import asyncio

import pytest

from fastfeed.errors import AuthError
from fastfeed.errors import JetStreamNotEnabled, NatsAuthError
from fastfeed.relay.publisher import RelayPublisher
from fastfeed.relay.source import NatsSource
from fastfeed.simulator import Faults
from fastfeed.simulator.testing import SimThread
from relay_helpers import (START, Consumer, Relay, assert_no_duplicates, assert_same, settle, sim_done,
                           stream_entries, until)

pytestmark = pytest.mark.timeout(180)


def sim_thread(**kw):
    base = dict(n_tickers=120, trade_fraction=0.7, bars_per_frame=10, max_rate=True, max_seconds=60,
                start_second=START)
    base.update(kw)
    return SimThread(**base)


def test_consumers_equal_the_relay_under_vendor_faults(nats_server):
    """Corrections, malformed elements, garbage frames, fragmented messages and two vendor
    drops: a consumer from the start and one joining late hold the relay's windows, and
    the first also its counters (bars, decode errors, reconnects, gaps)."""
    faults = Faults(correction_every=3, malformed_every=4, garbage_every=5, fragment_every=6,
                    drop_after=120, drop_mode="abrupt", connections=2)

    async def main(sim):
        async with Consumer(nats_server.url) as early:
            async with Relay(sim.url("vantafin"), nats_server.url) as relay:
                await settle(sim, relay, [early])
                async with Consumer(nats_server.url) as late:
                    await settle(sim, relay, [late])
                    assert_same(relay.feed, early.feed)
                    assert_same(relay.feed, late.feed)
                    assert late.src.caught_up and late.kinds("caught_up")
                    # it joined after the last bar: all it read was history, and history's
                    # age is not reported as processing latency
                    late.feed.stats_dict()
                    assert late.feed.stats.processing_latency.get_total_count() == 0
                    assert late.feed.stats.bars > 0
                rs, cs = relay.feed.stats_dict(), early.feed.stats_dict()
                for k in ("bars", "messages", "decode_errors", "decode_errors_by_kind",
                          "reconnects", "gaps", "gap_list", "stale_dropped", "replaced"):
                    assert cs[k] == rs[k], k
                assert rs["reconnects"] >= 1 and rs["decode_errors"] > 0 and rs["replaced"] > 0
                assert len(early.kinds("disconnected")) >= 2  # the relay's vendor drops, re-enacted
        assert_no_duplicates(await stream_entries(nats_server.url))

    with sim_thread(faults=faults) as sim:
        asyncio.run(main(sim))


def test_nats_restart_mid_stream_resumes_by_sequence(nats_server):
    async def main(sim):
        async with Relay(sim.url("vantafin"), nats_server.url) as relay, Consumer(nats_server.url) as cons:
            await until(lambda: cons.src.relay_seq > 50, 30, "consumer under way")
            await asyncio.get_running_loop().run_in_executor(None, nats_server.restart)
            await settle(sim, relay, [cons])
            assert relay.pub.nats_disconnects >= 1 and cons.src.nats_disconnects >= 1
            assert cons.src.resets >= 1  # the consumer was re-created at the next sequence
            assert cons.src.relay_dropped == 0 and cons.src.duplicates_skipped == 0
            assert_same(relay.feed, cons.feed)
            assert [i["source"] for i in cons.kinds("disconnected")] == ["nats"]
            assert relay.feed.stats.gaps == cons.feed.stats.gaps == 0
        assert_no_duplicates(await stream_entries(nats_server.url))

    # real cadence, time-compressed: the restart lands in the middle of the stream
    with sim_thread(n_tickers=80, max_rate=False, speed=25.0, max_seconds=125, start_second=None) as sim:
        asyncio.run(main(sim))


def test_retried_publishes_are_stored_once(nats_server):
    """Acknowledgements 'time out' at once: the relay publishes every entry again and
    again; JetStream's de-duplication keeps one copy of each, in order."""
    async def main(sim):
        async with Relay(sim.url("vantafin"), nats_server.url, ack_timeout=0.0) as relay:
            async with Consumer(nats_server.url) as cons:
                await settle(sim, relay, [cons])
                assert relay.pub.resends > 0 and relay.pub.duplicates > 0
                assert_same(relay.feed, cons.feed)
        assert_no_duplicates(await stream_entries(nats_server.url))

    with sim_thread(max_seconds=30) as sim:
        asyncio.run(main(sim))


def test_nats_outage_longer_than_the_buffer(nats_server):
    """NATS down while the relay reads the whole stream: the oldest reads are dropped
    (counted), the buffer never grows past its bound, the rest is published when NATS
    is back, and a consumer sees exactly how many entries are missing."""
    bound = 256 * 1024

    async def main(sim):
        relay = Relay(sim.url("vantafin"), nats_server.url, buffer_bytes=bound)
        await relay.pub.start_async()
        await until(lambda: relay.pub.acked_through >= 1, 10, "relay_started stored")
        await asyncio.get_running_loop().run_in_executor(None, nats_server.stop)
        from fastfeed.relay.publisher import attach_publisher

        attach_publisher(relay.feed, relay.pub)
        await relay.feed.start_async()
        try:
            await until(lambda: sim_done(sim) and relay.quiet(), 60, "simulator finished")
            pub = relay.pub
            assert pub.dropped_messages > 0 and pub.dropped_bytes > 0
            # published-not-acknowledged entries (at most a quarter of the bound) may sit on
            # top of a full buffer until the client notices the outage
            assert pub.peak_buffered_bytes <= bound + pub.max_inflight_bytes
            assert relay.feed.stats.messages > pub.dropped_messages  # it kept reading the vendor
            await asyncio.get_running_loop().run_in_executor(None, nats_server.start)
            await until(lambda: pub.buffered_bytes == 0 and pub.acked_through == pub._seq, 60,
                        "buffer published after the outage")
            async with Consumer(nats_server.url) as cons:
                await until(lambda: cons.src.relay_seq == pub.acked_through, 60, "consumer read all")
                assert cons.src.relay_dropped == pub.dropped_messages
                drops = cons.kinds("relay_dropped")
                assert drops and sum(d["entries"] for d in drops) == pub.dropped_messages
        finally:
            await relay.feed.close()
            await relay.pub.stop_async(5.0)

    with sim_thread(n_tickers=200, bars_per_frame=20, max_seconds=150) as sim:
        asyncio.run(main(sim))


def test_relay_gone_silent_is_reported_like_a_silent_vendor(nats_server):
    async def main(sim):
        async with Relay(sim.url("vantafin"), nats_server.url, heartbeat=0) as relay:
            async with Consumer(nats_server.url, idle_timeout=0.8) as cons:
                await settle(sim, relay, [cons])
                await until(lambda: cons.kinds("disconnected"), 10, "idle disconnect")
                d = cons.kinds("disconnected")[0]
                assert d["source"] == "idle" and "idle timeout" in d["reason"]
                assert not cons.src.connected and not cons.feed.session.state["connected"]
                relay.pub.event("heartbeat", {})  # the relay speaks again
                await until(lambda: cons.src.connected, 10, "back up")
                assert cons.kinds("connected")[-1]["source"] == "nats"

    with sim_thread(max_seconds=10) as sim:
        asyncio.run(main(sim))


def test_slow_consumer_reads_at_its_pace_with_bounded_memory(nats_server):
    async def main(sim):
        async with Relay(sim.url("vantafin"), nats_server.url) as relay:
            await settle(sim, relay, [])
            seen = {"lag": 0, "outstanding": 0}

            def on_update(rows, T):  # a strategy that takes its time on every update
                import time
                time.sleep(0.002)
                seen["lag"] = max(seen["lag"], cons.src.lag_messages)
                seen["outstanding"] = max(seen["outstanding"], cons.src._outstanding)

            cons = Consumer(nats_server.url, on_update=on_update, batch=8, max_bytes=64 * 1024)
            async with cons:
                await settle(sim, relay, [cons])
            assert seen["lag"] > 8  # it was behind by more than one pull
            assert seen["outstanding"] <= 16  # at most two pulls of 8 in flight
            assert_same(relay.feed, cons.feed)

    with sim_thread(max_seconds=40) as sim:
        asyncio.run(main(sim))


def test_jetstream_not_enabled_is_a_clear_error(make_nats_server):
    srv = make_nats_server(jetstream=False)
    pub = RelayPublisher(srv.url, "vantafin", connect_timeout=5)
    with pytest.raises(JetStreamNotEnabled, match="-js"):
        pub.start()

    class Nothing:
        def on_message(self, payload, recv_ns): ...
        def on_connected(self, send): ...
        def on_disconnected(self, reason): ...
        fatal = None

    with pytest.raises(JetStreamNotEnabled):
        asyncio.run(NatsSource(srv.url, Nothing(), feed="vantafin", connect_timeout=5).run())


def test_bad_credentials_are_an_auth_error_that_never_shows_them(make_nats_server, monkeypatch):
    srv = make_nats_server(config="authorization { user: alice, password: right-pw }")
    url = srv.url.replace("nats://", "nats://alice:wrong-pw@")
    with pytest.raises(NatsAuthError) as e:
        RelayPublisher(url, "vantafin", connect_timeout=5).start()
    assert isinstance(e.value, AuthError) and "wrong-pw" not in str(e.value)
    with pytest.raises(NatsAuthError):  # no credentials at all
        RelayPublisher(srv.url, "vantafin", connect_timeout=5).start()
    # the right ones from the environment: a working relay
    monkeypatch.setenv("FASTFEED_NATS_USER", "alice")
    monkeypatch.setenv("FASTFEED_NATS_PASSWORD", "right-pw")
    pub = RelayPublisher(srv.url, "vantafin", connect_timeout=5).start()
    try:
        assert pub.connected and "right-pw" not in repr(pub)
    finally:
        pub.stop()


def test_server_restarted_past_the_dedup_window_keeps_the_chain(nats_server):
    """After a restart the server remembers message ids only within the de-duplication
    window (older servers also forget the last id): the relay resynchronises on the
    stream's last entry and goes on. Nothing is lost, nothing doubled."""
    async def main(sim):
        async with Relay(sim.url("vantafin"), nats_server.url, heartbeat=0, duplicate_window=0.5) as relay:
            await settle(sim, relay, [])
            stored = relay.pub.acked_through
            # an outage longer than the window (a scenario parameter, not a wait for a condition)
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: nats_server.restart(down_for=1.0))
            await until(lambda: relay.pub.connected, 30, "relay reconnected")
            relay.pub.event("heartbeat", {"after": "restart"})
            await until(lambda: relay.pub.acked_through == stored + 1, 30, "entry after the restart stored")
            async with Consumer(nats_server.url) as cons:
                await until(lambda: cons.src.relay_seq == stored + 1, 30, "consumer read all")
                assert cons.src.relay_dropped == 0 and cons.src.duplicates_skipped == 0
                assert_same(relay.feed, cons.feed)
        assert_no_duplicates(await stream_entries(nats_server.url))

    with sim_thread(max_seconds=20) as sim:
        asyncio.run(main(sim))


def test_a_foreign_entry_in_the_stream_does_not_stop_the_relay(nats_server):
    """Someone else publishes to the feed's subjects (no relay id): the relay's next entry
    names a predecessor that is no longer last; the relay asks the stream and goes on
    from its real last entry. Consumers skip the foreign entry (counted)."""
    async def main(sim):
        import nats

        async with Relay(sim.url("vantafin"), nats_server.url, heartbeat=0) as relay:
            await settle(sim, relay, [])
            stored = relay.pub.acked_through
            nc = await nats.connect(nats_server.url)
            await nc.jetstream().publish("fastfeed.vantafin.events", b'{"kind":"hello","ns":0}')
            await nc.close()
            relay.pub.event("heartbeat", {})
            await until(lambda: relay.pub.acked_through == stored + 1, 30, "next entry stored")
            assert relay.pub.chain_breaks == 1
            async with Consumer(nats_server.url) as cons:
                await until(lambda: cons.src.relay_seq == stored + 1, 30, "consumer read all")
                assert cons.src.bad_entries == 1 and cons.src.relay_dropped == 0
                assert_same(relay.feed, cons.feed)

    with sim_thread(max_seconds=10) as sim:
        asyncio.run(main(sim))


def test_a_consumer_waits_for_the_server_and_the_stream(nats_server):
    """Started before NATS answers and before any relay: it retries, then reads."""
    async def main(sim):
        await asyncio.get_running_loop().run_in_executor(None, nats_server.stop)
        async with Consumer(nats_server.url, connect_timeout=0.5) as cons:
            await until(lambda: cons.src.last_error is not None, 20, "a failed attempt")
            assert "no NATS server answered" in cons.src.last_error
            await asyncio.get_running_loop().run_in_executor(None, nats_server.start)
            await until(lambda: cons.src.last_error is not None and "no stream" in cons.src.last_error,
                        20, "waiting for the relay's stream")
            async with Relay(sim.url("vantafin"), nats_server.url) as relay:
                await settle(sim, relay, [cons])
                assert_same(relay.feed, cons.feed)

    with sim_thread(max_seconds=10) as sim:
        asyncio.run(main(sim))
