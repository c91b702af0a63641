# cython: language_level=3
"""Bar store and rolling OHLCV/VWAP kernels: :class:`Engine`.

Semantics (DESIGN.md "Rolling semantics"; details in ``docs/ENGINE.md``):

* ``T`` is the largest second accepted (or passed to :meth:`Engine.advance_to`).
* A bar is rejected, in this order, as ``bad_row`` (row outside ``[0, capacity)``),
  ``invalid_rejected`` (non-finite number, ``volume < 0``, a price <= 0, open or close
  outside ``[low, high]``, negative second), ``future_rejected`` (``second > now +
  max_future_skew``, unless ``now`` is NaN), ``stale_dropped`` (``second <= T -
  depth``) — the rule is :func:`bar_fate` in ``engine.pxd``.  Otherwise it is accepted
  and replaces (``replaced``) or adds (``inserted``) the bar of its ``(row, second)``.
* Window ``W`` as of ``T`` holds the bars with ``T - W < second <= T``.

Layout: the bar store is slot-major ``[depth, capacity]`` (slot = second % depth), so a
burst for one second writes contiguous memory and evicting a second reads one
contiguous row of each column.  Per (row, window): Neumaier-compensated sums with an
exact recompute on heavy cancellation; one max and one min monotonic deque per row
(shared by all windows: a bar's membership of the deque depends only on later bars,
so the deque of a shorter window is a suffix of the longest window's deque — each
window keeps its own front index into it).
"""
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_STRIDES, PyBUF_FORMAT
from libc.math cimport isfinite, isnan, fabs, NAN
from libc.float cimport FLT_MAX
from libc.string cimport memset
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t

import math
import operator

import numpy as np
cimport cython
cimport numpy as cnp

cnp.import_array()

cdef extern from *:
    """
    #define FF_PREFETCH(p) __builtin_prefetch((const void *)(p), 1, 3)
    #include <sys/mman.h>
    #include <unistd.h>
    #ifndef MADV_POPULATE_WRITE
    #define MADV_POPULATE_WRITE 23
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
    """
    void FF_PREFETCH(const void *p) noexcept nogil
    int ff_prefault(char *p, size_t n) noexcept nogil

# upsert prefetches the memory of the bar PF_FAR ahead (its row's records, outputs and
# store cells) and the deque backs of the bar PF_NEAR ahead (their address needs the
# row record fetched earlier): a burst's rows come in random order, so without this
# every bar waits on ~20 cache misses in turn.
cdef enum:
    PF_FAR = 16
    PF_NEAR = 6

__all__ = ["Engine", "WindowView"]

# |sum| < CANCEL * (sum of |x| added and removed since the last recompute) triggers an
# exact recompute of that (row, window) sum from the store.
cdef double CANCEL = 1e-6
cdef Py_ssize_t MAX_DEPTH = 65536      # slots are stored as uint16 in the deques


cdef inline void nadd(double *s, double *c, double x) noexcept nogil:
    """Neumaier: add x to the running sum s with compensation c."""
    cdef double t = s[0] + x
    if fabs(s[0]) >= fabs(x):
        c[0] += (s[0] - t) + x
    else:
        c[0] += (x - t) + s[0]
    s[0] = t


cdef inline bint dominates(double later, double earlier, bint ismax) noexcept nogil:
    """A later bar with value ``later`` makes an earlier bar irrelevant (ties: keep latest)."""
    if ismax:
        return later >= earlier
    return later <= earlier


cdef inline float f32(double x) noexcept nogil:
    """Nearest float32 (monotone in x; clamped so the conversion is always defined)."""
    if x > FLT_MAX:
        return FLT_MAX
    if x < -FLT_MAX:
        return -FLT_MAX
    return <float>x


cdef inline bint dom_hint(double later, float flater, const DQE *q,
                          Py_ssize_t at, const double *col, Py_ssize_t N, Py_ssize_t r,
                          bint ismax) noexcept nogil:
    """dominates(later, value of deque entry ``at``), deciding on the float32 copy of
    the entry when it differs (rounding is monotone) and reading the store only on ties."""
    cdef float fe = q[at].v
    if flater != fe:
        return (flater > fe) if ismax else (flater < fe)
    return dominates(later, col[q[at].slot * N + r], ismax)


cdef inline bint dom_by_hint(double earlier, float fearlier, const DQE *q,
                             Py_ssize_t at, const double *col, Py_ssize_t N, Py_ssize_t r,
                             bint ismax) noexcept nogil:
    """dominates(value of deque entry ``at``, earlier): the entry is a later bar."""
    cdef float fl = q[at].v
    if fl != fearlier:
        return (fl > fearlier) if ismax else (fl < fearlier)
    return dominates(col[q[at].slot * N + r], earlier, ismax)


