"""The segment within one process: format, publish kernel vs the engine, reads, lifecycle
basics.  (Cross-process behaviour: test_share_processes.py.)"""
from __future__ import annotations

import math
import os
import stat

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastfeed._ext import shm as _shm
from fastfeed._ext.engine import Engine
from fastfeed.share import NoWriter, SegmentBusy, SegmentWriter, attach
from fastfeed.share.layout import HEADER_DTYPE, REC_DTYPE, check_name, shm_path
from fastfeed.snapshot import snapshot_document
from fastfeed.engine import Stats
from fastfeed.engine import Universe

T0 = 1_700_000_000
FIELDS = ("open", "high", "low", "close", "volume", "vwap", "count")


def same(a, b) -> bool:
    """Bitwise-equal columns (NaN equals NaN)."""
    return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=np.asarray(a).dtype.kind == "f")


class Book:
    def __init__(self, rows=64, windows=(5, 20), depth=30, stats=True):
        self.engine = Engine(rows, windows, depth=depth, prefault=False)
        self.universe = Universe(rows)
        self.stats = Stats() if stats else None

    def upsert(self, bars):
        """bars: (symbol, second, close, volume) tuples; registers symbols like a feed."""
        rows = np.array([self.universe.row(s) for s, *_ in bars], dtype=np.int64)
        secs = np.array([b[1] for b in bars], dtype=np.int64)
        c = np.array([b[2] for b in bars])
        v = np.array([b[3] for b in bars])
        self.engine.upsert(rows, secs, c, c * 1.01, c * 0.99, c, v, v * c)
        if self.stats is not None:
            self.stats.bars += len(bars)


def check_equal(reader, book):
    frames = reader.frames()
    n = len(book.universe)
    for w, f in frames.items():
        ref = book.engine.window_copy(w)
        for name in FIELDS:
            assert same(getattr(f, name), getattr(ref, name)[:n]), (w, name)
        assert list(f.symbols) == book.universe.symbols
        assert f.as_of == (book.engine.T if book.engine.T >= 0 else None)
    c = reader.counters
    for k, v in book.engine.counters.items():
        assert c[f"engine.{k}"] == v


def test_layout_matches_the_c_header():
    L = _shm.LAYOUT
    assert L["header_size"] == 4096 == HEADER_DTYPE.itemsize
    assert L["rec_size"] == 64 == REC_DTYPE.itemsize
    assert (L["generation"], L["T"], L["counters"]) == (320, 384, 1024)
    assert L["heartbeat_ns"] % 64 == 0 and L["generation"] % 64 == 0
    lay = _shm.segment_layout(16384, 3)
    assert lay["off_windows"] % 4096 == 0 and lay["window_bytes"] % 4096 == 0
    assert lay["segment_bytes"] == lay["off_windows"] + 3 * lay["window_bytes"]


def test_names_are_checked():
    assert check_name("/abc") == "abc"
    for bad in ("", "/", "a/b", "x" * 300, "a\0b"):
        with pytest.raises(ValueError):
            check_name(bad)


def test_segment_is_private_and_removed_on_close(shm_name):
    b = Book()
    w = SegmentWriter(shm_name, b.engine, b.universe, b.stats)
    st_ = os.stat(shm_path(shm_name))
    assert stat.S_IMODE(st_.st_mode) == 0o600
    assert st_.st_size == _shm.segment_layout(64, 2)["segment_bytes"]
    w.close()
    assert not os.path.exists(shm_path(shm_name))
    w.close()  # idempotent


bar = st.tuples(st.integers(0, 11), st.integers(0, 40), st.floats(1.0, 1000.0), st.floats(0.0, 1e4))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(bar, min_size=0, max_size=12), min_size=1, max_size=25))
def test_published_windows_equal_the_engine_after_every_update(shm_name, updates):
    """The publish kernel against its reference: the engine's own windows, after each update
    (changed rows only; every row when the clock moved; late bars and corrections)."""
    b = Book()
    with SegmentWriter(shm_name, b.engine, b.universe, b.stats) as w, attach(shm_name, timeout=1) as r:
        for bars in updates:
            b.upsert([(f"S{i}", T0 + s, c, v) for i, s, c, v in bars])
            w.publish()
            check_equal(r, b)


