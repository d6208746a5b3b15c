# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled roomer codec (sans-I/O). roomer/_codec_py.py is its pure-Python twin.

Both twins follow one argument contract, written out in the twin's docstring: the
same types are accepted, and the same exceptions raised with the same texts.
docs/protocol.md is the wire format (v1 and v2).
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.number cimport PyNumber_Index
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_AsUTF8String, PyUnicode_DecodeUTF8
from libc.stdint cimport uint8_t, uint32_t
from libc.string cimport memcpy

from .errors import ProtocolError

__all__ = [
    "BATCH_MAX", "decode", "decode_client", "decode_client_v2", "decode_v2", "encode",
    "encode_batch", "encode_frame", "encode_frame_v2", "encode_v2", "frame_header",
    "frame_v2_from_v1_body", "split_batch",
]

# v2 field order; a v1 body is the same minus the namespace (index 0).
cdef tuple _FIELDS = ("namespace", "room", "event", "dst", "src", "payload")
cdef Py_ssize_t MIN_SIZE = 20
cdef Py_ssize_t MIN_SIZE_V2 = 29
cdef Py_ssize_t PREFIX_V2 = 5          # kind (u8) + id (u32)
cdef Py_ssize_t MAX_FRAME = 0x7FFFFFFFFFFFFFFF
cdef uint8_t BATCH = 4
#: The most messages one batch frame may hold (docs/protocol.md §13).
BATCH_MAX = 256
cdef Py_ssize_t C_BATCH_MAX = 256


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


# --------------------------------------------------------------------------- arguments


cdef inline bytes _name_bytes(object value, int field):
    # PyUnicode_Check: the real type decides, never a faked __class__, as in the twin.
    if isinstance(value, str):
        return PyUnicode_AsUTF8String(value)
    raise TypeError(f"{_FIELDS[field]} must be str, not {type(value).__name__}")


cdef bytes _payload_bytes(object value):
    if type(value) is bytes:
        return <bytes>value
    if isinstance(value, str):
        return PyUnicode_AsUTF8String(value)
    # Any other buffer (subclasses included) goes through memoryview, as in the twin:
    # its bytes in logical order, whatever its layout or a subclass's __bytes__.
    try:
        view = memoryview(value)
    except TypeError:
        raise TypeError(
            f"payload must be str or bytes-like, not {type(value).__name__}") from None
    return view.tobytes()


cdef inline Py_ssize_t _field_len(bytes part, int field) except -1:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(part)
    if n > 0xFFFFFFFF:
        raise ValueError(f"{_FIELDS[field]} is longer than 4294967295 bytes")
    return n


cdef object _readable(object data, str what):
    """bytes or a C-contiguous memoryview with data's bytes (a copy if it was strided)."""
    if type(data) is bytes:
        return data
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"{what} must be bytes-like, not {type(data).__name__}") from None
    if not view.c_contiguous:
        return view.tobytes()
    return view


cdef object _index(object value, str name):
    try:
        return PyNumber_Index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}") from None


cdef str _header_fault(int kind, uint32_t mid):
    """Why a v2 (kind, id) pair is invalid, or None when it is valid."""
    if kind < 0 or kind > 3:
        return f"kind {kind} is not 0 (event), 1 (ask), 2 (reply) or 3 (error reply)"
    if kind == 0 and mid != 0:
        return f"an event (kind 0) must have id 0, not {mid}"
    if kind != 0 and mid == 0:
        return f"kind {kind} must have a non-zero id"
    return None


cdef int _kind_id(object kind, object mid, uint32_t* out) except -1:
    """Check encode-side kind and id (ValueError/TypeError); returns kind, stores id."""
    kind = _index(kind, "kind")
    mid = _index(mid, "id")
    if kind < 0 or kind > 3:
        raise ValueError(f"kind {kind} is not 0 (event), 1 (ask), 2 (reply) or 3 (error reply)")
    if mid < 0 or mid > 0xFFFFFFFF:
        raise ValueError(f"id {mid} is not between 0 and 4294967295")
    cdef int k = kind
    cdef uint32_t i = mid
    fault = _header_fault(k, i)
    if fault is not None:
        raise ValueError(fault)
    out[0] = i
    return k


