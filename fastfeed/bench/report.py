"""Summary, table, JSON and PNG of a ``fastfeed bench`` result document.

The document (``fastfeed bench --json``) is::

    {"command", "started", "elapsed_s", "machine": {...}, "config": {...},
     "results": [one per case: {"case": {mode, client, dialect, bars_per_frame, speed}, ...}],
     "summary": {"throughput": [...], "ratios": [...], "cadence": [...], "targets": [...]}}

``summary`` is derived from ``results`` by :func:`summarize` (docs/BENCHMARKS.md).
"""
from __future__ import annotations

import io
import json
from typing import Any, Optional

__all__ = ["summarize", "render_table", "render_markdown", "to_json", "plot", "SERVER_BOUND_UTIL"]

#: a client using less CPU than this share of the wall time, while the server process was
#: busy (above SERVER_BUSY_UTIL of its core), was waiting for the server: its bars/s is a
#: lower bound of what it could do (the simulator was the bottleneck)
SERVER_BOUND_UTIL = 0.85
SERVER_BUSY_UTIL = 0.75


def _contended(r: dict[str, Any]) -> bool:
    cu, su = r.get("cpu_util"), r.get("server_cpu_util")
    return bool(cu is not None and cu < SERVER_BOUND_UTIL and su is not None and su < SERVER_BUSY_UTIL)


def _server_bound(r: dict[str, Any]) -> bool:
    cu, su = r.get("cpu_util"), r.get("server_cpu_util")
    return bool(cu is not None and cu < SERVER_BOUND_UTIL and (su is None or su >= SERVER_BUSY_UTIL))

TARGETS = {
    "e2e_100": 2.0e6,
    "e2e_1": 1.0e6,
    "burst_p99_ms": 6.0,
    "vs_massive": 20.0,
    "vs_floor": 0.70,
    "rss_mb": 1024.0,
}


def _key(r: dict[str, Any]) -> tuple[str, str, str, int]:
    c = r["case"]
    return c["mode"], c["client"], c["dialect"], c["bars_per_frame"]


