"""Prometheus metrics of a running feed (``fastfeed serve --metrics HOST:PORT``).

:class:`FeedCollector` reads a feed's ``Stats`` (and, when given, its universe, engine
clock, journal writer and shared-memory writer) at scrape time and hands
``prometheus_client`` metric families; the exposition format is entirely
``prometheus_client``'s.  Every integer counter of ``Stats`` is exported as
``fastfeed_<name>_total`` (whatever later issues add), ``decode_errors_by_kind`` as
``fastfeed_decode_errors_by_kind_total{kind=...}``, and the HDR latency histograms as
Prometheus histograms in seconds (fixed buckets; ``_sum`` from the HDR's recorded
values, 3 significant digits).  Every series carries a ``feed`` label.

A scrape runs on the HTTP server's thread while the feed updates ``Stats`` on its own:
each value is read once, so a scrape may mix values a few microseconds apart.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Any, Iterator

from hdrh.histogram import HdrHistogram
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

__all__ = ["FeedCollector", "serve_metrics", "parse_host_port", "HISTOGRAM_UNITS", "LATENCY_BUCKETS"]

#: seconds per recorded unit of each latency histogram of ``Stats`` (others are skipped)
HISTOGRAM_UNITS = {"feed_latency": 1e-6, "processing_latency": 1e-9}
#: histogram bucket bounds, seconds
LATENCY_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
                   5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_HELP = {
    "frames": "WebSocket frames received",
    "messages": "complete messages handed to the feed session",
    "bytes": "payload bytes of those messages",
    "bars": "bars accepted by the engine",
    "decode_errors": "elements or messages that failed to decode",
    "unknown_messages": "well-formed messages of a type the feed does not handle",
    "stale_dropped": "bars older than the ring depth, dropped",
    "future_rejected": "bars too far in the future of their receive time, rejected",
    "invalid_rejected": "bars with impossible numbers, rejected",
    "replaced": "bars that replaced an earlier bar of the same second",
    "protocol_errors": "frames breaking the WebSocket rules",
    "reconnects": "reconnections",
    "gaps": "reconnect gaps (whole seconds missed)",
    "sequence_gaps": "gaps in the vendor's sequence numbers",
    "universe_overflow": "bars of new symbols refused: universe full",
}


class FeedCollector(Collector):
    """The metrics of one feed, read at scrape time.

    :param stats: the feed's ``Stats``.
    :param feed: the value of the ``feed`` label.
    :param universe: for ``fastfeed_universe_rows`` / ``_capacity``.
    :param engine: for ``fastfeed_clock_seconds`` and ``fastfeed_clock_lag_seconds``
        (wall clock minus the end of the clock's second).
    :param journal: the journal's recording writer (``bytes_written``, ``dropped``, ``error``).
    :param share: the ``SegmentWriter`` (attached readers, publishes).
    """

    def __init__(self, stats: Any, *, feed: str = "", universe: Any = None, engine: Any = None,
                 journal: Any = None, share: Any = None, namespace: str = "fastfeed") -> None:
        self.stats, self.feed, self.universe, self.engine = stats, feed, universe, engine
        self.journal, self.share, self.ns = journal, share, namespace

    def _name(self, name: str) -> str:
        return f"{self.ns}_{name}"

    def collect(self) -> Iterator[Any]:
        lab = ["feed"]
        val = [self.feed]
        for attr, v in list(vars(self.stats).items()):
            if attr.startswith("_"):
                continue
            if type(v) is int:
                c = CounterMetricFamily(self._name(attr), _HELP.get(attr, f"Stats.{attr}"), labels=lab)
                c.add_metric(val, v)
                yield c
            elif isinstance(v, Counter):
                # decode_errors_by_kind -> label "kind"; a later seconds_completed_by_reason -> "reason"
                base, _, label = attr.rpartition("_by_")
                label = label if base else "key"
                c = CounterMetricFamily(self._name(attr), f"{_HELP.get(base, 'Stats.' + attr)}, by {label}",
                                        labels=[*lab, label])
                for key, n in sorted(v.items()):
                    c.add_metric([*val, str(key)], n)
                yield c
            elif isinstance(v, HdrHistogram) and attr in HISTOGRAM_UNITS:
                yield self._histogram(attr, v, HISTOGRAM_UNITS[attr], lab, val)
        if self.universe is not None:
            g = GaugeMetricFamily(self._name("universe_rows"), "instruments with a row", labels=lab)
            g.add_metric(val, len(self.universe))
            yield g
            g = GaugeMetricFamily(self._name("universe_capacity"), "rows preallocated", labels=lab)
            g.add_metric(val, self.universe.capacity)
            yield g
        if self.engine is not None and int(self.engine.T) >= 0:
            T = int(self.engine.T)
            g = GaugeMetricFamily(self._name("clock_seconds"), "the clock T: largest bar second (epoch s)",
                                  labels=lab)
            g.add_metric(val, T)
            yield g
            g = GaugeMetricFamily(self._name("clock_lag_seconds"),
                                  "wall clock minus the end of the clock's second", labels=lab)
            g.add_metric(val, time.time() - (T + 1))
            yield g
        if self.journal is not None:
            c = CounterMetricFamily(self._name("journal_bytes"), "bytes written to the journal", labels=lab)
            c.add_metric(val, self.journal.bytes_written)
            yield c
            c = CounterMetricFamily(self._name("journal_dropped"), "records the journal lost (stopped)",
                                    labels=lab)
            c.add_metric(val, self.journal.dropped)
            yield c
            g = GaugeMetricFamily(self._name("journal_failed"), "1 if the journal stopped on an error",
                                  labels=lab)
            g.add_metric(val, 0 if self.journal.error is None else 1)
            yield g
        if self.share is not None and not self.share.closed:
            g = GaugeMetricFamily(self._name("shm_readers"), "reader processes attached to the segment",
                                  labels=[*lab, "segment"])
            g.add_metric([*val, self.share.name], self.share.readers)
            yield g
            c = CounterMetricFamily(self._name("shm_generation"), "write sections published (2 per write)",
                                    labels=[*lab, "segment"])
            c.add_metric([*val, self.share.name], self.share.generation)
            yield c

    def _histogram(self, attr: str, h: HdrHistogram, unit: float, lab: list[str], val: list[str]) -> Any:
        bounds = LATENCY_BUCKETS
        counts = [0] * (len(bounds) + 1)
        total = 0
        s = 0.0
        for it in h.get_recorded_iterator():
            v = it.value_iterated_to * unit
            n = it.count_added_in_this_iter_step
            total += n
            s += v * n
            i = 0
            while i < len(bounds) and v > bounds[i]:
                i += 1
            counts[i] += n
        buckets = []
        acc = 0
        for b, n in zip((*map(repr, bounds), "+Inf"), counts):
            acc += n
            buckets.append((b, acc))
        name = attr[:-8] if attr.endswith("_latency") else attr
        fam = HistogramMetricFamily(self._name(f"{name}_latency_seconds"), f"Stats.{attr}, seconds",
                                    labels=lab)
        fam.add_metric(val, buckets, s)
        return fam


def parse_host_port(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9108"`` -> ``("127.0.0.1", 9108)``; ``":9108"`` listens on all addresses."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"metrics address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9108")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def serve_metrics(address: str, collector: FeedCollector, *, process: bool = True) -> tuple[Any, Any]:
    """Serve ``collector`` (and the process's CPU/memory metrics) at ``http://ADDRESS/metrics``
    on a daemon thread; returns ``(server, thread)`` (``server.shutdown()`` stops it;
    ``server.server_port`` is the port, useful with port 0)."""
    host, port = parse_host_port(address)
    registry = CollectorRegistry()
    registry.register(collector)
    if process:
        from prometheus_client import ProcessCollector

        ProcessCollector(registry=registry)
    return start_http_server(port, addr=host, registry=registry)
