# cython: language_level=3
"""Cython API of :mod:`fastfeed._ext.engine` (source: ``ext/engine.pyx``).

``cimport`` it from the installed package (this file is installed beside the module)::

    from fastfeed._ext.engine cimport Engine, WindowRow, bar_fate, BAR_ACCEPTED

Public, for a strategy written in Cython (all ``nogil``, no allocation, no locking —
one writer at a time, readers between writes, as for the Python API):

* ``Engine.upsert_bar(row, second, open, high, low, close, volume, pv, now)`` -> accepted?
* ``Engine.upsert_bars(n, rows, seconds, open, high, low, close, volume, pv, now)``
  (contiguous C arrays) -> number accepted;
* ``Engine.advance(second)``; ``Engine.clock()`` (``T``, -1 before any bar);
* ``Engine.window_index(W)`` (-1 if ``W`` is not a window), ``Engine.read(k, row)`` ->
  :c:type:`WindowRow`, ``Engine.read_rows(k, rows, n, out)`` (prefetches across rows);
* ``Engine.row_idle(row)`` (no bar for longer than ``depth``: the row holds none),
  ``Engine.find_idle_row(start, n, T)``, ``Engine.clear_row(row)`` (for reusing a row);
* ``bar_fate(...)`` / ``bar_valid(...)``: the accept rule of a bar, written once here:
  the engine applies it to every bar, and other code (the decoder) can ask "would this
  bar be accepted" without repeating it.

Everything whose name starts with ``_`` (and the raw fields) is the engine's private
layout: it changes between releases (see docs/ENGINE.md for its meaning).
"""
from libc.math cimport fabs, INFINITY
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
cimport cython

# What the engine does with a bar (``bad_row`` aside: a row outside the universe is
# the caller's to check).  The counters of docs/ENGINE.md, in the order checked.
cdef enum BarFate:
    BAR_ACCEPTED = 0
    BAR_INVALID = 1     # counted as invalid_rejected
    BAR_FUTURE = 2      # counted as future_rejected
    BAR_STALE = 3       # counted as stale_dropped


cdef inline bint bar_valid(int64_t second, double open, double high, double low, double close,
                           double volume, double pv) noexcept nogil:
    """The bar is self-consistent: every number finite, ``second >= 0``, ``volume >= 0``,
    ``0 < low <= open, close <= high`` (so every price is > 0 and ``high >= low``)."""
    # A comparison with NaN is false, so the order tests hold only for numbers: with
    # 0 < low <= open, close <= high < inf every price is finite; volume and pv are
    # checked against inf themselves.
    return (second >= 0 and volume >= 0.0 and volume < INFINITY and fabs(pv) < INFINITY
            and low > 0.0 and low <= open and open <= high and low <= close and close <= high
            and high < INFINITY)


cdef inline int bar_fate(int64_t second, double open, double high, double low, double close,
                         double volume, double pv, int64_t T, int64_t depth,
                         double max_future_skew, double now) noexcept nogil:
    """What an engine with clock ``T`` (-1: no bar yet) and ``depth`` does with this bar.

    ``now``: receive time in epoch seconds, NaN for no future check.  A bar accepted
    moves the clock, so within one batch later bars are judged against the new ``T``.
    """
    if not bar_valid(second, open, high, low, close, volume, pv):
        return BAR_INVALID
    if now == now and second > now + max_future_skew:
        return BAR_FUTURE
    if T >= 0 and second <= T - depth:
        return BAR_STALE
    return BAR_ACCEPTED


# One window of one row as the engine reports it (count == -1: no such window/row).
ctypedef struct WindowRow:
    double open, high, low, close   # NaN when count == 0
    double volume                   # 0.0 when count == 0
    double vwap                     # NaN when volume == 0
    int64_t count


# -- private layout (docs/ENGINE.md, "Layout") -----------------------------------------
# Fields that name a bar hold its slot (second % depth): unique within a window.
# A row block is the RowHead, then one array of K lanes per field (lane k = window k),
# hot fields first (everything every in-order bar touches: 4 cache lines for 3 windows),
# then high, low and the front slots (written when a max or min front moves), then
# ``open`` and ``fslot`` (changed when a window's earliest bar changes); padded to
# a multiple of 64 bytes (384 for 3 windows).  Blocks are row-major and page-aligned;
# the offsets are written once, in ext/engine_lanes.h (``ff_layout``), copied into
# ``Engine.o_*``; ``Lanes`` holds a row's field pointers for the scalar (rare) paths.

