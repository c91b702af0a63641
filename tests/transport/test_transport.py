"""Transport over loopback against the simulator: one test per transport rule of docs/PROTOCOLS.md §4.

No timings are asserted: waits are "until a condition holds" with generous ceilings.
"""
from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import ssl
import subprocess
from typing import Any, Callable, Optional

import numpy as np
import pytest

from fastfeed.simulator import Faults, SimConfig, Simulator
from fastfeed.engine.stats import Stats
from fastfeed.transport import Connection, ConnectionRejected, mask_secrets, mask_url
from waiting import until

pytestmark = pytest.mark.timeout(60)


class AuthError(Exception):
    pass


class Rec:
    """A trivial Session: sends fixed messages on connect, records everything."""

    def __init__(self, on_connect: tuple[bytes, ...] = (b'{"action":"subscribe","params":"LS.*"}',),
                 raise_every: int = 0) -> None:
        self.fatal: Optional[BaseException] = None
        self.on_connect = on_connect
        self.raise_every = raise_every
        self.raw: list[bytes] = []
        self.recv_ns: list[int] = []
        self.connected = 0
        self.disconnects: list[str] = []
        self.invalid = 0

    def on_connected(self, send: Callable[[bytes], Any]) -> None:
        self.connected += 1
        for m in self.on_connect:
            send(m)

    def on_message(self, payload: Any, recv_ns: int) -> None:
        self.raw.append(bytes(payload))
        self.recv_ns.append(recv_ns)
        if self.raise_every and len(self.raw) % self.raise_every == 0:
            raise RuntimeError("session bug")
        try:
            obj = json.loads(self.raw[-1])
        except ValueError:
            self.invalid += 1
            return
        if isinstance(obj, dict) and obj.get("status") == "auth_failed":
            self.fatal = AuthError("authentication failed")

    def on_disconnected(self, reason: str) -> None:
        self.disconnects.append(reason)

    def bars(self) -> list[tuple]:
        out = []
        for raw in self.raw:
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            for o in obj if isinstance(obj, list) else [obj]:
                if isinstance(o, dict) and o.get("type") == "live_quote_second" and o.get("ticker") != "BAD":
                    out.append((o["ticker"], o["timestamp"] // 1000, o["open"], o["high"], o["low"],
                                o["close"], float(o["volume"])))
        return out


def truth(sim: Simulator) -> list[tuple]:
    a = sim.sent_bars()
    return [(str(r["symbol"]), int(r["second"]), float(r["open"]), float(r["high"]), float(r["low"]),
             float(r["close"]), float(r["volume"])) for r in a]


def cfg(**kw: Any) -> SimConfig:
    faults = kw.pop("faults", {})
    base = dict(n_tickers=40, trade_fraction=0.6, bars_per_frame=8, max_rate=True, max_seconds=30,
                start_second=1_700_000_000, faults=Faults(**faults))
    base.update(kw)
    return SimConfig(**base)


def producers_done(sim: Simulator) -> bool:
    # every connection subscribed and its (bounded) producer has finished
    return bool(sim.connections) and all(c._producer is not None and c._producer.done() for c in sim.connections)


async def run_until(sim: Optional[Simulator], session: Rec, pred: Callable[[Connection], bool],
                    expect_error: bool = False, timeout: float = 20.0, **ckw: Any):
    events: list[tuple[str, dict]] = []
    ckw.setdefault("backoff_initial", 0.01)
    ckw.setdefault("backoff_max", 0.05)
    url = ckw.pop("url", None) or sim.url("vantafin")
    conn = Connection(url, session, on_event=lambda n, i: events.append((n, i)), seed=1, **ckw)
    task = asyncio.ensure_future(conn.run())
    try:
        await until(lambda: pred(conn) or task.done(), timeout)
    finally:
        await conn.stop()
        try:
            await asyncio.wait_for(task, 5)
        except Exception:
            if not expect_error:
                raise
    return conn, events, task


def names(events: list[tuple[str, dict]]) -> list[str]:
    return [n for n, _ in events]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- delivery & ground truth ---------------------------------------------------------------


