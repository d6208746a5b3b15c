"""Pure-Python roomer codec: the fallback and the test oracle of roomer._codec.

Sans-I/O: bytes in, values out. docs/protocol.md is the wire format (v1 and v2).

The argument contract, the same in both twins (the same types accepted, the same
exception types and texts; tests/test_codec_args.py checks it on both):

- Names (``namespace``, ``room``, ``event``, ``dst``, ``src``): a ``str``, subclasses
  included, sent as the UTF-8 of its code points (a subclass's ``encode`` or
  ``__str__`` is never called). Anything else, ``bytes``, ``bool``, ``int`` or ``None``
  among them, is a ``TypeError`` "<field> must be str, not <type>"; a lone surrogate is
  a ``UnicodeEncodeError``. The real type decides: an object faking ``__class__`` is
  not a ``str``.
- ``payload``: a ``str`` (sent as names are) or any object with the buffer protocol
  (``bytes``, ``bytearray``, ``memoryview``, ``array.array``, ``mmap``, their
  subclasses...), sent as ``memoryview(payload).tobytes()`` gives it: its bytes in
  logical order, so a strided view sends its elements and a ``bytes`` subclass its
  contents (never its ``__bytes__``). Anything else: ``TypeError`` "payload must be
  str or bytes-like, not <type>".
- ``data`` (the ``decode*`` functions) and ``v1_body``: any object with the buffer
  protocol, read as ``memoryview(data).tobytes()`` would give it (a strided view is
  copied first); ``str`` and other objects: ``TypeError`` "<name> must be bytes-like,
  not <type>". What was decoded is a copy: later changes to ``data`` do not show.
- ``kind``, ``id`` and ``size``: whatever ``operator.index`` takes (``int``, ``bool``,
  ``int`` subclasses, objects with ``__index__``); else ``TypeError`` "<name> must be an
  integer, not <type>". Out of range, or a (kind, id) pair docs/protocol.md forbids:
  ``ValueError``.
- Arguments may be passed by keyword, with the names of the signatures here. A wrong
  number of arguments is a ``TypeError`` in both twins; only its text (the
  interpreter's own) differs.
- Bytes that are not a valid message: :class:`roomer.ProtocolError` (a ``ValueError``)
  with the same ``code``, text, ``namespace``/``room``/``event`` and ``kind``/``id``.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import index
from struct import Struct

from .errors import ProtocolError

__all__ = [
    "BATCH_MAX", "decode", "decode_client", "decode_client_v2", "decode_v2", "encode",
    "encode_batch", "encode_frame", "encode_frame_v2", "encode_v2", "frame_header",
    "frame_v2_from_v1_body", "split_batch",
]

BytesLike = bytes | bytearray | memoryview
Payload = str | bytes | bytearray | memoryview

_U32 = Struct(">I")
_U16 = Struct(">H")
_U64 = Struct(">Q")
_PREFIX = Struct(">BI")  # v2: kind, id
# v2 field order; a v1 body is the same minus the namespace (index 0).
_FIELDS = ("namespace", "room", "event", "dst", "src", "payload")
MIN_SIZE = 20
MIN_SIZE_V2 = 29
PREFIX_V2 = 5
MAX_FIELD = 0xFFFFFFFF
MAX_FRAME = (1 << 63) - 1
_OP_BINARY = 0x82  # FIN + binary opcode
BATCH = 4
#: The most messages one batch frame may hold (docs/protocol.md §13).
BATCH_MAX = 256


# --------------------------------------------------------------------------- arguments


def _name_bytes(value: object, field: int) -> bytes:
    # issubclass of the real type, as PyUnicode_Check in the compiled twin: isinstance
    # would believe an object that fakes __class__.
    if issubclass(type(value), str):
        return str.encode(value)  # type: ignore[arg-type]
    raise TypeError(f"{_FIELDS[field]} must be str, not {type(value).__name__}")


def _payload_bytes(value: object) -> bytes:
    if type(value) is bytes:
        return value
    if issubclass(type(value), str):
        return str.encode(value)  # type: ignore[arg-type]
    try:
        view = memoryview(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"payload must be str or bytes-like, not {type(value).__name__}") from None
    return view.tobytes()


def _field_len(part: bytes, field: int) -> int:
    n = len(part)
    if n > MAX_FIELD:
        raise ValueError(f"{_FIELDS[field]} is longer than 4294967295 bytes")
    return n


def _readable(data: object, what: str) -> memoryview:
    """A 1-D view of unsigned bytes holding data's bytes (a copy when data is not one)."""
    if type(data) is bytes:
        return memoryview(data)
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be bytes-like, not {type(data).__name__}") from None
    if not view.c_contiguous or view.ndim != 1 or view.format != "B":
        view = memoryview(view.tobytes())
    return view


