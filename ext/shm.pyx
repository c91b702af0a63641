# cython: language_level=3
"""Shared-memory segment kernels: the seqlock writer, consistent reads, wake-ups.

The byte layout is ``ext/ffshm.h`` (documented in ``docs/SHARED_MEMORY.md``); this
module is the only Python-side code that touches the segment's memory through raw
pointers.  Lifecycle (create, reclaim, attach, re-attach) lives in
``fastfeed.share``; this module is the part that must be native:

* :class:`WriterCore` — ``publish`` copies the changed rows of every window from the
  engine's views into the segment under the sequence lock (GIL released) and wakes
  sleeping readers; a heartbeat loop (run on its own thread, GIL released) beats and
  reaps the reader slots of dead processes.
* :class:`ReaderCore` — consistent copies (retried under the sequence lock), the
  stability check of zero-copy views, and ``wait`` (futex or spin-then-sleep).

Memory ordering (C11 ``__atomic`` builtins), the classic seqlock of Boehm (2012):

    writer: gen = g + 1 (relaxed); fence(release); data stores; gen = g + 2 (release)
    reader: g1 = gen (acquire); data loads; fence(acquire); g2 = gen (relaxed); ok if g1 == g2 even
"""
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE, \
    PyBUF_STRIDES, PyBUF_FORMAT
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from libc.errno cimport errno
from posix.unistd cimport getpid

import os

cdef extern from "ffshm.h":
    enum:
        FFSHM_MAGIC
        FFSHM_VERSION
        FFSHM_PAGE
        FFSHM_MAX_WINDOWS
        FFSHM_MAX_COUNTERS
        FFSHM_NAME_BYTES
        FFSHM_READER_SLOTS
        FFSHM_STATE_INIT
        FFSHM_STATE_LIVE
        FFSHM_STATE_CLOSED
        FFSHM_WAIT_UPDATE
        FFSHM_WAIT_SECOND

    ctypedef struct ff_rec:
        double open, high, low, close, volume, vwap
        int64_t count
        uint64_t updated

    ctypedef struct ff_symref:
        uint32_t offset
        uint32_t length

    ctypedef struct ff_second:
        int64_t T
        uint32_t reason
        int64_t reported, expected
        double latency_us, since_last_bar_us
        uint64_t count
        int64_t published_ns
        uint64_t info_len

    ctypedef struct ff_header:
        uint64_t magic
        uint32_t version, header_bytes
        uint64_t epoch, segment_bytes
        int64_t writer_pid
        uint32_t state, n_windows
        uint64_t capacity, depth
        uint32_t windows[16]
        char feed[32]
        uint64_t off_symrefs, off_heap, heap_bytes, off_windows, window_bytes
        uint64_t off_info, info_bytes, off_stats, stats_bytes
        uint32_t n_counters, n_reader_slots
        uint64_t heartbeat_period_ns
        uint64_t heartbeat_ns, heartbeats
        uint64_t generation
        uint32_t update_seq, second_seq
        int64_t T
        uint64_t n_symbols, publishes, rows_published
        int64_t publish_ns, publish_mono_ns
        uint64_t stats_len
        int64_t stats_ns
        ff_second second
        int64_t counters[64]
        char counter_names[64][32]

    ctypedef struct ff_reader_slot:
        int32_t pid
        uint32_t waiting
        int64_t attached_ns

    ctypedef struct ff_readers:
        int32_t update_waiters, second_waiters
        uint64_t attaches
        ff_reader_slot slots[126]