def test_every_bar_sent_is_delivered_in_order_and_counted():
    async def main():
        async with Simulator(cfg()) as sim:
            s, st = Rec(), Stats()
            done = lambda c: producers_done(sim) and len(s.bars()) == len(sim.sent_bars())  # noqa: E731
            conn, events, _ = await run_until(sim, s, done, stats=st)
            assert s.bars() == truth(sim)
            assert len(truth(sim)) > 300
            assert st.messages == len(s.raw) and st.frames >= st.messages
            assert st.bytes == sum(len(r) for r in s.raw)
            assert names(events)[0] == "connected" and "reconnecting" not in names(events)
            assert all(isinstance(n, int) and n > 1.6e18 for n in s.recv_ns)
            assert conn.connects == 1 and st.reconnects == 0

    run(main())


def test_one_bar_per_frame_is_a_bare_object():
    async def main():
        async with Simulator(cfg(bars_per_frame=1, max_seconds=5)) as sim:
            s = Rec()
            await run_until(sim, s, lambda c: producers_done(sim) and len(s.bars()) == len(sim.sent_bars()))
            assert s.bars() == truth(sim)
            data = [r for r in s.raw if b"live_quote_second" in r]
            assert data and all(r.startswith(b"{") for r in data)

    run(main())


def test_continuation_frames_are_reassembled():
    async def main():
        async with Simulator(cfg(faults=dict(fragment_every=2, fragment_size=37))) as sim:
            s = Rec()
            conn, _, _ = await run_until(
                sim, s, lambda c: producers_done(sim) and len(s.bars()) == len(sim.sent_bars()))
            assert s.bars() == truth(sim)
            assert sim.connections[0].data_frames > 10

    run(main())


def test_oversize_fragmented_message_closes_1009_and_reconnects():
    async def main():
        c = cfg(bars_per_frame=40, faults=dict(fragment_every=1, fragment_size=500, connections=1))
        async with Simulator(c) as sim:
            s = Rec()
            conn, events, _ = await run_until(sim, s, lambda c: c.connects >= 2, max_message_size=2000)
            kinds = [i["kind"] for n, i in events if n == "protocol_error"]
            assert "message_too_big" in kinds
            err = [i for n, i in events if n == "protocol_error"][0]
            assert err["close_code"] == 1009
            await until(lambda: sim.connections[0].close_code_received is not None)
            assert sim.connections[0].close_code_received == 1009

    run(main())


# --- protocol errors -----------------------------------------------------------------------


@pytest.mark.parametrize("fault,kind", [("rsv_after", "rsv"), ("invalid_utf8_after", "utf8")])
def test_rsv_bits_and_invalid_utf8_close_1002_then_reconnect(fault, kind):
    async def main():
        async with Simulator(cfg(faults={fault: 3, "connections": 1})) as sim:
            s, st = Rec(), Stats()
            conn, events, _ = await run_until(sim, s, lambda c: c.connects >= 2 and s.connected >= 2, stats=st)
            errs = [i for n, i in events if n == "protocol_error"]
            assert errs and errs[0]["kind"] == kind and errs[0]["close_code"] == 1002
            await until(lambda: sim.connections[0].close_code_received is not None)
            assert sim.connections[0].close_code_received == 1002
            assert st.protocol_errors >= 1 and st.reconnects >= 1
            assert names(events)[:4] == ["connected", "protocol_error", "disconnected", "reconnecting"]
            assert "protocol error" in s.disconnects[0]
            # the bad frame never reached the session; everything before it did
            assert not any(b"rsv" in r or b"\xff" in r for r in s.raw)

    run(main())


def test_binary_frames_are_counted_and_skipped_without_reconnect():
    async def main():
        async with Simulator(cfg(faults=dict(binary_every=2))) as sim:
            s, st = Rec(), Stats()
            conn, events, _ = await run_until(
                sim, s, lambda c: producers_done(sim) and len(s.bars()) == len(sim.sent_bars()), stats=st)
            assert s.bars() == truth(sim)
            n_bin = sim.connections[0].data_frames // 2
            assert st.protocol_errors == n_bin > 0
            assert [i["kind"] for n, i in events if n == "protocol_error"] == ["binary"] * n_bin
            assert conn.connects == 1

    run(main())


def test_garbage_and_malformed_text_is_passed_to_the_session_untouched():
    async def main():
        async with Simulator(cfg(faults=dict(garbage_every=3, malformed_every=2))) as sim:
            s = Rec()
            await run_until(sim, s, lambda c: producers_done(sim) and len(s.bars()) == len(sim.sent_bars()))
            assert s.bars() == truth(sim)
            assert s.invalid == sim.connections[0].garbage_sent > 0
            assert sum(r.count(b'"BAD"') for r in s.raw) == sim.connections[0].malformed_sent > 0

    run(main())


