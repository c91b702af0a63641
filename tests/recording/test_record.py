"""Recording files: format round trips, crash safety, checksums, writer failure modes."""
from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import fastfeed.recording as rec
import fastfeed.recording.format as fmt
from fastfeed.recording import (
    CONNECTED,
    DISCONNECTED,
    END,
    MESSAGE,
    FormatError,
    Reader,
    Writer,
    read_records,
)
from fastfeed.recording.format import encode_header, encode_record
from fastfeed.transport.masking import mask_url

T0 = 1_700_000_000_000_000_000


def _payload(i: int) -> bytes:
    return (b'[{"type":"live_quote_second","ticker":"T%d","open":1.0,"high":1.5,'
            b'"low":0.5,"close":1.25,"volume":%d,"timestamp":%d}]'
            % (i % 97, i, 1_700_000_000_000 + 1000 * i))


def _write(path, n=50, compression=None, each=True, **kw):
    """A recording; ``each``: the writer writes each record as it comes (one batch per
    record), else everything in one batch."""
    w = Writer(path, feed="vantafin", url="ws://127.0.0.1:1/v1/stocks?apiKey=SECRET",
               compression=compression, start_ns=T0, **kw)
    sync = w.flush if each else (lambda: None)
    w.connected(T0, {"attempt": 1})
    sync()
    for i in range(n):
        w.message(_payload(i), T0 + i * 1000)
        sync()
        if i == n // 2:
            w.disconnected(T0 + i * 1000 + 1, "idle timeout")
            w.connected(T0 + i * 1000 + 2)
            sync()
    w.close()
    return w


def _expected(n=50):
    out = [(CONNECTED, T0)]
    for i in range(n):
        out.append((MESSAGE, T0 + i * 1000))
        if i == n // 2:
            out += [(DISCONNECTED, T0 + i * 1000 + 1), (CONNECTED, T0 + i * 1000 + 2)]
    return out


def test_mask_url_hides_the_key():
    assert mask_url("wss://x/v1?apiKey=abc&x=1") == "wss://x/v1?apiKey=***&x=1"
    assert mask_url("wss://x/v1?a=1&apikey=abc") == "wss://x/v1?a=1&apikey=***"
    assert mask_url("wss://x/v1") == "wss://x/v1"


@pytest.mark.parametrize("each", [True, False])
@pytest.mark.parametrize("compression", [None, "zstd"])
def test_round_trip_keeps_every_record_byte_for_byte(tmp_path, compression, each):
    if compression:
        pytest.importorskip("zstandard")
    p = tmp_path / "a.ffr"
    w = _write(p, compression=compression, block_size=512, each=each)
    assert w.error is None and w.messages == 50 and w.dropped == 0
    with Reader(p) as r:
        assert r.header.feed == "vantafin"
        assert r.header.url == "ws://127.0.0.1:1/v1/stocks?apiKey=***"
        assert r.header.start_ns == T0
        assert r.header.compressed == bool(compression)
        recs = list(r)
        assert r.complete and r.skipped_bytes == 0 and r.problems == []
        assert r.end_info["messages"] == 50 and r.end_info["error"] is None
        assert r.messages == 50
    assert [(x.kind, x.recv_ns) for x in recs[:-1]] == _expected()
    assert recs[-1].kind == END
    msgs = [x.payload for x in recs if x.kind == MESSAGE]
    assert msgs == [_payload(i) for i in range(50)]
    assert recs[0].payload == b'{"attempt":1}'
    assert recs[recs.index(next(x for x in recs if x.kind == DISCONNECTED))].payload == b"idle timeout"
    assert b"SECRET" not in p.read_bytes()


def test_reading_twice_gives_the_same_records(tmp_path):
    p = tmp_path / "a.ffr"
    _write(p)
    with Reader(p) as r:
        assert list(r) == list(r)


def test_payload_is_copied_at_the_call(tmp_path):
    p = tmp_path / "a.ffr"
    w = Writer(p, feed="vantafin", url="")
    buf = bytearray(b"hello")
    w.message(memoryview(buf), 1)
    buf[:] = b"XXXXX"
    w.close()
    assert [r.payload for r in read_records(p) if r.kind == MESSAGE] == [b"hello"]


