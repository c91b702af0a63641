"""``fastfeed bench``: fastfeed and its peers on the same simulated market (:mod:`fastfeed.bench`)."""
from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
import textwrap
from typing import Any, Optional, Sequence

from .common import add_command

__all__ = ["add_parser", "cmd_bench", "config_from_args", "main"]

EPILOG = textwrap.dedent(
    """\
    Every case runs a fresh simulator process (same seed: identical data for every client),
    pinned to the other core when there are two, and the client in its own process.
    Peers: floor (picows + msgspec decode only), websockets-json (websockets + json +
    dataclass + rolling in Python), massive (the official client + the same Python rolling),
    massive-raw (the official client, callback only counts). Definitions: docs/BENCHMARKS.md.

    After the socket cases, the engine steady state runs in its own process (--no-steady skips it):
    engines of 12,000 and 1,000 rows in steady state beside the msgspec decode of the same bars.
    The report's ratio table lists every ratio target, measured or "not run".

    exit code: 0 all cases measured (targets missed are reported, not failures); 1 a case or the
    steady state failed.

    examples:
      fastfeed bench --quick
      fastfeed bench --markdown           # README's tables
      fastfeed bench --from bench.json --markdown   # the tables of a saved run
      fastfeed bench --json > bench.json
      fastfeed bench --peers none --bars-per-frame 100 --plot latency.png
      fastfeed bench --seconds --speed 10
    """
)