def _index(value: object, name: str) -> int:
    try:
        return index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}") from None


def _header_fault(kind: int, mid: int) -> str | None:
    """Why a v2 (kind, id) pair is invalid, or None when it is valid."""
    if kind < 0 or kind > 3:
        return f"kind {kind} is not 0 (event), 1 (ask), 2 (reply) or 3 (error reply)"
    if kind == 0 and mid != 0:
        return f"an event (kind 0) must have id 0, not {mid}"
    if kind != 0 and mid == 0:
        return f"kind {kind} must have a non-zero id"
    return None


def _kind_id(kind: object, mid: object) -> tuple[int, int]:
    k = _index(kind, "kind")
    i = _index(mid, "id")
    if k < 0 or k > 3:
        raise ValueError(f"kind {k} is not 0 (event), 1 (ask), 2 (reply) or 3 (error reply)")
    if i < 0 or i > MAX_FIELD:
        raise ValueError(f"id {i} is not between 0 and 4294967295")
    fault = _header_fault(k, i)
    if fault is not None:
        raise ValueError(fault)
    return k, i


# --------------------------------------------------------------------------- encode


def _encode(prefix: bytes, names: tuple[object, ...], first: int, payload: object) -> bytes:
    # Converted and checked field by field, in wire order, so the first bad argument
    # is the one named, exactly as in the compiled twin.
    parts = [prefix]
    for field, value in enumerate(names, first):
        raw = _name_bytes(value, field)
        parts.append(_U32.pack(_field_len(raw, field)))
        parts.append(raw)
    raw = _payload_bytes(payload)
    parts.append(_U32.pack(_field_len(raw, 5)))
    parts.append(raw)
    return b"".join(parts)


def encode(room: str, event: str, dst: str, src: str, payload: Payload) -> bytes:
    """Encode one v1 roomer message body."""
    return _encode(b"", (room, event, dst, src), 1, payload)


def encode_frame(room: str, event: str, dst: str, src: str, payload: Payload) -> bytes:
    """One v1 roomer message wrapped in its server WebSocket frame, ready for any receiver."""
    body = encode(room, event, dst, src, payload)
    return _frame_header(len(body)) + body


def encode_v2(
    kind: int, id: int, namespace: str, room: str, event: str, dst: str, src: str,
    payload: Payload,
) -> bytes:
    """Encode one v2 roomer message body."""
    k, i = _kind_id(kind, id)
    return _encode(_PREFIX.pack(k, i), (namespace, room, event, dst, src), 0, payload)


def encode_frame_v2(
    kind: int, id: int, namespace: str, room: str, event: str, dst: str, src: str,
    payload: Payload,
) -> bytes:
    """One v2 roomer message wrapped in its server WebSocket frame."""
    body = encode_v2(kind, id, namespace, room, event, dst, src, payload)
    return _frame_header(len(body)) + body


def _frame_header(size: int) -> bytes:
    if size < 126:
        return bytes((_OP_BINARY, size))
    if size < 65536:
        return bytes((_OP_BINARY, 126)) + _U16.pack(size)
    return bytes((_OP_BINARY, 127)) + _U64.pack(size)


