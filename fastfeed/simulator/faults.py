"""Fault injection settings of the simulator (all deterministic: counters, no randomness).

Counts are per connection and refer to *data frames* (frames carrying bars/updates) sent on
that connection, numbered from 1.  ``0`` disables a fault.  ``connections`` limits faults to
the first N connections the simulator accepts (``0``: every connection), so a test can
inject a fault once and then watch a clean reconnect.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["Faults"]


@dataclass
class Faults:
    #: close each (faulted) connection after this many data frames
    drop_after: int = 0
    #: "close": CLOSE 1001 then hang up; "abrupt": TCP reset, no CLOSE (unsent data is lost)
    drop_mode: str = "close"
    #: every N-th second, re-send bars of an earlier second with new values (corrections)
    correction_every: int = 0
    correction_lag: int = 2
    correction_count: int = 5
    #: every N-th data frame is split into continuation frames of ``fragment_size`` bytes
    fragment_every: int = 0
    fragment_size: int = 64
    #: every N-th data frame is followed by a text frame that is not valid JSON
    garbage_every: int = 0
    #: every N-th array frame gets one extra malformed element (real bars are all still sent)
    malformed_every: int = 0
    #: every N-th data frame is followed by a binary frame
    binary_every: int = 0
    #: after the N-th data frame, one text frame with the RSV1 bit set
    rsv_after: int = 0
    #: after the N-th data frame, one text frame that is not valid UTF-8
    invalid_utf8_after: int = 0
    #: sFOX: every N-th message skips one sequence number
    sequence_gap_every: int = 0
    #: after the N-th data frame, go silent (no data, pings unanswered) for ``stall_seconds``
    stall_after: int = 0
    stall_seconds: float = 0.0
    #: sleep this long after each write (slow writer)
    write_delay: float = 0.0
    #: every N-th second, ``withhold_count`` bars from the middle of the second are not sent, for
    #: ``withhold_for`` seconds in a row (seconds counted from the simulator's first one)
    withhold_every: int = 0
    withhold_count: int = 1
    withhold_for: int = 1
    #: every N-th second, the last ``delay_count`` bars of the burst are sent ``delay_ms`` later
    delay_every: int = 0
    delay_count: int = 1
    delay_ms: float = 100.0
    #: sFOX: every N-th update is followed by the pair's previous update again (older
    #: timestamp, next sequence number): an out-of-order update
    sfox_out_of_order_every: int = 0
    #: after the N-th data frame, one text frame of ``oversize_bytes`` bytes (a single frame
    #: over the client's size limit; the default exceeds fastfeed's default 16 MiB)
    oversize_after: int = 0
    oversize_bytes: int = 16 * 1024 * 1024 + 1
    #: refuse the WebSocket upgrade with this HTTP status (e.g. 401, 403, 429, 503)
    reject_status: int = 0
    #: with ``reject_status``: send ``Retry-After: N`` (seconds; 0: no header)
    retry_after: int = 0
    #: close with 1008 (policy violation) right after accepting the key
    policy_close: bool = False
    #: faults apply to the first N connections only (0: all)
    connections: int = 0

    def __post_init__(self) -> None:
        if self.drop_mode not in ("close", "abrupt"):
            raise ValueError("drop_mode must be 'close' or 'abrupt'")
        if self.withhold_every and not 1 <= self.withhold_for <= self.withhold_every:
            raise ValueError("withhold_for must be within 1..withhold_every")
        if self.reject_status and not 400 <= self.reject_status <= 599:
            raise ValueError("reject_status must be an HTTP error status (400-599)")
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
                raise ValueError(f"{f.name} must be >= 0")

    @property
    def any(self) -> bool:
        d = asdict(self)
        d.pop("drop_mode")
        d.pop("correction_lag")
        d.pop("correction_count")
        d.pop("fragment_size")
        d.pop("oversize_bytes")
        d.pop("retry_after")
        d.pop("connections")
        for k in ("withhold_count", "withhold_for", "delay_count", "delay_ms"):
            d.pop(k)
        return any(bool(v) for v in d.values())

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Faults":
        return cls(**(d or {}))
