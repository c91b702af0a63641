"""Relay benchmarks: overhead on the vendor path, receipt-to-consumer latency, warm start.

Every figure comes from real processes on loopback: the simulator
(``python -m fastfeed.simulator``), the real ``nats-server`` with JetStream, the relay and
the consumers (``fastfeed relay``; consumer processes from ``fastfeed.relay.harness``). On a machine with two or more
cores the vendor-side client is pinned to the first core, the simulator and the NATS
server to the last (as ``fastfeed bench`` does).

* :func:`relay_overhead` — fastfeed's max-rate bars/s on the simulator with and without a
  :class:`RelayPublisher` attached, measured alternately in fresh processes; the ratio
  (relay / plain, target >= 0.90). The relay's publisher thread shares the client's core.
* :func:`relay_overhead_inprocess` — the same captured full-market messages (with their
  read boundaries) through a plain feed session and through a relayed one (real NATS
  server): the vendor thread's CPU for them (the overhead on the vendor path proper),
  and the whole relay process's CPU until every entry is acknowledged.
* :func:`relay_latency` — at the simulator's real cadence (one full-market burst per
  second), for 1, 4 and 16 consumer processes: the time from the relay's socket read
  (``recv_ns``) to the consumer's engine update that applied that read (``on_update``),
  p50/p90/p99 over all consumers' updates.
* :func:`warm_start` — a stream holding ``seconds`` of a full market: seconds until a new
  consumer has applied all of it (target < 20 s for 900 s of 12,000 tickers), and a check
  that its windows equal the relay's.

``python -m fastfeed.relay.bench [--quick] [--json]`` runs all three and prints them.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

from ..bench.orchestration import proc_cpu_s as _proc_cpu_s
from ..bench.orchestration import cores as _cores
from ..bench.orchestration import pin as _pin

__all__ = ["relay_overhead", "relay_overhead_inprocess", "relay_latency", "warm_start", "run_all"]

SIM_KEY = "sim-key"




def _sim(args: list[str]) -> Any:
    from ..simulator.testing import SimProcess

    sp = SimProcess(args, api_key=SIM_KEY).start()
    _pin(sp.proc.pid, _cores()[1])  # type: ignore[union-attr]
    return sp


def _nats(store_dir: Optional[str] = None) -> Any:
    from .natsserver import NatsServer

    srv = NatsServer(store_dir=store_dir).start()
    _pin(srv.proc.pid, _cores()[1])  # type: ignore[union-attr]
    return srv


def _load() -> Optional[list[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ------------------------------------------------------------------ overhead


async def _overhead_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One max-rate measurement in this process: bars/s of a Feed, relayed or not."""
    from .harness import make_feed

    feed = make_feed("vantafin", spec["url"], windows=(60, 300, 900), capacity=16384)
    pub = None
    if spec.get("nats"):
        from .publisher import RelayPublisher, attach_publisher

        pub = RelayPublisher(spec["nats"], "vantafin", buffer_bytes=spec["buffer_bytes"], max_age=600)
        await pub.start_async()
        attach_publisher(feed, pub)
        if spec.get("free_publisher") and pub._thread is not None:
            # the publisher thread may run on any core; the vendor thread stays pinned
            _pin(pub._thread.native_id, set(spec["all_cpus"]))
    await feed.start_async()
    await asyncio.sleep(spec["warmup"])  # the measured span starts after the warm-up
    b0, c0, t0 = feed.stats.bars, time.process_time(), time.perf_counter()
    m0 = time.thread_time()
    p0 = pub.stats() if pub else None
    pc0 = pub.cpu_seconds if pub else 0.0
    await asyncio.sleep(spec["duration"])
    b1, c1, t1 = feed.stats.bars, time.process_time(), time.perf_counter()
    m1 = time.thread_time()
    out: dict[str, Any] = {"bars_per_s": (b1 - b0) / (t1 - t0), "cpu_util": (c1 - c0) / (t1 - t0),
                           "cpu_s_per_m_bars": (c1 - c0) / max(1, b1 - b0) * 1e6}
    if pub is not None:
        p1 = pub.stats()
        out["published_per_s"] = (p1["published"] - p0["published"]) / (t1 - t0)  # type: ignore[index]
        out["dropped_per_s"] = (p1["dropped_messages"] - p0["dropped_messages"]) / (t1 - t0)  # type: ignore[index]
        out["publisher_cpu_s_per_m_bars"] = (pub.cpu_seconds - pc0) / max(1, b1 - b0) * 1e6
    out["main_thread_cpu_s_per_m_bars"] = (m1 - m0) / max(1, b1 - b0) * 1e6
    await feed.close()
    if pub is not None:
        await pub.stop_async(2.0)
    return out


