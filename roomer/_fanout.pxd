# The compiled fan-out engine's C-level API.
from libc.stdint cimport uint8_t
from picows.picows cimport MemoryBuffer, WSFrame, WSListener, WSTransport


cdef class Relay


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
        readonly unsigned long long batches
        readonly unsigned long long read_buffer_trims
        readonly double write_delay
        readonly Py_ssize_t replay_limit
        readonly Py_ssize_t turn_bytes
        Py_ssize_t _turn_receivers
        # Where a flush makes a batch-frame client's write (one at a time: flushes are
        # synchronous, and picows copies what it cannot send at once).
        uint8_t* _scratch
        Py_ssize_t _scratch_cap
        unsigned long long _turn
        public Relay relay

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
        # Its runs of data frames are written as batch frames (docs/protocol.md §13).
        public bint batch
        public bytearray replay
        public InboundCore inbound
        # The last room, event and dst names it sent to (str): most messages of a
        # client name the same ones, so the relay path compares bytes instead of decoding.
        object _room_name
        object _event_name
        object _dst_name

    cdef int _drop(self, Py_ssize_t size) except -1
    cdef int _enqueue(self, const char* data, Py_ssize_t size, bint control) except -1
    cdef int _overflow(self) except -1
    cdef int _flush(self) except -1
    cdef int _record(self, Py_ssize_t size) except -1
    cdef int _grow(self, Py_ssize_t need) except -1
    cdef int _trim_read_buffer(self) except -1
    cdef int _read_done(self) except -1


cdef class InboundCore:
    cdef:
        public int state
        public bint busy
        public bint held
        public object _backlog
        public object _fragments
        public bint _skipping
        public double _tokens
        public double _bytes
        public double _tokens_at
        public Py_ssize_t _limited
        public double _limited_since
        public bint _heard
        public long long _turn
        public Py_ssize_t _turn_work

    cdef int _admit(self, double now, double count, double per, double stall,
                    Py_ssize_t size, double volume, double span) except -1
    cdef Py_ssize_t _work(self, long long turn) noexcept
    cdef int _handled(self) except -1


cdef class Relay:
    cdef:
        readonly unsigned long long taken
        object _clock
        bint _c_clock
        public double beat_at
        public double stall
        public double stall_until
        public long long turn
        public bint tick_pending
        double _count
        double _per
        double _volume
        double _span
        bint _limited
        Py_ssize_t _turn_messages
        Py_ssize_t _turn_budget
        bint _allow_root
        str _root
        double _stall_after
        double _poll_interval
        double _paced_at
        long long _accepted_turn
        public object sleep
        Py_ssize_t _max_room
        Py_ssize_t _max_event
        frozenset _slow
        object _router
        public object on_taken
        object _tick_cb
        Fanout _engine
        object _call_soon
        dict _rooms
        dict _conns
        dict _v2_rooms
        object _registry
        dict _handlers
        dict _registered
        list _catch_all
        object _games
        dict _counters

    cdef double _now(self) except? -1.0
    cdef int _take(self, Peer peer, WSTransport transport, WSFrame frame) except -1
    cdef int _take_one(self, Peer peer, const uint8_t* p, Py_ssize_t total,
                       const uint8_t* named, Py_ssize_t named_size,
                       Py_ssize_t draw, bint admitted) except -1
    cdef int _worked(self, InboundCore inbound, object conn) except -1
    cdef int _taken(self, object conn) except -1
