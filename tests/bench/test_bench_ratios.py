"""The ratio targets of ``fastfeed bench`` (docs/BENCHMARKS.md, "Ratios"): every row is built
from a result document, carried in the JSON and rendered in ``--markdown`` and the report.

Unit level: the documents are written here, nothing is timed.
"""
from __future__ import annotations

import json

import pytest

from fastfeed.bench import report
from fastfeed.bench.planning import BenchConfig

KEYS = ["engine_over_decode", "large_over_small", "vs_floor_100", "vs_floor_1", "vs_massive",
        "burst_over_floor", "alloc_per_bar"]


def _thr(client, dialect, bpf, rate, cpu, util=0.99):
    return {"case": {"mode": "throughput", "client": client, "dialect": dialect, "bars_per_frame": bpf,
                     "speed": 0.0}, "bars_per_s": rate, "bars_per_s_median_interval": rate,
            "cpu_util": util, "cpu_s_per_million_bars": cpu, "peak_rss_mb": 100.0, "server_cpu_util": 0.9}


def _cad(client, p99_after, p50_after, p99_burst):
    return {"case": {"mode": "cadence", "client": client, "dialect": "vantafin", "bars_per_frame": 100,
                     "speed": 10.0}, "bursts": 30, "burst_bars": 12000,
            "burst_latency_ms": {"p50": p99_burst - 1, "p99": p99_burst, "p99.9": p99_burst, "max": p99_burst,
                                 "count": 30},
            "burst_after_last_arrival_ms": {"p50": p50_after, "p99": p99_after, "count": 30},
            "peak_rss_mb": 50.0}


def _steady(alloc=0.009):
    return {"rows_large": 12000, "rows_small": 1000, "capacity": 16384, "windows": [60, 300, 900],
            "seconds": 30, "batch": 100, "block": 10, "bars_per_message": 100,
            "engine_ns_per_bar": {"12000": 240.0, "1000": 160.0},
            "engine_ns_per_bar_p90": {"12000": 260.0, "1000": 170.0},
            "decode_ns_per_bar": 400.0, "decode_ns_per_bar_p90": 420.0,
            "ratios": {"engine_over_decode": 0.6, "large_over_small": 1.5},
            "alloc_bytes_per_bar": alloc, "peak_rss_mb": 1900.0, "wall_s": 40.0}


def _doc(massive_installed=True, steady=True):
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(BenchConfig.quick_config()).items()}
    results = [
        _thr("fastfeed", "vantafin", 1, 1.8e6, 0.55), _thr("floor", "vantafin", 1, 2.0e6, 0.5),
        _thr("fastfeed", "vantafin", 100, 2.7e6, 0.37), _thr("floor", "vantafin", 100, 3.0e6, 0.33),
        _cad("fastfeed", 1.2, 0.9, 5.0), _cad("floor", 1.0, 0.5, 4.0),
    ]
    if massive_installed:
        results[4:4] = [_thr("fastfeed", "massive", 100, 2.1e6, 0.48), _thr("massive", "massive", 100, 0.1e6, 10.0)]
    else:
        cfg["peers"] = ["floor", "websockets-json"]
    doc = {"command": "fastfeed bench --quick", "started": "2026-12-01T04:00:00Z", "elapsed_s": 90.0,
           "machine": {"cpu": "Test CPU", "cores": 2, "caches": {"L2": "2 MiB"}, "memory_gib": 23.5,
                       "versions": {"massive": "2.0" if massive_installed else None}},
           "config": cfg, "results": results, "load": {"start": [0.5, 0.6, 0.7], "end": [1.0, 0.8, 0.7]}}
    if steady:
        doc["steady"] = _steady()
    else:
        cfg["steady"] = False
    return doc


def _rows(doc):
    return [g for g in report.summarize(doc)["targets"] if g["kind"] == "ratio"]


