"""The fastfeed command as scripts and terminal users run it."""
import json
import subprocess
import sys

import pytest

from fastfeed.cli import main
from fastfeed.engine.stats import CONTRACT_KEYS

ENTRY_KEYS = {"open", "high", "low", "close", "volume", "vwap", "count"}


def snapshot(capsys, *args):
    code = main(["snapshot", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_snapshot_prints_the_contract_document(sim, capsys):
    code, out, err = snapshot(capsys, "--url", sim.url("vantafin", api_key=None), "--api-key", "sim-key",
                              "--duration", "1.5", "--windows", "60,300")
    assert code == 0, err
    doc = json.loads(out)
    assert list(doc) == ["feed", "as_of", "market", "windows", "stats"]
    assert doc["feed"] == "vantafin" and isinstance(doc["as_of"], int)
    assert list(doc["windows"]) == ["60", "300"]
    rows = doc["windows"]["60"]
    assert rows, "no instrument in the 60 s window"
    for sym, e in rows.items():
        assert set(e) == ENTRY_KEYS and e["count"] >= 1 and isinstance(e["count"], int)
        assert e["low"] <= e["high"]
    assert tuple(doc["stats"])[: len(CONTRACT_KEYS)] == CONTRACT_KEYS
    assert doc["stats"]["bars"] > 0 and doc["stats"]["decode_errors"] == 0
    assert "sim-key" not in out + err


def test_snapshot_json_has_null_for_nan_and_omits_empty_instruments():
    from fastfeed import Engine, Stats, Universe
    from fastfeed.snapshot import dump_json, snapshot_document
    import numpy as np

    u, e = Universe(8), Engine(8, (60,), None, 5.0)
    rows = np.array([u.row("ZERO"), u.row("ONE")], np.int64)
    u.row("QUIET")  # known, but no bar
    f = lambda *v: np.array(v, np.float64)
    e.upsert(rows, np.array([100, 100], np.int64), f(1, 2), f(1, 2), f(1, 2), f(1, 2), f(0, 5), f(0, 10))
    doc = json.loads(dump_json(snapshot_document("vantafin", e, u, Stats())))
    w = doc["windows"]["60"]
    assert set(w) == {"ZERO", "ONE"}
    assert w["ZERO"]["vwap"] is None and w["ZERO"]["volume"] == 0.0
    assert w["ONE"]["vwap"] == 2.0 and doc["as_of"] == 100


def test_snapshot_auth_failure_exits_2_with_one_line(sim, capsys):
    code, out, err = snapshot(capsys, "--url", sim.url("vantafin", api_key=None), "--api-key", "vf-live-WRONG",
                              "--duration", "5", "--windows", "60")
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "authentication failed" in err
    assert "WRONG" not in err


def test_snapshot_unreachable_exits_1_with_reason(capsys):
    code, out, err = snapshot(capsys, "--url", "ws://127.0.0.1:9/v1/stocks", "--api-key", "k",
                              "--duration", "0.5", "--windows", "60")
    assert code == 1 and out == ""
    assert "could not connect" in err and "Traceback" not in err


@pytest.mark.parametrize("args,message", [
    (["--windows", "60,abc"], "not a whole number"),
    (["--windows", "60", "--duration", "0"], "positive"),
    (["--feed", "sfox", "--windows", "60"], "needs --subscribe"),
])
def test_snapshot_bad_arguments_exit_1_with_a_clear_message(args, message, capsys):
    base = ["--url", "ws://127.0.0.1:9/x", "--duration", "1"]
    code, out, err = snapshot(capsys, *base, *args)
    assert code == 1 and message in err and "Traceback" not in err


def test_snapshot_sfox_csv(sim, capsys):
    code, out, err = snapshot(capsys, "--feed", "sfox", "--url", sim.url("sfox"), "--api-key", "sim-key",
                              "--subscribe", "ticker.sfox.btcusd", "--duration", "1.5", "--windows", "300",
                              "--format", "csv")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "window,symbol,open,high,low,close,volume,vwap,count"
    assert lines[1].startswith("300,btcusd,")


def test_every_command_has_help_with_examples():
    for cmd in ("watch", "snapshot", "simulate", "bench", "record", "replay", "export", "relay"):
        r = subprocess.run([sys.executable, "-m", "fastfeed.cli", cmd, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "examples:" in r.stdout
    r = subprocess.run([sys.executable, "-m", "fastfeed.cli", "--help"], capture_output=True, text=True)
    for cmd in ("watch", "simulate", "snapshot", "bench", "record", "replay", "export", "relay"):
        assert cmd in r.stdout


def test_watch_renders_headlessly_and_exits(sim):
    r = subprocess.run(
        [sys.executable, "-m", "fastfeed.cli", "watch", "--url", sim.url("vantafin", api_key=None),
         "--api-key", "sim-key", "--duration", "2", "--refresh", "0.3", "--top", "3"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "Top gainers" in r.stdout and "Volume leaders" in r.stdout and "bars/s" in r.stdout
    assert "sim-key" not in r.stdout + r.stderr