def summarize(doc: dict[str, Any]) -> dict[str, Any]:
    """Throughput rows, peer ratios, cadence rows and the targets, from ``doc["results"]``."""
    results = doc.get("results", [])
    by = {_key(r): r for r in results}
    thr: list[dict[str, Any]] = []
    for r in results:
        c = r["case"]
        if c["mode"] != "throughput":
            continue
        row = {
            "client": c["client"], "dialect": c["dialect"], "bars_per_frame": c["bars_per_frame"],
            "bars_per_s": r.get("bars_per_s"), "bars_per_s_median_interval": r.get("bars_per_s_median_interval"),
            "cpu_util": r.get("cpu_util"), "cpu_s_per_million_bars": r.get("cpu_s_per_million_bars"),
            "peak_rss_mb": r.get("peak_rss_mb"), "error": r.get("error"),
            "preemptions_per_s": r.get("preemptions_per_s"),
        }
        row["server_bound"] = _server_bound(r)
        row["contended"] = _contended(r)
        cpm = r.get("cpu_s_per_million_bars")
        row["bars_per_cpu_s"] = 1e6 / cpm if cpm else None
        row["server_cpu_util"] = r.get("server_cpu_util")
        row["source"] = r.get("source", "simulator")
        thr.append(row)

    ratios: list[dict[str, Any]] = []
    for row in thr:
        if row["client"] == "fastfeed" or row.get("error") or not row.get("bars_per_s"):
            continue
        ff = by.get(("throughput", "fastfeed", row["dialect"], row["bars_per_frame"]))
        if not ff or not ff.get("bars_per_s"):
            continue
        ratio = ff["bars_per_s"] / row["bars_per_s"]
        cpu_ratio = None
        if ff.get("cpu_s_per_million_bars") and row.get("cpu_s_per_million_bars"):
            cpu_ratio = row["cpu_s_per_million_bars"] / ff["cpu_s_per_million_bars"]
        ratios.append({
            "peer": row["client"], "dialect": row["dialect"], "bars_per_frame": row["bars_per_frame"],
            "fastfeed_bars_per_s": ff["bars_per_s"], "peer_bars_per_s": row["bars_per_s"],
            # floor: fastfeed's share of the decode-only ceiling; others: fastfeed ÷ peer
            "ratio": ratio,
            "cpu_ratio": cpu_ratio,
            "fastfeed_server_bound": _server_bound(ff),
            "peer_server_bound": row["server_bound"],
            "fastfeed_contended": _contended(ff),
            "peer_contended": row["contended"],
        })
        q = ratios[-1]
        # wall-clock bars/s compare the clients only when both had their core to themselves and
        # were not waiting for the server; otherwise CPU per bar is the comparison that holds
        q["basis"] = ("cpu" if (q["fastfeed_server_bound"] or q["peer_server_bound"] or q["fastfeed_contended"]
                               or q["peer_contended"]) and cpu_ratio else "wall")
        if q["peer"] == "floor":
            # share of the floor on a CPU basis: floor CPU per bar / fastfeed CPU per bar
            q["ratio_cpu_basis"] = cpu_ratio

    cad: list[dict[str, Any]] = []
    for r in results:
        c = r["case"]
        if c["mode"] != "cadence":
            continue
        cad.append({
            "client": c["client"], "dialect": c["dialect"], "bars_per_frame": c["bars_per_frame"],
            "speed": c["speed"], "bursts": r.get("bursts"), "burst_bars": r.get("burst_bars"),
            "incomplete_bursts": r.get("incomplete_bursts"),
            "burst_latency_ms": r.get("burst_latency_ms"),
            "burst_arrival_span_ms": r.get("burst_arrival_span_ms"),
            "burst_after_last_arrival_ms": r.get("burst_after_last_arrival_ms"),
            "message_cpu_us": r.get("message_cpu_us"), "frame_latency_us": r.get("frame_latency_us"),
            "cpu_s_per_million_bars": r.get("cpu_s_per_million_bars"), "peak_rss_mb": r.get("peak_rss_mb"),
            "preemptions_per_s": r.get("preemptions_per_s"), "error": r.get("error"),
            "minor_faults_per_burst": r.get("minor_faults_per_burst"),
        })

    targets: list[dict[str, Any]] = []

    def target(name: str, want: str, value: Optional[float], ok: Optional[bool], note: str = "") -> None:
        targets.append({"target": name, "want": want, "measured": value, "met": ok, "note": note})

    for bpf, key in ((100, "e2e_100"), (1, "e2e_1")):
        ff = by.get(("throughput", "fastfeed", "vantafin", bpf))
        if ff and ff.get("bars_per_s"):
            v = ff["bars_per_s"]
            if _contended(ff) or _server_bound(ff):
                cap = 1e6 / ff["cpu_s_per_million_bars"] if ff.get("cpu_s_per_million_bars") else None
                target(f"end-to-end, {bpf} bars/frame", f">= {TARGETS[key] / 1e6:.1f} M bars/s", v, None,
                       "client idle or sim-bound" + (f"; 1 / CPU per bar = {cap / 1e6:.2f} M/s" if cap else ""))
            else:
                target(f"end-to-end, {bpf} bars/frame", f">= {TARGETS[key] / 1e6:.1f} M bars/s", v,
                       v >= TARGETS[key])
    for q in ratios:
        if q["peer"] == "floor":
            v = q.get("ratio_cpu_basis") if q["basis"] == "cpu" else q["ratio"]
            target(f"end-to-end vs decode-only floor, {q['bars_per_frame']} bars/frame",
                   f">= {TARGETS['vs_floor']:.0%} of the floor", v,
                   None if v is None else v >= TARGETS["vs_floor"],
                   "CPU-per-bar basis (a client was idle part of the time)" if q["basis"] == "cpu" else "")
    for q in ratios:
        if q["peer"] == "massive":
            v = q["cpu_ratio"] if q["basis"] == "cpu" else q["ratio"]
            target("vs official massive client (same data)", f">= {TARGETS['vs_massive']:.0f}x bars/s",
                   v, None if v is None else v >= TARGETS["vs_massive"],
                   "CPU-per-bar basis (a client was idle part of the time)"
                   if q["basis"] == "cpu" else "")
    for row in cad:
        if row["client"] == "fastfeed" and row.get("burst_latency_ms", {}).get("count"):
            v = row["burst_latency_ms"]["p99"]
            target(f"burst -> cross-section ready p99 ({row['bars_per_frame']} bars/frame)",
                   f"<= {TARGETS['burst_p99_ms']:g} ms", v, v <= TARGETS["burst_p99_ms"])
    rss = [r.get("peak_rss_mb") for r in results if r["case"]["client"] == "fastfeed" and r.get("peak_rss_mb")]
    if rss:
        v = max(rss)
        target("peak RSS, fastfeed client", f"<= {TARGETS['rss_mb']:.0f} MiB", v, v <= TARGETS["rss_mb"])
    return {"throughput": thr, "ratios": ratios, "cadence": cad, "targets": targets,
            "busy_machine_loadavg": busy_machine(doc)}