def test_every_ratio_row_comes_first_with_its_value_target_and_verdict():
    targets = report.summarize(_doc())["targets"]
    rows = [g for g in targets if g["kind"] == "ratio"]
    assert [g["key"] for g in rows] == KEYS
    assert targets[:len(rows)] == rows                        # the ratios before the absolute targets
    k = {g["key"]: g for g in rows}
    assert k["engine_over_decode"]["measured"] == 0.6 and k["engine_over_decode"]["met"] is False
    assert k["large_over_small"]["measured"] == 1.5 and k["large_over_small"]["met"] is False
    assert k["vs_floor_100"]["measured"] == pytest.approx(0.9) and k["vs_floor_100"]["met"] is True
    assert k["vs_floor_1"]["measured"] == pytest.approx(0.9) and k["vs_floor_1"]["met"] is True
    assert k["vs_massive"]["measured"] == pytest.approx(21.0) and k["vs_massive"]["met"] is True
    assert k["burst_over_floor"]["measured"] == pytest.approx(1.2) and k["burst_over_floor"]["met"] is True
    assert k["alloc_per_bar"]["measured"] == 0.009 and k["alloc_per_bar"]["met"] is True
    # the machine's absolute figures stand beside the ratios
    assert "msgspec decode 400 ns/bar" in k["engine_over_decode"]["absolute"]
    assert "floor 3.000 M bars/s (0.33 CPU s/M bars)" in k["vs_floor_100"]["absolute"]
    assert k["burst_over_floor"]["absolute"] == ("after the last message: fastfeed p99 1.20 ms, p50 0.90 ms "
                                                 "(whole burst p99 5.00 ms); floor p99 1.00 ms, p50 0.50 ms")


def test_an_allocation_per_bar_misses_the_target():
    doc = _doc()
    doc["steady"]["alloc_bytes_per_bar"] = 48.0
    (g,) = [g for g in _rows(doc) if g["key"] == "alloc_per_bar"]
    assert g["met"] is False


def test_rows_not_run_say_why():
    k = {g["key"]: g for g in _rows(_doc(massive_installed=False, steady=False))}
    assert list(k) == KEYS
    assert k["vs_massive"]["measured"] is None and k["vs_massive"]["met"] is None
    assert k["vs_massive"]["note"] == "not run: install .[bench]"
    for key in ("engine_over_decode", "large_over_small", "alloc_per_bar"):
        assert k[key]["measured"] is None and "not run" in k[key]["note"], key
    failed = _doc()
    failed["steady"] = {"error": "steady-state process exited 1 without a result"}
    k = {g["key"]: g for g in _rows(failed)}
    assert k["engine_over_decode"]["note"] == "not run: steady-state process exited 1 without a result"


def test_json_markdown_and_report_carry_the_rows():
    doc = _doc()
    doc["summary"] = report.summarize(doc)
    back = json.loads(report.to_json(doc))
    assert [g["key"] for g in back["summary"]["targets"][:7]] == KEYS
    md = report.render_markdown(doc)
    assert md.startswith("`fastfeed bench --quick`")
    assert "on Test CPU, 2 cores (L2 2 MiB), 23.5 GiB; load average 0.50, 0.60, 0.70 at the start" in md
    ratios = md.index("| figure | measured | target | met |")
    assert ratios < md.index("| client | dialect |")              # ratios first, absolute figures after
    assert "| engine ns/bar at 12,000 rows ÷ msgspec decode ns/bar, steady state | 0.600 | ≤ 0.25 | NO |" in md
    assert "| fastfeed ÷ official massive client + the same rolling, A.* | 21.0x | ≥ 20x | yes |" in md
    assert "| allocations per bar, steady state (heap growth, tracemalloc) | 0.009 B/bar | 0 | yes |" in md
    assert "| floor (decode only) | 100 |" in md
    text = report.render_table(doc, width=250)
    assert "Ratios, measured side by side" in text and "engine@12000 rows 240 ns/bar" in text
    assert text.index("Ratios, measured") < text.index("Absolute targets")
    not_run = report.render_markdown(_doc(massive_installed=False))
    assert "| - | ≥ 20x | n/a | not run: install .[bench] |" in not_run