def relay_overhead(*, tickers: int = 12_000, bars_per_frame: int = 100, warmup: float = 1.5,
                   duration: float = 6.0, rounds: int = 2, buffer_mib: int = 256) -> dict[str, Any]:
    """Max-rate bars/s without and with the relay publishing, alternated ``rounds`` times."""
    client, _ = _cores()
    modes = ("plain", "relay", "relay_free")
    res: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    load0 = _load()
    with tempfile.TemporaryDirectory(prefix="ff-relay-bench-") as tmp:
        srv = _nats(tmp)
        try:
            for _ in range(rounds):
                for mode in modes:
                    sim = _sim(["--tickers", str(tickers), "--trade-fraction", "1", "--max-rate",
                                "--bars-per-frame", str(bars_per_frame)])
                    try:
                        spec = {"url": sim.url("vantafin"), "warmup": warmup, "duration": duration,
                                "nats": srv.url if mode != "plain" else None,
                                "free_publisher": mode == "relay_free",
                                "all_cpus": sorted(os.sched_getaffinity(0)),
                                "buffer_bytes": buffer_mib << 20}
                        res[mode].append(_run_worker("overhead", spec, client))
                    finally:
                        sim.stop()
        finally:
            srv.close()
    med = {m: statistics.median(r["bars_per_s"] for r in res[m]) for m in modes}
    cpu = {m: statistics.median(r["cpu_s_per_m_bars"] for r in res[m]) for m in modes}
    return {"plain_bars_per_s": med["plain"], "relay_bars_per_s": med["relay"],
            "relay_free_bars_per_s": med["relay_free"],
            # relay process pinned to the vendor core (publisher thread included)
            "ratio": med["relay"] / med["plain"],
            # publisher thread free to use the other core (vendor thread pinned)
            "ratio_publisher_free": med["relay_free"] / med["plain"],
            # bars per CPU second of the relay process vs plain: the cost, whatever the cores
            "cpu_ratio": cpu["plain"] / cpu["relay"],
            "target_ratio": 0.90, "runs": res, "tickers": tickers, "bars_per_frame": bars_per_frame,
            "loadavg": [load0, _load()]}