# --------------------------------------------------------------------------- encode


cdef uint8_t* c_put(uint8_t* p, const void* data, Py_ssize_t size) noexcept nogil:
    _store_u32(p, <uint32_t>size)
    if size:
        memcpy(p + 4, data, size)
    return p + 4 + size


cdef inline uint8_t* _put(uint8_t* p, bytes part) noexcept:
    return c_put(p, PyBytes_AS_STRING(part), PyBytes_GET_SIZE(part))


cdef bytes _encode(bint v2, int kind, uint32_t mid, object namespace, object room,
                   object event, object dst, object src, object payload, bint framed):
    cdef bytes b_ns = None
    cdef Py_ssize_t body = 0, head = 0
    # Converted and checked field by field, in wire order, so the first bad argument
    # is the one named, exactly as in the twin.
    if v2:
        b_ns = _name_bytes(namespace, 0)
        body += PREFIX_V2 + 4 + _field_len(b_ns, 0)
    cdef bytes b_room = _name_bytes(room, 1)
    body += 4 + _field_len(b_room, 1)
    cdef bytes b_event = _name_bytes(event, 2)
    body += 4 + _field_len(b_event, 2)
    cdef bytes b_dst = _name_bytes(dst, 3)
    body += 4 + _field_len(b_dst, 3)
    cdef bytes b_src = _name_bytes(src, 4)
    body += 4 + _field_len(b_src, 4)
    cdef bytes b_payload = _payload_bytes(payload)
    body += 4 + _field_len(b_payload, 5)
    if framed:
        head = _header_size(body)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, head + body)
    cdef uint8_t* p = <uint8_t*>PyBytes_AS_STRING(out)
    if framed:
        _write_header(p, body)
        p += head
    if v2:
        p[0] = <uint8_t>kind
        _store_u32(p + 1, mid)
        p = _put(p + PREFIX_V2, b_ns)
    p = _put(p, b_room)
    p = _put(p, b_event)
    p = _put(p, b_dst)
    p = _put(p, b_src)
    _put(p, b_payload)
    return out


def encode(room, event, dst, src, payload):
    """Encode one v1 roomer message body."""
    return _encode(False, 0, 0, None, room, event, dst, src, payload, False)


def encode_frame(room, event, dst, src, payload):
    """One v1 roomer message wrapped in its server WebSocket frame, ready for any receiver."""
    return _encode(False, 0, 0, None, room, event, dst, src, payload, True)


def encode_v2(kind, id, namespace, room, event, dst, src, payload):
    """Encode one v2 roomer message body."""
    cdef uint32_t mid
    cdef int k = _kind_id(kind, id, &mid)
    return _encode(True, k, mid, namespace, room, event, dst, src, payload, False)


def encode_frame_v2(kind, id, namespace, room, event, dst, src, payload):
    """One v2 roomer message wrapped in its server WebSocket frame."""
    cdef uint32_t mid
    cdef int k = _kind_id(kind, id, &mid)
    return _encode(True, k, mid, namespace, room, event, dst, src, payload, True)


cdef bytes c_encode_frame(str room, str event, str dst, str src, object payload):
    return _encode(False, 0, 0, None, room, event, dst, src, payload, True)


cdef bytes c_encode_frame_v2(int kind, uint32_t id, str namespace, str room, str event,
                             str dst, str src, object payload):
    fault = _header_fault(kind, id)
    if fault is not None:
        raise ValueError(fault)
    return _encode(True, kind, id, namespace, room, event, dst, src, payload, True)


cdef bytes c_frame_header(Py_ssize_t size):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, _header_size(size))
    _write_header(<uint8_t*>PyBytes_AS_STRING(out), size)
    return out


cdef Py_ssize_t c_header_size(Py_ssize_t size) noexcept nogil:
    return _header_size(size)


cdef void c_write_header(uint8_t* p, Py_ssize_t size) noexcept nogil:
    _write_header(p, size)


