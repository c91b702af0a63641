"""``fastfeed bench``: fastfeed and its peers on the same simulated market, same machine, same run.

Layout of a run (docs/BENCHMARKS.md has the definitions):

* every case gets a **fresh simulator process** (``python -m fastfeed.simulator``) with
  the same seed, so every client receives byte-identical data; on a machine with two or
  more cores the simulator is pinned to the last core and the client to core 0
  (``os.sched_setaffinity``);
* every client runs in its **own worker process** (``python -m fastfeed.bench.worker
  SPEC``) so that CPU time and peak RSS belong to that client alone; the worker
  prints one JSON line with its measurements;
* ``throughput`` cases: the simulator in max-rate mode (every ticker trades every second,
  sends as fast as the client reads, TCP flow control); after a warm-up the worker samples
  its processed-bar counter every ``interval`` seconds for ``duration`` seconds;
* ``cadence`` cases: the simulator at ``--speed`` (time compression), one full-universe
  burst per simulated second; the worker measures each burst from the receive time of its
  first message to the moment the last of its bars has been applied (the floor: decoded);
* the **engine steady state** (:func:`run_steady`, no socket): after the cases, in a process
  of its own (``python -m fastfeed.bench.steady``) pinned to the client's core, so that
  its two ~0.9 GB engines never run beside a case.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any, Callable, Optional

from .planning import SIM_KEY, BenchConfig, Case, plan

__all__ = ["cores", "contended", "machine_info", "run_bench", "run_case", "run_steady", "sim_args",
           "steady_memory_mib"]


def cores() -> tuple[Optional[set[int]], Optional[set[int]]]:
    """(client cores, simulator cores); (None, None) when there is one core or no affinity."""
    try:
        avail = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None
    if len(avail) < 2:
        return None, None
    return {avail[0]}, {avail[-1]}


def pin(pid: int, cpus: Optional[set[int]]) -> None:
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
    from ..simulator.testing import SimProcess

    client_cpus, sim_cpus = cores()
    with SimProcess(sim_args(cfg, case), api_key=SIM_KEY) as sim:
        assert sim.proc is not None
        pin(sim.proc.pid, sim_cpus)
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
            # the floor's bursts are fastfeed's: the burst ratio compares the same bursts
            "bursts": cfg.bursts if case.client in ("fastfeed", "floor") else cfg.peer_bursts,
            "skip_bursts": cfg.skip_bursts if case.client in ("fastfeed", "floor") else 1,
            "timeout": cfg.case_timeout,
            "cpus": sorted(client_cpus) if client_cpus else None,
        }
        t0 = time.perf_counter()
        load0 = _loadavg()
        srv0 = proc_cpu_s(sim.proc.pid)
        proc = subprocess.Popen(
            [python, "-m", "fastfeed.bench.worker", json.dumps(spec)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            out, err = proc.communicate(timeout=cfg.case_timeout + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            return {"case": asdict(case), "error": "worker timed out", "stderr": err[-2000:]}
        srv1 = proc_cpu_s(sim.proc.pid)
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
    result["source"] = "simulator"
    result["wall_s"] = round(time.perf_counter() - t0, 3)
    result["loadavg_1m"] = [load0, _loadavg()]
    # the server's CPU share over the worker's life (connect + warm-up + measurement)
    result["server_cpu_util"] = (round((srv1 - srv0) / (t1 - t0), 3)
                                 if srv0 is not None and srv1 is not None else None)
    return result


def steady_spec(cfg: BenchConfig) -> dict[str, Any]:
    """:func:`.steady.measure`'s keyword arguments for ``cfg``."""
    large, small = cfg.steady_rows
    return {"rows_large": large, "rows_small": small, "seconds": cfg.steady_seconds,
            "windows": list(cfg.windows), "capacity": cfg.steady_capacity, "seed": cfg.seed}


#: peak RSS of the steady state per row-second of engine capacity (two engines of 16,384 rows x 900 s
#: measured 1,825 MiB), with room for the interpreter and the market's arrays
_STEADY_MIB_PER_ROW_SECOND = 1_900 / (2 * 16_384 * 900)


def steady_memory_mib(cfg: BenchConfig) -> float:
    """About the memory the steady state takes: two engines of ``steady_capacity`` x the longest window."""
    return 100 + 2 * cfg.steady_capacity * max(cfg.windows) * _STEADY_MIB_PER_ROW_SECOND