def test_session_exceptions_are_caught_and_counted():
    async def main():
        async with Simulator(cfg(max_seconds=10)) as sim:
            s, st = Rec(raise_every=2), Stats()
            conn, _, _ = await run_until(
                sim, s, lambda c: producers_done(sim) and len(s.bars()) == len(sim.sent_bars()), stats=st)
            assert st.session_errors == len(s.raw) // 2 > 0
            assert conn.connects == 1

    run(main())


# --- connection loss -------------------------------------------------------------------------


def test_server_close_is_answered_then_reconnect_and_resubscribe_loses_nothing():
    async def main():
        async with Simulator(cfg(faults=dict(drop_after=5, drop_mode="close", connections=1))) as sim:
            s, st = Rec(), Stats()
            done = lambda c: (len(sim.connections) >= 2 and producers_done(sim)  # noqa: E731
                              and len(s.bars()) == len(sim.sent_bars()))
            conn, events, _ = await run_until(sim, s, done, stats=st)
            assert sim.connections[0].close_code_received == 1001  # our answer echoes the code
            assert s.connected == 2 and len(s.disconnects) >= 1 and "1001" in s.disconnects[0]
            assert names(events)[:3] == ["connected", "disconnected", "reconnecting"]
            assert st.reconnects == 1
            # graceful close: everything written before the CLOSE arrived; the new
            # connection resumed after the last second sent
            assert s.bars() == truth(sim)
            c0, c1 = sim.connections[:2]
            assert c1.first_second == c0.last_second + 1
            assert [m for m in sim.connections[1].received] == [{"action": "subscribe", "params": "LS.*"}]

    run(main())


def test_abrupt_drop_without_close_reconnects():
    async def main():
        async with Simulator(cfg(faults=dict(drop_after=5, drop_mode="abrupt", connections=1))) as sim:
            s = Rec()
            conn, events, _ = await run_until(sim, s, lambda c: c.connects >= 2 and s.connected >= 2)
            assert sim.connections[0].close_code_received is None
            assert "reconnecting" in names(events)
            got = set(s.bars())
            assert got <= set(truth(sim))  # nothing invented; the lost tail is the gap

    run(main())


def test_silent_connection_is_declared_dead_and_replaced():
    async def main():
        c = cfg(faults=dict(stall_after=2, stall_seconds=5.0, connections=1))
        async with Simulator(c) as sim:
            s = Rec()
            conn, events, _ = await run_until(sim, s, lambda c: c.connects >= 2,
                                              ping_interval=0.1, idle_timeout=0.5)
            disc = [i for n, i in events if n == "disconnected"]
            assert disc and disc[0]["reason"].startswith("idle timeout")
            assert sim.connections[0].pongs_received == 0  # the stalled server never read our pings

    run(main())


def test_pings_keep_a_quiet_connection_alive():
    async def main():
        async with Simulator(cfg()) as sim:
            s = Rec(on_connect=())  # no subscription: the server is silent
            conn, events, _ = await run_until(sim, s, lambda c: _pongs(c) >= 6,
                                              ping_interval=0.05, idle_timeout=1.0)
            assert conn.connects == 1 and "reconnecting" not in names(events)
            assert sim.connections[0].data_frames == 0

    run(main())


def _pongs(conn: Connection) -> int:
    ln = conn.last_listener
    return 0 if ln is None else ln.pongs


def test_server_pings_are_answered():
    async def main():
        async with Simulator(cfg()) as sim:
            s = Rec(on_connect=())
            events: list = []
            conn = Connection(sim.url(), s, on_event=lambda n, i: events.append(n))
            task = asyncio.ensure_future(conn.run())
            await until(lambda: len(sim.connections) == 1 and sim.connections[0].transport is not None)
            sim.connections[0].transport.send_ping(b"hello")
            await until(lambda: sim.connections[0].pongs_received == 1)
            assert conn.last_listener.pings == 1
            await conn.stop()
            await task

    run(main())


# --- backoff, fatal errors, stop -----------------------------------------------------------