def _offsets(path):
    """File offsets of each top-level record."""
    data = path.read_bytes()
    h = fmt.decode_header(data)
    pos, out = h.size, []
    while pos < len(data):
        out.append(pos)
        (size,) = fmt.REC_HDR.unpack_from(data, pos)[:1]
        pos += fmt.REC_OVERHEAD + size
    assert pos == len(data)
    return out


def _check_truncations(path, tmp_path, which):
    """Truncate the file at every byte offset inside record number ``which``."""
    data = path.read_bytes()
    offs = _offsets(path)
    start = offs[which]
    stop = offs[which + 1] if which + 1 < len(offs) else len(data)
    with Reader(path) as r:
        full = list(r)
    # records (after unpacking blocks) that live before `start`
    t = tmp_path / "cut.ffr"
    t.write_bytes(data[:start])
    with Reader(t) as r:
        before = list(r)
        assert r.problems == [] and r.skipped_bytes == 0
    assert before == full[: len(before)]
    for cut in range(start + 1, stop):
        t.write_bytes(data[:cut])
        with Reader(t) as r:
            got = list(r)
            assert got == before, cut
            assert r.skipped_bytes == cut - start, cut
            assert len(r.problems) == 1 and r.problems[0].offset == start
            assert "torn" in r.problems[0].reason
            assert not r.complete
    return before


def test_truncation_at_every_offset_of_the_last_record_keeps_all_before(tmp_path):
    p = tmp_path / "a.ffr"
    _write(p)
    n = len(_offsets(p))
    before = _check_truncations(p, tmp_path, n - 1)  # the END record
    assert [(x.kind, x.recv_ns) for x in before] == _expected()
    before = _check_truncations(p, tmp_path, n - 2)  # the last message
    assert [(x.kind, x.recv_ns) for x in before] == _expected()[:-1]


def test_truncation_of_a_zstd_file_loses_only_the_last_block(tmp_path):
    pytest.importorskip("zstandard")
    p = tmp_path / "z.ffr"
    _write(p, n=200, compression="zstd", block_size=2000)
    offs = _offsets(p)
    assert len(offs) >= 5  # several blocks + END
    before = _check_truncations(p, tmp_path, len(offs) - 2)  # the last zstd block
    assert before and before == read_records(p)[: len(before)]
    assert all(k == x.kind for k, x in zip([k for k, _ in _expected(200)], before))


def test_truncated_or_foreign_headers_raise_format_error(tmp_path):
    p = tmp_path / "a.ffr"
    _write(p, n=2)
    data = p.read_bytes()
    hsize = fmt.decode_header(data).size
    t = tmp_path / "t.ffr"
    for cut in range(0, hsize):
        t.write_bytes(data[:cut])
        with pytest.raises(FormatError, match="torn header|empty"):
            Reader(t)
    t.write_bytes(data[:hsize])
    with Reader(t) as r:
        assert list(r) == [] and r.problems == [] and not r.complete
    t.write_bytes(b"PK\x03\x04" + data[4:])
    with pytest.raises(FormatError, match="not a fastfeed recording"):
        Reader(t)
    bad = bytearray(data)
    bad[hsize - 10] ^= 0x01  # inside the metadata JSON
    t.write_bytes(bytes(bad))
    with pytest.raises(FormatError, match="checksum"):
        Reader(t)
    bad = bytearray(data)
    bad[8] = 99  # version
    t.write_bytes(bytes(bad))
    with pytest.raises(FormatError, match="version 99"):
        Reader(t)