def _run_worker(kind: str, spec: dict[str, Any], cpus: Optional[set[int]]) -> dict[str, Any]:
    p = subprocess.Popen([sys.executable, "-m", "fastfeed.relay.bench", "--worker", kind, json.dumps(spec)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _pin(p.pid, cpus)
    out, err = p.communicate(timeout=300)
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"bench worker failed ({p.returncode}): {err[-1500:]}")


def _capture(tickers: int, seconds: int, bars_per_frame: int) -> list[tuple[bytes, int, bool]]:
    """``seconds`` of a full market from the simulator as the transport delivered them:
    ``(payload, recv_ns, last of its socket read)``."""
    from ..simulator.testing import SimThread
    from .harness import make_feed

    out: list[tuple[bytes, int, bool]] = []

    class Capture:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def on_message(self, payload: Any, ns: int) -> None:
            out.append((bytes(payload), ns, False))
            self.inner.on_message(payload, ns)

        def on_buffer_end(self) -> None:
            if out:
                out[-1] = out[-1][:2] + (True,)
            self.inner.on_buffer_end()

    async def grab(url: str) -> None:
        feed = make_feed("vantafin", url, windows=(60, 300, 900), capacity=16384)
        feed.session = Capture(feed.session)
        await feed.start_async()
        while feed.stats.bars < seconds * tickers:
            await asyncio.sleep(0.05)
        await feed.close()

    with SimThread(n_tickers=tickers, trade_fraction=1.0, bars_per_frame=bars_per_frame, max_rate=True,
                   max_seconds=seconds + 5, record=False) as sim:
        asyncio.run(grab(sim.url("vantafin")))
    return out


def relay_overhead_inprocess(*, tickers: int = 12_000, seconds: int = 40, bars_per_frame: int = 100,
                             rounds: int = 5) -> dict[str, Any]:
    """The relay's cost on the vendor path without the simulator's or the network's noise:
    the same captured messages (with their read boundaries) driven through a plain feed
    session and through one behind a started :class:`RelayPublisher` (real NATS server on
    the other core), alternately; the relay's time runs until everything is acknowledged.
    ``ratio`` = plain time / relay time (= relayed bars/s ÷ plain bars/s)."""
    from .harness import make_feed
    from .publisher import RelayPublisher

    msgs = _capture(tickers, seconds, bars_per_frame)
    client, _ = _cores()
    before = os.sched_getaffinity(0)
    modes = ("plain", "relay", "relay_free")
    # per round: (vendor-thread CPU s for the whole drive, process CPU s until acknowledged)
    times: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="ff-relay-inproc-") as tmp:
        srv = _nats(tmp)
        _pin(0, client)
        try:
            for _ in range(rounds):
                for mode in modes:
                    feed = make_feed("vantafin", "ws://127.0.0.1:9/v1/stocks", windows=(60, 300, 900),
                                     capacity=16384)
                    session, pub = feed.session, None
                    if mode != "plain":
                        pub = RelayPublisher(srv.url, "vantafin", max_age=600, heartbeat=0).start()
                        session = pub.wrap(session)
                        if mode == "relay_free" and pub._thread is not None:
                            _pin(pub._thread.native_id, before)  # the publisher may use any core
                    session.defer_until_buffer_end = True
                    on_message, end = session.on_message, session.on_buffer_end
                    m0, c0 = time.thread_time(), time.process_time()
                    for payload, ns, last in msgs:
                        on_message(memoryview(payload), ns)
                        if last:
                            end()
                    end()
                    m1 = time.thread_time()
                    while pub is not None and (pub.buffered_bytes or pub.acked_through < pub._seq):
                        time.sleep(0.001)  # polling the publisher's progress (measured span)
                    times[mode].append((m1 - m0, time.process_time() - c0))
                    if pub is not None:
                        pub.stop(5)
        finally:
            os.sched_setaffinity(0, before)
            srv.close()
    bars = seconds * tickers
    vendor = {m: statistics.median(t for t, _ in times[m]) for m in modes}
    total = {m: statistics.median(c for _, c in times[m]) for m in modes}
    return {"messages": len(msgs), "bars": bars,
            # the vendor thread's CPU for the same messages: the relay's cost on the vendor
            # path when its publisher thread has a core of its own
            "vendor_thread_ratio": vendor["plain"] / vendor["relay_free"],
            # and with the publisher thread on the vendor's core (GIL and cache shared)
            "vendor_thread_ratio_same_core": vendor["plain"] / vendor["relay"],
            # bars per CPU second of the whole relay process (publishing included) vs plain
            "process_cpu_ratio": total["plain"] / total["relay"],
            "vendor_thread_us_per_message": {m: vendor[m] / len(msgs) * 1e6 for m in modes},
            "process_cpu_us_per_message": {m: total[m] / len(msgs) * 1e6 for m in modes},
            "target_ratio": 0.90, "rounds": rounds, "loadavg": _load()}


# ------------------------------------------------------------------ latency