def test_backoff_first_retry_fast_doubles_and_is_capped():
    conn = Connection("ws://127.0.0.1:9/x", Rec(), backoff_initial=0.05, backoff_max=1.0, seed=3)
    d = [conn.backoff_delay(a) for a in range(12)]
    assert 0.025 <= d[0] <= 0.05
    for a, x in enumerate(d):
        base = min(1.0, 0.05 * 2 ** a)
        assert 0.5 * base <= x <= base
    assert max(d) <= 1.0 and d[-1] >= 0.5


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_unreachable_server_retries_with_growing_capped_delays():
    async def main():
        s = Rec()
        url = f"ws://127.0.0.1:{_free_port()}/v1/stocks?apiKey=k-123456"
        ev: list = []
        c = Connection(url, s, on_event=lambda n, i: ev.append((n, i)), backoff_initial=0.005,
                       backoff_max=0.02, seed=2)
        t = asyncio.ensure_future(c.run())
        await until(lambda: sum(1 for n, _ in ev if n == "reconnecting") >= 7)
        await c.stop()
        await t
        delays = [i["delay"] for n, i in ev if n == "reconnecting"]
        attempts = [i["attempt"] for n, i in ev if n == "reconnecting"]
        assert attempts[:7] == list(range(1, 8))
        assert delays[0] <= 0.005 and max(delays) <= 0.02
        assert "connected" not in [n for n, _ in ev]
        assert c.last_error and "k-123456" not in c.last_error

    run(main())


def test_auth_failure_is_final_when_the_session_says_so():
    async def main():
        async with Simulator(cfg()) as sim:
            s = Rec()
            events: list = []
            conn = Connection(sim.url(api_key="wrong-key-42"), s, on_event=lambda n, i: events.append(n),
                              backoff_initial=0.01)
            with pytest.raises(AuthError):
                await asyncio.wait_for(conn.run(), 20)
            assert conn.connects == 1 and "reconnecting" not in events
            assert sim.connections[0].close_code_received == 1008

    run(main())


def test_close_1008_is_final_even_if_the_session_does_not_notice():
    async def main():
        async with Simulator(cfg()) as sim:
            s = Rec(on_connect=(b'{"type":"authenticate","apiKey":"nope-nope","enterprise":"true"}',))
            conn = Connection(sim.url("sfox"), s, backoff_initial=0.01)
            with pytest.raises(ConnectionRejected) as ei:
                await asyncio.wait_for(conn.run(), 20)
            assert "1008" in str(ei.value) and "nope-nope" not in str(ei.value)
            assert conn.connects == 1
            assert b"invalid api key" in s.raw[0]

    run(main())


def test_stop_while_backing_off_returns_promptly():
    async def main():
        events = []
        c = Connection(f"ws://127.0.0.1:{_free_port()}/x", Rec(), backoff_initial=30, backoff_max=30,
                       on_event=lambda kind, info: events.append(kind))
        t = asyncio.ensure_future(c.run())
        await until(lambda: "reconnecting" in events)  # now in its 30 s back-off
        await c.stop()
        await asyncio.wait_for(t, 10)

    run(main())


def test_read_buffer_limit_recycles_the_connection():
    async def main():
        async with Simulator(cfg(n_tickers=400, trade_fraction=1.0, bars_per_frame=400, max_seconds=100000)) as sim:
            s = Rec()
            conn, events, _ = await run_until(sim, s, lambda c: c.connects >= 2,
                                              read_buffer_limit=64 * 1024, ping_interval=0.1)
            disc = [i["reason"] for n, i in events if n == "disconnected"]
            assert disc and disc[0].startswith("read buffer grew")

    run(main())


# --- the API key never shows ---------------------------------------------------------------


def test_api_key_never_in_logs_repr_events_or_errors(caplog):
    key = "SeCrEt-Key-987654"
    caplog.set_level(1)  # everything, picows' debug upgrade dumps included

    async def main():
        async with Simulator(cfg(api_key=key, max_seconds=3)) as sim:
            s = Rec(on_connect=(b'{"action":"subscribe","params":"LS.AAPL"}',))
            url = sim.url(api_key=key)
            assert key in url
            conn, events, _ = await run_until(sim, s, lambda c: len(s.raw) >= 3)
            text = repr(conn) + str(events) + conn.display_url
            bad = Connection(f"ws://127.0.0.1:{_free_port()}/v1/stocks?apiKey={key}", Rec(),
                             backoff_initial=0.001, backoff_max=0.002)
            t = asyncio.ensure_future(bad.run())
            await until(lambda: bad.last_error is not None)
            await bad.stop()
            await t
            text += repr(bad) + str(bad.last_error)
            wrong = Connection(sim.url(api_key=key + "x"), Rec(on_connect=()))
            with pytest.raises(Exception) as ei:
                await asyncio.wait_for(wrong.run(), 20)
            text += str(ei.value) + repr(ei.value)
            return text

    text = run(main())
    assert "apiKey=***" in text
    assert key not in text
    assert key not in caplog.text
    with pytest.raises(ValueError) as ei:
        Connection(f"http://x/?apiKey={key}", Rec())
    assert key not in str(ei.value)


