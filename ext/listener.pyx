# cython: freethreading_compatible=False
"""picows listener for fastfeed: frame checks, reassembly, hand-off of complete text messages.

The listener knows nothing about any feed or file.  It enforces the transport rules
(RSV bits, UTF-8, binary and continuation frames, message size) and hands every complete
text message to a *sink*: in C (a ``MessageSink`` capsule, ``ext/sink.pxd``: one C call
per message, no Python object) or a Python callable ``sink(payload, recv_ns)``. A
:class:`RawTap` can take a copy of every message first (payload and receive time,
memcpy'd into blocks its consumer hands back when done: the recorder).  Everything else (reconnects, events,
pings) is driven by an *owner* (``fastfeed.transport.Connection``) through a few
plain Python callbacks that are only called on rare events.

Hot path: one ``on_ws_frame`` call per frame; the receive time is read once per
socket read (the first frame of a buffer), counters are C integers flushed into the
shared ``Stats`` once per socket read, the payload is picows' read buffer (or our
reassembly buffer for fragmented messages), never copied (but by a tap).
"""
cimport cython
from cpython.buffer cimport PyBUF_READ
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.memoryview cimport PyMemoryView_FromMemory
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy
from posix.time cimport CLOCK_MONOTONIC, CLOCK_REALTIME, clock_gettime, timespec

from picows.picows cimport WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport
from sink cimport MessageSink, is_sink_capsule, sink_of

# kinds of protocol errors (names used in events and counters)
KIND_RSV = "rsv"
KIND_UTF8 = "utf8"
KIND_BINARY = "binary"
KIND_TOO_BIG = "message_too_big"
KIND_FRAGMENT = "fragment"
KIND_SESSION = "session_exception"

cdef Py_ssize_t _SHRINK_ABOVE = 1 << 20   # reassembly buffer kept up to 1 MiB between messages


