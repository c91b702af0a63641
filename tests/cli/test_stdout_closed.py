"""A reader that closes stdout early (``fastfeed replay FILE | head``): exit 0, nothing on stderr.

Each command runs in its own process with a pipe as stdout whose read end is closed before
the command writes anything, so every write meets a broken pipe, deterministically.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fastfeed.recording import Writer

T0 = 1_700_000_000


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipe") / "day.ffr"
    w = Writer(path, feed="vantafin", url="ws://127.0.0.1:9/v1/stocks",
               meta={"topics": ["LS.*"], "engine": {"windows": [60], "depth": 60, "capacity": 4096,
                                                   "max_future_skew": 5.0}},
               start_ns=T0 * 10**9)
    w.connected(T0 * 10**9)
    for s in range(T0, T0 + 3):  # 3 seconds of 3,000 tickers: a document far larger than a pipe
        bars = [{"type": "live_quote_second", "ticker": f"T{i}", "open": 10.0, "high": 11.0, "low": 9.0,
                 "close": 10.5, "volume": 100, "timestamp": s * 1000} for i in range(3000)]
        w.message(json.dumps(bars).encode(), (s + 1) * 10**9)
    w.close()
    return str(path)


def run_with_stdout_closed(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, "-m", "fastfeed.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first write
    err = proc.stderr.read()
    proc.stderr.close()
    return subprocess.CompletedProcess(proc.args, proc.wait(timeout=120), b"", err)


@pytest.mark.parametrize("extra", [[], ["--format", "csv"], ["--format", "table"], ["--check"]],
                         ids=["json", "csv", "table", "check"])
def test_replay_into_a_closed_pipe_exits_0_quietly(recording, extra):
    r = run_with_stdout_closed("replay", recording, *extra)
    assert (r.returncode, r.stderr.decode()) == (0, "")


def test_help_into_a_closed_pipe_exits_0_quietly():
    r = run_with_stdout_closed("snapshot", "--help")
    assert (r.returncode, r.stderr.decode()) == (0, "")


def test_replay_to_an_open_pipe_still_writes_everything(recording):
    out = subprocess.run([sys.executable, "-m", "fastfeed.cli", "replay", recording],
                         capture_output=True, timeout=120)
    assert out.returncode == 0 and out.stderr == b""
    assert len(json.loads(out.stdout)["windows"]["60"]) == 3000
