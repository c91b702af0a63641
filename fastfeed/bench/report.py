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

from . import steady

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

#: absolute targets (they depend on the machine: read the ratios first)
TARGETS = {
    "e2e_100": 2.0e6,
    "e2e_1": 1.0e6,
    "burst_p99_ms": 6.0,
    "rss_mb": 1024.0,
}

#: the ratio targets, measured side by side in one run (they hold on any machine):
#: key -> (at least | at most, value); the two steady-state ones live in .steady
RATIO_TARGETS: dict[str, tuple[str, float]] = {
    "engine_over_decode": ("max", steady.TARGETS["engine_over_decode"]),
    "large_over_small": ("max", steady.TARGETS["large_over_small"]),
    "vs_floor_100": ("min", 0.80),
    "vs_floor_1": ("min", 0.90),
    "vs_massive": ("min", 20.0),
    "burst_over_floor": ("max", 1.5),
    "alloc_per_bar": ("max", 0.0),
}
#: heap growth per bar (tracemalloc, bytes) below which no allocation is made per bar: the
#: smallest Python object is 16 bytes; what remains is the harness's per-call objects
ALLOC_NONE_BELOW = 1.0


def _key(r: dict[str, Any]) -> tuple[str, str, str, int]:
    c = r["case"]
    return c["mode"], c["client"], c["dialect"], c["bars_per_frame"]


def _round(r: dict[str, Any]) -> int:
    return r["case"].get("round", 0)