def frame_header(size: int) -> bytes:
    """The header of an unmasked, final, binary WebSocket frame of ``size`` payload bytes."""
    n = _index(size, "size")
    if n < 0:
        raise ValueError("size must not be negative")
    if n > MAX_FRAME:
        raise ValueError("size must be less than 2**63")
    return _frame_header(n)


# --------------------------------------------------------------------------- decode


def _spans(
    view: memoryview, pos: int, first: int, kind: int | None = None, mid: int | None = None
) -> list[tuple[int, int]]:
    """Bounds of fields _FIELDS[first:] from ``pos`` on; they must fill the view exactly."""
    total = len(view)
    spans = []
    for name in _FIELDS[first:]:
        if total - pos < 4:
            raise ProtocolError(f"{name} length runs past the end of the message",
                                kind=kind, id=mid)
        length = _U32.unpack_from(view, pos)[0]
        pos += 4
        if length > total - pos:
            raise ProtocolError(
                f"{name} length {length} runs past the end of the message"
                f" ({total - pos} bytes left)", kind=kind, id=mid)
        spans.append((pos, pos + length))
        pos += length
    if pos != total:
        raise ProtocolError(f"{total - pos} bytes remain after the payload", kind=kind, id=mid)
    return spans


def _name_or_none(view: memoryview, span: tuple[int, int]) -> str | None:
    try:
        return str(view[span[0]:span[1]], "utf-8")
    except UnicodeDecodeError:
        return None


def _names(
    view: memoryview, spans: list[tuple[int, int]], first: int, count: int,
    kind: int | None = None, mid: int | None = None,
) -> list[str]:
    names: list[str] = []
    for i in range(count):
        start, end = spans[i]
        try:
            names.append(str(view[start:end], "utf-8"))
        except UnicodeDecodeError:
            # The context names (namespace, room, event) are reported whenever they
            # are valid themselves, whichever field was the invalid one.
            namespace = _name_or_none(view, spans[0]) if first == 0 else None
            raise ProtocolError(
                f"{_FIELDS[first + i]} is not valid UTF-8", "invalid_name",
                _name_or_none(view, spans[1 - first]), _name_or_none(view, spans[2 - first]),
                namespace=namespace, kind=kind, id=mid,
            ) from None
    return names


def _v1(data: object) -> tuple[memoryview, list[tuple[int, int]]]:
    view = _readable(data, "data")
    if len(view) < MIN_SIZE:
        raise ProtocolError(f"message is {len(view)} bytes, shorter than the minimum of 20")
    return view, _spans(view, 0, 1)


def _v2(data: object) -> tuple[memoryview, int, int, list[tuple[int, int]]]:
    view = _readable(data, "data")
    if len(view) < MIN_SIZE_V2:
        raise ProtocolError(f"message is {len(view)} bytes, shorter than the minimum of 29")
    kind, mid = _PREFIX.unpack_from(view, 0)
    fault = _header_fault(kind, mid)
    if fault is not None:
        raise ProtocolError(fault)
    return view, kind, mid, _spans(view, PREFIX_V2, 0, kind, mid)


def decode(data: BytesLike) -> tuple[str, str, str, str, bytes]:
    """Decode a v1 message body into (room, event, dst, src, payload)."""
    view, spans = _v1(data)
    room, event, dst, src = _names(view, spans, 1, 4)
    start, end = spans[4]
    return room, event, dst, src, view[start:end].tobytes()


def decode_client(data: BytesLike) -> tuple[str, str, str, bytes]:
    """Decode what a v1 client sent into (room, event, dst, payload).

    src is bounds-checked but not decoded: the server replaces it, so whatever a
    client puts there (invalid UTF-8 included) is ignored.
    """
    view, spans = _v1(data)
    room, event, dst = _names(view, spans, 1, 3)
    start, end = spans[4]
    return room, event, dst, view[start:end].tobytes()


def decode_v2(data: BytesLike) -> tuple[int, int, str, str, str, str, str, bytes]:
    """Decode a v2 message body into (kind, id, namespace, room, event, dst, src, payload)."""
    view, kind, mid, spans = _v2(data)
    namespace, room, event, dst, src = _names(view, spans, 0, 5, kind, mid)
    start, end = spans[5]
    return kind, mid, namespace, room, event, dst, src, view[start:end].tobytes()


