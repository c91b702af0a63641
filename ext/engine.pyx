# cython: language_level=3
"""Bar store and rolling OHLCV/VWAP kernels: :class:`Engine`.

Semantics (details in ``docs/ENGINE.md``):

* ``T`` is the largest second accepted (or passed to :meth:`Engine.advance_to`).
* A bar is rejected, in this order, as ``bad_row`` (row outside ``[0, capacity)``),
  ``invalid_rejected`` (non-finite number, ``volume < 0``, a price <= 0, open or close
  outside ``[low, high]``, negative second), ``future_rejected`` (``second > now +
  max_future_skew``, unless ``now`` is NaN), ``stale_dropped`` (``second <= T -
  depth``) — the rule is :func:`bar_fate` in ``engine.pxd``.  Otherwise it is accepted
  and replaces (``replaced``) or adds (``inserted``) the bar of its ``(row, second)``.
* Window ``W`` as of ``T`` holds the bars with ``T - W < second <= T``.

Layout (``docs/ENGINE.md``, "Layout"; the row block's offsets in ``ext/engine_lanes.h``):
everything a bar of a row reads or writes besides the store and its deques sits in the
row's **row block**: the head, then one array of K lanes per field (lane k = window k),
the fields every in-order bar touches first (4 cache lines for 3 windows), then the
max/min fields (written when a front moves), ``open`` and the earliest bar's slot last
(384 bytes in all), so a bar in a random row touches few
lines and one page, and the kernels of ``engine_lanes.h`` update two windows per
vector operation.
The bar store is slot-major (slot = second % depth): a burst for one second writes one
contiguous stretch and evicting a second reads one; per slot and row it holds
``(volume, pv)`` (16 bytes) and ``(open, high, low, close)`` (32 bytes), so a bar writes
two lines.
Per (row, window): Neumaier-compensated sums with an exact recompute on heavy
cancellation.  One max and one min monotonic deque per row, shared by all windows (a
bar's membership depends only on later bars, so a shorter window's deque is a suffix
of the longest window's deque — each window keeps its own front index into it).
"""
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_STRIDES, PyBUF_FORMAT
from libc.math cimport fabs, NAN
from libc.string cimport memset
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t, INT64_MAX

import operator

import numpy as np
cimport cython
cimport numpy as cnp

cnp.import_array()

cdef extern from *:
    """
    #include "ff_prefetch.h"
    #include <sys/mman.h>
    #include <unistd.h>
    #ifndef MADV_POPULATE_WRITE
    #define MADV_POPULATE_WRITE 23
    #endif
    #ifndef MADV_HUGEPAGE
    #define MADV_HUGEPAGE 14
    #endif
    /* Make every page of [p, p + n) resident now (the kernel zeroes it here, not on the
       first write in upsert): MADV_POPULATE_WRITE (Linux >= 5.14), else write each page
       (a read + write of the same byte: the contents do not change).  Returns 1 if
       madvise did it, 0 if the pages were touched by hand. */
    static int ff_prefault(char *p, size_t n) {
        size_t pg = (size_t)sysconf(_SC_PAGESIZE);
        char *a = (char *)(((size_t)p + pg - 1) & ~(pg - 1));
        char *end = p + n;
        volatile char *q;
        if (a < end && madvise(a, (size_t)(end - a) & ~(pg - 1), MADV_POPULATE_WRITE) == 0) {
            q = (volatile char *)p; if (n) { q[0] = q[0]; q[n - 1] = q[n - 1]; }
            return 1;
        }
        for (q = (volatile char *)p; (char *)q < end; q += pg) *q = *q;
        if (n) { q = (volatile char *)(end - 1); *q = *q; }
        return 0;
    }
    /* Ask for transparent huge pages over the whole 2 MiB pages inside [p, p + n)
       (numpy does it too for its large arrays; harmless when THP is off).  */
    static void ff_hugepages(char *p, size_t n) {
        size_t hp = (size_t)2 << 20;
        char *a = (char *)(((size_t)p + hp - 1) & ~(hp - 1));
        if (a + hp <= p + n) madvise(a, (size_t)(p + n - a) & ~(hp - 1), MADV_HUGEPAGE);
    }
    static inline uint64_t ff_load8(const unsigned char *p) {
        uint64_t x; __builtin_memcpy(&x, p, 8); return x;
    }
    #define ff_ctz64(x) __builtin_ctzll(x)
    """
    void FF_PREFETCH(const void *p) noexcept nogil
    int ff_prefault(char *p, size_t n) noexcept nogil
    void ff_hugepages(char *p, size_t n) noexcept nogil
    uint64_t ff_load8(const uint8_t *p) noexcept nogil
    int ff_ctz64(uint64_t x) noexcept nogil

cdef extern from "engine_lanes.h":
    # the row block's layout (offsets of the lane arrays) and the window kernels across
    # lanes (lane k = window k); see the header
    Py_ssize_t ff_layout(Py_ssize_t K, Py_ssize_t *o) noexcept nogil
    void ff_add_new(char *b, Py_ssize_t K, uint16_t slot, double o, double h, double l,
                    double c, double v, double pv, int64_t px, int64_t pn) noexcept nogil
    # the steady-state bar of 3 windows: keys, both pushes, the add kernel (nonzero: the
    # caller has rare work left, see _new_rare)
    int ff_new3(char *b, int32_t *tl, void *qx, void *qn, int64_t mask, const void *col,
                Py_ssize_t NP, Py_ssize_t kmax, uint16_t slot, double o, double h, double l,
                double c, double v, double pv, int64_t rebase, int64_t *pxo,
                int64_t *pno) noexcept nogil
    # deque keys and pushes (docs/ENGINE.md, "High/low"); q is a row's DQE ring, col its
    # store column (soh + row, stride NP per slot)
    uint32_t dkey "ff_dkey"(double x) noexcept nogil
    # a later bar of value ``later`` makes an earlier one irrelevant (ties: keep the latest)
    bint dominates "FF_DOM"(double later, double earlier, bint ismax) noexcept nogil
    # the high (max deque) or low (min deque) of the bar in ``slot`` of a store column
    double hl "FF_HL"(const OHLC *col, Py_ssize_t NP, Py_ssize_t slot, bint ismax) noexcept nogil
    bint dom_hint "ff_dom_hint_v"(double later, uint32_t klater, const DQE *q, Py_ssize_t at,
                                  const OHLC *col, Py_ssize_t NP, bint ismax) noexcept nogil
    bint dom_by_hint "ff_dom_by_hint_v"(double earlier, uint32_t kearlier, const DQE *q,
                                        Py_ssize_t at, const OHLC *col, Py_ssize_t NP,
                                        bint ismax) noexcept nogil
    int64_t ff_push_v(DQE *q, double *back, double *back2, int64_t p, int64_t head, double val,
                      uint32_t key, uint16_t slot, int64_t mask, const OHLC *col, Py_ssize_t NP,
                      bint ismax) noexcept nogil
    uint64_t ff_evict_step(char *b, Py_ssize_t K, Py_ssize_t k0, Py_ssize_t k1, Py_ssize_t r,
                           const uint8_t *present, const void *svp, const void *soh,
                           Py_ssize_t NP, Py_ssize_t D, const int64_t *es, int64_t *pend,
                           Py_ssize_t *npend, uint64_t *clear, double cancel) noexcept nogil
    ctypedef struct ff_rings:
        const void *qmax
        const void *qmin
        Py_ssize_t C, mask
    Py_ssize_t ff_evict3_pass(char *blk, Py_ssize_t RB, Py_ssize_t nw, const uint8_t *present,
                              const void *svp, const void *soh, Py_ssize_t NP, Py_ssize_t D,
                              const int64_t *es, Py_ssize_t kmin, const ff_rings *q,
                              int64_t *pend, uint64_t *acc, double cancel,
                              const uint8_t *zero, Py_ssize_t *npart) noexcept nogil
    int ff_ev3_set_isa(int isa) noexcept nogil

# upsert prefetches the row block and store cells of the bar PF_FAR ahead: a burst's
# rows come in random order, so without this every bar waits on its misses in turn.
# The first PF_FAR bars of a call are prefetched before the loop.  PF_NEAR bars ahead
# it prefetches the row head again and the ring lines of both deques' backs (see
# _upsert_run: 16 ahead, the ring prefetches stalled the loop).
cdef enum:
    PF_FAR = 16
    PF_NEAR = 4

# deque indices are int32: a row's indices are moved back by a multiple of the ring
# size when its tail passes this (the ring positions, index & mask, do not change)
cdef int64_t REBASE_AT = 1 << 30

__all__ = ["Engine", "WindowView"]


_EVICT_ISA = {"auto": -1, "sse2": 0, "avx2": 1}


def _set_evict_isa(str name):
    """Test hook: the copy of the steady eviction pass (``ff_evict3_pass``, compiled for
    SSE2 and for AVX2, normally chosen by CPUID) that runs from now on, in every engine:
    ``"sse2"``, ``"avx2"`` or ``"auto"`` (the CPU's choice).  Returns the previous
    setting's name ("auto" until a pass has run or after "auto").  ValueError for an
    unknown name, or "avx2" on a CPU (or build) without it."""
    if name not in _EVICT_ISA:
        raise ValueError(f"unknown eviction pass ISA {name!r} (sse2, avx2 or auto)")
    prev = ff_ev3_set_isa(_EVICT_ISA[name])
    if prev == -2:
        raise ValueError("this CPU (or build) has no AVX2 eviction pass")
    return {-1: "auto", 0: "sse2", 1: "avx2"}[prev]