def _representative(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """Of one case's rounds, the one with the median bars/s (the lower of two); else the last."""
    ok = sorted((r for r in rs if r.get("bars_per_s") and not r.get("error")), key=lambda r: r["bars_per_s"])
    return ok[(len(ok) - 1) // 2] if ok else rs[-1]


def _pair(ff: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    """fastfeed ÷ peer for one round (both measured, same dialect and frame size)."""
    c = peer["case"]
    cpu_ratio = None
    if ff.get("cpu_s_per_million_bars") and peer.get("cpu_s_per_million_bars"):
        cpu_ratio = peer["cpu_s_per_million_bars"] / ff["cpu_s_per_million_bars"]
    q = {
        "peer": c["client"], "dialect": c["dialect"], "bars_per_frame": c["bars_per_frame"], "round": _round(peer),
        "fastfeed_bars_per_s": ff["bars_per_s"], "peer_bars_per_s": peer["bars_per_s"],
        "fastfeed_cpu_s_per_million_bars": ff.get("cpu_s_per_million_bars"),
        "peer_cpu_s_per_million_bars": peer.get("cpu_s_per_million_bars"),
        # floor: fastfeed's share of the decode-only ceiling; others: fastfeed ÷ peer
        "ratio": ff["bars_per_s"] / peer["bars_per_s"],
        "cpu_ratio": cpu_ratio,
        "fastfeed_server_bound": _server_bound(ff),
        "peer_server_bound": _server_bound(peer),
        "fastfeed_contended": _contended(ff),
        "peer_contended": _contended(peer),
    }
    # wall-clock bars/s compare the clients only when both had their core to themselves and
    # were not waiting for the server; otherwise CPU per bar is the comparison that holds
    q["basis"] = ("cpu" if (q["fastfeed_server_bound"] or q["peer_server_bound"] or q["fastfeed_contended"]
                           or q["peer_contended"]) and cpu_ratio else "wall")
    if q["peer"] == "floor":
        # share of the floor on a CPU basis: floor CPU per bar / fastfeed CPU per bar
        q["ratio_cpu_basis"] = cpu_ratio
    return q


def verdict_ratio(q: dict[str, Any]) -> Optional[float]:
    """The ratio a target is judged on: wall-clock, or CPU per bar when a client waited."""
    if q["basis"] != "cpu":
        return q["ratio"]
    return q.get("ratio_cpu_basis") if q["peer"] == "floor" else q["cpu_ratio"]


def summarize(doc: dict[str, Any]) -> dict[str, Any]:
    """Throughput rows, peer ratios, cadence rows and the targets, from ``doc["results"]``.

    A case measured in several rounds (``--rounds``) is one throughput row (the round with
    the median bars/s) and one ratio: the median of the per-round ratios, each round's
    fastfeed and peer measured one after the other.
    """
    results = doc.get("results", [])
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(_key(r), []).append(r)
    by = {k: _representative(v) for k, v in groups.items()}
    thr: list[dict[str, Any]] = []
    for key, rs in groups.items():
        if key[0] != "throughput":
            continue
        r = by[key]
        c = r["case"]
        row = {
            "client": c["client"], "dialect": c["dialect"], "bars_per_frame": c["bars_per_frame"],
            "bars_per_s": r.get("bars_per_s"), "bars_per_s_median_interval": r.get("bars_per_s_median_interval"),
            "cpu_util": r.get("cpu_util"), "cpu_s_per_million_bars": r.get("cpu_s_per_million_bars"),
            "peak_rss_mb": r.get("peak_rss_mb"), "error": r.get("error"),
            "preemptions_per_s": r.get("preemptions_per_s"),
            "rounds": len(rs), "bars_per_s_rounds": [x.get("bars_per_s") for x in rs],
        }
        row["server_bound"] = _server_bound(r)
        row["contended"] = _contended(r)
        cpm = r.get("cpu_s_per_million_bars")
        row["bars_per_cpu_s"] = 1e6 / cpm if cpm else None
        row["server_cpu_util"] = r.get("server_cpu_util")
        row["source"] = r.get("source", "simulator")
        thr.append(row)

    ratios: list[dict[str, Any]] = []
    for key, rs in groups.items():
        mode, client, dialect, bpf = key
        if mode != "throughput" or client == "fastfeed":
            continue
        ffs = {_round(r): r for r in groups.get(("throughput", "fastfeed", dialect, bpf), [])
               if r.get("bars_per_s") and not r.get("error")}
        qs = [_pair(ffs[_round(r)], r) for r in rs
              if r.get("bars_per_s") and not r.get("error") and _round(r) in ffs]
        if not qs:
            continue
        ranked = sorted((q for q in qs if verdict_ratio(q) is not None), key=verdict_ratio) or qs
        q = ranked[(len(ranked) - 1) // 2]
        q["rounds"] = len(qs)
        q["ratio_rounds"] = [verdict_ratio(x) for x in qs]
        q["round_numbers"] = [x["round"] for x in qs]
        ratios.append(q)

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
            "engine_updates_per_burst": r.get("engine_updates_per_burst"), "frame_latency_us": r.get("frame_latency_us"),
            "cpu_s_per_million_bars": r.get("cpu_s_per_million_bars"), "peak_rss_mb": r.get("peak_rss_mb"),
            "preemptions_per_s": r.get("preemptions_per_s"), "error": r.get("error"),
            "minor_faults_per_burst": r.get("minor_faults_per_burst"),
        })

    targets = ratio_targets(doc, by, ratios)

    def target(name: str, want: str, value: Optional[float], ok: Optional[bool], note: str = "",
               unit: str = "") -> None:
        targets.append({"key": None, "kind": "absolute", "target": name, "want": want, "measured": value,
                        "unit": unit, "met": ok, "note": note, "absolute": ""})

    for bpf, key in ((100, "e2e_100"), (1, "e2e_1")):
        ff = by.get(("throughput", "fastfeed", "vantafin", bpf))
        if ff and ff.get("bars_per_s"):
            v = ff["bars_per_s"]
            want = f">= {TARGETS[key] / 1e6:.1f} M bars/s"
            if _contended(ff) or _server_bound(ff):
                cap = 1e6 / ff["cpu_s_per_million_bars"] if ff.get("cpu_s_per_million_bars") else None
                target(f"end-to-end, {bpf} bars/frame", want, v, None,
                       "client idle or sim-bound" + (f"; 1 / CPU per bar = {cap / 1e6:.2f} M/s" if cap else ""),
                       "bars/s")
            else:
                target(f"end-to-end, {bpf} bars/frame", want, v, v >= TARGETS[key], unit="bars/s")
    for row in cad:
        if row["client"] == "fastfeed" and (row.get("burst_latency_ms") or {}).get("count"):
            v = row["burst_latency_ms"]["p99"]
            target(f"burst -> cross-section ready p99 ({row['bars_per_frame']} bars/frame)",
                   f"<= {TARGETS['burst_p99_ms']:g} ms", v, v <= TARGETS["burst_p99_ms"], unit="ms")
    rss = [r.get("peak_rss_mb") for r in results if r["case"]["client"] == "fastfeed" and r.get("peak_rss_mb")]
    if rss:
        v = max(rss)
        target("peak RSS, fastfeed client", f"<= {TARGETS['rss_mb']:.0f} MiB", v, v <= TARGETS["rss_mb"],
               unit="MiB")
    return {"throughput": thr, "ratios": ratios, "cadence": cad, "targets": targets,
            "busy_machine_loadavg": busy_machine(doc)}


def _want(key: str, fmt: str = "{:g}") -> str:
    side, v = RATIO_TARGETS[key]
    return ("<= " if side == "max" else ">= ") + fmt.format(v)


def _met(key: str, v: Optional[float]) -> Optional[bool]:
    if v is None:
        return None
    side, t = RATIO_TARGETS[key]
    return v <= t if side == "max" else v >= t


def _pair_text(q: dict[str, Any], peer: str) -> str:
    """The absolute figures behind a fastfeed ÷ peer ratio (its median round)."""
    def rate(bps: float, cpm: Optional[float]) -> str:
        return f"{_m(bps)} bars/s" + (f" ({cpm:.2f} CPU s/M bars)" if cpm else "")

    return (f"fastfeed {rate(q['fastfeed_bars_per_s'], q.get('fastfeed_cpu_s_per_million_bars'))}; "
            f"{peer} {rate(q['peer_bars_per_s'], q.get('peer_cpu_s_per_million_bars'))}")


def _basis_note(q: dict[str, Any]) -> str:
    notes = []
    if q.get("rounds", 1) > 1:
        fmt = "{:.1f}x" if q["peer"] != "floor" else "{:.2f}"
        notes.append(f"median of {q['rounds']} rounds: "
                     + ", ".join("-" if v is None else fmt.format(v) for v in q["ratio_rounds"]))
    if q["basis"] == "cpu":
        notes.append("CPU-per-bar basis (a client was idle part of the time)")
    return "; ".join(notes)


def massive_ceiling(vs_massive: dict[str, Any], floor: Optional[dict[str, Any]]) -> Optional[float]:
    """Floor ÷ official massive client on the A.* stream: the median over the rounds that
    measured both, each round's (fastfeed ÷ massive) ÷ (fastfeed ÷ floor); None if none did."""
    if floor is None:
        return None
    fl = dict(zip(floor.get("round_numbers") or [], floor.get("ratio_rounds") or []))
    per_round = [m / fl[r] for r, m in zip(vs_massive.get("round_numbers") or [], vs_massive.get("ratio_rounds") or [])
                 if m and fl.get(r)]
    if not per_round:
        return None
    per_round.sort()
    return per_round[(len(per_round) - 1) // 2]


def ratio_targets(doc: dict[str, Any], by: dict[tuple, dict[str, Any]],
                  ratios: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ratio targets (docs/BENCHMARKS.md, "Ratios"), every row even when not measured.

    Each row: ``key``, ``target`` (the figure), ``want``, ``measured`` (None when not run),
    ``unit`` (``ratio`` | ``x`` | ``B/bar``), ``met`` (None: not run or undecidable),
    ``note`` (why not run, or the basis) and ``absolute`` (this machine's figures behind it).
    """
    out: list[dict[str, Any]] = []

    def row(key: str, name: str, value: Optional[float], unit: str, note: str = "", absolute: str = "",
            want: Optional[str] = None) -> None:
        out.append({"key": key, "kind": "ratio", "target": name, "want": want or _want(key),
                    "measured": value, "unit": unit, "met": _met(key, value), "note": note,
                    "absolute": absolute})

    cfg = doc.get("config") or {}
    st = doc.get("steady")
    rows = cfg.get("steady_rows") or [12_000, 1_000]
    if st and not st.get("error"):
        rows = [st["rows_large"], st["rows_small"]]
    large, small = (f"{n:,}" for n in rows)
    if not st or st.get("error"):
        why = (f"not run: {st['error']}" if st else
               "not run (--no-steady)" if cfg.get("steady") is False else "not run")
        for key, name in (("engine_over_decode", f"engine ns/bar at {large} rows ÷ msgspec decode ns/bar, steady state"),
                          ("large_over_small", f"engine ns/bar at {large} rows ÷ at {small} rows, steady state")):
            row(key, name, None, "ratio", why)
    else:
        e, d = st["engine_ns_per_bar"], st["decode_ns_per_bar"]
        el, es = e[str(st["rows_large"])], e[str(st["rows_small"])]
        how = f"{st['seconds']} s timed, windows {'/'.join(map(str, st['windows']))}"
        row("engine_over_decode", f"engine ns/bar at {large} rows ÷ msgspec decode ns/bar, steady state",
            st["ratios"]["engine_over_decode"], "ratio", how,
            f"engine {el:.0f} ns/bar; msgspec decode {d:.0f} ns/bar")
        row("large_over_small", f"engine ns/bar at {large} rows ÷ at {small} rows, steady state",
            st["ratios"]["large_over_small"], "ratio", how,
            f"engine {el:.0f} ns/bar at {large} rows, {es:.0f} at {small}")

    floors = {q["bars_per_frame"]: q for q in ratios if q["peer"] == "floor" and q["dialect"] == "vantafin"}
    floor_on = "floor" in (cfg.get("peers") or ["floor"])
    for bpf in (100, 1):
        key = f"vs_floor_{bpf}"
        name = f"fastfeed ÷ decode-only floor, {bpf} bar{'s' if bpf > 1 else ''}/frame"
        q = floors.get(bpf)
        if q is None:
            row(key, name, None, "ratio", "not run: " + ("floor not in --peers" if not floor_on
                                                        else f"{bpf} not in --bars-per-frame"))
            continue
        row(key, name, verdict_ratio(q), "ratio", _basis_note(q), _pair_text(q, "floor"))

    name = "fastfeed ÷ official massive client + the same rolling, A.*"
    q = next((q for q in ratios if q["peer"] == "massive"), None)
    if q is None:
        installed = ((doc.get("machine") or {}).get("versions") or {}).get("massive")
        row("vs_massive", name, None, "x", "not run: " + ("install .[bench]" if not installed
                                                        else "massive not in --peers"), want=_want("vs_massive", "{:g}x"))
    else:
        absolute = _pair_text(q, "massive client")
        ceiling = massive_ceiling(q, next((f for f in ratios if f["peer"] == "floor" and f["dialect"] == "massive"),
                                          None))
        if ceiling is not None:
            absolute += (f"; the decode-only floor of the same A.* stream is {ceiling:.1f}x the massive "
                         f"client (the ceiling of this ratio on this machine)")
        row("vs_massive", name, verdict_ratio(q), "x", _basis_note(q), absolute, want=_want("vs_massive", "{:g}x"))

    n = cfg.get("tickers", 12_000)
    bursts = [c for c in cfg.get("cadence_bars_per_frame") or [100]]
    for bpf in bursts:
        name = (f"{n:,}-bar burst: ready after its last message p99 ÷ floor's decode of that last read p99, "
                f"{bpf} bar{'s' if bpf > 1 else ''}/frame")
        ff, fl = by.get(("cadence", "fastfeed", "vantafin", bpf)), by.get(("cadence", "floor", "vantafin", bpf))
        ta = (ff or {}).get("burst_after_last_arrival_ms") or {}
        tb = (fl or {}).get("burst_after_last_arrival_ms") or {}
        if not ta.get("count") or not tb.get("count"):
            row("burst_over_floor", name, None, "ratio",
                "not run: " + ("floor not in --peers" if not floor_on else "a burst case failed"))
            continue
        row("burst_over_floor", name, ta["p99"] / tb["p99"], "ratio", f"{ta['count']} bursts each",
            f"after the last message: fastfeed p99 {ta['p99']:.2f} ms, p50 {ta['p50']:.2f} ms (whole burst p99 "
            f"{ff['burst_latency_ms']['p99']:.2f} ms); floor p99 {tb['p99']:.2f} ms, p50 {tb['p50']:.2f} ms")

    name = "allocations per bar, steady state (heap growth, tracemalloc)"
    if not st or st.get("error"):
        row("alloc_per_bar", name, None, "B/bar", out[0]["note"], want="0")
    else:
        v = st["alloc_bytes_per_bar"]
        out.append({"key": "alloc_per_bar", "kind": "ratio", "target": name, "want": "0", "measured": v,
                    "unit": "B/bar", "met": v < ALLOC_NONE_BELOW,
                    "note": f"no object per bar: < {ALLOC_NONE_BELOW:g} B/bar", "absolute": ""})
    return out


def busy_machine(doc: dict[str, Any]) -> Optional[float]:
    """Highest 1-minute load average seen around the cases if it exceeds the core count + 0.5."""
    cores = (doc.get("machine") or {}).get("cores") or 1
    loads = [x for r in doc.get("results", []) for x in (r.get("loadavg_1m") or []) if x is not None]
    if loads and max(loads) > cores + 0.5:
        return max(loads)
    return None


MET = {True: "yes", False: "NO", None: "n/a"}


#: how a target row's measured value is written, by its unit
_UNIT_FORMAT = {
    "bars/s": lambda v: _m(v) + " bars/s",
    "x": "{:.1f}x".format,
    "B/bar": "{:.3f} B/bar".format,
    "ms": "{:.2f} ms".format,
    "MiB": "{:.0f} MiB".format,
    "ratio": "{:.3f}".format,   # three places: 1.304 is not "1.30 <= 1.3"
}


def fmt_measured(g: dict[str, Any]) -> str:
    """A target row's measured value in its unit (``-`` when not measured)."""
    v = g["measured"]
    if v is None:
        return "-"
    return _UNIT_FORMAT.get(g.get("unit", ""), "{:.2f}".format)(v)


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
    ld = load_text(doc)
    con.print(f"{machine_text(m)}; client on cores {m.get('client_cores')}, "
              f"simulator on {m.get('simulator_cores')}; Python {m.get('python', '?')}; "
              f"{doc.get('config', {}).get('tickers', '?')} tickers; run took {doc.get('elapsed_s', '?')} s"
              + (f"; {ld}" if ld else ""))

    rounds = max((r.get("rounds", 1) for r in s["throughput"]), default=1)
    t = Table(title="Max-rate throughput (every ticker trades every second; fresh simulator per case"
              + (f"; median of {rounds} rounds" if rounds > 1 else "") + ")")
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
                    "updates/burst", "arrival->applied us p50/p99", "CPU s/M bars", "RSS MiB",
                    "preempt/s"):
            t.add_column(col, justify="left" if col == "client" else "right")
        for r in s["cadence"]:
            b = r.get("burst_latency_ms") or {}
            fl = r.get("frame_latency_us") or {}
            if r.get("error"):
                t.add_row(r["client"], str(r["bars_per_frame"]), f"{r['speed']:g}x", "-", r["error"][:40])
                continue
            t.add_row(
                r["client"], str(r["bars_per_frame"]), f"{r['speed']:g}x",
                f"{r.get('bursts')} x {r.get('burst_bars')}",
                _f(b.get("p50")), _f(b.get("p99")), _f(b.get("p99.9")), _f(b.get("max")),
                _f(r.get("engine_updates_per_burst"), "{:.0f}"),
                f"{_f(fl.get('p50'), '{:.0f}')}/{_f(fl.get('p99'), '{:.0f}')}" if fl else "-",
                _f(r.get("cpu_s_per_million_bars")), _f(r.get("peak_rss_mb"), "{:.0f}"),
                _f(r.get("preemptions_per_s"), "{:.0f}"),
            )
        con.print(t)

    st = doc.get("steady")
    if st and not st.get("error"):
        e, p90 = st["engine_ns_per_bar"], st.get("engine_ns_per_bar_p90") or {}
        con.print(f"Engine steady state (own process, thread CPU time, {st['seconds']} s timed per variant, "
                  f"windows {'/'.join(map(str, st['windows']))}): "
                  + ", ".join(f"engine@{k} rows {v:.0f} ns/bar (p90 {p90.get(k, float('nan')):.0f})"
                              for k, v in e.items())
                  + f", msgspec decode {st['decode_ns_per_bar']:.0f} ns/bar (p90 {st['decode_ns_per_bar_p90']:.0f}); "
                  f"peak RSS {st.get('peak_rss_mb', 0):.0f} MiB, {st.get('wall_s', '?')} s")
    elif st:
        con.print(f"Engine steady state failed: {st['error']}")
    for kind, title in (("ratio", "Ratios, measured side by side in this run (they hold on any machine)"),
                        ("absolute", "Absolute targets (they depend on the machine)")):
        rows = [g for g in s["targets"] if g.get("kind", "absolute") == kind]
        if not rows:
            continue
        t = Table(title=title)
        for col in ("figure", "measured", "target", "met", "this machine" if kind == "ratio" else "note"):
            t.add_column(col, justify="right" if col == "measured" else "left")
        for g in rows:
            last = (g.get("absolute") or "") + ("; " if g.get("absolute") and g["note"] else "") + g["note"]
            t.add_row(g["target"], fmt_measured(g), g["want"], MET[g["met"]], last if kind == "ratio" else g["note"])
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


def machine_text(m: dict[str, Any]) -> str:
    """``CPU, N cores (caches), memory``: what tells a slow machine from a slow client."""
    caches = m.get("caches") or {}
    extra = ", ".join(f"{k} {v}" for k, v in caches.items())
    mem = f", {m['memory_gib']:g} GiB" if m.get("memory_gib") else ""
    return f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores" + (f" ({extra})" if extra else "") + mem


def load_text(doc: dict[str, Any]) -> str:
    """``load average a, b, c at the start, ... at the end`` (what ``uptime`` prints), or ``""``."""
    ld = doc.get("load") or {}

    def three(x: Any) -> str:
        return ", ".join(f"{v:.2f}" for v in x)

    if ld.get("start") and ld.get("end"):
        return f"load average {three(ld['start'])} at the start, {three(ld['end'])} at the end"
    return ""


def render_markdown(doc: dict[str, Any]) -> str:
    """Markdown for README: the ratio targets first, then the absolute figures and the machine."""
    s = doc.get("summary") or summarize(doc)
    m = doc.get("machine", {})
    ld = load_text(doc)
    lines = [f"`{doc.get('command', 'fastfeed bench')}` ({doc.get('started', '?')}, {doc.get('elapsed_s', '?')} s) "
             f"on {machine_text(m)}{'; ' + ld if ld else ''}.", ""]
    rt = [g for g in s["targets"] if g.get("kind") == "ratio"]
    if rt:
        lines += ["Ratios, measured side by side in this run:", "",
                  "| figure | measured | target | met | this machine's figures |",
                  "|---|---:|---:|:---:|---|"]
        for g in rt:
            note = (g.get("absolute") or "") + ("; " if g.get("absolute") and g["note"] else "") + g["note"]
            lines.append(f"| {g['target']} | {fmt_measured(g)} | {g['want'].replace('<=', '≤').replace('>=', '≥')} "
                         f"| {MET[g['met']]} | {note} |")
        lines.append("")
    rounds = max((r.get("rounds", 1) for r in s["throughput"]), default=1)
    lines += [f"Absolute figures ({doc.get('config', {}).get('tickers', '?')} tickers, client and simulator "
              "pinned to separate cores" + (f"; a max-rate row measured in {rounds} rounds shows its median round"
                                            if rounds > 1 else "") + "):", "",
              "| client | dialect | bars/frame | bars/s | CPU s / M bars | fastfeed ÷ client |",
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
        lines += ["", "| burst → cross-section ready | bars/frame | speed | bursts | p50 ms | p99 ms | p99.9 ms "
                  "| after the last message p50 / p99 ms |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for c in cad:
            b = c["burst_latency_ms"]
            a = c.get("burst_after_last_arrival_ms") or {}
            tail = f"{a['p50']:.3f} / {a['p99']:.3f}" if a.get("count") else "-"
            name = "floor (decode only)" if c["client"] == "floor" else c["client"]
            lines.append(f"| {name} | {c['bars_per_frame']} | {c['speed']:g}x | {c['bursts']} x "
                         f"{c['burst_bars']} | {b['p50']:.2f} | {b['p99']:.2f} | {b['p99.9']:.2f} | {tail} |")
    st = doc.get("steady")
    if st and not st.get("error"):
        e = st["engine_ns_per_bar"]
        lines += ["", f"Engine steady state (`python -m fastfeed.bench.steady`, own process, thread CPU time, "
                  f"{st['seconds']} s timed per variant, windows {'/'.join(map(str, st['windows']))}, "
                  f"{st['bars_per_message']}-bar messages): "
                  + ", ".join(f"engine {v:.0f} ns/bar at {int(k):,} rows" for k, v in e.items())
                  + f", msgspec decode {st['decode_ns_per_bar']:.0f} ns/bar; peak RSS "
                  f"{st.get('peak_rss_mb', 0):.0f} MiB."]
    if s.get("busy_machine_loadavg"):
        lines += ["", f"(machine busy during the run: load average up to {s['busy_machine_loadavg']:.1f})"]
    return "\n".join(lines) + "\n"
