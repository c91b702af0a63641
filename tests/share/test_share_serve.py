"""``fastfeed serve`` as a real process against the simulator: what strategies read equals
the truth, ``snapshot --attach`` equals the reader, metrics over HTTP, SIGTERM is clean,
SIGKILL is noticed and a restart re-attached to, and a journaled restart loses only the
outage."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastfeed.share import attach
from fastfeed.share.layout import shm_path
from fastfeed.simulator.testing import SimThread
from fastfeed.snapshot import dump_json

from serve_helpers import FASTFEED, Command, reference, wait_for, windows_equal

WINDOWS = (10, 30)


@pytest.fixture
def serve():
    """Start ``fastfeed serve --url URL --share NAME ...``; every one is killed at the end."""
    started: list[Command] = []

    def start(url: str, name: str, *more: str, windows: tuple[int, ...] = WINDOWS) -> Command:
        c = Command("serve", "--url", url, "--windows", ",".join(map(str, windows)), "--share", name, *more)
        started.append(c)
        return c

    yield start
    for c in started:
        c.kill()


def stop_cleanly(cmd: Command, name: str) -> None:
    """SIGTERM: exit 0 and nothing left in /dev/shm."""
    assert cmd.signal(signal.SIGTERM) == 0, "".join(cmd.stderr)
    assert not os.path.exists(shm_path(name))


def test_serve_publishes_the_truth_snapshot_attach_and_metrics_agree_sigterm_is_clean(shm_name, serve):
    # 40 simulated seconds at 20x, then the simulator idles: the segment becomes still
    with SimThread(n_tickers=200, trade_fraction=1.0, speed=20.0, bars_per_frame=50, max_seconds=40) as sim:
        srv = serve(sim.url("vantafin"), shm_name, "--metrics", "127.0.0.1:0")
        metrics_url = srv.expect(r"metrics at (http://\S+/metrics)").group(1)
        srv.expect(r"connected to ws://127\.0\.0\.1:\d+/v1/stocks\?apiKey=\*\*\*")
        reader = attach(shm_name, timeout=30)
        last = sim.call(lambda s: s.end_second()) - 1
        wait_for(lambda: reader.T == last, 60, f"the clock reaches the simulator's last second {last}")
        sent = sim.call(lambda s: s.sent_bars("vantafin"))
        wait_for(lambda: reader.stats["bars"] == len(sent), 30, f"all {len(sent)} bars sent are counted")
        doc = json.loads(dump_json(reader.snapshot()))
        assert windows_equal(doc, reference(sent, WINDOWS)) == []
        # the CLI reads the same segment: the same document
        cli = subprocess.run([*FASTFEED, "snapshot", "--attach", shm_name, "--format", "json"],
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout) == doc
        bad = subprocess.run([*FASTFEED, "snapshot", "--attach", shm_name, "--windows", "60"],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1 and "no 60s window" in bad.stderr
        view = subprocess.run([*FASTFEED, "watch", "--attach", shm_name, "--window", "10", "--duration", "1",
                               "--refresh", "0.2"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "COLUMNS": "200"})  # wide enough for the header's title
        assert view.returncode == 0, view.stderr
        assert f"segment {shm_name}" in view.stdout and "200 of 200 instruments active" in view.stdout
        assert "Volume leaders" in view.stdout
        # metrics, parsed by prometheus_client
        text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
        samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.labels.get("feed", "vantafin") == "vantafin" and "le" not in s.labels}
        assert samples["fastfeed_bars_total"] == len(sent)
        assert samples["fastfeed_universe_rows"] == 200
        assert samples["fastfeed_clock_seconds"] == last
        assert samples["fastfeed_processing_latency_seconds_count"] > 0
        # SIGTERM: exit 0, the segment removed, the reader told
        stop_cleanly(srv, shm_name)
        assert reader.status == "closed"
        assert any("stopping" in line for line in srv.stderr)
        reader.close()


def test_serve_sigkill_is_noticed_and_a_restart_is_reattached(shm_name, serve):
    with SimThread(n_tickers=50, trade_fraction=1.0, speed=1.0, bars_per_frame=50) as sim:
        events: list[str] = []
        a = serve(sim.url("vantafin"), shm_name)
        a.expect("connected to")
        reader = attach(shm_name, timeout=30, on_event=lambda kind, info: events.append(kind))
        epoch = reader.epoch
        wait_for(lambda: reader.T is not None, 30, "a first second published")
        T_a = reader.T
        a.kill()  # SIGKILL: no chance to clean up
        wait_for(lambda: reader.status == "gone", 10, "the reader notices the writer is gone")
        assert "writer_gone" in events
        assert os.path.exists(shm_path(shm_name))  # stale until the next writer reclaims it
        b = serve(sim.url("vantafin"), shm_name)
        b.expect("connected to")
        wait_for(lambda: reader.status == "live" and reader.epoch != epoch, 30, "the reader re-attaches")
        assert "reattached" in events and reader.reattaches == 1
        wait_for(lambda: (reader.T or 0) > T_a, 30, "the new writer publishes")
        stop_cleanly(b, shm_name)
        reader.close()


def test_serve_journal_restart_equals_an_uninterrupted_run_except_the_outage(shm_name, serve, tmp_path):
    """A serves with a journal and is stopped by SIGTERM; the market goes on; B starts with
    the same journal, warm-starts, reconnects and reports the outage as a gap.  B's windows
    equal an engine fed every bar the simulator sent (to A, then to B): only the outage's
    seconds are missing, from both."""
    journal = str(tmp_path / "journal")
    windows = (10, 60)
    # 50 simulated seconds at 2x: A serves the first ~10, B starts within the next ~20 s of
    # wall time, so at the end the 60 s window spans A's seconds, the outage and B's
    with SimThread(n_tickers=100, trade_fraction=1.0, speed=2.0, bars_per_frame=50, max_seconds=50) as sim:
        start = sim.call(lambda s: s.start_second)
        last = sim.call(lambda s: s.end_second()) - 1
        a = serve(sim.url("vantafin"), shm_name, "--journal", journal, windows=windows)
        a.expect("connected to")
        reader = attach(shm_name, timeout=30)
        wait_for(lambda: (reader.T or 0) >= start + 10, 60, "A published 10 seconds")
        stop_cleanly(a, shm_name)
        T_a = reader.T  # A's final clock (the closed segment keeps its last state)
        wait_for(lambda: sim.call(lambda s: s.first_second_for_new_subscriber()) > T_a + 3, 30,
                 "3 whole seconds missed")
        b = serve(sim.url("vantafin"), shm_name, "--journal", journal, windows=windows)
        warm = b.expect(r"warm start: (\d+) messages .* clock (\d+)")
        assert int(warm.group(1)) > 0 and int(warm.group(2)) == T_a
        gap = b.expect(r"gap: no bars for seconds (\d+) \.\. (\d+)")
        assert int(gap.group(1)) == T_a + 1 and int(gap.group(2)) >= T_a + 3
        wait_for(lambda: reader.status == "live" and reader.T == last, 120, "B reaches the last second")
        sent = sim.call(lambda s: s.sent_bars("vantafin"))
        want = reference(sent, windows)
        assert T_a > last - 60, "A's seconds fell out of the 60 s window: the test would prove nothing"
        try:  # B may still be applying the last frames
            wait_for(lambda: not windows_equal(json.loads(dump_json(reader.snapshot())), want), 30,
                     "B's windows equal the truth")
        except AssertionError:
            pass
        assert windows_equal(json.loads(dump_json(reader.snapshot())), want) == []
        stop_cleanly(b, shm_name)
        reader.close()


def test_serve_exits_2_on_a_refused_key_and_1_on_a_taken_name(shm_name, serve):
    with SimThread(n_tickers=20) as sim:
        bad = serve(sim.url("vantafin", api_key="wrong-key"), shm_name)
        bad.expect("authentication refused")
        assert bad.p.wait(60) == 2
        assert "wrong-key" not in "".join(bad.stderr)
        assert not os.path.exists(shm_path(shm_name))
        a = serve(sim.url("vantafin"), shm_name)
        a.expect("connected to")
        b = serve(sim.url("vantafin"), shm_name)
        b.expect("in use by a live writer")
        assert b.p.wait(60) == 1
        stop_cleanly(a, shm_name)