def _ints(s: str) -> tuple[int, ...]:
    try:
        v = tuple(int(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    if not v or min(v) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {s!r}")
    return v


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = add_command(subparsers, "bench", cmd_bench,
                    help="benchmark fastfeed and its peers against the simulator (throughput, burst latency, CPU, RSS)",
                    description="Max-rate throughput at 1 and 100 bars/frame, real-cadence burst -> cross-section "
                    "latency, CPU seconds per million bars and peak RSS, for fastfeed and its peers "
                    "on the same simulated market.",
                    epilog=EPILOG)
    p.add_argument("--quick", action="store_true", help="short run (under 2 minutes on 2 cores)")
    p.add_argument("--json", action="store_true", help="print the result document as JSON (stdout)")
    p.add_argument("--output", metavar="FILE", help="also write the JSON document to FILE")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (README) instead of the report")
    p.add_argument("--plot", metavar="FILE.png", help="latency/throughput plot (needs matplotlib)")
    p.add_argument("--tickers", type=int, default=12_000, help="universe size (default 12000)")
    p.add_argument("--bars-per-frame", type=_ints, default=None, metavar="N[,N]",
                   help="max-rate frame sizes (default 1,100)")
    p.add_argument("--windows", type=_ints, default=None, metavar="W[,W]", help="windows, s (default 60,300,900)")
    p.add_argument("--duration", type=float, default=None, help="measured seconds per max-rate case")
    p.add_argument("--warmup", type=float, default=None, help="unmeasured seconds before each max-rate case")
    p.add_argument("--speed", type=float, default=None,
                   help="real-cadence time compression: simulated seconds per wall second (default 10)")
    p.add_argument("--bursts", type=int, default=None, help="bursts measured in real-cadence mode")
    p.add_argument("--rounds", type=int, default=None,
                   help="max-rate rounds of fastfeed beside the floor and the official client, alternating; "
                        "each ratio is the median of the rounds' (default 3, 1 with --quick)")
    p.add_argument("--peers", default=None, metavar="LIST",
                   help="comma-separated peers, or 'none' (default: floor,websockets-json,massive,massive-raw)")
    p.add_argument("--no-peer-cadence", action="store_true",
                   help="skip websockets-json's and massive's burst latency (at speed 1); the floor's bursts "
                        "(the burst ratio's denominator) follow --peers")
    p.add_argument("--no-steady", action="store_true",
                   help="skip the engine steady state (two ~0.9 GB engines, 12,000 and 1,000 rows, beside the "
                        "msgspec decode of the same bars; 10-20 s, 1.8 GiB of memory)")
    p.add_argument("--seed", type=int, default=0, help="simulator seed (default 0)")
    p.add_argument("--from", dest="from_file", metavar="FILE.json",
                   help="measure nothing: print the report of a saved result document (--output, --json), "
                        "summarized again by this version (with --markdown, --json, --plot)")
    p.add_argument("--seconds", action="store_true",
                   help="only the completed-second benchmark: burst's last message -> on_second vs -> end of "
                        "the engine update (--tickers, --speed, --json apply; docs/SECONDS.md)")
    return p


def config_from_args(args: argparse.Namespace) -> tuple[Any, list[str]]:
    """(BenchConfig, notes about peers left out)."""
    from ..bench.planning import PEER_DIALECT, BenchConfig

    kw: dict[str, Any] = {"tickers": args.tickers, "seed": args.seed}
    for name in ("bars_per_frame", "windows", "duration", "warmup", "speed", "bursts", "rounds"):
        v = getattr(args, name)
        if v is not None:
            kw[name] = v
    notes: list[str] = []
    if args.peers is not None:
        peers = tuple(x.strip() for x in args.peers.split(",") if x.strip() and x.strip() != "none")
        bad = [x for x in peers if x not in PEER_DIALECT]
        if bad:
            raise SystemExit(f"fastfeed bench: unknown peer(s) {', '.join(bad)} (known: {', '.join(PEER_DIALECT)})")
    else:
        peers = tuple(PEER_DIALECT)
    kept = []
    for peer in peers:
        need = {"websockets-json": "websockets", "massive": "massive", "massive-raw": "massive"}.get(peer)
        if need and importlib.util.find_spec(need) is None:
            notes.append(f"peer {peer} skipped: {need} is not installed (pip install 'fastfeed[bench]')")
            continue
        kept.append(peer)
    kw["peers"] = tuple(kept)
    if args.no_peer_cadence:
        kw["peer_cadence"] = False
    if args.no_steady:
        kw["steady"] = False
    cfg = BenchConfig.quick_config(**kw) if args.quick else BenchConfig(**kw)
    return cfg, notes


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..bench.orchestration import run_bench
    from ..bench.planning import plan

    if getattr(args, "seconds", False):
        return _cmd_seconds(args)
    err = Console(file=sys.stderr)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        # plain text, never markup: "pip install 'fastfeed[bench]'" keeps its [bench]
        err.print("--plot ignored: matplotlib is not installed (pip install 'fastfeed[bench]')",
                  style="yellow", markup=False)
        args.plot = None
    if getattr(args, "from_file", None):
        return _cmd_from(args, err)
    cfg, notes = config_from_args(args)
    argv = getattr(args, "_argv", None)
    command = "fastfeed " + (shlex.join(argv) if argv is not None else shlex.join(sys.argv[1:]) or "bench")
    for n in notes:
        err.print(n, style="yellow", markup=False)
    n_cases = len(plan(cfg))
    total = n_cases + (1 if cfg.steady else 0)
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=False, refresh_per_second=2) as prog:
        task = prog.add_task("fastfeed bench", total=total)

        def on_progress(i: int, n: int, case: Any, result: Optional[dict]) -> None:
            if result is None:
                prog.update(task, completed=i, description=f"[{i + 1}/{total}] {case.label}")
            else:
                prog.update(task, completed=i)
                if result.get("error"):
                    prog.console.print(f"{case.label}: {result['error']}", style="red", markup=False)

        def on_steady(msg: str) -> None:
            prog.update(task, completed=n_cases, description=f"[{total}/{total}] engine steady state: {msg}")

        doc = run_bench(cfg, progress=on_progress, command=command, steady_progress=on_steady)
        prog.update(task, completed=total, description="fastfeed bench: done")
        st = doc.get("steady")
        if st and st.get("error"):
            prog.console.print(f"engine steady state: {st['error']}", style="red", markup=False)
    doc["notes"] = notes
    return _write(args, doc, err)


def _write(args: argparse.Namespace, doc: dict[str, Any], err: Any) -> int:
    """Write ``doc`` as asked (--output, --plot, then --json, --markdown or the report); the exit code."""
    from ..bench import report

    if args.output:
        with open(args.output, "w") as f:
            f.write(report.to_json(doc))
    if args.plot:
        report.plot(doc, args.plot)
        err.print(f"plot written to {args.plot}")
    if args.json:
        sys.stdout.write(report.to_json(doc) + "\n")
    elif args.markdown:
        sys.stdout.write(report.render_markdown(doc))
    else:
        sys.stdout.write(report.render_table(doc))
    failed = any(r.get("error") for r in doc["results"]) or bool((doc.get("steady") or {}).get("error"))
    return 1 if failed else 0


def _cmd_from(args: argparse.Namespace, err: Any) -> int:
    import json

    from ..bench import report

    try:
        with open(args.from_file) as f:
            doc = json.load(f)
        if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
            raise ValueError("not a fastfeed bench result document (no results)")
    except (OSError, ValueError) as e:
        err.print(f"fastfeed bench --from: {args.from_file}: {e}", style="red", markup=False)
        return 1
    doc["summary"] = report.summarize(doc)
    return _write(args, doc, err)


def _cmd_seconds(args: argparse.Namespace) -> int:
    from ..bench import report
    from ..bench.seconds import render, run_second_bench

    doc = run_second_bench(tickers=args.tickers, speed=args.speed or 10.0, seed=args.seed,
                           **({"windows": args.windows} if args.windows else {}))
    if args.output:
        with open(args.output, "w") as f:
            f.write(report.to_json(doc))
    sys.stdout.write(report.to_json(doc) + "\n" if args.json else render(doc))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m fastfeed.cli.bench [options]`` (same as ``fastfeed bench``)."""
    parser = argparse.ArgumentParser(prog="fastfeed")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(["bench", *argv])
    args._argv = ["bench", *argv]
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