cdef extern from *:
    """
    #include <errno.h>
    #include <fcntl.h>
    #include <limits.h>
    #include <signal.h>
    #include <stdio.h>
    #include <string.h>
    #include <sys/mman.h>
    #include <sys/stat.h>
    #include <sys/syscall.h>
    #include <time.h>
    #include <unistd.h>
    #include <linux/futex.h>

    static inline uint64_t ffs_load_acq64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline uint64_t ffs_load_rlx64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline void ffs_store_rlx64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
    static inline void ffs_store_rel64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline uint32_t ffs_load_acq32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void ffs_store_rel32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline void ffs_fence_rel(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
    static inline void ffs_fence_acq(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
    static inline uint32_t ffs_inc32(uint32_t *p) { return __atomic_add_fetch(p, 1u, __ATOMIC_SEQ_CST); }
    static inline int32_t ffs_add_i32(int32_t *p, int32_t v) { return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST); }
    static inline int32_t ffs_load_i32(const int32_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
    static inline uint32_t ffs_or32(uint32_t *p, uint32_t v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
    static inline uint32_t ffs_and32(uint32_t *p, uint32_t v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }
    static inline uint32_t ffs_xchg32(uint32_t *p, uint32_t v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
    static inline int ffs_cas_i32(int32_t *p, int32_t expect, int32_t want) {
        return __atomic_compare_exchange_n(p, &expect, want, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    }
    static inline void ffs_add_u64(uint64_t *p, uint64_t v) { __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST); }

    static inline void ffs_pause(void) {
    #if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
    #elif defined(__aarch64__)
        __asm__ __volatile__("yield");
    #endif
    }

    static inline int64_t ffs_clock(clockid_t c) {
        struct timespec ts; clock_gettime(c, &ts);
        return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    }
    static inline int64_t ffs_mono_ns(void) { return ffs_clock(CLOCK_MONOTONIC); }
    static inline int64_t ffs_real_ns(void) { return ffs_clock(CLOCK_REALTIME); }

    #include <sched.h>
    /* A failed read attempt: pause; after a few, give the CPU away (the writer may be
       waiting for this very core); after many, sleep a little. */
    static inline void ffs_backoff(uint64_t tries) {
        if (tries < 16) { ffs_pause(); return; }
        if (tries < 256) { sched_yield(); return; }
        struct timespec ts = {0, 20000}; nanosleep(&ts, NULL);
    }

    static void ffs_sleep_ns(int64_t ns) {
        struct timespec ts; ts.tv_sec = ns / 1000000000LL; ts.tv_nsec = ns % 1000000000LL;
        nanosleep(&ts, NULL);
    }

    /* Process-shared futex (the key is the page of the shared mapping, so it works
       across processes and on a read-only mapping). */
    static int ffs_futex_wait(uint32_t *addr, uint32_t val, int64_t timeout_ns, int private_) {
        struct timespec ts; ts.tv_sec = timeout_ns / 1000000000LL; ts.tv_nsec = timeout_ns % 1000000000LL;
        return (int)syscall(SYS_futex, addr, private_ ? FUTEX_WAIT_PRIVATE : FUTEX_WAIT, val, &ts, NULL, 0);
    }
    static int ffs_futex_wake(uint32_t *addr, int private_) {
        return (int)syscall(SYS_futex, addr, private_ ? FUTEX_WAKE_PRIVATE : FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
    }

    /* 1 if no process `pid` runs (gone, or a zombie waiting to be reaped). */
    static int ffs_pid_dead(int pid) {
        char path[64], buf[512];
        int fd; ssize_t n; char *p;
        if (pid <= 0) return 1;
        if (kill(pid, 0) == -1 && errno == ESRCH) return 1;
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return errno == ENOENT;
        n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0) return 0;
        buf[n] = 0;
        p = strrchr(buf, ')');
        if (p == NULL || p[1] == 0 || p[2] == 0) return 0;
        return p[2] == 'Z' || p[2] == 'X';
    }

    static int ffs_shm_open(const char *name, int flags, int mode) { return shm_open(name, flags, (mode_t)mode); }
    static int ffs_shm_unlink(const char *name) { return shm_unlink(name); }
    #define FFS_PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 3)

    /* Write one 64-byte record.  On x86-64 with non-temporal (streaming) stores: a whole
       cache line is written without first reading it (no read-for-ownership miss on a
       random row); they are weakly ordered, so ffs_store_fence() must run before the
       sequence lock's release store.  Elsewhere: plain stores. */
    #if defined(__x86_64__)
    #include <emmintrin.h>
    static inline void ffs_put_rec(ff_rec *d, double o, double h, double l, double c,
                                   double v, double w, int64_t n, uint64_t g) {
        __m128i *p = (__m128i *)d;
        _mm_stream_pd((double *)(p + 0), _mm_set_pd(h, o));
        _mm_stream_pd((double *)(p + 1), _mm_set_pd(c, l));
        _mm_stream_pd((double *)(p + 2), _mm_set_pd(w, v));
        _mm_stream_si128(p + 3, _mm_set_epi64x((long long)g, (long long)n));
    }
    static inline void ffs_store_fence(void) { _mm_sfence(); }
    #else
    static inline void ffs_put_rec(ff_rec *d, double o, double h, double l, double c,
                                   double v, double w, int64_t n, uint64_t g) {
        d->open = o; d->high = h; d->low = l; d->close = c; d->volume = v; d->vwap = w;
        d->count = n; d->updated = g;
    }
    static inline void ffs_store_fence(void) { }
    #endif
    """
    uint64_t ffs_load_acq64(const uint64_t *p) noexcept nogil
    uint64_t ffs_load_rlx64(const uint64_t *p) noexcept nogil
    void ffs_store_rlx64(uint64_t *p, uint64_t v) noexcept nogil
    void ffs_store_rel64(uint64_t *p, uint64_t v) noexcept nogil
    uint32_t ffs_load_acq32(const uint32_t *p) noexcept nogil
    void ffs_store_rel32(uint32_t *p, uint32_t v) noexcept nogil
    void ffs_fence_rel() noexcept nogil
    void ffs_fence_acq() noexcept nogil
    uint32_t ffs_inc32(uint32_t *p) noexcept nogil
    int32_t ffs_add_i32(int32_t *p, int32_t v) noexcept nogil
    int32_t ffs_load_i32(const int32_t *p) noexcept nogil
    uint32_t ffs_or32(uint32_t *p, uint32_t v) noexcept nogil
    uint32_t ffs_and32(uint32_t *p, uint32_t v) noexcept nogil
    uint32_t ffs_xchg32(uint32_t *p, uint32_t v) noexcept nogil
    int ffs_cas_i32(int32_t *p, int32_t expect, int32_t want) noexcept nogil
    void ffs_add_u64(uint64_t *p, uint64_t v) noexcept nogil
    void ffs_pause() noexcept nogil
    int64_t ffs_mono_ns() noexcept nogil
    int64_t ffs_real_ns() noexcept nogil
    void ffs_sleep_ns(int64_t ns) noexcept nogil
    void ffs_backoff(uint64_t tries) noexcept nogil
    int ffs_futex_wait(uint32_t *addr, uint32_t val, int64_t timeout_ns, int private_) noexcept nogil
    int ffs_futex_wake(uint32_t *addr, int private_) noexcept nogil
    int ffs_pid_dead(int pid) noexcept nogil
    int ffs_shm_open(const char *name, int flags, int mode) noexcept nogil
    int ffs_shm_unlink(const char *name) noexcept nogil
    void FFS_PREFETCH(const void *p) noexcept nogil
    void ffs_put_rec(ff_rec *d, double o, double h, double l, double c, double v, double w,
                     int64_t n, uint64_t g) noexcept nogil
    void ffs_store_fence() noexcept nogil

__all__ = [
    "LAYOUT", "MAGIC", "VERSION", "PAGE", "MAX_WINDOWS", "MAX_COUNTERS", "NAME_BYTES",
    "READER_SLOTS", "STATE_INIT", "STATE_LIVE", "STATE_CLOSED", "WAIT_FUTEX", "WAIT_SPIN",
    "segment_layout", "shm_open", "shm_unlink", "mono_ns", "real_ns", "pid_dead",
    "WriterCore", "ReaderCore",
]

MAGIC = <uint64_t>FFSHM_MAGIC
VERSION = FFSHM_VERSION
PAGE = FFSHM_PAGE
MAX_WINDOWS = FFSHM_MAX_WINDOWS
MAX_COUNTERS = FFSHM_MAX_COUNTERS
NAME_BYTES = FFSHM_NAME_BYTES
READER_SLOTS = FFSHM_READER_SLOTS
STATE_INIT = FFSHM_STATE_INIT
STATE_LIVE = FFSHM_STATE_LIVE
STATE_CLOSED = FFSHM_STATE_CLOSED

cdef enum:
    MODE_FUTEX = 0
    MODE_SPIN = 1

#: ``ReaderCore.wait`` modes
WAIT_FUTEX = MODE_FUTEX
WAIT_SPIN = MODE_SPIN

#: byte offsets of the header fields (``offsetof`` in ``ffshm.h``): the single source
#: of the layout for the Python side.
cdef ff_header _H
cdef ff_readers _R


cdef inline Py_ssize_t _off(const void *p, const void *base) noexcept:
    return <const char *>p - <const char *>base