def test_masking_helpers():
    assert mask_url("wss://h/v1/stocks?apiKey=abc&x=1") == "wss://h/v1/stocks?apiKey=***&x=1"
    assert mask_url("wss://h/?APIKEY=abc") == "wss://h/?APIKEY=***"
    assert mask_secrets("key abcdef here", ["abcdef"]) == "key *** here"


# --- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl not available")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(d / "k.pem"), "-out", str(d / "c.pem")],
        check=True, capture_output=True)
    return str(d / "c.pem"), str(d / "k.pem")


def test_wss_is_verified_by_default_and_works_with_a_trusted_context(cert):
    crt, key = cert
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(crt, key)

    async def main():
        async with Simulator(cfg(ssl_context=server_ctx, max_seconds=5)) as sim:
            url = sim.url()
            assert url.startswith("wss://")
            # default context: the self-signed certificate is rejected, we keep retrying
            s0 = Rec()
            c0, ev0, _ = await run_until(sim, s0, lambda c: c.last_error is not None, url=url)
            assert c0.connects == 0 and "CERTIFICATE" in c0.last_error.upper()
            client_ctx = ssl.create_default_context(cafile=crt)
            s = Rec()
            await run_until(sim, s, lambda c: producers_done(sim) and len(s.bars()) == len(sim.sent_bars()),
                            url=url, ssl_context=client_ctx)
            assert s.bars() == truth(sim) and len(s.bars()) > 0

    run(main())


def test_listener_utf8_check_matches_python():
    from fastfeed._ext.listener import utf8_valid

    rng = np.random.default_rng(5)
    samples = [b"", b"plain ascii " * 10, "€ 𝄞 é".encode() * 9, b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
               b"\xc0\x80", b"\xe0\x80\xaf", b"a" * 31 + b"\xc3", b"a" * 64 + "é".encode()]
    for _ in range(3000):
        n = int(rng.integers(0, 80))
        if rng.random() < 0.5:
            b = bytes(rng.integers(0, 256, n, dtype=np.uint8))
        else:
            b = "".join(chr(int(c)) for c in rng.integers(32, 0x10FFFF, n // 4 + 1)
                        if not 0xD800 <= int(c) <= 0xDFFF).encode()
            if rng.random() < 0.3 and b:
                i = int(rng.integers(0, len(b)))
                b = b[:i] + bytes([int(rng.integers(0x80, 0x100))]) + b[i + 1:]
        samples.append(b"x" * int(rng.integers(0, 40)) + b)
    for b in samples:
        try:
            b.decode("utf-8")
            ok = True
        except UnicodeDecodeError:
            ok = False
        assert utf8_valid(b) == ok, b


def test_stats_survive_reconnects_and_logs_are_rate_limited(caplog):
    caplog.set_level(logging.WARNING, logger="fastfeed.transport")

    async def main():
        async with Simulator(cfg(faults=dict(binary_every=1))) as sim:
            s, st = Rec(), Stats()
            await run_until(sim, s, lambda c: producers_done(sim) and len(s.bars()) == len(sim.sent_bars()),
                            stats=st)
            return st, sim.connections[0].data_frames

    st, n = run(main())
    assert st.protocol_errors == n > 5
    lines = [r for r in caplog.records if "binary" in r.getMessage()]
    assert 1 <= len(lines) < n


# --- hand-crafted frames ------------------------------------------------------------------


def _raw_case(frames: list[bytes], pred: Callable[[Rec, list], bool]):
    async def main():
        async with Simulator(cfg()) as sim:
            s, events = Rec(on_connect=()), []
            conn = Connection(sim.url(), s, on_event=lambda n, i: events.append((n, i)),
                              backoff_initial=0.01, backoff_max=0.02)
            task = asyncio.ensure_future(conn.run())
            await until(lambda: len(s.raw) >= 2)  # connected + auth_success
            sim.connections[0].send_raw(b"".join(frames))
            await until(lambda: pred(s, events))
            await conn.stop()
            await task
            return s, events, sim

    return run(main())


def test_control_frames_between_fragments_and_fragmented_binary_skipped():
    from fastfeed.simulator.wire import ws_frame

    frames = [ws_frame(b'{"a":', opcode=1, fin=False), ws_frame(b"hi", opcode=9),
              ws_frame(b'1}', opcode=0, fin=True),
              ws_frame(b"\x00\x01", opcode=2, fin=False), ws_frame(b"\x02", opcode=0, fin=True),
              ws_frame(b'{"b":2}')]
    s, events, sim = _raw_case(frames, lambda s, ev: s.raw[-1] == b'{"b":2}')
    assert s.raw[2:] == [b'{"a":1}', b'{"b":2}']
    assert [i["kind"] for n, i in events if n == "protocol_error"] == ["binary"]
    assert sim.connections[0].pongs_received == 1 and len(sim.connections) == 1


@pytest.mark.parametrize("frames", [
    [b"\x80\x02{}"],                                           # continuation with nothing to continue
    [b"\x01\x02[1", b"\x81\x02{}"],                           # new text inside a fragmented message
], ids=["orphan_continuation", "text_inside_fragmented"])
def test_fragmentation_errors_close_1002(frames):
    s, events, sim = _raw_case(frames, lambda s, ev: any(n == "reconnecting" for n, _ in ev))
    errs = [i for n, i in events if n == "protocol_error"]
    assert errs[0]["kind"] == "fragment" and errs[0]["close_code"] == 1002
    assert sim.connections[0].close_code_received == 1002


def test_http_401_on_upgrade_is_final():
    from picows import WSUpgradeResponse, WSUpgradeResponseWithListener, ws_create_server

    async def main():
        def factory(request):
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(401, b"bad key"), None)

        server = await ws_create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            conn = Connection(f"ws://127.0.0.1:{port}/v1/stocks?apiKey=my-secret-1", Rec(), backoff_initial=0.01)
            with pytest.raises(ConnectionRejected) as ei:
                await asyncio.wait_for(conn.run(), 10)
            assert "401" in str(ei.value) and "my-secret-1" not in str(ei.value)
        finally:
            server.close()

    run(main())