# |sum| < CANCEL * (sum of |x| added and removed since the last recompute) triggers an
# exact recompute of that (row, window) sum from the store.
cdef double CANCEL = 1e-6
cdef Py_ssize_t MAX_DEPTH = 65536      # slots are stored as uint16 in the deques
#: the most seconds an engine keeps (``depth``, so also the longest window)
DEPTH_LIMIT = MAX_DEPTH


cdef inline void nadd(double *s, double *c, double x) noexcept nogil:
    """Neumaier: add x to the running sum s with compensation c."""
    cdef double t = s[0] + x
    if fabs(s[0]) >= fabs(x):
        c[0] += (s[0] - t) + x
    else:
        c[0] += (x - t) + s[0]
    s[0] = t


cdef inline void vadd(double *s, double *c, double x) noexcept nogil:
    """Neumaier step, then renormalize so that s is the rounded total (exact TwoSum):
    the window's volume output doubles as the running sum."""
    cdef double t = s[0] + x, u, bp
    if fabs(s[0]) >= fabs(x):
        c[0] += (s[0] - t) + x
    else:
        c[0] += (x - t) + s[0]
    u = t + c[0]
    bp = u - t
    c[0] = (t - (u - bp)) + (c[0] - bp)
    s[0] = u


cdef inline Py_ssize_t slot_of(int64_t s, int64_t T, int64_t Tslot, int64_t D) noexcept nogil:
    """The store slot of second s (T - depth < s <= T) when T's slot is Tslot."""
    cdef int64_t x = Tslot - (T - s)
    if x < 0:
        x += D
    return <Py_ssize_t>x


cdef inline int64_t push_back(DQE *q, RowHead *hd, int32_t *tl, int which, int64_t p,
                              int64_t head, double val, uint32_t fval, uint16_t slot,
                              Py_ssize_t mask, const OHLC *col, Py_ssize_t NP,
                              bint ismax) noexcept nogil:
    """Push a new latest bar on a deque whose back is at ``p - 1`` (front ``head``):
    ``ff_push`` (ext/engine_lanes.h) with the head's exact copies of the back and of the
    entry before it; returns its index (``tl[which]`` becomes the new tail)."""
    p = ff_push_v(q, &hd.back[which], &hd.back2[which], p, head, val, fval, slot, mask, col,
                  NP, ismax)
    tl[which] = <int32_t>(p + 1)
    return p


cdef inline double vwap_of(const Lanes *L, Py_ssize_t k) noexcept nogil:
    if L.vol[k] != 0.0:
        return (L.ps[k] + L.pc[k]) / L.vol[k]
    return NAN


cdef inline bint cancelled(const Lanes *L, Py_ssize_t k) noexcept nogil:
    return (fabs(L.vol[k]) < CANCEL * L.va[k]) or (fabs(L.ps[k] + L.pc[k]) < CANCEL * L.pa[k])


cdef class WindowView:
    """One window's columns, each of length ``capacity``, indexed by row.

    From :meth:`Engine.window` these are **zero-copy, read-only views** of the engine's
    arrays: valid (and consistent) only until the next ``upsert``/``advance_to``, which
    update them in place.  From :meth:`Engine.window_copy` they are private copies.
    """
    cdef readonly int W
    cdef readonly object open, high, low, close, volume, vwap, count

    def __init__(self, W, open, high, low, close, volume, vwap, count):
        self.W = W
        self.open, self.high, self.low, self.close = open, high, low, close
        self.volume, self.vwap, self.count = volume, vwap, count

    def copy(self):
        return WindowView(self.W, self.open.copy(), self.high.copy(), self.low.copy(),
                          self.close.copy(), self.volume.copy(), self.vwap.copy(), self.count.copy())

    def __repr__(self):
        return f"<WindowView W={self.W} rows={len(self.count)} with_bars={int((self.count > 0).sum())}>"


cdef int _getbuf(object obj, Py_buffer *b, bint is_int, str name) except -1:
    """Acquire a 1-D 8-byte int64/float64 buffer without creating Python objects."""
    PyObject_GetBuffer(obj, b, PyBUF_STRIDES | PyBUF_FORMAT)
    cdef const char *f = b.format
    cdef bint ok = b.ndim == 1 and b.itemsize == 8
    if ok and f == NULL:
        ok = False     # no format: unsigned bytes
    if ok:
        if f[0] == c'@' or f[0] == c'=' or f[0] == c'<':
            f += 1
        if is_int:
            ok = (f[0] == c'l' or f[0] == c'q') and f[1] == 0
        else:
            ok = f[0] == c'd' and f[1] == 0
    if not ok:
        PyBuffer_Release(b)
        raise TypeError(f"{name} must be a 1-D {'int64' if is_int else 'float64'} array")
    return 0


cdef inline bint _plain_array(object obj, bint is_int):
    """``obj`` is exactly a 1-D ndarray of native int64 (``is_int``) or float64: its
    data pointer, stride and length can be read without the buffer protocol."""
    cdef int t
    if not cnp.PyArray_CheckExact(obj):
        return False
    if cnp.PyArray_NDIM(<cnp.ndarray>obj) != 1 or not cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>obj):
        return False
    t = cnp.PyArray_TYPE(<cnp.ndarray>obj)
    if is_int:
        return (t == cnp.NPY_LONG or t == cnp.NPY_LONGLONG) and cnp.PyArray_ITEMSIZE(<cnp.ndarray>obj) == 8
    return t == cnp.NPY_DOUBLE


cdef inline int _arg(object obj, bint is_int, str name, Py_buffer *b, bint *held,
                     const char **ptr, Py_ssize_t *stride, Py_ssize_t *length) except -1:
    """Data pointer, stride and length of one ``upsert`` argument: an exact ndarray that
    ``_plain_array`` accepts is read in place (the caller's reference keeps it alive for
    the call); anything else goes through the buffer protocol (``_getbuf``, which also
    raises the TypeError), and ``*held`` says it must be released."""
    if _plain_array(obj, is_int):
        ptr[0] = <const char *>cnp.PyArray_DATA(<cnp.ndarray>obj)
        stride[0] = cnp.PyArray_STRIDES(<cnp.ndarray>obj)[0]
        length[0] = cnp.PyArray_DIMS(<cnp.ndarray>obj)[0]
        return 0
    _getbuf(obj, b, is_int, name)
    held[0] = True
    ptr[0] = <const char *>b.buf
    stride[0] = b.strides[0]
    length[0] = b.shape[0]
    return 0


cdef char *_alloc(list keep, Py_ssize_t nbytes, Py_ssize_t align=4096) except NULL:
    """Zeroed memory of ``nbytes`` aligned to ``align``, kept alive by ``keep``.

    Appends ``(array, aligned byte view)`` to ``keep``: the view is what the prefault
    touches and what numpy views of the memory are made from."""
    raw = np.zeros(nbytes + align, dtype=np.uint8)
    cdef size_t base = <size_t>cnp.PyArray_DATA(raw)
    cdef Py_ssize_t start = <Py_ssize_t>(((base + align - 1) & ~(<size_t>align - 1)) - base)
    keep.append((raw, raw[start:start + nbytes]))
    return <char *>cnp.PyArray_DATA(raw) + start


cdef int64_t _next_pow2(int64_t x):
    cdef int64_t p = 1
    while p < x:
        p <<= 1
    return p