cdef Py_ssize_t c_frame_body_offset(const uint8_t* frame) noexcept nogil:
    cdef uint8_t length7 = frame[1] & 0x7F
    if length7 == 126:
        return 4
    if length7 == 127:
        return 10
    return 2


def frame_header(size):
    """The header of an unmasked, final, binary WebSocket frame of ``size`` payload bytes."""
    n = _index(size, "size")
    if n < 0:
        raise ValueError("size must not be negative")
    if n > MAX_FRAME:
        raise ValueError("size must be less than 2**63")
    return c_frame_header(n)


# --------------------------------------------------------------------------- decode


cdef int c_spans(const uint8_t* data, Py_ssize_t total, Py_ssize_t pos, int count,
                 Py_ssize_t* starts, Py_ssize_t* ends) noexcept nogil:
    cdef uint32_t length
    cdef int i
    for i in range(count):
        if total - pos < 4:
            return i
        length = _load_u32(data + pos)
        # Compared as 64-bit values: a claimed 0xFFFFFFFF never wraps a position.
        if <Py_ssize_t>length > total - pos - 4:
            return i
        pos += 4
        starts[i] = pos
        ends[i] = pos + length
        pos += length
    return -1 if pos == total else count


cdef int _spans(const uint8_t* data, Py_ssize_t total, Py_ssize_t pos, int first,
                Py_ssize_t* starts, Py_ssize_t* ends, object kind, object mid) except -1:
    """Bounds of fields _FIELDS[first:] from ``pos`` on; they must fill ``total`` exactly."""
    cdef int count = 6 - first
    cdef int bad = c_spans(data, total, pos, count, starts, ends)
    if bad < 0:
        return 0
    if bad == count:
        raise ProtocolError(f"{total - ends[count - 1]} bytes remain after the payload",
                            kind=kind, id=mid)
    if bad:
        pos = ends[bad - 1]
    if total - pos < 4:
        raise ProtocolError(f"{_FIELDS[first + bad]} length runs past the end of the message",
                            kind=kind, id=mid)
    raise ProtocolError(
        f"{_FIELDS[first + bad]} length {_load_u32(data + pos)} runs past the end of the"
        f" message ({total - pos - 4} bytes left)", kind=kind, id=mid)


cdef object _name_or_none(const uint8_t* p, Py_ssize_t start, Py_ssize_t end):
    try:
        return PyUnicode_DecodeUTF8(<const char*>p + start, end - start, NULL)
    except UnicodeDecodeError:
        return None


cdef object _invalid_name(const uint8_t* p, Py_ssize_t* starts, Py_ssize_t* ends, int first,
                          int field, object kind, object mid):
    # The context names (namespace, room, event) are reported whenever they are valid
    # themselves, whichever field was the invalid one.
    namespace = None
    if first == 0:
        namespace = _name_or_none(p, starts[0], ends[0])
    room = _name_or_none(p, starts[1 - first], ends[1 - first])
    event = _name_or_none(p, starts[2 - first], ends[2 - first])
    return ProtocolError(f"{_FIELDS[field]} is not valid UTF-8", "invalid_name", room, event,
                         namespace=namespace, kind=kind, id=mid)