def test_stop_before_run_returns_at_once():
    async def main():
        c = Connection(f"ws://127.0.0.1:{_free_port()}/x", Rec())
        await c.stop()
        await asyncio.wait_for(c.run(), 5)
        assert c.connects == 0

    run(main())


def test_small_socket_receive_buffer_still_delivers_everything():
    async def main():
        async with Simulator(cfg(bars_per_frame=40)) as sim:
            s = Rec()
            await run_until(sim, s, lambda c: producers_done(sim) and len(s.bars()) == len(sim.sent_bars()),
                            recv_buffer_size=4096)
            assert s.bars() == truth(sim)

    run(main())


@pytest.mark.timeout(600)
@pytest.mark.parametrize("seconds", [400, pytest.param(6000, marks=pytest.mark.slow)])
def test_soak_many_reconnects_with_every_fault_exact_accounting(seconds):
    """A graceful drop every 7 data frames (200 / 3000 reconnects) with fragments, garbage,
    binary frames and corrections on every connection: every bar sent is delivered exactly
    once, in order, and the counters add up."""
    faults = dict(drop_after=7, fragment_every=3, fragment_size=41, garbage_every=5, binary_every=4,
                  malformed_every=6, correction_every=2)

    async def main():
        async with Simulator(cfg(n_tickers=60, max_seconds=seconds, faults=faults)) as sim:
            s, st = Rec(), Stats()
            done = lambda c: (producers_done(sim) and sim.high_water >= sim.start_second + seconds - 1  # noqa: E731
                              and len(s.bars()) == len(sim.sent_bars()))
            conn, events, _ = await run_until(sim, s, done, stats=st, backoff_initial=0.001,
                                              backoff_max=0.002, stable_after=0.0, timeout=300)
            assert len(sim.connections) > seconds // 3
            assert s.bars() == truth(sim)
            # a reconnect counts once the client completed the handshake; the server counts
            # connections it accepted, so a handshake still in flight when the client is told
            # to stop (or cut by the next drop) can be on the server's side only
            assert len(sim.connections) - 3 <= st.reconnects <= len(sim.connections) - 1
            assert conn.last_listener is not None

    run(main())


