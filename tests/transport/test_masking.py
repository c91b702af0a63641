"""One masking function (``fastfeed.transport.masking.mask_secrets``) behind every place a
key could leave fastfeed: URLs, the connection's repr/errors/logs, the Feed, recording
headers, the feed sessions' logs and state, and the command line's error line. Every
spelling of a key parameter, in any case, is masked the same way everywhere."""
from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from fastfeed import Feed, feeds
from fastfeed.engine import Engine, Stats, Universe
from fastfeed.recording import Reader, Writer
from fastfeed.transport.connection import Connection
from fastfeed.transport.masking import mask_secrets, mask_url

PARAMS = ["apiKey", "apikey", "APIKEY", "api_key", "key", "Key", "token", "TOKEN"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Quiet:
    def on_connected(self, send):
        pass

    def on_message(self, payload, recv_ns):
        pass

    def on_disconnected(self, reason):
        pass


@pytest.mark.parametrize("param", PARAMS)
def test_every_spelling_is_masked_by_the_one_function(param):
    secret = f"S3cret-{param}-4711"
    url = f"wss://h/v1/stocks?x=1&{param}={secret}&y=2"
    want = f"wss://h/v1/stocks?x=1&{param}=***&y=2"
    assert mask_url(url) == mask_secrets(url) == want
    assert mask_secrets(f"failed: {url} (closed)") == f"failed: {want} (closed)"


@pytest.mark.parametrize("param", PARAMS)
def test_connection_feed_and_recording_header_agree(param, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    secret = f"Conn-{param}-0815"
    url = f"ws://127.0.0.1:{_closed_port()}/v1/stocks?{param}={secret}"
    want = mask_url(url)
    assert secret not in want

    conn = Connection(url, Quiet(), backoff_initial=0.001, backoff_max=0.002)

    async def fail_once():
        task = asyncio.ensure_future(conn.run())
        while conn.last_error is None:
            await asyncio.sleep(0.005)
        await conn.stop()
        await task

    asyncio.run(fail_once())
    feed = Feed("vantafin", url=url, windows=(60,))
    path = tmp_path / "h.ffr"
    Writer(path, feed="vantafin", url=url).close()
    with Reader(path) as r:
        header_url = r.header.url
    assert conn.display_url == feed.url == header_url == want
    shown = repr(conn) + conn.last_error + repr(feed) + path.read_bytes().decode("latin-1") + caplog.text
    assert secret not in shown


@pytest.mark.parametrize("param", ["apiKey", "token"])
def test_server_text_echoing_a_key_from_the_url_is_masked_in_the_session(param, caplog):
    """The key travels in the URL only (no ``api_key``); the server's error text repeats it."""
    caplog.set_level(logging.DEBUG)
    secret = f"UrlOnly-{param}-31337"
    url = f"ws://127.0.0.1:9/v1/stocks?{param}={secret}"
    events = []
    session = feeds.make_session("vantafin", Engine(16, (60,)), Universe(16), Stats(), topics=["LS.*"],
                                 api_key=None, on_event=lambda k, i: events.append((k, i)))
    Connection(url, session)  # the transport the session is handed to
    session.on_message(b'{"type":"status","status":"error","message":"key ' + secret.encode()
                       + b' is not valid for LS.*"}', 0)
    assert session.state["last_error"] == "key *** is not valid for LS.*"
    shown = repr(session.state) + repr(events) + caplog.text
    assert "***" in shown and secret not in shown


def test_cli_error_line_never_shows_the_key(capsys, monkeypatch, tmp_path):
    from fastfeed.cli import main

    monkeypatch.chdir(tmp_path)
    secret = "CliKey-token-2718"
    url = f"ws://127.0.0.1:{_closed_port()}/v1/stocks?token={secret}"
    assert main(["snapshot", "--url", url, "--duration", "0.3", "--windows", "60"]) == 1
    err = capsys.readouterr().err
    assert "token=***" in err and secret not in err
