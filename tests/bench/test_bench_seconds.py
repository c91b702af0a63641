"""``fastfeed bench --seconds``: the command line reaches the completed-second benchmark
(the measurement itself runs a simulator process: ``benches/bench_seconds.py``)."""
import json

from fastfeed.bench import seconds
from fastfeed.cli import main


def _case(tf, reasons):
    p = {"p50": 1000.0, "p99": 2000.0, "max": 3000.0}
    return {"trade_fraction": tf, "reasons": reasons, "second_us": p, "update_us": p, "rule_cost_us": p,
            "seconds": 30, "reconnects": 0, "late_bars": 0}


def test_bench_seconds_runs_the_completed_second_benchmark_with_the_options(monkeypatch, capsys, tmp_path):
    got = {}

    def run(**kw):
        got.update(kw)
        return {"tickers": kw["tickers"], "speed": kw["speed"], "bars_per_frame": 100, "windows": list(kw["windows"]),
                "second_quiet_ms": 20.0, "expect_seconds": 3,
                "cases": [_case(1.0, {"complete": 30, "quiet": 0, "next": 0}),
                          _case(0.5, {"complete": 0, "quiet": 30, "next": 0})]}

    monkeypatch.setattr(seconds, "run_second_bench", run)
    out = tmp_path / "s.json"
    assert main(["bench", "--seconds", "--tickers", "500", "--speed", "5", "--windows", "10,30",
                 "--output", str(out)]) == 0
    assert got == {"tickers": 500, "speed": 5.0, "seed": 0, "windows": (10, 30)}
    text = capsys.readouterr().out
    assert "last message -> on_second" in text and "difference (the rule's cost)" in text
    assert json.loads(out.read_text())["cases"][1]["reasons"]["quiet"] == 30
