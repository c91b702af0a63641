# cython: language_level=3
"""Fill loops: decoded msgspec Structs → preallocated batch arrays → ``Engine.upsert``.

A :class:`BarFiller` is a feed session's message sink: the transport's listener hands it
each complete text message with one C call (``message_sink()``, the contract of
``ext/sink.pxd``); it decodes the whole message with the feed's msgspec ``Decoder``, walks
the decoded Structs, fills the batch columns (reused across messages, grown only when a
message holds more bars than ever before), hands them to the engine in one ``upsert``
per socket read (or per message) and records the latencies. The user's ``on_batch``
callback is the only Python function it calls on that path. :class:`SfoxFiller` is the
same path for sFOX's cumulative tickers (its per-pair state: :class:`SfoxState`).

Struct fields are read straight from their slots: a msgspec Struct stores each field
in a slot whose offset is published by the class's ``member_descriptor``; the offsets
are read once when a :class:`BarFiller` is built, and the type of every element is
checked exactly before its slots are read, so the reads are as safe as ``getattr``
"""
cimport cython
from cpython.buffer cimport PyBUF_READ, PyBuffer_FillInfo
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.object cimport PyObject, PyTypeObject, Py_TYPE
from cpython.ref cimport Py_REFCNT
from cpython.pycapsule cimport PyCapsule_New
from cpython.dict cimport PyDict_GetItem
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.list cimport PyList_GET_SIZE, PyList_GET_ITEM
from cpython.long cimport PyLong_AsLongLong, PyLong_AsSsize_t
from libc.math cimport isfinite, NAN
from libc.stdint cimport int64_t, INT64_MAX, INT64_MIN
from libc.string cimport memmove, memcmp
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME

from sink cimport MessageSink
from fastfeed._ext.engine cimport Engine, bar_fate, BAR_ACCEPTED

import numpy as np

cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        const char* name
        int type
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member
    bint PyFloat_CheckExact(PyObject*) noexcept
    bint PyLong_CheckExact(PyObject*) noexcept
    bint PyUnicode_CheckExact(PyObject*) noexcept
    Py_ssize_t PyUnicode_GET_LENGTH(PyObject*) noexcept
    int PyUnicode_KIND(PyObject*) noexcept
    void* PyUnicode_DATA(PyObject*) noexcept
    double PyFloat_AsDouble(PyObject*) except? -1.0

#: an upsert of at least this many bars releases the GIL (fewer: not worth the switch)
cdef enum:
    NOGIL_BARS = 256

#: how the engine's ``pv`` (price × volume) is made from a bar
cdef enum:
    # the same as C constants (the fill loop compares with these: a module global would be
    # a dict lookup and a Python comparison per bar)
    _PV_TYPICAL = 0
    _PV_CLOSE = 1
    _PV_VWAP = 2
PV_TYPICAL = _PV_TYPICAL   # volume * (high + low + close) / 3
PV_CLOSE = _PV_CLOSE       # volume * close
PV_VWAP = _PV_VWAP         # volume * vwap when the vwap field is present (not None), else typical

cdef int64_t MAX_MS = 9_000_000_000_000_000  # bar times beyond this (~285,000 years) are absurd
#: distinct new sFOX pairs one batch can hold before their first bar is accepted
SFOX_NEW_PAIRS = 1024

cdef enum:
    SUB_BITS = 7
    N_SUB = 128         # 1 << SUB_BITS sub-buckets per power of two in the latency buckets (~0.8 %)
    N_BUCKETS = 64 * 128


cdef inline int64_t now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef Py_ssize_t member_offset(object tp, str name) except -1:
    """Offset of the slot that holds field ``name`` of msgspec Struct type ``tp``."""
    for k in tp.__mro__:
        d = k.__dict__.get(name)
        if d is not None:
            if type(d).__name__ != "member_descriptor":
                raise TypeError(f"{tp.__name__}.{name} is not a slot ({type(d).__name__})")
            return (<PyMemberDescrObject*><PyObject*>d).d_member.offset
    raise TypeError(f"{tp.__name__} has no field {name!r}")


cdef extern from *:
    """
    #include "ff_prefetch.h"
    static inline void ff_prefetch_lines(const void *p, int lines) {
        const char *c = (const char *)p;
        if (!c) return;
        FF_PREFETCH_READ(c);
        if (lines > 1) FF_PREFETCH_READ(c + 64);
    }
    """
    void prefetch_lines "ff_prefetch_lines" (const void* p, int lines) noexcept nogil

#: how far ahead in a decoded array the fill asks for an element's Struct / its field objects
cdef enum:
    PF_STRUCT = 8
    PF_FIELDS = 4


cdef inline PyObject* get_slot(PyObject* obj, Py_ssize_t off) noexcept:
    return (<PyObject**>((<char*>obj) + off))[0]


cdef extern from "Python.h":
    # the macro on a borrowed pointer: no reference taken (``<object>p`` would take one)
    double float_value "PyFloat_AS_DOUBLE" (PyObject*) noexcept nogil


cdef inline bint as_double(PyObject* o, double* out) noexcept:
    """Read a float (or int) field; False if it is missing or not a number."""
    if o != NULL and PyFloat_CheckExact(o):
        out[0] = float_value(o)
        return True
    return as_double_slow(o, out)


cdef bint as_double_slow(PyObject* o, double* out) noexcept:
    """:func:`as_double` of anything but an exact ``float`` (kept out of the fill loops)."""
    if o == NULL:
        return False
    try:
        out[0] = PyFloat_AsDouble(o)
    except Exception:
        return False
    return True


cdef inline bint as_int64(PyObject* o, int64_t* out) noexcept:
    """Read an exact ``int`` field; False if it is not one or does not fit 64 bits.

    (Cython's conversion reads an int of up to a few internal digits, such as any epoch-ms
    time, in place; ``PyLong_AsLongLong`` of CPython 3.11 converts every int from 2**30
    on through ``_PyLong_AsByteArray``.)"""
    if o == NULL or not PyLong_CheckExact(o):
        return False
    try:
        out[0] = <int64_t><object>o
    except OverflowError:
        return False
    return True


