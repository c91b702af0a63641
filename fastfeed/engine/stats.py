"""Counters and latency histograms shared by the transport, the feeds and the engine.

Every layer increments plain integer attributes of one ``Stats`` object (no locks:
all increments happen on the event-loop thread).  Latencies go into HDR histograms:
``feed_latency`` (receive time minus bar end, microseconds) and ``processing_latency``
(message arrival to rolling stats updated, nanoseconds).  The completed-second rule and
the user's callbacks (``fastfeed.strategy``) add announcements by reason, their latency,
late bars, skipped seconds, callback durations and the feed's lag.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from hdrh.histogram import HdrHistogram

#: Keys of the ``stats`` document that the snapshot contract promises, in order.
CONTRACT_KEYS = (
    "frames",
    "messages",
    "bars",
    "decode_errors",
    "unknown_messages",
    "stale_dropped",
    "future_rejected",
    "reconnects",
    "gaps",
    "sequence_gaps",
)

_PERCENTILES = (50.0, 90.0, 99.0, 99.9)


class Stats:
    """Counters of one feed connection's life (survive reconnects)."""

    def __init__(self) -> None:
        self.frames = 0  # websocket frames received (data + control)
        self.messages = 0  # complete text messages handed to the feed session
        self.bytes = 0  # payload bytes of those messages
        self.bars = 0  # bars accepted by the engine
        self.decode_errors = 0  # elements/messages that failed to decode (all kinds)
        self.decode_errors_by_kind: Counter[str] = Counter()
        self.unknown_messages = 0  # well-formed messages of a type we do not handle
        self.stale_dropped = 0  # bars older than the ring depth
        self.future_rejected = 0  # bars too far in the future of their receive time
        self.invalid_rejected = 0  # bars with impossible numbers (engine's last check)
        self.replaced = 0  # bars that replaced an earlier bar for the same second
        self.protocol_errors = 0  # frames breaking the transport rules
        self.protocol_errors_by_kind: Counter[str] = Counter()  # e.g. message_too_big, rsv, binary
        self.sfox_out_of_order = 0  # sFOX updates older than the pair's previous one (skipped)
        self.session_errors = 0  # exceptions a Python session's on_message let escape (transport)
        self.reconnects = 0
        self.gaps = 0
        self.gap_list: list[tuple[int, int]] = []  # (last second before, first second after)
        self.sequence_gaps = 0
        self.universe_overflow = 0
        self.rows_recycled = 0  # universe rows given to a new symbol after their old one went idle
        # microseconds from bar end to receipt; 1 us .. 1 hour, 3 significant digits
        self.feed_latency = HdrHistogram(1, 3_600_000_000, 3)
        # nanoseconds from message arrival to engine updated; 10 ns .. 10 s
        self.processing_latency = HdrHistogram(10, 10_000_000_000, 3)
        # completed seconds: announcements by reason; µs from the receive time of the
        # second's first / last bar to the announcement; bars of announced seconds;
        # seconds (and on_update calls) a consumer slower than the feed did not get
        self.seconds_completed: Counter[str] = Counter()
        self.second_latency = HdrHistogram(1, 3_600_000_000, 3)
        self.second_since_last_bar = HdrHistogram(1, 3_600_000_000, 3)
        self.late_bars = 0
        self.seconds_skipped = 0
        self.updates_skipped = 0
        # user callbacks: duration per callback (µs), errors; the feed's lag behind its own
        # clock (µs, see fastfeed.strategy.lag)
        self.callback_time: dict[str, HdrHistogram] = {}
        self.callback_errors = 0
        self.lag = HdrHistogram(1, 3_600_000_000, 3)

    def count_decode_error(self, kind: str, n: int = 1) -> None:
        """Count ``n`` elements lost to a decode error of ``kind`` (e.g. ``"json"``)."""
        self.decode_errors += n
        self.decode_errors_by_kind[kind] += n

    def record_gap(self, before: int, after: int, keep: int = 1000) -> None:
        """Record a reconnect gap: last second before, first second after (bounded list)."""
        self.gaps += 1
        if len(self.gap_list) < keep:
            self.gap_list.append((before, after))

    @staticmethod
    def _percentiles(h: HdrHistogram, scale: float) -> dict[str, Any]:
        if h.get_total_count() == 0:
            return {f"p{p:g}": None for p in _PERCENTILES} | {"count": 0}
        out: dict[str, Any] = {
            f"p{p:g}": h.get_value_at_percentile(p) / scale for p in _PERCENTILES
        }
        out["max"] = h.get_max_value() / scale
        out["count"] = h.get_total_count()
        return out

    def as_dict(self) -> dict[str, Any]:
        """The ``stats`` document: contract keys first, then the extras."""
        d: dict[str, Any] = {k: getattr(self, k) for k in CONTRACT_KEYS}
        d["decode_errors_by_kind"] = dict(self.decode_errors_by_kind)
        for k in ("bytes", "invalid_rejected", "replaced", "protocol_errors", "session_errors",
                  "universe_overflow", "rows_recycled"):
            d[k] = getattr(self, k)
        d["protocol_errors_by_kind"] = dict(self.protocol_errors_by_kind)
        d["sfox_out_of_order"] = self.sfox_out_of_order
        d["gap_list"] = [list(g) for g in self.gap_list]
        d["feed_latency_ms"] = self._percentiles(self.feed_latency, 1e3)
        d["processing_latency_us"] = self._percentiles(self.processing_latency, 1e3)
        d["seconds_completed"] = {r: self.seconds_completed.get(r, 0) for r in ("complete", "quiet", "next")}
        d["second_latency_us"] = self._percentiles(self.second_latency, 1)
        d["second_since_last_bar_us"] = self._percentiles(self.second_since_last_bar, 1)
        for k in ("late_bars", "seconds_skipped", "updates_skipped", "callback_errors"):
            d[k] = getattr(self, k)
        d["callback_us"] = {name: self._percentiles(h, 1) for name, h in sorted(self.callback_time.items())}
        d["lag_ms"] = self._percentiles(self.lag, 1e3)
        return d


def sync_engine_counters(stats: Stats, engine: Any) -> None:
    """Copy the engine's drop counters into ``stats`` (idempotent: one engine per Stats)."""
    c = engine.counters
    stats.stale_dropped = int(c.get("stale_dropped", 0))
    stats.future_rejected = int(c.get("future_rejected", 0))
    stats.invalid_rejected = int(c.get("invalid_rejected", 0))
    stats.replaced = int(c.get("replaced", 0))