def _percentiles(samples_ns: list[int]) -> dict[str, Any]:
    import numpy as np

    if not samples_ns:
        return {"count": 0}
    a = np.asarray(samples_ns, dtype=np.float64) / 1e6
    return {"count": int(a.size), "p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}


def relay_latency(*, consumers: tuple[int, ...] = (1, 4, 16), tickers: int = 12_000, seconds: float = 20.0,
                  bars_per_frame: int = 100) -> dict[str, Any]:
    """Relay receipt -> consumer engine updated, at real cadence, for each consumer count."""
    from .harness import HarnessProcess

    out: dict[str, Any] = {"tickers": tickers, "seconds": seconds, "loadavg_start": _load(), "cases": {}}
    client, _ = _cores()
    with tempfile.TemporaryDirectory(prefix="ff-relay-lat-") as tmp:
        srv = _nats(os.path.join(tmp, "js"))
        sim = _sim(["--tickers", str(tickers), "--trade-fraction", "1", "--speed", "1",
                    "--bars-per-frame", str(bars_per_frame)])
        relay = HarnessProcess("relay", ["--url", sim.url("vantafin"), "--nats", srv.url,
                                         "--windows", "60,300,900", "--status-every", "1"]).start()
        try:
            _pin(relay.proc.pid, client)  # type: ignore[union-attr]
            relay.wait(lambda s: s["bars"] >= tickers, 60, "relay receiving")
            for n in consumers:
                files = [os.path.join(tmp, f"lat-{n}-{i}.json") for i in range(n)]
                procs = [HarnessProcess("consume", ["--nats", srv.url, "--windows", "60,300,900",
                                                    "--capacity", "16384", "--latency",
                                                    "--latency-out", f, "--status-every", "1"]).start()
                         for f in files]
                try:
                    for p in procs:
                        p.wait(lambda s: s["caught_up"] and s["bars"] > 0, 120, "consumer live")
                    t_end = time.monotonic() + seconds
                    while time.monotonic() < t_end:  # the measured span: real-time bursts
                        relay.wait(lambda s: True, 5)
                        time.sleep(0.5)
                finally:
                    for p in procs:
                        p.stop(60)
                samples: list[int] = []
                for f in files:
                    try:
                        with open(f) as fh:
                            samples += json.load(fh)
                    except (OSError, ValueError):
                        pass
                out["cases"][str(n)] = _percentiles(samples)
        finally:
            relay.stop()
            sim.stop()
            srv.close()
    out["loadavg_end"] = _load()
    return out


# ------------------------------------------------------------------ warm start


def warm_start(*, seconds: int = 900, tickers: int = 12_000, bars_per_frame: int = 100,
               check: bool = True) -> dict[str, Any]:
    """Fill a stream with ``seconds`` of a full market through a relay, then time a new
    consumer from start to all applied (and compare its windows with the relay's)."""
    from .harness import HarnessProcess, same_windows

    out: dict[str, Any] = {"seconds_of_stream": seconds, "tickers": tickers, "loadavg_start": _load()}
    windows = "60,300,900" if seconds >= 900 else "60"
    with tempfile.TemporaryDirectory(prefix="ff-relay-warm-") as tmp:
        srv = _nats(os.path.join(tmp, "js"))
        sim = _sim(["--tickers", str(tickers), "--trade-fraction", "1", "--max-rate",
                    "--max-seconds", str(seconds), "--bars-per-frame", str(bars_per_frame)])
        relay = HarnessProcess("relay", ["--url", sim.url("vantafin"), "--nats", srv.url,
                                         "--windows", windows, "--buffer", "4096", "--status-every", "0.5",
                                         "--windows-out", os.path.join(tmp, "r.json")]).start()
        try:
            t0 = time.monotonic()
            want = seconds * tickers
            st = relay.wait(lambda s: s["bars"] >= want and s["buffered_bytes"] == 0
                            and s["acked_through"] == s["last_seq"], 900, "stream filled")
            out["fill_s"] = round(time.monotonic() - t0, 2)
            out["relay_dropped"] = st["dropped_messages"]
            out["entries"] = st["last_seq"]
            t1 = time.monotonic()
            cons = HarnessProcess("consume", ["--nats", srv.url, "--windows", windows, "--capacity", "16384",
                                              "--warm-start", str(seconds + 300), "--status-every", "0.2"]).start()
            try:
                target = st["acked_through"]
                c = cons.wait(lambda s: s["relay_seq"] >= target, 600, "warm start done")
                out["warm_start_s"] = round(time.monotonic() - t1, 2)
                # CPU seconds of the consumer process (start-up included): the figure a
                # loaded machine does not inflate
                out["warm_start_cpu_s"] = _proc_cpu_s(cons.proc.pid)  # type: ignore[union-attr]
                out["bars"] = c["bars"]
                out["bars_per_s"] = round(c["bars"] / out["warm_start_s"])
                if check:
                    a = relay.dump(os.path.join(tmp, "r.json"))
                    b = cons.dump(os.path.join(tmp, "c.json"))
                    out["windows_equal"] = not same_windows(a, b)
            finally:
                cons.stop()
        finally:
            relay.stop()
            sim.stop()
            srv.close()
    out["target_s"] = 20.0
    out["loadavg_end"] = _load()
    return out


def run_all(quick: bool = False) -> dict[str, Any]:
    """All three, as ``fastfeed bench`` reports them (``quick``: shorter, fewer consumers)."""
    if quick:
        return {"overhead": relay_overhead(duration=3.0, rounds=1),
                "overhead_inprocess": relay_overhead_inprocess(seconds=15, rounds=3),
                "latency": relay_latency(consumers=(1, 4), seconds=8.0),
                "warm_start": warm_start(seconds=120)}
    return {"overhead": relay_overhead(), "overhead_inprocess": relay_overhead_inprocess(),
            "latency": relay_latency(), "warm_start": warm_start()}


def _main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastfeed.relay.bench")
    p.add_argument("--worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", choices=("overhead", "overhead_inprocess", "latency", "warm_start"))
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if a.worker:
        import logging

        logging.basicConfig(level=logging.ERROR)
        res = asyncio.run(_overhead_worker(json.loads(a.worker[1])))
        print(json.dumps(res), flush=True)
        return 0
    if a.only:
        fn = {"overhead": relay_overhead, "overhead_inprocess": relay_overhead_inprocess,
              "latency": relay_latency, "warm_start": warm_start}[a.only]
        doc = {a.only: fn()}
    else:
        doc = run_all(a.quick)
    print(json.dumps(doc, indent=None if a.json else 2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
