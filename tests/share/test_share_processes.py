"""The segment across real processes: exact reads under load, SIGKILL of the writer and
of a reader, writer restart and re-attach, a reader started first, two writers, and
nothing left in /dev/shm."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest

from fastfeed.share import attach
from fastfeed.share.layout import shm_path

from serve_helpers import wait_for
from shm_proc import FIELDS, WINDOWS, batches, make_engine


def test_readers_match_the_writer_exactly_under_load(shm_name, procs, tmp_path):
    """Two reader processes copy (consistent copies, and zero-copy views checked stable)
    while the writer publishes flat out; each sample equals the engine's windows after the
    batch its generation names, replayed here from the same seed."""
    n_batches, rows = 20000, 500
    w = procs("writer", shm_name, "--batches", str(n_batches), "--rows", str(rows), "--seed", "7", "--wait-go")
    ready = w.expect("ready")
    readers = [procs("sample", shm_name, "--out", str(tmp_path / f"r{i}.npz"), "--samples", "40",
                     "--gap", "0.01", "--duration", "60") for i in range(2)]
    for r in readers:
        r.expect("attached")
    w.send("go")
    done = w.expect("done", timeout=120)
    results = [r.expect("sampled", timeout=60) for r in readers]
    # replay: generation g0 + 2 i is the state after batch i (the writer publishes once per batch)
    g0 = ready["generation"]
    wanted = {}
    for i, r in enumerate(readers):
        z = dict(np.load(tmp_path / f"r{i}.npz"))
        for j, g in enumerate(z["generation"].tolist()):
            wanted.setdefault(min((g - g0) // 2, n_batches), []).append((z, j, bool(z["zero_copy"][j])))
    assert sum(len(v) for v in wanted.values()) == sum(r["samples"] for r in results)
    during = sum(len(v) for k, v in wanted.items() if 0 < k < n_batches)
    assert during >= 20, f"only {during} samples were taken while the writer was publishing"
    engine, universe, _ = make_engine(rows)
    gen = batches(7, rows)
    checked = 0
    for i in range(n_batches + 1):
        for z, j, zc in wanted.get(i, ()):
            for wdw in WINDOWS[:1] if zc else WINDOWS:
                ref = engine.window_copy(wdw)
                for f in FIELDS:
                    got = z[f"{wdw}.{f}"][j]
                    assert np.array_equal(got, getattr(ref, f), equal_nan=f != "count"), (i, wdw, f, zc)
            checked += 1
        if i < n_batches:
            engine.upsert(*next(gen))
    assert checked == sum(r["samples"] for r in results)
    assert done["T"] == engine.T
    w.send("close")
    w.expect("closed")
    assert w.wait() == 0
    assert not os.path.exists(shm_path(shm_name))


def test_sigkill_of_the_writer_is_noticed_and_a_new_writer_is_reattached(shm_name, procs):
    w1 = procs("writer", shm_name, "--batches", "50", "--seed", "1")
    w1.expect("done")
    reader = procs("watch", shm_name, "--duration", "30")
    att = reader.expect("attached")
    t_kill = time.monotonic()
    os.kill(w1.pid, signal.SIGKILL)
    gone = reader.expect("writer_gone", timeout=10)
    assert gone["mono"] - t_kill < 2.0, f"writer gone noticed after {gone['mono'] - t_kill:.2f} s"
    assert os.path.exists(shm_path(shm_name))  # a dead writer cannot clean up: the next one will
    w2 = procs("writer", shm_name, "--batches", "130", "--seed", "2")
    ready = w2.expect("ready")
    assert ready["reclaimed"] is True
    wait_for(lambda: any("reclaiming the stale segment of a dead writer" in line for line in w2.stderr), 10,
             "the reclaim logged")  # stderr is read on its own thread
    done = w2.expect("done")
    re = reader.expect("reattached", timeout=10)
    assert re["epoch"] == ready["epoch"] != att["epoch"]
    new = reader.expect("new_data", timeout=10)
    assert new["epoch"] == ready["epoch"]
    wait_for(lambda: attach(shm_name, timeout=1).T == done["T"], 5, "the new writer's clock")
    w2.send("close")
    w2.expect("closed")
    assert not os.path.exists(shm_path(shm_name))


def test_a_reader_started_first_waits_for_the_writer(shm_name, procs):
    reader = procs("watch", shm_name, "--duration", "20")
    wait_for(lambda: any("waiting for a writer (no such segment)" in line for line in reader.stderr), 30,
             "the reader waiting")
    assert not os.path.exists(shm_path(shm_name))
    w = procs("writer", shm_name, "--batches", "100", "--seed", "3", "--pace", "0.001")
    ready = w.expect("ready")
    att = reader.expect("attached", timeout=10)
    assert att["epoch"] == ready["epoch"]
    done = w.expect("done")
    wait_for(lambda: attach(shm_name, timeout=1).T == done["T"], 5, "the writer's clock")


def test_two_live_writers_refuse_the_same_name(shm_name, procs):
    w1 = procs("writer", shm_name, "--batches", "10")
    r1 = w1.expect("ready")
    w2 = procs("writer", shm_name, "--batches", "10")
    assert w2.wait(30) == 3
    wait_for(lambda: f"is in use by a live writer (pid {r1['pid']}" in "".join(w2.stderr), 10,
             "the refusal on stderr")  # read on its own thread
    w1.expect("done")
    assert attach(shm_name, timeout=1).epoch == r1["epoch"]  # untouched


def test_sigkill_of_a_reader_leaves_the_writer_and_frees_its_slot(shm_name, procs):
    w = procs("writer", shm_name, "--batches", "20", "--heartbeat", "0.05")
    w.expect("done")
    reader = procs("watch", shm_name, "--duration", "30")
    reader.expect("attached")
    me = attach(shm_name, timeout=1)
    core = me._live_seg().core
    wait_for(lambda: core.waiters()[0] >= 1, 5, "the reader asleep on the futex")
    assert reader.pid in core.attached()
    w.send("readers")
    assert w.expect("readers")["readers"] == 2
    reader.stop()  # SIGKILL while asleep in futex_wait
    wait_for(lambda: reader.pid not in core.attached(), 5, "the dead reader's slot reaped")
    assert core.waiters() == (0, 0)
    w.send("readers")
    assert w.expect("readers")["readers"] == 1
    assert me.alive and me.heartbeat_age < 1.0
    me.close()


def test_clean_stop_leaves_nothing_in_dev_shm(shm_name, procs):
    w = procs("writer", shm_name, "--batches", "20")
    w.expect("done")
    reader = procs("watch", shm_name, "--duration", "20")
    reader.expect("attached")
    os.kill(w.pid, signal.SIGTERM)
    assert w.wait() == 0
    assert not os.path.exists(shm_path(shm_name))
    closed = reader.expect("writer_closed", timeout=5)
    assert closed["writer_pid"] == w.pid
    # a writer that just exits (no close(), no signal) removes its segment at interpreter exit
    w2 = procs("writer", shm_name, "--batches", "20", "--exit")
    assert w2.wait() == 0
    assert not os.path.exists(shm_path(shm_name))


def _spawned_reader(name: str, q) -> None:
    r = attach(name, timeout=10)
    q.put((r.T, r.epoch))
    r.close()


def test_readers_do_not_unlink_the_segment_cpython_82300(shm_name, procs):
    """multiprocessing's resource tracker unlinks segments that a process merely attached
    to with SharedMemory; readers here map the segment themselves."""
    w = procs("writer", shm_name, "--batches", "20")
    ready = w.expect("ready")
    done = w.expect("done")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    for _ in range(2):
        p = ctx.Process(target=_spawned_reader, args=(shm_name, q))
        p.start()
        assert q.get(timeout=30) == (done["T"], ready["epoch"])
        p.join(30)
        assert p.exitcode == 0
    assert os.path.exists(shm_path(shm_name))
    r = attach(shm_name, timeout=1)
    assert r.alive and r.epoch == ready["epoch"]
    r.close()


@pytest.mark.parametrize("mode", ["futex", "spin"])
def test_wait_update_wakes_on_another_process_publish(shm_name, procs, mode):
    w = procs("writer", shm_name, "--batches", "400", "--pace", "0.005")
    w.expect("ready")
    r = attach(shm_name, timeout=5, wait=mode)
    gens = []
    for _ in range(5):
        assert r.wait_update(timeout=5)
        gens.append(r.generation)
    assert gens == sorted(gens) and len(set(gens)) == 5
    r.close()


FORK_SCRIPT = """
import os, sys
import numpy as np
from fastfeed._ext.engine import Engine
from fastfeed.engine import Universe
from fastfeed.share import SegmentWriter, attach
e = Engine(16, (10,), prefault=False)
w = SegmentWriter(sys.argv[1], e, Universe(16))
r = attach(sys.argv[1], timeout=1)
pid = os.fork()
if pid == 0:
    sys.exit(0)  # a normal exit: atexit and finalizers run in the child
os.waitpid(pid, 0)
ok = os.path.exists("/dev/shm/" + sys.argv[1]) and r.alive and os.getpid() in r._live_seg().core.attached()
r.close()
w.close()
print("ok" if ok and not os.path.exists("/dev/shm/" + sys.argv[1]) else "broken")
"""


def test_a_forked_child_leaves_the_parents_segment_alone(shm_name):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", FORK_SCRIPT, shm_name], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