cdef inline int64_t _now_ns(int clock) noexcept nogil:
    cdef timespec ts
    clock_gettime(clock, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef Py_ssize_t utf8_invalid_at(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """Offset of the first byte of an invalid UTF-8 sequence in ``p[0:n]``, or -1 if valid.

    ASCII is checked 32 bytes at a time (the common case for JSON feeds); the rest
    is a strict RFC 3629 check (no overlongs, no surrogates, nothing above U+10FFFF).
    """
    cdef Py_ssize_t i = 0
    cdef uint64_t w0, w1, w2, w3
    cdef uint8_t c, c1, c2, c3
    cdef uint64_t HI = 0x8080808080808080ULL
    while True:
        while i + 32 <= n:
            memcpy(&w0, p + i, 8)
            memcpy(&w1, p + i + 8, 8)
            memcpy(&w2, p + i + 16, 8)
            memcpy(&w3, p + i + 24, 8)
            if (w0 | w1 | w2 | w3) & HI:
                break
            i += 32
        # byte-wise until the next non-ASCII byte or the end
        while i < n and p[i] < 0x80:
            i += 1
            if i + 32 <= n and (i & 31) == 0:
                break
        if i >= n:
            return -1
        c = p[i]
        if c < 0x80:
            continue
        if c < 0xC2:
            return i
        if c < 0xE0:
            if i + 1 >= n or (p[i + 1] & 0xC0) != 0x80:
                return i
            i += 2
        elif c < 0xF0:
            if i + 2 >= n:
                return i
            c1 = p[i + 1]
            c2 = p[i + 2]
            if (c1 & 0xC0) != 0x80 or (c2 & 0xC0) != 0x80:
                return i
            if c == 0xE0 and c1 < 0xA0:
                return i          # overlong
            if c == 0xED and c1 >= 0xA0:
                return i          # surrogate
            i += 3
        elif c < 0xF5:
            if i + 3 >= n:
                return i
            c1 = p[i + 1]
            c2 = p[i + 2]
            c3 = p[i + 3]
            if (c1 & 0xC0) != 0x80 or (c2 & 0xC0) != 0x80 or (c3 & 0xC0) != 0x80:
                return i
            if c == 0xF0 and c1 < 0x90:
                return i          # overlong
            if c == 0xF4 and c1 >= 0x90:
                return i          # > U+10FFFF
            i += 4
        else:
            return i


def utf8_valid(data) -> bool:
    """``True`` if the bytes-like ``data`` is valid UTF-8 (the listener's check, for tests)."""
    cdef const uint8_t[::1] v = memoryview(data).cast("B")
    if v.shape[0] == 0:
        return True
    return utf8_invalid_at(&v[0], v.shape[0]) < 0


def _utf8_check_ns(data, Py_ssize_t repeat=100000):
    """Mean ns of one ``utf8_invalid_at`` over ``data`` (measures the check alone, for the docs)."""
    cdef const uint8_t[::1] v = memoryview(data).cast("B")
    cdef Py_ssize_t i, r = 0
    cdef int64_t t0, t1
    cdef const uint8_t* ptr = &v[0]
    cdef Py_ssize_t n = v.shape[0]
    t0 = _now_ns(CLOCK_MONOTONIC)
    with nogil:
        for i in range(repeat):
            r += utf8_invalid_at(ptr, n - (i & 1))
    t1 = _now_ns(CLOCK_MONOTONIC)
    return (t1 - t0) / <double>repeat


@cython.final
cdef class FeedListener(WSListener):
    """One connection's picows listener.

    :param sink: an object with ``message_sink()`` returning a ``MessageSink`` capsule
        (``ext/sink.pxd``: messages are handed over in C, its ``on_buffer_end`` replaces
        ``buffer_end``; the listener keeps the object), or a callable ``sink(payload, recv_ns)``:
        ``payload`` is a zero-copy ``memoryview`` valid **only during the call** (copy it to
        keep it: it is released when the call returns, so later use raises ``ValueError``,
        never reads reused memory); ``recv_ns`` is ``time.time_ns()`` taken when the socket
        read that completed the message returned.  Exceptions escaping the sink are caught
        and counted.
    :param owner: object with ``_ws_connected(transport)``, ``_ws_disconnected(transport)``,
        ``_ws_protocol_error(kind, detail, close_code)``, ``_ws_close_received(code, reason)``,
        ``_ws_sink_error(exc)`` (any may be absent: ``None`` owner is allowed for tests).
    :param stats: optional ``fastfeed.stats.Stats``: frames, messages, bytes and
        protocol_errors are added to it once per socket read.
    :param max_message_size: largest reassembled message; larger closes with 1009.
    :param buffer_end: optional callable ``buffer_end()`` (e.g. ``session.on_buffer_end``),
        called after the last frame of every socket read (picows ``frame.last_in_buffer``)
        and once more when the connection is lost, so that a session batching the messages
        of one read (one engine update per read) applies them before waiting for more data.
        Exceptions are caught and counted like the sink's.
    :param tap: optional :class:`RawTap`: every complete text message is copied into it
        (``memcpy``, with ``recv_ns``) before the sink is called: recording without a Python
        call per message.  The sink is then the *untapped* session's.
    """

    cdef:
        object _sink
        bint _c_sink
        MessageSink _c
        object _buffer_end
        RawTap _tap
        object _owner
        object _stats
        readonly Py_ssize_t max_message_size
        # reassembly
        char* _frag
        Py_ssize_t _frag_size
        Py_ssize_t _frag_cap
        int _frag_state            # 0 none, 1 text in progress, 2 binary (skipped)
        # state
        readonly bint closing
        bint _new_buffer
        object _recv_ns
        int64_t _recv_ns_c
        readonly int64_t last_recv_mono_ns
        readonly object close_code     # code of a CLOSE received from the peer (int) or None
        readonly object close_reason
        # counters
        readonly unsigned long long frames
        readonly unsigned long long messages
        readonly unsigned long long bytes
        readonly unsigned long long protocol_errors
        readonly unsigned long long binary_frames
        readonly unsigned long long sink_errors
        readonly unsigned long long pings
        readonly unsigned long long pongs
        readonly unsigned long long fragments
        unsigned long long _f_frames, _f_messages, _f_bytes, _f_protocol_errors

    def __cinit__(self):
        self._frag = NULL
        self._frag_size = 0
        self._frag_cap = 0

    def __init__(self, sink, owner=None, stats=None, Py_ssize_t max_message_size=16 * 1024 * 1024,
                 buffer_end=None, RawTap tap=None):
        provider = getattr(sink, "message_sink", None)
        self._c_sink = provider is not None
        if self._c_sink:
            capsule = provider()
            if not is_sink_capsule(capsule):
                raise TypeError("message_sink() must return a MessageSink capsule")
            self._c = sink_of(capsule)[0]   # borrowed: self._sink keeps its owner alive
            buffer_end = None
        elif not callable(sink):
            raise TypeError("sink must have message_sink() or be callable")
        self._sink = sink
        self._buffer_end = buffer_end
        self._tap = tap
        self._owner = owner
        self._stats = stats
        self.max_message_size = max_message_size
        self._frag_state = 0
        self.closing = False
        self._new_buffer = True
        self._recv_ns = 0
        self.last_recv_mono_ns = _now_ns(CLOCK_MONOTONIC)
        self.close_code = None
        self.close_reason = None

    def __dealloc__(self):
        if self._frag != NULL:
            PyMem_Free(self._frag)
            self._frag = NULL

    # -- picows callbacks ---------------------------------------------------------------

    cpdef on_ws_connected(self, WSTransport transport):
        self.last_recv_mono_ns = _now_ns(CLOCK_MONOTONIC)
        if self._owner is not None:
            self._owner._ws_connected(transport)

    cpdef on_ws_disconnected(self, WSTransport transport):
        # a read cut short (or a CLOSE mid-buffer): what the session holds for this read is
        # applied before it hears of the disconnect
        self._end_of_buffer()
        self._frag_state = 0
        self._frag_size = 0
        if self._owner is not None:
            self._owner._ws_disconnected(transport)

    cpdef is_user_specific_pong(self, WSFrame frame):
        return False

    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        cdef WSMsgType t
        if self.closing:
            if frame.last_in_buffer:
                self._end_of_buffer()
            return
        self.frames += 1
        if self._new_buffer:
            self._recv_ns_c = _now_ns(CLOCK_REALTIME)
            self._recv_ns = self._recv_ns_c
            self.last_recv_mono_ns = _now_ns(CLOCK_MONOTONIC)
        self._new_buffer = frame.last_in_buffer
        try:
            t = frame.msg_type
            if frame.payload_size > self.max_message_size and (
                    t == WSMsgType.TEXT or t == WSMsgType.BINARY or t == WSMsgType.CONTINUATION):
                # picows refuses such a frame from its header (closing with 1009) but may still
                # hand it over once its payload has arrived: never deliver it, count it once
                self._frag_state = 0
                self._frag_size = 0
                self._protocol_error(transport, KIND_TOO_BIG, "frame exceeds max_message_size",
                                     WSCloseCode.MESSAGE_TOO_BIG)
            elif frame.rsv1 or frame.rsv2 or frame.rsv3:
                self._protocol_error(transport, KIND_RSV, "frame with RSV bits set",
                                     WSCloseCode.PROTOCOL_ERROR)
            else:
                t = frame.msg_type
                if t == WSMsgType.TEXT:
                    if self._frag_state != 0:
                        self._protocol_error(transport, KIND_FRAGMENT,
                                             "new data frame inside a fragmented message",
                                             WSCloseCode.PROTOCOL_ERROR)
                    elif frame.fin:
                        self._deliver(transport, frame.payload_ptr, frame.payload_size)
                    else:
                        self._frag_state = 1
                        self._frag_size = 0
                        self._append(transport, frame.payload_ptr, frame.payload_size)
                elif t == WSMsgType.CONTINUATION:
                    self.fragments += 1
                    if self._frag_state == 1:
                        if self._append(transport, frame.payload_ptr, frame.payload_size) and frame.fin:
                            self._frag_state = 0
                            self._deliver(transport, self._frag, self._frag_size)
                            self._frag_size = 0
                            if self._frag_cap > _SHRINK_ABOVE:
                                PyMem_Free(self._frag)
                                self._frag = NULL
                                self._frag_cap = 0
                    elif self._frag_state == 2:
                        if frame.fin:
                            self._frag_state = 0
                    else:
                        self._protocol_error(transport, KIND_FRAGMENT,
                                             "continuation frame without a message to continue",
                                             WSCloseCode.PROTOCOL_ERROR)
                elif t == WSMsgType.BINARY:
                    if self._frag_state != 0:
                        self._protocol_error(transport, KIND_FRAGMENT,
                                             "new data frame inside a fragmented message",
                                             WSCloseCode.PROTOCOL_ERROR)
                    else:
                        self.binary_frames += 1
                        if not frame.fin:
                            self._frag_state = 2
                        # counted and skipped (docs/PROTOCOLS.md §4), the connection stays up
                        self._protocol_error(transport, KIND_BINARY, "binary data frame skipped", 0)
                elif t == WSMsgType.PING:
                    self.pings += 1
                    transport.send_pong(frame.get_payload_as_bytes())
                elif t == WSMsgType.PONG:
                    self.pongs += 1
                elif t == WSMsgType.CLOSE:
                    self._close_received(transport, frame)
        except Exception as exc:   # never let anything escape into picows
            self.sink_errors += 1
            self._report_sink_error(exc)
        if frame.last_in_buffer:
            self._end_of_buffer()

    # -- internals ----------------------------------------------------------------------

    cdef inline void _deliver(self, WSTransport transport, char* ptr, Py_ssize_t size):
        if utf8_invalid_at(<const uint8_t*>ptr, size) >= 0:
            self._protocol_error(transport, KIND_UTF8, "text message is not valid UTF-8",
                                 WSCloseCode.PROTOCOL_ERROR)
            return
        self.messages += 1
        self.bytes += size
        if self._tap is not None:
            try:
                self._tap.add(_TAG_MESSAGE, ptr, size, self._recv_ns_c)
            except Exception:      # MemoryError: the tap is its consumer's; the feed goes on
                self._tap.stopped = True
        if self._c_sink:
            self._c.on_message(self._c.ctx, ptr, size, self._recv_ns_c)
            return
        mv = PyMemoryView_FromMemory(ptr, size, PyBUF_READ)
        try:
            self._sink(mv, self._recv_ns)
        except Exception as exc:
            self.sink_errors += 1
            self._report_sink_error(exc)
        try:
            # a view kept past the call would point into memory that is reused or freed:
            # release it, so such use raises ValueError instead of reading garbage
            mv.release()
        except Exception:
            self.sink_errors += 1   # the session kept an export of the view (contract breach)

    cdef bint _append(self, WSTransport transport, char* ptr, Py_ssize_t size):
        cdef Py_ssize_t need = self._frag_size + size
        cdef Py_ssize_t cap
        cdef char* p
        if need > self.max_message_size:
            self._frag_state = 0
            self._frag_size = 0
            self._protocol_error(transport, KIND_TOO_BIG,
                                 "fragmented message exceeds max_message_size",
                                 WSCloseCode.MESSAGE_TOO_BIG)
            return False
        if need > self._frag_cap:
            cap = max(need, 2 * self._frag_cap, 4096)
            if cap > self.max_message_size:
                cap = self.max_message_size
            p = <char*>PyMem_Realloc(self._frag, cap)
            if p == NULL:
                raise MemoryError()
            self._frag = p
            self._frag_cap = cap
        if size:
            memcpy(self._frag + self._frag_size, ptr, size)
        self._frag_size = need
        return True

    cdef void _protocol_error(self, WSTransport transport, str kind, str detail, int close_code):
        self.protocol_errors += 1
        if close_code:
            self.closing = True
            try:
                transport.send_close(<WSCloseCode>close_code, detail.encode())
                transport.disconnect()
            except Exception:
                pass
        if self._owner is not None:
            try:
                self._owner._ws_protocol_error(kind, detail, close_code)
            except Exception:
                pass

    cdef void _close_received(self, WSTransport transport, WSFrame frame):
        cdef int code = <int>frame.get_close_code()
        reason = None
        try:
            reason = frame.get_close_reason()
        except Exception:
            pass
        self.closing = True
        self.close_code = code
        self.close_reason = reason
        try:
            # answer the CLOSE with the same code (1000 when the peer gave none), then hang up
            # (codes that must never be sent - none, 1005, 1006, 1015 - are answered with 1000)
            transport.send_close(<WSCloseCode>(1000 if code < 1000 or code in (1005, 1006, 1015) else code), None)
            transport.disconnect()
        except Exception:
            pass
        if self._owner is not None:
            try:
                self._owner._ws_close_received(code, reason)
            except Exception:
                pass

    cdef void _report_sink_error(self, exc):
        if self._owner is not None:
            try:
                self._owner._ws_sink_error(exc)
            except Exception:
                pass

    cdef void _end_of_buffer(self):
        """The socket read is done: tell the session (``buffer_end``), then flush counters."""
        if self._c_sink:
            if self._c.on_buffer_end != NULL:
                self._c.on_buffer_end(self._c.ctx)
        elif self._buffer_end is not None:
            try:
                self._buffer_end()
            except Exception as exc:
                self.sink_errors += 1
                self._report_sink_error(exc)
        self._flush()

    cdef void _flush(self):
        cdef object s = self._stats
        if s is None:
            return
        try:
            if self.frames != self._f_frames:
                s.frames += <long long>(self.frames - self._f_frames)
                self._f_frames = self.frames
            if self.messages != self._f_messages:
                s.messages += <long long>(self.messages - self._f_messages)
                s.bytes += <long long>(self.bytes - self._f_bytes)
                self._f_messages = self.messages
                self._f_bytes = self.bytes
            if self.protocol_errors != self._f_protocol_errors:
                s.protocol_errors += <long long>(self.protocol_errors - self._f_protocol_errors)
                self._f_protocol_errors = self.protocol_errors
        except Exception:
            pass

    def abandon(self):
        """Ignore every later frame of this connection (its owner is closing it)."""
        self.closing = True

    def flush_stats(self):
        """Add the counters not yet added to ``stats`` (done once per socket read anyway)."""
        self._flush()

    def counters(self):
        """This connection's counters as a dict."""
        return {
            "frames": self.frames, "messages": self.messages, "bytes": self.bytes,
            "protocol_errors": self.protocol_errors, "binary_frames": self.binary_frames,
            "sink_errors": self.sink_errors, "pings": self.pings, "pongs": self.pongs,
            "fragments": self.fragments,
        }

    def idle_ns(self):
        """Nanoseconds since the last socket read that delivered frames (monotonic)."""
        return _now_ns(CLOCK_MONOTONIC) - self.last_recv_mono_ns


# -- raw tap: the messages copied into preallocated blocks, in C --------------------------------

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_DECREF
from cpython.bytearray cimport PyByteArray_AS_STRING as _BA_STR

#: the tag of a message the listener received (other tags are the consumer's own)
TAG_MESSAGE = 1
cdef enum:
    _TAG_MESSAGE = 1


@cython.final
cdef class RawBlock:
    """A block of tapped entries: ``n`` entries of ``tags()`` (u8), ``times()`` (i64 ns) and
    ``lengths()`` (u32), whose payloads lie back to back in ``payloads()``. Filled by
    :class:`RawTap` on the producer thread; read by the consumer once sealed."""
    cdef readonly object buf, lens, tagv, nsv
    cdef char* p
    cdef uint32_t* p_len
    cdef uint8_t* p_tag
    cdef int64_t* p_ns
    cdef readonly Py_ssize_t n, plen, cap, max_entries
    cdef readonly int64_t first_ns

    def __cinit__(self, Py_ssize_t cap, Py_ssize_t max_entries):
        self.buf = bytearray(cap)
        self.lens = bytearray(4 * max_entries)
        self.tagv = bytearray(max_entries)
        self.nsv = bytearray(8 * max_entries)
        self.p = _BA_STR(self.buf)
        self.p_len = <uint32_t*>_BA_STR(self.lens)
        self.p_tag = <uint8_t*>_BA_STR(self.tagv)
        self.p_ns = <int64_t*>_BA_STR(self.nsv)
        self.cap = cap
        self.max_entries = max_entries
        self.n = 0
        self.plen = 0
        self.first_ns = 0

    def payloads(self):
        """The payloads, back to back (a memoryview of ``plen`` bytes)."""
        return memoryview(self.buf)[:self.plen]

    def lengths(self):
        """Payload length of each entry (a uint32 memoryview of ``n`` items)."""
        return memoryview(self.lens)[:4 * self.n].cast("I")

    def tags(self):
        """Tag of each entry (a uint8 memoryview of ``n`` items)."""
        return memoryview(self.tagv)[:self.n]

    def times(self):
        """Receive time (ns) of each entry (an int64 memoryview of ``n`` items)."""
        return memoryview(self.nsv)[:8 * self.n].cast("q")


@cython.final
cdef class RawTap:
    """A copy of every message (and of the entries its consumer adds), in C: each entry (a
    tag, its payload and its receive time) is ``memcpy``'d into the current
    :class:`RawBlock`; no Python object per message. A full block (``max_entries``
    entries, or ``block_payload`` bytes) is sealed and queued for the consumer (e.g. the
    recorder's writer thread), which also seals the current block itself (:meth:`seal`)
    whenever it wakes, takes blocks with :meth:`pop` and hands them back with
    :meth:`release` for reuse. The tap knows no file format.

    Thread safety: the producer's :meth:`add` and the consumer's :meth:`seal`/:meth:`pop`
    touch the shared state only in C code that runs no Python code in between (so,
    under the GIL, each is atomic with respect to the other thread); blocks are queued
    in a C ring in the order they were sealed.

    Never raises on the producer side, never blocks: when more than ``max_pending``
    payload bytes wait for the consumer, the tap stops (``on_overflow(pending)`` is
    called once, later entries are counted in :attr:`dropped`); :meth:`stop` does the
    same without the callback (I/O errors, close). ``wake()`` is called when a block
    is sealed with more than ``wake_bytes`` waiting.
    """
    cdef RawBlock cur
    cdef PyObject** ring
    cdef Py_ssize_t ring_cap, head, tail
    cdef list free
    cdef readonly Py_ssize_t block_payload, max_free, max_entries
    cdef public long long max_pending, wake_bytes
    cdef readonly long long queued_bytes, released_bytes
    cdef readonly unsigned long long dropped, entries
    cdef readonly bint stopped
    cdef object wake, on_overflow

    def __cinit__(self):
        self.ring = NULL

    def __init__(self, *, Py_ssize_t block_payload=256 * 1024, Py_ssize_t max_entries=4096,
                 long long max_pending=256 << 20, long long wake_bytes=4 << 20, wake=None,
                 on_overflow=None, Py_ssize_t ring_cap=65536, Py_ssize_t max_free=32):
        if block_payload < 1 or ring_cap < 2 or max_entries < 1:
            raise ValueError("block_payload, max_entries and ring_cap must be positive")
        self.block_payload = block_payload
        self.max_entries = max_entries
        self.max_pending = max_pending
        self.wake_bytes = wake_bytes
        self.wake = wake
        self.on_overflow = on_overflow
        self.max_free = max_free
        self.free = []
        self.ring = <PyObject**>PyMem_Malloc(ring_cap * sizeof(PyObject*))
        if self.ring == NULL:
            raise MemoryError()
        self.ring_cap = ring_cap
        self.head = 0
        self.tail = 0
        self.cur = None

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.ring != NULL:
            for i in range(self.head, self.tail):
                Py_DECREF(<object>self.ring[i % self.ring_cap])
            PyMem_Free(self.ring)
            self.ring = NULL

    # -- producer side --------------------------------------------------------------------

    cdef int add(self, int tag, const char* ptr, Py_ssize_t size, int64_t ns) except -1:
        """Copy one entry in; never blocks. (-1 only for MemoryError.)"""
        cdef RawBlock b
        cdef Py_ssize_t k
        if self.stopped:
            self.dropped += 1
            return 0
        b = self.cur
        if b is None or b.n == b.max_entries or b.plen + size > b.cap:
            if b is not None and b.n:
                self._seal()
                if self.stopped:
                    self.dropped += 1
                    return 0
            b = self._new_block(size)
        k = b.n
        b.p_len[k] = <uint32_t>size
        b.p_tag[k] = <uint8_t>tag
        b.p_ns[k] = ns
        if size:
            memcpy(b.p + b.plen, ptr, size)
        if k == 0:
            b.first_ns = ns
        b.n = k + 1
        b.plen += size
        self.entries += 1
        self.queued_bytes += size
        if self.queued_bytes - self.released_bytes > self.max_pending:
            self._overflow()
        return 0

    cdef RawBlock _new_block(self, Py_ssize_t size):
        cdef RawBlock b = None
        if size <= self.block_payload:
            if self.free:
                b = <RawBlock>self.free.pop()
            else:
                b = RawBlock(self.block_payload, self.max_entries)
        else:
            b = RawBlock(size, self.max_entries)   # a message larger than a block: a block of its own
        b.n = 0
        b.plen = 0
        self.cur = b             # after every Python call above: the consumer sees it only now
        return b

    cdef int _seal(self) except -1:
        """Queue the current block (pure C up to the wake call)."""
        cdef RawBlock b = self.cur
        if b is None or b.n == 0:
            return 0
        if self.tail - self.head >= self.ring_cap:
            self._overflow()
            return 0
        Py_INCREF(b)
        self.ring[self.tail % self.ring_cap] = <PyObject*>b
        self.tail += 1
        self.cur = None
        if self.wake is not None and self.queued_bytes - self.released_bytes > self.wake_bytes:
            try:
                self.wake()
            except Exception:
                pass
        return 0

    cdef void _overflow(self):
        cdef long long pending = self.queued_bytes - self.released_bytes
        if self.stopped:
            return
        self.stopped = True
        if self.on_overflow is not None:
            try:
                self.on_overflow(pending)
            except Exception:
                pass

    def message(self, payload, int64_t recv_ns):
        """Tap one received message (any bytes-like object; copied)."""
        self.entry(_TAG_MESSAGE, payload, recv_ns)

    def entry(self, int tag, payload, int64_t recv_ns):
        """Tap one entry of ``tag`` (:data:`TAG_MESSAGE`, or the consumer's own tags)."""
        cdef Py_buffer view
        if self.stopped:
            self.dropped += 1
            return
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            self.add(tag, <const char*>view.buf, view.len, recv_ns)
        finally:
            PyBuffer_Release(&view)

    def sink(self, inner):
        """A callable ``(payload, recv_ns)`` that taps the message, then calls ``inner``."""
        return TapSink(self, inner)

    def stop(self):
        """Refuse later entries (counted in :attr:`dropped`); what is queued stays queued."""
        self.stopped = True

    # -- consumer side --------------------------------------------------------------------

    def seal(self):
        """Queue the current block, if it holds anything (the consumer, on waking)."""
        self._seal()

    def pop(self):
        """The oldest sealed block, or None. Give it back with :meth:`release` once used."""
        cdef RawBlock b
        cdef Py_ssize_t i
        if self.head == self.tail:
            return None
        i = self.head % self.ring_cap
        b = <RawBlock>self.ring[i]     # a new reference
        Py_DECREF(b)                   # the ring's (b still holds one)
        self.ring[i] = NULL
        self.head += 1
        return b

    def release(self, RawBlock b):
        """A popped block was used (or discarded): its bytes no longer count as pending."""
        self.released_bytes += b.plen
        if b.cap == self.block_payload and len(self.free) < self.max_free:
            self.free.append(b)

    @property
    def pending_bytes(self):
        """Payload bytes tapped and not yet released."""
        return self.queued_bytes - self.released_bytes

    @property
    def pending_entries(self):
        """Entries in the current block and in sealed blocks not yet popped."""
        cdef Py_ssize_t i, n = 0
        if self.cur is not None:
            n = self.cur.n
        for i in range(self.head, self.tail):
            n += (<RawBlock>self.ring[i % self.ring_cap]).n
        return n


@cython.final
cdef class TapSink:
    """``sink(payload, recv_ns)``: tap the message on a :class:`RawTap`, then call ``inner``
    (in C: no Python frame of its own)."""
    cdef RawTap tap
    cdef readonly object inner

    def __init__(self, RawTap tap, inner):
        self.tap = tap
        self.inner = inner

    def __call__(self, payload, recv_ns):
        cdef Py_buffer view
        cdef RawTap tap = self.tap
        if tap.stopped:
            tap.dropped += 1
        else:
            PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
            try:
                tap.add(_TAG_MESSAGE, <const char*>view.buf, view.len, recv_ns)
            finally:
                PyBuffer_Release(&view)
        return self.inner(payload, recv_ns)