cdef tuple _decode(object data, bint v2, bint with_src):
    cdef Py_buffer view
    cdef Py_ssize_t starts[6]
    cdef Py_ssize_t ends[6]
    cdef const uint8_t* p
    cdef Py_ssize_t total, pos = 0
    cdef int first = 1, nfields = 5, i, j, slot = 0, kind = 0
    cdef uint32_t mid = 0
    cdef tuple out
    kind_obj = mid_obj = None
    if type(data) is not bytes and type(data) is not bytearray:
        data = _readable(data, "data")
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        p = <const uint8_t*>view.buf
        total = view.len
        if v2:
            if total < MIN_SIZE_V2:
                raise ProtocolError(
                    f"message is {total} bytes, shorter than the minimum of 29")
            kind = p[0]
            mid = _load_u32(p + 1)
            fault = _header_fault(kind, mid)
            if fault is not None:
                raise ProtocolError(fault)
            kind_obj = kind
            mid_obj = mid
            first = 0
            nfields = 6
            pos = PREFIX_V2
        elif total < MIN_SIZE:
            raise ProtocolError(f"message is {total} bytes, shorter than the minimum of 20")
        _spans(p, total, pos, first, starts, ends, kind_obj, mid_obj)
        out = PyTuple_New(nfields + (2 if v2 else 0) - (0 if with_src else 1))
        if v2:
            Py_INCREF(kind_obj)
            PyTuple_SET_ITEM(out, 0, kind_obj)
            Py_INCREF(mid_obj)
            PyTuple_SET_ITEM(out, 1, mid_obj)
            slot = 2
        for i in range(nfields - 1):
            if i == nfields - 2 and not with_src:
                break  # src: bounds-checked above, never decoded
            try:
                name = PyUnicode_DecodeUTF8(<const char*>p + starts[i], ends[i] - starts[i], NULL)
            except UnicodeDecodeError:
                raise _invalid_name(p, starts, ends, first, first + i, kind_obj, mid_obj) from None
            Py_INCREF(name)
            PyTuple_SET_ITEM(out, slot, name)
            slot += 1
        j = nfields - 1
        payload = PyBytes_FromStringAndSize(<const char*>p + starts[j], ends[j] - starts[j])
        Py_INCREF(payload)
        PyTuple_SET_ITEM(out, slot, payload)
        return out
    finally:
        PyBuffer_Release(&view)


def decode(data):
    """Decode a v1 message body into (room, event, dst, src, payload)."""
    return _decode(data, False, True)


def decode_client(data):
    """Decode what a v1 client sent into (room, event, dst, payload); src is ignored."""
    return _decode(data, False, False)


def decode_v2(data):
    """Decode a v2 message body into (kind, id, namespace, room, event, dst, src, payload)."""
    return _decode(data, True, True)


def decode_client_v2(data):
    """Decode what a v2 client sent into (kind, id, namespace, room, event, dst, payload)."""
    return _decode(data, True, False)


# --------------------------------------------------------------------------- v1 body → v2


cdef bytes _frame_v2(int kind, uint32_t mid, bytes ns, const uint8_t* body, Py_ssize_t size):
    cdef Py_ssize_t starts[5]
    cdef Py_ssize_t ends[5]
    cdef Py_ssize_t n = _field_len(ns, 0)
    # The body is checked as a v1 body (lengths only): a frame built here is well-formed.
    if size < MIN_SIZE:
        raise ProtocolError(f"message is {size} bytes, shorter than the minimum of 20")
    _spans(body, size, 0, 1, starts, ends, None, None)
    cdef Py_ssize_t total = PREFIX_V2 + 4 + n + size
    cdef Py_ssize_t head = _header_size(total)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, head + total)
    cdef uint8_t* p = <uint8_t*>PyBytes_AS_STRING(out)
    _write_header(p, total)
    p += head
    p[0] = <uint8_t>kind
    _store_u32(p + 1, mid)
    p = _put(p + PREFIX_V2, ns)
    memcpy(p, body, size)
    return out


cdef bytes c_frame_v2_from_v1_body(int kind, uint32_t id, str namespace,
                                   const uint8_t* body, Py_ssize_t size):
    fault = _header_fault(kind, id)
    if fault is not None:
        raise ValueError(fault)
    return _frame_v2(kind, id, _name_bytes(namespace, 0), body, size)


