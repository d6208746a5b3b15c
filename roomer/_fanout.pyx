# cython: language_level=3, boundscheck=False, wraparound=False, auto_pickle=False
"""Compiled fan-out engine: per-connection corked outboxes and the broadcast loop.

One broadcast is one pre-framed ``bytes`` (roomer._codec.encode_frame). Delivering it
to a receiver is a memcpy into that receiver's outbox; outboxes touched in a loop turn
are written once each at the end of the turn (or sooner past ``flush_threshold``).
roomer/_fanout_py.py is the pure-Python twin and test oracle.

Argument contract (both twins): ``members`` is exactly a ``dict`` whose values are Peers
of the same implementation, frames are exactly ``bytes``; anything else is a TypeError.

This module is compiled against picows' C layout (picows.pxd: WSTransport, its cdef
``_fast_write``, MemoryBuffer), so it refuses to load beside any other picows version
than the one it was built with.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.math cimport INFINITY
from libc.stdint cimport uint8_t
from libc.string cimport memchr, memcmp, memcpy, memmove
from picows.picows cimport MemoryBuffer, WSFrame, WSListener, WSTransport

from ._codec cimport (c_batch_size, c_frame_v2_from_v1_body, c_header_size, c_load_u32,
                      c_put, c_spans, c_write_header)

import gc
from collections import deque
from time import monotonic, sleep

import picows

from .errors import ExtensionMismatch

__all__ = ["BUILT_FOR_PICOWS", "Fanout", "InboundCore", "Peer", "Relay"]

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL

cdef extern from *:
    """
    #include <time.h>
    /* time.monotonic() without calling it, where it is CLOCK_MONOTONIC (Linux); 0 where
       Python reads another clock (macOS), so the caller calls it instead. */
    static int roomer_monotonic(double* out) {
    #ifdef __linux__
        struct timespec ts;
        if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return 0;
        *out = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
        return 1;
    #else
        (void)out;
        return 0;
    #endif
    }
    """
    int roomer_monotonic(double* out) noexcept nogil

cdef extern from *:
    """
    #ifndef ROOMER_PICOWS_VERSION
    #error "build roomer._fanout with setup.py: it records the picows version compiled against"
    #endif
    """
    const char* ROOMER_PICOWS_VERSION

#: The picows version this module was compiled against (its struct layouts are baked in).
BUILT_FOR_PICOWS = ROOMER_PICOWS_VERSION.decode()
if picows.__version__ != BUILT_FOR_PICOWS:
    raise ExtensionMismatch(
        f"roomer._fanout was compiled against picows {BUILT_FOR_PICOWS} but picows "
        f"{picows.__version__} is installed; install picows=={BUILT_FOR_PICOWS} or rebuild "
        "roomer (pip install --force-reinstall --no-binary roomer roomer)")

# A buffer is kept across writes only while it carries bursts (a write of more than
# KEEP_MIN bytes) and is not huge, so a connection that once took a burst does not keep
# the burst's; one kept is given back when the connection goes quiet (trim_buffers), so
# an idle connection keeps no outbox memory.
cdef Py_ssize_t KEEP_CAPACITY = 64 * 1024
cdef Py_ssize_t KEEP_MIN = 1024
cdef Py_ssize_t MIN_CAPACITY = 256
# picows grows a connection's read buffer for big frames and floods but never shrinks
# it; past this capacity it is cut back once the read that grew it has been handled
# (smaller growth is cut back lazily, when the connection is quiet: trim_buffers).
cdef Py_ssize_t TRIM_ABOVE = 64 * 1024
# picows keeps this much spare room past a read buffer's usable size (SIMD parsing).
cdef Py_ssize_t READ_HEADROOM = 256
# A longer write delay is a misconfiguration (seconds typed as milliseconds), not a choice.
cdef double MAX_WRITE_DELAY = 1.0
# A batch frame (docs/protocol.md §13) holds at most this many messages and bytes of entries.
cdef Py_ssize_t BATCH_MAX = 256
cdef Py_ssize_t BATCH_BYTES = 64 * 1024


cdef inline Py_ssize_t _frame_at(const uint8_t* p, Py_ssize_t* size) noexcept nogil:
    # Header size of the whole frame made here at ``p``; its payload size into ``size``.
    cdef Py_ssize_t n = p[1] & 0x7F, head = 2, i
    if n == 126:
        head = 4
    elif n == 127:
        head = 10
    if head > 2:
        n = 0
        for i in range(2, head):
            n = (n << 8) | p[i]
    size[0] = n
    return head


cdef int _room_for(Fanout engine, Py_ssize_t need) except -1:
    # The engine's scratch buffer holds at least ``need`` bytes (what it held is kept).
    cdef uint8_t* grown
    cdef Py_ssize_t cap
    if need <= engine._scratch_cap:
        return 0
    cap = max(need, 2 * engine._scratch_cap, MIN_CAPACITY)
    grown = <uint8_t*>PyMem_Realloc(engine._scratch, cap)
    if grown == NULL:
        raise MemoryError()
    engine._scratch = grown
    engine._scratch_cap = cap
    return 0


cdef Py_ssize_t _batched(Fanout engine, const uint8_t* buf, Py_ssize_t end) except -1:
    # The whole frames of ``buf`` with each run of two or more data frames written as
    # batch frames, into the engine's scratch buffer: their size, or 0 when there is no
    # such run (write ``buf`` as it is). Control frames keep their place between batches.
    cdef Py_ssize_t pos = 0, start, walk, head, size, total, count, q = 0
    cdef bint started = False
    cdef uint8_t* out
    while pos < end:
        head = _frame_at(buf + pos, &size)
        if buf[pos] & 0x08:  # ping, pong, close
            if started:
                _room_for(engine, q + head + size)
                memcpy(engine._scratch + q, buf + pos, head + size)
                q += head + size
            pos += head + size
            continue
        start = pos
        total = count = 0
        while pos < end and count < BATCH_MAX:
            head = _frame_at(buf + pos, &size)
            if buf[pos] & 0x08 or (count and total + 4 + size > BATCH_BYTES):
                break
            total += 4 + size
            count += 1
            pos += head + size
            if total > BATCH_BYTES:
                break  # larger than a batch takes: it goes alone
        if count == 1:
            if started:
                _room_for(engine, q + pos - start)
                memcpy(engine._scratch + q, buf + start, pos - start)
                q += pos - start
            continue
        if not started:
            started = True
            _room_for(engine, end + end // 4 + 64)
            memcpy(engine._scratch, buf, start)
            q = start
        _room_for(engine, q + 11 + total)
        out = engine._scratch
        c_write_header(out + q, 1 + total)
        q += c_header_size(1 + total)
        out[q] = 4
        q += 1
        walk = start
        while walk < pos:
            head = _frame_at(buf + walk, &size)
            q = c_put(out + q, buf + walk + head, size) - out
            walk += head + size
        engine.batches += 1
    return q


def _report_write_error(loop, peer, exc):
    handler = getattr(loop, "call_exception_handler", None)
    if handler is not None:
        handler({
            "message": "roomer: a receiver's transport refused a write; "
                       "its outbox was discarded and it takes no more frames",
            "exception": exc,
            "protocol": peer,
        })


cdef class Fanout:
    """The server-wide fan-out state: outbox limits, flush scheduling and counters.

    Data frames (``broadcast``, ``Peer.send_frame``): in async mode (``sync=False``) a
    receiver whose outbox would pass ``outbox_limit`` loses that frame (counted); with
    ``disconnect_slow`` it is also handed to ``on_overflow(peer)``. In sync mode nothing
    is dropped below the hard limit; ``over_limit``, ``take_grown`` and ``wait_drain``
    let the caller wait, and ``Peer.over_since`` tells how long a receiver has been over.

    Control frames (``broadcast_control``, ``Peer.send_control``: acks, presence, errors)
    are never dropped below the hard limit. Past ``hard_limit`` (twice ``outbox_limit``)
    any frame overflows the receiver in either mode: it takes nothing more and is handed
    to ``on_overflow`` once, at the end of the turn, to be disconnected.
    """

    def __dealloc__(self):
        PyMem_Free(self._scratch)
        self._scratch = NULL

    def __init__(self, loop, *, Py_ssize_t outbox_limit=1 << 20,
                 Py_ssize_t flush_threshold=64 * 1024, bint sync=False,
                 bint disconnect_slow=False, on_overflow=None, double write_delay=0.0,
                 Py_ssize_t replay_limit=256 * 1024):
        if outbox_limit <= 0 or flush_threshold <= 0 or replay_limit <= 0:
            raise ValueError("outbox_limit, flush_threshold and replay_limit must be positive")
        if not 0.0 <= write_delay <= MAX_WRITE_DELAY:
            raise ValueError(f"write_delay must be between 0 and {MAX_WRITE_DELAY} seconds")
        if outbox_limit > PY_SSIZE_T_MAX // 2:
            raise ValueError("outbox_limit must be at most sys.maxsize // 2 "
                             "(twice it is the hard limit)")
        self._loop = loop
        self._dirty = []
        self._overflowed = []
        self._drain_waiters = []
        self._grown = []
        self._trims = []
        self._scheduled = False
        self._turn_scheduled = False
        self._flush_cb = self.flush
        self._end_turn_cb = self._turn_ended
        self.write_delay = write_delay
        self.replay_limit = replay_limit
        self._turn = 1  # a new Peer has seen turn 0
        self._on_overflow = on_overflow
        self.outbox_limit = outbox_limit
        self.hard_limit = 2 * outbox_limit
        self.flush_threshold = flush_threshold
        self.sync = sync
        self.disconnect_slow = disconnect_slow

    cdef int _schedule(self) except -1:
        if not self._scheduled:
            self._scheduled = True
            try:
                if self.write_delay > 0:
                    self._loop.call_later(self.write_delay, self._flush_cb)
                else:
                    self._loop.call_soon(self._flush_cb)
            except RuntimeError:  # loop closed: outboxes are dropped with it
                self._scheduled = False
        return 0

    cdef int _schedule_turn_end(self) except -1:
        # Only with a write delay: then a flush spans many turns, and the turn's work
        # (what the server caps a sender with) must still be counted per turn.
        if not self._turn_scheduled:
            self._turn_scheduled = True
            try:
                self._loop.call_soon(self._end_turn_cb)
            except RuntimeError:
                self._turn_scheduled = False
        return 0

    cdef int _end_turn(self) except -1:
        self._turn_scheduled = False
        self._turn += 1
        self._turn_receivers = 0
        self.turn_bytes = 0
        return 0

    def _turn_ended(self):
        self._end_turn()

    cdef int _drained(self) except -1:
        cdef list waiters = self._drain_waiters
        if not waiters:
            return 0
        self._drain_waiters = []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        return 0

    cdef Py_ssize_t _broadcast(self, dict members, bytes frame_v1, bytes frame_v2,
                               object exclude, bint control) except -1:
        # Each peer takes its protocol version's frame (the same one when there is one).
        cdef Py_ssize_t pos = 0, sent = 0
        cdef PyObject* key
        cdef PyObject* value
        cdef Peer peer
        cdef PyObject* skip = <PyObject*>exclude
        cdef const char* data1 = PyBytes_AS_STRING(frame_v1)
        cdef const char* data2 = PyBytes_AS_STRING(frame_v2)
        cdef Py_ssize_t size1 = PyBytes_GET_SIZE(frame_v1)
        cdef Py_ssize_t size2 = PyBytes_GET_SIZE(frame_v2)
        while PyDict_Next(members, &pos, &key, &value):
            if value == skip:
                continue
            if not isinstance(<object>value, Peer):
                raise TypeError("room members must be roomer Peer objects")
            peer = <Peer>value
            if peer.engine is None:
                raise _uninitialised()
            if peer.v2:
                sent += peer._enqueue(data2, size2, control)
            else:
                sent += peer._enqueue(data1, size1, control)
        return sent

    def broadcast(self, dict members not None, bytes frame not None, exclude=None):
        """Queue data ``frame`` to every peer in ``members`` (a dict's values) but
        ``exclude``. Returns how many receivers took it (dropped ones are not counted)."""
        return self._broadcast(members, frame, frame, exclude, False)

    def broadcast_mixed(self, dict members not None, bytes frame_v1 not None,
                        bytes frame_v2 not None, exclude=None, bint control=False):
        """One message framed once per protocol version: each peer gets ``frame_v2`` if
        its ``v2`` flag is set, else ``frame_v1`` (a control message with ``control``)."""
        return self._broadcast(members, frame_v1, frame_v2, exclude, control)

    def broadcast_control(self, dict members not None, bytes frame not None, exclude=None):
        """Like ``broadcast`` for a control frame (presence): never dropped below the
        hard limit."""
        return self._broadcast(members, frame, frame, exclude, True)

    def over_limit(self, dict members not None, exclude=None):
        """The first member (but ``exclude``) whose outbox is past the limit, or None."""
        cdef Py_ssize_t pos = 0
        cdef PyObject* key
        cdef PyObject* value
        while PyDict_Next(members, &pos, &key, &value):
            if value == <PyObject*>exclude:
                continue
            if not isinstance(<object>value, Peer):
                raise TypeError("room members must be roomer Peer objects")
            if (<Peer>value)._size > self.outbox_limit:
                return <object>value
        return None

    def take_grown(self):
        """Sync mode: the peers that frames queued since the last call (or the last
        flush) took past the limit, each once; the caller waits for them to drain."""
        cdef list grown = self._grown
        cdef Peer peer
        if not grown:
            return grown
        self._grown = []
        for peer in grown:
            peer._grown = False
        return grown

    @property
    def turn_receivers(self):
        """Receivers given something in this loop turn (at least 1)."""
        return self._turn_receivers or 1

    def wait_drain(self):
        """A future resolved the next time any outbox falls back under the limit."""
        fut = self._loop.create_future()
        self._drain_waiters.append(fut)
        return fut

    cdef int _flush_all(self) except -1:
        cdef list dirty = self._dirty
        cdef list overflowed
        cdef Peer peer
        self._scheduled = False
        self._dirty = []
        if self.write_delay == 0:
            self._end_turn()
        for peer in dirty:
            peer._dirty = False
            peer._flush()
        if self._grown:
            for peer in self._grown:
                peer._grown = False
            self._grown = []
        if self._overflowed:
            overflowed = self._overflowed
            self._overflowed = []
            for peer in overflowed:
                if self._on_overflow is not None:
                    self._on_overflow(peer)
        return 0

    def flush(self):
        """Write every outbox that has data (called once per loop turn, or once per
        ``write_delay`` when there is one)."""
        self._flush_all()

    def flush_peers(self, dict members not None):
        """Write the outboxes of ``members`` (a dict's values) now, without waiting for
        the flush: a room's frames go out with its tick, not a write delay later."""
        cdef Py_ssize_t pos = 0
        cdef PyObject* key
        cdef PyObject* value
        while PyDict_Next(members, &pos, &key, &value):
            if isinstance(<object>value, Peer):
                (<Peer>value)._flush()

    def _run_trims(self):
        # Scheduled after the read: picows has compacted the buffer by then.
        cdef list trims = self._trims
        cdef Peer peer
        self._trims = []
        for peer in trims:
            peer._trim_read_buffer()

    @property
    def stats(self):
        return {
            "deliveries": self.deliveries,
            "dropped": self.dropped,
            "writes": self.writes,
            "bytes_out": self.bytes_out,
            "batches_out": self.batches,
            "read_buffer_trims": self.read_buffer_trims,
        }


cdef class Peer(WSListener):
    """One receiver's outbox; also the picows listener of its connection.

    The server subclasses it; ``attach`` is called once the WebSocket is up. ``v2``
    says which frame of ``Fanout.broadcast_mixed`` it takes (its protocol version).
    """

    def __init__(self, engine):
        if type(engine) is not Fanout:
            raise TypeError("Argument 'engine' has incorrect type "
                            f"(expected Fanout, got {type(engine).__name__})")
        self.engine = engine
        self.v2 = False
        self.transport = None
        self._ws = None
        self._write = None
        self._rbuf = None
        self._protocol = None

    def __dealloc__(self):
        PyMem_Free(self._buf)
        self._buf = NULL

    def __reduce__(self):
        # An outbox is a live connection's: a copy would share or lose its C buffer.
        raise TypeError(f"cannot pickle or copy {type(self).__name__!r} object")

    def attach(self, transport):
        """Bind the outbox to a picows WSTransport (or any object whose
        ``underlying_transport.write(bytes)`` accepts raw bytes, for tests)."""
        self.transport = transport
        if isinstance(transport, WSTransport):
            self._ws = <WSTransport>transport
            # The upgrade's answer (its status line and headers) is no use once the
            # WebSocket is up; picows keeps it for the connection's life (about 0.8 KiB).
            self._ws.response = None
            self._protocol = transport.underlying_transport.get_protocol()
            self._rbuf = _read_buffer_of(self._protocol)
            if self._rbuf is not None:
                self._rbuf_base = self._rbuf.capacity
        else:
            self._write = transport.underlying_transport.write
        if self._size:
            self._flush()

    cdef int _grow(self, Py_ssize_t need) except -1:
        cdef Py_ssize_t cap = self._cap if self._cap else MIN_CAPACITY
        while cap < need:
            cap *= 2
        cdef char* buf = <char*>PyMem_Realloc(self._buf, cap)
        if buf == NULL:
            raise MemoryError()
        self._buf = buf
        self._cap = cap
        return 0

    cdef int _overflow(self) except -1:
        cdef Fanout engine = self.engine
        if not self.overflowed:
            self.overflowed = True
            engine._overflowed.append(self)
            engine._schedule()
        return 0

    cdef int _drop(self, Py_ssize_t size) except -1:
        # A dropped frame still costs its sender's turn: a flood into a room whose
        # receivers are all full must be held like any other.
        cdef Fanout engine = self.engine
        self.dropped += 1
        engine.dropped += 1
        engine.turn_bytes += size
        if engine.write_delay > 0 and not engine._turn_scheduled:
            engine._schedule_turn_end()
        return 0

    cdef int _enqueue(self, const char* data, Py_ssize_t size, bint control) except -1:
        cdef Fanout engine = self.engine
        cdef Py_ssize_t new_size = self._size + size
        if self.closing:
            return 0
        if self.overflowed:  # being cut off: what it misses counts as dropped
            self._drop(size)
            return 0
        # An empty outbox takes any one frame, so a frame larger than the limit is
        # still delivered to a receiver that keeps up.
        if self._size and new_size > engine.outbox_limit:
            if new_size > engine.hard_limit:
                self._drop(size)
                self._overflow()
                return 0
            if not engine.sync and not control:
                self._drop(size)
                if engine.disconnect_slow:
                    self._overflow()
                return 0
        if new_size > self._cap:
            self._grow(new_size)
        memcpy(self._buf + self._size, data, size)
        self._size = new_size
        engine.deliveries += 1
        engine.turn_bytes += size
        if self._turn_seen != engine._turn:
            self._turn_seen = engine._turn
            engine._turn_receivers += 1
            if engine.write_delay > 0 and not engine._turn_scheduled:
                engine._schedule_turn_end()
        if engine.sync and new_size > engine.outbox_limit:
            if self.over_since == 0:
                self.over_since = monotonic()
            if not self._grown:
                self._grown = True
                engine._grown.append(self)
        if not self._dirty:
            self._dirty = True
            engine._dirty.append(self)
            engine._schedule()
        if new_size >= engine.flush_threshold and not self._paused:
            self._flush()
        return 1

    cdef int _flush(self) except -1:
        cdef Fanout engine = self.engine
        cdef Py_ssize_t size = self._size, written = self._size
        cdef char* data = self._buf
        cdef Py_ssize_t batched = 0
        if size == 0 or self._paused or self.transport is None:
            return 0
        self._size = 0
        if self.replay is not None:
            self._record(size)
        if self.batch:
            # Only the write is batched: the replay above keeps one frame per message,
            # which is what a session's acknowledgements count.
            batched = _batched(engine, <const uint8_t*>self._buf, size)
            if batched:
                data = <char*>engine._scratch
                written = batched
        try:
            if self._ws is not None:
                if not (self._ws.is_disconnected or self._ws.is_close_frame_sent):
                    self._ws._fast_write(data, written)
            else:
                # Not picows (test transports): written as given, no per-write lookups,
                # so the benchmarks that use such transports time the real work.
                self._write(PyBytes_FromStringAndSize(data, written))
        except Exception as exc:
            # A transport closed under us: this receiver takes no more frames, and the
            # error must not stall the other receivers of this broadcast or flush.
            self.closing = True
            _report_write_error(engine._loop, self, exc)
        if engine._scratch_cap > KEEP_CAPACITY:  # a burst's: not kept
            PyMem_Free(engine._scratch)
            engine._scratch = NULL
            engine._scratch_cap = 0
        engine.writes += 1
        engine.bytes_out += written
        if self._cap > KEEP_CAPACITY or size <= KEEP_MIN:
            PyMem_Free(self._buf)
            self._buf = NULL
            self._cap = 0
        if self.over_since != 0:
            self.over_since = 0
            engine._drained()
        return 0

    cdef int _record(self, Py_ssize_t size) except -1:
        # What is handed to the transport is kept until the client acknowledges it: a
        # dropped socket loses what the kernels held, and a resume sends it again.
        cdef bytearray replay = self.replay
        cdef Py_ssize_t held = PyByteArray_GET_SIZE(replay)
        PyByteArray_Resize(replay, held + size)
        memcpy(PyByteArray_AS_STRING(replay) + held, self._buf, size)
        if held + size > self.engine.replay_limit:
            self.replay_full()
        return 0

    def replay_full(self):
        """``replay`` grew past the engine's ``replay_limit``: the owner forgets its
        oldest frames (Peer itself keeps them: it cannot tell where a frame ends)."""

    def replay_count(self, Py_ssize_t wanted, Py_ssize_t upto=-1):
        """Walk the whole frames at the start of ``replay`` until ``wanted`` messages
        (data frames: ping, pong and close are not messages) are passed, or, with
        ``upto`` >= 0, until at least ``upto`` bytes are: (bytes passed, messages passed)."""
        cdef bytearray replay = self.replay
        cdef const unsigned char* buf
        cdef Py_ssize_t end, pos = 0, seen = 0, head, i
        cdef unsigned long long size
        if replay is None:
            return 0, 0
        buf = <const unsigned char*>PyByteArray_AS_STRING(replay)
        end = PyByteArray_GET_SIZE(replay)
        while pos + 2 <= end and (seen < wanted if upto < 0 else pos < upto):
            size = buf[pos + 1] & 0x7F
            head = 2
            if size == 126:
                head = 4
            elif size == 127:
                head = 10
            if pos + head > end:
                break
            if head > 2:
                size = 0
                for i in range(2, head):
                    size = (size << 8) | buf[pos + i]
            if size > <unsigned long long>(end - pos - head):
                break
            if not buf[pos] & 0x08:
                seen += 1
            pos += head + <Py_ssize_t>size
        return pos, seen

    def detach(self):
        """The socket is gone but the receiver is kept (a held session): what is sent
        to it waits in the outbox, within the usual limits, until `attach`."""
        if self.engine is None:
            raise _uninitialised()
        self.transport = None
        self._ws = None
        self._write = None
        self._protocol = None
        self._rbuf = None
        self._paused = False
        self._trim_pending = False

    def prepend(self, bytes data not None):
        """Put ``data`` (whole frames) before what the outbox holds, unbounded: frames
        that were sent once already and are sent again on a resume."""
        cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
        if self.engine is None:
            raise _uninitialised()
        if size == 0:
            return
        if self._size + size > self._cap:
            self._grow(self._size + size)
        memmove(self._buf + size, self._buf, self._size)
        memcpy(self._buf, PyBytes_AS_STRING(data), size)
        self._size += size
        if not self._dirty:
            self._dirty = True
            self.engine._dirty.append(self)
            self.engine._schedule()

    def queued(self):
        """A copy of what the outbox holds (whole frames not written yet): what a held
        session hands over to another node."""
        if self.engine is None:
            raise _uninitialised()
        return PyBytes_FromStringAndSize(self._buf, self._size)

    cdef int _trim_read_buffer(self) except -1:
        cdef MemoryBuffer rb = self._rbuf
        cdef Py_ssize_t target, used
        cdef char* data
        self._trim_pending = False
        if rb is None or rb.capacity < 2 * self._rbuf_base or self._ws.is_disconnected:
            return 0
        # picows' get_buffer offers the free tail of the read buffer: what precedes it
        # is unparsed data (a partial frame) that must survive the cut.
        used = rb.size - len(self._protocol.get_buffer(-1))
        target = used + 2 * READ_HEADROOM
        target = (target + READ_HEADROOM - 1) // READ_HEADROOM * READ_HEADROOM
        if target < self._rbuf_base:
            target = self._rbuf_base
        if 2 * target > rb.capacity:
            return 0
        data = <char*>PyMem_Realloc(rb.data, target)
        if data == NULL:
            return 0  # keep the big buffer: it is still valid
        rb.data = data
        rb.capacity = target
        rb.size = target - READ_HEADROOM
        self.engine.read_buffer_trims += 1
        return 0

    def send_frame(self, bytes frame not None):
        """Queue one pre-framed data message to this receiver. False if it was dropped."""
        if self.engine is None:
            raise _uninitialised()
        return self._enqueue(PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame), False) == 1

    def send_control(self, bytes frame not None):
        """Queue one pre-framed control message (an ack, an error): never dropped below
        the hard limit. False if the receiver overflowed or is closing."""
        if self.engine is None:
            raise _uninitialised()
        return self._enqueue(PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame), True) == 1

    def trim_buffers(self):
        """The connection is quiet: give back an empty outbox's buffer, and cut picows'
        read buffer back to what its unparsed bytes need (at least its initial size) if
        that halves it. Never from inside a frame callback."""
        if self.engine is None:
            raise _uninitialised()
        if self._size == 0 and self._buf != NULL:
            PyMem_Free(self._buf)
            self._buf = NULL
            self._cap = 0
        self._trim_read_buffer()

    def read_done(self):
        """The last frame of a read was handled: a read buffer grown past its need is
        cut back once this turn ends."""
        if self.engine is None:
            raise _uninitialised()
        self._read_done()

    cdef int _read_done(self) except -1:
        cdef Fanout engine = self.engine
        cdef MemoryBuffer rb = self._rbuf
        if rb is None or self._trim_pending or rb.capacity <= TRIM_ABOVE:
            return 0
        self._trim_pending = True
        if not engine._trims:
            engine._loop.call_soon(engine._run_trims)
        engine._trims.append(self)
        return 0

    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        # A plain relay goes through the engine's relay path without entering Python;
        # every other frame, and every frame while anything holds the connection, goes
        # to on_frame.
        cdef Fanout engine = self.engine
        if engine is None or engine.relay is None or not engine.relay._take(
                self, transport, frame):
            self.on_frame(transport, frame)

    def on_frame(self, transport, frame):
        """A frame the relay path did not take (the server's connection handles it)."""

    def flush(self):
        """Write what is queued now, without waiting for the end of the turn."""
        if self.engine is None:
            raise _uninitialised()
        self._flush()

    def close_outbox(self):
        """Hand what is queued to the transport, even while its writing is paused, and
        refuse anything after: the connection is closing."""
        if self.engine is None:
            raise _uninitialised()
        self._paused = False
        self._flush()
        self.closing = True
        if self.over_since != 0:
            self.over_since = 0
        self.engine._drained()

    def discard_outbox(self):
        """Drop what is queued without writing it and refuse anything after: for a
        receiver that is being cut off because it stopped reading."""
        if self.engine is None:
            raise _uninitialised()
        PyMem_Free(self._buf)
        self._buf = NULL
        self._cap = 0
        self._size = 0
        self.closing = True
        if self.over_since != 0:
            self.over_since = 0
        self.engine._drained()

    @property
    def pending(self):
        """Bytes queued in roomer's outbox, not yet handed to the transport."""
        return self._size

    @property
    def outbox_capacity(self):
        """Bytes allocated for the outbox (0 when it holds no buffer)."""
        return self._cap

    @property
    def read_buffer_capacity(self):
        """Bytes of picows' read buffer for this connection (0 when unknown)."""
        return self._rbuf.capacity if self._rbuf is not None else 0

    @property
    def writing_paused(self):
        return self._paused

    cpdef pause_writing(self):
        self._paused = True

    cpdef resume_writing(self):
        self._paused = False
        if self._size:
            self._flush()