def test_rounds_give_the_median_ratio_and_the_median_row():
    doc = _doc()
    doc["results"] = [r for r in doc["results"] if r["case"]["bars_per_frame"] != 100
                      or r["case"]["mode"] != "throughput" or r["case"]["dialect"] != "vantafin"]
    for rnd, (ff, fl) in enumerate(((1.0e6, 2.0e6), (2.7e6, 3.0e6), (2.1e6, 3.0e6))):   # 0.5, 0.9, 0.7
        for client, rate in (("fastfeed", ff), ("floor", fl)):
            r = _thr(client, "vantafin", 100, rate, 1e6 / rate)
            r["case"]["round"] = rnd
            doc["results"].append(r)
    s = report.summarize(doc)
    (q,) = [q for q in s["ratios"] if q["peer"] == "floor" and q["bars_per_frame"] == 100]
    assert q["rounds"] == 3 and q["round"] == 2 and q["ratio"] == pytest.approx(0.7)
    assert q["ratio_rounds"] == pytest.approx([0.5, 0.9, 0.7])
    (row,) = [g for g in s["targets"] if g["key"] == "vs_floor_100"]
    assert row["measured"] == pytest.approx(0.7)
    assert row["note"] == "median of 3 rounds: 0.50, 0.90, 0.70"
    assert row["absolute"] == ("fastfeed 2.100 M bars/s (0.48 CPU s/M bars); "
                               "floor 3.000 M bars/s (0.33 CPU s/M bars)")
    ff = [r for r in s["throughput"] if r["client"] == "fastfeed" and r["bars_per_frame"] == 100
          and r["dialect"] == "vantafin"]
    assert len(ff) == 1 and ff[0]["bars_per_s"] == 2.1e6 and ff[0]["rounds"] == 3
    assert "shows its median round" in report.render_markdown(doc)


def test_a_saved_document_is_reported_again_by_from(tmp_path, capsys):
    from fastfeed.cli.bench import main

    doc = _doc()
    doc["summary"] = {"targets": []}            # stale: --from summarizes again
    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps(doc))
    assert main(["--from", str(saved), "--markdown"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("`fastfeed bench --quick`") and "| fastfeed ÷ decode-only floor, 100 bars/frame | 0.900 |" in md
    assert main(["--from", str(saved), "--json"]) == 0
    assert [g["key"] for g in json.loads(capsys.readouterr().out)["summary"]["targets"][:7]] == KEYS
    doc["steady"] = {"error": "boom"}
    saved.write_text(json.dumps(doc))
    assert main(["--from", str(saved)]) == 1     # the saved run failed: so does its report
    (tmp_path / "bad.json").write_text("{}")
    assert main(["--from", str(tmp_path / "bad.json")]) == 1
    assert "not a fastfeed bench result document" in " ".join(capsys.readouterr().err.split())


def test_the_massive_row_gives_the_decode_only_floor_of_the_same_stream():
    doc = _doc()
    floor_100 = {g["key"]: g for g in _rows(doc)}["vs_floor_100"]["measured"]
    # the A.* floor decodes 3.15 M bars/s against the official client's 0.1 M: 31.5x
    doc["results"].append(_thr("floor", "massive", 100, 3.15e6, 0.32))
    k = {g["key"]: g for g in _rows(doc)}
    assert k["vs_massive"]["measured"] == pytest.approx(21.0)
    assert "the decode-only floor of the same A.* stream is 31.5x the massive client" in k["vs_massive"]["absolute"]
    # the Vantafin floor rows are not taken over by the A.* floor at the same frame size
    assert k["vs_floor_100"]["measured"] == pytest.approx(floor_100)
    md = report.render_markdown(dict(doc, summary=report.summarize(doc)))
    assert "| floor | massive | 100 |" in md
    # rounds pair up by number: a round the floor missed is left out, not shifted
    for i, (client, rate) in enumerate((("fastfeed", 2.0e6), ("massive", 0.1e6), ("fastfeed", 2.2e6),
                                        ("massive", 0.1e6), ("floor", 2.2e6))):
        r = _thr(client, "massive", 100, rate, 0.5)
        r["case"]["round"] = 1 + (i >= 2)
        doc["results"].append(r)
    k = {g["key"]: g for g in _rows(doc)}
    # rounds 0 (31.5x), 2 (22x); round 1 has no floor
    assert "floor of the same A.* stream is 22.0x" in k["vs_massive"]["absolute"]