def test_every_flipped_byte_of_a_record_is_detected_and_only_that_record_is_lost(tmp_path):
    p = tmp_path / "a.ffr"
    _write(p, n=6)
    data = p.read_bytes()
    offs = _offsets(p)
    full = read_records(p)
    k = 3  # a message record in the middle
    start, stop = offs[k], offs[k + 1]
    t = tmp_path / "flip.ffr"
    for i in range(start, stop):
        for bit in (0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= bit
            t.write_bytes(bytes(bad))
            with Reader(t) as r:
                got = list(r)
                assert got == full[:k] + full[k + 1:], (i, bit)
                assert r.skipped_bytes == stop - start
                assert [pr.offset for pr in r.problems] == [start]
                assert r.complete  # the END record after it was found again


def test_flipped_byte_in_a_zstd_block_loses_that_block_only(tmp_path):
    pytest.importorskip("zstandard")
    p = tmp_path / "z.ffr"
    _write(p, n=100, compression="zstd", block_size=1500)
    data = p.read_bytes()
    offs = _offsets(p)
    full = read_records(p)
    bad = bytearray(data)
    bad[offs[1] + 40] ^= 0x10
    t = tmp_path / "flip.ffr"
    t.write_bytes(bytes(bad))
    with Reader(t) as r:
        got = list(r)
        assert [pr.offset for pr in r.problems] == [offs[1]]
        assert "checksum" in r.problems[0].reason
        assert r.complete
    assert len(got) < len(full)
    assert got[-1] == full[-1]
    assert all(g in full for g in got)


def test_random_damage_never_crashes_the_reader(tmp_path):
    """Damaged bytes are skipped and reported; every record that comes back is an original
    record, intact and in order; a loss is never silent."""
    p = tmp_path / "a.ffr"
    _write(p, n=40)
    data = p.read_bytes()
    hsize = fmt.decode_header(data).size
    with Reader(p) as r:
        original = [(x.kind, x.recv_ns, bytes(x.payload)) for x in r]
    t = tmp_path / "r.ffr"
    rnd = random.Random(7)
    for _ in range(300):
        bad = bytearray(data)
        for _ in range(rnd.randint(1, 8)):
            bad[rnd.randrange(hsize, len(bad))] = rnd.randrange(256)
        if rnd.random() < 0.3:
            bad += bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 64)))
        t.write_bytes(bytes(bad[: rnd.randint(hsize, len(bad))]))
        with Reader(t) as r:
            got = [(x.kind, x.recv_ns, bytes(x.payload)) for x in r]
            assert r.records == len(got)
        it = iter(original)
        assert all(g in it for g in got), "a record that was never written, or out of order"
        if len(got) < len(original):
            assert r.problems or not r.complete  # reported (damage) or visible (a torn end)


def test_records_from_encode_helpers_read_back(tmp_path):
    p = tmp_path / "h.ffr"
    p.write_bytes(encode_header("sfox", "wss://ws.sfox.com/ws", T0)
                  + encode_record(CONNECTED, T0, b"")
                  + encode_record(MESSAGE, T0 + 1, b"{}")
                  + encode_record(99, T0 + 2, b"future kind"))  # unknown kinds pass through
    with Reader(p) as r:
        got = list(r)
    assert [(x.kind, x.payload) for x in got] == [(CONNECTED, b""), (MESSAGE, b"{}"),
                                                  (99, b"future kind")]
    assert got[2].kind_name == "kind99"


def test_disk_full_stops_recording_with_a_clear_error_and_the_feed_goes_on(tmp_path, caplog):
    p = tmp_path / "full.ffr"
    errors = []
    w = Writer(p, feed="vantafin", url="", flush_interval=0.01, on_error=errors.append)
    real, left = w._writev, [1]

    def failing_writev(parts):
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        left[0] -= 1
        real(parts)

    w._writev = failing_writev
    w.message(b"first", 1)
    w.flush()
    deadline = time.monotonic() + 10
    i = 0
    while w.error is None and time.monotonic() < deadline:
        w.message(b"x" * 100, 2 + i)  # never raises
        i += 1
        time.sleep(0.002)
    assert w.error is not None and "No space left" in w.error
    assert errors == [w.error]
    assert not w.recording
    before = w.dropped
    w.message(b"after", 10**9)  # still fine, counted
    assert w.dropped == before + 1
    w.close()
    assert any("No space left" in m for m in caplog.messages)
    with Reader(p) as r:  # what reached the disk is a valid recording
        got = list(r)
        assert got[0].payload == b"first" and not r.complete and r.problems == []


