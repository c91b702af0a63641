"""Fast tests of the benchmark harness (no timing assertions).

* the plain-Python rolling aggregation the peers use, against a brute-force reference;
* burst accounting;
* a tiny ``fastfeed bench`` run through the command line (simulator and worker processes,
  200 tickers, fractions of a second per case) and the shape of its JSON document;
* the table renders; the summary derives ratios and targets.
"""
from __future__ import annotations

import json
import math
import random
import time

import pytest

from fastfeed.bench import report
from fastfeed.bench.planning import BenchConfig, plan
from fastfeed.bench.worker import BurstTracker
from fastfeed.bench.peers import PyRolling


def _brute(bars: dict[str, dict[int, tuple]], T: int, W: int):
    out = {}
    for sym, by_s in bars.items():
        held = sorted((s, b) for s, b in by_s.items() if T - W < s <= T)
        if not held:
            out[sym] = None
            continue
        vol = math.fsum(b[4] for _, b in held)
        pv = math.fsum(b[5] for _, b in held)
        out[sym] = (held[0][1][0], max(b[1] for _, b in held), min(b[2] for _, b in held),
                    held[-1][1][3], vol, pv / vol if vol else math.nan, len(held))
    return out


def test_py_rolling_matches_brute_force():
    rng = random.Random(7)
    windows = (3, 10, 30)
    roll = PyRolling(windows)
    truth: dict[str, dict[int, tuple]] = {}
    last: dict[str, int] = {}
    for s in range(1000, 1400):
        for sym in ("A", "B", "C", "D"):
            if rng.random() < 0.6:
                continue
            o, c = rng.uniform(10, 20), rng.uniform(10, 20)
            h, lo = max(o, c) + rng.random(), min(o, c) - rng.random()
            v = float(rng.randint(0, 500))
            bar = (o, h, lo, c, v, v * (h + lo + c) / 3)
            roll.update(sym, s, *bar)
            truth.setdefault(sym, {})[s] = bar
            last[sym] = s
            if rng.random() < 0.1:  # a correction of the newest bar (upsert)
                v2 = float(rng.randint(1, 500))
                bar = (o, h + 0.5, lo, c, v2, v2 * c)
                roll.update(sym, s, *bar)
                truth[sym][s] = bar
        if s % 37 == 0:
            for W in windows:
                got = roll.snapshot(W)
                want = _brute(truth, roll.T, W)
                for sym, w in want.items():
                    g = got[sym]
                    if w is None:
                        assert g[6] == 0 and g[4] == 0.0
                        continue
                    assert g[0] == w[0] and g[1] == w[1] and g[2] == w[2] and g[3] == w[3]
                    assert g[6] == w[6]
                    assert g[4] == pytest.approx(w[4], rel=1e-9, abs=1e-9)
                    if w[4]:
                        assert g[5] == pytest.approx(w[5], rel=1e-9)


def test_py_rolling_ignores_older_bars():
    roll = PyRolling((60,))
    roll.update("X", 100, 1, 2, 0.5, 1.5, 10, 15)
    roll.update("X", 99, 1, 2, 0.5, 1.5, 10, 15)
    assert roll.late == 1
    assert roll.snapshot(60)["X"][6] == 1


def test_burst_tracker_counts_complete_and_incomplete_bursts():
    tr = BurstTracker(expected=10, skip=1)
    t0 = time.time_ns()
    for second in (5, 6, 7):
        for k in range(5):
            tr.add(second, 2, t0 + k)
    assert tr.ready == 3 and tr.measured == 2
    assert tr.hist.get_total_count() == 2 and len(tr.samples) == 2
    tr.add(8, 3, t0)  # incomplete, then superseded
    tr.add(9, 10, t0)
    assert tr.incomplete == 1 and tr.ready == 4


def test_plan_pairs_every_peer_with_fastfeed_on_the_same_dialect_and_frame_size():
    cfg = BenchConfig()
    cases = plan(cfg)
    thr = {(c.client, c.dialect, c.bars_per_frame) for c in cases if c.mode == "throughput"}
    for c in cases:
        if c.mode == "throughput":
            assert ("fastfeed", c.dialect, c.bars_per_frame) in thr
    assert any(c.mode == "cadence" and c.client == "fastfeed" for c in cases)
    quick = plan(BenchConfig.quick_config())
    assert len(quick) < len(cases)
    none = plan(BenchConfig(peers=()))
    assert {c.client for c in none} == {"fastfeed"}
    # rounds: fastfeed and the floor / the official client alternate, each round in turn
    thr = [(c.round, c.client, c.dialect, c.bars_per_frame) for c in cases if c.mode == "throughput"]
    for r in range(cfg.rounds):
        for dialect, peer, bpf in (("vantafin", "floor", 1), ("vantafin", "floor", 100), ("massive", "massive", 100)):
            i = thr.index((r, "fastfeed", dialect, bpf))
            assert thr[i + 1] == (r, peer, dialect, bpf)
    # the decode-only floor of the A.* stream, every round (the vs-massive ceiling)
    assert [x for x in thr if x[1:3] == ("floor", "massive")] == [(r, "floor", "massive", 100) for r in range(cfg.rounds)]
    assert not any(c.dialect == "massive" and c.client == "floor" for c in plan(BenchConfig(peers=("floor",))))
    assert [x for x in thr if x[1] in ("websockets-json", "massive-raw")] == [
        (0, "websockets-json", "vantafin", 1), (0, "websockets-json", "vantafin", 100), (0, "massive-raw", "massive", 100)]
    assert {c.round for c in quick} == {0}
    cad = [(c.client, c.bars_per_frame) for c in cases if c.mode == "cadence"]
    assert cad[:2] == [("fastfeed", 100), ("floor", 100)]  # the burst ratio's two sides, one after the other


