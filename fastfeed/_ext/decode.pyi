"""Fill loops: decoded msgspec Structs -> preallocated batch arrays -> ``Engine.upsert``."""
from typing import Any, Callable, Optional

import numpy as np

PV_TYPICAL: int  # pv = volume * (high + low + close) / 3
PV_CLOSE: int    # pv = volume * close
PV_VWAP: int     # pv = volume * vwap when the vwap field is not None, else typical

class LatencyBuckets:
    """Log-linear counts (7 significant bits, ~0.8 %); O(1) record, flushed into hdrh."""

    array: np.ndarray   # int64[8192], readonly
    pending: int        # readonly: values recorded since the last flush
    def add(self, v: int) -> None: ...
    @staticmethod
    def bucket_value(idx: int) -> int: ...
    def flush_into(self, hist: Any) -> int: ...

class LagClock:
    """The feed's lag and on_batch's duration, measured by a BarFiller after each update."""
    ns_per_s: float         # double: wall ns per bar second (1e9 / clock_rate)
    spread_ns: int          # int64_t: how late in its second a bar may arrive
    warn_ns: int            # int64_t: on_lag(lag_ns) when the lag passes this (at most every 0.5 s)
    on_lag: Callable[[int], None] | None
    on_error: Callable[[BaseException], None] | None  # gets what on_batch raised
    time_calls: bool        # bint: time on_batch into callback_us / callback_ns
    best_ns: int            # readonly: smallest (now - end of the clock's second) seen
    lag_ns: int             # readonly: the latest lag
    callback_ns: int        # readonly: on_batch time in all (ns)
    last_call_ns: int       # readonly: the latest on_batch call (ns)
    calls: int              # readonly: on_batch calls timed
    lag_us: LatencyBuckets  # readonly: lag values (µs)
    callback_us: LatencyBuckets  # readonly: on_batch durations (µs)
    def __init__(self, clock_rate: float = ..., spread_s: float = ..., warn_s: float = ...) -> None: ...
    def observe(self, T: int, now_ns: int) -> int: ...
    def timed(self, duration_ns: int) -> None: ...

class Payload:
    """The message a BarFiller's C sink lends its decoder: a read-only buffer over the
    listener's memory, valid only during that call (one object reused per message; outside
    the call ``bytes()``/``memoryview()`` of it raise ValueError and ``len()`` is 0)."""
    exports: int    # readonly: buffers taken and not yet given back
    live: bool      # readonly: True only during the sink call
    def __len__(self) -> int: ...
    def __bytes__(self) -> bytes: ...
    def __buffer__(self, flags: int) -> memoryview: ...

class BarFiller:
    """Fills the batch columns from decoded bar Structs; one ``engine.upsert`` per message or read.

    The batch arrays are reused: valid until the next ``fill``/``process`` call.
    """

    rows: np.ndarray     # int64[capacity]
    seconds: np.ndarray  # int64[capacity]
    open: np.ndarray     # float64[capacity]
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    pv: np.ndarray
    capacity: int
    pv_mode: int
    processing_latency: LatencyBuckets  # ns, message arrival -> upsert done
    feed_latency: LatencyBuckets        # us, arrival - end of the latest bar
    n: int                # bars filled by the last call
    accepted: int         # bars the engine accepted in the last process()
    values_errors: int    # bars skipped for impossible numbers or a junk symbol in the last call
    overflow: int         # bars skipped because the universe was full (no row idle)
    rows_recycled: int    # idle rows given to new symbols (since construction)
    max_s: int            # latest bar second of the last call (-1 if none)
    others: Optional[list]  # elements that were not bars, in order (None if none)
    payload: Payload      # readonly: what the C sink lends the decoder (replaced only if one was kept)
    def __init__(self, bar_type: Optional[type], fields: Optional[tuple], universe: Any,
                 overflow_exc: type, engine: Any, pv_mode: int = ..., capacity: int = ...) -> None: ...
    next_flush: int         # receive time (ns) at or after which flush_stats is called
    deferred: bool          # bars wait in the arrays for flush_pending() (one upsert per buffer)
    max_pending: int        # deferred bars beyond this are upserted at once
    pending: int            # readonly: bars waiting for flush_pending()
    batch_first_ns: int     # readonly, during on_batch: receive time (ns) of the batch's first message
    batch_last_ns: int      # readonly, during on_batch: ... of its last message
    before_second: Callable[[int], None] | None  # called before an upsert that moves the clock to a new second
    on_batch: Callable[[np.ndarray, int], None] | None  # the one Python call per engine update
    lag: LagClock | None    # measures the lag (and times on_batch) after every engine update
    def fill(self, msg: Any) -> int: ...
    def process(self, msg: Any, recv_ns: int) -> int: ...
    gap_from: int           # clock before a reconnect (-1: none): the next upsert checks for a gap
    def bind(self, decode: Any, stats: Any, engine: Any, on_batch: Any, after_fill: Any,
             flush_stats: Any, decode_failed: Any, internal_error: Any, on_gap: Any = None) -> None: ...
    def message_sink(self) -> Any: ...  # capsule of the C sink (ext/sink.pxd); borrowed: keep the filler
    def on_message(self, payload: Any, recv_ns: int) -> None: ...
    def apply(self, msg: Any, recv_ns: int) -> None: ...
    def flush_pending(self) -> int: ...

class SfoxState:
    """Per-pair sFOX state (arrays indexed by row): previous update, current bar, 24 h values."""

    prev_t: np.ndarray; prev_v: np.ndarray; prev_w: np.ndarray
    bar_s: np.ndarray; bar_o: np.ndarray; bar_h: np.ndarray; bar_l: np.ndarray
    bar_c: np.ndarray; bar_v: np.ndarray; bar_pv: np.ndarray
    day_open: np.ndarray; day_high: np.ndarray; day_low: np.ndarray
    day_volume: np.ndarray; day_vwap: np.ndarray; day_last: np.ndarray; day_t: np.ndarray
    capacity: int
    resets: int      # UTC-day resets seen
    disorder: int    # updates older than the pair's previous one (skipped)
    def __init__(self, capacity: int) -> None: ...
    def reset(self) -> None: ...
    def update(self, out: BarFiller, row: int, t_ns: int, last: float, volume: float, vwap: float,
               day_open: float, day_high: float, day_low: float) -> int: ...

class SfoxFiller(BarFiller):
    """The sFOX filler: envelopes read from their slots, bars differenced by ``state``; notes
    (``("sequence_gap", expected, got, recipient)``, ``("unknown", recipient)``,
    ``("validation",)``, ``("disorder", pair)``) and acks go to ``others``."""

    state: SfoxState
    sequence: int   # last sequence number on this connection, -1: none
    def __init__(self, envelope_type: type, payload_type: type, universe: Any, overflow_exc: type,
                 engine: Any, prefix: str, capacity: int = ...) -> None: ...
    def reset_sequence(self) -> None: ...
    def note_sequence(self, seq: int) -> int: ...
