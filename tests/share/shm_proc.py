"""Processes for the shared-memory tests (run as scripts): a writer fed by a real
Engine with a deterministic stream of random bars, and readers.

    python shm_proc.py writer NAME --seed 1 --batches 500 [--pace 0.001]
    python shm_proc.py sample NAME --out FILE --samples 40
    python shm_proc.py watch NAME --duration 20

Every line on stdout is one JSON object; ``mono`` fields are ``time.monotonic()``
(CLOCK_MONOTONIC, the same clock in every process).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time

import numpy as np

from fastfeed._ext.engine import Engine
from fastfeed.share import SegmentBusy, attach
from fastfeed.share.writer import SegmentWriter
from fastfeed.engine import Stats
from fastfeed.engine import Universe

T0 = 1_700_000_000
WINDOWS = (10, 30, 60)
FIELDS = ("open", "high", "low", "close", "volume", "vwap", "count")


def say(**kw) -> None:
    print(json.dumps(kw), flush=True)


def make_engine(rows: int) -> tuple[Engine, Universe, Stats]:
    engine = Engine(rows, WINDOWS, depth=60, prefault=False)
    universe = Universe(rows)
    for i in range(rows):
        universe.row(f"X{i:04d}")
    return engine, universe, Stats()


def batches(seed: int, rows: int, batch: int = 50, per_second: int = 20):
    """Deterministic upsert batches: mostly bars for the current second, some late
    bars and corrections for the last 5 seconds; the clock moves every ``per_second``."""
    rng = np.random.default_rng(seed)
    T = T0
    i = 0
    while True:
        r = rng.choice(rows, batch, replace=False).astype(np.int64)
        secs = np.where(rng.random(batch) < 0.8, T, T - rng.integers(1, 6, batch)).astype(np.int64)
        c = rng.uniform(10.0, 20.0, batch)
        h = c * (1 + rng.uniform(0, 0.02, batch))
        lo = c * (1 - rng.uniform(0, 0.02, batch))
        o = rng.uniform(lo, h)
        v = rng.uniform(0.0, 100.0, batch)
        yield r, secs, o, h, lo, c, v, v * rng.uniform(lo, h)
        i += 1
        if i % per_second == 0:
            T += 1


def run_writer(a: argparse.Namespace) -> int:
    engine, universe, stats = make_engine(a.rows)
    try:
        w = SegmentWriter(a.name, engine, universe, stats, feed="test", stats_interval=0,
                          heartbeat_interval=a.heartbeat)
    except SegmentBusy as e:
        print(f"busy: {e}", file=sys.stderr, flush=True)
        return 3
    signal.signal(signal.SIGTERM, lambda *_: (w.close(), sys.exit(0)))
    say(event="ready", pid=os.getpid(), epoch=w.epoch, generation=w.generation, reclaimed=w.reclaimed,
        mono=time.monotonic())
    if a.wait_go:
        sys.stdin.readline()
    gen = batches(a.seed, a.rows)
    for _ in range(a.batches):
        b = next(gen)
        engine.upsert(*b)
        stats.bars += len(b[0])
        w.publish()
        if a.pace:
            time.sleep(a.pace)
    w.publish_stats()
    say(event="done", generation=w.generation, T=int(engine.T), readers=w.readers, mono=time.monotonic())
    if a.exit:
        return 0  # no close(): the interpreter's exit must remove the segment by itself
    while True:
        line = sys.stdin.readline()
        if not line:
            break
        cmd = line.strip()
        if cmd == "readers":
            say(event="readers", readers=w.readers)
        elif cmd == "close":
            w.close()
            say(event="closed")
            break
    w.close()
    return 0


def run_sample(a: argparse.Namespace) -> int:
    """Consistent copies (all windows at once) and stable zero-copy reads under load."""
    r = attach(a.name, timeout=30)
    say(event="attached", epoch=r.epoch, mono=time.monotonic())
    gens: list[int] = []
    kinds: list[int] = []
    data: dict[str, list[np.ndarray]] = {f"{w}.{f}": [] for w in WINDOWS for f in FIELDS}
    last = -1
    deadline = time.monotonic() + a.duration
    zero_copy_unstable = 0
    quiet_since = time.monotonic()
    while len(gens) < a.samples and time.monotonic() < deadline:
        if r.generation == last and time.monotonic() - quiet_since > 1.0:
            break  # the writer stopped publishing
        zc = len(gens) % 2 == 1
        if zc:
            frames = {w: r.window(w) for w in WINDOWS[:1]}
            cols = {f"{WINDOWS[0]}.{f}": np.array(getattr(frames[WINDOWS[0]], f)) for f in FIELDS}
            if not frames[WINDOWS[0]].stable():
                zero_copy_unstable += 1
                continue
            g = frames[WINDOWS[0]].generation
        else:
            frames = r.frames()
            g = frames[WINDOWS[0]].generation
            cols = {f"{w}.{f}": np.array(getattr(frames[w], f)) for w in WINDOWS for f in FIELDS}
        if g == last:
            continue
        last = g
        quiet_since = time.monotonic()
        gens.append(g)
        kinds.append(1 if zc else 0)
        for key in data:  # zero-copy samples hold the first window only
            data[key].append(cols[key] if key in cols else np.zeros_like(cols[next(iter(cols))]))
        time.sleep(a.gap)
    np.savez(a.out, generation=np.array(gens), zero_copy=np.array(kinds),
             **{k: np.array(v) for k, v in data.items()})
    say(event="sampled", samples=len(gens), zero_copy_unstable=zero_copy_unstable,
        retries=int(r._live_seg().core.retries))
    r.close()
    return 0


def run_watch(a: argparse.Namespace) -> int:
    """Attach (waiting for a writer), then report writer_gone / reattached with times."""
    def on_event(kind: str, info: dict) -> None:
        say(event=kind, mono=time.monotonic(), **{k: v for k, v in info.items() if k != "heartbeat_age"})

    say(event="started", pid=os.getpid(), mono=time.monotonic())
    r = attach(a.name, timeout=a.attach_timeout, on_event=on_event, gone_after=a.gone_after)
    say(event="attached", epoch=r.epoch, T=r.T, mono=time.monotonic(), slot=r._live_seg().core.slot)
    deadline = time.monotonic() + a.duration
    epoch = r.epoch
    while time.monotonic() < deadline:
        if r.wait_update(timeout=0.2) and r.epoch != epoch:
            epoch = r.epoch
            say(event="new_data", epoch=epoch, T=r.T, mono=time.monotonic())
    r.close()
    return 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("writer", "sample", "watch"))
    p.add_argument("name")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rows", type=int, default=500)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--pace", type=float, default=0.0)
    p.add_argument("--heartbeat", type=float, default=0.1)
    p.add_argument("--exit", action="store_true", help="writer: exit after the batches, without close()")
    p.add_argument("--wait-go", action="store_true", help="writer: publish only after a line on stdin")
    p.add_argument("--out")
    p.add_argument("--samples", type=int, default=40)
    p.add_argument("--gap", type=float, default=0.0)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--attach-timeout", type=float, default=30.0)
    p.add_argument("--gone-after", type=float, default=1.0)
    a = p.parse_args()
    return {"writer": run_writer, "sample": run_sample, "watch": run_watch}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
