"""``fastfeed bench``: fastfeed and its peers on the same simulated market, same machine, same run.

Layout of a run (docs/BENCHMARKS.md has the definitions):

* every case gets a **fresh simulator process** (``python -m fastfeed.simulator``) with
  the same seed, so every client receives byte-identical data; on a machine with two or
  more cores the simulator is pinned to the last core and the client to core 0
  (``os.sched_setaffinity``);
* every client runs in its **own worker process** (``python -m fastfeed.bench.orchestration
  --worker SPEC``) so that CPU time and peak RSS belong to that client alone; the worker
  prints one JSON line with its measurements;
* ``throughput`` cases: the simulator in max-rate mode (every ticker trades every second,
  sends as fast as the client reads, TCP flow control); after a warm-up the worker samples
  its processed-bar counter every ``interval`` seconds for ``duration`` seconds;
* ``cadence`` cases: the simulator at ``--speed`` (time compression), one full-universe
  burst per simulated second; the worker measures each burst from the receive time of its
  first message to the moment the last of its bars has been applied.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

__all__ = ["BenchConfig", "Case", "plan", "run_bench", "run_case", "worker_main"]

SIM_KEY = "sim-key"


# ------------------------------------------------------------------------------------------
# configuration and plan
# ------------------------------------------------------------------------------------------


@dataclass
class BenchConfig:
    """What one ``fastfeed bench`` run measures."""

    quick: bool = False
    tickers: int = 12_000
    bars_per_frame: tuple[int, ...] = (1, 100)
    windows: tuple[int, ...] = (60, 300, 900)
    warmup: float = 1.5  # seconds of each throughput case not measured
    duration: float = 6.0  # seconds measured per throughput case
    interval: float = 0.25  # sampling interval inside the measured span
    speed: float = 10.0  # cadence: simulated seconds per wall second
    bursts: int = 120  # cadence: bursts measured (after skip)
    skip_bursts: int = 3  # cadence: first bursts not measured (warm-up)
    cadence_bars_per_frame: tuple[int, ...] = (100, 1)
    peers: tuple[str, ...] = ("floor", "websockets-json", "massive", "massive-raw")
    peer_cadence: bool = True  # also measure the peers' burst latency (at speed 1)
    peer_bursts: int = 10
    seed: int = 0
    case_timeout: float = 120.0
    #: max-rate cases of these dialects are served from recorded simulator frames (see
    #: "frame cache" below), for a simulator whose encoder is slower than the clients
    #: (its Massive encoder was, before it got a C encoder); empty: the simulator serves all
    cached_dialects: tuple[str, ...] = ()
    cache_seconds: int = 20
    #: a max-rate case whose client did not get its core (contended) is measured again
    retries: int = 2
    #: no retry starts after this many seconds of the run (None: no limit)
    retry_budget_s: Optional[float] = None

    @classmethod
    def quick_config(cls, **kw: Any) -> "BenchConfig":
        base = dict(quick=True, warmup=0.5, duration=2.0, bursts=30, skip_bursts=2,
                    cadence_bars_per_frame=(100,), peer_bursts=4, case_timeout=30.0, retries=1,
                    retry_budget_s=60.0, cache_seconds=10)
        base.update(kw)
        return cls(**base)


@dataclass
class Case:
    """One measurement: a client on a dialect, in a mode, with a simulator configuration."""

    mode: str  # "throughput" | "cadence"
    client: str  # "fastfeed" | "floor" | "websockets-json" | "massive" | "massive-raw"
    dialect: str  # "vantafin" | "massive"
    bars_per_frame: int
    speed: float = 0.0  # cadence only

    @property
    def label(self) -> str:
        if self.mode == "throughput":
            return f"{self.client} [{self.dialect}, {self.bars_per_frame} bars/frame, max rate]"
        return f"{self.client} [{self.dialect}, {self.bars_per_frame} bars/frame, bursts at {self.speed:g}x]"


#: the client each peer is compared with, and on which dialect
PEER_DIALECT = {
    "floor": "vantafin",
    "websockets-json": "vantafin",
    "massive": "massive",
    "massive-raw": "massive",
}


def plan(cfg: BenchConfig) -> list[Case]:
    """The cases of a run, fastfeed first for each dialect and frame size."""
    cases: list[Case] = []
    peers = [p for p in cfg.peers if p in PEER_DIALECT]
    for bpf in cfg.bars_per_frame:
        cases.append(Case("throughput", "fastfeed", "vantafin", bpf))
        if "floor" in peers:
            cases.append(Case("throughput", "floor", "vantafin", bpf))
        if "websockets-json" in peers and (bpf == 100 or not cfg.quick):
            cases.append(Case("throughput", "websockets-json", "vantafin", bpf))
    if any(p in peers for p in ("massive", "massive-raw")):
        mbpf = 100 if 100 in cfg.bars_per_frame else cfg.bars_per_frame[-1]
        cases.append(Case("throughput", "fastfeed", "massive", mbpf))
        for p in ("massive", "massive-raw"):
            if p in peers:
                cases.append(Case("throughput", p, "massive", mbpf))
    for bpf in cfg.cadence_bars_per_frame:
        cases.append(Case("cadence", "fastfeed", "vantafin", bpf, cfg.speed))
    if cfg.peer_cadence:
        for p in ("websockets-json", "massive"):
            if p in peers:
                cases.append(Case("cadence", p, PEER_DIALECT[p], 100, 1.0))
    return cases


# ------------------------------------------------------------------------------------------
# processes and cores
# ------------------------------------------------------------------------------------------


def cores() -> tuple[Optional[set[int]], Optional[set[int]]]:
    """(client cores, simulator cores); (None, None) when there is one core or no affinity."""
    try:
        avail = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None
    if len(avail) < 2:
        return None, None
    return {avail[0]}, {avail[-1]}


def _pin(pid: int, cpus: Optional[set[int]]) -> None:
    if cpus:
        try:
            os.sched_setaffinity(pid, cpus)
        except OSError:
            pass


def sim_args(cfg: BenchConfig, case: Case) -> list[str]:
    args = ["--tickers", str(cfg.tickers), "--trade-fraction", "1", "--seed", str(cfg.seed),
            "--bars-per-frame", str(case.bars_per_frame)]
    if case.mode == "throughput":
        args.append("--max-rate")
    else:
        args += ["--speed", f"{case.speed:g}"]
    return args


def run_case(cfg: BenchConfig, case: Case, *, python: str = sys.executable) -> dict[str, Any]:
    """Start a simulator, run the worker for ``case``, return the worker's result.

    Never raises for a failed case: the result then has an ``error`` (one line).
    """
    try:
        return _run_case(cfg, case, python)
    except Exception as e:  # noqa: BLE001 - e.g. the simulator did not start
        return {"case": asdict(case), "error": f"{type(e).__name__}: {e}"}


def _run_case(cfg: BenchConfig, case: Case, python: str) -> dict[str, Any]:
    from fastfeed.simulator.testing import SimProcess

    client_cpus, sim_cpus = cores()
    use_cache = case.mode == "throughput" and case.dialect in cfg.cached_dialects
    if use_cache:
        server: Any = CacheProcess({"dialect": case.dialect, "tickers": cfg.tickers, "seed": cfg.seed,
                                    "bars_per_frame": case.bars_per_frame, "api_key": SIM_KEY,
                                    "seconds": cfg.cache_seconds})
    else:
        server = SimProcess(sim_args(cfg, case), api_key=SIM_KEY)
    with server as sim:
        assert sim.proc is not None
        _pin(sim.proc.pid, sim_cpus)
        url = sim.urls[case.dialect]  # no key in the URL: every client sends the auth message
        spec = {
            "case": asdict(case),
            "url": url,
            "api_key": SIM_KEY,
            "tickers": cfg.tickers,
            "windows": list(cfg.windows),
            "warmup": cfg.warmup,
            "duration": cfg.duration,
            "interval": cfg.interval,
            "bursts": cfg.bursts if case.client == "fastfeed" else cfg.peer_bursts,
            "skip_bursts": cfg.skip_bursts if case.client == "fastfeed" else 1,
            "timeout": cfg.case_timeout,
            "cpus": sorted(client_cpus) if client_cpus else None,
        }
        t0 = time.perf_counter()
        load0 = _loadavg()
        srv0 = _proc_cpu_s(sim.proc.pid)
        proc = subprocess.Popen(
            [python, "-m", "fastfeed.bench.orchestration", "--worker", json.dumps(spec)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            out, err = proc.communicate(timeout=cfg.case_timeout + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            return {"case": asdict(case), "error": "worker timed out", "stderr": err[-2000:]}
        srv1 = _proc_cpu_s(sim.proc.pid)
        t1 = time.perf_counter()
    result: dict[str, Any] | None = None
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
                break
            except ValueError:
                continue
    if result is None:
        return {"case": asdict(case), "error": f"worker exited {proc.returncode} without a result",
                "stderr": err[-2000:]}
    result["case"] = asdict(case)
    result["source"] = "frame-cache" if use_cache else "simulator"
    result["wall_s"] = round(time.perf_counter() - t0, 3)
    result["loadavg_1m"] = [load0, _loadavg()]
    # the server's CPU share over the worker's life (connect + warm-up + measurement)
    result["server_cpu_util"] = (round((srv1 - srv0) / (t1 - t0), 3)
                                 if srv0 is not None and srv1 is not None else None)
    return result


def _proc_cpu_s(pid: int) -> Optional[float]:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def contended(r: dict[str, Any]) -> bool:
    """The client used < 85% of its core while the server was not busy: another process had it."""
    cu, su = r.get("cpu_util"), r.get("server_cpu_util")
    return bool(cu is not None and cu < 0.85 and su is not None and su < 0.75)


def _loadavg() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        ncpu = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        ncpu = os.cpu_count() or 1
    client_cpus, sim_cpus = cores()
    info: dict[str, Any] = {
        "cpu": cpu, "cores": ncpu, "python": platform.python_version(),
        "platform": platform.platform(),
        "client_cores": sorted(client_cpus) if client_cpus else None,
        "simulator_cores": sorted(sim_cpus) if sim_cpus else None,
    }
    versions = {}
    for mod in ("fastfeed", "picows", "msgspec", "numpy", "websockets", "massive"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod)
        except Exception:  # noqa: BLE001 - not installed
            versions[mod] = None
    info["versions"] = versions
    return info


def run_bench(cfg: BenchConfig, *, progress: Optional[Callable[[int, int, Case, Optional[dict]], None]] = None,
              command: str = "fastfeed bench") -> dict[str, Any]:
    """Run every case of :func:`plan` and return the result document (see report.py)."""
    from .report import summarize

    cases = plan(cfg)
    results = []
    t0 = time.perf_counter()
    for i, case in enumerate(cases):
        if progress:
            progress(i, len(cases), case, None)
        r = run_case(cfg, case)
        tries = 1
        while (tries <= cfg.retries and case.mode == "throughput" and contended(r)
               and (cfg.retry_budget_s is None or time.perf_counter() - t0 < cfg.retry_budget_s)):
            # another process took the client's core: measure again, keep the cleaner run
            r2 = run_case(cfg, case)
            tries += 1
            if (r2.get("cpu_util") or 0) > (r.get("cpu_util") or 0):
                r = r2
        r["attempts"] = tries
        results.append(r)
        if progress:
            progress(i + 1, len(cases), case, r)
    doc = {
        "command": command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - (time.perf_counter() - t0))),
        "elapsed_s": round(time.perf_counter() - t0, 1),
        "machine": machine_info(),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "results": results,
    }
    doc["summary"] = summarize(doc)
    return doc


# ------------------------------------------------------------------------------------------
# frame cache: the simulator's Massive frames, recorded once and replayed from memory
# ------------------------------------------------------------------------------------------
#
# When the simulator encodes a dialect slower than the clients consume it (its Massive
# encoder was pure Python, about 0.35 M bars/s, until it got a C encoder), a max-rate
# comparison on that dialect would measure the simulator.  ``--cache-server`` records
# ``seconds`` seconds of the simulator's own frames (same seed, same bytes) and serves them
# at max rate, second after second, shifting the per-second timestamps ("s"/"e", same digit
# count, so frame lengths do not change) so the stream moves forward like the simulator's.
# The handshake is the simulator's (connected / auth / subscribe statuses, arrays).


def _record_frames(url: str, api_key: str, dialect: str, seconds: int, tickers: int) -> list[list[bytes]]:
    """Collect ``seconds`` full seconds of data messages from a simulator (grouped by second)."""
    import re

    from picows import WSListener, WSMsgType, ws_connect

    key_re = re.compile(rb'"s":(\d{13})' if dialect == "massive" else rb'"timestamp":(\d{13})')
    by_second: dict[int, list[bytes]] = {}
    done: Optional[asyncio.Event] = None  # created in go()

    class L(WSListener):  # type: ignore[misc]
        def on_ws_connected(self, t: Any) -> None:
            t.send(WSMsgType.TEXT, json.dumps({"action": "auth", "params": api_key}).encode())
            topic = "A.*" if dialect == "massive" else "LS.*"
            t.send(WSMsgType.TEXT, json.dumps({"action": "subscribe", "params": topic}).encode())

        def on_ws_frame(self, t: Any, frame: Any) -> None:
            if frame.msg_type != WSMsgType.TEXT:
                return
            data = frame.get_payload_as_bytes()
            m = key_re.search(data)
            if m is None:
                return
            by_second.setdefault(int(m.group(1)), []).append(data)
            if len(by_second) > seconds + 1 and done is not None:
                done.set()
                t.disconnect()

    async def go() -> None:
        nonlocal done
        done = asyncio.Event()
        t, _ = await ws_connect(L, url, max_frame_size=64 << 20)
        await asyncio.wait_for(done.wait(), 120)
        try:
            t.disconnect()
        except Exception:  # noqa: BLE001
            pass

    asyncio.run(go())
    keys = sorted(by_second)[:seconds]
    out = [by_second[k] for k in keys]
    for k, msgs in zip(keys, out):
        n = sum(m.count(b'"ev":"A"') if dialect == "massive" else m.count(b"live_quote_second") for m in msgs)
        if n != tickers:
            raise RuntimeError(f"recorded second {k} has {n} bars, expected {tickers}")
    return out


def _frame(payload: bytes) -> bytes:
    import struct

    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


async def _serve_cache(seconds_msgs: list[list[bytes]], dialect: str, api_key: str, path: str) -> None:
    import re

    from picows import WSListener, WSMsgType, ws_create_server

    key_re = re.compile(rb'"s":(\d{13})' if dialect == "massive" else rb'"timestamp":(\d{13})')
    chunks = []
    for msgs in seconds_msgs:
        s_ms = int(key_re.search(msgs[0]).group(1))  # type: ignore[union-attr]
        chunks.append((s_ms, b"".join(_frame(m) for m in msgs)))
    first_ms = chunks[0][0]
    K = len(chunks)

    def status(st: str, msg: str) -> bytes:
        if dialect == "massive":
            return json.dumps([{"ev": "status", "status": st, "message": msg}]).encode()
        return json.dumps({"type": "status", "status": st, "message": msg}).encode()

    class Conn(WSListener):  # type: ignore[misc]
        def __init__(self) -> None:
            self.t: Any = None
            self.can_write = asyncio.Event()
            self.can_write.set()
            self.task: Optional[asyncio.Task] = None
            self.authed = False

        def on_ws_connected(self, t: Any) -> None:
            self.t = t
            t.send(WSMsgType.TEXT, status("connected", "Connected Successfully"))

        def on_ws_frame(self, t: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.CLOSE:
                t.send_close(frame.get_close_code())
                t.disconnect()
                return
            if frame.msg_type != WSMsgType.TEXT:
                return
            try:
                m = json.loads(frame.get_payload_as_bytes())
            except ValueError:
                return
            if m.get("action") == "auth":
                if m.get("params") == api_key:
                    self.authed = True
                    t.send(WSMsgType.TEXT, status("auth_success", "authenticated"))
                else:
                    t.send(WSMsgType.TEXT, status("auth_failed", "authentication failed"))
                    t.send_close(1008)
                    t.disconnect()
            elif m.get("action") == "subscribe" and self.authed:
                t.send(WSMsgType.TEXT, status("success", f"subscribed to: {m.get('params')}"))
                if self.task is None:
                    self.task = asyncio.get_running_loop().create_task(self.stream())

        def on_ws_disconnected(self, t: Any) -> None:
            if self.task is not None:
                self.task.cancel()

        def pause_writing(self) -> None:
            self.can_write.clear()

        def resume_writing(self) -> None:
            self.can_write.set()

        async def stream(self) -> None:
            ut = self.t.underlying_transport
            i = 0
            while True:
                s_ms, data = chunks[i % K]
                new_ms = first_ms + i * 1000
                if new_ms != s_ms:
                    if dialect == "massive":
                        data = data.replace(b'"s":%d' % s_ms, b'"s":%d' % new_ms).replace(
                            b'"e":%d' % (s_ms + 1000), b'"e":%d' % (new_ms + 1000))
                    else:
                        data = data.replace(b'"timestamp":%d' % s_ms, b'"timestamp":%d' % new_ms)
                ut.write(data)
                i += 1
                if not self.can_write.is_set():
                    await self.can_write.wait()
                else:
                    await asyncio.sleep(0)

    def factory(req: Any) -> Optional[Conn]:
        p = req.path.decode("latin-1") if isinstance(req.path, bytes) else str(req.path)
        return Conn() if p.split("?")[0] == path else None

    server = await ws_create_server(factory, "127.0.0.1", 0, max_frame_size=1 << 20)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": port, "urls": {dialect: f"ws://127.0.0.1:{port}{path}"}}), flush=True)
    stop = asyncio.Event()
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    await stop.wait()
    server.close()


def cache_server_main(spec: dict[str, Any]) -> None:
    """Start a simulator in-process, record ``seconds`` of ``dialect``, stop it, serve the cache."""
    from fastfeed.simulator.server import FEEDS
    from fastfeed.simulator.testing import SimThread

    dialect = spec["dialect"]
    with SimThread(n_tickers=spec["tickers"], trade_fraction=1.0, bars_per_frame=spec["bars_per_frame"],
                   max_rate=True, seed=spec["seed"], api_key=spec["api_key"], record=False) as sim:
        url = sim.url(dialect, api_key=None)
        msgs = _record_frames(url, spec["api_key"], dialect, spec["seconds"], spec["tickers"])
    asyncio.run(_serve_cache(msgs, dialect, spec["api_key"], FEEDS[dialect]))


class CacheProcess:
    """``python -m fastfeed.bench.orchestration --cache-server SPEC`` as a child (like SimProcess)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.proc: Optional[subprocess.Popen[str]] = None
        self.urls: dict[str, str] = {}

    def __enter__(self) -> "CacheProcess":
        self.proc = subprocess.Popen([sys.executable, "-m", "fastfeed.bench.orchestration", "--cache-server",
                                      json.dumps(self.spec)], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            self.__exit__()
            raise RuntimeError("frame cache server did not start")
        self.urls = json.loads(line)["urls"]
        return self

    def __exit__(self, *exc: Any) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


# ------------------------------------------------------------------------------------------
# the worker (runs in its own process)
# ------------------------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


class BurstTracker:
    """Burst → cross-section-ready latency (ns) of full-universe bursts.

    ``add(T, n, recv_ns, last_recv_ns)`` is called after bars were applied: ``T`` the
    clock after them (the burst's second), ``n`` bars applied, ``recv_ns`` the receive
    time (``time.time_ns()``) of the first message they came from, ``last_recv_ns`` of the
    last (default: the same).  A burst is ready when ``expected``
    bars of its second have been applied; its latency is ``time.time_ns()`` then minus
    the ``recv_ns`` of its first message.
    """

    def __init__(self, expected: int, skip: int = 2, keep: int = 100_000) -> None:
        from hdrh.histogram import HdrHistogram

        self.expected = expected
        self.skip = skip
        self.keep = keep
        self.hist = HdrHistogram(1_000, 600_000_000_000, 3)  # 1 µs .. 600 s, in ns
        # decomposition: first -> last message arrival of the burst, and last arrival -> ready
        self.span_hist = HdrHistogram(1_000, 600_000_000_000, 3)
        self.tail_hist = HdrHistogram(1_000, 600_000_000_000, 3)
        self.last = 0
        self.samples: list[int] = []
        self.cur: Optional[int] = None
        self.first = 0
        self.count = 0
        self.done = False
        self.ready = 0  # bursts completed (including skipped)
        self.incomplete = 0  # bursts superseded by a later second before completing

    def add(self, T: int, n: int, recv_ns: int, last_recv_ns: int = 0) -> None:
        if T != self.cur:
            if self.cur is not None and not self.done:
                self.incomplete += 1
            self.cur = T
            self.first = recv_ns
            self.count = 0
            self.done = False
        self.count += n
        self.last = last_recv_ns or recv_ns
        if not self.done and self.count >= self.expected:
            now = time.time_ns()
            lat = now - self.first
            self.done = True
            self.ready += 1
            if self.ready > self.skip:
                cap = 600_000_000_000
                self.hist.record_value(min(max(1_000, lat), cap))
                self.span_hist.record_value(min(max(1_000, self.last - self.first), cap))
                self.tail_hist.record_value(min(max(1_000, now - self.last), cap))
                if len(self.samples) < self.keep:
                    self.samples.append(lat)

    @property
    def measured(self) -> int:
        return max(0, self.ready - self.skip)


def _hist_doc(h: Any, scale: float) -> dict[str, Any]:
    if h.get_total_count() == 0:
        return {"count": 0}
    out = {f"p{p:g}": h.get_value_at_percentile(p) / scale for p in (50.0, 90.0, 99.0, 99.9)}
    out["max"] = h.get_max_value() / scale
    out["min"] = h.get_min_value() / scale
    out["mean"] = h.get_mean_value() / scale
    out["count"] = h.get_total_count()
    return out


class _Probe:
    """Wraps a fastfeed session: time per call and burst accounting (cadence mode).

    Works whether the session applies bars per message or, when the transport batches
    per read (``defer_until_buffer_end``), in ``on_buffer_end()``: bars are counted
    after each call that may apply them, with the receive time of the first message
    since the previous application (the burst's first message when a burst starts).
    """

    def __init__(self, inner: Any, engine: Any, stats: Any, tracker: BurstTracker) -> None:
        from hdrh.histogram import HdrHistogram

        self.inner = inner
        self.engine = engine
        self.stats = stats
        self.tracker = tracker
        self.cpu_hist = HdrHistogram(10, 10_000_000_000, 3)  # wall ns inside on_message
        self.flush_hist = HdrHistogram(10, 10_000_000_000, 3)  # wall ns inside on_buffer_end
        self._first = 0  # recv_ns of the first message not yet applied
        self._last = 0

    @property
    def fatal(self) -> Optional[BaseException]:
        return self.inner.fatal

    @property
    def defer_until_buffer_end(self) -> bool:
        return bool(getattr(self.inner, "defer_until_buffer_end", False))

    @defer_until_buffer_end.setter
    def defer_until_buffer_end(self, on: bool) -> None:
        if hasattr(self.inner, "defer_until_buffer_end"):
            self.inner.defer_until_buffer_end = on

    def __getattr__(self, name: str) -> Any:
        if name == "on_buffer_end" and not callable(getattr(self.inner, "on_buffer_end", None)):
            raise AttributeError(name)
        if name == "on_buffer_end":
            return self._on_buffer_end
        return getattr(self.inner, name)

    def on_connected(self, send: Callable[[bytes], None]) -> None:
        self.inner.on_connected(send)

    def on_disconnected(self, reason: str) -> None:
        self.inner.on_disconnected(reason)

    def _applied(self, n: int) -> None:
        self.tracker.add(self.engine.T, n, self._first, self._last)
        self._first = 0

    def on_message(self, payload: Any, recv_ns: int) -> None:
        stats = self.stats
        if not self._first:
            self._first = recv_ns
        self._last = recv_ns
        b0 = stats.bars
        t0 = time.perf_counter_ns()
        self.inner.on_message(payload, recv_ns)
        t1 = time.perf_counter_ns()
        self.cpu_hist.record_value(max(10, t1 - t0))
        n = stats.bars - b0
        if n:
            self._applied(n)

    def _on_buffer_end(self) -> None:
        stats = self.stats
        b0 = stats.bars
        t0 = time.perf_counter_ns()
        self.inner.on_buffer_end()
        t1 = time.perf_counter_ns()
        n = stats.bars - b0
        if n:
            self.flush_hist.record_value(max(10, t1 - t0))
            self._applied(n)


def _fastfeed_parts(spec: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    from fastfeed._ext.engine import Engine
    from fastfeed.feeds import make_session
    from fastfeed.stats import Stats
    from fastfeed.universe import Universe

    cap = 16384
    while cap < spec["tickers"] * 5 // 4:
        cap *= 2
    engine = Engine(capacity=cap, windows=tuple(spec["windows"]))
    universe = Universe(cap)
    stats = Stats()
    dialect = spec["case"]["dialect"]
    topics = ["LS.*"] if dialect == "vantafin" else ["A.*"]
    session = make_session(dialect, engine, universe, stats, topics=topics, api_key=spec["api_key"])
    return engine, universe, stats, session


async def _worker_async(spec: dict[str, Any]) -> dict[str, Any]:
    from . import peers as P
    from fastfeed.transport import Connection

    case = spec["case"]
    client = case["client"]
    mode = case["mode"]
    stop = asyncio.Event()
    tracker = BurstTracker(spec["tickers"], skip=spec["skip_bursts"]) if mode == "cadence" else None
    out: dict[str, Any] = {}
    conn = None
    engine = stats = probe = None

    if client == "fastfeed":
        engine, universe, stats, session = _fastfeed_parts(spec)
        if tracker is not None:
            probe = _Probe(session, engine, stats, tracker)
            session_for_conn: Any = probe
        else:
            session_for_conn = session
        conn = Connection(spec["url"], session_for_conn, stats=stats)

        def processed() -> int:
            return stats.bars

        async def body() -> None:
            await conn.run()

        task = asyncio.ensure_future(body())
    else:
        meter = P.Meter()
        if client == "massive-raw":
            fn, kw = P.run_massive, {"aggregate": False}
        else:
            fn, kw = P.PEERS[client][0], {}
        if client == "floor":
            kw["dialect"] = case["dialect"]
        if tracker is not None:
            kw["on_batch"] = tracker.add
        kw["windows"] = tuple(spec["windows"])

        def processed() -> int:
            return meter.bars

        task = asyncio.ensure_future(fn(spec["url"], meter, stop, api_key=spec["api_key"], **kw))

    deadline = time.monotonic() + spec["timeout"]

    async def wait_for(cond: Callable[[], bool]) -> None:
        while not cond():
            if task.done():
                task.result()  # raises the client's error
                raise RuntimeError("client stopped before the measurement ended")
            if time.monotonic() > deadline:
                raise TimeoutError("case timed out")
            await asyncio.sleep(0.005)

    try:
        await wait_for(lambda: processed() > 0)
        if mode == "throughput":
            await asyncio.sleep(spec["warmup"])
            samples = []
            nivcsw0 = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
            t_end = time.perf_counter() + spec["duration"]
            samples.append((time.perf_counter(), processed(), time.process_time()))
            while True:
                await asyncio.sleep(spec["interval"])
                samples.append((time.perf_counter(), processed(), time.process_time()))
                if samples[-1][0] >= t_end:
                    break
                if task.done():
                    break
            (ta, ba, ca), (tb, bb, cb) = samples[0], samples[-1]
            rates = sorted((b2 - b1) / (t2 - t1) for (t1, b1, _), (t2, b2, _) in zip(samples, samples[1:]))
            bars = bb - ba
            out.update(
                bars=bars,
                seconds=tb - ta,
                bars_per_s=bars / (tb - ta),
                bars_per_s_median_interval=rates[len(rates) // 2],
                bars_per_s_min_interval=rates[0],
                bars_per_s_max_interval=rates[-1],
                intervals=len(rates),
                cpu_s=cb - ca,
                cpu_util=(cb - ca) / (tb - ta),
                cpu_s_per_million_bars=(cb - ca) / bars * 1e6 if bars else None,
                preemptions_per_s=(resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - nivcsw0) / (tb - ta),
            )
        else:
            assert tracker is not None
            await wait_for(lambda: tracker.ready >= tracker.skip)
            if probe is not None:  # per-call histograms cover the measured bursts only
                probe.cpu_hist.reset()
                probe.flush_hist.reset()
            c0, t0 = time.process_time(), time.perf_counter()
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
            nivcsw0 = ru0.ru_nivcsw
            b0 = processed()
            await wait_for(lambda: tracker.measured >= spec["bursts"])
            c1, t1 = time.process_time(), time.perf_counter()
            b1 = processed()
            out.update(
                bursts=tracker.measured,
                burst_bars=tracker.expected,
                incomplete_bursts=tracker.incomplete,
                burst_latency_ms=_hist_doc(tracker.hist, 1e6),
                # first -> last message receive time of the burst (how the burst arrived)
                burst_arrival_span_ms=_hist_doc(tracker.span_hist, 1e6),
                # last message received -> cross-section ready
                burst_after_last_arrival_ms=_hist_doc(tracker.tail_hist, 1e6),
                burst_samples_ms=[round(x / 1e6, 4) for x in tracker.samples],
                seconds=t1 - t0,
                bars=b1 - b0,
                cpu_s=c1 - c0,
                cpu_util=(c1 - c0) / (t1 - t0),
                cpu_s_per_million_bars=(c1 - c0) / (b1 - b0) * 1e6 if b1 > b0 else None,
                preemptions_per_s=(resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - nivcsw0) / (t1 - t0),
                # page faults (first touch of ring memory, allocations) per measured burst
                minor_faults_per_burst=(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - ru0.ru_minflt)
                / max(1, tracker.measured),
            )
            if probe is not None:
                out["message_cpu_us"] = _hist_doc(probe.cpu_hist, 1e3)
                out["buffer_end_us"] = _hist_doc(probe.flush_hist, 1e3)
                out["batch_per_read"] = probe.defer_until_buffer_end
    finally:
        stop.set()
        if conn is not None:
            try:
                await asyncio.wait_for(conn.stop(), 5.0)
            except Exception:  # noqa: BLE001
                pass
        try:
            await asyncio.wait_for(task, 10.0)
        except (asyncio.CancelledError, asyncio.TimeoutError):
            pass
        except Exception as e:  # noqa: BLE001 - reported, the measurement may still stand
            out.setdefault("client_error", repr(e))

    if client == "fastfeed":
        assert stats is not None and engine is not None
        try:
            session.flush_stats()  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001
            pass
        sd = stats.as_dict()
        out["frame_latency_us"] = sd.get("processing_latency_us")
        out["counters"] = {k: sd.get(k) for k in ("frames", "messages", "bars", "decode_errors",
                                                   "unknown_messages", "stale_dropped",
                                                   "future_rejected", "reconnects")}
        out["engine_counters"] = dict(engine.counters)
    else:
        out["counters"] = {"messages": meter.messages, "bars": meter.bars, "errors": meter.errors}  # type: ignore[possibly-undefined]
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def worker_main(spec: dict[str, Any]) -> dict[str, Any]:
    cpus = spec.get("cpus")
    if cpus:
        _pin(0, set(cpus))
    import gc
    import logging

    logging.basicConfig(level=logging.ERROR)
    gc.collect()
    try:
        return asyncio.run(_worker_async(spec))
    except Exception as e:  # noqa: BLE001 - one line for the report
        return {"error": f"{type(e).__name__}: {e}", "peak_rss_mb": _peak_rss_mb()}


def _main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastfeed.bench.orchestration")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--worker", help="JSON spec of one case (internal)")
    g.add_argument("--cache-server", help="JSON spec of a frame cache server (internal)")
    a = p.parse_args(argv)
    if a.cache_server:
        cache_server_main(json.loads(a.cache_server))
        return 0
    res = worker_main(json.loads(a.worker))
    sys.stdout.write(json.dumps(res) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
