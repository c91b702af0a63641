"""The journal: rotation and pruning, warm start exactness, a restart equal to an
uninterrupted run except the outage, and a SIGKILL that loses nothing written."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fastfeed import Feed
from fastfeed._ext.engine import Engine
from fastfeed.recording import MESSAGE, Reader
from fastfeed.share.journal import JournalWriter, journal_files, journal_session, warm_start
from fastfeed.simulator.testing import SimThread
from fastfeed.simulator.truth import with_pv
from fastfeed.snapshot import snapshot_document
from fastfeed.engine import Stats
from fastfeed.engine import Universe

HERE = os.path.dirname(os.path.abspath(__file__))
WINDOWS = (10, 30)


def test_files_rotate_by_receive_time_and_old_ones_are_pruned(tmp_path):
    old = tmp_path / "vantafin-20200101T000000.000000000Z.ffr"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 100, time.time() - 100))
    other = tmp_path / "sfox-20200101T000000.000000000Z.ffr"
    other.write_bytes(b"x")
    os.utime(other, (time.time() - 100, time.time() - 100))
    w = JournalWriter(tmp_path, feed="vantafin", rotate=1.0, keep=50)
    assert not old.exists() and other.exists() and w.pruned == 1  # only this feed's, only old ones
    base = (time.time_ns() // 10**9 + 1) * 10**9
    sent = []
    for i in range(30):  # 3 s of receive time, 10 messages a second
        ns = base + i * 100_000_000
        payload = json.dumps({"i": i}).encode()
        w.message(payload, ns)
        sent.append((ns, payload))
        if i % 10 == 9:
            w.flush()
    w.close()
    files = journal_files(tmp_path, "vantafin")
    assert files == sorted(w.files_written) and len(files) == 4  # the opening file + one per second
    got = []
    for p in files:
        with Reader(p) as r:
            got += [(ns, bytes(pl)) for kind, ns, pl in r if kind == MESSAGE]
            assert r.complete  # every file ends with its end record
            ns_in = [ns for kind, ns, _ in r if kind == MESSAGE]
            assert len({n // 10**9 for n in ns_in}) <= 1  # one second of receive time per file
    assert got == sent


async def _run(feed: Feed, bars: int) -> None:
    async with feed:
        await feed.wait_connected(10)
        while feed.stats.bars < bars:
            await asyncio.sleep(0.02)


def _feed(url: str) -> Feed:
    return Feed("vantafin", url=url, windows=WINDOWS, depth=30, capacity=512)


def test_warm_start_restores_the_windows(tmp_path):
    with SimThread(n_tickers=150, trade_fraction=1.0, speed=20.0, bars_per_frame=50) as sim:
        a = _feed(sim.url("vantafin"))
        a.session, close = journal_session(a.session, tmp_path, "vantafin", a.url)
        asyncio.run(_run(a, 150 * 60))  # 60 simulated seconds, ~3 s of receive time
        summary = close()
    doc_a = a.snapshot()
    # everything replayed: the same bars in the same order -> bit for bit
    b = _feed("ws://unused")
    info = warm_start(tmp_path, b.session, feed="vantafin", depth=3600)
    assert info.messages == summary["messages"] > 0 and not info.problems
    doc_b = b.snapshot()
    assert doc_b["as_of"] == doc_a["as_of"] == info.T
    assert doc_b["windows"] == doc_a["windows"]
    # only the last second of receive time: ~20 simulated seconds (the simulator runs 20x),
    # which covers the 10 s window (compared) but not all of the 30 s one
    c = _feed("ws://unused")
    part = warm_start(tmp_path, c.session, feed="vantafin", depth=1.0, margin=0.0)
    assert 0 < part.messages < info.messages
    doc_c = c.snapshot()
    assert doc_c["windows"]["10"].keys() == doc_a["windows"]["10"].keys()
    for sym, e in doc_a["windows"]["10"].items():
        f = doc_c["windows"]["10"][sym]
        assert (f["open"], f["high"], f["low"], f["close"], f["count"]) == \
            (e["open"], e["high"], e["low"], e["close"], e["count"])
        assert f["volume"] == pytest.approx(e["volume"], rel=1e-9)


def _reference(bars: np.ndarray) -> dict:
    """The windows of an engine fed ``bars`` (send order) directly: the ground truth."""
    engine = Engine(512, WINDOWS, depth=30, prefault=False)
    universe = Universe(512)
    t = with_pv(bars)
    rows = np.array([universe.row(s) for s in t["symbol"].tolist()], dtype=np.int64)
    cols = [np.ascontiguousarray(t[f]) for f in ("open", "high", "low", "close", "volume", "pv")]
    engine.upsert(rows, np.ascontiguousarray(t["second"]), *cols)
    return snapshot_document("vantafin", engine, universe, Stats())


def test_a_restart_equals_an_uninterrupted_run_except_the_outage(tmp_path):
    """Feed A journals (``journal=``) and stops cleanly; B warm-starts from the journal and reconnects
    to the same simulator, whose market went on meanwhile.  B's windows equal an engine fed
    every bar the simulator sent (to A, then to B): only the outage's seconds are missing."""
    with SimThread(n_tickers=100, trade_fraction=1.0, speed=10.0, bars_per_frame=50) as sim:
        a = Feed("vantafin", url=sim.url("vantafin"), windows=WINDOWS, depth=30, capacity=512, journal=tmp_path)
        assert a.warm_start.messages == 0 and a.warm_start.T is None  # an empty journal
        asyncio.run(_run(a, 100 * 15))  # closing the feed closes the journal
        assert a.journal.closed and a.journal.error is None
        T_a = a.T
        # the outage: the market goes on; B connects once 3 whole seconds were missed
        deadline = time.monotonic() + 30
        while sim.call(lambda s: s.first_second_for_new_subscriber()) <= T_a + 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        gaps, updates = [], []
        b = Feed("vantafin", url=sim.url("vantafin"), windows=WINDOWS, depth=30, capacity=512, journal=tmp_path,
                 on_event=lambda kind, info: gaps.append(info) if kind == "gap" else None,
                 on_update=lambda rows, T: updates.append(T))
        assert b.warm_start.T == T_a and b.T == T_a and b.warm_start.messages > 0
        assert not updates and not gaps  # the replay calls no user callback

        async def run_b() -> None:
            async with b:
                await b.wait_connected(10)
                while b.T is None or b.T < T_a + 20:
                    await asyncio.sleep(0.02)

        asyncio.run(run_b())
        assert updates and min(updates) > T_a + 1  # live updates only, after the outage
        sent = sim.call(lambda s: s.sent_bars("vantafin"))
    want = _reference(sent)
    got = b.snapshot()
    assert got["as_of"] == want["as_of"]
    assert gaps and gaps[0]["last_before"] == T_a and gaps[0]["first_after"] > T_a + 1, (gaps, b.stats.gap_list, T_a)
    for w in ("10", "30"):
        assert got["windows"][w].keys() == want["windows"][w].keys()
        for sym, e in want["windows"][w].items():
            f = got["windows"][w][sym]
            for k in ("open", "high", "low", "close", "count"):
                assert f[k] == e[k], (w, sym, k)
            for k in ("volume", "vwap"):
                assert f[k] == pytest.approx(e[k], rel=1e-9), (w, sym, k)
    # the outage's seconds are missing from B and from the truth alike
    assert max(want["windows"]["30"][s]["count"] for s in want["windows"]["30"]) < 30


