"""``fastfeed record``, ``fastfeed replay`` and ``fastfeed export`` (argparse wiring).

``fastfeed.cli`` calls :func:`add_record_parser`, :func:`add_replay_parser` and
:func:`add_export_parser` on its sub-parsers; each sets ``func(args) -> exit code``.
Exit codes: 0 success; 1 failure (one line on stderr, no traceback for expected
errors); 2 authentication refused.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import textwrap
import time
from typing import Any

from .common import EXIT_AUTH, EXIT_FAIL, EXIT_OK, add_connection_args
from .common import CliError as _Fail
from .common import formatter as _formatter


def _run(fn: Any, args: argparse.Namespace) -> int:
    """Expected failures as one line on stderr with an exit code."""
    from ..recording.format import RecordingError

    try:
        return int(fn(args) or 0)
    except _Fail as e:
        print(f"fastfeed: {e}", file=sys.stderr)
        return e.code
    except (RecordingError, OSError, ValueError, RuntimeError) as e:
        if type(e).__name__ == "AuthError":
            print(f"fastfeed: authentication failed: {e}", file=sys.stderr)
            return EXIT_AUTH
        print(f"fastfeed: {e}", file=sys.stderr)
        return EXIT_FAIL


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _quiet_reader_log() -> None:
    """The commands print one summary line of damage; no per-region log lines."""
    import logging

    logging.getLogger("fastfeed.record").setLevel(logging.ERROR)


def _report_damage(report: dict[str, Any], path: str) -> None:
    if report.get("skipped_bytes"):
        probs = report["problems"]
        first = probs[0]
        print(f"fastfeed: {path}: skipped {report['skipped_bytes']} damaged byte(s) in "
              f"{len(probs)} place(s) (first at offset {first['offset']}: {first['reason']}); "
              "every intact record was used", file=sys.stderr)


# --------------------------------------------------------------------------- record
RECORD_EPILOG = textwrap.dedent(
    """\
    Records every message the feed receives (raw bytes, receive time in ns, connection
    boundaries) to FILE, without a UI, until --duration elapses or Ctrl-C. The API key
    is never written (the URL is stored with apiKey=***). Format: docs/RECORDING.md.

    examples:
      fastfeed record --url ws://127.0.0.1:8765/v1/stocks --api-key sim-key --out day.ffr --duration 60
      fastfeed record --feed sfox --url wss://ws.sfox.com/ws --subscribe ticker.sfox.btcusd \\
          --out btc.ffr --compress zstd
      fastfeed replay day.ffr --windows 60,300 --format table
    """
)


def add_record_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "record",
        help="record a feed's raw messages to a file (no UI)",
        description="Connect and record every received message to a file for `fastfeed replay`.",
        epilog=RECORD_EPILOG,
        formatter_class=_formatter,
    )
    add_connection_args(p)
    p.add_argument("--out", "-o", required=True, metavar="FILE", help="recording to write (replaced if it exists)")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--windows", default="60,300,900", help="engine windows stored in the header as replay's default (default 60,300,900)")
    p.add_argument("--compress", choices=("none", "zstd"), default="none", help="zstd-compress the file in blocks (needs zstandard; default none)")
    p.add_argument("--fsync", action="store_true", help="fsync after every write (survives power loss, slower)")
    p.set_defaults(func=lambda a: _run(cmd_record, a))
    return p


def cmd_record(args: argparse.Namespace) -> int:
    from ..feed import ConfigurationError, Feed
    from ..recording.format import attach_recorder
    from ..snapshot import parse_windows

    if args.duration is not None and args.duration <= 0:
        raise _Fail("--duration must be a positive number of seconds")
    try:
        windows = parse_windows(args.windows)
        feed = Feed(feed=args.feed, url=args.url, api_key=args.api_key,
                    subscribe=args.subscribe, windows=windows)
    except (ConfigurationError, ValueError) as e:
        raise _Fail(str(e)) from None
    close = attach_recorder(feed, args.out, fsync=args.fsync,
                            compression=None if args.compress == "none" else args.compress)
    t0 = time.monotonic()
    interrupted = False
    try:
        try:
            asyncio.run(_record(feed, args.duration))
        except KeyboardInterrupt:
            interrupted = True
    finally:
        summary = close()
    took = time.monotonic() - t0
    print(f"fastfeed: recorded {summary['messages']:,} messages ({_mib(summary['bytes'])}) "
          f"to {summary['path']} in {took:.1f} s"
          + (f"; {summary['dropped']:,} dropped" if summary["dropped"] else "")
          + (" (interrupted)" if interrupted else ""), file=sys.stderr)
    if summary["error"]:
        raise _Fail(summary["error"])
    err = feed.error
    if err is not None:
        if type(err).__name__ == "AuthError":
            raise _Fail(f"authentication failed: {err}", EXIT_AUTH)
        raise _Fail(f"{type(err).__name__}: {err}")
    if not feed.connected_once:
        raise _Fail(f"could not connect to {feed.url}")
    return EXIT_OK


async def _record(feed: Any, duration: float | None) -> None:
    await feed.start_async()
    try:
        await asyncio.wait_for(asyncio.shield(feed._task), timeout=duration)
    except asyncio.TimeoutError:
        pass
    finally:
        await feed.close()


# --------------------------------------------------------------------------- replay
REPLAY_EPILOG = textwrap.dedent(
    """\
    Feeds the recorded messages through the same decoders and engine, with the recorded
    receive times as the clock's "now", and prints the windows at the end of the file.
    --format json prints exactly the `fastfeed snapshot` document; the same file gives
    the same output every time. Transport counters (frames, protocol_errors) and the
    processing latency are not in a recording and stay 0/empty. A torn or damaged tail
    is skipped and reported on stderr.

    examples:
      fastfeed replay day.ffr
      fastfeed replay day.ffr --windows 60,300 --format table
      fastfeed replay day.ffr --speed 10 --progress       # ten times the recorded pace
      fastfeed replay day.ffr --check                     # intact? what is in it?
    """
)


def add_replay_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "replay",
        help="replay a recording through the engine and print the windows",
        description="Replay a recording made by `fastfeed record` or --record.",
        epilog=REPLAY_EPILOG,
        formatter_class=_formatter,
    )
    p.add_argument("file", metavar="FILE", help="the recording")
    p.add_argument("--speed", default="max", help="max (default), or a factor of the recorded pace: 1.0 real time, 10 ten times faster")
    p.add_argument("--windows", default=None, help="comma-separated windows in seconds (default: the recorded engine's, else 60,300,900)")
    p.add_argument("--format", choices=("json", "csv", "table"), default="json", help="output format (default json)")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None, help="show a progress bar on stderr")
    prog.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")
    p.add_argument("--check", action="store_true", help="only read the file: print its header, counts and any damage as JSON; exit 1 if damaged")
    p.set_defaults(func=lambda a: _run(cmd_replay, a))
    return p


#: files larger than this get a progress bar when stderr is a terminal
PROGRESS_MIN_BYTES = 32 << 20


def cmd_replay(args: argparse.Namespace) -> int:
    from ..recording.replay import parse_speed, replay
    from ..snapshot import parse_windows, print_document

    if not os.path.exists(args.file):
        raise _Fail(f"{args.file}: no such file")
    if args.check:
        return _check(args.file)
    windows = parse_windows(args.windows) if args.windows else None
    _quiet_reader_log()
    speed = parse_speed(args.speed)
    progress = args.progress
    if progress is None:
        progress = sys.stderr.isatty() and os.path.getsize(args.file) >= PROGRESS_MIN_BYTES
    try:
        result = replay(args.file, windows=windows, speed=speed, progress=progress)
    except KeyboardInterrupt:
        return 130
    _report_damage(result.report, args.file)
    doc = result.snapshot(windows)
    print_document(doc, args.format)
    return EXIT_OK


def _check(path: str) -> int:
    import json

    from ..recording.format import KIND_NAMES, Reader

    _quiet_reader_log()
    counts: dict[str, int] = {}
    with Reader(path) as r:
        for rec in r:
            name = KIND_NAMES.get(rec.kind, f"kind{rec.kind}")
            counts[name] = counts.get(name, 0) + 1
        rep = r.report()
        rep["header"] = r.header.meta
        rep["version"] = r.header.version
        rep["compressed"] = r.header.compressed
        rep["first_ns"], rep["last_ns"] = r.first_ns, r.last_ns
        rep["kinds"] = counts
        rep["size"] = r.size
    print(json.dumps(rep, indent=2))
    _report_damage(rep, path)
    return EXIT_FAIL if rep["skipped_bytes"] else EXIT_OK


# --------------------------------------------------------------------------- export
EXPORT_EPILOG = textwrap.dedent(
    """\
    Writes one row per (instrument, second): the last version received (corrections
    replace earlier bars), limited to the bars the engine accepts. Columns: instrument,
    second (epoch s of the bar start), open, high, low, close, volume, pv, vwap
    (null when volume is 0). Readable by pandas, polars, DuckDB. Needs pyarrow.

    examples:
      fastfeed export day.ffr --out bars.parquet
      python -c "import pandas as pd; print(pd.read_parquet('bars.parquet').tail())"
    """
)


def add_export_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export",
        help="export a recording's bars to Parquet",
        description="Decode a recording's bars and write them to a Parquet file.",
        epilog=EXPORT_EPILOG,
        formatter_class=_formatter,
    )
    p.add_argument("file", metavar="FILE", help="the recording")
    p.add_argument("--out", "-o", required=True, metavar="PARQUET", help="Parquet file to write")
    p.add_argument("--compression", default="zstd", choices=("zstd", "snappy", "gzip", "none"), help="Parquet compression (default zstd)")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None, help="show a progress bar on stderr")
    prog.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")
    p.set_defaults(func=lambda a: _run(cmd_export, a))
    return p


def cmd_export(args: argparse.Namespace) -> int:
    from ..recording.replay import export_parquet

    if not os.path.exists(args.file):
        raise _Fail(f"{args.file}: no such file")
    _quiet_reader_log()
    progress = args.progress
    if progress is None:
        progress = sys.stderr.isatty() and os.path.getsize(args.file) >= PROGRESS_MIN_BYTES
    res = export_parquet(args.file, args.out, progress=progress,
                         compression=args.compression)
    _report_damage(res["report"], args.file)
    print(f"fastfeed: wrote {res['rows']:,} bars from {res['messages']:,} messages to {res['path']}",
          file=sys.stderr)
    return EXIT_OK