def test_rows_outside_capacity_are_skipped(shm_name):
    b = Book(rows=8)
    b.upsert([("A", T0, 10.0, 1.0)])
    with SegmentWriter(shm_name, b.engine, b.universe, b.stats) as w, attach(shm_name, timeout=1) as r:
        b.upsert([("A", T0, 11.0, 2.0)])
        w.publish(np.array([0, -1, 8, 10**9], dtype=np.int64))
        check_equal(r, b)


def test_zero_copy_views_are_read_only_and_report_stability(shm_name):
    b = Book()
    b.upsert([("A", T0, 10.0, 5.0), ("B", T0, 20.0, 1.0)])
    with SegmentWriter(shm_name, b.engine, b.universe, b.stats) as w, attach(shm_name, timeout=1) as r:
        f = r.window(5)
        assert f.symbols == ("A", "B") and f.as_of == T0 and not f.copied
        assert f.close.tolist() == [10.0, 20.0] and f.stable()
        with pytest.raises(ValueError):
            f.close[0] = 1.0
        b.upsert([("A", T0, 12.0, 5.0)])
        w.publish()
        assert not f.stable()
        assert f.close[0] == 12.0  # the view is live memory
        g = r.window(5, copy=True)
        assert g.copied and g.stable() and g.close.tolist() == [12.0, 20.0]
        with pytest.raises(KeyError):
            r.window(7)
    assert not g.stable() and g.close.tolist() == [12.0, 20.0]  # reader closed: the copy stays


def test_snapshot_is_the_snapshot_document(shm_name):
    b = Book()
    for s in range(12):
        b.upsert([(f"S{i}", T0 + s, 10.0 + i + s / 7, 1.0 + i) for i in range(0, 10, 1 + s % 3)])
    b.stats.feed_latency.record_value(1500)
    b.stats.processing_latency.record_value(42_000)
    b.stats.count_decode_error("json", 3)
    b.stats.record_gap(T0 + 3, T0 + 5)
    b.stats.reconnects = 2
    with SegmentWriter(shm_name, b.engine, b.universe, b.stats, feed="vantafin") as w, \
            attach(shm_name, timeout=1) as r:
        b.upsert([("S1", T0 + 4, 99.0, 7.0)])  # a late bar
        w.publish()
        w.publish_stats()
        want = snapshot_document("vantafin", b.engine, b.universe, b.stats)
        assert r.snapshot() == want
        assert r.snapshot([20]) == snapshot_document("vantafin", b.engine, b.universe, b.stats, [20])
        assert r.stats == want["stats"]
        assert r.stats["decode_errors_by_kind"] == {"json": 3} and r.stats["gap_list"] == [[T0 + 3, T0 + 5]]
        assert r.T == b.engine.T and r.feed == "vantafin" and r.windows == (5, 20)


def test_symbol_table_grows_and_keeps_every_usable_symbol(shm_name):
    b = Book()
    with SegmentWriter(shm_name, b.engine, b.universe, b.stats) as w, attach(shm_name, timeout=1) as r:
        assert r.symbols == []
        b.upsert([("BRK.B", T0, 1.0, 1.0)])
        w.publish()
        b.upsert([("X" * 32, T0, 2.0, 1.0), ("btc/usd:~!", T0, 3.0, 1.0)])
        w.publish()
        assert r.symbols == ["BRK.B", "X" * 32, "btc/usd:~!"]


def test_symbols_beyond_the_heap_are_stored_empty_and_counted(shm_name):
    b = Book(rows=4)
    with SegmentWriter(shm_name, b.engine, b.universe, b.stats, heap_per_row=16) as w, \
            attach(shm_name, timeout=1) as r:
        b.upsert([("A" * 32, T0, 1.0, 1.0), ("B" * 32, T0, 1.0, 1.0), ("C" * 32, T0, 1.0, 1.0),
                  ("D", T0, 1.0, 1.0)])
        w.publish()
        # heap: 4 rows x 16 bytes = 64 bytes: A and B fill it, C does not fit, D would not either
        assert r.symbols == ["A" * 32, "B" * 32, "", ""]
        assert w._core.symbols_overflow == 2


