"""Benchmarks of the shared-memory segment (``benches/bench_share.py`` and ``fastfeed
bench`` call these; each returns plain data).

* :func:`publish_cost` -- what ``publish`` adds to the engine's update, side by side.
* :func:`writer_throughput` -- bars/s of upsert + publish with ``readers`` processes
  polling consistent copies as fast as they can (compare 0 and 8 in one run).
* :func:`wake_latency` -- publish -> a reader's ``wait_update`` returns, per wait mode.
* :func:`copy_cost` -- consistent copies of the windows.

All run real processes against a real segment; the machine's load matters: quote
ratios measured in one run.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time
from typing import Any

import numpy as np

from .._ext import shm as _shm
from .._ext.engine import Engine
from ..engine.stats import Stats
from ..engine.universe import Universe
from .reader import attach
from .writer import SegmentWriter

__all__ = ["Market", "publish_cost", "writer_throughput", "wake_latency", "copy_cost"]

T0 = 1_700_000_000


class Market:
    """A full cross-section per second, random values, rows in random order each second."""

    def __init__(self, n_rows: int = 12000, windows: tuple[int, ...] = (60, 300, 900), seed: int = 0,
                 distinct_seconds: int = 8, capacity: int | None = None) -> None:
        self.n = n_rows
        self.engine = Engine(capacity or max(n_rows, 16), windows)
        self.universe = Universe(capacity or max(n_rows, 16))
        for i in range(n_rows):
            self.universe.row(f"S{i:05d}")
        self.stats = Stats()
        rng = np.random.default_rng(seed)
        self.seconds = []
        for _ in range(distinct_seconds):
            c = rng.uniform(10.0, 20.0, n_rows)
            v = rng.uniform(1.0, 100.0, n_rows)
            rows = rng.permutation(n_rows).astype(np.int64)
            self.seconds.append((rows, c, c * (1 + rng.uniform(0, 0.01, n_rows)),
                                 c * (1 - rng.uniform(0, 0.01, n_rows)), v))
        self.T = T0

    def second(self, batch: int):
        """The batches of the next second: ``(rows, secs, o, h, l, c, v, pv)`` column slices."""
        rows, c, h, lo, v = self.seconds[(self.T - T0) % len(self.seconds)]
        secs = np.full(self.n, self.T, dtype=np.int64)
        pv = v * c
        self.T += 1
        return [(rows[i:i + batch], secs[i:i + batch], c[i:i + batch], h[i:i + batch], lo[i:i + batch],
                 c[i:i + batch], v[i:i + batch], pv[i:i + batch]) for i in range(0, self.n, batch)]

    def warm(self, seconds: int, batch: int = 100, writer: SegmentWriter | None = None) -> None:
        for _ in range(seconds):
            for b in self.second(batch):
                self.engine.upsert(*b)
                if writer is not None:
                    writer.publish()


def _name(tag: str) -> str:
    return f"ffbench-{tag}-{os.getpid()}-{time.monotonic_ns() % 10**9}"


def publish_cost(n_rows: int = 12000, windows: tuple[int, ...] = (60, 300, 900), batch: int = 100,
                 seconds: int = 20, warm: int = 30) -> dict[str, Any]:
    """Per engine update: upsert alone vs upsert + publish, alternating whole seconds
    (so both see the same machine); medians over seconds, in us per update."""
    m = Market(n_rows, windows)
    w = SegmentWriter(_name("cost"), m.engine, m.universe, m.stats, stats_interval=0)
    try:
        m.warm(warm, batch, w)
        plain: list[float] = []
        both: list[float] = []
        first: list[float] = []
        pub: list[float] = []
        for s in range(2 * seconds):
            bs = m.second(batch)
            t0 = time.perf_counter_ns()
            if s % 2 == 0:
                for b in bs:
                    m.engine.upsert(*b)
                w.publish_all()  # keep the segment current (not timed)
                plain.append((time.perf_counter_ns() - t0) / len(bs))
            else:
                for i, b in enumerate(bs):
                    m.engine.upsert(*b)
                    t1 = time.perf_counter_ns()
                    w.publish()
                    dt = time.perf_counter_ns() - t1
                    (first if i == 0 else pub).append(dt)
                both.append((time.perf_counter_ns() - t0) / len(bs))
        # publish_all above is inside the plain timing: take it out
        t2 = time.perf_counter_ns()
        for _ in range(20):
            w.publish_all()
        all_ns = (time.perf_counter_ns() - t2) / 20
        plain_us = statistics.median(plain) / 1e3 - all_ns / 1e3 / len(bs)
        both_us = statistics.median(both) / 1e3
        return {
            "rows": n_rows, "windows": list(windows), "batch": batch,
            "upsert_us_per_update": plain_us,
            "upsert_publish_us_per_update": both_us,
            "publish_us_per_update_median": statistics.median(pub) / 1e3,
            "publish_all_rows_us_median": statistics.median(first) / 1e3,
            "overhead_ratio": both_us / plain_us,
        }
    finally:
        w.close()


def _pin(cpus: set[int]) -> None:
    try:
        os.sched_setaffinity(0, cpus)
    except (AttributeError, OSError):
        pass


def _poll_reader(name: str, window_list: list[int], ready: Any, go: Any, stop: Any, out: Any, cpus: Any,
                 mode: str) -> None:
    if cpus:
        _pin(set(cpus))
    r = attach(name, timeout=30)
    ready.release()
    copies = timeouts = 0
    i = 0
    while not stop.is_set():
        if not go.wait(0.1):
            continue
        if mode == "wait" and not r.wait_update(timeout=0.1):
            continue
        try:
            r.window(window_list[i % len(window_list)], copy=True, timeout=0.5)
            copies += 1
        except TimeoutError:
            timeouts += 1
        i += 1
    out.put({"copies": copies, "timeouts": timeouts, "retries": int(r._live_seg().core.retries)})
    r.close()


def writer_throughput(readers: int = 8, phases: int = 6, phase_seconds: float = 1.0, n_rows: int = 12000,
                      windows: tuple[int, ...] = (60, 300, 900), batch: int = 100, pin: bool = True,
                      warm: int = 10, reader_mode: str = "busy") -> dict[str, Any]:
    """Bars/s of upsert + publish (one Engine, this process) without readers and with
    ``readers`` processes copying windows (``window(W, copy=True)``, cycling over the
    windows), alternating ``phases`` pairs of phases so both see the same machine.

    ``reader_mode``: ``"busy"`` copies in a tight loop, ``"wait"`` copies after each
    ``wait_update``.  ``pin``: the writer on the first CPU, the readers on the others.
    Ratios (with / without, median over pairs): ``wall_ratio`` counts the CPU the readers
    take from the writer where they share cores; ``cpu_ratio`` is per second of the writer
    thread's own CPU time (what readers cost it through memory: cache lines, bandwidth).
    """
    ctx = mp.get_context("spawn")
    m = Market(n_rows, windows)
    w = SegmentWriter(_name("tp"), m.engine, m.universe, m.stats, stats_interval=0)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    before = set(cpus)
    pin = pin and len(cpus) >= 2
    reader_cpus = cpus[1:] if pin else None
    procs = []
    go = ctx.Event()
    stop = ctx.Event()
    try:
        m.warm(warm, batch, w)
        ready = ctx.Semaphore(0)
        out = ctx.Queue()
        for _ in range(readers):
            p = ctx.Process(target=_poll_reader,
                            args=(w.name, list(windows), ready, go, stop, out, reader_cpus, reader_mode), daemon=True)
            p.start()
            procs.append(p)
        for _ in range(readers):
            if not ready.acquire(timeout=60):
                raise RuntimeError("a reader process did not attach")
        if pin:
            _pin({cpus[0]})

        def phase() -> tuple[float, float]:
            bars = 0
            t0 = time.perf_counter()
            c0 = time.thread_time()
            while time.perf_counter() - t0 < phase_seconds:
                for b in m.second(batch):
                    m.engine.upsert(*b)
                    w.publish()
                bars += n_rows
            return bars / (time.perf_counter() - t0), bars / (time.thread_time() - c0)

        alone, shared = [], []
        for _ in range(phases):
            go.clear()
            alone.append(phase())
            go.set()
            shared.append(phase())
        go.clear()
        stop.set()
        results = [out.get(timeout=30) for _ in procs]
    finally:
        stop.set()
        if pin:
            _pin(before)
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
        w.close()
    med = statistics.median
    return {
        "readers": readers, "reader_mode": reader_mode, "pinned": pin, "phases": phases,
        "bars_per_s_alone": med(a[0] for a in alone), "bars_per_s_with_readers": med(s[0] for s in shared),
        "bars_per_cpu_s_alone": med(a[1] for a in alone),
        "bars_per_cpu_s_with_readers": med(s[1] for s in shared),
        "wall_ratio": med(s[0] / a[0] for a, s in zip(alone, shared)),
        "cpu_ratio": med(s[1] / a[1] for a, s in zip(alone, shared)),
        "reader_copies": sum(r["copies"] for r in results),
        "reader_retries": sum(r["retries"] for r in results),
        "reader_timeouts": sum(r["timeouts"] for r in results),
    }


def _wait_reader(name: str, mode: str, spin: float, n: int, ready: Any, out: Any) -> None:
    r = attach(name, timeout=30, wait=mode, spin=spin)
    core = r._live_seg().core
    ready.release()
    lat = []
    while len(lat) < n:
        if not r.wait_update(timeout=2.0):
            break
        t = _shm.mono_ns()
        lat.append(t - core.published()[1])
    out.put(lat)
    r.close()


def wake_latency(mode: str = "futex", spin: float = 0.0, n: int = 1000, interval: float = 0.002) -> dict[str, Any]:
    """Publish -> ``wait_update`` returns in another process (us): a publish every
    ``interval`` s, the reader waiting in ``mode`` (``"futex"`` or ``"spin"``)."""
    ctx = mp.get_context("spawn")
    m = Market(100, (60,))
    w = SegmentWriter(_name("wake"), m.engine, m.universe, m.stats, stats_interval=0)
    ready = ctx.Semaphore(0)
    out = ctx.Queue()
    p = ctx.Process(target=_wait_reader, args=(w.name, mode, spin, n, ready, out), daemon=True)
    p.start()
    try:
        if not ready.acquire(timeout=60):
            raise RuntimeError("reader did not attach")
        time.sleep(0.05)
        empty = np.empty(0, dtype=np.int64)
        lat: list[int] = []
        for _ in range(n + 50):
            time.sleep(interval)
            w.publish(empty)
            if not p.is_alive():
                break
        lat = out.get(timeout=30)
    finally:
        p.join(10)
        if p.is_alive():
            p.kill()
        w.close()
    a = np.array(lat[10:], dtype=np.float64) / 1e3
    return {"mode": mode, "spin_us": spin * 1e6, "n": len(a), "p50_us": float(np.percentile(a, 50)),
            "p99_us": float(np.percentile(a, 99)), "max_us": float(a.max())}


def copy_cost(n_rows: int = 12000, windows: tuple[int, ...] = (60, 300, 900), repeat: int = 200) -> dict[str, Any]:
    """Consistent copies from a quiet writer (us, median): all windows in one read
    (``frames()``), one window (``window(W, copy=True)``), and the engine's own
    ``window_copy`` of one window for comparison."""
    m = Market(n_rows, windows)
    w = SegmentWriter(_name("copy"), m.engine, m.universe, m.stats, stats_interval=0)
    try:
        m.warm(5, 1000, w)
        r = attach(w.name, timeout=5)

        def med(f: Any) -> float:
            ts = []
            for _ in range(repeat):
                t = time.perf_counter_ns()
                f()
                ts.append(time.perf_counter_ns() - t)
            return statistics.median(ts) / 1e3

        out = {
            "rows": n_rows, "windows": list(windows),
            "frames_all_windows_us": med(lambda: r.frames()),
            "window_copy_one_us": med(lambda: r.window(windows[0], copy=True)),
            "engine_window_copy_one_us": med(lambda: m.engine.window_copy(windows[0])),
        }
        r.close()
        return out
    finally:
        w.close()


def journal_warm_start(directory: str, seconds: int = 900, n_tickers: int = 12000, per_message: int = 100,
                       windows: tuple[int, ...] = (60, 300, 900)) -> dict[str, Any]:
    """Write a journal of ``seconds`` x ``n_tickers`` Vantafin bars (``per_message`` bars a
    message, receive times ending now), then time a warm start of a fresh full-market
    session from it."""
    from .. import feeds
    from .journal import journal_session, warm_start

    placeholder = b"@@TS@@"
    rng = np.random.default_rng(0)
    tickers = [f"T{i:05d}" for i in range(n_tickers)]
    templates = []
    for _ in range(4):  # a few distinct cross-sections, reused with new timestamps
        c = rng.uniform(10, 500, n_tickers)
        objs = [b'{"type":"live_quote_second","ticker":"%s","open":%.2f,"high":%.2f,"low":%.2f,'
                b'"close":%.2f,"volume":%d,"timestamp":%s}' % (t.encode(), x, x * 1.01, x * 0.99, x, v, placeholder)
                for t, x, v in zip(tickers, c.tolist(), rng.integers(0, 5000, n_tickers).tolist())]
        order = rng.permutation(n_tickers)
        templates.append([b"[" + b",".join(objs[j] for j in order[i:i + per_message]) + b"]"
                          for i in range(0, n_tickers, per_message)])

    def session_of() -> Any:
        engine = Engine(max(16384, n_tickers), windows)
        return feeds.make_session("vantafin", engine, Universe(max(16384, n_tickers)), Stats(), topics=["LS.*"])

    now = time.time_ns()
    first = now // 10**9 - seconds
    rs, close = journal_session(session_of(), directory, "vantafin", "ws://bench", rotate=3600)
    t0 = time.perf_counter()
    for i in range(seconds):
        s = first + i
        ts = b"%d" % (s * 1000)
        recv = (s + 1) * 10**9 + 5_000_000
        for msg in templates[i % len(templates)]:
            rs.writer.message(msg.replace(placeholder, ts), recv)
        rs.writer.flush(timeout=None)
    summary = close()
    write_s = time.perf_counter() - t0
    session = session_of()
    info = warm_start(directory, session, feed="vantafin", depth=max(windows))
    return {"seconds": seconds, "tickers": n_tickers, "journal_bytes": summary["bytes"],
            "journal_messages": summary["messages"], "write_s": write_s, "files": len(info.files),
            "replayed_messages": info.messages, "warm_start_s": info.elapsed,
            "bars": int(session.engine.counters["accepted"]), "T": info.T,
            "bars_per_s": session.engine.counters["accepted"] / info.elapsed}
