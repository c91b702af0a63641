"""Prometheus metrics: scraped over HTTP and parsed by prometheus_client's own parser."""
from __future__ import annotations

import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastfeed._ext.engine import Engine
from fastfeed.share import SegmentWriter, attach
from fastfeed.share.journal import JournalWriter
from fastfeed.share.metrics import FeedCollector, parse_host_port, serve_metrics
from fastfeed.engine import Stats
from fastfeed.engine import Universe

T0 = 1_700_000_000


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_scrape_parses_and_matches_the_feed(shm_name, tmp_path):
    stats = Stats()
    stats.bars, stats.messages, stats.reconnects, stats.gaps = 1200, 12, 2, 1
    stats.stale_dropped, stats.future_rejected, stats.invalid_rejected = 3, 4, 5
    stats.count_decode_error("json", 2)
    stats.count_decode_error("utf8")
    for v in (400, 400, 400, 20_000):  # us
        stats.feed_latency.record_value(v)
    stats.processing_latency.record_value(30_000)  # ns
    engine = Engine(64, (10,), prefault=False)
    universe = Universe(64)
    rows = np.array([universe.row("A"), universe.row("B")], dtype=np.int64)
    one = np.ones(2)
    engine.upsert(rows, np.full(2, T0, dtype=np.int64), one, one, one, one, one, one)
    journal = JournalWriter(tmp_path, feed="vantafin")
    journal.message(b"[]", T0 * 10**9)
    journal.flush()
    with SegmentWriter(shm_name, engine, universe, stats) as share, attach(shm_name, timeout=1):
        col = FeedCollector(stats, feed="vantafin", universe=universe, engine=engine, journal=journal,
                            share=share)
        server, _ = serve_metrics("127.0.0.1:0", col)
        try:
            m = scrape(server.server_port)
        finally:
            server.shutdown()
    journal.close()
    f = (("feed", "vantafin"),)
    for name, v in (("bars", 1200), ("messages", 12), ("reconnects", 2), ("gaps", 1), ("stale_dropped", 3),
                    ("future_rejected", 4), ("invalid_rejected", 5), ("decode_errors", 3)):
        assert m[(f"fastfeed_{name}_total", f)] == v
    assert m[("fastfeed_decode_errors_by_kind_total", (("feed", "vantafin"), ("kind", "json")))] == 2
    assert m[("fastfeed_decode_errors_by_kind_total", (("feed", "vantafin"), ("kind", "utf8")))] == 1
    le = lambda b: (("feed", "vantafin"), ("le", b))  # noqa: E731
    assert m[("fastfeed_feed_latency_seconds_count", f)] == 4
    assert m[("fastfeed_feed_latency_seconds_bucket", le("0.0005"))] == 3
    assert m[("fastfeed_feed_latency_seconds_bucket", le("0.025"))] == 4
    assert m[("fastfeed_feed_latency_seconds_bucket", le("+Inf"))] == 4
    assert m[("fastfeed_feed_latency_seconds_sum", f)] == pytest.approx(3 * 400e-6 + 20e-3, rel=1e-3)
    assert m[("fastfeed_processing_latency_seconds_bucket", le("2.5e-05"))] == 0
    assert m[("fastfeed_processing_latency_seconds_bucket", le("5e-05"))] == 1
    assert m[("fastfeed_universe_rows", f)] == 2 and m[("fastfeed_universe_capacity", f)] == 64
    assert m[("fastfeed_clock_seconds", f)] == T0
    assert m[("fastfeed_clock_lag_seconds", f)] > 0
    assert m[("fastfeed_journal_bytes_total", f)] > 0 and m[("fastfeed_journal_failed", f)] == 0
    seg = (("feed", "vantafin"), ("segment", shm_name))
    assert m[("fastfeed_shm_readers", seg)] == 1
    assert any(k[0] == "process_cpu_seconds_total" for k in m)


def test_metrics_address_is_checked():
    assert parse_host_port("127.0.0.1:9108") == ("127.0.0.1", 9108)
    assert parse_host_port(":9108") == ("0.0.0.0", 9108)
    for bad in ("9108", "host:", "host:99999", "h:x"):
        with pytest.raises(ValueError):
            parse_host_port(bad)