def _fake_doc() -> dict:
    def thr(client, dialect, bpf, rate, util=0.99, cpu=0.5):
        return {"case": {"mode": "throughput", "client": client, "dialect": dialect, "bars_per_frame": bpf,
                         "speed": 0.0}, "bars_per_s": rate, "bars_per_s_median_interval": rate,
                "cpu_util": util, "cpu_s_per_million_bars": cpu, "peak_rss_mb": 100.0}

    return {
        "command": "fastfeed bench", "machine": {}, "config": {"tickers": 12000},
        "results": [
            thr("fastfeed", "vantafin", 100, 2.0e6),
            thr("floor", "vantafin", 100, 2.5e6, cpu=0.4),
            thr("websockets-json", "vantafin", 100, 1.0e5, cpu=10.0),
            thr("fastfeed", "massive", 100, 3.0e5, util=0.2, cpu=0.6),
            thr("massive", "massive", 100, 1.0e5, cpu=6.0),
            {"case": {"mode": "cadence", "client": "fastfeed", "dialect": "vantafin", "bars_per_frame": 100,
                      "speed": 10.0}, "bursts": 5, "burst_bars": 12000,
             "burst_latency_ms": {"p50": 4.0, "p99": 5.0, "p99.9": 5.0, "max": 5.0, "count": 5},
             "burst_samples_ms": [4.0, 4.1, 4.2, 4.9, 5.0], "peak_rss_mb": 100.0},
        ],
    }


def test_summary_ratios_and_targets():
    s = report.summarize(_fake_doc())
    r = {q["peer"]: q for q in s["ratios"]}
    assert r["floor"]["ratio"] == pytest.approx(0.8)
    assert r["websockets-json"]["ratio"] == pytest.approx(20.0)
    assert r["massive"]["fastfeed_server_bound"] is True
    assert r["massive"]["cpu_ratio"] == pytest.approx(10.0)
    t = {g["target"]: g for g in s["targets"]}
    assert t["end-to-end, 100 bars/frame"]["met"] is True
    k = {g["key"]: g for g in s["targets"] if g["key"]}
    # fastfeed was simulator-bound: the verdict uses CPU per bar (6.0 / 0.6 = 10x < 20x)
    assert k["vs_massive"]["measured"] == pytest.approx(10.0)
    assert k["vs_massive"]["met"] is False
    assert r["floor"]["ratio_cpu_basis"] == pytest.approx(0.8)
    text = report.render_table(_fake_doc())
    assert "websockets-json" in text and "burst" in text
    md = report.render_markdown(_fake_doc())
    assert md.startswith("`fastfeed bench`") and "| websockets-json | vantafin | 100 |" in md


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """``fastfeed bench`` on 200 tickers with fractions of a second per case, JSON to a file."""
    from fastfeed.cli.bench import main

    out = tmp_path_factory.mktemp("bench") / "bench.json"
    rc = main(["--tickers", "200", "--bars-per-frame", "100", "--duration", "0.4", "--warmup", "0.1",
               "--bursts", "3", "--speed", "20", "--peers", "floor", "--no-peer-cadence", "--no-steady",
               "--rounds", "1",
               "--output", str(out)])
    return rc, json.loads(out.read_text())


def test_tiny_run_succeeds_and_has_the_documented_shape(tiny_run):
    rc, doc = tiny_run
    assert rc == 0, [r.get("error") for r in doc["results"]]
    for key in ("command", "started", "elapsed_s", "machine", "config", "results", "summary"):
        assert key in doc
    assert set(doc["summary"]) == {"throughput", "ratios", "cadence", "targets", "busy_machine_loadavg"}
    kinds = {(r["case"]["mode"], r["case"]["client"]) for r in doc["results"]}
    assert ("throughput", "fastfeed") in kinds and ("throughput", "floor") in kinds
    assert ("cadence", "fastfeed") in kinds and ("cadence", "floor") in kinds
    for r in doc["results"]:
        assert "error" not in r
        assert r["peak_rss_mb"] > 0
        if r["case"]["mode"] == "throughput":
            assert r["bars"] > 0 and r["bars_per_s"] > 0 and r["cpu_s_per_million_bars"] > 0
        else:
            assert r["bursts"] == 3 and r["burst_bars"] == 200
            assert r["burst_latency_ms"]["count"] == 3
            assert len(r["burst_samples_ms"]) == 3
            assert r["burst_after_last_arrival_ms"]["count"] == 3
            if r["case"]["client"] == "fastfeed":
                assert r["engine_updates_per_burst"] >= 1
        if r["case"]["client"] == "fastfeed":
            assert r["counters"]["decode_errors"] == 0
            assert r["engine_counters"]["accepted"] == r["counters"]["bars"]
    (floor,) = [q for q in doc["summary"]["ratios"] if q["peer"] == "floor"]
    assert floor["ratio"] > 0
    rows = {g["key"]: g for g in doc["summary"]["targets"] if g["kind"] == "ratio"}
    assert rows["vs_floor_100"]["measured"] == pytest.approx(floor["ratio"] if floor["basis"] == "wall"
                                                             else floor["ratio_cpu_basis"])
    assert rows["vs_floor_1"]["note"] == "not run: 1 not in --bars-per-frame"
    assert rows["burst_over_floor"]["measured"] > 0
    assert rows["engine_over_decode"]["note"] == "not run (--no-steady)" and "steady" not in doc
    json.dumps(doc)  # serialisable as is
