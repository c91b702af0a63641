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
from cpython.buffer cimport PyBUF_READ
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.object cimport PyObject, PyTypeObject, Py_TYPE
from cpython.pycapsule cimport PyCapsule_New
from cpython.dict cimport PyDict_GetItem
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.list cimport PyList_GET_SIZE, PyList_GET_ITEM
from cpython.long cimport PyLong_AsLongLong, PyLong_AsSsize_t
from libc.math cimport isfinite, NAN
from libc.stdint cimport int64_t
from libc.string cimport memmove, memcmp
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME

from sink cimport MessageSink

import numpy as np

cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        const char* name
        int type
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member
    bint PyFloat_CheckExact(PyObject*)
    bint PyLong_CheckExact(PyObject*)
    bint PyUnicode_CheckExact(PyObject*)
    Py_ssize_t PyUnicode_GET_LENGTH(PyObject*)
    int PyUnicode_KIND(PyObject*)
    void* PyUnicode_DATA(PyObject*)
    double PyFloat_AsDouble(PyObject*) except? -1.0

#: how the engine's ``pv`` (price × volume) is made from a bar
PV_TYPICAL = 0   # volume * (high + low + close) / 3
PV_CLOSE = 1     # volume * close
PV_VWAP = 2      # volume * vwap when the vwap field is present (not None), else typical

cdef int64_t MAX_MS = 9_000_000_000_000_000  # bar times beyond this (~285,000 years) are absurd

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


cdef inline PyObject* get_slot(PyObject* obj, Py_ssize_t off) noexcept:
    return (<PyObject**>((<char*>obj) + off))[0]


cdef inline bint as_double(PyObject* o, double* out) noexcept:
    """Read a float (or int) field; False if it is missing or not a number."""
    if o == NULL:
        return False
    if PyFloat_CheckExact(o):
        out[0] = PyFloat_AS_DOUBLE(<object>o)
        return True
    try:
        out[0] = PyFloat_AsDouble(o)
    except Exception:
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


class _NoBars:
    """Bar type of a filler whose bars are written by :class:`SfoxState` (never decoded)."""


cdef void _sink_message(void* ctx, const char* payload, Py_ssize_t size, int64_t recv_ns) noexcept:
    (<BarFiller>ctx)._raw_message(payload, size, recv_ns)


cdef void _sink_buffer_end(void* ctx) noexcept:
    (<BarFiller>ctx)._flush_pending()


