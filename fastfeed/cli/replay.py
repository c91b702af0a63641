"""``fastfeed replay``: a recording through the engine; prints the windows."""
from __future__ import annotations

import argparse
import os
import textwrap
from typing import Any

from .common import (EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, CliError, add_command, add_progress_args,
                     parse_windows_arg, quiet_reader_log, report_damage, want_progress)

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


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = add_command(sub, "replay", cmd_replay,
                    help="replay a recording through the engine and print the windows",
                    description="Replay a recording made by `fastfeed record` or --record.",
                    epilog=REPLAY_EPILOG)
    p.add_argument("file", metavar="FILE", help="the recording")
    p.add_argument("--speed", default="max", help="max (default), or a factor of the recorded pace: 1.0 real time, 10 ten times faster")
    p.add_argument("--windows", default=None, help="comma-separated windows in seconds (default: the recorded engine's, else 60,300,900)")
    p.add_argument("--format", choices=("json", "csv", "table"), default="json", help="output format (default json)")
    add_progress_args(p)
    p.add_argument("--check", action="store_true", help="only read the file: print its header, counts and any damage as JSON; exit 1 if damaged")
    return p


def cmd_replay(args: argparse.Namespace) -> int:
    from ..recording.replay import parse_speed, replay
    from ..snapshot import print_document

    if not os.path.exists(args.file):
        raise CliError(f"{args.file}: no such file")
    if args.check:
        return _check(args.file)
    windows = parse_windows_arg(args.windows) if args.windows else None
    quiet_reader_log()
    try:
        speed = parse_speed(args.speed)
    except ValueError as e:
        raise CliError(f"--speed: {e}") from None
    try:
        result = replay(args.file, windows=windows, speed=speed, progress=want_progress(args.progress, args.file))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    report_damage(result.report, args.file)
    doc = result.snapshot(windows)
    print_document(doc, args.format)
    return EXIT_OK


def _check(path: str) -> int:
    import json

    from ..recording.format import KIND_NAMES
    from ..recording.reader import Reader

    quiet_reader_log()
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
    report_damage(rep, path)
    return EXIT_FAIL if rep["skipped_bytes"] else EXIT_OK
