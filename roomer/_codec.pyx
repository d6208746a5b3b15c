# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled roomer codec (sans-I/O). roomer/_codec_py.py is its pure-Python twin."""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8String, PyUnicode_DecodeUTF8
from libc.stdint cimport uint8_t, uint32_t
from libc.string cimport memcpy

from .errors import ProtocolError

__all__ = ["decode", "decode_client", "encode", "encode_frame", "frame_header"]

cdef tuple _FIELDS = ("room", "event", "dst", "src", "payload")
cdef Py_ssize_t MIN_SIZE = 20


cdef inline uint32_t _load_u32(const uint8_t* p) noexcept nogil:
    return ((<uint32_t>p[0]) << 24) | ((<uint32_t>p[1]) << 16) | ((<uint32_t>p[2]) << 8) | p[3]


cdef inline void _store_u32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = (v >> 24) & 0xFF
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


cdef inline Py_ssize_t _header_size(Py_ssize_t size) noexcept nogil:
    if size < 126:
        return 2
    if size < 65536:
        return 4
    return 10


cdef inline void _write_header(uint8_t* p, Py_ssize_t size) noexcept nogil:
    cdef int i
    p[0] = 0x82
    if size < 126:
        p[1] = <uint8_t>size
    elif size < 65536:
        p[1] = 126
        p[2] = (size >> 8) & 0xFF
        p[3] = size & 0xFF
    else:
        p[1] = 127
        for i in range(8):
            p[2 + i] = (size >> (56 - 8 * i)) & 0xFF


cdef bytes _field_bytes(object value, int index):
    if index < 4 and not isinstance(value, str):
        raise TypeError(f"{_FIELDS[index]} must be str, not {type(value).__name__}")
    if isinstance(value, str):
        return PyUnicode_AsUTF8String(value)
    if isinstance(value, bytes):
        return <bytes>value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{_FIELDS[index]} must be str or bytes-like, not {type(value).__name__}")


cdef bytes _encode(tuple values, bint framed):
    cdef list parts = [None] * 5
    cdef bytes part
    cdef Py_ssize_t body = 0, n, head = 0, i
    for i in range(5):
        part = _field_bytes(values[i], i)
        parts[i] = part
        n = len(part)
        if n > 0xFFFFFFFF:
            raise ValueError(f"{_FIELDS[i]} is longer than 4294967295 bytes")
        body += 4 + n
    if framed:
        head = _header_size(body)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, head + body)
    cdef uint8_t* p = <uint8_t*>PyBytes_AS_STRING(out)
    if framed:
        _write_header(p, body)
        p += head
    for i in range(5):
        part = <bytes>parts[i]
        n = PyBytes_GET_SIZE(part)
        _store_u32(p, <uint32_t>n)
        memcpy(p + 4, PyBytes_AS_STRING(part), n)
        p += 4 + n
    return out


def encode(room, event, dst, src, payload):
    """Encode one roomer message body."""
    return _encode((room, event, dst, src, payload), False)


def encode_frame(room, event, dst, src, payload):
    """One roomer message wrapped in its server WebSocket frame, ready for any receiver."""
    return _encode((room, event, dst, src, payload), True)


cdef bytes c_encode_frame(str room, str event, str dst, str src, object payload):
    return _encode((room, event, dst, src, payload), True)


cdef bytes c_frame_header(Py_ssize_t size):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, _header_size(size))
    _write_header(<uint8_t*>PyBytes_AS_STRING(out), size)
    return out


def frame_header(Py_ssize_t size):
    """The header of an unmasked, final, binary WebSocket frame of ``size`` payload bytes."""
    if size < 0:
        raise ValueError("size must not be negative")
    return c_frame_header(size)


cdef int _spans(const uint8_t* data, Py_ssize_t total, Py_ssize_t* starts,
                Py_ssize_t* ends) except -1:
    cdef Py_ssize_t pos = 0, left
    cdef uint32_t length
    cdef int i
    if total < MIN_SIZE:
        raise ProtocolError(f"message is {total} bytes, shorter than the minimum of 20")
    for i in range(5):
        if total - pos < 4:
            raise ProtocolError(f"{_FIELDS[i]} length runs past the end of the message")
        length = _load_u32(data + pos)
        pos += 4
        left = total - pos
        # Compared as 64-bit values: a claimed 0xFFFFFFFF never wraps a position.
        if <Py_ssize_t>length > left:
            raise ProtocolError(
                f"{_FIELDS[i]} length {length} runs past the end of the message"
                f" ({left} bytes left)"
            )
        starts[i] = pos
        ends[i] = pos + length
        pos += length
    if pos != total:
        raise ProtocolError(f"{total - pos} bytes remain after the payload")
    return 0


cdef object _name_or_none(const uint8_t* p, Py_ssize_t start, Py_ssize_t end):
    # Room and event are named in the error whenever they are valid themselves,
    # whichever field was the invalid one.
    try:
        return PyUnicode_DecodeUTF8(<const char*>p + start, end - start, NULL)
    except UnicodeDecodeError:
        return None


cdef tuple _decode(object data, bint with_src):
    cdef Py_buffer view
    cdef Py_ssize_t starts[5]
    cdef Py_ssize_t ends[5]
    cdef const uint8_t* p
    cdef list names = []
    cdef int i, count = 4 if with_src else 3
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        p = <const uint8_t*>view.buf
        _spans(p, view.len, starts, ends)
        for i in range(count):
            try:
                names.append(PyUnicode_DecodeUTF8(<const char*>p + starts[i],
                                                  ends[i] - starts[i], NULL))
            except UnicodeDecodeError:
                raise ProtocolError(
                    f"{_FIELDS[i]} is not valid UTF-8", "invalid_name",
                    _name_or_none(p, starts[0], ends[0]), _name_or_none(p, starts[1], ends[1]),
                ) from None
        names.append(PyBytes_FromStringAndSize(<const char*>p + starts[4],
                                               ends[4] - starts[4]))
        return tuple(names)
    finally:
        PyBuffer_Release(&view)


def decode(data):
    """Decode a message body into (room, event, dst, src, payload)."""
    return _decode(data, True)


def decode_client(data):
    """Decode what a client sent into (room, event, dst, payload); src is ignored."""
    return _decode(data, False)