cdef _uninitialised():
    # A Peer whose __init__ never ran (Peer.__new__, a subclass skipping super().__init__)
    # has no engine: refused rather than dereferenced.
    return TypeError("this roomer Peer was never initialised (Peer.__init__ did not run)")


cdef MemoryBuffer _read_buffer_of(object protocol):
    # picows keeps the read buffer private to its protocol object; the one MemoryBuffer
    # the protocol references is it. None (no trimming) if that ever stops being true.
    found = [obj for obj in gc.get_referents(protocol) if type(obj) is MemoryBuffer]
    return found[0] if len(found) == 1 else None


# --------------------------------------------------------------------------- inbound


cdef class InboundCore:
    """The part of a connection's inbound state (roomer.inbound.Inbound, which
    subclasses it) that the relay path reads and changes: its lifecycle state, whether
    anything holds its messages, its rate-limit buckets, whether it was heard from and
    its work in the current loop turn; with the decisions made on them."""

    def admit(self, double now, rate, double stall=0.0, Py_ssize_t size=0,
              byte_rate=None):
        """Draw one frame of ``size`` payload bytes from the rate limits (frames, seconds)
        and (bytes, seconds), each None for none: an Admission value (0 take, 1 drop,
        2 refuse, 3 abuse). roomer.inbound.Inbound.admit says how."""
        cdef double count = 0.0, per = 1.0, volume = 0.0, span = 1.0
        if rate is not None:
            count, per = rate
        if byte_rate is not None:
            volume, span = byte_rate
        return self._admit(now, count if rate is not None else -1.0, per, stall, size,
                           volume if byte_rate is not None else -1.0, span)

    cdef int _admit(self, double now, double count, double per, double stall,
                    Py_ssize_t size, double volume, double span) except -1:
        # count, volume < 0: that limit is off.
        cdef double elapsed = now - self._tokens_at
        cdef double cap, window
        cdef bint frames_ok = True, bytes_ok = True
        self._tokens_at = now
        if count >= 0:
            self._tokens = min(count * (1.0 + stall / per), self._tokens + elapsed * count / per)
            frames_ok = self._tokens >= 1.0
        if volume >= 0:
            cap = volume * (1.0 + stall / span)
            self._bytes = min(cap, self._bytes + elapsed * volume / span)
            bytes_ok = self._bytes >= min(<double>size, volume)
        if frames_ok and bytes_ok:
            if count >= 0:
                self._tokens -= 1.0
            if volume >= 0:
                self._bytes -= size
            return 0
        if count >= 0:
            window = per
        else:
            count, window = INFINITY, span
        if now - self._limited_since >= window:
            self._limited_since = now
            self._limited = 0
        self._limited += 1
        if self._limited == 1:
            return 2
        if self._limited >= count:
            return 3
        return 1

    def heard(self):
        """A frame came in."""
        self._heard = True

    def work(self, long long turn):
        """Count one message handled in loop turn ``turn``; how many it handled then."""
        return self._work(turn)

    cdef Py_ssize_t _work(self, long long turn) noexcept:
        if self._turn != turn:
            self._turn = turn
            self._turn_work = 0
        self._turn_work += 1
        return self._turn_work

    def handled(self):
        """A message was just handled; if it left the connection busy or held, the rest
        of this read waits like the reads after it."""
        self._handled()

    cdef int _handled(self) except -1:
        if (self.busy or self.held) and self._backlog is None:
            self._backlog = deque()
        return 0