def test_completed_second_is_published_with_its_info(shm_name):
    b = Book()
    b.upsert([("A", T0, 1.0, 1.0)])
    with SegmentWriter(shm_name, b.engine, b.universe, b.stats) as w, attach(shm_name, timeout=1) as r:
        assert r.last_second() is None
        assert r.wait_second(timeout=0.01) is None
        info = {"reason": "quiet", "reported": 11, "expected": 12, "latency_us": 812.5,
                "since_last_bar_us": 20001.0, "late_bars": 0}
        w.publish_second(T0, info)
        assert r.wait_second(timeout=1) == (T0, info)
        w.publish_second(T0 + 1, dict(info, reason="complete"))
        w.publish_second(T0 + 2, dict(info, reason="next"))
        T, got = r.wait_second(timeout=1)
        assert T == T0 + 2 and got["reason"] == "next" and r.seconds_skipped == 1
        hdr = np.frombuffer(r._live_seg().mm, HEADER_DTYPE, count=1)[0]
        assert int(hdr["second.reason"]) == 3 and int(hdr["second.expected"]) == 12


def test_wait_update_returns_pending_updates_and_times_out(shm_name):
    b = Book()
    with SegmentWriter(shm_name, b.engine, b.universe, b.stats) as w, attach(shm_name, timeout=1) as r:
        for mode in ("futex", "spin"):
            assert r.wait_update(timeout=0.02, mode=mode) is False
            w.publish()
            assert r.wait_update(timeout=0, mode=mode) is True  # already there: no sleep
            assert r.wait_update(timeout=0.02, mode=mode) is False


def test_two_writers_refuse_one_name_in_one_process(shm_name):
    b = Book()
    with SegmentWriter(shm_name, b.engine, b.universe, b.stats):
        with pytest.raises(SegmentBusy, match=rf"in use by a live writer \(pid {os.getpid()}"):
            SegmentWriter(shm_name, b.engine, b.universe, b.stats)


def test_attach_without_writer_times_out(shm_name):
    with pytest.raises(NoWriter, match="no such segment"):
        attach(shm_name, timeout=0.05)


def test_stats_too_big_keep_the_last_that_fitted(shm_name):
    b = Book()
    with SegmentWriter(shm_name, b.engine, b.universe, b.stats) as w, attach(shm_name, timeout=1) as r:
        b.stats.gap_list = [(i, i + 1) for i in range(40000)]  # ~500 KB of JSON
        assert w.publish_stats() is False and w.stats_too_big == 1
        assert r.stats["gap_list"] == []


def test_reader_without_stats(shm_name):
    b = Book(stats=False)
    b.upsert([("A", T0, 1.0, 1.0)])
    with SegmentWriter(shm_name, b.engine, b.universe) as w, attach(shm_name, timeout=1) as r:
        assert r.counters["engine.accepted"] == 1
        assert r.snapshot()["windows"]["5"]["A"]["close"] == 1.0
        assert not math.isnan(r.frames()[5].vwap[0])
        assert w.readers == 1


def test_a_stalled_writer_is_gone_then_back_without_reattaching(shm_name):
    """A heartbeat older than ``gone_after`` makes the writer gone; when the same writer
    beats again the reader says so and keeps reading it (no new epoch needed)."""
    import time

    b = Book()
    events = []
    with SegmentWriter(shm_name, b.engine, b.universe, b.stats, heartbeat_interval=3600) as w, \
            attach(shm_name, timeout=1, gone_after=0.05, on_event=lambda k, i: events.append(k)) as r:
        deadline = time.monotonic() + 5
        while r.status != "gone":
            assert time.monotonic() < deadline
        assert events == ["writer_gone"]
        w._core.beat()
        assert r.status == "live" and events == ["writer_gone", "writer_back"]
        w.publish()
        assert r.wait_update(timeout=0.03) is True
        assert r.reattaches == 0


def test_copies_can_reuse_the_memory_of_earlier_copies(shm_name):
    b = Book()
    b.upsert([("A", T0, 10.0, 5.0)])
    with SegmentWriter(shm_name, b.engine, b.universe, b.stats) as w, attach(shm_name, timeout=1) as r:
        f1 = r.frames()
        c1 = r.window(5, copy=True)
        b.upsert([("A", T0, 11.0, 5.0), ("B", T0, 7.0, 1.0)])
        w.publish()
        f2 = r.frames(out=f1)
        c2 = r.window(5, copy=True, out=c1)
        assert f2[5]._recs is f1[5]._recs and c2._recs is c1._recs  # the same memory, overwritten
        assert f2[20].close.tolist() == c2.close.tolist() == [11.0, 7.0] and list(c2.symbols) == ["A", "B"]
        check_equal(r, b)