cdef inline bint same_text(PyObject* a, PyObject* b) noexcept:
    """``a == b`` for two exact ``str`` objects, compared in place (no call for short ones)."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(a), k
    cdef int kind = PyUnicode_KIND(a)
    cdef const unsigned char* p
    cdef const unsigned char* q
    if n != PyUnicode_GET_LENGTH(b) or kind != PyUnicode_KIND(b):
        return False
    n *= kind
    p = <const unsigned char*>PyUnicode_DATA(a)
    q = <const unsigned char*>PyUnicode_DATA(b)
    if n > 16:
        return memcmp(p, q, n) == 0
    for k in range(n):
        if p[k] != q[k]:
            return False
    return True


cdef class LatencyBuckets:
    """Log-linear bucket counts (7 significant bits): O(1) per record, no allocation.

    :meth:`flush_into` moves the counts into an ``hdrh`` histogram (one
    ``record_value(value, count)`` per non-empty bucket) and clears them.
    """
    cdef int64_t[::1] counts
    cdef readonly object array
    cdef readonly int64_t pending

    def __cinit__(self):
        self.array = np.zeros(N_BUCKETS, dtype=np.int64)
        self.counts = self.array
        self.pending = 0

    cdef inline void record(self, int64_t v) noexcept:
        cdef int e, idx
        if v < 1:
            v = 1
        if v < N_SUB:
            idx = <int>v
        else:
            e = 63 - __builtin_clzll(<unsigned long long>v)
            idx = N_SUB + (e - SUB_BITS) * N_SUB + <int>((v >> (e - SUB_BITS)) & (N_SUB - 1))
        self.counts[idx] += 1
        self.pending += 1

    def add(self, int64_t v) -> None:
        """Record one value (Python entry point, for tests)."""
        self.record(v)

    @staticmethod
    def bucket_value(int idx) -> int:
        """The value a bucket stands for (the middle of its range)."""
        cdef int e, sub
        if idx < N_SUB:
            return idx
        e = (idx - N_SUB) // N_SUB + SUB_BITS
        sub = (idx - N_SUB) % N_SUB
        return ((<int64_t>(N_SUB + sub)) << (e - SUB_BITS)) + ((<int64_t>1 << (e - SUB_BITS)) >> 1)

    def flush_into(self, hist) -> int:
        """Add the pending counts to ``hist`` (an ``hdrh`` histogram); return how many."""
        if self.pending == 0:
            return 0
        cdef int64_t lo = hist.lowest_trackable_value, hi = hist.highest_trackable_value
        cdef int64_t v, moved = self.pending
        for idx in np.flatnonzero(self.array):
            v = LatencyBuckets.bucket_value(idx)
            hist.record_value(min(max(v, lo), hi), int(self.counts[idx]))
            self.counts[idx] = 0
        self.pending = 0
        return moved


cdef extern from *:
    int __builtin_clzll(unsigned long long) nogil



cdef class LagClock:
    """The feed's lag behind its own clock, and how long ``on_batch`` takes, measured in C
    after every engine update of a :class:`BarFiller` whose :attr:`BarFiller.lag` is set
    (``fastfeed.strategy.lag.LagMonitor`` reads it and words the warning).

    Lag: ``behind = now - end of the clock's second`` (the second mapped to wall time at
    ``ns_per_s`` ns per bar second: ``1e9 / clock_rate``), minus the smallest ``behind``
    seen (the feed's own delivery delay) and ``spread_ns`` (how late in a second its bars
    may arrive); at least 0.  Values go into :attr:`lag_us` (µs); when one passes
    ``warn_ns``, ``on_lag(lag_ns)`` is called (at most every 0.5 s of ``now``).

    With :attr:`time_calls`, each ``on_batch`` call's duration goes into
    :attr:`callback_us` (µs), :attr:`callback_ns` (the sum, ns) and :attr:`last_call_ns`.
    ``on_error(exc)`` (when set) gets what ``on_batch`` raised, instead of the filler.
    """
    cdef public double ns_per_s
    cdef public int64_t spread_ns, warn_ns
    cdef public object on_lag, on_error
    cdef public bint time_calls
    cdef readonly int64_t best_ns, lag_ns, callback_ns, last_call_ns, calls
    cdef int64_t next_warn
    cdef readonly LatencyBuckets lag_us, callback_us

    def __init__(self, double clock_rate=1.0, double spread_s=0.0, double warn_s=1.0):
        if not clock_rate > 0:
            raise ValueError("clock_rate must be > 0")
        self.ns_per_s = 1e9 / clock_rate
        self.spread_ns = <int64_t>(spread_s * 1e9)
        self.warn_ns = <int64_t>(warn_s * 1e9)
        self.on_lag = None
        self.on_error = None
        self.time_calls = False
        self.best_ns = INT64_MAX
        self.lag_ns = 0
        self.callback_ns = 0
        self.last_call_ns = 0
        self.calls = 0
        self.next_warn = INT64_MIN
        self.lag_us = LatencyBuckets()
        self.callback_us = LatencyBuckets()

    cdef int _observe(self, int64_t T, int64_t now) except -1:
        cdef int64_t behind = now - <int64_t>((T + 1) * self.ns_per_s)
        cdef int64_t lag
        if behind < self.best_ns:
            self.best_ns = behind
        lag = behind - self.best_ns - self.spread_ns
        if lag < 0:
            lag = 0
        self.lag_ns = lag
        self.lag_us.record(lag // 1000)
        if lag > self.warn_ns and self.on_lag is not None and now >= self.next_warn:
            self.next_warn = now + 500_000_000
            self.on_lag(lag)
        return 0

    cdef inline void _timed(self, int64_t d) noexcept:
        self.callback_ns += d
        self.last_call_ns = d
        self.calls += 1
        self.callback_us.record(d // 1000)

    def observe(self, int64_t T, int64_t now_ns) -> int:
        """One engine update with clock ``T`` processed at ``now_ns`` (epoch ns); returns the lag (ns)."""
        self._observe(T, now_ns)
        return self.lag_ns

    def timed(self, int64_t duration_ns) -> None:
        """Record one ``on_batch`` call of ``duration_ns`` (Python entry point, for tests)."""
        self._timed(duration_ns)

class _NoBars:
    """Bar type of a filler whose bars are written by :class:`SfoxState` (never decoded)."""


@cython.final
@cython.auto_pickle(False)
cdef class Payload:
    """The bytes of the message a :class:`BarFiller`'s C sink is handing to the decoder: a
    read-only buffer over the listener's memory, valid only during that sink call.

    One object is reused for every message (``PyMemoryView_FromMemory`` would allocate two
    GC-tracked objects per message). Outside the call it is *released*: taking its buffer
    raises ``ValueError``, so a reference kept past the call cannot read reused memory;
    the filler notices a kept reference (its reference count) or a buffer still exported
    after the decoder returned, and takes a fresh object for the next message.
    """
    cdef const char* ptr
    cdef Py_ssize_t size
    cdef readonly Py_ssize_t exports   # buffers taken and not yet given back
    cdef readonly bint live            # True only during the sink call

    def __getbuffer__(self, Py_buffer* buffer, int flags):
        if not self.live:
            raise ValueError("message payload used after its sink call returned")
        PyBuffer_FillInfo(buffer, self, <void*>self.ptr, self.size, 1, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer* buffer):
        self.exports -= 1

    def __len__(self):
        return self.size if self.live else 0

    def __bytes__(self):
        if not self.live:
            raise ValueError("message payload used after its sink call returned")
        return self.ptr[:self.size]


cdef void _sink_message(void* ctx, const char* payload, Py_ssize_t size, int64_t recv_ns) noexcept:
    (<BarFiller>ctx)._raw_message(payload, size, recv_ns)


cdef void _sink_buffer_end(void* ctx) noexcept:
    (<BarFiller>ctx)._flush_pending()


cdef class BarFiller:
    """Fills the batch columns from decoded bar Structs and upserts them into the engine.

    :param bar_type: the msgspec Struct type of a bar message.
    :param fields: slot names ``(symbol, open, high, low, close, volume, time_ms, vwap)``;
        ``vwap`` may be ``None``. ``time_ms`` is epoch milliseconds of the bar start.
    :param universe: the ``Universe`` (``index`` dict read directly; ``row()``, and
        ``reuse()`` when full, for a new symbol once one of its bars is accepted).
    :param overflow_exc: the exception ``universe.row()`` raises when full (``UniverseFull``).
    :param engine: the ``Engine``, or an object with ``upsert(rows, seconds, o, h, l, c, v,
        pv, n, now)`` that wraps one as its ``engine`` attribute; in tests, a stand-in
        with ``upsert``, ``T``, ``depth`` and ``max_future_skew`` (no rows are recycled).
    :param pv_mode: :data:`PV_TYPICAL`, :data:`PV_CLOSE` or :data:`PV_VWAP`.
    :param capacity: initial batch size (grows by doubling, never per message).

    After :meth:`process`: ``n`` bars filled, ``accepted`` by the engine, ``values_errors``
    (non-finite numbers, negative volume, high < low, bad time, unusable symbol),
    ``overflow`` (bars of symbols the full universe refused), ``others`` (elements that
    are not bars, in order; ``None`` when there were none), ``max_s`` (latest bar
    second, -1 if none).

    New symbols: a bar of a symbol without a row is filled with a provisional row
    (``-2 - j``, ``j`` its index in this batch's new symbols).  Just before the upsert
    the batch is walked with the engine's own accept rule (``bar_fate``, against the
    clock as the bars before it move it, and the ``now`` of the upsert): the first
    accepted bar of a new symbol gets it a row (``universe.row``, or, when the universe
    is full, an idle row the engine clears, counted in ``rows_recycled``; none idle: the
    bars are dropped and counted in ``overflow``).  Rejected bars of symbols without a
    row go to the engine as they are, on row 0: the engine rejects them by the same rule
    (and counts them by kind) without touching the row.  So rejected bars never take a
    row.

    The batch arrays (``rows``, ``seconds``, ...) are reused: valid until the next call.

    During ``on_batch``: ``rows[:n]``/``seconds[:n]`` are the bars of that upsert (in
    arrival order), ``batch_first_ns``/``batch_last_ns`` the receive times of its first and
    last message.  ``before_second(s)``, when set, is called before an upsert whose bars
    reach a second ``s`` later than the engine's clock (the windows are still as of the
    clock then).
    """
    cdef readonly object rows, seconds, open, high, low, close, volume, pv
    cdef int64_t* p_rows
    cdef int64_t* p_sec
    cdef double* p_o
    cdef double* p_h
    cdef double* p_l
    cdef double* p_c
    cdef double* p_v
    cdef double* p_pv
    cdef readonly Py_ssize_t capacity
    cdef object bar_type
    cdef PyTypeObject* bar_tp
    cdef tuple names
    cdef Py_ssize_t off_sym, off_o, off_h, off_l, off_c, off_v, off_t, off_vw
    cdef bint has_vw
    cdef bint prefetch          # the bar fields are slots this filler reads (not SfoxFiller's)
    cdef readonly int pv_mode
    cdef dict index
    cdef list symbols           # universe.symbols (row -> symbol), or None
    cdef Py_ssize_t guess       # predicted row of the next bar: the previous bar's row + 1
    cdef int no_guess           # bars left to look up without guessing (after a wrong guess)
    cdef object universe_row, overflow_exc, upsert, universe, usable
    cdef Engine eng             # the engine when it is the compiled one (else None)
    cdef Engine direct          # the engine when it was given itself (not wrapped): C upserts
    cdef object duck            # the engine otherwise (T, depth, max_future_skew read)
    # new symbols of this batch (see the class doc): symbol -> j, j -> symbol, j -> row
    cdef dict new_index
    cdef list new_syms
    cdef list new_rows
    cdef Py_ssize_t max_new     # most new symbols a batch holds (-1: no limit)
    cdef Py_ssize_t idle_from   # where the next search for an idle row starts
    cdef int64_t no_idle_at     # the clock when no row was idle (none can be until it moves)
    cdef readonly int64_t rows_recycled
    cdef readonly LatencyBuckets processing_latency, feed_latency
    cdef readonly Py_ssize_t n, accepted, values_errors, overflow
    cdef Py_ssize_t filled      # slots of the batch columns filled (pending or not)
    cdef set busy               # see _busy_rows (None: not built for this batch yet)
    cdef readonly int64_t max_s
    cdef readonly list others
    # the per-message path (see on_message); set by bind()
    cdef object decode, stats, last_rows, engine
    # on_batch(rows, T): the one Python call per engine update (set by bind(); a feed may
    # swap it while it runs, on its own thread)
    cdef public object on_batch
    cdef object after_fill, flush_stats, decode_failed, internal_error, on_gap
    cdef MessageSink _sink
    cdef readonly Payload payload   # the C sink's view of the message being decoded (reused)
    # gap detection after a reconnect (see expect_gap)
    cdef public int64_t gap_from
    cdef public int64_t next_flush
    # deferred mode: bars of several messages wait for one upsert (flush_pending)
    cdef public bint deferred
    cdef public Py_ssize_t max_pending
    cdef readonly Py_ssize_t pending
    cdef int64_t pending_recv_ns, pending_last_ns, pending_max_s
    # for on_batch: receive times (ns) of the first and last message of the batch just upserted
    cdef readonly int64_t batch_first_ns, batch_last_ns
    # before_second(s): called before an upsert whose bars reach a second s later than the
    # engine's clock (None: not called)
    cdef public object before_second
    # the feed's lag and the duration of on_batch (None: not measured); see LagClock
    cdef public LagClock lag

    def __init__(self, bar_type, fields, universe, overflow_exc, engine,
                 int pv_mode=PV_TYPICAL, Py_ssize_t capacity=1024):
        if bar_type is None:  # bars written by someone else (SfoxState): nothing to read
            fields = (None,) * 8
            bar_type = _NoBars
            pv_mode = PV_CLOSE
        self.names = tuple(fields)
        sym, o, h, l, c, v, t, vw = self.names
        self.bar_type = bar_type
        self.bar_tp = <PyTypeObject*>bar_type
        self.off_sym = member_offset(bar_type, sym) if sym is not None else 0
        self.off_o = member_offset(bar_type, o) if o is not None else 0
        self.off_h = member_offset(bar_type, h) if h is not None else 0
        self.off_l = member_offset(bar_type, l) if l is not None else 0
        self.off_c = member_offset(bar_type, c) if c is not None else 0
        self.off_v = member_offset(bar_type, v) if v is not None else 0
        self.off_t = member_offset(bar_type, t) if t is not None else 0
        self.has_vw = vw is not None
        self.prefetch = bar_type is not _NoBars and None not in (sym, o, h, l, c, v, t)
        self.off_vw = member_offset(bar_type, vw) if self.has_vw else 0
        if pv_mode not in (PV_TYPICAL, PV_CLOSE, PV_VWAP):
            raise ValueError(f"pv_mode must be PV_TYPICAL, PV_CLOSE or PV_VWAP, not {pv_mode!r}")
        if pv_mode == PV_VWAP and not self.has_vw:
            raise ValueError("pv_mode PV_VWAP needs a vwap field")
        self.pv_mode = pv_mode
        self.index = universe.index
        self.universe = universe
        self.universe_row = universe.row
        from fastfeed.engine.universe import usable_symbol
        self.usable = usable_symbol
        self.new_index = {}
        self.new_syms = []
        self.new_rows = []
        self.max_new = -1
        self.idle_from = 0
        self.no_idle_at = -2
        self.rows_recycled = 0
        inner = engine if isinstance(engine, Engine) else getattr(engine, "engine", None)
        if isinstance(inner, Engine):
            self.eng = <Engine>inner
            self.duck = None
        else:
            self.eng = None
            self.duck = engine
        symbols = getattr(universe, "symbols", None)
        self.symbols = symbols if type(symbols) is list else None
        self.guess = 0
        self.no_guess = 0
        self.overflow_exc = overflow_exc
        self.upsert = engine.upsert if engine is not None else None
        # the compiled engine itself: the filler upserts through its C API (no Python call);
        # a wrapper (or a stand-in) is called through its ``upsert`` method
        self.direct = <Engine>engine if isinstance(engine, Engine) else None
        self.processing_latency = LatencyBuckets()
        self.feed_latency = LatencyBuckets()
        self.capacity = 0
        self._grow(max(capacity, 1))
        self.others = None
        self.max_s = -1
        self.deferred = False
        self.max_pending = 16384
        self.pending = 0
        self.gap_from = -1
        self.batch_first_ns = 0
        self.batch_last_ns = 0
        self.before_second = None
        self.lag = None
        self.payload = Payload()
        self._sink.ctx = <void*>self
        self._sink.on_message = _sink_message
        self._sink.on_buffer_end = _sink_buffer_end

    cdef int _grow(self, Py_ssize_t need, Py_ssize_t keep=0) except -1:
        """Reallocate the columns for at least ``need`` bars, keeping the first ``keep``."""
        cdef Py_ssize_t cap = max(need, 2 * self.capacity)
        cdef int64_t[::1] i64
        cdef double[::1] f64
        old = (self.rows, self.seconds, self.open, self.high, self.low, self.close, self.volume, self.pv)
        self.rows = np.zeros(cap, dtype=np.int64)
        self.seconds = np.zeros(cap, dtype=np.int64)
        self.open = np.zeros(cap, dtype=np.float64)
        self.high = np.zeros(cap, dtype=np.float64)
        self.low = np.zeros(cap, dtype=np.float64)
        self.close = np.zeros(cap, dtype=np.float64)
        self.volume = np.zeros(cap, dtype=np.float64)
        self.pv = np.zeros(cap, dtype=np.float64)
        if keep > 0:
            for dst, src in zip((self.rows, self.seconds, self.open, self.high, self.low, self.close,
                                 self.volume, self.pv), old):
                dst[:keep] = src[:keep]
        i64 = self.rows; self.p_rows = &i64[0]
        i64 = self.seconds; self.p_sec = &i64[0]
        f64 = self.open; self.p_o = &f64[0]
        f64 = self.high; self.p_h = &f64[0]
        f64 = self.low; self.p_l = &f64[0]
        f64 = self.close; self.p_c = &f64[0]
        f64 = self.volume; self.p_v = &f64[0]
        f64 = self.pv; self.p_pv = &f64[0]
        self.capacity = cap
        return 0

    cdef int64_t _row(self, PyObject* sym) except -1000000000:
        """Row of ``sym``; for a symbol without a row its provisional row ``-2 - j`` (see
        the class doc); -1 when the bar is skipped (unusable symbol: counted).

        A feed sends a market's bars in the same order every second, and rows were
        assigned in order of first sight, so the row after the previous bar's is checked
        first: one string compare against ``universe.symbols[guess]`` instead of hashing
        the new string and probing the 16k-entry dict (cache misses). Rows and symbols
        are a bijection (``Universe.row`` assigns both), so a match is the dict's answer.
        After a wrong guess the next 8 bars skip guessing: a feed in no stable order
        pays for a guess on one bar in 9 only.
        """
        cdef Py_ssize_t g = self.guess
        cdef PyObject* cand
        cdef PyObject* r
        cdef int64_t row
        if self.no_guess > 0:
            self.no_guess -= 1
        elif self.symbols is not None and g < PyList_GET_SIZE(self.symbols):
            cand = PyList_GET_ITEM(self.symbols, g)
            if cand == sym:
                self.guess = g + 1
                return g
            if PyUnicode_CheckExact(cand) and same_text(cand, sym):
                self.guess = g + 1
                return g
            self.no_guess = 8
        r = PyDict_GetItem(self.index, <object>sym)
        if r == NULL:
            return self._new_symbol(<object>sym)
        row = PyLong_AsSsize_t(<object>r)
        self.guess = row + 1
        return row

    cdef int64_t _new_symbol(self, object sym) except -1000000000:
        """Provisional row of ``sym`` (no row yet): ``-2 - j``; -1 if unusable or the
        batch holds ``max_new`` new symbols already (counted)."""
        r = self.new_index.get(sym)
        if r is not None:
            return -2 - <Py_ssize_t>r
        if not self.usable(sym):
            self.values_errors += 1
            return -1
        j = len(self.new_syms)
        if self.max_new >= 0 and j >= self.max_new:
            self.overflow += 1
            return -1
        self.new_index[sym] = j
        self.new_syms.append(sym)
        self.new_rows.append(-1)
        self._new_slot(j)
        return -2 - j

    cdef int _new_slot(self, Py_ssize_t j) except -1:
        """Hook: new symbol ``j`` of the batch was first seen (SfoxFiller: its state)."""
        return 0

    cdef int _row_given(self, Py_ssize_t j, int64_t row) except -1:
        """Hook: new symbol ``j`` got ``row`` (SfoxFiller: move its state there)."""
        return 0

    cdef int _forget_new(self) except -1:
        """No bar of the batch refers to a provisional row any more: forget them."""
        if self.new_syms:
            self.new_index.clear()
            del self.new_syms[:]
            del self.new_rows[:]
        return 0

    cdef set _busy_rows(self):
        """Rows a bar of the batch (filled, pending or not) is for, and rows given in it."""
        if self.busy is None:
            self.busy = set(self.rows[:self.filled].tolist())
            self.busy.update(self.new_rows)
        return self.busy

    cdef int64_t _give_row(self, Py_ssize_t j, int64_t T) except -2:
        """A row for new symbol ``j``, whose bar is accepted with the clock at ``T``: the
        next free one, else one idle at ``T`` (cleared in the engine, counted), not one a
        bar of the batch is for; -1 when none (counted in overflow)."""
        cdef int64_t row = self.new_rows[j]
        cdef Py_ssize_t n, tries
        if row >= 0:
            return row
        sym = self.new_syms[j]
        row = -1
        if len(self.universe) < self.universe.capacity:
            row = self.universe_row(sym)
        else:
            if self.eng is not None and hasattr(self.universe, "reuse"):
                if self.no_idle_at != T:
                    n = len(self.universe)
                    row = self.eng.find_idle_row(self.idle_from, n, T)
                    # a row given in this batch holds no bar until the upsert, and a row
                    # a bar of the batch is for is busy: neither is idle
                    tries = n
                    busy = self._busy_rows()
                    while row >= 0 and row in busy:
                        tries -= 1
                        row = self.eng.find_idle_row(row + 1, n, T) if tries > 0 else -1
                    if row < 0:
                        self.no_idle_at = T
                if row >= 0:
                    self.eng.clear_row(row)
                    self.universe.reuse(row, sym)
                    self.rows_recycled += 1
                    if self.stats is not None:
                        self.stats.rows_recycled += 1
                    self.idle_from = row + 1
            if row < 0:
                try:
                    self.universe_row(sym)   # counts the refusal
                except self.overflow_exc:
                    pass
                return -1
        self.new_rows[j] = row
        if self.busy is not None:
            self.busy.add(row)
        self._row_given(j, row)
        return row

    cdef Py_ssize_t _resolve(self, Py_ssize_t n, double now) except -1:
        """Give rows to the new symbols of the first ``n`` bars whose bar the engine will
        accept (see the class doc); drop the bars of symbols refused a row (counted in
        ``overflow``). Returns the bars left (a prefix of the columns)."""
        cdef int64_t T, depth, row, s, cap
        cdef double skew
        cdef Py_ssize_t i, w = 0
        cdef int fate
        self.busy = None
        if self.eng is not None:
            T = self.eng.clock()
            depth = self.eng.depth
            skew = self.eng.max_future_skew
            cap = self.eng.capacity
        else:
            T = self.duck.T
            depth = self.duck.depth
            skew = self.duck.max_future_skew
            cap = self.duck.capacity
        for i in range(n):
            row = self.p_rows[i]
            s = self.p_sec[i]
            fate = bar_fate(s, self.p_o[i], self.p_h[i], self.p_l[i], self.p_c[i], self.p_v[i],
                            self.p_pv[i], T, depth, skew, now)
            if row < 0:
                if fate != BAR_ACCEPTED:
                    row = -2 - row
                    row = self.new_rows[row] if self.new_rows[row] >= 0 else 0
                else:
                    row = self._give_row(-2 - row, s if s > T else T)
                    if row < 0:
                        self.overflow += 1
                        continue
            elif row >= cap:
                fate = -1   # the engine's bad_row: rejected, the clock stays
            if fate == BAR_ACCEPTED and s > T:
                T = s
            if w != i:
                self._put(w, row, s, self.p_o[i], self.p_h[i], self.p_l[i], self.p_c[i],
                          self.p_v[i], self.p_pv[i])
            else:
                self.p_rows[i] = row
            w += 1
        return w

    cdef int _fill_one(self, PyObject* item, Py_ssize_t i) except -1:
        """Fill slot ``i`` from ``item`` (exact bar type): 1 filled, 0 skipped (counted),
        2 not a bar (the session handles it: it goes to ``others``)."""
        cdef double o, h, l, c, v, vw, pv
        cdef int64_t ms, s, row
        cdef PyObject* p
        if not (as_double(get_slot(item, self.off_o), &o) and as_double(get_slot(item, self.off_h), &h)
                and as_double(get_slot(item, self.off_l), &l) and as_double(get_slot(item, self.off_c), &c)
                and as_double(get_slot(item, self.off_v), &v)):
            self.values_errors += 1
            return 0
        if not (isfinite(o) and isfinite(h) and isfinite(l) and isfinite(c) and isfinite(v)) \
                or v < 0 or h < l:
            self.values_errors += 1
            return 0
        if not as_int64(get_slot(item, self.off_t), &ms) or ms < 0 or ms > MAX_MS:
            self.values_errors += 1
            return 0
        p = get_slot(item, self.off_sym)
        if p == NULL or not PyUnicode_CheckExact(p):
            self.values_errors += 1
            return 0
        if self.pv_mode == _PV_CLOSE:
            pv = v * c
        else:
            pv = v * (h + l + c) / 3.0
            if self.pv_mode == _PV_VWAP:
                p = get_slot(item, self.off_vw)
                if p != NULL and <object>p is not None:
                    if not as_double(p, &vw) or not isfinite(vw):
                        self.values_errors += 1
                        return 0
                    pv = v * vw
        row = self._row(get_slot(item, self.off_sym))
        if row == -1:
            return 0
        self._put(i, row, ms // 1000, o, h, l, c, v, pv)
        return 1

    cdef inline void _put(self, Py_ssize_t i, int64_t row, int64_t s, double o, double h, double l,
                          double c, double v, double pv) noexcept:
        """Write one bar into slot ``i`` of the batch columns."""
        self.p_rows[i] = row
        self.p_sec[i] = s
        self.p_o[i] = o
        self.p_h[i] = h
        self.p_l[i] = l
        self.p_c[i] = c
        self.p_v[i] = v
        self.p_pv[i] = pv
        if s > self.max_s:
            self.max_s = s

    cpdef Py_ssize_t fill(self, msg) except -1:
        """Fill the batch from ``msg`` (one decoded Struct or a list of them); return n."""
        return self._fill_at(msg, 0)

    cdef Py_ssize_t _fill_at(self, msg, Py_ssize_t base) except -1:
        """Fill from slot ``base`` on (the slots before it are kept); return the bars filled."""
        cdef Py_ssize_t k, size, n = 0
        cdef int r
        cdef PyObject* item
        cdef PyTypeObject* bar_tp = self.bar_tp
        if base == 0:
            self._forget_new()
        self.values_errors = 0
        self.overflow = 0
        self.max_s = -1
        self.others = None
        if type(msg) is list:
            size = PyList_GET_SIZE(msg)
            if base + size > self.capacity:
                self._grow(base + size, base)
            for k in range(size):
                if self.prefetch:
                    # msgspec made every object of the array before the fill reads any: by
                    # now the first elements' objects have left L1. Ask for the Struct of
                    # the element PF_STRUCT ahead, and for the field objects of the one
                    # PF_FIELDS ahead (its Struct was asked for earlier)
                    if k + PF_STRUCT < size:
                        prefetch_lines(PyList_GET_ITEM(msg, k + PF_STRUCT), 2)
                    if k + PF_FIELDS < size:
                        self._prefetch_fields(PyList_GET_ITEM(msg, k + PF_FIELDS), bar_tp)
                item = PyList_GET_ITEM(msg, k)
                r = self._fill_one(item, base + n) if Py_TYPE(<object>item) == bar_tp else 2
                if r == 1:
                    n += 1
                elif r == 2:
                    if self.others is None:
                        self.others = []
                    self.others.append(<object>item)
        elif Py_TYPE(msg) == bar_tp:
            if base + 1 > self.capacity:
                self._grow(base + 1, base)
            r = self._fill_one(<PyObject*>msg, base)
            if r == 1:
                n = 1
            elif r == 2:
                self.others = [msg]
        else:
            self.others = [msg]
        self.n = n
        self.filled = base + n
        return n

    cdef inline void _prefetch_fields(self, PyObject* item, PyTypeObject* bar_tp) noexcept:
        """Ask for the objects in the slots :meth:`_fill_one` reads of a bar Struct."""
        if Py_TYPE(<object>item) != bar_tp:
            return
        prefetch_lines(get_slot(item, self.off_sym), 1)
        prefetch_lines(get_slot(item, self.off_o), 1)
        prefetch_lines(get_slot(item, self.off_h), 1)
        prefetch_lines(get_slot(item, self.off_l), 1)
        prefetch_lines(get_slot(item, self.off_c), 1)
        prefetch_lines(get_slot(item, self.off_v), 1)
        prefetch_lines(get_slot(item, self.off_t), 1)

    cpdef Py_ssize_t process(self, msg, int64_t recv_ns) except -1:
        """:meth:`fill`, then one ``engine.upsert`` and the latency records; return accepted.

        ``processing_latency`` gets ``now - recv_ns`` (ns) once per message with bars,
        ``feed_latency`` gets ``recv - end of the latest bar`` (µs) once per such message.
        """
        cdef Py_ssize_t n = self.fill(msg)
        self.accepted = 0
        if n == 0:
            return 0
        return self._upsert(n, recv_ns, recv_ns, self.max_s)

    cdef Py_ssize_t _upsert(self, Py_ssize_t n, int64_t recv_ns, int64_t last_ns, int64_t max_s) except -1:
        """The first ``n`` bars of the batch into the engine (``now`` = ``recv_ns``, the receive
        time of their first message; ``last_ns``: of their last), and the latency records:
        ``processing_latency`` gets ``now - recv_ns`` (ns), ``feed_latency`` ``recv - end of
        the latest bar`` (µs). Returns the bars accepted. New symbols get their rows first
        (:meth:`_resolve`).

        ``before_second(max_s)`` runs first when it is set and the bars reach a second later
        than the engine's clock (the completed-second rule closes the open second there,
        while the windows are still as of it): unset, it costs one pointer compare."""
        cdef double now = recv_ns / 1e9
        cdef Engine eng = self.direct
        self.batch_first_ns = recv_ns
        self.batch_last_ns = last_ns
        if self.before_second is not None and max_s > self.engine.T:
            self.before_second(max_s)
        if self.new_syms:
            n = self._resolve(n, now)
        if eng is not None:
            if n >= NOGIL_BARS:
                with nogil:
                    self.accepted = eng.upsert_bars(n, self.p_rows, self.p_sec, self.p_o, self.p_h,
                                                    self.p_l, self.p_c, self.p_v, self.p_pv, now)
            else:
                self.accepted = eng.upsert_bars(n, self.p_rows, self.p_sec, self.p_o, self.p_h,
                                                self.p_l, self.p_c, self.p_v, self.p_pv, now)
        else:
            self.accepted = self.upsert(self.rows, self.seconds, self.open, self.high, self.low,
                                        self.close, self.volume, self.pv, n, now)
        self.processing_latency.record(now_ns() - recv_ns)
        self.feed_latency.record(recv_ns // 1000 - (max_s + 1) * 1000000)
        return self.accepted

    def bind(self, decode, stats, engine, on_batch, after_fill, flush_stats, decode_failed,
             internal_error, on_gap=None):
        """Wire :meth:`on_message` / :meth:`apply` / :meth:`flush_pending` to a session.

        ``decode(payload)``: the feed's ``Decoder.decode``; ``after_fill(recv_ns)``: called
        when a message had more than bars (values errors, overflow, non-bar elements);
        ``flush_stats(recv_ns)``: when the engine accepted fewer bars than given, or at or
        after ``next_flush``; ``decode_failed(payload, recv_ns, exc)``: the slow path when
        ``decode`` raised; ``internal_error(exc)``: anything else that raised;
        ``on_gap(before, after)``: the first upsert after :attr:`gap_from` was set moved the
        clock past ``before + 1`` (whole seconds missed). None of them may raise.
        ``on_batch(rows, T)`` (the user's callback) may: it is counted as an internal error.
        """
        self.decode = decode
        self.stats = stats
        self.engine = engine
        self.last_rows = getattr(engine, "last_rows", None)  # needed only with on_batch
        self.on_batch = on_batch
        self.after_fill = after_fill
        self.flush_stats = flush_stats
        self.decode_failed = decode_failed
        self.internal_error = internal_error
        self.on_gap = on_gap
        self.next_flush = 0

    def message_sink(self):
        """A capsule of this filler's C sink (``ext/sink.pxd``) for the transport's listener.

        The pointer is borrowed: it is valid while the filler lives, so the user of the
        capsule keeps the filler (or the session that owns it) referenced, where the
        garbage collector sees the reference."""
        return PyCapsule_New(&self._sink, b"fastfeed.MessageSink", NULL)

    cdef void _raw_message(self, const char* payload, Py_ssize_t size, int64_t recv_ns) noexcept:
        """The C sink: one message of ``size`` bytes, valid during the call.

        The decoder reads it through :attr:`payload` (one :class:`Payload` reused for every
        message: no Python object is made per message). The slow path (the message did not
        decode) gets a ``memoryview`` of its own, released when it returns, like a Python
        sink's payload."""
        cdef Payload view = self.payload
        cdef object msg = None
        view.ptr = payload
        view.size = size
        view.live = True
        try:
            msg = self.decode(view)
        except Exception as e:
            self._release_payload(view)
            self._raw_decode_failed(payload, size, recv_ns, e)
            return
        self._release_payload(view)
        try:
            self.apply(msg, recv_ns)
        except Exception as e:
            self.internal_error(e)

    cdef inline void _release_payload(self, Payload view) noexcept:
        """After the decoder returned: the payload is released; one still referenced
        elsewhere (or with a buffer still exported: counted as an internal error, as a
        ``memoryview`` that cannot be released would be) stays so, and a fresh one serves
        the next message."""
        view.live = False
        view.ptr = NULL
        view.size = 0
        # references: self.payload and the caller's local
        if Py_REFCNT(view) > 2 or view.exports:
            self.payload = Payload()
            if view.exports:
                try:
                    self.internal_error(BufferError("a buffer of a message payload was kept past its sink call"))
                except Exception:
                    pass

    cdef void _raw_decode_failed(self, const char* payload, Py_ssize_t size, int64_t recv_ns, e) noexcept:
        mv = PyMemoryView_FromMemory(<char*>payload, size, PyBUF_READ)
        try:
            self.decode_failed(mv, recv_ns, e)
        except Exception as e2:
            self.internal_error(e2)
        finally:
            try:
                # a view kept past the call would point into memory that is reused or freed:
                # release it, so such use raises ValueError instead of reading garbage
                mv.release()
            except Exception as e3:
                self.internal_error(e3)

    def on_message(self, payload, int64_t recv_ns):
        """The Session ``on_message`` of the feeds: decode, then :meth:`apply`; never raises."""
        try:
            msg = self.decode(payload)
        except Exception as e:
            self.decode_failed(payload, recv_ns, e)
            return
        try:
            self.apply(msg, recv_ns)
        except Exception as e:
            self.internal_error(e)

    cpdef apply(self, msg, int64_t recv_ns):
        """Fill from a decoded message; upsert it now, or add it to the pending batch.

        With :attr:`deferred` the bars wait in the batch arrays until :meth:`flush_pending`
        (the end of the transport's read buffer): one ``upsert`` for every message of the
        buffer. ``stats.bars`` and ``on_batch`` follow each upsert.
        """
        cdef Py_ssize_t n, accepted
        if self.deferred:
            n = self._fill_at(msg, self.pending)
            if n:
                if self.pending and self.max_s > self.pending_max_s:
                    # a later second: what waits is applied first, so that each upsert moves
                    # the clock to at most one new second (on_batch's T, gap reports)
                    self._upsert_split(n, recv_ns)
                elif self.pending == 0:
                    self.pending_recv_ns = self.pending_last_ns = recv_ns
                    self.pending_max_s = self.max_s
                    self.pending = n
                else:
                    self.pending_last_ns = recv_ns
                    self.pending += n
            if self.values_errors or self.overflow or self.others is not None:
                self.after_fill(recv_ns)
            if self.pending >= self.max_pending:
                self._upsert_pending()
            return
        accepted = self.process(msg, recv_ns)
        n = self.n
        if self.values_errors or self.overflow or self.others is not None:
            self.after_fill(recv_ns)
        if n:
            self._after_upsert(n, accepted, recv_ns)

    cdef int _after_upsert(self, Py_ssize_t n, Py_ssize_t accepted, int64_t recv_ns) except -1:
        cdef int64_t before, T, t0
        cdef LagClock lag
        self.stats.bars += accepted
        if accepted < n or recv_ns >= self.next_flush:
            self.flush_stats(recv_ns)
        if accepted:
            if self.gap_from >= 0:  # the first bars after a reconnect
                before = self.gap_from
                self.gap_from = -1
                T = self.engine.T
                if T > before + 1 and self.on_gap is not None:
                    self.on_gap(before, T)
            lag = self.lag
            if lag is None:
                if self.on_batch is not None:
                    self.on_batch(self.last_rows(), self.engine.T)
                return 0
            T = self.engine.T
            lag._observe(T, now_ns())
            if self.on_batch is not None:
                t0 = now_ns()
                try:
                    self.on_batch(self.last_rows(), T)
                except Exception as e:
                    if lag.on_error is None:
                        raise
                    lag.on_error(e)
                if lag.time_calls:
                    lag._timed(now_ns() - t0)
        return 0

    cdef int _upsert_split(self, Py_ssize_t n, int64_t recv_ns) except -1:
        """Upsert the ``pending`` bars waiting, then move the ``n`` bars filled after them
        (one message, of a later second, received at ``recv_ns``) to the front."""
        cdef Py_ssize_t k = self.pending
        cdef int64_t max_s = self.max_s
        self._upsert_pending()
        memmove(self.p_rows, self.p_rows + k, n * sizeof(int64_t))
        memmove(self.p_sec, self.p_sec + k, n * sizeof(int64_t))
        memmove(self.p_o, self.p_o + k, n * sizeof(double))
        memmove(self.p_h, self.p_h + k, n * sizeof(double))
        memmove(self.p_l, self.p_l + k, n * sizeof(double))
        memmove(self.p_c, self.p_c + k, n * sizeof(double))
        memmove(self.p_v, self.p_v + k, n * sizeof(double))
        memmove(self.p_pv, self.p_pv + k, n * sizeof(double))
        self.pending = n
        self.filled = n
        self.pending_recv_ns = self.pending_last_ns = recv_ns
        self.pending_max_s = max_s
        return 0

    cdef int _upsert_pending(self) except -1:
        cdef Py_ssize_t n = self.pending, ve = self.values_errors, ov = self.overflow
        cdef int64_t recv_ns = self.pending_recv_ns
        if n == 0:
            return 0
        others = self.others
        self.pending = 0
        self.n = n
        # what the last message filled had was reported after its fill: count only the
        # bars of new symbols refused a row here (kept for the caller when it splits)
        self.values_errors = 0
        self.overflow = 0
        self.others = None
        self._upsert(n, recv_ns, self.pending_last_ns, self.pending_max_s)
        if self.overflow:
            self.after_fill(recv_ns)
        self.values_errors = ve
        self.overflow = ov
        self.others = others
        self._after_upsert(n, self.accepted, recv_ns)
        return 0

    def flush_pending(self) -> int:
        """Upsert the bars :meth:`apply` deferred (one call); return how many. Never raises."""
        cdef Py_ssize_t n = self.pending
        self._flush_pending()
        return n

    cdef void _flush_pending(self) noexcept:
        try:
            self._upsert_pending()
        except Exception as e:
            self.internal_error(e)


cdef class SfoxState:
    """Per-pair state that turns sFOX ticker updates into per-second bars (docs/PROTOCOLS.md §2).

    Arrays of length ``capacity`` indexed by universe row: the previous update
    (``prev_t`` ns, ``prev_v`` cumulative volume, ``prev_w`` cumulative vwap; ``prev_t``
    is -1 before the first update), the bar being built for the latest second
    (``bar_s``, ``bar_o/h/l/c/v/pv``) and the 24-hour values as given (``day_open``,
    ``day_high``, ``day_low``, ``day_volume``, ``day_vwap``, ``day_last``, ``day_t``).
    """
    cdef readonly object prev_t, prev_v, prev_w
    cdef readonly object bar_s, bar_o, bar_h, bar_l, bar_c, bar_v, bar_pv
    cdef readonly object day_open, day_high, day_low, day_volume, day_vwap, day_last, day_t
    cdef int64_t[::1] _prev_t, _bar_s, _day_t
    cdef double[::1] _prev_v, _prev_w, _bar_o, _bar_h, _bar_l, _bar_c, _bar_v, _bar_pv
    cdef double[::1] _dopen, _dhigh, _dlow, _dvol, _dvwap, _dlast
    cdef readonly Py_ssize_t capacity
    cdef readonly int64_t resets, disorder

    def __init__(self, Py_ssize_t capacity):
        self.capacity = capacity
        self.prev_t = np.full(capacity, -1, dtype=np.int64); self._prev_t = self.prev_t
        self.prev_v = np.zeros(capacity); self._prev_v = self.prev_v
        self.prev_w = np.zeros(capacity); self._prev_w = self.prev_w
        self.bar_s = np.full(capacity, -1, dtype=np.int64); self._bar_s = self.bar_s
        self.bar_o = np.full(capacity, NAN); self._bar_o = self.bar_o
        self.bar_h = np.full(capacity, NAN); self._bar_h = self.bar_h
        self.bar_l = np.full(capacity, NAN); self._bar_l = self.bar_l
        self.bar_c = np.full(capacity, NAN); self._bar_c = self.bar_c
        self.bar_v = np.zeros(capacity); self._bar_v = self.bar_v
        self.bar_pv = np.zeros(capacity); self._bar_pv = self.bar_pv
        self.day_open = np.full(capacity, NAN); self._dopen = self.day_open
        self.day_high = np.full(capacity, NAN); self._dhigh = self.day_high
        self.day_low = np.full(capacity, NAN); self._dlow = self.day_low
        self.day_volume = np.full(capacity, NAN); self._dvol = self.day_volume
        self.day_vwap = np.full(capacity, NAN); self._dvwap = self.day_vwap
        self.day_last = np.full(capacity, NAN); self._dlast = self.day_last
        self.day_t = np.full(capacity, -1, dtype=np.int64); self._day_t = self.day_t
        self.resets = 0
        self.disorder = 0

    def reset(self) -> None:
        """Forget every previous update (the next update of each pair is a baseline)."""
        self.prev_t[:] = -1
        self.bar_s[:] = -1

    def update(self, BarFiller out, Py_ssize_t row, int64_t t_ns, double last, double volume,
               double vwap, double day_open, double day_high, double day_low) -> int:
        """Apply one update of the pair at ``row``; write its bar into slot 0 of ``out``.

        Returns 1 when a bar was written (the merged bar of second ``t_ns // 1e9``),
        0 when the update is older than the pair's previous one (disorder: counted in
        ``disorder``, the state is left as it was). The caller validated the numbers.
        """
        if row < 0 or row >= self.capacity:
            raise IndexError(f"row {row} outside 0..{self.capacity - 1}")
        out.max_s = -1
        if not self._update(out, 0, row, t_ns, last, volume, vwap, day_open, day_high, day_low, row):
            return 0
        out.n = 1
        return 1

    cdef bint _update(self, BarFiller out, Py_ssize_t i, Py_ssize_t row, int64_t t_ns, double last,
                      double volume, double vwap, double day_open, double day_high,
                      double day_low, int64_t out_row) noexcept:
        """:meth:`update` of state ``row`` (in range) into slot ``i`` as row ``out_row``."""
        cdef int64_t s = t_ns // 1000000000, pt
        cdef double dv, dpv
        pt = self._prev_t[row]
        if pt >= 0 and t_ns < pt:
            self.disorder += 1
            return 0
        if pt < 0:
            dv = 0.0
            dpv = 0.0
        elif volume < self._prev_v[row] or s // 86400 > (pt // 1000000000) // 86400:
            dv = volume
            dpv = volume * vwap
            self.resets += 1
        else:
            dv = volume - self._prev_v[row]
            dpv = volume * vwap - self._prev_v[row] * self._prev_w[row]
        self._prev_t[row] = t_ns
        self._prev_v[row] = volume
        self._prev_w[row] = vwap
        self._dopen[row] = day_open
        self._dhigh[row] = day_high
        self._dlow[row] = day_low
        self._dvol[row] = volume
        self._dvwap[row] = vwap
        self._dlast[row] = last
        self._day_t[row] = t_ns
        if self._bar_s[row] == s:
            if last > self._bar_h[row]:
                self._bar_h[row] = last
            if last < self._bar_l[row]:
                self._bar_l[row] = last
            self._bar_c[row] = last
            self._bar_v[row] += dv
            self._bar_pv[row] += dpv
        else:
            self._bar_s[row] = s
            self._bar_o[row] = last
            self._bar_h[row] = last
            self._bar_l[row] = last
            self._bar_c[row] = last
            self._bar_v[row] = dv
            self._bar_pv[row] = dpv
        out._put(i, out_row, s, self._bar_o[row], self._bar_h[row], self._bar_l[row], self._bar_c[row],
                 self._bar_v[row], self._bar_pv[row])
        return True

    cdef void _forget(self, Py_ssize_t row) noexcept:
        """State ``row`` has seen no update."""
        self._prev_t[row] = -1
        self._bar_s[row] = -1

    cdef void _move(self, Py_ssize_t src, Py_ssize_t dst) noexcept:
        """State ``src`` becomes state ``dst``'s (every array)."""
        cdef int64_t[::1] a
        cdef double[::1] b
        for a in (self._prev_t, self._bar_s, self._day_t):
            a[dst] = a[src]
        for b in (self._prev_v, self._prev_w, self._bar_o, self._bar_h, self._bar_l, self._bar_c,
                  self._bar_v, self._bar_pv, self._dopen, self._dhigh, self._dlow, self._dvol,
                  self._dvwap, self._dlast):
            b[dst] = b[src]


cdef class SfoxFiller(BarFiller):
    """The filler of the sFOX ticker feed: the same path as the bar feeds' (one C call per
    message from the listener, one upsert per read), with the bars made from cumulative
    ticker updates by :class:`SfoxState` (:attr:`state`).

    Each decoded ``Envelope`` (data or ack, one Struct) is read from its slots: the
    sequence number is checked (a gap becomes a note), an ack goes to ``others``, a data
    update is validated and differenced into the pair's bar for its second. What the
    session reports (logs, events, counters) arrives in ``others`` as notes, in order:
    ``("sequence_gap", expected, got, recipient)``, ``("unknown", recipient)``,
    ``("validation",)``, ``("disorder", pair)``; impossible numbers count in
    ``values_errors``, a full universe in ``overflow``.
    """
    cdef readonly SfoxState state
    cdef readonly int64_t sequence        # last sequence number seen on this connection, -1: none
    cdef str prefix
    cdef Py_ssize_t first_new   # state row of the batch's first new pair
    cdef Py_ssize_t off_type, off_seq, off_recipient, off_ts, off_payload
    cdef Py_ssize_t off_last, off_volume, off_vwap, off_open, off_high, off_low
    cdef PyTypeObject* payload_tp

    def __init__(self, envelope_type, payload_type, universe, overflow_exc, engine, str prefix,
                 Py_ssize_t capacity=64):
        BarFiller.__init__(self, None, None, universe, overflow_exc, engine, PV_CLOSE, capacity)
        self.bar_type = envelope_type
        self.bar_tp = <PyTypeObject*>envelope_type
        self.payload_tp = <PyTypeObject*>payload_type
        self.off_type = member_offset(envelope_type, "type")
        self.off_seq = member_offset(envelope_type, "sequence")
        self.off_recipient = member_offset(envelope_type, "recipient")
        self.off_ts = member_offset(envelope_type, "timestamp")
        self.off_payload = member_offset(envelope_type, "payload")
        self.off_last = member_offset(payload_type, "last")
        self.off_volume = member_offset(payload_type, "volume")
        self.off_vwap = member_offset(payload_type, "vwap")
        self.off_open = member_offset(payload_type, "open")
        self.off_high = member_offset(payload_type, "high")
        self.off_low = member_offset(payload_type, "low")
        self.prefix = prefix
        # rows capacity .. capacity + SFOX_NEW_PAIRS - 1: the state of pairs without a row yet
        self.state = SfoxState(universe.capacity + SFOX_NEW_PAIRS)
        self.first_new = universe.capacity
        self.max_new = SFOX_NEW_PAIRS
        self.sequence = -1

    def reset_sequence(self) -> None:
        """Forget the sequence number (a new connection numbers from anew)."""
        self.sequence = -1

    def note_sequence(self, int64_t seq) -> int:
        """Take ``seq`` as the next sequence number; returns the expected one when it is a gap,
        else -1 (for messages that did not decode: their number still counts)."""
        return self._sequence(seq)

    cdef inline int64_t _sequence(self, int64_t seq) noexcept:
        cdef int64_t expected = self.sequence + 1
        cdef bint gap = self.sequence >= 0 and seq != expected
        self.sequence = seq
        return expected if gap else -1

    cdef inline void _note(self, object note):
        if self.others is None:
            self.others = []
        self.others.append(note)

    cdef int _fill_one(self, PyObject* item, Py_ssize_t i) except -1:
        cdef PyObject* p = get_slot(item, self.off_seq)
        cdef PyObject* pl
        cdef int64_t seq, t, out_row
        cdef Py_ssize_t row
        cdef double last, volume, vwap, o, h, lo
        if p != NULL and PyLong_CheckExact(p):
            try:
                seq = PyLong_AsLongLong(<object>p)
            except OverflowError:
                pass
            else:
                expected = self._sequence(seq)
                if expected >= 0:
                    self._note(("sequence_gap", expected, seq, <object>get_slot(item, self.off_recipient)))
        p = get_slot(item, self.off_type)
        if p != NULL and <object>p is not None:
            return 2  # an ack
        rec = <object>get_slot(item, self.off_recipient)
        if type(rec) is not str or not (<str>rec).startswith(self.prefix):
            self._note(("unknown", rec))
            return 0
        pl = get_slot(item, self.off_payload)
        p = get_slot(item, self.off_ts)
        if pl == NULL or Py_TYPE(<object>pl) != self.payload_tp or p == NULL or not PyLong_CheckExact(p) \
                or <object>get_slot(pl, self.off_last) is None or <object>get_slot(pl, self.off_volume) is None:
            self._note(("validation",))
            return 0
        try:
            t = PyLong_AsLongLong(<object>p)
        except OverflowError:
            self.values_errors += 1
            return 0
        if not (as_double(get_slot(pl, self.off_last), &last) and as_double(get_slot(pl, self.off_volume), &volume)):
            self._note(("validation",))
            return 0
        p = get_slot(pl, self.off_vwap)
        if p == NULL or <object>p is None:
            vwap = 0.0 if volume == 0 else NAN
        elif not as_double(p, &vwap):
            self._note(("validation",))
            return 0
        if not (isfinite(last) and isfinite(volume) and isfinite(vwap)) or volume < 0 or t < 0:
            self.values_errors += 1
            return 0
        pair = (<str>rec)[len(self.prefix):]
        out_row = self._row(<PyObject*>pair)
        if out_row == -1:
            return 0
        row = out_row if out_row >= 0 else self.first_new + (-2 - out_row)
        if row >= self.state.capacity:
            raise IndexError(f"row {row} outside 0..{self.state.capacity - 1}")
        o = self._optional(get_slot(pl, self.off_open))
        h = self._optional(get_slot(pl, self.off_high))
        lo = self._optional(get_slot(pl, self.off_low))
        if not self.state._update(self, i, row, t, last, volume, vwap, o, h, lo, out_row):
            self._note(("disorder", pair))
            return 0
        return 1

    cdef int _new_slot(self, Py_ssize_t j) except -1:
        self.state._forget(self.first_new + j)
        return 0

    cdef int _row_given(self, Py_ssize_t j, int64_t row) except -1:
        self.state._move(self.first_new + j, row)
        return 0

    cdef inline double _optional(self, PyObject* p) noexcept:
        cdef double x
        if p == NULL or <object>p is None or not as_double(p, &x):
            return NAN
        return x