def test_a_writer_that_falls_behind_stops_recording_instead_of_growing(tmp_path):
    p = tmp_path / "slow.ffr"
    gate = threading.Event()
    w = Writer(p, feed="vantafin", url="", flush_interval=0.01, wake_bytes=1000,
               max_pending=20_000)
    real = w._write_record

    def slow_write(*a):
        gate.wait(10)
        real(*a)

    w._write_record = slow_write
    for i in range(1000):
        w.message(b"y" * 100, i)
    assert w.error is not None and "fell behind" in w.error
    # bounded: max_pending plus at most one check interval (256 entries here)
    assert w.dropped > 0 and w.pending_bytes <= 20_000 + 256 * 100
    gate.set()
    w.close()
    with Reader(p) as r:
        got = list(r)
        assert r.complete and r.problems == []
        assert r.end_info["error"] == w.error
    assert [x.recv_ns for x in got if x.kind == MESSAGE] == list(range(len(got) - 1))


def test_recording_session_records_then_forwards(tmp_path):
    class Inner:
        fatal = None

        def __init__(self):
            self.calls = []
            self.state = {"authenticated": True}

        def on_connected(self, send):
            self.calls.append("connected")
            send(b"sub")

        def on_message(self, payload, recv_ns):
            self.calls.append((bytes(payload), recv_ns))

        def on_disconnected(self, reason):
            self.calls.append(("disc", reason))

        def subscribe(self, topics):
            self.calls.append(("subscribe", topics))

    inner = Inner()
    p = tmp_path / "s.ffr"
    rs, close = rec.wrap_session_for_recording(inner, p, "vantafin",
                                               "ws://h/v1?apiKey=K", topics=["LS.*"])
    sent = []
    rs.on_connected(sent.append)
    rs.on_message(b"abc", 5)
    rs.on_disconnected("closed 1000")
    rs.subscribe(["LS.X"])
    assert rs.state == {"authenticated": True}
    assert rs.fatal is None
    rs.fatal = RuntimeError("auth")
    assert isinstance(inner.fatal, RuntimeError) and rs.fatal is inner.fatal
    summary = close()
    assert summary["messages"] == 1 and summary["error"] is None
    assert inner.calls == ["connected", (b"abc", 5), ("disc", "closed 1000"),
                           ("subscribe", ["LS.X"])]
    assert sent == [b"sub"]
    with Reader(p) as r:
        got = list(r)
        assert r.header.meta["topics"] == ["LS.*"]
        assert r.header.url == "ws://h/v1?apiKey=***"
    assert [x.kind for x in got] == [CONNECTED, MESSAGE, DISCONNECTED, END]
    assert got[1] == (MESSAGE, 5, b"abc") and got[2].payload == b"closed 1000"


_KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from fastfeed.recording import Writer
    w = Writer(sys.argv[1], feed="vantafin", url="", flush_interval=0.001,
               compression=(sys.argv[2] or None), block_size=3000)
    i = 0
    print("ready", flush=True)
    while True:
        w.message(b"%d:" % i + b"z" * (i % 500), i)
        i += 1
        if i % 50 == 0:
            time.sleep(0.0005)