ctypedef struct RowHead:            # 40 bytes, at the start of the row block
    int64_t last        # latest second accepted for the row (-1: none)
    double back[2]      # exact value of the back entry of the max [0] / min [1] deque
    double back2[2]     # exact value of the entry before the back (NaN: not mirrored)

# Pointers to one row's lanes (K entries each).  Outputs (what readers see) first.
ctypedef struct Lanes:
    int64_t *cnt
    double *vol         # the volume sum, kept rounded: true sum ~ vol + vc
    double *vwap
    double *close
    double *high
    double *low
    double *open
    double *vc          # compensation of the volume sum
    double *ps          # Neumaier sum of pv and its compensation
    double *pc
    float *va           # ~ sum of |x| added + removed since the last exact recompute
    float *pa
    int32_t *fmax       # index of the window's front in the row's max/min deque
    int32_t *fmin
    uint16_t *hslot     # slot of the max/min front (eviction need not read the deque)
    uint16_t *lslot
    uint16_t *fslot     # slot of the earliest bar in the window (valid when cnt > 0)

# One deque entry: the bar's slot and a 32-bit key of its high (max deque) or low (min
# deque): the exact value on the 1e-4 price grid (flag bit set), else the bits of its
# float32.  Packed to 6 bytes: an entry and its neighbours share one cache line, and pops
# compare keys (reading the store only when two float32 keys tie).
cdef packed struct DQE:
    uint32_t key
    uint16_t slot

# The bar store, slot-major [depth, NP] (NP = capacity rounded up to 64).
ctypedef struct VP:
    double v, pv
ctypedef struct OHLC:
    double o, h, l, c


