"""The README's "one feed handler, many strategies" commands run as written (on a free
port and a segment name of this test's own, in a scratch directory)."""
from __future__ import annotations

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys

from fastfeed.share.layout import shm_path

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def _block() -> str:
    text = README.read_text()
    m = re.search(r"<!-- serve-example[^>]*-->\n```bash\n(.*?)```", text, re.S)
    assert m, "the serve example block is missing from README.md"
    return m.group(1)


def _commands(block: str) -> tuple[list[str], str]:
    """The background commands (lines ending in ``&``) and the foreground rest."""
    background, rest = [], []
    for line in block.splitlines(keepends=True):
        if not rest and line.rstrip().endswith("&"):
            background.append(line.rstrip()[:-1].strip())
        else:
            rest.append(line)
    return background, "".join(rest)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readme_serve_example_runs_as_written(tmp_path, shm_name):
    background, strategy = _commands(_block())
    assert len(background) == 2 and background[0].startswith("fastfeed simulate") \
        and background[1].startswith("fastfeed serve") and strategy.startswith("python -c")
    port = str(_free_port())

    def adapt(cmd: str) -> str:
        return cmd.replace("8765", port).replace("'market'", repr(shm_name)).replace("--share market", f"--share {shm_name}")

    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    sim_cmd = adapt(background[0]) + f" --port {port}"  # the default port 8765 may be taken here
    started = []
    try:
        for cmd in (sim_cmd, adapt(background[1])):
            # exec: the shell becomes the command, so that its pid is the command's
            started.append(subprocess.Popen("exec " + cmd, shell=True, cwd=tmp_path, env=env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        r = subprocess.run(adapt(strategy), shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("T=")]
        assert len(lines) == 5 and all(re.match(r"T=\d+: \d+ instruments, volume leader \S+ vwap [\d.]+$", ln)
                                       for ln in lines), r.stdout
        serve = started[1]
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0, serve.stderr.read()
        assert not os.path.exists(shm_path(shm_name))
        assert any((tmp_path / "journal").iterdir())
    finally:
        for p in reversed(started):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