LAYOUT = {
    "magic": _off(&_H.magic, &_H),
    "version": _off(&_H.version, &_H),
    "header_bytes": _off(&_H.header_bytes, &_H),
    "epoch": _off(&_H.epoch, &_H),
    "segment_bytes": _off(&_H.segment_bytes, &_H),
    "writer_pid": _off(&_H.writer_pid, &_H),
    "state": _off(&_H.state, &_H),
    "n_windows": _off(&_H.n_windows, &_H),
    "capacity": _off(&_H.capacity, &_H),
    "depth": _off(&_H.depth, &_H),
    "windows": _off(&_H.windows[0], &_H),
    "feed": _off(&_H.feed[0], &_H),
    "off_symrefs": _off(&_H.off_symrefs, &_H),
    "off_heap": _off(&_H.off_heap, &_H),
    "heap_bytes": _off(&_H.heap_bytes, &_H),
    "off_windows": _off(&_H.off_windows, &_H),
    "window_bytes": _off(&_H.window_bytes, &_H),
    "off_info": _off(&_H.off_info, &_H),
    "info_bytes": _off(&_H.info_bytes, &_H),
    "off_stats": _off(&_H.off_stats, &_H),
    "stats_bytes": _off(&_H.stats_bytes, &_H),
    "n_counters": _off(&_H.n_counters, &_H),
    "n_reader_slots": _off(&_H.n_reader_slots, &_H),
    "heartbeat_period_ns": _off(&_H.heartbeat_period_ns, &_H),
    "heartbeat_ns": _off(&_H.heartbeat_ns, &_H),
    "heartbeats": _off(&_H.heartbeats, &_H),
    "generation": _off(&_H.generation, &_H),
    "update_seq": _off(&_H.update_seq, &_H),
    "second_seq": _off(&_H.second_seq, &_H),
    "T": _off(&_H.T, &_H),
    "n_symbols": _off(&_H.n_symbols, &_H),
    "publishes": _off(&_H.publishes, &_H),
    "rows_published": _off(&_H.rows_published, &_H),
    "publish_ns": _off(&_H.publish_ns, &_H),
    "publish_mono_ns": _off(&_H.publish_mono_ns, &_H),
    "stats_len": _off(&_H.stats_len, &_H),
    "stats_ns": _off(&_H.stats_ns, &_H),
    "second": _off(&_H.second, &_H),
    "second.T": _off(&_H.second.T, &_H),
    "second.reason": _off(&_H.second.reason, &_H),
    "second.reported": _off(&_H.second.reported, &_H),
    "second.expected": _off(&_H.second.expected, &_H),
    "second.latency_us": _off(&_H.second.latency_us, &_H),
    "second.since_last_bar_us": _off(&_H.second.since_last_bar_us, &_H),
    "second.count": _off(&_H.second.count, &_H),
    "second.published_ns": _off(&_H.second.published_ns, &_H),
    "second.info_len": _off(&_H.second.info_len, &_H),
    "counters": _off(&_H.counters[0], &_H),
    "counter_names": _off(&_H.counter_names[0], &_H),
    "header_size": <Py_ssize_t>sizeof(ff_header),
    "readers": <Py_ssize_t>sizeof(ff_header),
    "readers.update_waiters": _off(&_R.update_waiters, &_R),
    "readers.second_waiters": _off(&_R.second_waiters, &_R),
    "readers.attaches": _off(&_R.attaches, &_R),
    "readers.slots": _off(&_R.slots[0], &_R),
    "readers_size": <Py_ssize_t>sizeof(ff_readers),
    "slot_size": <Py_ssize_t>sizeof(ff_reader_slot),
    "rec_size": <Py_ssize_t>sizeof(ff_rec),
    "symref_size": <Py_ssize_t>sizeof(ff_symref),
}

#: the seqlock-protected part of the header, copied whole by a consistent read
cdef Py_ssize_t PROT_LO = _off(&_H.T, &_H)
cdef Py_ssize_t PROT_HI = _off(&_H.counter_names[0], &_H)
#: a sleeping reader wakes at least this often to check the writer's heartbeat
cdef int64_t CHECK_NS = 50_000_000
#: a writer's heartbeat thread reaps dead readers' slots every this many beats
cdef int REAP_EVERY = 10


cdef inline uint64_t _round_up(uint64_t x, uint64_t a) noexcept nogil:
    return (x + a - 1) // a * a


def segment_layout(Py_ssize_t capacity, Py_ssize_t n_windows, Py_ssize_t heap_per_row=32,
                   Py_ssize_t info_bytes=4096, Py_ssize_t stats_bytes=262144):
    """Offsets and total size of a segment for ``capacity`` rows and ``n_windows`` windows."""
    if capacity <= 0 or capacity >= 2 ** 31:
        raise ValueError(f"capacity must be in [1, 2**31), got {capacity}")
    if not 1 <= n_windows <= FFSHM_MAX_WINDOWS:
        raise ValueError(f"1 to {FFSHM_MAX_WINDOWS} windows, got {n_windows}")
    cdef uint64_t off = sizeof(ff_header) + sizeof(ff_readers)
    out = {}
    out["off_symrefs"] = off
    off = _round_up(off + capacity * sizeof(ff_symref), 64)
    out["off_heap"] = off
    out["heap_bytes"] = _round_up(capacity * heap_per_row, 64)
    off = _round_up(off + out["heap_bytes"], 64)
    out["off_info"] = off
    out["info_bytes"] = _round_up(info_bytes, 64)
    off = _round_up(off + out["info_bytes"], 64)
    out["off_stats"] = off
    out["stats_bytes"] = _round_up(stats_bytes, 64)
    off = _round_up(off + out["stats_bytes"], FFSHM_PAGE)
    out["off_windows"] = off
    out["window_bytes"] = _round_up(capacity * sizeof(ff_rec), FFSHM_PAGE)
    off += n_windows * out["window_bytes"]
    out["segment_bytes"] = off
    return out


def shm_open(str name, int flags, int mode=0o600):
    """``shm_open(3)``: returns a file descriptor (close it with ``os.close``); raises ``OSError``."""
    cdef bytes b = ("/" + name.lstrip("/")).encode()
    cdef int fd = ffs_shm_open(b, flags | os.O_CLOEXEC, mode)
    if fd < 0:
        e = errno
        raise OSError(e, os.strerror(e), name)
    return fd