# --------------------------------------------------------------------------- relay


# What Relay._take_one did with a message it took.
cdef enum:
    TAKEN = 1
    REFUSED = 2

# A v2 event of the default namespace starts with these (kind 0, id 0, namespace "").
cdef uint8_t DEFAULT_EVENT_PREFIX[9]


cdef object _name_at(object known, const char* data, Py_ssize_t size):
    # ``known`` when it is these bytes, else them decoded; None if they are not UTF-8.
    cdef Py_ssize_t n
    cdef const char* have
    if known is not None:
        have = PyUnicode_AsUTF8AndSize(known, &n)
        if n == size and memcmp(have, data, size) == 0:
            return known
    try:
        return PyUnicode_DecodeUTF8(data, size, NULL)
    except UnicodeDecodeError:
        return None


cdef class Relay:
    """The path of a plain relay: a client's message to a room it is in, or to a
    client connected here, in the default namespace, that no handler, hook, game room or
    ask is concerned with. It goes from picows' frame callback to the receivers'
    outboxes in compiled code: header, checks, rate limits, framing once, fan-out.
    Anything else (any other message, a malformed one, a refused one, any connection
    whose messages something holds: async work, the turn budget, a backlog, a fragment)
    is left to the router (``Peer.on_frame``), which does exactly what this path does
    for what it takes.

    The router owns it and keeps its state: the clock, the beat that tells a stall,
    the loop turn that the turn budget counts in. ``on_taken(conn)``, None unless set,
    is called for each message it takes (tests count the work of a turn with it).

    ``poll_interval`` (seconds, 0: none): after a turn with client work, ``sleep`` (the
    time module's) out the rest of that interval since the last such pause, so the next
    poll of the sockets reads what many clients sent meanwhile (Config.poll_interval);
    not after a turn that accepted a connection (``accepted``).
    """

    def __init__(self, router, *, rate, byte_rate, Py_ssize_t turn_messages,
                 Py_ssize_t turn_budget, bint allow_root, str root, Py_ssize_t max_room,
                 Py_ssize_t max_event, frozenset slow not None, double stall_after,
                 double poll_interval=0.0):
        self._router = router
        self._count = rate[0] if rate is not None else -1.0
        self._per = rate[1] if rate is not None else 1.0
        self._volume = byte_rate[0] if byte_rate is not None else -1.0
        self._span = byte_rate[1] if byte_rate is not None else 1.0
        self._limited = rate is not None or byte_rate is not None
        self._turn_messages = turn_messages
        self._turn_budget = turn_budget
        self._allow_root = allow_root
        self._root = root
        self._max_room = max_room
        self._max_event = max_event
        self._slow = slow
        self._stall_after = stall_after
        self._poll_interval = poll_interval
        self._paced_at = 0.0
        self._accepted_turn = -1
        self.sleep = sleep
        self._tick_cb = self._tick
        self.clock = monotonic

    @property
    def clock(self):
        """The clock admission reads (monotonic seconds)."""
        return self._clock

    @clock.setter
    def clock(self, value):
        self._clock = value
        self._c_clock = value is monotonic

    cdef double _now(self) except? -1.0:
        cdef double now
        if self._c_clock and roomer_monotonic(&now):
            return now
        return self._clock()

    def bind(self, Fanout engine not None, call_soon, registry, dict handlers not None,
             dict registered not None, list catch_all not None, games,
             dict counters not None):
        """The server starts: relay through ``engine`` into ``registry`` (the default
        namespace's), unless ``handlers``, ``registered`` (module-level) or a hook in
        ``catch_all`` takes the event or ``games`` the room; count in ``counters``."""
        self._engine = engine
        self._call_soon = call_soon
        self._registry = registry
        self._rooms = registry.rooms
        self._conns = registry.conns
        self._v2_rooms = registry._v2_members
        self._handlers = handlers
        self._registered = registered
        self._catch_all = catch_all
        self._games = games
        self._counters = counters
        engine.relay = self

    def accepted(self):
        """A connection was accepted in this turn: the event loop accepts one per poll
        of the sockets, so this turn is not followed by a pause, and a crowd connecting
        comes in at full speed rather than at one client per ``poll_interval``."""
        self._accepted_turn = self.turn

    def _tick(self):
        cdef double now, wait
        cdef Fanout engine
        cdef bint accepting = self._accepted_turn == self.turn
        self.tick_pending = False
        self.turn += 1
        if self._poll_interval > 0:
            if accepting:
                self._paced_at = monotonic()
                return
            engine = self._engine
            if engine is not None and engine._scheduled and engine.write_delay == 0:
                engine._flush_all()  # the turn's writes go out before the sleep, not after
            now = monotonic()
            wait = min(self._paced_at + self._poll_interval - now, self._poll_interval)
            if wait > 0:
                self.sleep(wait)
                now += wait
            self._paced_at = now

    def worked(self, conn):
        """``conn`` caused one unit of work this turn: held once it used its share."""
        self._worked(conn.inbound, conn)

    cdef int _worked(self, InboundCore inbound, object conn) except -1:
        cdef Fanout engine = self._engine
        cdef Py_ssize_t receivers = engine._turn_receivers or 1
        if not self.tick_pending:
            self.tick_pending = True
            self._call_soon(self._tick_cb)
        if (inbound._work(self.turn) >= self._turn_messages
                or engine.turn_bytes >= self._turn_budget * receivers):
            self._router._hold(conn)
        return 0

    cdef int _take(self, Peer peer, WSTransport transport, WSFrame frame) except -1:
        cdef Fanout engine = self._engine
        cdef const uint8_t* p
        cdef const uint8_t* entry
        cdef Py_ssize_t total, pos = 1, size, count, taken = 0
        cdef int done = 0
        cdef list rest
        if (peer.inbound is None or engine is None or engine.sync
                or transport is not peer._ws or transport.is_close_frame_sent):
            return 0
        if ((<int>frame.msg_type != 2 and <int>frame.msg_type != 1) or not frame.fin
                or frame.rsv1 or frame.rsv2 or frame.rsv3):
            return 0
        p = <const uint8_t*>frame.payload_ptr
        total = frame.payload_size
        if peer.batch and total and p[0] == 4:
            # A batch (docs/protocol.md §13): its plain relays from the first on, here;
            # from the first that is not one, the rest in order by the router.
            count = c_batch_size(p, total)
            if count < 0:
                return 0  # the router answers what is wrong with it
            while taken < count:
                size = c_load_u32(p + pos)
                entry = p + pos + 4
                # The first draws the batch's bytes, and its refusal refuses the whole
                # batch, named by it, as the router refuses a frame (not counted as a
                # batch then: the router does not read a frame it refuses).
                if taken == 0:
                    done = self._take_one(peer, entry, size, p, total, total, False)
                else:
                    done = self._take_one(peer, entry, size, entry, size, 0, False)
                if done == 0:
                    break
                taken += 1
                pos += 4 + size
                if done == REFUSED and taken == 1:
                    break
            if taken == 0:
                return 0
            if not (done == REFUSED and taken == 1):
                self._counters["batches_in"] += 1
                if taken < count:
                    rest = []
                    while pos < total:
                        size = c_load_u32(p + pos)
                        rest.append(PyBytes_FromStringAndSize(<const char*>p + pos + 4, size))
                        pos += 4 + size
                    self._router.entries(peer, rest)
        elif self._take_one(peer, p, total, p, total, total, False) == 0:
            return 0
        if frame.last_in_buffer:
            peer._read_done()
        return 1

    def take_admitted(self, conn, bytes data not None):
        """Whether ``data``, a message of ``conn``'s that the rate limits took when it
        came and that waited (in its backlog, or behind the first messages of its
        batch), was a plain relay, now done: the router gives it here first, so a
        connection the turn budget held is not slower for it."""
        if (self._engine is None or self._engine.relay is not self or self._engine.sync
                or not isinstance(conn, Peer)):
            return False
        return self._take_one(<Peer>conn, <const uint8_t*>PyBytes_AS_STRING(data),
                              PyBytes_GET_SIZE(data), NULL, 0, 0, True) != 0

    cdef int _take_one(self, Peer peer, const uint8_t* p, Py_ssize_t total,
                       const uint8_t* named, Py_ssize_t named_size,
                       Py_ssize_t draw, bint admitted) except -1:
        # One message: 0 when it is not a plain relay, else TAKEN (done) or REFUSED (by
        # the rate limits, answered as the ``named_size`` bytes at ``named`` are).
        # ``draw``: the bytes it draws from the byte limit. ``admitted``: one that came
        # earlier, drawn then, and waited (its backlog, if any, starts with it).
        cdef InboundCore inbound = peer.inbound
        cdef Fanout engine = self._engine
        cdef const char* src
        cdef Py_ssize_t pos, body, head, src_size
        cdef Py_ssize_t starts[5]
        cdef Py_ssize_t ends[5]
        cdef Py_ssize_t sizes[5]
        cdef int i, verdict
        cdef double now = 0.0, stall = 0.0
        cdef bytes out, out_v2
        cdef uint8_t* q
        # 1: OPEN (roomer.inbound), accepted and not closing.
        if (inbound is None or inbound.state != 1 or inbound.busy or inbound.held
                or inbound._skipping or inbound._fragments is not None
                or (inbound._backlog is not None and not admitted)):
            return 0
        # The header (docs/protocol.md §2-§3): an event of the default namespace, to a
        # room, whose fields fill the message exactly.
        pos = 0
        if peer.v2:
            if total < 29 or memcmp(p, DEFAULT_EVENT_PREFIX, 9) != 0:
                return 0
            pos = 9
        if c_spans(p, total, pos, 5, starts, ends) >= 0:
            return 0
        for i in range(5):
            sizes[i] = ends[i] - starts[i]
        if (sizes[0] == 0 or sizes[0] > self._max_room or sizes[1] == 0
                or sizes[1] > self._max_event):
            return 0
        room = _name_at(peer._room_name, <const char*>p + starts[0], sizes[0])
        if room is None:
            return 0
        peer._room_name = room
        event = _name_at(peer._event_name, <const char*>p + starts[1], sizes[1])
        if event is None:
            return 0
        peer._event_name = event
        if event in self._slow:
            return 0
        conn = <object>peer
        sender = conn.id
        if sizes[2]:
            # A direct message (handlers never see one) to a client connected here.
            dst = _name_at(peer._dst_name, <const char*>p + starts[2], sizes[2])
            if dst is None:
                return 0
            peer._dst_name = dst
            target = self._conns.get(dst)
            if target is None:
                return 0  # another node's, or nobody's: the router asks or answers
        else:
            if event in self._handlers or event in self._registered or self._catch_all:
                return 0
            if not self._allow_root and room == self._root:
                return 0
            if (memchr(p + starts[0] + 1, b":", sizes[0] - 1) != NULL
                    and self._games is not None and self._games.active):
                return 0  # possibly a game room's id
            members = self._rooms.get(room)
            if members is None or (<dict>members).get(sender) is not conn:
                return 0
        if self._limited and not admitted:
            now = self._now()
            if now - self.beat_at > self._stall_after:
                return 0  # the router tells the stall first
            if now < self.stall_until:
                stall = self.stall
        # Taken: from here on it is this message's work.
        inbound._heard = True
        if self._limited and not admitted:
            verdict = inbound._admit(now, self._count, self._per, stall, draw, self._volume,
                                     self._span)
            if verdict != 0:
                self._router._refusal(
                    conn, PyBytes_FromStringAndSize(<const char*>named, named_size), verdict)
                self._taken(conn)
                return REFUSED
        counters = self._counters
        counters["messages_in"] += 1
        # One v1 frame, as the router makes it: room, event, dst, the sender as src.
        src = PyUnicode_AsUTF8AndSize(sender, &src_size)
        body = 20 + sizes[0] + sizes[1] + sizes[2] + src_size + sizes[4]
        head = c_header_size(body)
        out = PyBytes_FromStringAndSize(NULL, head + body)
        q = <uint8_t*>PyBytes_AS_STRING(out)
        c_write_header(q, body)
        q = c_put(q + head, p + starts[0], sizes[0])
        q = c_put(q, p + starts[1], sizes[1])
        q = c_put(q, p + starts[2], sizes[2])
        q = c_put(q, src, src_size)
        c_put(q, p + starts[4], sizes[4])
        if sizes[2]:
            counters["direct"] += 1
            if (<Peer>target).v2:
                out = c_frame_v2_from_v1_body(0, 0, "", <const uint8_t*>PyBytes_AS_STRING(out)
                                              + head, body)
            (<Peer>target)._enqueue(PyBytes_AS_STRING(out), PyBytes_GET_SIZE(out), False)
        else:
            counters["relayed"] += 1
            out_v2 = out
            if room in self._v2_rooms:
                out_v2 = c_frame_v2_from_v1_body(
                    0, 0, "", <const uint8_t*>PyBytes_AS_STRING(out) + head, body)
            engine._broadcast(<dict>members, out, out_v2, conn, False)
            registry = self._registry
            if registry.cluster is not None:
                registry.publish_room(room, out, sender)
        self._taken(conn)
        self._worked(inbound, conn)
        inbound._handled()
        return TAKEN

    cdef int _taken(self, object conn) except -1:
        self.taken += 1
        if self.on_taken is not None:
            self.on_taken(conn)
        return 0