def busy_machine(doc: dict[str, Any]) -> Optional[float]:
    """Highest 1-minute load average seen around the cases if it exceeds the core count + 0.5."""
    cores = (doc.get("machine") or {}).get("cores") or 1
    loads = [x for r in doc.get("results", []) for x in (r.get("loadavg_1m") or []) if x is not None]
    if loads and max(loads) > cores + 0.5:
        return max(loads)
    return None


def to_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, default=str)


def _m(v: Optional[float]) -> str:
    return "-" if v is None else f"{v / 1e6:.3f} M"


def _f(v: Optional[float], fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def render_table(doc: dict[str, Any], width: int = 150) -> str:
    """The readable report (rich tables rendered to text)."""
    from rich.console import Console
    from rich.table import Table

    s = doc.get("summary") or summarize(doc)
    buf = io.StringIO()
    # plain text: a "[...]" in a command line, an error or a label is printed as written
    con = Console(file=buf, width=width, force_terminal=False, color_system=None, markup=False)
    m = doc.get("machine", {})
    con.print(f"$ {doc.get('command', 'fastfeed bench')}")
    con.print(f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores; client on cores {m.get('client_cores')}, "
              f"simulator on {m.get('simulator_cores')}; Python {m.get('python', '?')}; "
              f"{doc.get('config', {}).get('tickers', '?')} tickers; run took {doc.get('elapsed_s', '?')} s")

    t = Table(title="Max-rate throughput (every ticker trades every second; fresh simulator per row)")
    for col in ("client", "feed dialect", "bars/frame", "bars/s", "median 0.25s", "CPU use",
                "server CPU", "CPU s / M bars", "peak RSS MiB", "preempt/s", "note"):
        t.add_column(col, justify="left" if col in ("client", "feed dialect", "note") else "right")
    for r in s["throughput"]:
        note = r["error"] or ("sim-bound *" if r["server_bound"] else "client idle *" if r["contended"] else "")
        t.add_row(r["client"], r["dialect"], str(r["bars_per_frame"]), _m(r["bars_per_s"]),
                  _m(r["bars_per_s_median_interval"]), _f(r["cpu_util"], "{:.0%}"),
                  _f(r.get("server_cpu_util"), "{:.0%}"),
                  _f(r["cpu_s_per_million_bars"]), _f(r["peak_rss_mb"], "{:.0f}"),
                  _f(r.get("preemptions_per_s"), "{:.0f}"), note)
    con.print(t)

    if s["ratios"]:
        t = Table(title="fastfeed vs peers (same dialect, same bars/frame, same data)")
        for col in ("peer", "dialect", "bars/frame", "fastfeed bars/s", "peer bars/s", "fastfeed / peer",
                    "CPU-per-bar ratio", "note"):
            t.add_column(col, justify="left" if col in ("peer", "dialect", "note") else "right")
        for q in s["ratios"]:
            note = ""
            if q["peer"] == "floor":
                note = "share of the floor kept"
            if q["basis"] == "cpu":
                note = "read the CPU ratio *"
            floor = q["peer"] == "floor"
            ratio = f"{q['ratio']:.0%}" if floor else f"{q['ratio']:.1f}x"
            cpu = (_f(q.get("ratio_cpu_basis"), "{:.0%}") if floor else _f(q["cpu_ratio"], "{:.1f}x"))
            t.add_row(q["peer"], q["dialect"], str(q["bars_per_frame"]), _m(q["fastfeed_bars_per_s"]),
                      _m(q["peer_bars_per_s"]), ratio, cpu, note)
        con.print(t)
    if any(r["contended"] for r in s["throughput"]):
        con.print(f"* client idle: the client used < {SERVER_BOUND_UTIL:.0%} of its core while the server was not "
                  "CPU-bound: it waited, either because another process had its core (high preempt/s) or for the "
                  "server's writes (flow-control round trips); its wall-clock bars/s is a lower bound and the "
                  "CPU-per-bar figures are the ones that hold.")
    if any(r["server_bound"] for r in s["throughput"]):
        con.print(f"* sim-bound: the client used < {SERVER_BOUND_UTIL:.0%} of its core while the server was busy: "
                  "it waited for the server; its bars/s is a lower bound and the CPU-per-bar ratio (peer CPU s "
                  "per bar / fastfeed CPU s per bar) is the fair comparison.")

    if s["cadence"]:
        t = Table(title="Real cadence: one full-universe burst per simulated second (burst -> cross-section ready)")
        for col in ("client", "bars/frame", "speed", "bursts", "p50 ms", "p99 ms", "p99.9 ms", "max ms",
                    "on_message us p50/p99", "arrival->applied us p50/p99", "CPU s/M bars", "RSS MiB",
                    "preempt/s"):
            t.add_column(col, justify="left" if col == "client" else "right")
        for r in s["cadence"]:
            b = r.get("burst_latency_ms") or {}
            mc = r.get("message_cpu_us") or {}
            fl = r.get("frame_latency_us") or {}
            if r.get("error"):
                t.add_row(r["client"], str(r["bars_per_frame"]), f"{r['speed']:g}x", "-", r["error"][:40])
                continue
            t.add_row(
                r["client"], str(r["bars_per_frame"]), f"{r['speed']:g}x",
                f"{r.get('bursts')} x {r.get('burst_bars')}",
                _f(b.get("p50")), _f(b.get("p99")), _f(b.get("p99.9")), _f(b.get("max")),
                f"{_f(mc.get('p50'), '{:.0f}')}/{_f(mc.get('p99'), '{:.0f}')}" if mc else "-",
                f"{_f(fl.get('p50'), '{:.0f}')}/{_f(fl.get('p99'), '{:.0f}')}" if fl else "-",
                _f(r.get("cpu_s_per_million_bars")), _f(r.get("peak_rss_mb"), "{:.0f}"),
                _f(r.get("preemptions_per_s"), "{:.0f}"),
            )
        con.print(t)

    if s["targets"]:
        t = Table(title="Targets (docs/BENCHMARKS.md)")
        for col in ("target", "want", "measured", "met", "note"):
            t.add_column(col)
        for g in s["targets"]:
            v = g["measured"]
            if v is None:
                vs = "-"
            elif "M bars/s" in g["want"]:
                vs = _m(v) + " bars/s"
            elif "%" in g["want"]:
                vs = f"{v:.0%}"
            elif g["want"].endswith("x bars/s"):
                vs = f"{v:.1f}x"
            elif "ms" in g["want"]:
                vs = f"{v:.2f} ms"
            else:
                vs = f"{v:.0f}"
            met = {True: "yes", False: "NO", None: "n/a"}[g["met"]]
            t.add_row(g["target"], g["want"], vs, met, g["note"])
        con.print(t)
    busy = busy_machine(doc)
    if busy:
        con.print(f"WARNING: the machine was busy during the run (1-minute load average up to {busy:.1f} "
                  f"on {m.get('cores', '?')} cores, this run's 2 processes included): other processes "
                  "competed for the cores, figures are noisy and low.")
    errs = [r for r in doc.get("results", []) if r.get("error")]
    for r in errs:
        con.print(f"[case failed] {r['case']['client']} {r['case']['mode']}: {r['error']}")
    return buf.getvalue()


def plot(doc: dict[str, Any], path: str) -> None:
    """PNG: burst-latency CDFs per client (log x) and throughput per case (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    any_cdf = False
    for r in doc.get("results", []):
        c = r["case"]
        xs = sorted(r.get("burst_samples_ms") or [])
        if c["mode"] != "cadence" or not xs:
            continue
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax1.step(xs, ys, where="post", label=f"{c['client']} ({c['bars_per_frame']}/frame, {c['speed']:g}x)")
        any_cdf = True
    if any_cdf:
        ax1.set_xscale("log")
        ax1.legend(fontsize=8)
    ax1.set_xlabel("burst -> cross-section ready (ms)")
    ax1.set_ylabel("fraction of bursts")
    ax1.set_title(f"{doc.get('config', {}).get('tickers', '?')}-bar bursts")
    ax1.grid(True, which="both", alpha=0.3)

    rows = (doc.get("summary") or summarize(doc))["throughput"]
    labels = [f"{r['client']}\n{r['dialect']} {r['bars_per_frame']}/f" for r in rows]
    vals = [(r["bars_per_s"] or 0) / 1e6 for r in rows]
    colors = ["tab:blue" if r["client"] == "fastfeed" else "tab:gray" for r in rows]
    ax2.bar(range(len(vals)), vals, color=colors)
    ax2.set_xticks(range(len(vals)))
    ax2.set_xticklabels(labels, fontsize=7, rotation=30, ha="right")
    ax2.set_ylabel("M bars/s (max rate)")
    ax2.set_title("throughput, same simulated data")
    ax2.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_markdown(doc: dict[str, Any]) -> str:
    """A compact Markdown table for README: the headline figures and the command line."""
    s = doc.get("summary") or summarize(doc)
    m = doc.get("machine", {})
    lines = [f"`{doc.get('command', 'fastfeed bench')}` on {m.get('cpu', '?')}, {m.get('cores', '?')} cores "
             f"(client and simulator pinned to separate cores), {doc.get('config', {}).get('tickers', '?')} tickers:",
             "", "| client | dialect | bars/frame | bars/s | CPU s / M bars | fastfeed ÷ client |",
             "|---|---|---:|---:|---:|---:|"]
    ratio = {(q["peer"], q["dialect"], q["bars_per_frame"]): q for q in s["ratios"]}
    for r in s["throughput"]:
        q = ratio.get((r["client"], r["dialect"], r["bars_per_frame"]))
        if r["client"] == "fastfeed":
            rs = "1"
        elif q is None:
            rs = "-"
        elif q["peer"] == "floor":
            if q["basis"] == "cpu" and q.get("ratio_cpu_basis"):
                rs = f"{q['ratio_cpu_basis']:.2f} of the floor (CPU basis)"
            else:
                rs = f"{q['ratio']:.2f} of the floor"
        elif q["basis"] == "cpu" and q.get("cpu_ratio"):
            rs = f"{q['cpu_ratio']:.1f}x (CPU basis)"
        else:
            rs = f"{q['ratio']:.1f}x"
        flag = " (client idle: lower bound)" if r.get("contended") else " (sim-bound)" if r.get("server_bound") else ""
        lines.append(f"| {r['client']} | {r['dialect']} | {r['bars_per_frame']} | {_m(r['bars_per_s'])}{flag} | "
                     f"{_f(r['cpu_s_per_million_bars'])} | {rs} |")
    cad = [c for c in s["cadence"] if (c.get("burst_latency_ms") or {}).get("count")]
    if cad:
        lines += ["","| burst → cross-section ready | bars/frame | speed | bursts | p50 ms | p99 ms | p99.9 ms |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for c in cad:
            b = c["burst_latency_ms"]
            lines.append(f"| {c['client']} | {c['bars_per_frame']} | {c['speed']:g}x | {c['bursts']} x "
                         f"{c['burst_bars']} | {b['p50']:.2f} | {b['p99']:.2f} | {b['p99.9']:.2f} |")
    if s.get("busy_machine_loadavg"):
        lines += ["", f"(machine busy during the run: load average up to {s['busy_machine_loadavg']:.1f})"]
    return "\n".join(lines) + "\n"
