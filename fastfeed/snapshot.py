"""The snapshot document: rolling windows as plain data, for scripts and replays.

Contract (``fastfeed snapshot --format json``)::

    {"feed": "vantafin", "as_of": 1700000059, "market": "open",
     "windows": {"60": {"AAPL": {"open": .., "high": .., "low": .., "close": ..,
                                 "volume": .., "vwap": .., "count": 3}}},
     "stats": {"frames": .., "messages": .., "bars": .., ...}}

``as_of`` is the clock ``T`` in epoch seconds (``null`` before any bar); ``market`` the
last market status the vendor sent (``"open"``, ``"extended-hours"``, ``"closed"``;
``null`` when never told); window keys
are seconds as strings; instruments with ``count == 0`` are omitted; NaN is ``null``.
"""
from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Iterable, Sequence

from .engine.stats import sync_engine_counters

FIELDS = ("open", "high", "low", "close", "volume", "vwap")


def _num(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def window_rows(engine: Any, universe: Any, window: int) -> dict[str, dict[str, Any]]:
    """Instruments with at least one bar in ``window``, as ``{symbol: {field: value}}``.

    Reads the engine's views once; call it on the thread that owns the engine.
    """
    view = engine.window(window)
    n = len(universe)
    count = view.count[:n]
    cols = {f: getattr(view, f)[:n] for f in FIELDS}
    symbols = universe.symbols
    out: dict[str, dict[str, Any]] = {}
    for row in count.nonzero()[0].tolist():
        entry = {f: _num(cols[f][row]) for f in FIELDS}
        entry["count"] = int(count[row])
        out[symbols[row]] = entry
    return out


def snapshot_document(
    feed_name: str,
    engine: Any,
    universe: Any,
    stats: Any,
    windows: Iterable[int] | None = None,
    market: str | None = None,
) -> dict[str, Any]:
    """The whole snapshot document for ``windows`` (default: all of the engine's);
    ``market``: the last market status the vendor sent, if any."""
    sync_engine_counters(stats, engine)
    ws = tuple(engine.windows if windows is None else windows)
    T = int(engine.T)
    return {
        "feed": feed_name,
        "as_of": T if T >= 0 else None,
        "market": market,
        "windows": {str(w): window_rows(engine, universe, w) for w in ws},
        "stats": stats.as_dict(),
    }



def dump_json(doc: dict[str, Any]) -> str:
    """The document as compact JSON (NaN already mapped to null)."""
    return json.dumps(doc, separators=(",", ":"), allow_nan=False)


def dump_csv(doc: dict[str, Any]) -> str:
    """One line per (window, instrument): ``window,symbol,open,...,count``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("window", "symbol", *FIELDS, "count"))
    for window, rows in doc["windows"].items():
        for sym, e in rows.items():
            w.writerow((window, sym, *("" if e[f] is None else repr(e[f]) for f in FIELDS), e["count"]))
    return buf.getvalue()


def render_table(doc: dict[str, Any], limit: int = 50) -> Any:
    """A ``rich`` renderable of the document (largest volume first, ``limit`` per window)."""
    from rich.console import Group
    from rich.table import Table

    tables = []
    for window, rows in doc["windows"].items():
        t = Table(title=f"{doc['feed']} · window {window}s · as of {doc['as_of']}", expand=False)
        for col in ("symbol", *FIELDS, "count"):
            t.add_column(col, justify="left" if col == "symbol" else "right")
        ranked = sorted(rows.items(), key=lambda kv: -(kv[1]["volume"] or 0.0))[:limit]
        for sym, e in ranked:
            t.add_row(sym, *(_fmt(e[f], f) for f in FIELDS), str(e["count"]))
        if len(rows) > limit:
            t.caption = f"{limit} of {len(rows)} instruments (largest volume first)"
        tables.append(t)
    return Group(*tables)


def _fmt(x: float | None, field: str) -> str:
    if x is None:
        return "—"
    if field == "volume":
        return f"{x:,.0f}" if x == int(x) else f"{x:,.4f}"
    return f"{x:,.6f}".rstrip("0").rstrip(".") if abs(x) < 1 else f"{x:,.4f}"


def print_document(doc: dict[str, Any], fmt: str) -> None:
    """Write ``doc`` to stdout as ``json``, ``csv`` or a ``table`` (rich)."""
    import sys

    if fmt == "json":
        print(dump_json(doc))
    elif fmt == "csv":
        sys.stdout.write(dump_csv(doc))
    elif fmt == "table":
        from rich.console import Console

        console = Console()
        with console.capture() as text:  # rendered for this terminal, written as plain output:
            console.print(render_table(doc))  # a closed stdout is a BrokenPipeError the CLI handles
        sys.stdout.write(text.get())
    else:
        raise ValueError(f"unknown format {fmt!r}: json, csv or table")


def parse_windows(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"60,300"`` → ``(60, 300)``; raises ``ValueError`` with a clear message."""
    if not isinstance(text, str):
        items = list(text)
    else:
        items = [p.strip() for p in text.split(",") if p.strip()]
    if not items:
        raise ValueError("no windows given (expected e.g. 60,300,900)")
    out = []
    for p in items:
        try:
            w = int(p)
        except (TypeError, ValueError):
            raise ValueError(f"window {p!r} is not a whole number of seconds") from None
        if w <= 0:
            raise ValueError(f"window {w} must be a positive number of seconds")
        out.append(w)
    if len(set(out)) != len(out):
        raise ValueError(f"windows repeat: {text}")
    return tuple(out)
