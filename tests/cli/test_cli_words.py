"""Errors on the command line speak the command line: option names (``--api-key``,
``--url``, ``--subscribe``, ``--windows``, ``--speed``), never the Python API's words
(``api_key=``, ``depth``) or exception class names, and always one line."""
from __future__ import annotations

import re
import socket

import pytest

from fastfeed.cli import main
from fastfeed.feeds.registry import FEEDS

PYTHON_WORDS = re.compile(r"[A-Z]\w*(Error|Exception)\b|\b(api_key|url)=|\bdepth\b|Traceback|\[Errno")


@pytest.fixture(autouse=True)
def no_keys(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # nothing a command might write lands in the repository
    for f in FEEDS.values():
        monkeypatch.delenv(f.api_key_env, raising=False)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fails(capsys, *argv: str) -> str:
    """The one stderr line of a failing command (exit 1)."""
    assert main(list(argv)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert not PYTHON_WORDS.search(err), err
    return err


def test_no_key_and_no_url_names_the_options(capsys):
    err = fails(capsys, "snapshot", "--duration", "1")
    assert "--api-key" in err and "--url" in err and "VANTAFIN_API_KEY" in err
    err = fails(capsys, "record", "--feed", "massive", "--out", "x.ffr", "--duration", "1")
    assert "--api-key" in err and "MASSIVE_API_KEY" in err


def test_sfox_without_topics_names_subscribe(capsys):
    err = fails(capsys, "snapshot", "--feed", "sfox", "--url", "ws://127.0.0.1:9/ws", "--duration", "1")
    assert "--subscribe ticker.sfox.btcusd" in err


@pytest.mark.parametrize("command", [
    ["snapshot", "--url", "ws://127.0.0.1:9/v1/stocks", "--duration", "1"],
    ["record", "--url", "ws://127.0.0.1:9/v1/stocks", "--out", "x.ffr", "--duration", "1"],
], ids=["snapshot", "record"])
def test_a_window_too_long_is_the_longest_window(capsys, command):
    err = fails(capsys, *command, "--windows", "60,100000")
    assert err.startswith("fastfeed: --windows: the longest window may be at most") and "100000" in err


def test_replay_bad_speed_and_window_name_the_option(capsys, tmp_path):
    from fastfeed.recording import Writer

    path = tmp_path / "empty.ffr"
    Writer(path, feed="vantafin", url="ws://127.0.0.1:9/v1/stocks").close()
    assert fails(capsys, "replay", str(path), "--speed", "fast").startswith("fastfeed: --speed: ")
    assert "longest window" in fails(capsys, "replay", str(path), "--windows", "100000")


def test_os_errors_read_as_sentences(capsys, tmp_path):
    assert fails(capsys, "replay", str(tmp_path)) == f"fastfeed: {tmp_path}: Is a directory"
    out = tmp_path / "no-such-dir" / "x.ffr"
    err = fails(capsys, "record", "--url", "ws://127.0.0.1:9/v1/stocks", "--out", str(out), "--duration", "1")
    assert err == f"fastfeed: {out}: No such file or directory"


def test_a_refused_connection_reads_as_a_sentence(capsys):
    url = f"ws://127.0.0.1:{_closed_port()}/v1/stocks"
    err = fails(capsys, "snapshot", "--url", url, "--api-key", "k", "--duration", "0.5", "--windows", "60")
    assert err.startswith(f"fastfeed: could not connect to {url} within 0.5 s") and "Connection refused" in err


def test_a_url_that_is_not_a_websocket(capsys):
    err = fails(capsys, "snapshot", "--url", "http://127.0.0.1:9/v1/stocks", "--api-key", "k",
                "--duration", "0.5", "--windows", "60")
    assert "not a ws:// or wss:// URL" in err