def test_a_payload_kept_past_the_call_is_released_not_dangling():
    class Keeper(Rec):
        def __init__(self):
            super().__init__()
            self.kept = []

        def on_message(self, payload, recv_ns):
            self.kept.append(payload)
            super().on_message(payload, recv_ns)

    async def main():
        async with Simulator(cfg(max_seconds=3)) as sim:
            s = Keeper()
            await run_until(sim, s, lambda c: len(s.raw) >= 5)
            with pytest.raises(ValueError):
                bytes(s.kept[0])
            assert s.raw[0].startswith(b'{"type":"status"')

    run(main())


# --- limits and refusals the transport must count or honour ------------------------


@pytest.mark.parametrize("size", [100_000, 8_000_000])  # payload read whole / refused from its header
def test_single_frame_over_the_limit_is_counted_by_kind_and_reconnects(size):
    async def main():
        c = cfg(faults=dict(oversize_after=3, oversize_bytes=size, connections=1))
        async with Simulator(c) as sim:
            s = Rec()
            stats = Stats()
            conn, events, _ = await run_until(sim, s, lambda c: c.connects >= 2, max_message_size=64 * 1024,
                                              stats=stats)
            assert stats.protocol_errors == 1
            assert dict(stats.protocol_errors_by_kind) == {"message_too_big": 1}
            err = [i for n, i in events if n == "protocol_error"]
            assert len(err) == 1 and err[0]["kind"] == "message_too_big" and err[0]["close_code"] == 1009
            assert not any(len(m) > 64 * 1024 for m in s.raw)  # never handed to the session

    run(main())


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_on_a_refused_upgrade_delays_the_next_attempt(status, caplog):
    async def main():
        c = cfg(faults=dict(reject_status=status, retry_after=1, connections=1))
        async with Simulator(c) as sim:
            conn, events, _ = await run_until(sim, Rec(), lambda c: c.connects >= 1, backoff_max=5.0)
            delays = [i["delay"] for n, i in events if n == "reconnecting"]
            assert sim.rejected == 1 and len(delays) == 1
            assert 1.0 <= delays[0] <= 5.0  # at least Retry-After, not the 0.01 s first retry

    with caplog.at_level(logging.WARNING, logger="fastfeed.transport"):
        run(main())
    assert any("retry after 1 s" in r.getMessage() for r in caplog.records)


def test_retry_after_is_capped_at_backoff_max(caplog):
    async def main():
        c = cfg(faults=dict(reject_status=429, retry_after=3600, connections=1))
        async with Simulator(c) as sim:
            conn, events, _ = await run_until(sim, Rec(), lambda c: c.connects >= 1, backoff_max=0.2)
            delays = [i["delay"] for n, i in events if n == "reconnecting"]
            assert delays == [0.2]

    with caplog.at_level(logging.WARNING, logger="fastfeed.transport"):
        run(main())
    assert any("capped at backoff_max" in r.getMessage() for r in caplog.records)


def test_retry_after_header_forms():
    from fastfeed.transport.connection import retry_after_seconds

    assert retry_after_seconds({"Retry-After": "7"}) == 7.0
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}) == 0.0


class Refusable(Rec):
    """A session that turns a refusal into its own fatal error (as the feed sessions do)."""

    def __init__(self) -> None:
        super().__init__()
        self.refusals: list[str] = []

    def on_refused(self, reason: str) -> None:
        self.refusals.append(reason)
        self.fatal = AuthError(reason)


def test_refusals_reach_the_session_which_decides_the_error():
    async def main():
        async with Simulator(cfg(faults=dict(reject_status=403))) as sim:
            s = Refusable()
            conn = Connection(sim.url("vantafin", "my-secret-2"), s, backoff_initial=0.01)
            with pytest.raises(AuthError):
                await asyncio.wait_for(conn.run(), 10)
            assert s.refusals == ["HTTP 403 on the upgrade"] and sim.rejected == 1
        async with Simulator(cfg(faults=dict(policy_close=True))) as sim:
            s = Refusable()
            conn = Connection(sim.url("vantafin"), s, backoff_initial=0.01)
            with pytest.raises(AuthError):
                await asyncio.wait_for(conn.run(), 10)
            assert s.refusals == ["server closed (1008: policy violation) after connecting"]
            assert len(sim.connections) == 1

    run(main())
