# The compiled fan-out engine's C-level API.
from picows.picows cimport WSListener, WSTransport


cdef class Fanout:
    cdef:
        list _dirty
        list _overflowed
        list _drain_waiters
        bint _scheduled
        object _loop
        object _flush_cb
        object _on_overflow
        readonly Py_ssize_t outbox_limit
        readonly Py_ssize_t flush_threshold
        readonly bint sync
        readonly bint disconnect_slow
        readonly unsigned long long deliveries
        readonly unsigned long long dropped
        readonly unsigned long long writes
        readonly unsigned long long bytes_out
        readonly Py_ssize_t turn_bytes

    cdef void _schedule(self) noexcept
    cdef void _drained(self) noexcept
    cdef Py_ssize_t _broadcast(self, dict members, const char* data, Py_ssize_t size,
                               object exclude) except -1
    cdef int _flush_all(self) except -1


cdef class Peer(WSListener):
    cdef:
        readonly object transport
        WSTransport _ws
        object _write
        char* _buf
        Py_ssize_t _size
        Py_ssize_t _cap
        readonly Fanout engine
        readonly unsigned long long dropped
        readonly double over_since
        bint _paused
        bint _dirty
        bint _overflowing
        readonly bint closing

    cdef int _enqueue(self, const char* data, Py_ssize_t size) except -1
    cdef int _flush(self) except -1
    cdef int _grow(self, Py_ssize_t need) except -1
