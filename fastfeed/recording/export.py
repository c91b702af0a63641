"""Export a recording's bars to Parquet: the final version of each ``(instrument, second)``."""
from __future__ import annotations

import math
import os
from typing import Any, Callable

import numpy as np

from ..transport.session import SessionProxy
from .reader import Reader
from .replay import engine_settings, recorded_topics, replay_session

__all__ = ["export_parquet", "EXPORT_COLUMNS"]

#: columns of the Parquet export, in order
EXPORT_COLUMNS = ("instrument", "second", "open", "high", "low", "close", "volume", "pv", "vwap")

class _CapturingEngine:
    """Stands in for the engine: hands every batch to the real engine and keeps a copy of
    the bars it accepts (asked of the engine itself, ``Engine.accepts``, before the
    batch is applied)."""

    def __init__(self, engine: Any, sink: Callable[..., None]) -> None:
        self._engine = engine
        self._sink = sink
        self._up = engine.upsert

    def upsert(self, rows, seconds, o, h, l, c, v, pv, n=-1, now=math.nan):  # noqa: E741
        n = len(rows) if n < 0 else n
        s = np.asarray(seconds[:n], dtype=np.int64)
        r = np.asarray(rows[:n], dtype=np.int64)
        cols = [np.asarray(x[:n], dtype=np.float64) for x in (o, h, l, c, v, pv)]
        # the filler only hands over rows of the universe
        ok = self._engine.accepts(s, *cols[:5], now=now, pv=cols[5], in_order=True)
        if ok.any():
            self._sink(r[ok], s[ok], *(x[ok] for x in cols))
        return self._up(rows, seconds, o, h, l, c, v, pv, n, now)

    @property
    def engine(self) -> Any:
        """The engine wrapped (the filler applies its rules and recycles its rows)."""
        return self._engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


class _BarStore:
    """Final version of each (row, second), written out once no later version can come."""

    def __init__(self, depth: int, flush_rows: int) -> None:
        self.depth = depth
        self.flush_rows = flush_rows
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.n = 0
        self.next_at = flush_rows
        self.T = -1

    def add(self, rows, seconds, o, h, l, c, v, pv) -> None:  # noqa: E741
        self.parts.append((rows, seconds, o, h, l, c, v, pv))
        self.n += len(rows)
        self.T = max(self.T, int(seconds.max()))

    def take(self, final: bool) -> tuple[np.ndarray, ...] | None:
        """Deduplicated bars that are final (all of them when ``final``)."""
        if not self.parts:
            return None
        cols = [np.concatenate(x) for x in zip(*self.parts)]
        self.parts, self.n = [], 0
        rows, secs = cols[0], cols[1]
        # last version wins: stable sort by (row, second) keeps arrival order within a key
        order = np.lexsort((secs, rows))
        rs, ss = rows[order], secs[order]
        last = np.ones(len(order), dtype=bool)
        last[:-1] = (rs[1:] != rs[:-1]) | (ss[1:] != ss[:-1])
        keep = order[last]
        cols = [x[keep] for x in cols]
        if not final:
            # a bar is final once second <= T - depth: the engine refuses any later version
            done = cols[1] <= self.T - self.depth
            pending = [x[~done] for x in cols]
            if len(pending[0]):
                self.parts.append(tuple(pending))
                self.n = len(pending[0])
            cols = [x[done] for x in cols]
        # output order: second, then row (arrival order of instruments)
        o2 = np.lexsort((cols[0], cols[1]))
        return tuple(x[o2] for x in cols)


def export_parquet(path: str | os.PathLike[str], out: str | os.PathLike[str], *,
                   depth: int | None = None, max_future_skew: float | None = None,
                   compression: str = "zstd", row_group_rows: int = 1 << 20,
                   progress: bool = False, session_options: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """Decode the recording's bars and write them to a Parquet file.

    Columns: ``instrument`` (string), ``second`` (int64, epoch s of the bar start),
    ``open high low close volume pv vwap`` (float64; ``vwap = pv / volume``, null when
    the volume is 0). One row per ``(instrument, second)``: the last version received
    (corrections replace), limited to the bars the engine accepts (same rules and
    ``depth``/``max_future_skew`` as the recording's engine, or the given ones).
    Rows are ordered by second, then instrument (first-seen order). Memory stays
    bounded: bars are written once they are older than ``depth`` seconds.
    Returns ``{"rows", "messages", "path", "report"}``.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise RuntimeError("export needs pyarrow: pip install pyarrow "
                           "(or pip install 'fastfeed[record]')") from None
    from .. import feeds
    from ..engine import Engine, Stats, Universe

    reader = Reader(path)
    tmp = os.fspath(out) + ".part"
    writer = None
    rows_written = 0
    try:
        h = reader.header
        cfg = engine_settings(h.meta, None, depth, None, max_future_skew)
        engine = Engine(cfg["capacity"], (min(cfg["windows"]),),
                        cfg["depth"] or max(cfg["windows"]), cfg["max_future_skew"])
        universe = Universe(cfg["capacity"])
        stats = Stats()
        store = _BarStore(int(engine.depth), row_group_rows)
        cap = _CapturingEngine(engine, store.add)
        topics = recorded_topics(h.meta, h.feed) or {"vantafin": ("LS.*",), "massive": ("A.*",)}.get(h.feed, ())
        session = feeds.make_session(h.feed, cap, universe, stats, topics=topics,
                                     **(session_options or {}))
        schema = pa.schema([("instrument", pa.string()), ("second", pa.int64()),
                            *((c, pa.float64()) for c in EXPORT_COLUMNS[2:])])
        symbols: list[str] = []
        pq_compression = None if compression in (None, "none") else compression

        def write(cols: tuple[np.ndarray, ...] | None) -> None:
            nonlocal writer, rows_written, symbols
            if cols is None or not len(cols[0]):
                return
            if len(symbols) < len(universe):
                symbols = list(universe.symbols)
            rows, secs, o, hi, lo, c, v, pv = cols
            names = pa.array(symbols, pa.string()).take(pa.array(rows))
            with np.errstate(invalid="ignore", divide="ignore"):
                vwap = pv / v
            vw = pa.array(vwap, mask=~(v > 0))
            table = pa.Table.from_arrays([names, pa.array(secs), *map(pa.array, (o, hi, lo, c, v, pv)), vw],
                                         schema=schema)
            if writer is None:
                writer = pq.ParquetWriter(tmp, schema, compression=pq_compression)
            writer.write_table(table, row_group_size=row_group_rows)
            rows_written += len(rows)

        class _Chunked(SessionProxy):
            """Flush the store whenever it holds enough bars (between messages)."""

            def on_message(self, payload: Any, recv_ns: int) -> None:
                self.session.on_message(payload, recv_ns)
                if store.n >= store.next_at:
                    write(store.take(final=False))
                    # bars not final yet stay in the store; wait for at least as many new
                    # ones before sorting again (amortised O(1) work per bar)
                    store.next_at = store.n + max(store.flush_rows, store.n)

        counts = replay_session(reader, _Chunked(session), stats=stats, progress=progress,
                                url=h.url)
        write(store.take(final=True))
        if writer is None:
            writer = pq.ParquetWriter(tmp, schema, compression=pq_compression)
        writer.close()
        writer = None
        os.replace(tmp, out)
        return {"rows": rows_written, "messages": counts["messages"], "path": os.fspath(out),
                "report": reader.report()}
    finally:
        if writer is not None:
            writer.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
        reader.close()