def _killed_journal(tmp_path, flush_every: int, lines: int) -> tuple[list[dict], int]:
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "journal_proc.py"), str(tmp_path),
                          "--flush-every", str(flush_every)], stdout=subprocess.PIPE, text=True)
    try:
        seen = [json.loads(p.stdout.readline()) for _ in range(lines)]
    finally:
        t_kill = time.time_ns()
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    return seen, t_kill


def _restored_equals_replayed_prefix(tmp_path):
    """Warm start from the journal; the state equals a fresh session fed the first
    ``messages`` of the stream: exactly what the journal holds, nothing torn."""
    import journal_proc as jp

    session, engine, universe = jp.make_session()
    info = warm_start(tmp_path, session, feed="vantafin", depth=3600)
    ref_session, ref_engine, ref_universe = jp.make_session()
    for k in range(info.messages):
        ref_session.on_message(jp.message(k), time.time_ns())
    assert snapshot_document("vantafin", engine, universe, Stats())["windows"] == \
        snapshot_document("vantafin", ref_engine, ref_universe, Stats())["windows"]
    return info


def test_sigkill_loses_nothing_that_was_written(tmp_path):
    """A process journals a deterministic stream and is killed with SIGKILL; a warm start
    restores exactly the state after the messages the journal holds, which include every
    message it had flushed before the kill."""
    sys.path.insert(0, HERE)
    flushed, _ = _killed_journal(tmp_path / "a", 40, 5)
    info = _restored_equals_replayed_prefix(tmp_path / "a")
    assert info.messages >= flushed[-1]["messages"]
    # without explicit flushes the writer thread hands blocks over every flush_interval:
    # what the kill can lose is the receive time after the last block handed over
    progress, t_kill = _killed_journal(tmp_path / "b", 0, 4)
    info = _restored_equals_replayed_prefix(tmp_path / "b")
    assert info.messages > 0
    print(f"\njournal, SIGKILL without flush: {info.messages} of >= {progress[-1]['messages']} messages "
          f"restored; lost: the last {(t_kill - info.last_ns) / 1e6:.1f} ms before the kill")