def shm_unlink(str name):
    """``shm_unlink(3)``; raises ``OSError`` (``FileNotFoundError`` if absent)."""
    cdef bytes b = ("/" + name.lstrip("/")).encode()
    if ffs_shm_unlink(b) != 0:
        e = errno
        raise OSError(e, os.strerror(e), name)


def mono_ns():
    """CLOCK_MONOTONIC in ns (the clock of the heartbeat and ``publish_mono_ns``)."""
    return ffs_mono_ns()


def real_ns():
    """CLOCK_REALTIME in ns."""
    return ffs_real_ns()


def pid_dead(int pid):
    """True if no process ``pid`` runs (absent, or a zombie)."""
    return bool(ffs_pid_dead(pid))


cdef class _Mapping:
    """A held buffer of an ``mmap`` (kept exported so the mapping cannot be closed under us)."""
    cdef Py_buffer buf
    cdef bint held
    cdef char *base
    cdef Py_ssize_t size

    cdef int acquire(self, object mm, bint writable) except -1:
        PyObject_GetBuffer(mm, &self.buf, PyBUF_WRITABLE if writable else PyBUF_SIMPLE)
        self.held = True
        self.base = <char *>self.buf.buf
        self.size = self.buf.len
        return 0

    cdef void release(self) noexcept:
        if self.held:
            PyBuffer_Release(&self.buf)
            self.held = False
            self.base = NULL

    def __dealloc__(self):
        self.release()


