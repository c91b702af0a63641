"""The relay and its consumers as real processes (``fastfeed relay``; consumers are
``Feed(url="nats://...")`` processes and the ``fastfeed snapshot`` command), the real
nats-server, the simulator: the issue's acceptance scenarios."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from fastfeed.relay import wire
from fastfeed.relay.harness import HarnessProcess, same_windows
from fastfeed.simulator import Faults
from fastfeed.simulator.testing import SimThread
from relay_helpers import assert_no_duplicates, stream_entries

pytestmark = pytest.mark.timeout(300)

WIN = "5,10,30"


def relay_proc(vendor_url: str, nats_url: str, windows_out, *extra: str) -> HarnessProcess:
    """``fastfeed relay``; its windows are written to ``windows_out`` when it stops."""
    return HarnessProcess("relay", ["--url", vendor_url, "--nats", nats_url, "--windows", WIN,
                                    "--heartbeat", "0.5", "--windows-out", str(windows_out), *extra]).start()


def consumer_proc(nats_url: str, *extra: str) -> HarnessProcess:
    return HarnessProcess("consume", ["--nats", nats_url, "--windows", WIN, "--warm-start", "3600",
                                      *extra]).start()


def sim_finished(sim) -> bool:
    """The simulator sent its last second and every producer has finished."""
    return sim.call(lambda s: s.high_water >= s.end_second() - 1 and all(
        c._producer is None or c._producer.done() for c in s.connections))


def wait_all_applied(sim, relay: HarnessProcess, consumers: list[HarnessProcess], timeout=120.0) -> int:
    """The simulator is done, the relay read and published all, every consumer applied it."""
    deadline = time.monotonic() + timeout
    while not sim_finished(sim):
        assert time.monotonic() < deadline, "simulator did not finish"
        relay.wait(lambda s: True, 5)
        time.sleep(0.05)  # polling the simulator's state, not a synchronisation by time
    st = relay.wait(lambda s: (s["vendor_idle_ms"] or 0) > 300 and s["buffered_bytes"] == 0
                    and s["acked_through"] == s["last_seq"], timeout, "relay published all")
    target, epoch = st["acked_through"], st["epoch"]
    for c in consumers:
        c.wait(lambda s: s["epoch"] == epoch and s["relay_seq"] >= target, timeout, "consumer applied all")
    return target


def assert_same(a: dict, b: dict) -> None:
    assert a["windows"]["30"], "no bars"
    diffs = same_windows(a, b)
    assert not diffs, diffs


def test_three_consumers_one_late_equal_the_relay_through_faults_and_a_nats_restart(nats_server, tmp_path):
    faults = Faults(correction_every=4, malformed_every=5, garbage_every=9, fragment_every=7,
                    drop_after=60, drop_mode="abrupt", connections=2)
    # simulated time runs with the wall clock (x40): long enough for slow process starts
    with SimThread(n_tickers=150, trade_fraction=0.8, bars_per_frame=10, speed=40.0, max_seconds=500,
                   faults=faults) as sim:
        end = sim.call(lambda s: s.end_second())
        early = [consumer_proc(nats_server.url), consumer_proc(nats_server.url)]
        relay = relay_proc(sim.url("vantafin"), nats_server.url, tmp_path / "relay.json")
        procs = [*early, relay]
        try:
            st = relay.wait(lambda s: s["T"] is not None and s["acked_through"] > 100, 60, "relay under way")
            nats_server.restart()  # mid-stream: relay buffers, consumers resume by sequence
            t_half = min(st["T"] + 40, end - 60)  # still well before the end
            relay.wait(lambda s: (s["T"] or 0) >= t_half, 60, "half-way")
            late = consumer_proc(nats_server.url)  # joins late: warm start from the stream
            procs.append(late)
            wait_all_applied(sim, relay, [*early, late])
            r = relay.dump(str(tmp_path / "relay.json"))
            docs = [c.dump(str(tmp_path / f"c{i}.json")) for i, c in enumerate([*early, late])]
            for d in docs:
                assert_same(r, d)
            rs = r["stats"]
            assert rs["reconnects"] >= 1 and rs["decode_errors"] > 0 and rs["replaced"] > 0
            for d in docs[:2]:  # there from the start: the same counters as the relay
                for k in ("bars", "messages", "decode_errors", "decode_errors_by_kind", "reconnects",
                          "gaps", "stale_dropped", "replaced"):
                    assert d["stats"][k] == rs[k], k
                assert d["status"]["relay_dropped"] == 0 and d["status"]["duplicates_skipped"] == 0
            assert r["status"]["nats_disconnects"] >= 1 and r["status"]["dropped_messages"] == 0
            assert docs[2]["status"]["caught_up"]
        finally:
            for p in procs:
                p.stop()


def test_relay_killed_and_restarted(nats_server, tmp_path):
    """kill -9 of the relay: consumers report the gap, store no entry twice, and follow
    the new relay to its exact windows."""
    with SimThread(n_tickers=100, trade_fraction=0.8, bars_per_frame=10, speed=40.0, max_seconds=700) as sim:
        end = sim.call(lambda s: s.end_second())
        cons = [consumer_proc(nats_server.url), consumer_proc(nats_server.url)]
        relay = relay_proc(sim.url("vantafin"), nats_server.url, tmp_path / "relay1.json")
        relay2 = None
        try:
            relay.wait(lambda s: s["acked_through"] > 60, 60, "relay under way")
            relay.kill()
            relay2 = relay_proc(sim.url("vantafin"), nats_server.url, tmp_path / "relay2.json")
            st = relay2.wait(lambda s: s["T"] is not None, 60, "second relay reading")
            assert st["T"] < end - 40, "the simulation ended before the new relay got going"
            # past the longest window, the new relay's windows hold only what it received
            relay2.wait(lambda s: s["T"] >= st["T"] + 40, 60, "new relay past the 30 s window")
            wait_all_applied(sim, relay2, cons)
            r = relay2.dump(str(tmp_path / "relay2.json"))
            for i, c in enumerate(cons):
                d = c.dump(str(tmp_path / f"c{i}.json"))
                assert_same(r, d)
                s = d["status"]
                assert s["duplicates_skipped"] == 0
                assert d["stats"]["gaps"] >= 1 and d["stats"]["gap_list"], "the gap is reported"
                assert s["events"].get("disconnected", 0) >= 1
            st1 = cons[0].stop()
            assert st1 == 0
            out = cons[0].exit_doc
            reasons = [e[1].get("reason") for e in out["events_list"] if e[0] == "disconnected"]
            assert "relay restarted" in reasons
            entries = asyncio.run(stream_entries(nats_server.url))
            assert_no_duplicates(entries)
            assert len({wire.parse_msg_id(m)[0] for _, m in entries}) == 2  # two relay epochs
        finally:
            for p in [*cons, relay, *( [relay2] if relay2 else [])]:
                p.stop()


def test_bad_nats_credentials_exit_2_with_a_clear_line(make_nats_server):
    srv = make_nats_server(config="authorization { user: alice, password: right-pw }")
    bad = srv.url.replace("nats://", "nats://alice:wrong-pw@")
    for p in (HarnessProcess("relay", ["--url", "ws://127.0.0.1:9/v1/stocks", "--api-key", "k", "--nats", bad]).start(),
              HarnessProcess("consume", ["--nats", bad]).start()):
        assert p.returncode(60) == 2
        line = p.error_doc
        assert line is not None and line["kind"] == "NatsAuthError"
        assert "refused the credentials" in line["error"] and "wrong-pw" not in json.dumps(line)


def test_relay_with_a_refused_vendor_key_exits_2_and_says_so_on_the_stream(nats_server):
    with SimThread(n_tickers=20, speed=20.0) as sim:
        relay = HarnessProcess("relay", ["--url", sim.url("vantafin", "not-the-key"),
                                         "--nats", nats_server.url]).start()
        assert relay.returncode(60) == 2
        assert relay.error_doc["kind"] == "AuthError" and "not-the-key" not in json.dumps(relay.error_doc)
    kinds = [json.loads(e) for e in asyncio.run(_event_payloads(nats_server.url))]
    assert "auth_failed" in [k["kind"] for k in kinds]  # published before the relay exited


async def _event_payloads(url: str) -> list[bytes]:
    import nats
    from nats.js.api import DeliverPolicy

    nc = await nats.connect(url)
    js = nc.jetstream()
    n = (await js.stream_info(wire.stream_name("vantafin"))).state.messages
    sub = await js.subscribe(wire.events_subject("vantafin"), ordered_consumer=True,
                             deliver_policy=DeliverPolicy.ALL)
    out = []
    while True:
        try:
            out.append((await sub.next_msg(timeout=2)).data)
        except Exception:
            break
    await nc.close()
    assert len(out) <= n
    return out


def test_relay_without_jetstream_exits_1_with_a_clear_line(make_nats_server):
    srv = make_nats_server(jetstream=False)
    p = HarnessProcess("relay", ["--url", "ws://127.0.0.1:9/v1/stocks", "--api-key", "k", "--nats", srv.url]).start()
    assert p.returncode(60) == 1
    assert p.error_doc["kind"] == "JetStreamNotEnabled" and "-js" in p.error_doc["error"]


def _fastfeed(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fastfeed.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(p: subprocess.Popen) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=120)
    return p.returncode, out, err


def _same_as_relay(relay_doc: dict, snapshot_doc: dict) -> None:
    """A snapshot document's windows equal the relay's windows document, value for value."""
    assert relay_doc["windows"]["30"], "no bars"
    for w, rows in relay_doc["windows"].items():
        got = snapshot_doc["windows"][w]
        assert set(got) == set(rows), w
        for sym, v in rows.items():
            d = got[sym]
            assert [d[f] for f in ("open", "high", "low", "close", "volume", "vwap")] + [d["count"]] == v, (w, sym)


def test_snapshot_and_record_commands_read_the_relay(nats_server, tmp_path):
    """`fastfeed snapshot/record --url nats://...` warm-start from the stream: the snapshot,
    and the replayed recording, hold the relay's windows exactly."""
    with SimThread(n_tickers=60, trade_fraction=0.8, bars_per_frame=10, speed=40.0, max_seconds=240,
                   faults=Faults(correction_every=4, malformed_every=5)) as sim:
        relay = relay_proc(sim.url("vantafin"), nats_server.url, tmp_path / "relay.json")
        try:
            wait_all_applied(sim, relay, [])
            # two consumer commands at once, each listening long enough to warm-start
            procs = [_fastfeed("snapshot", "--url", nats_server.url, "--duration", "8", "--windows", WIN),
                     _fastfeed("record", "--url", nats_server.url, "--out", str(tmp_path / "r.ffr"),
                               "--duration", "8", "--windows", WIN)]
            snap, rec = (_finish(p) for p in procs)
            r = relay.dump(str(tmp_path / "relay.json"))
        finally:
            relay.stop()
    assert snap[0] == 0, snap[2]
    _same_as_relay(r, json.loads(snap[1]))
    assert rec[0] == 0, rec[2]
    rep = _finish(_fastfeed("replay", str(tmp_path / "r.ffr"), "--windows", WIN, "--format", "json"))
    assert rep[0] == 0, rep[2]
    _same_as_relay(r, json.loads(rep[1]))