cdef class Engine:
    """Bar store + rolling OHLCV/VWAP of every row, for each configured window.

    :param capacity: rows (instruments), as in :class:`fastfeed.universe.Universe`.
    :param windows: window lengths in seconds (distinct, positive, each <= depth).
    :param depth: seconds of bars kept; default ``max(windows)``; at most 65536.
    :param max_future_skew: a bar whose second is more than this after ``now`` is
        rejected (one bad timestamp must not evict the universe).
    :param prefault: make all memory resident at construction (default): the kernel
        zeroes each page here instead of inside ``upsert`` during the first ``depth``
        seconds (full RSS from the start; ~1.4 s for the default size on the 2-core VM).
        ``False``: pages become resident as they are first written.

    Memory: ``capacity * (49 * depth + 12 * C + B + 16 * K + 22)`` bytes, where ``C`` =
    next power of two >= max(windows), ``K`` = number of windows and ``B`` = the row
    block (384 bytes for 3 windows; the formula is in ``docs/ENGINE.md``, "Memory");
    931 MB (888 MiB) for the default 16384 x 900 x 3 windows.
    """

    def __cinit__(self, capacity=16384, windows=(60, 300, 900), depth=None, max_future_skew=5.0,
                  prefault=True):
        cdef Py_ssize_t k, r, j
        cdef cnp.ndarray arr
        cdef char *ptr
        cdef size_t nb
        capacity = int(capacity)
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        if capacity >= 2 ** 31:
            raise ValueError(f"capacity must be < 2**31, got {capacity}")
        try:
            wins = tuple(windows)
        except TypeError:
            raise ValueError(f"windows must be a sequence of ints, got {windows!r}") from None
        if not wins:
            raise ValueError("windows must not be empty")
        if len(wins) > 1000:
            raise ValueError(f"at most 1000 windows, got {len(wins)}")
        for w in wins:
            if not isinstance(w, (int, np.integer)) or isinstance(w, bool) or w <= 0:
                raise ValueError(f"each window must be a positive int (seconds), got {w!r}")
        wins = tuple(int(w) for w in wins)
        if len(set(wins)) != len(wins):
            raise ValueError(f"windows must be distinct, got {wins}")
        if depth is None:
            depth = max(wins)
        if not isinstance(depth, (int, np.integer)) or isinstance(depth, bool) or depth <= 0:
            raise ValueError(f"depth must be a positive int (seconds), got {depth!r}")
        depth = int(depth)
        if depth > MAX_DEPTH:
            raise ValueError(f"depth must be <= {MAX_DEPTH} seconds, got {depth}")
        if max(wins) > depth:
            raise ValueError(f"every window must be <= depth ({depth}), got {wins}")
        skew = float(max_future_skew)
        if not skew >= 0.0:
            raise ValueError(f"max_future_skew must be >= 0, got {max_future_skew!r}")

        self.capacity = self.N = capacity
        self.NP = (capacity + 63) & ~63
        self.depth = self.D = depth
        self.windows = wins
        self.K = len(wins)
        self.kmax = wins.index(max(wins))
        self.Wmax = max(wins)
        self.Wmin = min(wins)
        self.max_future_skew = skew
        self.C = _next_pow2(self.Wmax)
        self.mask = self.C - 1
        self._T = -1
        self._Tslot = 0
        self.epoch = 0
        self.nlast = 0
        self._keep = []

        N, NP, D, K = self.N, self.NP, self.D, self.K
        assert sizeof(RowHead) == 40 and sizeof(Lanes) == 17 * sizeof(void *)
        assert sizeof(DQE) == 6 and sizeof(VP) == 16 and sizeof(OHLC) == 32
        # row block: head, then one K-lane array per field, hot ones first (the layout's
        # single home is ext/engine_lanes.h; docs/ENGINE.md)
        cdef Py_ssize_t offs[17]
        self.RB = ff_layout(K, offs)
        (self.o_cnt, self.o_vol, self.o_vwap, self.o_close, self.o_high, self.o_low, self.o_open,
         self.o_vc, self.o_ps, self.o_pc, self.o_va, self.o_pa, self.o_fmax, self.o_fmin,
         self.o_hslot, self.o_lslot, self.o_fslot) = (
            offs[0], offs[1], offs[2], offs[3], offs[4], offs[5], offs[6], offs[7], offs[8],
            offs[9], offs[10], offs[11], offs[12], offs[13], offs[14], offs[15], offs[16])
        self.win = <int64_t *>_alloc(self._keep, K * 8, 64)
        for k in range(K):
            self.win[k] = wins[k]
        # bar store, slot-major [depth, NP]: (volume, pv) and (open, high, low, close)
        self.svp = <VP *>_alloc(self._keep, D * NP * sizeof(VP))
        self.soh = <OHLC *>_alloc(self._keep, D * NP * sizeof(OHLC))
        self.present = <uint8_t *>_alloc(self._keep, D * NP)
        # row blocks [N, RB]
        self.blk = _alloc(self._keep, N * self.RB)
        self.qmax = <DQE *>_alloc(self._keep, N * self.C * sizeof(DQE))
        self.qmin = <DQE *>_alloc(self._keep, N * self.C * sizeof(DQE))
        self.pend = <int64_t *>_alloc(self._keep, 2 * K * N * 8, 64)
        self.tmpq = <DQE *>_alloc(self._keep, self.C * sizeof(DQE), 64)
        self.elo = <int64_t *>_alloc(self._keep, K * 8, 64)
        self.ehi = <int64_t *>_alloc(self._keep, K * 8, 64)
        self.eslot = <int64_t *>_alloc(self._keep, K * 8, 64)
        self.eone = <int64_t *>_alloc(self._keep, K * 8, 64)
        # row mask, then a zero row of NP bytes (never written: the presence of a
        # window that loses nothing in a fast eviction pass)
        self.rowmask = <uint64_t *>_alloc(self._keep, 2 * NP, 64)
        self.marks = <uint32_t *>_alloc(self._keep, N * 4, 64)
        self.tails = <int32_t *>_alloc(self._keep, N * 8, 64)
        lrows = np.zeros(N, dtype=np.int64)
        self._keep.append((lrows, lrows.view(np.uint8)))
        self.lrows = <int64_t *>cnp.PyArray_DATA(lrows)
        self._lrows_arr = lrows
        self._store_views = (self._keep[1][1].view(np.float64).reshape(D, NP, 2),
                             self._keep[2][1].view(np.float64).reshape(D, NP, 4))
        # the outputs are fields of the row blocks: numpy views with a stride of RB bytes
        cdef Py_ssize_t qw = self.RB // 8
        f64 = self._keep[4][1].view(np.float64).reshape(N, qw)
        i64 = self._keep[4][1].view(np.int64).reshape(N, qw)
        self._views = {}
        for k in range(K):
            cols = [f64[:, (off + 8 * k) // 8]
                    for off in (self.o_open, self.o_high, self.o_low, self.o_close, self.o_vol,
                                self.o_vwap)] + [i64[:, (self.o_cnt + 8 * k) // 8]]
            for v in cols:
                v.flags.writeable = False
            self._views[wins[k]] = WindowView(wins[k], *cols)
        for r in range(N):
            self._head(r).last = -1
            self._head(r).back2[0] = self._head(r).back2[1] = NAN
            for k in range(K):
                self._clear_rw(k, r)
        # prefault: make all of the memory resident now (see docs/ENGINE.md, Memory).  The
        # kernel zeroes a page on its first write; without this, the first ``depth``
        # seconds pay it inside upsert (in 2 MiB steps with transparent huge pages:
        # burst latency spikes).
        self.prefault = bool(prefault)
        for j in range(len(self._keep)):
            arr = self._keep[j][1]
            ptr = <char *>cnp.PyArray_DATA(arr)
            nb = <size_t>cnp.PyArray_NBYTES(arr)
            with nogil:
                ff_hugepages(ptr, nb)
                if self.prefault:
                    ff_prefault(ptr, nb)

    def __init__(self, capacity=16384, windows=(60, 300, 900), depth=None, max_future_skew=5.0,
                 prefault=True):
        # everything happens in __cinit__; this gives the class a visible signature
        pass

    # -- row blocks ------------------------------------------------------------------------
    cdef inline RowHead *_head(self, Py_ssize_t r) noexcept nogil:
        return <RowHead *>(self.blk + r * self.RB)

    cdef inline void _lanes(self, Py_ssize_t r, Lanes *L) noexcept nogil:
        """Pointers to row r's lane arrays (lane k = window k)."""
        cdef char *b = self.blk + r * self.RB
        L.cnt = <int64_t *>(b + self.o_cnt)
        L.vol = <double *>(b + self.o_vol)
        L.vwap = <double *>(b + self.o_vwap)
        L.close = <double *>(b + self.o_close)
        L.high = <double *>(b + self.o_high)
        L.low = <double *>(b + self.o_low)
        L.open = <double *>(b + self.o_open)
        L.vc = <double *>(b + self.o_vc)
        L.ps = <double *>(b + self.o_ps)
        L.pc = <double *>(b + self.o_pc)
        L.va = <float *>(b + self.o_va)
        L.pa = <float *>(b + self.o_pa)
        L.fmax = <int32_t *>(b + self.o_fmax)
        L.fmin = <int32_t *>(b + self.o_fmin)
        L.hslot = <uint16_t *>(b + self.o_hslot)
        L.lslot = <uint16_t *>(b + self.o_lslot)
        L.fslot = <uint16_t *>(b + self.o_fslot)

    # -- slot arithmetic (valid for seconds in (T - depth, T]) -------------------------
    cdef inline int64_t _sec(self, Py_ssize_t slot) noexcept nogil:
        cdef int64_t d = self._Tslot - slot
        if d < 0:
            d += self.D
        return self._T - d

    cdef inline Py_ssize_t _slot(self, int64_t s) noexcept nogil:
        return slot_of(s, self._T, self._Tslot, self.D)

    # -- clock -------------------------------------------------------------------------
    cdef void _advance(self, int64_t T1) noexcept nogil:
        """Move the clock to T1: every window of every row drops the seconds that leave it.

        One pass over the rows (row-major: a row's block is read once for all windows);
        only rows with a bar in some evicted second are visited: the presence rows of
        the evicted seconds are OR-ed 8 rows at a time first (sequential reads).  A
        window the jump empties entirely is cleared in its own pass.  The steady step
        of 3 windows (each loses exactly one second or nothing) runs ``ff_evict3_pass`` (C, in
        engine_lanes.h) instead, which leaves the rows it cannot do (and the sums it
        found cancelled) marked in the same row mask for the general code below."""
        cdef int64_t T0 = self._T, gap, e, x, W
        cdef Py_ssize_t k, r, c, j, nw = self.NP >> 3, NP = self.NP, D = self.D, K = self.K
        cdef Py_ssize_t npend = 0
        cdef bint single = True, any_evict = False, fast = True
        cdef uint64_t word
        cdef uint64_t *acc = self.rowmask
        cdef const uint8_t *pres
        cdef ff_rings rings
        if T1 <= T0:
            return
        if T0 < 0:
            self._T = T1
            self._Tslot = T1 % self.D
            return
        gap = T1 - T0
        for k in range(K):
            W = self.win[k]
            self.eone[k] = -1
            if gap >= W:
                fast = False
                self.elo[k] = 1
                self.ehi[k] = 0          # nothing to evict one by one: cleared here
                for r in range(self.N):
                    if (<int64_t *>(self.blk + r * self.RB + self.o_cnt))[k] != 0:
                        self._clear_rw(k, r)
            else:
                e = T0 - W + 1
                if e < 0:
                    e = 0
                self.elo[k] = e
                self.ehi[k] = T1 - W
                self.eslot[k] = e % D
                if self.ehi[k] >= e:
                    any_evict = True
                    if self.ehi[k] > e:
                        single = False
                    self.eone[k] = self.eslot[k]
                # else: the window loses nothing (eone[k] == -1), which the pass takes too
        if any_evict and single and fast and K == 3:
            # the one-second step: every window loses one second or nothing (the fill
            # phase); the pass in C does the rows it can and leaves the others marked in acc
            rings.qmax = <const void *>self.qmax
            rings.qmin = <const void *>self.qmin
            rings.C = self.C
            rings.mask = self.mask
            c = 0                                   # the shortest window
            for k in range(1, K):
                if self.win[k] < self.win[c]:
                    c = k
            if ff_evict3_pass(self.blk, self.RB, nw, self.present, <void *>self.svp,
                              <void *>self.soh, NP, D, self.eone, c, &rings,
                              self.pend, acc, CANCEL, <const uint8_t *>(acc + nw),
                              &self.n_ev3_part) == 0:
                any_evict = False                   # no row left for the code below
        elif any_evict:
            fast = False
            memset(acc, 0, nw * 8)
            for k in range(K):
                e = self.elo[k]
                while e <= self.ehi[k]:
                    pres = self.present + (e % D) * NP
                    for c in range(nw):
                        acc[c] |= ff_load8(pres + (c << 3))
                    e += 1
        if any_evict:
            for c in range(nw):
                word = acc[c]
                if word:
                    acc[c] = 0                      # all zero again for the next step
                while word:
                    j = ff_ctz64(word) & ~7             # the row's byte
                    r = (c << 3) + (j >> 3)
                    x = (word >> j) & 0xFF
                    word &= ~(<uint64_t>0xFF << j)
                    if x & 0x80:
                        # the fast pass evicted the row; these lanes' sums cancelled
                        self._recompute_lanes(r, 0, x & 0x7F)
                    else:
                        npend = self._evict_row(r, single, npend)
            self._resolve_fronts(npend)
        if gap >= D:
            memset(self.present, 0, D * NP)
        else:
            x = T0 + 1
            while x <= T1:
                memset(self.present + (x % D) * NP, 0, NP)
                x += 1
        self._T = T1
        self._Tslot = T1 % self.D

    cdef Py_ssize_t _evict_row(self, Py_ssize_t r, bint defer, Py_ssize_t npend) noexcept nogil:
        """Evict row r's seconds elo[k]..ehi[k] from each window k (T not yet moved).

        With ``defer`` (one second per window), a front that leaves is only noted in
        ``pend``: its new slot and value are read in ``_resolve_fronts`` after the pass,
        whose loads are independent of each other (the CPU overlaps those misses)."""
        cdef Py_ssize_t NP = self.NP, D = self.D, k, eslot, k0 = 0, k1
        cdef Lanes L
        cdef int64_t e
        cdef uint64_t clear, canc
        if defer:
            # one second per window (eone[k], -1: none): the lane kernel, 64 lanes at a time
            while k0 < self.K:
                k1 = k0 + 64 if k0 + 64 < self.K else self.K
                canc = ff_evict_step(self.blk + r * self.RB, self.K, k0, k1, r, self.present,
                                     self.svp, self.soh, NP, D, self.eone, self.pend, &npend,
                                     &clear, CANCEL)
                if canc:
                    self._recompute_lanes(r, k0, canc)
                while clear:
                    k = k0 + ff_ctz64(clear)
                    clear &= clear - 1
                    self._clear_rw(k, r)
                k0 = k1
            return npend
        self._lanes(r, &L)
        for k in range(self.K):
            e = self.elo[k]
            eslot = self.eslot[k]
            while e <= self.ehi[k]:
                if self.present[eslot * NP + r]:
                    npend = self._evict_one(r, k, &L, e, eslot, defer, npend)
                e += 1
                eslot += 1
                if eslot == D:
                    eslot = 0
        return npend

    cdef void _recompute_lanes(self, Py_ssize_t r, Py_ssize_t k0, uint64_t canc) noexcept nogil:
        """Exact sums of row r's windows k0 + bit of ``canc`` (a bit per window) after an
        eviction step whose sums cancelled heavily, and their vwap."""
        cdef Lanes L
        cdef Py_ssize_t k
        self._lanes(r, &L)
        while canc:
            k = k0 + ff_ctz64(canc)
            canc &= canc - 1
            self._recompute(k, r, self.elo[k], self._T)
            L.vwap[k] = vwap_of(&L, k)

    cdef inline Py_ssize_t _evict_one(self, Py_ssize_t r, Py_ssize_t k, Lanes *L,
                                      int64_t e, Py_ssize_t eslot, bint defer,
                                      Py_ssize_t npend) noexcept nogil:
        """Second e (held by row r) leaves window k."""
        cdef Py_ssize_t NP = self.NP, sl
        cdef const VP *vp
        cdef double v, pv, vol
        if L.cnt[k] <= 1:
            self._clear_rw(k, r)
            return npend
        L.cnt[k] -= 1
        vp = &self.svp[eslot * NP + r]
        v = vp.v
        pv = vp.pv
        vadd(&L.vol[k], &L.vc[k], -v)
        nadd(&L.ps[k], &L.pc[k], -pv)
        L.va[k] += <float>fabs(v)
        L.pa[k] += <float>fabs(pv)
        if cancelled(L, k):
            self._recompute(k, r, e, self._T)
        vol = L.vol[k]
        L.vwap[k] = (L.ps[k] + L.pc[k]) / vol if vol != 0.0 else NAN
        if L.hslot[k] == eslot:
            L.fmax[k] += 1
            if defer:
                self.pend[npend] = (r << 16) | (k << 1)
                npend += 1
            else:
                L.hslot[k] = self.qmax[r * self.C + (L.fmax[k] & self.mask)].slot
                L.high[k] = self.soh[L.hslot[k] * NP + r].h
        if L.lslot[k] == eslot:
            L.fmin[k] += 1
            if defer:
                self.pend[npend] = (r << 16) | (k << 1) | 1
                npend += 1
            else:
                L.lslot[k] = self.qmin[r * self.C + (L.fmin[k] & self.mask)].slot
                L.low[k] = self.soh[L.lslot[k] * NP + r].l
        if L.fslot[k] == eslot:
            # the earliest bar left: scan forward to the next held second (it exists:
            # count > 0); amortized O(1), the scan never passes a second twice
            sl = eslot + 1
            if sl == self.D:
                sl = 0
            while not self.present[sl * NP + r]:
                sl += 1
                if sl == self.D:
                    sl = 0
            L.fslot[k] = <uint16_t>sl
            L.open[k] = self.soh[sl * NP + r].o
        return npend

    cdef void _resolve_fronts(self, Py_ssize_t npend) noexcept nogil:
        """The deferred front moves of one eviction pass: new front slots, then values.
        An entry of ``pend`` is ``row << 16 | window << 1 | (1 for the min deque)``."""
        cdef Py_ssize_t j, r, k, NP = self.NP, C = self.C
        cdef int64_t x
        cdef Lanes L
        for j in range(npend):
            x = self.pend[j]
            r = x >> 16
            k = (x & 0xFFFF) >> 1
            self._lanes(r, &L)
            if x & 1:
                L.lslot[k] = self.qmin[r * C + (L.fmin[k] & self.mask)].slot
            else:
                L.hslot[k] = self.qmax[r * C + (L.fmax[k] & self.mask)].slot
        for j in range(npend):
            x = self.pend[j]
            r = x >> 16
            k = (x & 0xFFFF) >> 1
            self._lanes(r, &L)
            if x & 1:
                L.low[k] = self.soh[L.lslot[k] * NP + r].l
            else:
                L.high[k] = self.soh[L.hslot[k] * NP + r].h

    cdef void _clear_rw(self, Py_ssize_t k, Py_ssize_t r) noexcept nogil:
        """Window k of row r holds no bar."""
        cdef Lanes L
        self._lanes(r, &L)
        L.vc[k] = L.ps[k] = L.pc[k] = 0.0
        L.va[k] = L.pa[k] = 0.0
        L.fmax[k] = self.tails[2 * r]
        L.fmin[k] = self.tails[2 * r + 1]
        L.open[k] = L.high[k] = L.low[k] = L.close[k] = L.vwap[k] = NAN
        L.vol[k] = 0.0
        L.cnt[k] = 0

    cdef void _recompute(self, Py_ssize_t k, Py_ssize_t r, int64_t lo, int64_t hi) noexcept nogil:
        """Exact (Neumaier, from the store) sums of row r, window k, over seconds (lo, hi]."""
        cdef Lanes L
        cdef int64_t x = lo + 1
        cdef Py_ssize_t sl, off
        cdef const VP *vp
        self._lanes(r, &L)
        if x < 0:
            x = 0
        L.vol[k] = L.vc[k] = L.ps[k] = L.pc[k] = 0.0
        L.va[k] = L.pa[k] = 0.0
        self.n_recomputes += 1
        if x > hi:
            return
        sl = x % self.D
        while x <= hi:
            off = sl * self.NP + r
            if self.present[off]:
                vp = &self.svp[off]
                vadd(&L.vol[k], &L.vc[k], vp.v)
                nadd(&L.ps[k], &L.pc[k], vp.pv)
                L.va[k] += fabs(vp.v)
                L.pa[k] += fabs(vp.pv)
            x += 1
            sl += 1
            if sl == self.D:
                sl = 0

    cdef void _refresh_out(self, Py_ssize_t k, Py_ssize_t r) noexcept nogil:
        """Window k's outputs of row r, from its state and the store."""
        cdef Lanes L
        cdef Py_ssize_t NP = self.NP
        self._lanes(r, &L)
        if L.cnt[k] == 0:
            self._clear_rw(k, r)
            return
        L.open[k] = self.soh[L.fslot[k] * NP + r].o
        L.high[k] = self.soh[L.hslot[k] * NP + r].h
        L.low[k] = self.soh[L.lslot[k] * NP + r].l
        L.close[k] = self.soh[self._slot(self._head(r).last) * NP + r].c
        L.vwap[k] = vwap_of(&L, k)

    # -- monotonic deques ----------------------------------------------------------------
    cdef void _rebase(self, Py_ssize_t r, bint ismax) noexcept nogil:
        """Keep row r's deque indices in int32: move them back by a multiple of C."""
        cdef int32_t *tl = self.tails + 2 * r
        cdef Lanes L
        cdef int which = 0 if ismax else 1
        cdef int64_t R = (<int64_t>tl[which] - self.C) & ~(<int64_t>self.mask)
        cdef Py_ssize_t k
        self._lanes(r, &L)
        tl[which] = <int32_t>(tl[which] - R)
        for k in range(self.K):
            if ismax:
                L.fmax[k] = <int32_t>(L.fmax[k] - R)
            else:
                L.fmin[k] = <int32_t>(L.fmin[k] - R)

    cdef void _dq_insert(self, Py_ssize_t r, int64_t s, uint16_t slot, double val,
                         bint ismax) noexcept nogil:
        """Insert second s (value already in the store) into row r's max/min deque.

        Handles out-of-order inserts and replacements whose value did not get worse (a
        worse replacement of a deque member needs ``_dq_worse``; in-order pushes are
        ``_dq_push``).  Deque invariant: seconds ascending, values strictly decreasing
        (max) / increasing (min).
        """
        cdef DQE *q = (self.qmax if ismax else self.qmin) + r * self.C
        cdef uint32_t fval = dkey(val)
        cdef const OHLC *col = self.soh + r
        cdef int which = 0 if ismax else 1
        cdef RowHead *hd = self._head(r)
        cdef int32_t *tl = self.tails + 2 * r
        cdef Lanes L
        cdef Py_ssize_t NP = self.NP, mask = self.mask, k
        cdef int64_t head, t = tl[which], i = t, p, delta, j, fk, T = self._T
        self._lanes(r, &L)
        head = L.fmax[self.kmax] if ismax else L.fmin[self.kmax]
        while i > head and self._sec(q[(i - 1) & mask].slot) > s:
            i -= 1
        if i < t and dom_by_hint(val, fval, q, i & mask, col, NP, ismax):
            return          # a later bar is at least as extreme: s never becomes a front
        p = i
        while p > head and dom_hint(val, fval, q, (p - 1) & mask, col, NP, ismax):
            p -= 1
        delta = p + 1 - i
        if delta > 0:
            j = t
            while j > i:
                q[j & mask] = q[(j - 1) & mask]
                j -= 1
        elif delta < 0:
            j = i
            while j < t:
                q[(j + delta) & mask] = q[j & mask]
                j += 1
        q[p & mask].slot = slot
        q[p & mask].key = fval
        if i == t:
            hd.back[which] = val
        hd.back2[which] = NAN
        t += delta
        tl[which] = <int32_t>t
        for k in range(self.K):
            # the front of window k is either unchanged (same entry, maybe shifted) or s
            fk = L.fmax[k] if ismax else L.fmin[k]
            if s > T - self.win[k]:
                if fk >= p:
                    fk = p
            elif fk >= i:
                fk += delta
            if ismax:
                L.fmax[k] = <int32_t>fk
                if fk == p:
                    L.hslot[k] = slot
            else:
                L.fmin[k] = <int32_t>fk
                if fk == p:
                    L.lslot[k] = slot
        if t >= REBASE_AT:
            self._rebase(r, ismax)

    cdef inline void _dq_push(self, Py_ssize_t r, int64_t s, uint16_t slot, double val,
                              bint ismax) noexcept nogil:
        """In-order case of ``_dq_insert`` (s >= every second held for the row)."""
        cdef DQE *q = (self.qmax if ismax else self.qmin) + r * self.C
        cdef const OHLC *col = self.soh + r
        cdef int which = 0 if ismax else 1
        cdef RowHead *hd = self._head(r)
        cdef Lanes L
        cdef Py_ssize_t NP = self.NP, mask = self.mask, k
        cdef int64_t head, p, T = self._T
        self._lanes(r, &L)
        head = L.fmax[self.kmax] if ismax else L.fmin[self.kmax]
        p = push_back(q, hd, self.tails + 2 * r, which, self.tails[2 * r + which], head, val,
                      dkey(val), slot, mask, col, NP, ismax)
        for k in range(self.K):
            if ismax:
                if s <= T - self.win[k]:
                    L.fmax[k] = <int32_t>(p + 1)   # window k holds no bar (all are older)
                elif L.fmax[k] >= p:
                    L.fmax[k] = <int32_t>p
                    L.hslot[k] = slot
            else:
                if s <= T - self.win[k]:
                    L.fmin[k] = <int32_t>(p + 1)
                elif L.fmin[k] >= p:
                    L.fmin[k] = <int32_t>p
                    L.lslot[k] = slot
        if p + 1 >= REBASE_AT:
            self._rebase(r, ismax)

    cdef bint _dq_contains(self, Py_ssize_t r, int64_t s, bint ismax) noexcept nogil:
        cdef DQE *q = (self.qmax if ismax else self.qmin) + r * self.C
        cdef Lanes L
        cdef int64_t head, i = self.tails[2 * r + (0 if ismax else 1)]
        cdef int64_t x
        self._lanes(r, &L)
        head = L.fmax[self.kmax] if ismax else L.fmin[self.kmax]
        while i > head:
            x = self._sec(q[(i - 1) & self.mask].slot)
            if x == s:
                return True
            if x < s:
                return False
            i -= 1
        return False

    cdef void _dq_worse(self, Py_ssize_t r, int64_t s, bint ismax) noexcept nogil:
        """A deque member s was corrected to a less extreme value: rescan the seconds
        it may have dominated, i.e. those after its deque predecessor (O(that gap)).

        Bars before the predecessor keep their membership (the predecessor is more
        extreme than s ever was), bars after s too (membership depends on later bars
        only).  The bars in (predecessor, s] that beat everything after them form the
        new run that replaces s's single entry.
        """
        cdef DQE *q = (self.qmax if ismax else self.qmin) + r * self.C
        cdef DQE *tmp = self.tmpq
        cdef const OHLC *col = self.soh + r
        cdef int which = 0 if ismax else 1
        cdef RowHead *hd = self._head(r)
        cdef int32_t *tl = self.tails + 2 * r
        cdef Lanes L
        cdef Py_ssize_t NP = self.NP, mask = self.mask, k, sl, m = 0, a
        cdef int64_t head, t = tl[which], js = t - 1, lo, x, delta, j, fk, T = self._T
        cdef double best, v
        cdef bint have_best
        self._lanes(r, &L)
        head = L.fmax[self.kmax] if ismax else L.fmin[self.kmax]
        self.n_rebuilds += 1
        while self._sec(q[js & mask].slot) != s:       # s is a member: found before head
            js -= 1
        if js > head:
            lo = self._sec(q[(js - 1) & mask].slot)
        else:
            lo = T - self.Wmax
            if lo < -1:
                lo = -1
        have_best = js + 1 < t
        best = hl(col, NP, q[(js + 1) & mask].slot, ismax) if have_best else 0.0
        # backward scan over (lo, s]: keep the bars strictly more extreme than all later
        x = s
        sl = self._slot(s)
        while x > lo:
            if self.present[sl * NP + r]:
                v = hl(col, NP, sl, ismax)
                if not have_best or not dominates(best, v, ismax):
                    tmp[m].slot = <uint16_t>sl
                    tmp[m].key = dkey(v)
                    m += 1
                    best = v
                    have_best = True
            x -= 1
            sl -= 1
            if sl < 0:
                sl += self.D
        # splice: the run (reversed in tmp) replaces the entry at js
        delta = m - 1
        if delta > 0:
            j = t - 1
            while j > js:
                q[(j + delta) & mask] = q[j & mask]
                j -= 1
        elif delta < 0:
            j = js + 1
            while j < t:
                q[(j + delta) & mask] = q[j & mask]
                j += 1
        for a in range(m):
            q[(js + a) & mask] = tmp[m - 1 - a]
        t += delta
        tl[which] = <int32_t>t
        hd.back2[which] = NAN
        for k in range(self.K):
            fk = L.fmax[k] if ismax else L.fmin[k]
            if fk == js:
                # window k started at s: it now starts at the first run entry inside it
                a = 0
                while a < m and self._sec(q[(js + a) & mask].slot) <= T - self.win[k]:
                    a += 1
                fk = js + a
            elif fk > js:
                fk += delta
            if ismax:
                L.fmax[k] = <int32_t>fk
                if fk < t:
                    L.hslot[k] = q[fk & mask].slot
            else:
                L.fmin[k] = <int32_t>fk
                if fk < t:
                    L.lslot[k] = q[fk & mask].slot
        head = L.fmax[self.kmax] if ismax else L.fmin[self.kmax]
        if t > head:
            hd.back[which] = hl(col, NP, q[(t - 1) & mask].slot, ismax)
        if t >= REBASE_AT:
            self._rebase(r, ismax)

    # -- one accepted bar (clock already at >= s, s > T - depth) ---------------------------
    cdef inline void _apply_new(self, Py_ssize_t r, RowHead *hd,
                                uint16_t slot, double o, double h, double l, double c,
                                double v, double pv) noexcept nogil:
        """A new latest bar of row r inside every window (bar already stored).

        Both deques and all windows in one pass over the row block: each deque pushes
        at its back (the head's exact copy of the back decides the first pop without
        reading the ring), then each window takes the bar: count, sums, close, and the
        new entry as its max/min front when it popped everything up to that front."""
        cdef DQE *qx = self.qmax + r * self.C
        cdef DQE *qn = self.qmin + r * self.C
        cdef const OHLC *col = self.soh + r
        cdef Py_ssize_t mask = self.mask, NP = self.NP, K = self.K
        cdef char *b = <char *>hd         # the row block starts with its head
        cdef int64_t hx = (<int32_t *>(b + self.o_fmax))[self.kmax]
        cdef int64_t hn = (<int32_t *>(b + self.o_fmin))[self.kmax]
        cdef int32_t *tl = self.tails + 2 * r
        cdef int64_t px = tl[0], pn = tl[1]
        cdef uint32_t fh = dkey(h), fl = dkey(l)
        px = push_back(qx, hd, tl, 0, px, hx, h, fh, slot, mask, col, NP, True)
        pn = push_back(qn, hd, tl, 1, pn, hn, l, fl, slot, mask, col, NP, False)
        ff_add_new(b, K, slot, o, h, l, c, v, pv, px, pn)
        if pv < 0.0 or px + 1 >= REBASE_AT or pn + 1 >= REBASE_AT:
            self._new_rare(r, px, pn, pv)

    cdef bint _apply(self, Py_ssize_t r, int64_t s, double o, double h, double l, double c,
                     double v, double pv) noexcept nogil:
        cdef Py_ssize_t K = self.K, k
        cdef Py_ssize_t slot = self._slot(s), off = slot * self.NP + r
        cdef RowHead *hd = self._head(r)
        cdef Lanes L
        cdef int64_t last = hd.last
        # a second after the row's latest bar cannot be held yet: no presence read
        cdef bint replaced = s <= last and self.present[off], rebuilt = False
        cdef bint inorder = s >= last
        cdef double oldv = 0.0, oldpv = 0.0, oldh = 0.0, oldl = 0.0
        cdef int64_t T = self._T, cnt
        cdef VP *vp = &self.svp[off]
        cdef OHLC *b = &self.soh[off]
        if replaced:
            oldv = vp.v
            oldpv = vp.pv
            oldh = b.h
            oldl = b.l
            self.n_replaced += 1
        else:
            self.n_inserted += 1
        b.o = o
        b.h = h
        b.l = l
        b.c = c
        vp.v = v
        vp.pv = pv
        self.present[off] = 1
        if s > last:
            hd.last = s
            if s > T - self.Wmin:
                # the common case: a new latest bar, inside every window
                self._apply_new(r, hd, <uint16_t>slot, o, h, l, c, v, pv)
                return False
        if s <= T - self.Wmax:
            return replaced      # held (history) but in no window
        self._lanes(r, &L)
        if inorder and not replaced:
            # the common case (a new latest bar): no removal, no rebuild, s is the close
            self._dq_push(r, s, <uint16_t>slot, h, True)
            self._dq_push(r, s, <uint16_t>slot, l, False)
            for k in range(K):
                if s <= T - self.win[k]:
                    continue
                cnt = L.cnt[k] + 1
                L.cnt[k] = cnt
                vadd(&L.vol[k], &L.vc[k], v)
                nadd(&L.ps[k], &L.pc[k], pv)
                L.va[k] += fabs(v)
                L.pa[k] += fabs(pv)
                if pv < 0.0 and cancelled(&L, k):      # volume >= 0: only pv can cancel on add
                    self._recompute(k, r, T - self.win[k], T)
                if cnt == 1:
                    L.fslot[k] = <uint16_t>slot
                    L.open[k] = o
                L.vwap[k] = vwap_of(&L, k)
                L.close[k] = c
                if L.hslot[k] == slot:
                    L.high[k] = h
                if L.lslot[k] == slot:
                    L.low[k] = l
            return False
        # max deque
        if replaced and h < oldh:
            if self._dq_contains(r, s, True):
                self._dq_worse(r, s, True)
                rebuilt = True
        elif inorder:
            self._dq_push(r, s, <uint16_t>slot, h, True)
        else:
            self._dq_insert(r, s, <uint16_t>slot, h, True)
        # min deque
        if replaced and l > oldl:
            if self._dq_contains(r, s, False):
                self._dq_worse(r, s, False)
                rebuilt = True
        elif inorder:
            self._dq_push(r, s, <uint16_t>slot, l, False)
        else:
            self._dq_insert(r, s, <uint16_t>slot, l, False)
        for k in range(K):
            if s <= T - self.win[k]:
                continue
            if replaced:
                vadd(&L.vol[k], &L.vc[k], -oldv)
                nadd(&L.ps[k], &L.pc[k], -oldpv)
                vadd(&L.vol[k], &L.vc[k], v)
                nadd(&L.ps[k], &L.pc[k], pv)
                L.va[k] += fabs(oldv) + fabs(v)
                L.pa[k] += fabs(oldpv) + fabs(pv)
                if cancelled(&L, k):
                    self._recompute(k, r, T - self.win[k], T)
            else:
                L.cnt[k] += 1
                vadd(&L.vol[k], &L.vc[k], v)
                nadd(&L.ps[k], &L.pc[k], pv)
                L.va[k] += fabs(v)
                L.pa[k] += fabs(pv)
                if pv < 0.0 and cancelled(&L, k):      # volume >= 0: only pv can cancel on add
                    self._recompute(k, r, T - self.win[k], T)
                if L.cnt[k] == 1 or s < self._sec(L.fslot[k]):
                    L.fslot[k] = <uint16_t>slot
            L.vwap[k] = vwap_of(&L, k)
            if rebuilt:
                self._refresh_out(k, r)
                continue
            if L.fslot[k] == slot:
                L.open[k] = o
            if hd.last == s:
                L.close[k] = c
            if L.hslot[k] == slot:
                L.high[k] = h
            if L.lslot[k] == slot:
                L.low[k] = l
        return replaced

    cdef void _new_rare(self, Py_ssize_t r, int64_t px, int64_t pn, double pv) noexcept nogil:
        """The rare work after a new latest bar's add kernel (``_apply_new``, and
        ``ff_new3`` in ``_upsert_run``): pv < 0 (a window's pv sum may cancel) or a deque
        tail reached REBASE_AT."""
        cdef Lanes L
        cdef Py_ssize_t k
        if pv < 0.0:                # volume >= 0: only pv can cancel on an add
            self._lanes(r, &L)
            for k in range(self.K):
                if cancelled(&L, k):
                    self._recompute(k, r, self._T - self.win[k], self._T)
                    L.vwap[k] = vwap_of(&L, k)
        if px + 1 >= REBASE_AT:
            self._rebase(r, True)
        if pn + 1 >= REBASE_AT:
            self._rebase(r, False)

    cdef Py_ssize_t _upsert_c(self, const char *rp, Py_ssize_t rs, const char *sp, Py_ssize_t ss,
                              const char *op, Py_ssize_t os_, const char *hp, Py_ssize_t hs,
                              const char *lp, Py_ssize_t ls, const char *cp, Py_ssize_t cs,
                              const char *vp, Py_ssize_t vs_, const char *pp, Py_ssize_t ps_,
                              Py_ssize_t n, double now) noexcept nogil:
        """Apply n bars from 8 strided columns: contiguous ones in place, any other in
        chunks copied to contiguous scratch (``_upsert_run`` reads contiguous arrays)."""
        cdef Py_ssize_t i, j, m, accepted = 0
        cdef int64_t cr[128]
        cdef int64_t cs_[128]
        cdef double co[128]
        cdef double ch[128]
        cdef double cl[128]
        cdef double cc[128]
        cdef double cv[128]
        cdef double cp_[128]
        self.epoch += 1
        if self.epoch == 0:
            for i in range(self.N):
                self.marks[i] = 0
            self.epoch = 1
        self.nlast = 0
        if (rs == 8 and ss == 8 and os_ == 8 and hs == 8 and ls == 8 and cs == 8
                and vs_ == 8 and ps_ == 8):
            return self._upsert_run(<const int64_t *>rp, <const int64_t *>sp,
                                    <const double *>op, <const double *>hp, <const double *>lp,
                                    <const double *>cp, <const double *>vp, <const double *>pp,
                                    n, now)
        i = 0
        while i < n:
            m = n - i if n - i < 128 else 128
            for j in range(m):
                cr[j] = (<const int64_t *>(rp + (i + j) * rs))[0]
                cs_[j] = (<const int64_t *>(sp + (i + j) * ss))[0]
                co[j] = (<const double *>(op + (i + j) * os_))[0]
                ch[j] = (<const double *>(hp + (i + j) * hs))[0]
                cl[j] = (<const double *>(lp + (i + j) * ls))[0]
                cc[j] = (<const double *>(cp + (i + j) * cs))[0]
                cv[j] = (<const double *>(vp + (i + j) * vs_))[0]
                cp_[j] = (<const double *>(pp + (i + j) * ps_))[0]
            accepted += self._upsert_run(cr, cs_, co, ch, cl, cc, cv, cp_, m, now)
            i += m
        return accepted

    cdef Py_ssize_t _upsert_run(self, const int64_t *R, const int64_t *S, const double *O,
                                const double *H, const double *Lo, const double *Cl,
                                const double *V, const double *P, Py_ssize_t n,
                                double now) noexcept nogil:
        """The bars of contiguous arrays, in order (``upsert``'s loop).  The engine's
        fields it needs are locals (a store through a char * would make the C compiler
        load every self field again); the clock is reloaded after each ``_advance``.
        Each bar prefetches what the bar PF_FAR ahead touches: the hot lines of its row
        block (4 for 3 windows; the high/low fields after them are written only when a
        front moves, ``open`` and ``fslot`` rarely) and its store cells (not the presence
        byte: its line is shared by 64 rows, and prefetching it measured 2-5% slower at
        12,000 rows); PF_NEAR ahead, its row
        head again and the ring lines of each deque's back entry and of the entry two
        before it (the tails are a compact array, so their address is known without
        waiting for the row block; issued 16 bars ahead, these ring prefetches stalled
        the loop, ~20% of its perf samples, and measured 0.87-0.92x slower at 12,000
        rows than 4 ahead).  A new latest bar inside every window of a 3-window
        engine (the steady state) takes ``ff_new3``, any other bar ``_apply``."""
        cdef Py_ssize_t N = self.N, NP = self.NP, RB = self.RB, Cq = self.C, kmax = self.kmax
        cdef Py_ssize_t hot = self.o_high, nlast = self.nlast, i, j, b
        cdef int64_t mask = self.mask, T = self._T, Tslot = self._Tslot, D = self.D
        cdef int64_t Wmin = self.Wmin, r, s, last, slot, off, px, pn
        cdef int64_t accepted = 0, n_ins = 0
        cdef double skew = self.max_future_skew
        cdef double o, h, l, c, v, pv
        cdef char *blk = self.blk
        cdef char *p
        cdef VP *svp = self.svp
        cdef OHLC *soh = self.soh
        cdef uint8_t *present = self.present
        cdef DQE *qmax = self.qmax
        cdef DQE *qmin = self.qmin
        cdef int32_t *tails = self.tails
        cdef int32_t *tl
        cdef uint32_t *marks = self.marks
        cdef int64_t *lrows = self.lrows
        cdef uint32_t epoch = self.epoch
        cdef bint k3 = self.K == 3
        # a bar after this second is inside every window (never, unless 3 windows: the
        # fast path is for K = 3 only)
        cdef int64_t Tw = T - Wmin if k3 else INT64_MAX
        cdef int fate
        for i in range(-PF_FAR, n):
            j = i + PF_FAR
            if j < n:
                r = R[j]
                if <uint64_t>r < <uint64_t>N:
                    p = blk + r * RB
                    if k3:
                        FF_PREFETCH(p)
                        FF_PREFETCH(p + 64)
                        FF_PREFETCH(p + 128)
                        FF_PREFETCH(p + 192)
                    else:
                        b = 0
                        while b < hot:
                            FF_PREFETCH(p + b)
                            b += 64
                    # its tails entry (read by the near stage: an L1 miss when the
                    # tails outgrow L1, ~12,000 rows)
                    FF_PREFETCH(tails + 2 * r)
                    s = S[j]
                    if s <= T and s > T - D:
                        off = slot_of(s, T, Tslot, D) * NP + r
                        FF_PREFETCH(svp + off)
                        FF_PREFETCH(soh + off)
            if i < 0:
                continue
            j = i + PF_NEAR
            if j < n:
                r = R[j]
                if <uint64_t>r < <uint64_t>N:
                    FF_PREFETCH(blk + r * RB)
                    FF_PREFETCH(qmax + r * Cq + ((tails[2 * r] - 1) & mask))
                    FF_PREFETCH(qmin + r * Cq + ((tails[2 * r + 1] - 1) & mask))
                    FF_PREFETCH(qmax + r * Cq + ((tails[2 * r] - 3) & mask))
                    FF_PREFETCH(qmin + r * Cq + ((tails[2 * r + 1] - 3) & mask))
            r = R[i]
            s = S[i]
            o = O[i]
            h = H[i]
            l = Lo[i]
            c = Cl[i]
            v = V[i]
            pv = P[i]
            if <uint64_t>r >= <uint64_t>N:
                self.n_bad_row += 1
                continue
            fate = bar_fate(s, o, h, l, c, v, pv, T, D, skew, now)
            if fate != BAR_ACCEPTED:
                if fate == BAR_INVALID:
                    self.n_invalid += 1
                elif fate == BAR_FUTURE:
                    self.n_future += 1
                else:
                    self.n_stale += 1
                continue
            if s > T:
                self._advance(s)
                T = self._T
                Tslot = self._Tslot
                Tw = T - Wmin if k3 else INT64_MAX
            p = blk + r * RB
            last = (<RowHead *>p).last
            if s > last and s > Tw:
                # the steady state: a new latest bar inside every window (_apply's
                # first case, then _apply_new, for 3 windows)
                slot = slot_of(s, T, Tslot, D)
                off = slot * NP + r
                soh[off].o = o
                soh[off].h = h
                soh[off].l = l
                soh[off].c = c
                svp[off].v = v
                svp[off].pv = pv
                present[off] = 1
                (<RowHead *>p).last = s
                n_ins += 1
                if ff_new3(p, tails + 2 * r, qmax + r * Cq, qmin + r * Cq, mask, soh + r, NP,
                           kmax, <uint16_t>slot, o, h, l, c, v, pv, REBASE_AT, &px, &pn):
                    self._new_rare(r, px, pn, pv)
            else:
                self._apply(r, s, o, h, l, c, v, pv)
            accepted += 1
            if marks[r] != epoch:
                marks[r] = epoch
                lrows[nlast] = r
                nlast += 1
        self.nlast = nlast
        self.n_inserted += n_ins
        self.n_accepted += accepted
        return accepted

    # -- public Cython API (fastfeed/_ext/engine.pxd) --------------------------------------
    cdef bint upsert_bar(self, int64_t row, int64_t second, double open, double high,
                         double low, double close, double volume, double pv,
                         double now) noexcept nogil:
        """One bar, as ``upsert`` of a batch of one (last_rows: this row or none)."""
        return self._upsert_c(<const char *>&row, 8, <const char *>&second, 8,
                              <const char *>&open, 8, <const char *>&high, 8,
                              <const char *>&low, 8, <const char *>&close, 8,
                              <const char *>&volume, 8, <const char *>&pv, 8, 1, now) == 1

    cdef Py_ssize_t upsert_bars(self, Py_ssize_t n, const int64_t *rows, const int64_t *seconds,
                                const double *open, const double *high, const double *low,
                                const double *close, const double *volume, const double *pv,
                                double now) noexcept nogil:
        """``upsert`` of ``n`` bars from contiguous C arrays; returns the number accepted."""
        if n <= 0:
            n = 0
        return self._upsert_c(<const char *>rows, 8, <const char *>seconds, 8,
                              <const char *>open, 8, <const char *>high, 8,
                              <const char *>low, 8, <const char *>close, 8,
                              <const char *>volume, 8, <const char *>pv, 8, n, now)

    cdef void advance(self, int64_t second) noexcept nogil:
        """``advance_to``: move the clock forward (no-op if ``second`` is not later)."""
        self._advance(second)

    cdef int64_t clock(self) noexcept nogil:
        """``T``: the largest second accepted or advanced to; -1 before any."""
        return self._T

    cdef Py_ssize_t window_index(self, int64_t W) noexcept nogil:
        """Index ``k`` of window ``W`` (its position in ``windows``), -1 if none."""
        cdef Py_ssize_t k
        for k in range(self.K):
            if self.win[k] == W:
                return k
        return -1

    cdef WindowRow read(self, Py_ssize_t k, Py_ssize_t row) noexcept nogil:
        """Window ``k`` of ``row`` as of ``T`` (``count == -1``: no such window or row)."""
        cdef WindowRow w
        cdef Lanes L
        if k < 0 or k >= self.K or row < 0 or row >= self.N:
            w.open = w.high = w.low = w.close = w.volume = w.vwap = NAN
            w.count = -1
            return w
        self._lanes(row, &L)
        w.open = L.open[k]
        w.high = L.high[k]
        w.low = L.low[k]
        w.close = L.close[k]
        w.volume = L.vol[k]
        w.vwap = L.vwap[k]
        w.count = L.cnt[k]
        return w

    cdef void read_rows(self, Py_ssize_t k, const int64_t *rows, Py_ssize_t n,
                        WindowRow *out) noexcept nogil:
        """``out[i] = read(k, rows[i])`` for ``i < n``, prefetching the rows ahead."""
        cdef Py_ssize_t i, r, b
        cdef const char *p
        for i in range(n):
            if i + PF_FAR < n and 0 <= k < self.K:
                r = rows[i + PF_FAR]
                if 0 <= r < self.N:
                    # window k's outputs: lane k of the count..close arrays (hot), of
                    # high and low (warm) and of open (cold)
                    p = self.blk + r * self.RB + 8 * k
                    b = self.o_cnt
                    while b <= self.o_close:
                        FF_PREFETCH(p + b)
                        b += 8 * self.K
                    FF_PREFETCH(p + self.o_high)
                    FF_PREFETCH(p + self.o_low)
                    FF_PREFETCH(p + self.o_open)
            out[i] = self.read(k, rows[i])

    cdef bint row_idle(self, Py_ssize_t row) noexcept nogil:
        """``row`` has had no bar for longer than ``depth`` (or never had one): it holds
        no bar and its windows are empty (False for a row outside the universe)."""
        if row < 0 or row >= self.N:
            return False
        return self._head(row).last <= self._T - self.D

    cdef Py_ssize_t find_idle_row(self, Py_ssize_t start, Py_ssize_t n, int64_t T) noexcept nogil:
        """The first row of ``0 .. n-1``, searching from ``start`` (wrapping), that is idle
        once the clock is at ``T`` (>= ``clock()``): its latest bar ``<= T - depth``; -1 if none."""
        cdef Py_ssize_t i, r
        if n > self.N:
            n = self.N
        if n <= 0:
            return -1
        if start < 0 or start >= n:
            start = 0
        r = start
        for i in range(n):
            if self._head(r).last <= T - self.D:
                return r
            r += 1
            if r == n:
                r = 0
        return -1

    cdef void clear_row(self, Py_ssize_t row) noexcept nogil:
        """Forget every bar of ``row``: the row is as a row that never had one."""
        cdef Py_ssize_t k, d
        cdef RowHead *hd
        if row < 0 or row >= self.N:
            return
        for d in range(self.D):
            self.present[d * self.NP + row] = 0
        hd = self._head(row)
        hd.last = -1
        hd.back2[0] = hd.back2[1] = NAN
        for k in range(self.K):
            self._clear_rw(k, row)

    # -- Python API ------------------------------------------------------------------------
    def upsert(self, rows, seconds, open, high, low, close, volume, pv,
               Py_ssize_t n=-1, double now=NAN):
        """Apply the first ``n`` bars (all if ``n < 0``), in order; return how many were accepted.

        ``rows``/``seconds`` are 1-D int64 arrays, the rest 1-D float64 arrays (any
        stride).  ``now`` is the receive time in epoch seconds (NaN: no future check).
        The GIL is released while the bars are applied.  Bad bars never raise: they are
        counted (see :attr:`counters`); wrong argument types or lengths do raise.
        """
        cdef Py_buffer b[8]
        cdef const char *ptr[8]
        cdef Py_ssize_t st[8]
        cdef Py_ssize_t ln[8]
        cdef bint held[8]
        cdef int j
        cdef Py_ssize_t m, accepted
        names = ("rows", "seconds", "open", "high", "low", "close", "volume", "pv")
        for j in range(8):
            held[j] = False
        try:
            # one call each (no argument tuple: steady-state upserts allocate nothing)
            _arg(rows, True, "rows", &b[0], &held[0], &ptr[0], &st[0], &ln[0])
            _arg(seconds, True, "seconds", &b[1], &held[1], &ptr[1], &st[1], &ln[1])
            _arg(open, False, "open", &b[2], &held[2], &ptr[2], &st[2], &ln[2])
            _arg(high, False, "high", &b[3], &held[3], &ptr[3], &st[3], &ln[3])
            _arg(low, False, "low", &b[4], &held[4], &ptr[4], &st[4], &ln[4])
            _arg(close, False, "close", &b[5], &held[5], &ptr[5], &st[5], &ln[5])
            _arg(volume, False, "volume", &b[6], &held[6], &ptr[6], &st[6], &ln[6])
            _arg(pv, False, "pv", &b[7], &held[7], &ptr[7], &st[7], &ln[7])
            m = ln[0]
            for j in range(1, 8):
                if n < 0 and ln[j] != m:
                    raise ValueError(f"array lengths differ: rows has {m}, {names[j]} has {ln[j]}")
                if ln[j] < m:
                    m = ln[j]
            if n < 0:
                n = m
            elif n > m:
                raise ValueError(f"n={n} exceeds the array length {m}")
            with nogil:
                accepted = self._upsert_c(ptr[0], st[0], ptr[1], st[1], ptr[2], st[2],
                                          ptr[3], st[3], ptr[4], st[4], ptr[5], st[5],
                                          ptr[6], st[6], ptr[7], st[7], n, now)
        finally:
            for j in range(8):
                if held[j]:
                    PyBuffer_Release(&b[j])
        return accepted

    def accepts(self, seconds, open, high, low, close, volume, double now=NAN, pv=None,
                bint in_order=False):
        """Would each bar be accepted now (one at a time, against the current clock)?

        The engine's own rule (:func:`bar_fate` in ``engine.pxd``): valid numbers (see
        ``docs/ENGINE.md``), not in the future of ``now`` (NaN: no check), not stale.
        ``pv`` defaults to 0 (not checked).  With ``in_order`` the bars are judged as one
        ``upsert`` of them (rows in range) would: each accepted bar moves the clock for
        the bars after it.  Returns a bool array; changes nothing.
        """
        cdef const int64_t[:] sec = np.ascontiguousarray(seconds, dtype=np.int64)
        cdef const double[:] o = np.ascontiguousarray(open, dtype=np.float64)
        cdef const double[:] h = np.ascontiguousarray(high, dtype=np.float64)
        cdef const double[:] l = np.ascontiguousarray(low, dtype=np.float64)
        cdef const double[:] c = np.ascontiguousarray(close, dtype=np.float64)
        cdef const double[:] v = np.ascontiguousarray(volume, dtype=np.float64)
        cdef Py_ssize_t n = sec.shape[0], i
        pva = np.zeros(n) if pv is None else np.ascontiguousarray(pv, dtype=np.float64)
        cdef const double[:] p = pva
        if not (o.shape[0] == h.shape[0] == l.shape[0] == c.shape[0] == v.shape[0] == p.shape[0] == n):
            raise ValueError("array lengths differ")
        out = np.empty(n, dtype=np.bool_)
        cdef uint8_t[:] res = out.view(np.uint8)
        cdef int64_t T = self._T
        for i in range(n):
            res[i] = bar_fate(sec[i], o[i], h[i], l[i], c[i], v[i], p[i], T, self.D,
                              self.max_future_skew, now) == BAR_ACCEPTED
            if in_order and res[i] and sec[i] > T:
                T = sec[i]
        return out

    def forget_row(self, Py_ssize_t row):
        """Forget every bar of ``row`` (its windows become empty), to reuse the row."""
        if not 0 <= row < self.N:
            raise IndexError(f"row {row} outside [0, {self.N})")
        self.clear_row(row)

    def is_idle(self, Py_ssize_t row):
        """``row`` has had no bar for longer than ``depth`` (it holds none)."""
        return bool(self.row_idle(row))

    def advance_to(self, second):
        """Move the clock ``T`` forward to ``second`` without a bar (no-op if not later)."""
        cdef int64_t s = operator.index(second)
        with nogil:
            self._advance(s)

    @property
    def T(self):
        """The clock: largest second seen; -1 before any bar."""
        return self._T

    def window(self, W):
        """Zero-copy read-only views of window ``W``; valid until the next update."""
        try:
            return self._views[W]
        except KeyError:
            raise KeyError(f"no window {W!r}; windows are {self.windows}") from None

    def window_copy(self, W):
        """A consistent private copy of window ``W``."""
        return self.window(W).copy()

    def history(self, Py_ssize_t row, seconds=None):
        """Bars held for ``row`` with second in ``(T - seconds, T]`` (default: the depth).

        Returns ``{"second": int64[], "open", "high", "low", "close", "volume", "pv": float64[]}``,
        ascending by second.
        """
        if not 0 <= row < self.N:
            raise IndexError(f"row {row} outside [0, {self.N})")
        span = self.D if seconds is None else min(int(seconds), self.D)
        secs = []
        if self._T >= 0 and span > 0:
            for x in range(max(self._T - span + 1, 0), self._T + 1):
                if self.present[self._slot(x) * self.NP + row]:
                    secs.append(x)
        slots = np.array([self._slot(x) for x in secs], dtype=np.int64)
        vp, ohlc = self._store_views
        out = {"second": np.array(secs, dtype=np.int64)}
        for name, a, j in (("open", ohlc, 0), ("high", ohlc, 1), ("low", ohlc, 2),
                           ("close", ohlc, 3), ("volume", vp, 0), ("pv", vp, 1)):
            out[name] = a[slots, row, j].copy() if len(secs) else np.empty(0)
        return out

    @property
    def counters(self):
        """Counts of bars by fate since construction."""
        return {
            "accepted": self.n_accepted,
            "inserted": self.n_inserted,
            "replaced": self.n_replaced,
            "stale_dropped": self.n_stale,
            "future_rejected": self.n_future,
            "invalid_rejected": self.n_invalid,
            "bad_row": self.n_bad_row,
        }

    @property
    def internals(self):
        """Diagnostics: slow-path counts (deque rebuilds, exact sum recomputes)."""
        return {"deque_rebuilds": self.n_rebuilds, "sum_recomputes": self.n_recomputes,
                "evict3_fill_rows": self.n_ev3_part}

    def last_rows(self):
        """Unique rows that got an accepted bar in the last upsert (a view, first-seen order)."""
        return self._lrows_arr[:self.nlast]

    def __repr__(self):
        return (f"Engine(capacity={self.N}, windows={self.windows}, depth={self.D}, "
                f"max_future_skew={self.max_future_skew}, T={self._T})")