cdef class WriterCore:
    """The writer's side of a segment mapped read-write (``mm``: an ``mmap`` of it).

    :param mm: the whole segment, writable.
    :param views: one ``WindowView`` per window (the engine's zero-copy views, in the
        engine's window order); their columns are read by ``publish``.  Held (so the
        engine's arrays stay alive) until :meth:`release`.
    """
    cdef _Mapping map
    cdef ff_header *h
    cdef ff_readers *rd
    cdef char *win0
    cdef uint64_t window_bytes
    cdef ff_symref *symrefs
    cdef char *heap
    cdef uint64_t heap_used, heap_bytes
    cdef Py_ssize_t K, capacity
    cdef Py_buffer src[16][7]
    cdef int nsrc
    cdef const char *sp[16][7]
    cdef Py_ssize_t ss[16][7]
    cdef list _views
    cdef uint32_t hb_stop
    cdef list _csrc
    cdef int64_t cvals[64]
    cdef Py_ssize_t ncounters
    cdef public uint64_t symbols_overflow

    def __cinit__(self, object mm, list views):
        self.map = _Mapping()
        self.map.acquire(mm, True)
        if self.map.size < <Py_ssize_t>(sizeof(ff_header) + sizeof(ff_readers)):
            raise ValueError("segment too small")
        self.h = <ff_header *>self.map.base
        self.rd = <ff_readers *>(self.map.base + sizeof(ff_header))
        self.K = len(views)
        if not 1 <= self.K <= FFSHM_MAX_WINDOWS:
            raise ValueError(f"1 to {FFSHM_MAX_WINDOWS} windows, got {self.K}")
        self.nsrc = 0
        self._views = list(views)
        cdef Py_ssize_t k, c
        cdef object col
        cdef Py_ssize_t cap = -1
        for k in range(self.K):
            v = views[k]
            for c, name in enumerate(("open", "high", "low", "close", "volume", "vwap", "count")):
                col = getattr(v, name)
                PyObject_GetBuffer(col, &self.src[k][c], PyBUF_STRIDES | PyBUF_FORMAT)
                self.nsrc += 1
                if self.src[k][c].ndim != 1 or self.src[k][c].itemsize != 8:
                    raise TypeError(f"window view column {name} must be a 1-D 8-byte array")
                if cap < 0:
                    cap = self.src[k][c].shape[0]
                elif self.src[k][c].shape[0] != cap:
                    raise ValueError("window view columns differ in length")
                self.sp[k][c] = <const char *>self.src[k][c].buf
                self.ss[k][c] = self.src[k][c].strides[0]
        self.capacity = cap
        self.hb_stop = 0
        self._csrc = []
        self.ncounters = 0

    def __dealloc__(self):
        self._release_views()
        self.map.release()

    cdef void _release_views(self) noexcept:
        cdef int i
        for i in range(self.nsrc):
            PyBuffer_Release(&self.src[i // 7][i % 7])
        self.nsrc = 0

    def release(self):
        """Let go of the mapping and the engine's views (after the segment is closed)."""
        self._release_views()
        self._views = None
        self.map.release()
        self.h = NULL

    def init(self, dict layout, uint64_t epoch, int64_t pid, tuple windows, uint64_t depth,
             bytes feed, list counter_names, uint64_t heartbeat_period_ns):
        """Write the identity fields (everything except ``magic``) of a zeroed segment."""
        cdef ff_header *h = self.h
        cdef Py_ssize_t k, n
        if <Py_ssize_t>layout["segment_bytes"] > self.map.size:
            raise ValueError("mapping smaller than the layout")
        if len(windows) != self.K:
            raise ValueError("windows and views differ in number")
        if len(counter_names) > FFSHM_MAX_COUNTERS:
            raise ValueError(f"at most {FFSHM_MAX_COUNTERS} counters")
        h.version = FFSHM_VERSION
        h.header_bytes = sizeof(ff_header)
        h.epoch = epoch
        h.segment_bytes = layout["segment_bytes"]
        h.writer_pid = pid
        h.n_windows = self.K
        h.capacity = self.capacity
        h.depth = depth
        for k in range(self.K):
            h.windows[k] = windows[k]
        memset(h.feed, 0, FFSHM_NAME_BYTES)
        n = min(len(feed), FFSHM_NAME_BYTES - 1)
        memcpy(h.feed, <const char *>feed, n)
        h.off_symrefs = layout["off_symrefs"]
        h.off_heap = layout["off_heap"]
        h.heap_bytes = layout["heap_bytes"]
        h.off_windows = layout["off_windows"]
        h.window_bytes = layout["window_bytes"]
        h.off_info = layout["off_info"]
        h.info_bytes = layout["info_bytes"]
        h.off_stats = layout["off_stats"]
        h.stats_bytes = layout["stats_bytes"]
        h.n_counters = len(counter_names)
        h.n_reader_slots = FFSHM_READER_SLOTS
        h.heartbeat_period_ns = heartbeat_period_ns
        cdef bytes name
        for k in range(len(counter_names)):
            name = counter_names[k].encode()[:FFSHM_NAME_BYTES - 1]
            memset(h.counter_names[k], 0, FFSHM_NAME_BYTES)
            memcpy(h.counter_names[k], <const char *>name, len(name))
        h.T = -1
        h.second.T = -1
        self.symrefs = <ff_symref *>(self.map.base + h.off_symrefs)
        self.heap = self.map.base + h.off_heap
        self.heap_bytes = h.heap_bytes
        self.heap_used = 0
        self.win0 = self.map.base + h.off_windows
        self.window_bytes = h.window_bytes
        # empty windows: NaN prices, zero volume and count (the engine's "no bar" values)
        cdef double nan = float("nan")
        cdef ff_rec *rec
        cdef Py_ssize_t r
        for k in range(self.K):
            rec = <ff_rec *>(self.win0 + k * self.window_bytes)
            for r in range(self.capacity):
                rec[r].open = nan; rec[r].high = nan; rec[r].low = nan; rec[r].close = nan
                rec[r].vwap = nan
        self.beat()

    def go_live(self):
        """Make the segment visible to readers: state LIVE, then ``magic`` (release)."""
        ffs_store_rel32(&self.h.state, FFSHM_STATE_LIVE)
        ffs_store_rel64(&self.h.magic, <uint64_t>FFSHM_MAGIC)

    def add_symbols(self, Py_ssize_t first, list encoded):
        """Write the symbols of rows ``first, first + 1, ...`` (UTF-8 bytes) to the table.

        Rows must be appended in order; readers see them once a publish raises
        ``n_symbols``.  A symbol that does not fit the heap is stored empty and counted
        in :attr:`symbols_overflow` (never raises for it).
        """
        cdef Py_ssize_t i, n
        cdef bytes b
        for i in range(len(encoded)):
            if first + i >= self.capacity:
                raise IndexError(f"row {first + i} outside the segment's capacity {self.capacity}")
            b = encoded[i]
            n = len(b)
            if self.heap_used + n > self.heap_bytes:
                self.symbols_overflow += 1
                n = 0
            memcpy(self.heap + self.heap_used, <const char *>b, n)
            self.symrefs[first + i].offset = <uint32_t>self.heap_used
            self.symrefs[first + i].length = <uint32_t>n
            self.heap_used += n

    cdef inline void _copy_row(self, Py_ssize_t r, uint64_t g2) noexcept nogil:
        cdef Py_ssize_t k
        for k in range(self.K):
            ffs_put_rec(<ff_rec *>(self.win0 + k * self.window_bytes) + r,
                        (<const double *>(self.sp[k][0] + r * self.ss[k][0]))[0],
                        (<const double *>(self.sp[k][1] + r * self.ss[k][1]))[0],
                        (<const double *>(self.sp[k][2] + r * self.ss[k][2]))[0],
                        (<const double *>(self.sp[k][3] + r * self.ss[k][3]))[0],
                        (<const double *>(self.sp[k][4] + r * self.ss[k][4]))[0],
                        (<const double *>(self.sp[k][5] + r * self.ss[k][5]))[0],
                        (<const int64_t *>(self.sp[k][6] + r * self.ss[k][6]))[0],
                        g2)

    cdef inline void _prefetch_row(self, Py_ssize_t r) noexcept nogil:
        cdef Py_ssize_t k, c
        for k in range(self.K):
            for c in range(7):
                FFS_PREFETCH(self.sp[k][c] + r * self.ss[k][c])

    cdef inline uint64_t _begin(self) noexcept nogil:
        cdef uint64_t g = ffs_load_rlx64(&self.h.generation)
        ffs_store_rlx64(&self.h.generation, g + 1)
        ffs_fence_rel()
        return g + 2

    cdef inline void _end(self, uint64_t g2) noexcept nogil:
        ffs_store_fence()      # streaming stores of the records are visible before g2
        ffs_store_rel64(&self.h.generation, g2)

    cdef inline void _wake(self, uint32_t *word, int32_t *waiters) noexcept nogil:
        ffs_inc32(word)
        if ffs_load_i32(waiters) > 0:
            ffs_futex_wake(word, 0)

    def set_counter_sources(self, list sources):
        """Where ``publish`` reads the counters, in the order of the counter names.

        ``sources``: ``(obj, attr, keys)`` tuples: ``getattr(obj, attr)`` is an int
        (``keys`` None: one counter) or a mapping read at each of ``keys`` (missing: 0).
        """
        cdef Py_ssize_t n = 0
        for obj, attr, keys in sources:
            n += 1 if keys is None else len(keys)
        if n > FFSHM_MAX_COUNTERS:
            raise ValueError(f"at most {FFSHM_MAX_COUNTERS} counters, got {n}")
        self._csrc = [(obj, str(attr), None if keys is None else tuple(keys)) for obj, attr, keys in sources]
        self.ncounters = n
        self._gather()

    cdef int _gather(self) except -1:
        cdef Py_ssize_t i = 0
        cdef tuple src
        cdef object v
        for src in self._csrc:
            v = getattr(src[0], src[1])
            if src[2] is None:
                self.cvals[i] = v
                i += 1
            else:
                for key in src[2]:
                    self.cvals[i] = v.get(key, 0)
                    i += 1
        return 0

    def counter_values(self):
        """The counters as the last publish read them."""
        return [self.cvals[i] for i in range(self.ncounters)]

    def publish(self, const int64_t[::1] rows, Py_ssize_t n_rows, bint all_rows, int64_t T,
                uint64_t n_symbols):
        """Copy rows of every window from the engine's views, under the sequence lock.

        ``all_rows``: copy rows ``[0, n_symbols)`` (the clock moved: eviction changed
        every row); else the first ``n_rows`` of ``rows`` (rows outside the capacity are
        skipped).  Then sets ``T``, ``n_symbols``, the counters (read from the sources
        first, with the GIL) and the publish times, ends the write, bumps ``update_seq``
        and wakes sleeping readers.  The copy runs without the GIL.  Returns the
        generation published.
        """
        cdef ff_header *h = self.h
        cdef Py_ssize_t i, r, n, cap = self.capacity, nc = self.ncounters
        cdef uint64_t g2
        cdef const int64_t *rp = &rows[0] if rows.shape[0] > 0 else NULL
        if h == NULL:
            raise ValueError("segment closed")
        if n_rows > rows.shape[0]:
            n_rows = rows.shape[0]
        if n_symbols > <uint64_t>cap:
            n_symbols = cap
        self._gather()
        with nogil:
            g2 = self._begin()
            if all_rows:
                n = <Py_ssize_t>n_symbols
                for r in range(n):
                    self._copy_row(r, g2)
            else:
                n = 0
                for i in range(n_rows):
                    if i + 8 < n_rows and 0 <= rp[i + 8] < cap:
                        self._prefetch_row(rp[i + 8])
                    r = rp[i]
                    if 0 <= r < cap:
                        self._copy_row(r, g2)
                        n += 1
            h.T = T
            h.n_symbols = n_symbols
            h.publishes += 1
            h.rows_published += n
            h.publish_ns = ffs_real_ns()
            h.publish_mono_ns = ffs_mono_ns()
            if nc > 0:
                memcpy(h.counters, self.cvals, nc * sizeof(int64_t))
            self._end(g2)
            self._wake(&h.update_seq, &self.rd.update_waiters)
        return g2

    def write_stats(self, const uint8_t[::1] doc):
        """Store the stats document (JSON bytes) and the counters (read now) under the
        sequence lock; False (and nothing stored) if the document is too big."""
        cdef ff_header *h = self.h
        cdef Py_ssize_t n = doc.shape[0], nc = self.ncounters
        cdef uint64_t g2
        if h == NULL:
            raise ValueError("segment closed")
        if <uint64_t>n > h.stats_bytes:
            return False
        self._gather()
        with nogil:
            g2 = self._begin()
            if n:
                memcpy(self.map.base + h.off_stats, &doc[0], n)
            h.stats_len = n
            h.stats_ns = ffs_real_ns()
            if nc > 0:
                memcpy(h.counters, self.cvals, nc * sizeof(int64_t))
            self._end(g2)
        return True

    def write_second(self, int64_t T, uint32_t reason, int64_t reported, int64_t expected,
                     double latency_us, double since_last_bar_us, const uint8_t[::1] info):
        """Publish a completed second and its info (JSON bytes, truncated to ``info_bytes``
        -- then stored empty), bump ``second_seq`` and wake ``wait_second`` sleepers."""
        cdef ff_header *h = self.h
        cdef Py_ssize_t n = info.shape[0]
        cdef uint64_t g2
        if h == NULL:
            raise ValueError("segment closed")
        if <uint64_t>n > h.info_bytes:
            n = 0
        with nogil:
            g2 = self._begin()
            h.second.T = T
            h.second.reason = reason
            h.second.reported = reported
            h.second.expected = expected
            h.second.latency_us = latency_us
            h.second.since_last_bar_us = since_last_bar_us
            h.second.count += 1
            h.second.published_ns = ffs_real_ns()
            if n:
                memcpy(self.map.base + h.off_info, &info[0], n)
            h.second.info_len = n
            self._end(g2)
            self._wake(&h.second_seq, &self.rd.second_waiters)
        return g2

    def mark_closed(self):
        """State CLOSED, and wake every sleeper (they see it and stop waiting)."""
        if self.h == NULL:
            return
        ffs_store_rel32(&self.h.state, FFSHM_STATE_CLOSED)
        ffs_inc32(&self.h.update_seq)
        ffs_inc32(&self.h.second_seq)
        ffs_futex_wake(&self.h.update_seq, 0)
        ffs_futex_wake(&self.h.second_seq, 0)

    def beat(self):
        """One heartbeat now."""
        ffs_store_rel64(&self.h.heartbeat_ns, <uint64_t>ffs_mono_ns())
        ffs_add_u64(&self.h.heartbeats, 1)

    def run_heartbeat(self):
        """Beat every ``heartbeat_period_ns`` until :meth:`stop_heartbeat` (GIL released).

        Every ``REAP_EVERY`` beats, frees the reader slots of processes that died
        (their sleeping flags are taken off the waiter counts).  Run it on its own thread.
        """
        cdef ff_header *h = self.h
        cdef int64_t period = <int64_t>h.heartbeat_period_ns
        cdef int n = 0
        with nogil:
            while ffs_load_acq32(&self.hb_stop) == 0:
                ffs_store_rel64(&h.heartbeat_ns, <uint64_t>ffs_mono_ns())
                ffs_add_u64(&h.heartbeats, 1)
                n += 1
                if n % REAP_EVERY == 0:
                    self._reap()
                ffs_futex_wait(&self.hb_stop, 0, period, 1)

    def stop_heartbeat(self):
        ffs_store_rel32(&self.hb_stop, 1)
        ffs_futex_wake(&self.hb_stop, 1)

    cdef int _reap(self) noexcept nogil:
        cdef int i, freed = 0
        cdef int32_t pid
        cdef uint32_t w
        cdef ff_reader_slot *s
        for i in range(FFSHM_READER_SLOTS):
            s = &self.rd.slots[i]
            pid = ffs_load_i32(&s.pid)
            if pid != 0 and ffs_pid_dead(pid):
                w = ffs_xchg32(&s.waiting, 0)
                if w & FFSHM_WAIT_UPDATE:
                    ffs_add_i32(&self.rd.update_waiters, -1)
                if w & FFSHM_WAIT_SECOND:
                    ffs_add_i32(&self.rd.second_waiters, -1)
                if ffs_cas_i32(&s.pid, pid, 0):
                    freed += 1
        return freed

    def reap_readers(self):
        """Free the slots of dead readers now; returns how many were freed."""
        return self._reap()

    def readers(self):
        """Reader processes attached now (slots held by live pids)."""
        cdef int i, n = 0
        cdef int32_t pid
        for i in range(FFSHM_READER_SLOTS):
            pid = ffs_load_i32(&self.rd.slots[i].pid)
            if pid != 0 and not ffs_pid_dead(pid):
                n += 1
        return n

    @property
    def generation(self):
        return ffs_load_acq64(&self.h.generation)


cdef class ReaderCore:
    """A reader's side of a segment: ``mm`` maps it read-only, ``mm_readers`` maps the
    readers page (offset 4096, 4096 bytes) read-write."""
    cdef _Mapping map
    cdef _Mapping rmap
    cdef ff_header *h
    cdef ff_readers *rd
    cdef int _slot
    cdef int32_t _pid
    cdef public uint64_t retries      # consistent reads retried (total)
    cdef public uint64_t last_retries  # retries of the last consistent read

    def __cinit__(self, object mm, object mm_readers):
        self.map = _Mapping()
        self.map.acquire(mm, False)
        self.rmap = _Mapping()
        self.rmap.acquire(mm_readers, True)
        if self.map.size < <Py_ssize_t>(sizeof(ff_header) + sizeof(ff_readers)):
            raise ValueError("segment too small")
        if self.rmap.size < <Py_ssize_t>sizeof(ff_readers):
            raise ValueError("readers page too small")
        self.h = <ff_header *>self.map.base
        self.rd = <ff_readers *>self.rmap.base
        self._slot = -1

    def __dealloc__(self):
        self._leave()
        self.map.release()
        self.rmap.release()

    def release(self):
        """Give up the slot and the mappings (views made from ``mm`` stay valid)."""
        self._leave()
        self.map.release()
        self.rmap.release()
        self.h = NULL
        self.rd = NULL

    cdef void _leave(self) noexcept:
        cdef uint32_t w
        cdef ff_reader_slot *s
        if self._slot >= 0 and self.rd != NULL:
            s = &self.rd.slots[self._slot]
            # ours (not reaped and re-taken meanwhile), and we are not a forked child
            if ffs_load_i32(&s.pid) == self._pid and getpid() == self._pid:
                w = ffs_xchg32(&s.waiting, 0)
                if w & FFSHM_WAIT_UPDATE:
                    ffs_add_i32(&self.rd.update_waiters, -1)
                if w & FFSHM_WAIT_SECOND:
                    ffs_add_i32(&self.rd.second_waiters, -1)
                ffs_cas_i32(&s.pid, self._pid, 0)
        self._slot = -1

    def join(self, int pid):
        """Claim a reader slot for ``pid`` (the attach count); -1 if all are taken."""
        cdef int i
        ffs_add_u64(&self.rd.attaches, 1)
        for i in range(FFSHM_READER_SLOTS):
            if ffs_cas_i32(&self.rd.slots[i].pid, 0, pid):
                self.rd.slots[i].attached_ns = ffs_real_ns()
                self._slot = i
                self._pid = pid
                return i
        return -1

    @property
    def slot(self):
        """Index of this reader's slot, -1 if none."""
        return self._slot

    cdef inline ff_header *_hdr(self) except NULL:
        if self.h == NULL:
            raise ValueError("reader detached")
        return self.h

    @property
    def magic(self):
        return ffs_load_acq64(&self._hdr().magic)

    @property
    def state(self):
        return ffs_load_acq32(&self._hdr().state)

    @property
    def generation(self):
        return ffs_load_acq64(&self._hdr().generation)

    @property
    def update_seq(self):
        return ffs_load_acq32(&self._hdr().update_seq)

    @property
    def second_seq(self):
        return ffs_load_acq32(&self._hdr().second_seq)

    def published(self):
        """``(publish_ns, publish_mono_ns)`` of the last publish (plain loads, no lock)."""
        cdef ff_header *h = self._hdr()
        return h.publish_ns, h.publish_mono_ns

    def heartbeat_age_ns(self):
        """ns since the writer's last heartbeat (CLOCK_MONOTONIC)."""
        return ffs_mono_ns() - <int64_t>ffs_load_acq64(&self._hdr().heartbeat_ns)

    def stable(self, uint64_t g):
        """True if generation ``g`` is even and still current: everything read since ``g``
        was observed (e.g. through zero-copy views) is consistent.  False once this core
        was released (the reader closed, or moved to a new writer's segment)."""
        if self.h == NULL:
            return False
        ffs_fence_acq()
        return (g & 1) == 0 and ffs_load_rlx64(&self.h.generation) == g

    def begin(self, double timeout=0.01):
        """The current generation once it is even (waits up to ``timeout`` s while a write
        is in progress; returns the odd one if the writer never finishes)."""
        cdef ff_header *h = self._hdr()
        cdef uint64_t g, tries = 0
        cdef int64_t deadline = ffs_mono_ns() + <int64_t>(timeout * 1e9)
        with nogil:
            g = ffs_load_acq64(&h.generation)
            while g & 1 and ffs_mono_ns() < deadline:
                tries += 1
                ffs_backoff(tries)
                g = ffs_load_acq64(&h.generation)
        return g

    def read_T(self, double timeout=1.0):
        """``(generation, T, n_symbols)`` read consistently."""
        cdef ff_header *h = self._hdr()
        cdef uint64_t g1, g2, n = 0, tries = 0
        cdef int64_t T = -1
        cdef int64_t deadline = ffs_mono_ns() + <int64_t>(timeout * 1e9)
        cdef bint ok = False
        with nogil:
            while True:
                g1 = ffs_load_acq64(&h.generation)
                if not (g1 & 1):
                    T = h.T
                    n = h.n_symbols
                    ffs_fence_acq()
                    g2 = ffs_load_rlx64(&h.generation)
                    if g1 == g2:
                        ok = True
                        break
                if ffs_mono_ns() > deadline:
                    break
                tries += 1
                ffs_backoff(tries)
        if not ok:
            raise TimeoutError("no consistent read of the clock: the writer never left a write")
        return g1, T, n

    def read(self, uint8_t[::1] header, list ks, list dsts, object stats_dst, object info_dst,
             double timeout):
        """One consistent read: the protected header fields, windows, stats/info JSON.

        ``header``: 4096 writable bytes, receives bytes ``[T, counter_names)`` at their own
        offsets.  ``ks``/``dsts``: window indices and writable buffers (``capacity * 64``
        bytes each) receiving records ``[0, n_symbols)``.  ``stats_dst``/``info_dst``:
        writable buffers (``stats_bytes``/``info_bytes``) or None.  Retries until a read
        is not overlapped by a write, for up to ``timeout`` s (then ``TimeoutError``).
        Returns the generation read.  GIL released.
        """
        cdef ff_header *h = self._hdr()
        cdef Py_ssize_t nk = len(ks), i
        cdef Py_ssize_t kidx[16]
        cdef char *dp[16]
        cdef Py_buffer bufs[16]
        cdef Py_buffer sbuf, ibuf
        cdef bint have_s = stats_dst is not None, have_i = info_dst is not None
        cdef int got = 0
        cdef char *base = self.map.base
        cdef uint64_t g1 = 0, g2, n, ln, tries = 0, cap = h.capacity
        cdef int64_t deadline = ffs_mono_ns() + <int64_t>(timeout * 1e9)
        cdef bint ok = False
        cdef ff_header *hc = <ff_header *>&header[0]
        if header.shape[0] < <Py_ssize_t>sizeof(ff_header):
            raise ValueError("header buffer too small")
        if nk > <Py_ssize_t>h.n_windows or nk != len(dsts):
            raise ValueError("bad window list")
        try:
            for i in range(nk):
                kidx[i] = ks[i]
                if not 0 <= kidx[i] < <Py_ssize_t>h.n_windows:
                    raise IndexError(f"window index {kidx[i]}")
                PyObject_GetBuffer(dsts[i], &bufs[i], PyBUF_WRITABLE)
                got += 1
                if bufs[i].len < <Py_ssize_t>(cap * sizeof(ff_rec)):
                    raise ValueError("window buffer smaller than capacity * 64 bytes")
                dp[i] = <char *>bufs[i].buf
            if have_s:
                PyObject_GetBuffer(stats_dst, &sbuf, PyBUF_WRITABLE)
                if sbuf.len < <Py_ssize_t>h.stats_bytes:
                    PyBuffer_Release(&sbuf)
                    have_s = False
                    raise ValueError("stats buffer too small")
            if have_i:
                PyObject_GetBuffer(info_dst, &ibuf, PyBUF_WRITABLE)
                if ibuf.len < <Py_ssize_t>h.info_bytes:
                    PyBuffer_Release(&ibuf)
                    have_i = False
                    raise ValueError("info buffer too small")
            with nogil:
                while True:
                    g1 = ffs_load_acq64(&h.generation)
                    if not (g1 & 1):
                        memcpy(<char *>hc + PROT_LO, <char *>h + PROT_LO, PROT_HI - PROT_LO)
                        n = hc.n_symbols
                        if n > cap:
                            n = cap
                        for i in range(nk):
                            memcpy(dp[i], base + h.off_windows + kidx[i] * h.window_bytes, n * sizeof(ff_rec))
                        if have_s:
                            ln = hc.stats_len
                            if ln <= h.stats_bytes:
                                memcpy(sbuf.buf, base + h.off_stats, ln)
                        if have_i:
                            ln = hc.second.info_len
                            if ln <= h.info_bytes:
                                memcpy(ibuf.buf, base + h.off_info, ln)
                        ffs_fence_acq()
                        g2 = ffs_load_rlx64(&h.generation)
                        if g1 == g2:
                            ok = True
                            break
                    tries += 1
                    if ffs_mono_ns() > deadline:
                        break
                    ffs_backoff(tries)
        finally:
            for i in range(got):
                PyBuffer_Release(&bufs[i])
            if have_s:
                PyBuffer_Release(&sbuf)
            if have_i:
                PyBuffer_Release(&ibuf)
        self.retries += tries
        self.last_retries = tries
        if not ok:
            raise TimeoutError(
                f"no consistent copy within {timeout} s ({tries} attempts overlapped a write): "
                "the writer publishes faster than this copy completes, or died mid-write")
        return g1

    def wait(self, bint second, uint32_t seen, double timeout, int mode, double spin_s,
             double gone_after):
        """Sleep until ``update_seq`` (``second_seq`` if ``second``) differs from ``seen``.

        ``mode``: ``WAIT_FUTEX`` (spin ``spin_s``, then sleep in the kernel on the word:
        the writer's publish wakes it) or ``WAIT_SPIN`` (spin ``spin_s``, then poll with
        sleeps growing from 1 us to 100 us).  Returns ``(code, value)``: code 1 the word
        changed (value = the new word), 0 timeout, -1 the writer closed the segment, -2
        the writer's heartbeat is older than ``gone_after`` s.  GIL released.
        """
        cdef ff_header *h = self._hdr()
        cdef uint32_t *word = &h.second_seq if second else &h.update_seq
        cdef int32_t *waiters = &self.rd.second_waiters if second else &self.rd.update_waiters
        cdef uint32_t bit = FFSHM_WAIT_SECOND if second else FFSHM_WAIT_UPDATE
        cdef uint32_t *flags = &self.rd.slots[self._slot].waiting if self._slot >= 0 else NULL
        cdef int64_t now = ffs_mono_ns(), chunk, sleep_ns = 1000, next_check
        cdef int64_t deadline = now + <int64_t>(timeout * 1e9) if timeout >= 0 else now + (1 << 62)
        cdef int64_t spin_end = now + <int64_t>(spin_s * 1e9)
        cdef int64_t gone_ns = <int64_t>(gone_after * 1e9)
        cdef uint32_t cur, old
        cdef int code = 0
        with nogil:
            next_check = now
            while True:
                cur = ffs_load_acq32(word)
                if cur != seen:
                    code = 1
                    break
                now = ffs_mono_ns()
                if now >= next_check:
                    if ffs_load_acq32(&h.state) == FFSHM_STATE_CLOSED:
                        code = -1
                        break
                    if now - <int64_t>ffs_load_acq64(&h.heartbeat_ns) > gone_ns:
                        code = -2
                        break
                    next_check = now + (CHECK_NS if now >= spin_end else 1_000_000)
                if now >= deadline:
                    code = 0
                    break
                if now < spin_end:
                    ffs_pause()
                elif mode == MODE_FUTEX:
                    chunk = min(deadline - now, next_check - now)
                    if chunk < 1000:
                        chunk = 1000
                    ffs_add_i32(waiters, 1)
                    if flags != NULL:
                        ffs_or32(flags, bit)
                    ffs_futex_wait(word, seen, chunk, 0)
                    if flags != NULL:
                        old = ffs_and32(flags, ~bit)
                        if old & bit:
                            ffs_add_i32(waiters, -1)
                    else:
                        ffs_add_i32(waiters, -1)
                else:
                    ffs_sleep_ns(min(sleep_ns, deadline - now))
                    if sleep_ns < 100_000:
                        sleep_ns *= 2
        return code, cur

    def waiters(self):
        """``(update_waiters, second_waiters)`` as the writer sees them."""
        return ffs_load_i32(&self.rd.update_waiters), ffs_load_i32(&self.rd.second_waiters)

    def attached(self):
        """Pids holding reader slots now (live or not yet reaped)."""
        cdef int i
        out = []
        for i in range(FFSHM_READER_SLOTS):
            if ffs_load_i32(&self.rd.slots[i].pid) != 0:
                out.append(ffs_load_i32(&self.rd.slots[i].pid))
        return out