""")


@pytest.mark.parametrize("compression", ["", "zstd"])
def test_a_process_killed_mid_write_leaves_a_readable_file(tmp_path, compression):
    if compression:
        pytest.importorskip("zstandard")
    p = tmp_path / "killed.ffr"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(p), compression],
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 20
        while (not p.exists() or p.stat().st_size < 200_000) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with Reader(p) as r:
        got = list(r)
        assert not r.complete
        assert len(r.problems) <= 1 and r.skipped_bytes < 2 * 1024 * 1024
    assert len(got) > 100
    # every record that came back is intact and in order
    for i, x in enumerate(got):
        assert x == (MESSAGE, i, b"%d:" % i + b"z" * (i % 500))


def test_empty_recording_has_header_and_end(tmp_path):
    p = tmp_path / "e.ffr"
    Writer(p, feed="sfox", url="wss://ws.sfox.com/ws").close()
    with Reader(p) as r:
        assert [x.kind for x in r] == [END] and r.complete
    assert os.path.getsize(p) < 200


def test_a_torn_batch_loses_only_that_batch(tmp_path):
    p = tmp_path / "b.ffr"
    w = Writer(p, feed="vantafin", url="", start_ns=T0)
    for i in range(10):
        w.message(_payload(i), T0 + i)
    w.flush()
    for i in range(10, 22):  # one batch of 12 messages
        w.message(_payload(i), T0 + i)
    w.close()
    offs = _offsets(p)
    assert len(offs) == 3  # batch, batch, END
    before = _check_truncations(p, tmp_path, 1)
    assert [x.payload for x in before] == [_payload(i) for i in range(10)]
    got = read_records(p)
    assert [x.payload for x in got[:-1]] == [_payload(i) for i in range(22)]


def test_batch_with_inconsistent_table_is_reported_not_raised(tmp_path):
    # a batch whose CRC is right but whose entry table does not add up (a writer bug)
    import struct

    import numpy as np

    bad = struct.pack("<I", 2) + np.zeros(2, fmt.ENTRY_DTYPE).tobytes() + b"xyz"
    p = tmp_path / "t.ffr"
    p.write_bytes(encode_header("vantafin", "", T0) + encode_record(rec.BATCH, T0, bad)
                  + encode_record(MESSAGE, T0 + 1, b"ok"))
    with Reader(p) as r:
        got = list(r)
        assert [x.payload for x in got] == [b"ok"]
        assert "batch" in r.problems[0].reason


def test_fsync_mode_writes_a_valid_file(tmp_path):
    p = tmp_path / "f.ffr"
    _write(p, n=5, fsync=True)
    with Reader(p) as r:
        assert sum(1 for x in r if x.kind == MESSAGE) == 5 and r.complete


def test_zstd_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(rec.RecordingError, match="pip install zstandard"):
        Writer(tmp_path / "z.ffr", feed="vantafin", compression="zstd")
    with pytest.raises(ValueError, match="unknown compression"):
        Writer(tmp_path / "z.ffr", feed="vantafin", compression="lz4")


def test_connection_records_through_the_listener_tap(tmp_path):
    """On a Connection, a RecordingSession's messages are recorded by the listener (C
    copy into the tap) and handed to the unrecorded session: same bytes, same recv_ns."""
    import asyncio

    from fastfeed.simulator import Faults, SimConfig, Simulator
    from fastfeed.transport import Connection

    class Inner:
        fatal = None

        def __init__(self):
            self.got = []

        def on_connected(self, send):
            send(b'{"action":"subscribe","params":"LS.*"}')

        def on_message(self, payload, recv_ns):
            self.got.append((bytes(payload), recv_ns))

        def on_disconnected(self, reason):
            pass

    async def main():
        cfg = SimConfig(n_tickers=30, trade_fraction=0.7, bars_per_frame=1, max_rate=True, max_seconds=10,
                        start_second=1_700_000_000, faults=Faults(fragment_every=3, fragment_size=40))
        async with Simulator(cfg) as sim:
            inner = Inner()
            rs, close = rec.wrap_session_for_recording(inner, tmp_path / "c.ffr", "vantafin", sim.url("vantafin"))
            assert rs.tapped_sink == inner.on_message
            conn = Connection(sim.url("vantafin"), rs)
            task = asyncio.ensure_future(conn.run())
            while not (sim.connections and sim.connections[0]._producer is not None
                       and sim.connections[0]._producer.done() and len(inner.got) >= len(sim.sent_bars())):
                await asyncio.sleep(0.01)
            await conn.stop()
            await task
            return inner, close()

    inner, summary = asyncio.run(main())
    assert summary["error"] is None and summary["messages"] == len(inner.got) > 0
    with Reader(tmp_path / "c.ffr") as r:
        recs = list(r)
    assert [k for k, _, _ in recs] == [CONNECTED] + [MESSAGE] * len(inner.got) + [DISCONNECTED, END]
    assert [(p, ns) for k, ns, p in recs if k == MESSAGE] == inner.got
