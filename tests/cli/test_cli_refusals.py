"""The real ``fastfeed`` command when the vendor refuses access or stays silent.

Each test runs the installed ``fastfeed`` script in a subprocess against the simulator on
loopback, misbehaving one way, and checks the exit code and stderr exactly: one line, no
traceback, never the key.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from fastfeed.simulator import Faults
from fastfeed.simulator.testing import SimThread

KEY = "sim-key-SECRET-7"


def fastfeed_command() -> str:
    """The ``fastfeed`` console script of this environment (installed by ``pip install -e``)."""
    path = shutil.which("fastfeed", path=os.path.dirname(sys.executable)) or shutil.which("fastfeed")
    assert path, "the fastfeed command is not installed (pip install -e .)"
    return path


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}  # no key from the env
    return subprocess.run([fastfeed_command(), *args], capture_output=True, text=True, timeout=timeout, env=env)


def sim_thread(**kw):
    kw.setdefault("n_tickers", 50)
    kw.setdefault("trade_fraction", 1.0)
    kw.setdefault("speed", 20.0)
    kw.setdefault("api_key", KEY)
    return SimThread(**kw)


def assert_one_line(err: str, expected: str) -> None:
    assert err == expected + "\n", err
    assert "Traceback" not in err and KEY not in err


def test_snapshot_without_key_answered_not_authenticated_exits_2():
    with sim_thread() as sim:
        r = run("snapshot", "--url", sim.url("vantafin", api_key=None), "--duration", "5", "--windows", "60")
    assert r.returncode == 2 and r.stdout == ""
    assert_one_line(r.stderr, "fastfeed: --api-key / VANTAFIN_API_KEY refused: not authenticated; no key was given")


@pytest.mark.parametrize("status", [401, 403])
def test_snapshot_http_refusal_on_upgrade_exits_2(status):
    with sim_thread(faults=Faults(reject_status=status)) as sim:
        r = run("snapshot", "--url", sim.url("vantafin", api_key=None), "--api-key", KEY,
                "--duration", "5", "--windows", "60")
        assert sim.call(lambda s: s.rejected) == 1  # refused once, never retried
    assert r.returncode == 2 and r.stdout == ""
    assert_one_line(r.stderr, f"fastfeed: --api-key / VANTAFIN_API_KEY refused: HTTP {status} on the upgrade")


def test_snapshot_close_1008_after_auth_exits_2():
    with sim_thread(faults=Faults(policy_close=True)) as sim:
        r = run("snapshot", "--url", sim.url("vantafin", api_key=None), "--api-key", KEY,
                "--duration", "5", "--windows", "60")
        assert sim.call(lambda s: len(s.connections)) == 1
    assert r.returncode == 2 and r.stdout == ""
    assert_one_line(r.stderr, "fastfeed: --api-key / VANTAFIN_API_KEY refused: "
                              "server closed (1008: policy violation) after connecting")


@pytest.mark.parametrize("command", ["record", "watch"])
def test_other_commands_exit_2_when_refused(command, tmp_path):
    extra = ["--out", str(tmp_path / "x.ffr")] if command == "record" else ["--refresh", "0.2"]
    with sim_thread(faults=Faults(reject_status=401)) as sim:
        r = run(command, "--url", sim.url("vantafin", api_key=None), "--api-key", KEY, "--duration", "5", *extra)
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines()[-1] == "fastfeed: --api-key / VANTAFIN_API_KEY refused: HTTP 401 on the upgrade"
    assert "Traceback" not in r.stderr and KEY not in r.stdout + r.stderr


def test_snapshot_market_closed_carries_it_and_says_so():
    with sim_thread(market_open=False) as sim:
        r = run("snapshot", "--url", sim.url("vantafin", api_key=None), "--api-key", KEY,
                "--duration", "1.5", "--windows", "60")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["market"] == "closed" and doc["windows"] == {"60": {}} and doc["stats"]["bars"] == 0
    assert_one_line(r.stderr, "fastfeed: no bars: the vendor says the market is closed")


def test_snapshot_market_is_null_when_never_told():
    with sim_thread() as sim:
        r = run("snapshot", "--url", sim.url("vantafin", api_key=None), "--api-key", KEY,
                "--duration", "1.5", "--windows", "60")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    doc = json.loads(r.stdout)
    assert doc["market"] is None and doc["stats"]["bars"] > 0


def test_snapshot_wrong_feed_for_the_url_exits_1_saying_what_arrived():
    with sim_thread() as sim:
        url = sim.url("massive")  # a Massive /stocks socket, the key in the URL
        r = run("snapshot", "--feed", "vantafin", "--url", url, "--duration", "1.5", "--windows", "60")
        port = sim.sim.port
    assert r.returncode == 1 and r.stdout == ""
    # connected, auth_success and the error answering LS.* all arrive in Massive's dialect
    assert_one_line(r.stderr, "fastfeed: no bars: 3 message(s) arrived and none was usable (3 validation); "
                              f"--feed vantafin may not match the URL ws://127.0.0.1:{port}/stocks?apiKey=***")
