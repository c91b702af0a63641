# cython: language_level=3
"""Server-side frame encoders of the simulator: bars (integer cents) → ready-to-send
WebSocket text frames, many frames per bytearray, written in C.

Only the simulator uses this module; the client transport (``listener.pyx``) knows
nothing of any feed's format.
"""
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy


from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.string cimport memmove


cdef inline char* _put_uint(char* p, uint64_t x) noexcept nogil:
    cdef char tmp[24]
    cdef int n = 0
    if x == 0:
        p[0] = 48
        return p + 1
    while x:
        tmp[n] = <char>(48 + x % 10)
        x //= 10
        n += 1
    while n:
        n -= 1
        p[0] = tmp[n]
        p += 1
    return p


cdef inline char* _put_cents(char* p, int64_t c) noexcept nogil:
    if c < 0:
        p[0] = 45  # '-'
        p += 1
        c = -c
    p = _put_uint(p, <uint64_t>(c // 100))
    p[0] = 46  # '.'
    p[1] = <char>(48 + (c % 100) // 10)
    p[2] = <char>(48 + c % 10)
    return p + 3


cdef inline char* _put_lit(char* p, const char* s, Py_ssize_t n) noexcept nogil:
    memcpy(p, s, n)
    return p + n


cdef inline Py_ssize_t _frame_header(char* h, Py_ssize_t n) noexcept nogil:
    h[0] = <char>0x81
    if n < 126:
        h[1] = <char>n
        return 2
    if n < 65536:
        h[1] = <char>126
        h[2] = <char>(n >> 8)
        h[3] = <char>(n & 0xFF)
        return 4
    h[1] = <char>127
    cdef int k
    for k in range(8):
        h[2 + k] = <char>((<uint64_t>n >> (56 - 8 * k)) & 0xFF)
    return 10


cdef inline char* _put_fixed4(char* p, int64_t x) noexcept nogil:
    if x < 0:
        p[0] = 45
        p += 1
        x = -x
    p = _put_uint(p, <uint64_t>(x // 10000))
    p[0] = 46
    x = x % 10000
    p[1] = <char>(48 + x // 1000)
    p[2] = <char>(48 + (x // 100) % 10)
    p[3] = <char>(48 + (x // 10) % 10)
    p[4] = <char>(48 + x % 10)
    return p + 5



cdef struct _Cols:
    const int64_t* o
    const int64_t* h
    const int64_t* l
    const int64_t* c
    const int64_t* v
    const int64_t* av
    const int64_t* op
    const int64_t* vw4
    const int64_t* a4
    const int64_t* z
    int64_t t_ms

ctypedef char* (*_put_elem)(char* p, const _Cols* x, Py_ssize_t k) noexcept nogil


cdef char* _put_ls(char* p, const _Cols* x, Py_ssize_t k) noexcept nogil:
    # after the prefix b'{"type":"live_quote_second","ticker":"T","open":'
    p = _put_cents(p, x.o[k])
    p = _put_lit(p, b',"high":', 8)
    p = _put_cents(p, x.h[k])
    p = _put_lit(p, b',"low":', 7)
    p = _put_cents(p, x.l[k])
    p = _put_lit(p, b',"close":', 9)
    p = _put_cents(p, x.c[k])
    p = _put_lit(p, b',"volume":', 10)
    p = _put_uint(p, <uint64_t>x.v[k])
    p = _put_lit(p, b',"timestamp":', 13)
    p = _put_uint(p, <uint64_t>x.t_ms)
    p[0] = 125  # '}'
    return p + 1


cdef char* _put_agg(char* p, const _Cols* x, Py_ssize_t k) noexcept nogil:
    # after the prefix b'{"ev":"A","sym":"T","v":'
    p = _put_uint(p, <uint64_t>x.v[k])
    p = _put_lit(p, b',"av":', 6)
    p = _put_uint(p, <uint64_t>x.av[k])
    p = _put_lit(p, b',"op":', 6)
    p = _put_cents(p, x.op[k])
    p = _put_lit(p, b',"vw":', 6)
    p = _put_fixed4(p, x.vw4[k])
    p = _put_lit(p, b',"o":', 5)
    p = _put_cents(p, x.o[k])
    p = _put_lit(p, b',"c":', 5)
    p = _put_cents(p, x.c[k])
    p = _put_lit(p, b',"h":', 5)
    p = _put_cents(p, x.h[k])
    p = _put_lit(p, b',"l":', 5)
    p = _put_cents(p, x.l[k])
    p = _put_lit(p, b',"a":', 5)
    p = _put_fixed4(p, x.a4[k])
    p = _put_lit(p, b',"z":', 5)
    p = _put_uint(p, <uint64_t>x.z[k])
    p = _put_lit(p, b',"s":', 5)
    p = _put_uint(p, <uint64_t>x.t_ms)
    p = _put_lit(p, b',"e":', 5)
    p = _put_uint(p, <uint64_t>(x.t_ms + 1000))
    p[0] = 125  # '}'
    return p + 1


cdef _encode_frames(list prefixes, const int64_t[::1] rows, const _Cols* cols, _put_elem put,
                    Py_ssize_t elem_max, Py_ssize_t per_frame, bint arr):
    """The frame loop shared by the encoders: ``prefixes[row] + put(...)`` per element,
    ``per_frame`` elements per frame (a JSON array when ``arr``), header in front."""
    cdef Py_ssize_t n = rows.shape[0]
    cdef Py_ssize_t i, j, k, maxpre = 0, start, plen, frames = 0
    cdef bytes pre
    if per_frame < 1:
        raise ValueError("per_frame must be >= 1")
    for i in range(n):
        pre = <bytes>prefixes[rows[i]]
        if PyBytes_GET_SIZE(pre) > maxpre:
            maxpre = PyBytes_GET_SIZE(pre)
    out = PyByteArray_FromStringAndSize(NULL, n * (maxpre + elem_max) + (n // per_frame + 2) * 12 + 16)
    cdef char* base = PyByteArray_AS_STRING(out)
    cdef char* p = base
    cdef char* payload
    i = 0
    while i < n:
        j = min(n, i + per_frame)
        start = p - base
        payload = p + 10          # room for the longest header; moved down once the size is known
        p = payload
        if arr:
            p[0] = 91  # '['
            p += 1
        for k in range(i, j):
            if k > i:
                p[0] = 44  # ','
                p += 1
            pre = <bytes>prefixes[rows[k]]
            p = _put_lit(p, PyBytes_AS_STRING(pre), PyBytes_GET_SIZE(pre))
            p = put(p, cols, k)
        if arr:
            p[0] = 93  # ']'
            p += 1
        plen = p - payload
        start += _frame_header(base + start, plen)
        memmove(base + start, payload, plen)
        p = base + start + plen
        frames += 1
        i = j
    PyByteArray_Resize(out, p - base)
    return out, frames


def encode_vantafin_frames(list prefixes, const int64_t[::1] rows, const int64_t[::1] o,
                           const int64_t[::1] h, const int64_t[::1] l, const int64_t[::1] c,
                           const int64_t[::1] v, int64_t ts_ms, Py_ssize_t per_frame,
                           bint bare_single=True):
    """WebSocket text frames (server side, unmasked) of Vantafin ``live_quote_second`` bars.

    ``prefixes[row]`` is ``b'{"type":"live_quote_second","ticker":"T","open":'``; prices
    are integer cents.  Bars are grouped ``per_frame`` to a frame as JSON arrays (a bare
    object when ``per_frame == 1 and bare_single``).  Returns ``(bytearray, n_frames)``.
    """
    cdef _Cols x
    if rows.shape[0] == 0:
        return bytearray(), 0
    x.o = &o[0]
    x.h = &h[0]
    x.l = &l[0]
    x.c = &c[0]
    x.v = &v[0]
    x.t_ms = ts_ms
    return _encode_frames(prefixes, rows, &x, _put_ls, 160, per_frame, not (per_frame == 1 and bare_single))


def encode_massive_frames(list prefixes, const int64_t[::1] rows, const int64_t[::1] v,
                          const int64_t[::1] av, const int64_t[::1] op, const int64_t[::1] vw4,
                          const int64_t[::1] o, const int64_t[::1] c, const int64_t[::1] h,
                          const int64_t[::1] l, const int64_t[::1] a4, const int64_t[::1] z,
                          int64_t s_ms, Py_ssize_t per_frame):
    """WebSocket text frames of Massive/Polygon ``A`` aggregates (JSON arrays, server side).

    ``prefixes[row]`` is ``b'{"ev":"A","sym":"T","v":'``; prices in integer cents,
    ``vw4``/``a4`` in 1e-4 units.  Returns ``(bytearray, n_frames)``.
    """
    cdef _Cols x
    if rows.shape[0] == 0:
        return bytearray(), 0
    x.o = &o[0]
    x.h = &h[0]
    x.l = &l[0]
    x.c = &c[0]
    x.v = &v[0]
    x.av = &av[0]
    x.op = &op[0]
    x.vw4 = &vw4[0]
    x.a4 = &a4[0]
    x.z = &z[0]
    x.t_ms = s_ms
    return _encode_frames(prefixes, rows, &x, _put_agg, 300, per_frame, True)