cdef inline double vwap_of(WState *ws) noexcept nogil:
    cdef double vol = ws.vs + ws.vc
    if vol != 0.0:
        return (ws.ps + ws.pc) / vol
    return NAN


cdef inline bint cancelled(WState *ws) noexcept nogil:
    return (fabs(ws.vs + ws.vc) < CANCEL * ws.va) or (fabs(ws.ps + ws.pc) < CANCEL * ws.pa)


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


cdef void *_own(list keep, cnp.ndarray a) except NULL:
    """Keep ``a`` alive (in ``keep``) and return its data pointer."""
    if not a.flags.c_contiguous or a.size == 0:
        raise ValueError("internal: array must be non-empty and C-contiguous")
    keep.append(a)
    return cnp.PyArray_DATA(a)


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

    Memory: ``capacity * (49 * depth + 12 * C + 120 * K + 88)`` bytes, where
    ``C`` = next power of two >= max(windows) and ``K`` = number of windows (see
    ``docs/ENGINE.md``); 931 MB (888 MiB) for the default 16384 x 900 x 3 windows.
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
        self.depth = self.D = depth
        self.windows = wins
        self.K = len(wins)
        self.kmax = wins.index(max(wins))
        self.Wmax = max(wins)
        self.max_future_skew = skew
        self.C = _next_pow2(self.Wmax)
        self.mask = self.C - 1
        self._T = -1
        self._Tslot = 0
        self.epoch = 0
        self.nlast = 0
        self._keep = []

        N, D, K = self.N, self.D, self.K
        win = np.array(wins, dtype=np.int64)
        self.win = <int64_t *>_own(self._keep, win)
        # store: np.zeros maps lazily, so RSS grows only as seconds are filled
        self.so = <double *>_own(self._keep, np.zeros((D, N)))
        self.sh = <double *>_own(self._keep, np.zeros((D, N)))
        self.sl = <double *>_own(self._keep, np.zeros((D, N)))
        self.sc = <double *>_own(self._keep, np.zeros((D, N)))
        self.sv = <double *>_own(self._keep, np.zeros((D, N)))
        self.spv = <double *>_own(self._keep, np.zeros((D, N)))
        self.present = <uint8_t *>_own(self._keep, np.zeros((D, N), dtype=np.uint8))
        assert sizeof(RState) == 64
        self.rs = <RState *>_own(self._keep, np.zeros(N * sizeof(RState), dtype=np.uint8))
        assert sizeof(DQE) == 6
        self.qmax = <DQE *>_own(self._keep, np.zeros(N * self.C * sizeof(DQE), dtype=np.uint8))
        self.qmin = <DQE *>_own(self._keep, np.zeros(N * self.C * sizeof(DQE), dtype=np.uint8))
        assert sizeof(WState) == 64
        raw = np.zeros(N * K * sizeof(WState) + 64, dtype=np.uint8)
        self.st = <WState *>_own(self._keep, raw)
        self.st = <WState *>((<size_t>self.st + 63) & ~(<size_t>63))
        self.pend = <int64_t *>_own(self._keep, np.zeros(2 * N, dtype=np.int64))
        self.tmpq = <DQE *>_own(self._keep, np.zeros(self.C * sizeof(DQE), dtype=np.uint8))
        lrows = np.zeros(N, dtype=np.int64)
        self.lrows = <int64_t *>_own(self._keep, lrows)
        self._lrows_arr = lrows
        outs = {}
        for name in ("open", "high", "low", "close", "vwap"):
            outs[name] = np.full((N, K), np.nan)
        outs["volume"] = np.zeros((N, K))
        outs["count"] = np.zeros((N, K), dtype=np.int64)
        self.oo = <double *>_own(self._keep, outs["open"])
        self.oh = <double *>_own(self._keep, outs["high"])
        self.ol = <double *>_own(self._keep, outs["low"])
        self.oc = <double *>_own(self._keep, outs["close"])
        self.ov = <double *>_own(self._keep, outs["volume"])
        self.ow = <double *>_own(self._keep, outs["vwap"])
        self.ocnt = <int64_t *>_own(self._keep, outs["count"])
        self._views = {}
        for k in range(K):
            cols = []
            for name in ("open", "high", "low", "close", "volume", "vwap", "count"):
                v = outs[name][:, k]
                v.flags.writeable = False
                cols.append(v)
            self._views[wins[k]] = WindowView(wins[k], *cols)
        for r in range(N):
            self.rs[r].last = -1
        # prefault: make all of the memory resident now (see docs/ENGINE.md, Memory).  The
        # kernel zeroes a page on its first write; without this, the first ``depth``
        # seconds pay it inside upsert (~0.9 ms per second of a 12k-row market here, in
        # 2 MiB steps of ~3 ms each with transparent huge pages: burst latency spikes).
        self.prefault = bool(prefault)
        if self.prefault:
            for j in range(len(self._keep)):
                arr = self._keep[j]
                ptr = <char *>cnp.PyArray_DATA(arr)
                nb = <size_t>cnp.PyArray_NBYTES(arr)
                with nogil:
                    ff_prefault(ptr, nb)

    def __init__(self, capacity=16384, windows=(60, 300, 900), depth=None, max_future_skew=5.0,
                 prefault=True):
        # everything happens in __cinit__; this gives the class a visible signature
        pass

    # -- slot arithmetic (valid for seconds in (T - depth, T]) -------------------------
    cdef int64_t _sec(self, Py_ssize_t slot) noexcept nogil:
        cdef int64_t d = self._Tslot - slot
        if d < 0:
            d += self.D
        return self._T - d

    cdef Py_ssize_t _slot(self, int64_t s) noexcept nogil:
        cdef int64_t x = self._Tslot - (self._T - s)
        if x < 0:
            x += self.D
        return <Py_ssize_t>x

    # -- clock -------------------------------------------------------------------------
    cdef void _advance(self, int64_t T1) noexcept nogil:
        cdef int64_t T0 = self._T, gap, e, x, W
        cdef Py_ssize_t k, r
        if T1 <= T0:
            return
        if T0 < 0:
            self._T = T1
            self._Tslot = T1 % self.D
            return
        gap = T1 - T0
        for k in range(self.K):
            W = self.win[k]
            if gap >= W:
                for r in range(self.N):
                    if self.ocnt[r * self.K + k] != 0:
                        self._clear_rw(k, r)
            else:
                e = T0 - W + 1
                if e < 0:
                    e = 0
                while e <= T1 - W:
                    self._evict(k, e)
                    e += 1
        if gap >= self.D:
            memset(self.present, 0, self.D * self.N)
        else:
            x = T0 + 1
            while x <= T1:
                memset(self.present + (x % self.D) * self.N, 0, self.N)
                x += 1
        self._T = T1
        self._Tslot = T1 % self.D

    cdef void _clear_rw(self, Py_ssize_t k, Py_ssize_t r) noexcept nogil:
        cdef WState *ws = &self.st[r * self.K + k]
        cdef Py_ssize_t kr = r * self.K + k
        ws.vs = ws.vc = ws.ps = ws.pc = 0.0
        ws.va = ws.pa = 0.0
        ws.fmax = self.rs[r].tail[0]
        ws.fmin = self.rs[r].tail[1]
        self.oo[kr] = self.oh[kr] = self.ol[kr] = self.oc[kr] = self.ow[kr] = NAN
        self.ov[kr] = 0.0
        self.ocnt[kr] = 0

    cdef void _evict(self, Py_ssize_t k, int64_t e) noexcept nogil:
        """Second ``e`` leaves window ``k`` for every row (T not yet moved)."""
        cdef Py_ssize_t N = self.N, K = self.K, r, kr, C = self.C
        cdef Py_ssize_t eslot = e % self.D, base = eslot * N, sl
        cdef const uint8_t *pres = self.present + base
        cdef WState *ws
        cdef int64_t cnt, x
        cdef int64_t *pend = self.pend
        cdef Py_ssize_t npend = 0, j
        cdef double v, pv
        for r in range(N):
            if not pres[r]:
                continue
            kr = r * K + k
            ws = &self.st[kr]
            cnt = self.ocnt[kr] - 1
            if cnt <= 0:
                self._clear_rw(k, r)
                continue
            self.ocnt[kr] = cnt
            v = self.sv[base + r]
            pv = self.spv[base + r]
            nadd(&ws.vs, &ws.vc, -v)
            nadd(&ws.ps, &ws.pc, -pv)
            ws.va += fabs(v)
            ws.pa += fabs(pv)
            if cancelled(ws):
                self._recompute(k, r, e, self._T)
            self.ov[kr] = ws.vs + ws.vc
            self.ow[kr] = vwap_of(ws)
            # the front left: the next deque entry is the new front.  Its slot and value
            # live at random addresses, so they are read in the passes below, whose
            # loads are independent of each other (the CPU overlaps the misses).
            if ws.hslot == eslot:
                ws.fmax += 1
                pend[npend] = kr * 2
                npend += 1
            if ws.lslot == eslot:
                ws.fmin += 1
                pend[npend] = kr * 2 + 1
                npend += 1
            if ws.fslot == eslot:
                # the earliest bar left: scan forward to the next held second (it exists:
                # count > 0); amortized O(1), the scan never passes a second twice
                sl = eslot + 1
                if sl == self.D:
                    sl = 0
                while not self.present[sl * N + r]:
                    sl += 1
                    if sl == self.D:
                        sl = 0
                ws.fslot = <uint16_t>sl
                self.oo[kr] = self.so[sl * N + r]
        for j in range(npend):
            kr = pend[j] >> 1
            r = kr // K
            ws = &self.st[kr]
            if pend[j] & 1:
                ws.lslot = self.qmin[r * C + (ws.fmin & self.mask)].slot
            else:
                ws.hslot = self.qmax[r * C + (ws.fmax & self.mask)].slot
        for j in range(npend):
            kr = pend[j] >> 1
            r = kr // K
            ws = &self.st[kr]
            if pend[j] & 1:
                self.ol[kr] = self.sl[ws.lslot * N + r]
            else:
                self.oh[kr] = self.sh[ws.hslot * N + r]

    cdef void _recompute(self, Py_ssize_t k, Py_ssize_t r, int64_t lo, int64_t hi) noexcept nogil:
        """Exact (Neumaier, from the store) sums of row r, window k, over seconds (lo, hi]."""
        cdef WState *ws = &self.st[r * self.K + k]
        cdef int64_t x = lo + 1
        cdef Py_ssize_t sl, off
        if x < 0:
            x = 0
        ws.vs = ws.vc = ws.ps = ws.pc = 0.0
        ws.va = ws.pa = 0.0
        self.n_recomputes += 1
        if x > hi:
            return
        sl = x % self.D
        while x <= hi:
            off = sl * self.N + r
            if self.present[off]:
                nadd(&ws.vs, &ws.vc, self.sv[off])
                nadd(&ws.ps, &ws.pc, self.spv[off])
                ws.va += fabs(self.sv[off])
                ws.pa += fabs(self.spv[off])
            x += 1
            sl += 1
            if sl == self.D:
                sl = 0

    cdef void _refresh_out(self, Py_ssize_t k, Py_ssize_t r) noexcept nogil:
        cdef WState *ws = &self.st[r * self.K + k]
        cdef Py_ssize_t kr = r * self.K + k, N = self.N
        if self.ocnt[kr] == 0:
            self._clear_rw(k, r)
            return
        self.oo[kr] = self.so[ws.fslot * N + r]
        self.oh[kr] = self.sh[ws.hslot * N + r]
        self.ol[kr] = self.sl[ws.lslot * N + r]
        self.oc[kr] = self.sc[self._slot(self.rs[r].last) * N + r]
        self.ov[kr] = ws.vs + ws.vc
        self.ow[kr] = vwap_of(ws)

    # -- monotonic deques ----------------------------------------------------------------
    cdef void _dq_insert(self, Py_ssize_t r, int64_t s, uint16_t slot, double val,
                         bint ismax) noexcept nogil:
        """Insert second s (value already in the store) into row r's max/min deque.

        Handles out-of-order inserts and replacements whose value did not get worse (a
        worse replacement of a deque member needs ``_dq_worse``; in-order pushes are
        ``_dq_push``).  Deque invariant: seconds ascending, values strictly decreasing
        (max) / increasing (min).
        """
        cdef DQE *q = (self.qmax if ismax else self.qmin) + r * self.C
        cdef float fval = f32(val)
        cdef const double *col = self.sh if ismax else self.sl
        cdef int which = 0 if ismax else 1
        cdef RState *row = &self.rs[r]
        cdef WState *ws = self.st + r * self.K
        cdef Py_ssize_t N = self.N, mask = self.mask, k
        cdef int64_t head = ws[self.kmax].fmax if ismax else ws[self.kmax].fmin
        cdef int64_t t = row.tail[which], i = t, p, delta, j, fk, T = self._T
        while i > head and self._sec(q[(i - 1) & mask].slot) > s:
            i -= 1
        if i < t and dom_by_hint(val, fval, q, i & mask, col, N, r, ismax):
            return          # a later bar is at least as extreme: s never becomes a front
        p = i
        while p > head and dom_hint(val, fval, q, (p - 1) & mask, col, N, r, ismax):
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
        q[p & mask].v = fval
        if i == t:
            row.back[which] = val
        row.b2ok[which] = 0
        t += delta
        row.tail[which] = t
        for k in range(self.K):
            # the front of window k is either unchanged (same entry, maybe shifted) or s
            fk = ws[k].fmax if ismax else ws[k].fmin
            if s > T - self.win[k]:
                if fk >= p:
                    fk = p
            elif fk >= i:
                fk += delta
            if ismax:
                ws[k].fmax = fk
                if fk == p:
                    ws[k].hslot = slot
            else:
                ws[k].fmin = fk
                if fk == p:
                    ws[k].lslot = slot

    cdef void _dq_push(self, Py_ssize_t r, int64_t s, uint16_t slot, double val,
                              bint ismax) noexcept nogil:
        """In-order case of ``_dq_insert`` (s >= every second held for the row)."""
        cdef DQE *q = (self.qmax if ismax else self.qmin) + r * self.C
        cdef const double *col = self.sh if ismax else self.sl
        cdef int which = 0 if ismax else 1
        cdef RState *row = &self.rs[r]
        cdef WState *ws = self.st + r * self.K
        cdef Py_ssize_t N = self.N, mask = self.mask, k
        cdef int64_t head = ws[self.kmax].fmax if ismax else ws[self.kmax].fmin
        cdef int64_t t = row.tail[which], p = t, T = self._T
        cdef float fval = f32(val)
        if p > head and dominates(val, row.back[which], ismax):
            p -= 1
            # the entry before the back is mirrored too (back2): a push that pops one
            # entry reads neither the deque nor the store (the deque line is a cache miss)
            if p > head and (dominates(val, row.back2[which], ismax) if row.b2ok[which]
                             else dom_hint(val, fval, q, (p - 1) & mask, col, N, r, ismax)):
                p -= 1
                while p > head and dom_hint(val, fval, q, (p - 1) & mask, col, N, r, ismax):
                    p -= 1
                row.b2ok[which] = 0         # the new entry before the back: not read exactly
            # popped one: the entry before the back is the same as before (back2 unchanged)
        else:
            # nothing popped: the old back is now the entry before the back
            row.back2[which] = row.back[which]
            row.b2ok[which] = 1
        q[p & mask].v = fval
        q[p & mask].slot = slot
        row.back[which] = val
        row.tail[which] = p + 1
        for k in range(self.K):
            if ismax:
                if s <= T - self.win[k]:
                    ws[k].fmax = p + 1          # window k holds no bar (all are older)
                elif ws[k].fmax >= p:
                    ws[k].fmax = p
                    ws[k].hslot = slot
            else:
                if s <= T - self.win[k]:
                    ws[k].fmin = p + 1
                elif ws[k].fmin >= p:
                    ws[k].fmin = p
                    ws[k].lslot = slot

    cdef bint _dq_contains(self, Py_ssize_t r, int64_t s, bint ismax) noexcept nogil:
        cdef DQE *q = (self.qmax if ismax else self.qmin) + r * self.C
        cdef WState *ws = self.st + r * self.K
        cdef int64_t head = ws[self.kmax].fmax if ismax else ws[self.kmax].fmin
        cdef int64_t i = self.rs[r].tail[0 if ismax else 1]
        cdef int64_t x
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
        cdef const double *col = self.sh if ismax else self.sl
        cdef int which = 0 if ismax else 1
        cdef RState *row = &self.rs[r]
        cdef WState *ws = self.st + r * self.K
        cdef Py_ssize_t N = self.N, mask = self.mask, k, sl, m = 0, a
        cdef int64_t head = ws[self.kmax].fmax if ismax else ws[self.kmax].fmin
        cdef int64_t t = row.tail[which], js = t - 1, lo, x, delta, j, fk, T = self._T
        cdef double best, v
        cdef bint have_best
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
        best = col[q[(js + 1) & mask].slot * N + r] if have_best else 0.0
        # backward scan over (lo, s]: keep the bars strictly more extreme than all later
        x = s
        sl = self._slot(s)
        while x > lo:
            if self.present[sl * N + r]:
                v = col[sl * N + r]
                if not have_best or not dominates(best, v, ismax):
                    tmp[m].slot = <uint16_t>sl
                    tmp[m].v = f32(v)
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
        row.tail[which] = t
        row.b2ok[which] = 0
        for k in range(self.K):
            fk = ws[k].fmax if ismax else ws[k].fmin
            if fk == js:
                # window k started at s: it now starts at the first run entry inside it
                a = 0
                while a < m and self._sec(q[(js + a) & mask].slot) <= T - self.win[k]:
                    a += 1
                fk = js + a
            elif fk > js:
                fk += delta
            if ismax:
                ws[k].fmax = fk
                if fk < t:
                    ws[k].hslot = q[fk & mask].slot
            else:
                ws[k].fmin = fk
                if fk < t:
                    ws[k].lslot = q[fk & mask].slot
        head = ws[self.kmax].fmax if ismax else ws[self.kmax].fmin
        if t > head:
            row.back[which] = col[q[(t - 1) & mask].slot * N + r]

    # -- one accepted bar (clock already at >= s, s > T - depth) ---------------------------
    cdef bint _apply(self, Py_ssize_t r, int64_t s, double o, double h, double l, double c,
                     double v, double pv) noexcept nogil:
        cdef Py_ssize_t N = self.N, K = self.K, k, kr
        cdef Py_ssize_t slot = self._slot(s), off = slot * N + r
        cdef bint replaced = self.present[off], rebuilt = False, inorder
        cdef double oldv = 0.0, oldpv = 0.0, oldh = 0.0, oldl = 0.0
        cdef int64_t T = self._T, cnt
        cdef WState *ws
        if replaced:
            oldv = self.sv[off]
            oldpv = self.spv[off]
            oldh = self.sh[off]
            oldl = self.sl[off]
            self.n_replaced += 1
        else:
            self.n_inserted += 1
        self.so[off] = o
        self.sh[off] = h
        self.sl[off] = l
        self.sc[off] = c
        self.sv[off] = v
        self.spv[off] = pv
        self.present[off] = 1
        inorder = s >= self.rs[r].last
        if s > self.rs[r].last:
            self.rs[r].last = s
        if s <= T - self.Wmax:
            return replaced      # held (history) but in no window
        if inorder and not replaced:
            # the common case (a new latest bar): no removal, no rebuild, s is the close
            self._dq_push(r, s, <uint16_t>slot, h, True)
            self._dq_push(r, s, <uint16_t>slot, l, False)
            for k in range(K):
                if s <= T - self.win[k]:
                    continue
                kr = r * K + k
                ws = &self.st[kr]
                cnt = self.ocnt[kr] + 1
                self.ocnt[kr] = cnt
                nadd(&ws.vs, &ws.vc, v)
                nadd(&ws.ps, &ws.pc, pv)
                ws.va += fabs(v)
                ws.pa += fabs(pv)
                if pv < 0.0 and cancelled(ws):      # volume >= 0: only pv can cancel on add
                    self._recompute(k, r, T - self.win[k], T)
                if cnt == 1:
                    ws.fslot = <uint16_t>slot
                    self.oo[kr] = o
                self.ov[kr] = ws.vs + ws.vc
                self.ow[kr] = vwap_of(ws)
                self.oc[kr] = c
                if ws.hslot == slot:
                    self.oh[kr] = h
                if ws.lslot == slot:
                    self.ol[kr] = l
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
            kr = r * K + k
            ws = &self.st[kr]
            if replaced:
                nadd(&ws.vs, &ws.vc, -oldv)
                nadd(&ws.ps, &ws.pc, -oldpv)
                nadd(&ws.vs, &ws.vc, v)
                nadd(&ws.ps, &ws.pc, pv)
                ws.va += fabs(oldv) + fabs(v)
                ws.pa += fabs(oldpv) + fabs(pv)
                if cancelled(ws):
                    self._recompute(k, r, T - self.win[k], T)
            else:
                self.ocnt[kr] += 1
                nadd(&ws.vs, &ws.vc, v)
                nadd(&ws.ps, &ws.pc, pv)
                ws.va += fabs(v)
                ws.pa += fabs(pv)
                if pv < 0.0 and cancelled(ws):      # volume >= 0: only pv can cancel on add
                    self._recompute(k, r, T - self.win[k], T)
                if self.ocnt[kr] == 1 or s < self._sec(ws.fslot):
                    ws.fslot = <uint16_t>slot
            self.ov[kr] = ws.vs + ws.vc
            self.ow[kr] = vwap_of(ws)
            if rebuilt:
                self._refresh_out(k, r)
                continue
            if ws.fslot == slot:
                self.oo[kr] = o
            if self.rs[r].last == s:
                self.oc[kr] = c
            if ws.hslot == slot:
                self.oh[kr] = h
            if ws.lslot == slot:
                self.ol[kr] = l
        return replaced

    cdef void _prefetch_far(self, int64_t r, int64_t s) noexcept nogil:
        cdef Py_ssize_t kr = r * self.K, off, b
        cdef const char *w = <const char *>(self.st + kr)
        FF_PREFETCH(&self.rs[r])
        b = 0
        while b < self.K * <Py_ssize_t>sizeof(WState):
            FF_PREFETCH(w + b)
            b += 64
        FF_PREFETCH(self.oo + kr)
        FF_PREFETCH(self.oh + kr)
        FF_PREFETCH(self.ol + kr)
        FF_PREFETCH(self.oc + kr)
        FF_PREFETCH(self.ov + kr)
        FF_PREFETCH(self.ow + kr)
        FF_PREFETCH(self.ocnt + kr)
        if s <= self._T and s > self._T - self.D:
            off = self._slot(s) * self.N + r
            FF_PREFETCH(self.present + off)
            FF_PREFETCH(self.so + off)
            FF_PREFETCH(self.sh + off)
            FF_PREFETCH(self.sl + off)
            FF_PREFETCH(self.sc + off)
            FF_PREFETCH(self.sv + off)
            FF_PREFETCH(self.spv + off)

    cdef void _prefetch_near(self, int64_t r) noexcept nogil:
        cdef RState *row = &self.rs[r]
        cdef Py_ssize_t a = r * self.C + ((row.tail[0] - 1) & self.mask)
        cdef Py_ssize_t b = r * self.C + ((row.tail[1] - 1) & self.mask)
        FF_PREFETCH(self.qmax + a)
        FF_PREFETCH(self.qmin + b)

    cdef Py_ssize_t _upsert_c(self, const char *rp, Py_ssize_t rs, const char *sp, Py_ssize_t ss,
                              const char *op, Py_ssize_t os_, const char *hp, Py_ssize_t hs,
                              const char *lp, Py_ssize_t ls, const char *cp, Py_ssize_t cs,
                              const char *vp, Py_ssize_t vs_, const char *pp, Py_ssize_t ps_,
                              Py_ssize_t n, double now) noexcept nogil:
        cdef Py_ssize_t i, accepted = 0
        cdef int64_t r, s
        cdef double o, h, l, c, v, pv
        cdef int fate
        cdef uint32_t epoch
        self.epoch += 1
        if self.epoch == 0:
            for i in range(self.N):
                self.rs[i].mark = 0
            self.epoch = 1
        epoch = self.epoch
        self.nlast = 0
        for i in range(n):
            if i + PF_FAR < n:
                r = (<const int64_t *>(rp + (i + PF_FAR) * rs))[0]
                if r >= 0 and r < self.N:
                    self._prefetch_far(r, (<const int64_t *>(sp + (i + PF_FAR) * ss))[0])
            if i + PF_NEAR < n:
                r = (<const int64_t *>(rp + (i + PF_NEAR) * rs))[0]
                if r >= 0 and r < self.N:
                    self._prefetch_near(r)
            r = (<const int64_t *>(rp + i * rs))[0]
            s = (<const int64_t *>(sp + i * ss))[0]
            o = (<const double *>(op + i * os_))[0]
            h = (<const double *>(hp + i * hs))[0]
            l = (<const double *>(lp + i * ls))[0]
            c = (<const double *>(cp + i * cs))[0]
            v = (<const double *>(vp + i * vs_))[0]
            pv = (<const double *>(pp + i * ps_))[0]
            if r < 0 or r >= self.N:
                self.n_bad_row += 1
                continue
            fate = bar_fate(s, o, h, l, c, v, pv, self._T, self.D, self.max_future_skew, now)
            if fate != BAR_ACCEPTED:
                if fate == BAR_INVALID:
                    self.n_invalid += 1
                elif fate == BAR_FUTURE:
                    self.n_future += 1
                else:
                    self.n_stale += 1
                continue
            if s > self._T:
                self._advance(s)
            self._apply(r, s, o, h, l, c, v, pv)
            accepted += 1
            if self.rs[r].mark != epoch:
                self.rs[r].mark = epoch
                self.lrows[self.nlast] = r
                self.nlast += 1
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
        cdef Py_ssize_t kr
        if k < 0 or k >= self.K or row < 0 or row >= self.N:
            w.open = w.high = w.low = w.close = w.volume = w.vwap = NAN
            w.count = -1
            return w
        kr = row * self.K + k
        w.open = self.oo[kr]
        w.high = self.oh[kr]
        w.low = self.ol[kr]
        w.close = self.oc[kr]
        w.volume = self.ov[kr]
        w.vwap = self.ow[kr]
        w.count = self.ocnt[kr]
        return w

    cdef void read_rows(self, Py_ssize_t k, const int64_t *rows, Py_ssize_t n,
                        WindowRow *out) noexcept nogil:
        """``out[i] = read(k, rows[i])`` for ``i < n``, prefetching rows ahead."""
        cdef Py_ssize_t i, r
        for i in range(n):
            if i + PF_NEAR < n:
                r = rows[i + PF_NEAR]
                if 0 <= r < self.N and 0 <= k < self.K:
                    self._prefetch_out(k, r)
            out[i] = self.read(k, rows[i])

    cdef void _prefetch_out(self, Py_ssize_t k, Py_ssize_t r) noexcept nogil:
        cdef Py_ssize_t kr = r * self.K + k
        FF_PREFETCH(self.oo + kr)
        FF_PREFETCH(self.oh + kr)
        FF_PREFETCH(self.ol + kr)
        FF_PREFETCH(self.oc + kr)
        FF_PREFETCH(self.ov + kr)
        FF_PREFETCH(self.ow + kr)
        FF_PREFETCH(self.ocnt + kr)

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
        cdef int got = 0, j
        cdef Py_ssize_t m, accepted
        names = ("rows", "seconds", "open", "high", "low", "close", "volume", "pv")
        try:
            # one call each (no argument tuple: steady-state upserts allocate nothing)
            _getbuf(rows, &b[0], True, "rows"); got += 1
            _getbuf(seconds, &b[1], True, "seconds"); got += 1
            _getbuf(open, &b[2], False, "open"); got += 1
            _getbuf(high, &b[3], False, "high"); got += 1
            _getbuf(low, &b[4], False, "low"); got += 1
            _getbuf(close, &b[5], False, "close"); got += 1
            _getbuf(volume, &b[6], False, "volume"); got += 1
            _getbuf(pv, &b[7], False, "pv"); got += 1
            m = b[0].shape[0]
            for j in range(1, 8):
                if n < 0 and b[j].shape[0] != m:
                    raise ValueError(f"array lengths differ: rows has {m}, {names[j]} has {b[j].shape[0]}")
                if b[j].shape[0] < m:
                    m = b[j].shape[0]
            if n < 0:
                n = m
            elif n > m:
                raise ValueError(f"n={n} exceeds the array length {m}")
            with nogil:
                accepted = self._upsert_c(
                    <const char *>b[0].buf, b[0].strides[0], <const char *>b[1].buf, b[1].strides[0],
                    <const char *>b[2].buf, b[2].strides[0], <const char *>b[3].buf, b[3].strides[0],
                    <const char *>b[4].buf, b[4].strides[0], <const char *>b[5].buf, b[5].strides[0],
                    <const char *>b[6].buf, b[6].strides[0], <const char *>b[7].buf, b[7].strides[0],
                    n, now)
        finally:
            for j in range(got):
                PyBuffer_Release(&b[j])
        return accepted

    def accepts(self, seconds, open, high, low, close, volume, double now=NAN, pv=None):
        """Would each bar be accepted now (one at a time, against the current clock)?

        The engine's own rule (:func:`bar_fate` in ``engine.pxd``): valid numbers (see
        ``docs/ENGINE.md``), not in the future of ``now`` (NaN: no check), not stale.
        ``pv`` defaults to 0 (not checked).  Returns a bool array; changes nothing.
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
        for i in range(n):
            res[i] = bar_fate(sec[i], o[i], h[i], l[i], c[i], v[i], p[i], self._T, self.D,
                              self.max_future_skew, now) == BAR_ACCEPTED
        return out

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
                if self.present[self._slot(x) * self.N + row]:
                    secs.append(x)
        sec = np.array(secs, dtype=np.int64)
        out = {"second": sec}
        cols = (("open", 0), ("high", 1), ("low", 2), ("close", 3), ("volume", 4), ("pv", 5))
        store = self._keep[1:7]
        slots = np.array([self._slot(x) for x in secs], dtype=np.int64)
        for name, j in cols:
            out[name] = store[j][slots, row].copy() if len(secs) else np.empty(0)
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
        return {"deque_rebuilds": self.n_rebuilds, "sum_recomputes": self.n_recomputes}

    def last_rows(self):
        """Unique rows that got an accepted bar in the last upsert (a view, first-seen order)."""
        return self._lrows_arr[:self.nlast]

    def __repr__(self):
        return (f"Engine(capacity={self.N}, windows={self.windows}, depth={self.D}, "
                f"max_future_skew={self.max_future_skew}, T={self._T})")