@cython.final
cdef class Engine:
    cdef readonly Py_ssize_t capacity
    cdef readonly Py_ssize_t depth
    cdef readonly tuple windows
    cdef readonly double max_future_skew
    cdef readonly bint prefault

    cdef Py_ssize_t N, NP, D, K, kmax, C, mask, RB
    # byte offsets of the lane arrays in a row block
    cdef Py_ssize_t o_cnt, o_vol, o_vwap, o_close, o_high, o_low, o_open, o_vc, o_ps, o_pc
    cdef Py_ssize_t o_va, o_pa, o_fmax, o_fmin, o_hslot, o_lslot, o_fslot
    cdef int64_t Wmax, Wmin
    cdef int64_t _T, _Tslot
    cdef int64_t *win
    cdef VP *svp                # store [depth, NP]
    cdef OHLC *soh
    cdef uint8_t *present
    cdef char *blk              # row blocks [capacity, RB]
    cdef DQE *qmax              # [capacity, C] rings, C = next power of two >= max(windows)
    cdef DQE *qmin
    cdef int64_t *pend          # eviction scratch: deferred front moves, 2 * K * capacity
    cdef int64_t *elo           # eviction scratch: per window, the seconds evicted
    cdef int64_t *ehi
    cdef int64_t *eslot         # eviction scratch: slot of elo[k]
    cdef int64_t *eone          # eviction scratch: slot of the one second leaving window k, -1: none
    cdef uint64_t *rowmask      # eviction scratch: presence OR-ed 8 rows per word
    cdef DQE *tmpq              # deque-correction scratch: C entries
    # last_rows bookkeeping
    cdef int64_t *lrows
    cdef uint32_t *marks        # per row: epoch of the last upsert that touched it
    cdef int32_t *tails         # [capacity, 2]: tail index of each deque (rebased, see _rebase)
    cdef uint32_t epoch
    cdef Py_ssize_t nlast
    # counters
    cdef int64_t n_accepted, n_inserted, n_replaced, n_stale, n_future, n_invalid, n_bad_row
    cdef int64_t n_rebuilds, n_recomputes
    cdef Py_ssize_t n_ev3_part      # rows the fast eviction pass did with some window losing nothing
    # python-side objects
    cdef list _keep
    cdef dict _views
    cdef object _lrows_arr
    cdef tuple _store_views

    # -- public Cython API (nogil) -----------------------------------------------------
    cdef bint upsert_bar(self, int64_t row, int64_t second, double open, double high,
                         double low, double close, double volume, double pv,
                         double now) noexcept nogil
    cdef Py_ssize_t upsert_bars(self, Py_ssize_t n, const int64_t *rows, const int64_t *seconds,
                                const double *open, const double *high, const double *low,
                                const double *close, const double *volume, const double *pv,
                                double now) noexcept nogil
    cdef void advance(self, int64_t second) noexcept nogil
    cdef int64_t clock(self) noexcept nogil
    cdef Py_ssize_t window_index(self, int64_t W) noexcept nogil
    cdef WindowRow read(self, Py_ssize_t k, Py_ssize_t row) noexcept nogil
    cdef void read_rows(self, Py_ssize_t k, const int64_t *rows, Py_ssize_t n,
                        WindowRow *out) noexcept nogil
    cdef bint row_idle(self, Py_ssize_t row) noexcept nogil
    cdef Py_ssize_t find_idle_row(self, Py_ssize_t start, Py_ssize_t n, int64_t T) noexcept nogil
    cdef void clear_row(self, Py_ssize_t row) noexcept nogil

    # -- private -----------------------------------------------------------------------
    cdef RowHead *_head(self, Py_ssize_t r) noexcept nogil
    cdef void _lanes(self, Py_ssize_t r, Lanes *L) noexcept nogil
    cdef int64_t _sec(self, Py_ssize_t slot) noexcept nogil
    cdef Py_ssize_t _slot(self, int64_t s) noexcept nogil
    cdef void _advance(self, int64_t T1) noexcept nogil
    cdef Py_ssize_t _evict_row(self, Py_ssize_t r, bint defer, Py_ssize_t npend) noexcept nogil
    cdef void _recompute_lanes(self, Py_ssize_t r, Py_ssize_t k0, uint64_t canc) noexcept nogil
    cdef Py_ssize_t _evict_one(self, Py_ssize_t r, Py_ssize_t k, Lanes *L,
                               int64_t e, Py_ssize_t eslot, bint defer,
                               Py_ssize_t npend) noexcept nogil
    cdef void _resolve_fronts(self, Py_ssize_t npend) noexcept nogil
    cdef void _clear_rw(self, Py_ssize_t k, Py_ssize_t r) noexcept nogil
    cdef void _recompute(self, Py_ssize_t k, Py_ssize_t r, int64_t lo, int64_t hi) noexcept nogil
    cdef void _refresh_out(self, Py_ssize_t k, Py_ssize_t r) noexcept nogil
    cdef void _rebase(self, Py_ssize_t r, bint ismax) noexcept nogil
    cdef void _dq_insert(self, Py_ssize_t r, int64_t s, uint16_t slot, double val,
                         bint ismax) noexcept nogil
    cdef void _dq_push(self, Py_ssize_t r, int64_t s, uint16_t slot, double val,
                       bint ismax) noexcept nogil
    cdef bint _dq_contains(self, Py_ssize_t r, int64_t s, bint ismax) noexcept nogil
    cdef void _dq_worse(self, Py_ssize_t r, int64_t s, bint ismax) noexcept nogil
    cdef void _apply_new(self, Py_ssize_t r, RowHead *hd,
                         uint16_t slot, double o, double h, double l, double c,
                         double v, double pv) noexcept nogil
    cdef bint _apply(self, Py_ssize_t r, int64_t s, double o, double h, double l, double c,
                     double v, double pv) noexcept nogil
    cdef Py_ssize_t _upsert_c(self, const char *rp, Py_ssize_t rs, const char *sp, Py_ssize_t ss,
                              const char *op, Py_ssize_t os_, const char *hp, Py_ssize_t hs,
                              const char *lp, Py_ssize_t ls, const char *cp, Py_ssize_t cs,
                              const char *vp, Py_ssize_t vs_, const char *pp, Py_ssize_t ps_,
                              Py_ssize_t n, double now) noexcept nogil
    cdef Py_ssize_t _upsert_run(self, const int64_t *R, const int64_t *S, const double *O,
                                const double *H, const double *Lo, const double *Cl,
                                const double *V, const double *P, Py_ssize_t n,
                                double now) noexcept nogil
    cdef void _new_rare(self, Py_ssize_t r, int64_t px, int64_t pn, double pv) noexcept nogil