cdef class BarFiller:
    """Fills the batch columns from decoded bar Structs and upserts them into the engine.

    :param bar_type: the msgspec Struct type of a bar message.
    :param fields: slot names ``(symbol, open, high, low, close, volume, time_ms, vwap)``;
        ``vwap`` may be ``None``. ``time_ms`` is epoch milliseconds of the bar start.
    :param universe: the ``Universe`` (``index`` dict read directly, ``row()`` on a miss).
    :param overflow_exc: the exception ``universe.row()`` raises when full (``UniverseFull``).
    :param engine: object with ``upsert(rows, seconds, o, h, l, c, v, pv, n, now)``.
    :param pv_mode: :data:`PV_TYPICAL`, :data:`PV_CLOSE` or :data:`PV_VWAP`.
    :param capacity: initial batch size (grows by doubling, never per message).

    After :meth:`process`: ``n`` bars filled, ``accepted`` by the engine, ``values_errors``
    (non-finite numbers, negative volume, high < low, bad time), ``overflow`` (bars of
    symbols the full universe refused), ``others`` (elements that are not bars, in order;
    ``None`` when there were none), ``max_s`` (latest bar second, -1 if none).

    The batch arrays (``rows``, ``seconds``, ...) are reused: valid until the next call.
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
    cdef readonly int pv_mode
    cdef dict index
    cdef list symbols           # universe.symbols (row -> symbol), or None
    cdef Py_ssize_t guess       # predicted row of the next bar: the previous bar's row + 1
    cdef int no_guess           # bars left to look up without guessing (after a wrong guess)
    cdef object universe_row, overflow_exc, upsert
    cdef readonly LatencyBuckets processing_latency, feed_latency
    cdef readonly Py_ssize_t n, accepted, values_errors, overflow
    cdef readonly int64_t max_s
    cdef readonly list others
    # the per-message path (see on_message); set by bind()
    cdef object decode, stats, on_batch, last_rows, engine
    cdef object after_fill, flush_stats, decode_failed, internal_error, on_gap
    cdef MessageSink _sink
    # gap detection after a reconnect (see expect_gap)
    cdef public int64_t gap_from
    cdef public int64_t next_flush
    # deferred mode: bars of several messages wait for one upsert (flush_pending)
    cdef public bint deferred
    cdef public Py_ssize_t max_pending
    cdef readonly Py_ssize_t pending
    cdef int64_t pending_recv_ns, pending_max_s

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
        self.off_vw = member_offset(bar_type, vw) if self.has_vw else 0
        if pv_mode not in (PV_TYPICAL, PV_CLOSE, PV_VWAP):
            raise ValueError(f"pv_mode must be PV_TYPICAL, PV_CLOSE or PV_VWAP, not {pv_mode!r}")
        if pv_mode == PV_VWAP and not self.has_vw:
            raise ValueError("pv_mode PV_VWAP needs a vwap field")
        self.pv_mode = pv_mode
        self.index = universe.index
        self.universe_row = universe.row
        symbols = getattr(universe, "symbols", None)
        self.symbols = symbols if type(symbols) is list else None
        self.guess = 0
        self.no_guess = 0
        self.overflow_exc = overflow_exc
        self.upsert = engine.upsert if engine is not None else None
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

    cdef int64_t _row(self, PyObject* sym) except -2:
        """Row of ``sym``: -1 when the universe refused it (full).

        A feed sends a market's bars in the same order every second, and rows were
        assigned in order of first sight, so the row after the previous bar's is checked
        first: one string compare against ``universe.symbols[guess]`` instead of hashing
        the new string and probing the 16k-entry dict (cache misses). Rows and symbols
        are a bijection (``Universe.row`` assigns both), so a match is the dict's answer.
        After a wrong guess the next 8 bars skip guessing: a feed in no stable order
        pays for a guess on one bar in 9 only.
        """
        cdef Py_ssize_t g = self.guess, n
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
            if PyUnicode_CheckExact(cand):
                n = PyUnicode_GET_LENGTH(cand)
                if n == PyUnicode_GET_LENGTH(sym) and PyUnicode_KIND(cand) == PyUnicode_KIND(sym) \
                        and memcmp(PyUnicode_DATA(cand), PyUnicode_DATA(sym), n * PyUnicode_KIND(sym)) == 0:
                    self.guess = g + 1
                    return g
            self.no_guess = 8
        r = PyDict_GetItem(self.index, <object>sym)
        if r != NULL:
            row = PyLong_AsSsize_t(<object>r)
        else:
            try:
                row = self.universe_row(<object>sym)
            except self.overflow_exc:
                self.overflow += 1
                return -1
        self.guess = row + 1
        return row

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
        p = get_slot(item, self.off_t)
        if p == NULL or not PyLong_CheckExact(p):
            self.values_errors += 1
            return 0
        try:
            ms = PyLong_AsLongLong(<object>p)
        except OverflowError:
            self.values_errors += 1
            return 0
        if ms < 0 or ms > MAX_MS:
            self.values_errors += 1
            return 0
        p = get_slot(item, self.off_sym)
        if p == NULL or not PyUnicode_CheckExact(p):
            self.values_errors += 1
            return 0
        if self.pv_mode == PV_CLOSE:
            pv = v * c
        else:
            pv = v * (h + l + c) / 3.0
            if self.pv_mode == PV_VWAP:
                p = get_slot(item, self.off_vw)
                if p != NULL and <object>p is not None:
                    if not as_double(p, &vw) or not isfinite(vw):
                        self.values_errors += 1
                        return 0
                    pv = v * vw
        row = self._row(get_slot(item, self.off_sym))
        if row < 0:
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
        self.values_errors = 0
        self.overflow = 0
        self.max_s = -1
        self.others = None
        if type(msg) is list:
            size = PyList_GET_SIZE(msg)
            if base + size > self.capacity:
                self._grow(base + size, base)
            for k in range(size):
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
        return n

    cpdef Py_ssize_t process(self, msg, int64_t recv_ns) except -1:
        """:meth:`fill`, then one ``engine.upsert`` and the latency records; return accepted.

        ``processing_latency`` gets ``now - recv_ns`` (ns) once per message with bars,
        ``feed_latency`` gets ``recv - end of the latest bar`` (µs) once per such message.
        """
        cdef Py_ssize_t n = self.fill(msg)
        self.accepted = 0
        if n == 0:
            return 0
        return self._upsert(n, recv_ns, self.max_s)

    cdef Py_ssize_t _upsert(self, Py_ssize_t n, int64_t recv_ns, int64_t max_s) except -1:
        """The first ``n`` bars of the batch into the engine (``now`` = ``recv_ns``), and the
        latency records: ``processing_latency`` gets ``now - recv_ns`` (ns),
        ``feed_latency`` ``recv - end of the latest bar`` (µs). Returns the bars accepted."""
        self.accepted = self.upsert(self.rows, self.seconds, self.open, self.high, self.low,
                                    self.close, self.volume, self.pv, n, recv_ns / 1e9)
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
        """The C sink: one message of ``size`` bytes, valid during the call."""
        mv = PyMemoryView_FromMemory(<char*>payload, size, PyBUF_READ)
        try:
            self._on_message(mv, recv_ns)
        except Exception as e:
            self.internal_error(e)
        finally:
            try:
                # a view kept past the call would point into memory that is reused or freed:
                # release it, so such use raises ValueError instead of reading garbage
                mv.release()
            except Exception as e:
                self.internal_error(e)

    def on_message(self, payload, int64_t recv_ns):
        """The Session ``on_message`` of the feeds: decode, then :meth:`apply`; never raises."""
        self._on_message(payload, recv_ns)

    cdef int _on_message(self, payload, int64_t recv_ns) except -1:
        try:
            msg = self.decode(payload)
        except Exception as e:
            self.decode_failed(payload, recv_ns, e)
            return 0
        try:
            self.apply(msg, recv_ns)
        except Exception as e:
            self.internal_error(e)
        return 0

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
                    self.pending_recv_ns = recv_ns
                    self.pending_max_s = self.max_s
                    self.pending = n
                else:
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
        cdef int64_t before, T
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
            if self.on_batch is not None:
                self.on_batch(self.last_rows(), self.engine.T)
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
        self.pending_recv_ns = recv_ns
        self.pending_max_s = max_s
        return 0

    cdef int _upsert_pending(self) except -1:
        cdef Py_ssize_t n = self.pending
        cdef int64_t recv_ns = self.pending_recv_ns
        if n == 0:
            return 0
        self.pending = 0
        self.n = n
        self._upsert(n, recv_ns, self.pending_max_s)
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
        if not self._update(out, 0, row, t_ns, last, volume, vwap, day_open, day_high, day_low):
            return 0
        out.n = 1
        return 1

    cdef bint _update(self, BarFiller out, Py_ssize_t i, Py_ssize_t row, int64_t t_ns, double last,
                      double volume, double vwap, double day_open, double day_high,
                      double day_low) noexcept:
        """:meth:`update` into slot ``i`` (``row`` in range)."""
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
        out._put(i, row, s, self._bar_o[row], self._bar_h[row], self._bar_l[row], self._bar_c[row],
                 self._bar_v[row], self._bar_pv[row])
        return True


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
        self.state = SfoxState(universe.capacity)
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
        cdef int64_t seq, t
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
        row = self._row(<PyObject*>pair)
        if row < 0:
            return 0
        if row >= self.state.capacity:
            raise IndexError(f"row {row} outside 0..{self.state.capacity - 1}")
        o = self._optional(get_slot(pl, self.off_open))
        h = self._optional(get_slot(pl, self.off_high))
        lo = self._optional(get_slot(pl, self.off_low))
        if not self.state._update(self, i, row, t, last, volume, vwap, o, h, lo):
            self._note(("disorder", pair))
            return 0
        return 1

    cdef inline double _optional(self, PyObject* p) noexcept:
        cdef double x
        if p == NULL or <object>p is None or not as_double(p, &x):
            return NAN
        return x

