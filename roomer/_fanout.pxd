# The compiled fan-out engine's C-level API.
from picows.picows cimport MemoryBuffer, WSListener, WSTransport


cdef class Fanout:
    cdef:
        list _dirty
        list _overflowed
        list _drain_waiters
        list _grown
        list _trims
        bint _scheduled
        bint _turn_scheduled
        object _loop
        object _flush_cb
        object _end_turn_cb
        object _on_overflow
        readonly Py_ssize_t outbox_limit
        readonly Py_ssize_t hard_limit
        readonly Py_ssize_t flush_threshold
        readonly bint sync
        readonly bint disconnect_slow
        readonly unsigned long long deliveries
        readonly unsigned long long dropped
        readonly unsigned long long writes
        readonly unsigned long long bytes_out
        readonly unsigned long long read_buffer_trims
        readonly double write_delay
        readonly Py_ssize_t replay_limit
        readonly Py_ssize_t turn_bytes
        Py_ssize_t _turn_receivers
        unsigned long long _turn

    cdef int _schedule(self) except -1
    cdef int _schedule_turn_end(self) except -1
    cdef int _end_turn(self) except -1
    cdef int _drained(self) except -1
    cdef Py_ssize_t _broadcast(self, dict members, bytes frame_v1, bytes frame_v2,
                               object exclude, bint control) except -1
    cdef int _flush_all(self) except -1


cdef class Peer(WSListener):
    cdef:
        readonly object transport
        WSTransport _ws
        object _write
        object _protocol
        MemoryBuffer _rbuf
        Py_ssize_t _rbuf_base
        char* _buf
        Py_ssize_t _size
        Py_ssize_t _cap
        readonly Fanout engine
        readonly unsigned long long dropped
        readonly double over_since
        bint _paused
        bint _dirty
        bint _grown
        bint _trim_pending
        unsigned long long _turn_seen
        readonly bint closing
        readonly bint overflowed
        public bint v2
        public bytearray replay

    cdef int _drop(self, Py_ssize_t size) except -1
    cdef int _enqueue(self, const char* data, Py_ssize_t size, bint control) except -1
    cdef int _overflow(self) except -1
    cdef int _flush(self) except -1
    cdef int _record(self, Py_ssize_t size) except -1
    cdef int _grow(self, Py_ssize_t need) except -1
    cdef int _trim_read_buffer(self) except -1
