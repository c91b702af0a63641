"""``fastfeed export``: a recording's bars to Parquet."""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
from typing import Any

from .common import EXIT_OK, CliError, add_command, add_progress_args, quiet_reader_log, report_damage, want_progress

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


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = add_command(sub, "export", cmd_export,
                    help="export a recording's bars to Parquet",
                    description="Decode a recording's bars and write them to a Parquet file.",
                    epilog=EXPORT_EPILOG)
    p.add_argument("file", metavar="FILE", help="the recording")
    p.add_argument("--out", "-o", required=True, metavar="PARQUET", help="Parquet file to write")
    p.add_argument("--compression", default="zstd", choices=("zstd", "snappy", "gzip", "none"), help="Parquet compression (default zstd)")
    add_progress_args(p)
    return p


def cmd_export(args: argparse.Namespace) -> int:
    from ..recording.export import export_parquet

    if not os.path.exists(args.file):
        raise CliError(f"{args.file}: no such file")
    quiet_reader_log()
    res = export_parquet(args.file, args.out, progress=want_progress(args.progress, args.file),
                         compression=args.compression)
    report_damage(res["report"], args.file)
    print(f"fastfeed: wrote {res['rows']:,} bars from {res['messages']:,} messages to {res['path']}",
          file=sys.stderr)
    return EXIT_OK