def frame_v2_from_v1_body(kind, id, namespace, v1_body):
    """A framed v2 message from an encoded v1 body: prefix and namespace, then one copy."""
    cdef Py_buffer view
    cdef uint32_t mid
    cdef int k = _kind_id(kind, id, &mid)
    cdef bytes ns = _name_bytes(namespace, 0)
    _field_len(ns, 0)
    if type(v1_body) is not bytes and type(v1_body) is not bytearray:
        v1_body = _readable(v1_body, "v1_body")
    PyObject_GetBuffer(v1_body, &view, PyBUF_SIMPLE)
    try:
        return _frame_v2(k, mid, ns, <const uint8_t*>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


# --------------------------------------------------------------------------- batches


cdef uint32_t c_load_u32(const uint8_t* p) noexcept nogil:
    return _load_u32(p)


cdef Py_ssize_t c_batch_size(const uint8_t* p, Py_ssize_t total) noexcept nogil:
    cdef Py_ssize_t pos = 1, count = 0
    cdef uint32_t length
    if total < 2 or p[0] != BATCH:
        return -1
    while pos < total:
        if count == C_BATCH_MAX or total - pos < 4:
            return -1
        length = _load_u32(p + pos)
        pos += 4
        if length < <uint32_t>MIN_SIZE_V2 or <Py_ssize_t>length > total - pos:
            return -1
        pos += length
        count += 1
    return count


cdef str _batch_fault(const uint8_t* p, Py_ssize_t total):
    # What is wrong with a batch c_batch_size refused, in the order split_batch checks.
    cdef Py_ssize_t pos = 1, count = 0
    cdef uint32_t length
    if total == 0 or p[0] != BATCH:
        return "not a batch: its first byte is not 04"
    if total == 1:
        return "a batch must hold at least one message"
    while pos < total:
        if count == C_BATCH_MAX:
            return f"a batch holds more than {C_BATCH_MAX} messages"
        count += 1
        if total - pos < 4:
            return f"entry {count} length runs past the end of the batch"
        length = _load_u32(p + pos)
        pos += 4
        if length < <uint32_t>MIN_SIZE_V2:
            return f"entry {count} is {length} bytes, shorter than the minimum of 29"
        if <Py_ssize_t>length > total - pos:
            return (f"entry {count} length {length} runs past the end of the batch "
                    f"({total - pos} bytes left)")
        pos += length
    return "a malformed batch"  # not reached: c_batch_size refused it for one of those


def split_batch(data):
    """The v2 bodies of a batch (docs/protocol.md §13), in order, each a copy. The
    batch's framing is checked (ProtocolError ``malformed``); the bodies are not
    decoded: each is a message of its own to decode."""
    cdef Py_buffer view
    cdef const uint8_t* p
    cdef Py_ssize_t total, pos = 1
    cdef uint32_t length
    cdef list out = []
    if type(data) is not bytes and type(data) is not bytearray:
        data = _readable(data, "data")
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        p = <const uint8_t*>view.buf
        total = view.len
        if c_batch_size(p, total) < 0:
            raise ProtocolError(_batch_fault(p, total))
        while pos < total:
            length = _load_u32(p + pos)
            out.append(PyBytes_FromStringAndSize(<const char*>p + pos + 4, length))
            pos += 4 + length
    finally:
        PyBuffer_Release(&view)
    return out


def encode_batch(bodies):
    """One batch body of the v2 bodies in ``bodies`` (an iterable of bytes-like, 1 to
    BATCH_MAX of them, each at least 29 bytes: ValueError otherwise). The bodies are
    not decoded: what is not a v2 message is answered as such by its receiver."""
    cdef list parts = []
    cdef Py_ssize_t size = 1, n
    cdef bytes out
    cdef uint8_t* q
    for body in bodies:
        body = bytes(_readable(body, "body"))
        n = PyBytes_GET_SIZE(body)
        if n < MIN_SIZE_V2:
            raise ValueError(f"a body of {n} bytes is shorter than the minimum of 29")
        if n > 0xFFFFFFFF:
            raise ValueError("a body is longer than 4294967295 bytes")
        if len(parts) == C_BATCH_MAX:
            raise ValueError(f"a batch holds at most {C_BATCH_MAX} messages")
        parts.append(body)
        size += 4 + n
    if not parts:
        raise ValueError("a batch must hold at least one message")
    out = PyBytes_FromStringAndSize(NULL, size)
    q = <uint8_t*>PyBytes_AS_STRING(out)
    q[0] = BATCH
    q += 1
    for body in parts:
        q = c_put(q, PyBytes_AS_STRING(<bytes>body), PyBytes_GET_SIZE(<bytes>body))
    return out
