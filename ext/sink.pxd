# cython: language_level=3
"""The C contract between the transport's listener and a message sink.

A sink provider (a feed session: ``session.message_sink()``, its filler's) returns a
:c:type:`MessageSink` inside a capsule; the listener then delivers every complete text
message with one C call, without a Python object or a Python call per message. The
pointer is borrowed: the listener keeps the provider itself referenced (a reference the
garbage collector sees, so a dropped feed is collected). Only C declarations live here
(no module to import at run time), so the listener and the sink need not know each
other's module.

``on_message(ctx, payload, size, recv_ns)``: ``payload[0:size]`` is valid only during the
call (the listener's read buffer); ``recv_ns`` is the wall time (ns) the socket read that
completed the message returned. ``on_buffer_end(ctx)``: the listener handed over the last
message of a socket read (and once more when the connection is lost). Neither may raise:
a sink counts its own errors. Both run on the event loop thread with the GIL held.
"""
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_IsValid
from libc.stdint cimport int64_t

ctypedef void (*sink_message_fn)(void* ctx, const char* payload, Py_ssize_t size, int64_t recv_ns) noexcept
ctypedef void (*sink_end_fn)(void* ctx) noexcept

ctypedef struct MessageSink:
    void* ctx                       # the sink object (borrowed: its provider keeps it alive)
    sink_message_fn on_message
    sink_end_fn on_buffer_end


cdef inline bint is_sink_capsule(object obj):
    """True when ``obj`` is a capsule holding a :c:type:`MessageSink`."""
    return PyCapsule_IsValid(obj, b"fastfeed.MessageSink") != 0


cdef inline MessageSink* sink_of(object capsule) except NULL:
    """The :c:type:`MessageSink` inside ``capsule`` (ValueError if it is not one)."""
    return <MessageSink*>PyCapsule_GetPointer(capsule, b"fastfeed.MessageSink")
