"""fastfeed.bench.steady: the engine steady-state figures beside the decode yardstick."""
import numpy as np
import pytest

from fastfeed.bench import steady
from fastfeed.feeds import vantafin


def test_messages_carry_exactly_the_bars_the_engine_gets():
    m = steady.Market(250, seed=3)
    m.next_second()
    syms = steady.tickers(250)
    msgs = m.messages(syms, 100)
    assert len(msgs) == 3
    quotes = [q for b in msgs for q in vantafin.decoder.decode(b)]
    assert [q.ticker for q in quotes] == [syms[r] for r in m.rows]
    for name, col in (("open", m.o), ("high", m.h), ("low", m.l), ("close", m.c), ("volume", m.v)):
        assert np.array_equal(np.array([getattr(q, name) for q in quotes]), col), name
    assert {q.timestamp for q in quotes} == {m.t * 1000}
    assert (m.l > 0).all() and (m.l <= np.minimum(m.o, m.c)).all() and (m.h >= np.maximum(m.o, m.c)).all()


def test_measure_reports_medians_ratios_and_allocations():
    doc = steady.measure(rows_large=300, rows_small=40, seconds=5, windows=(3, 8), capacity=512,
                         batch=50, bars_per_message=50)
    e = doc["engine_ns_per_bar"]
    assert set(e) == {"300", "40"} and min(e.values()) > 0 and doc["decode_ns_per_bar"] > 0
    r = doc["ratios"]
    assert abs(r["engine_over_decode"] - e["300"] / doc["decode_ns_per_bar"]) < 0.01 * r["engine_over_decode"] + 1e-3
    assert abs(r["large_over_small"] - e["300"] / e["40"]) < 0.01 * r["large_over_small"] + 1e-3
    assert doc["targets"]["engine_over_decode"]["target_max"] == 0.25
    assert doc["targets"]["large_over_small"]["met"] == (r["large_over_small"] <= 1.3)
    assert doc["alloc_bytes_per_bar"] < 1.0          # nothing allocated per bar


def test_fastfeed_bench_runs_it_in_its_own_process_with_progress():
    """run_steady: the subprocess that ``fastfeed bench`` starts, at tiny sizes."""
    import math

    from fastfeed.bench import report
    from fastfeed.bench.orchestration import run_steady
    from fastfeed.bench.planning import BenchConfig

    cfg = BenchConfig(windows=(3, 8), steady_rows=(300, 40), steady_seconds=4, steady_capacity=512)
    said: list[str] = []
    doc = run_steady(cfg, progress=said.append)
    assert "error" not in doc, doc
    assert said[0] == "filling 300 rows: 0/8 s" and "timing: 0/4 s" in said
    assert doc["rows_large"] == 300 and doc["rows_small"] == 40 and doc["windows"] == [3, 8]
    figures = [*doc["engine_ns_per_bar"].values(), doc["decode_ns_per_bar"], *doc["ratios"].values()]
    assert all(math.isfinite(x) and x > 0 for x in figures), figures
    assert doc["peak_rss_mb"] > 0 and doc["wall_s"] > 0 and doc["alloc_bytes_per_bar"] >= 0
    rows = {g["key"]: g for g in report.summarize({"config": {}, "results": [], "steady": doc})["targets"]}
    assert rows["engine_over_decode"]["measured"] == doc["ratios"]["engine_over_decode"]
    assert rows["large_over_small"]["target"] == "engine ns/bar at 300 rows ÷ at 40 rows, steady state"
    assert rows["alloc_per_bar"]["measured"] == doc["alloc_bytes_per_bar"]


def test_a_failed_steady_process_is_an_error_not_an_exception():
    from fastfeed.bench.orchestration import run_steady
    from fastfeed.bench.planning import BenchConfig

    doc = run_steady(BenchConfig(steady_rows=(600, 40), steady_capacity=512, steady_seconds=1))
    assert doc["error"].startswith("steady-state process exited 1") and "rows must be <= capacity" in doc["stderr"]


def test_it_is_not_started_without_the_memory_for_two_engines(monkeypatch):
    import subprocess

    from fastfeed.bench import orchestration
    from fastfeed.bench.planning import BenchConfig

    monkeypatch.setattr(orchestration, "_meminfo_mib", lambda field: 1500.0)
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("started"))
    doc = orchestration.run_steady(BenchConfig())
    assert doc["error"] == ("not enough memory: two engines need about 2000 MiB, 1500 MiB available "
                            "(--no-steady skips it)")