def _meminfo_mib(field: str) -> Optional[float]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def run_steady(cfg: BenchConfig, *, progress: Optional[Callable[[str], None]] = None,
               python: str = sys.executable) -> dict[str, Any]:
    """The engine steady state (:mod:`.steady`) in its own process, pinned to the client's core.

    ``progress`` gets each of its progress lines.  Never raises: a failure is ``{"error"}``.
    The result is :func:`.steady.measure`'s document plus ``peak_rss_mb``, ``wall_s`` and
    ``loadavg_1m`` (before, after).
    """
    need, free = steady_memory_mib(cfg), _meminfo_mib("MemAvailable")
    if free is not None and free < need:
        return {"error": f"not enough memory: two engines need about {need:.0f} MiB, {free:.0f} MiB available "
                         "(--no-steady skips it)"}
    client_cpus, _ = cores()
    spec = steady_spec(cfg)
    spec["cpus"] = sorted(client_cpus) if client_cpus else None
    t0, load0 = time.perf_counter(), _loadavg()
    try:
        proc = subprocess.Popen([python, "-m", "fastfeed.bench.steady", "--spec", json.dumps(spec)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        return {"error": f"{type(e).__name__}: {e}"}
    tail: list[str] = []
    assert proc.stderr is not None and proc.stdout is not None
    for line in proc.stderr:            # progress lines until the process closes stderr
        line = line.rstrip("\n")
        if line.startswith("progress: "):
            if progress:
                progress(line[len("progress: "):])
        else:
            tail = (tail + [line])[-20:]
    out = proc.stdout.read()
    rc = proc.wait()
    try:
        doc = json.loads(out)
    except ValueError:
        return {"error": f"steady-state process exited {rc} without a result", "stderr": "\n".join(tail)}
    doc["wall_s"] = round(time.perf_counter() - t0, 1)
    doc["loadavg_1m"] = [load0, _loadavg()]
    return doc


def peak_rss_mb() -> float:
    """This process's peak resident set size, MiB (``ru_maxrss``: KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def proc_cpu_s(pid: int) -> Optional[float]:
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


def _loadavg3() -> Optional[list[float]]:
    """The 1-, 5- and 15-minute load averages (what ``uptime`` prints)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _loadavg() -> Optional[float]:
    three = _loadavg3()
    return three[0] if three else None


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
    info.update(_memory_info())
    return info


def _memory_info() -> dict[str, Any]:
    """Per-core data caches and total memory (Linux sysfs/procfs; empty elsewhere)."""
    caches: dict[str, str] = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for name in sorted(os.listdir(base)):
            d = os.path.join(base, name)
            try:
                with open(os.path.join(d, "type")) as f:
                    kind = f.read().strip()
                with open(os.path.join(d, "level")) as f:
                    level = f.read().strip()
                with open(os.path.join(d, "size")) as f:
                    size = f.read().strip()
            except OSError:
                continue
            if not size.endswith("K") or not size[:-1].isdigit():
                continue
            if kind != "Instruction":
                kib = int(size.rstrip("K"))
                caches[f"L{level}"] = f"{kib // 1024} MiB" if kib % 1024 == 0 else f"{kib} KiB"
    except OSError:
        pass
    out: dict[str, Any] = {"caches": caches}
    total = _meminfo_mib("MemTotal")
    if total is not None:
        out["memory_gib"] = round(total / 1024, 1)
    return out


def run_bench(cfg: BenchConfig, *, progress: Optional[Callable[[int, int, Case, Optional[dict]], None]] = None,
              command: str = "fastfeed bench",
              steady_progress: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Run every case of :func:`plan`, then the engine steady state (``cfg.steady``);
    return the result document (see report.py)."""
    from .report import summarize

    cases = plan(cfg)
    results = []
    t0 = time.perf_counter()
    load0 = _loadavg3()
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
    if cfg.steady:
        doc["steady"] = run_steady(cfg, progress=steady_progress)
        doc["elapsed_s"] = round(time.perf_counter() - t0, 1)
    doc["load"] = {"start": load0, "end": _loadavg3()}
    doc["summary"] = summarize(doc)
    return doc