def decode_client_v2(data: BytesLike) -> tuple[int, int, str, str, str, str, bytes]:
    """Decode what a v2 client sent into (kind, id, namespace, room, event, dst, payload).

    src is bounds-checked but not decoded, as in :func:`decode_client`.
    """
    view, kind, mid, spans = _v2(data)
    namespace, room, event, dst = _names(view, spans, 0, 4, kind, mid)
    start, end = spans[5]
    return kind, mid, namespace, room, event, dst, view[start:end].tobytes()


# --------------------------------------------------------------------------- v1 body → v2


def frame_v2_from_v1_body(kind: int, id: int, namespace: str, v1_body: BytesLike) -> bytes:
    """A framed v2 message from an encoded v1 body: prefix and namespace, then one copy.

    The body is checked as a v1 body (its lengths, not its UTF-8), so a frame built
    here is always well-formed; a bad one raises :class:`roomer.ProtocolError`.
    """
    k, i = _kind_id(kind, id)
    ns = _name_bytes(namespace, 0)
    n = _field_len(ns, 0)
    body = _readable(v1_body, "v1_body")
    if len(body) < MIN_SIZE:
        raise ProtocolError(f"message is {len(body)} bytes, shorter than the minimum of 20")
    _spans(body, 0, 1)
    size = PREFIX_V2 + 4 + n + len(body)
    return b"".join((_frame_header(size), _PREFIX.pack(k, i), _U32.pack(n), ns, body))


# --------------------------------------------------------------------------- batches


def split_batch(data: BytesLike) -> list[bytes]:
    """The v2 bodies of a batch (docs/protocol.md §13), in order, each a copy. The
    batch's framing is checked (ProtocolError ``malformed``); the bodies are not
    decoded: each is a message of its own to decode."""
    view = _readable(data, "data")
    total = len(view)
    if total == 0 or view[0] != BATCH:
        raise ProtocolError("not a batch: its first byte is not 04")
    if total == 1:
        raise ProtocolError("a batch must hold at least one message")
    out: list[bytes] = []
    pos = 1
    while pos < total:
        if len(out) == BATCH_MAX:
            raise ProtocolError(f"a batch holds more than {BATCH_MAX} messages")
        number = len(out) + 1
        if total - pos < 4:
            raise ProtocolError(f"entry {number} length runs past the end of the batch")
        length = _U32.unpack_from(view, pos)[0]
        pos += 4
        if length < MIN_SIZE_V2:
            raise ProtocolError(f"entry {number} is {length} bytes, shorter than the "
                                f"minimum of 29")
        if length > total - pos:
            raise ProtocolError(f"entry {number} length {length} runs past the end of the "
                                f"batch ({total - pos} bytes left)")
        out.append(view[pos:pos + length].tobytes())
        pos += length
    return out


def encode_batch(bodies: Iterable[BytesLike]) -> bytes:
    """One batch body of the v2 bodies in ``bodies`` (an iterable of bytes-like, 1 to
    BATCH_MAX of them, each at least 29 bytes: ValueError otherwise). The bodies are
    not decoded: what is not a v2 message is answered as such by its receiver."""
    parts = [bytes((BATCH,))]
    count = 0
    for body in bodies:
        view = _readable(body, "body")
        if len(view) < MIN_SIZE_V2:
            raise ValueError(f"a body of {len(view)} bytes is shorter than the minimum of 29")
        if len(view) > MAX_FIELD:
            raise ValueError("a body is longer than 4294967295 bytes")
        count += 1
        if count > BATCH_MAX:
            raise ValueError(f"a batch holds at most {BATCH_MAX} messages")
        parts.append(_U32.pack(len(view)))
        parts.append(view.tobytes())
    if not count:
        raise ValueError("a batch must hold at least one message")
    return b"".join(parts)
