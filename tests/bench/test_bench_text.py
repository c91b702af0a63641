"""``fastfeed bench`` prints its notes, errors and report as written: brackets are text,
never Rich markup (``pip install 'fastfeed[bench]'`` keeps its ``[bench]``)."""
from __future__ import annotations

import importlib.util

from fastfeed.bench import report

HINT = "pip install 'fastfeed[bench]'"


def test_install_hints_keep_their_brackets(monkeypatch, capsys):
    import fastfeed.bench.orchestration as orchestration
    from fastfeed.cli.bench import main

    find_spec = importlib.util.find_spec
    missing = {"websockets", "massive", "matplotlib"}
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in missing else find_spec(name, *a))

    def no_run(cfg, progress, command, **kw):  # the notes are printed before any case runs
        return {"results": [], "command": command}

    monkeypatch.setattr(orchestration, "run_bench", no_run)
    assert main(["--peers", "websockets-json,massive", "--plot", "p.png", "--json"]) == 0
    err = " ".join(capsys.readouterr().err.split())  # Rich wraps at the console's width
    assert "peer websockets-json skipped: websockets is not installed (" + HINT + ")" in err
    assert "peer massive skipped: massive is not installed (" + HINT + ")" in err
    assert "--plot ignored: matplotlib is not installed (" + HINT + ")" in err


def test_report_prints_brackets_as_text():
    doc = {"command": "fastfeed bench --plot run[1].png", "machine": {}, "config": {"tickers": 10},
           "results": [{"case": {"mode": "throughput", "client": "fastfeed", "dialect": "vantafin",
                                 "bars_per_frame": 1, "speed": 0.0},
                        "error": "needs [bench] extras"}]}
    text = report.render_table(doc)
    assert "$ fastfeed bench --plot run[1].png" in text
    assert "[case failed] fastfeed throughput: needs [bench] extras" in text
