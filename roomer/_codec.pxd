# The compiled codec's C-level API, for other extension modules (tests/test_codec_cdef.py
# builds one; roomer._fanout's relay path frames what it relays with it).
from libc.stdint cimport uint8_t, uint32_t

cdef bytes c_encode_frame(str room, str event, str dst, str src, object payload)
# kind and id as docs/protocol.md allows them, else ValueError.
cdef bytes c_encode_frame_v2(int kind, uint32_t id, str namespace, str room, str event,
                             str dst, str src, object payload)
cdef bytes c_frame_header(Py_ssize_t size)
# Where the body starts in a frame made here (2, 4 or 10): reads frame[1] only.
cdef Py_ssize_t c_frame_body_offset(const uint8_t* frame) noexcept nogil
# The size of that header for ``size`` payload bytes (2, 4 or 10), and writing it at
# ``p``, which has room for it.
cdef Py_ssize_t c_header_size(Py_ssize_t size) noexcept nogil
cdef void c_write_header(uint8_t* p, Py_ssize_t size) noexcept nogil
# Bounds of ``count`` length-prefixed fields (docs/protocol.md §2) from ``pos``, which
# must fill ``total`` bytes exactly: -1 when they do, else the index of the field whose
# length runs past the end (``count``: bytes remain after the last). Reads nothing out of
# bounds whatever the lengths claim.
cdef int c_spans(const uint8_t* data, Py_ssize_t total, Py_ssize_t pos, int count,
                 Py_ssize_t* starts, Py_ssize_t* ends) noexcept nogil
# One field at ``p``: its u32 big-endian length, then its ``size`` bytes; past them.
cdef uint8_t* c_put(uint8_t* p, const void* data, Py_ssize_t size) noexcept nogil
# A framed v2 message from the ``size`` bytes of a v1 body at ``body``, such as the
# body of a c_encode_frame frame (frame + c_frame_body_offset(frame)): a second version
# of a broadcast in one copy. The body's lengths are checked (ProtocolError).
cdef bytes c_frame_v2_from_v1_body(int kind, uint32_t id, str namespace,
                                   const uint8_t* body, Py_ssize_t size)
# The u32 big-endian at ``p``.
cdef uint32_t c_load_u32(const uint8_t* p) noexcept nogil
# How many messages the batch (docs/protocol.md §13) of ``total`` bytes at ``p`` holds, or
# -1 when its framing is broken (split_batch says how). Reads nothing out of bounds.
cdef Py_ssize_t c_batch_size(const uint8_t* p, Py_ssize_t total) noexcept nogil
