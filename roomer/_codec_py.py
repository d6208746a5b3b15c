"""Pure-Python roomer codec: the fallback and the test oracle of roomer._codec.

Sans-I/O: bytes in, values out. The API and every error text match the compiled module.
"""

from __future__ import annotations

from struct import Struct

from .errors import ProtocolError

__all__ = ["decode", "decode_client", "encode", "encode_frame", "frame_header"]

_U32 = Struct(">I")
_U16 = Struct(">H")
_U64 = Struct(">Q")
_FIELDS = ("room", "event", "dst", "src", "payload")
MIN_SIZE = 20
MAX_FIELD = 0xFFFFFFFF
_OP_BINARY = 0x82  # FIN + binary opcode


def _as_bytes(value: str | bytes | bytearray | memoryview, field: str) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{field} must be str or bytes-like, not {type(value).__name__}")


def encode(
    room: str, event: str, dst: str, src: str, payload: str | bytes | bytearray | memoryview
) -> bytes:
    """Encode one roomer message body."""
    parts = []
    for name, value in zip(_FIELDS, (room, event, dst, src, payload), strict=True):
        if name != "payload" and not isinstance(value, str):
            raise TypeError(f"{name} must be str, not {type(value).__name__}")
        raw = _as_bytes(value, name)
        if len(raw) > MAX_FIELD:
            raise ValueError(f"{name} is longer than 4294967295 bytes")
        parts.append(_U32.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def frame_header(size: int) -> bytes:
    """The header of an unmasked, final, binary WebSocket frame of ``size`` payload bytes."""
    if size < 0:
        raise ValueError("size must not be negative")
    if size < 126:
        return bytes((_OP_BINARY, size))
    if size < 65536:
        return bytes((_OP_BINARY, 126)) + _U16.pack(size)
    return bytes((_OP_BINARY, 127)) + _U64.pack(size)


def encode_frame(
    room: str, event: str, dst: str, src: str, payload: str | bytes | bytearray | memoryview
) -> bytes:
    """One roomer message wrapped in its server WebSocket frame, ready for any receiver."""
    body = encode(room, event, dst, src, payload)
    return frame_header(len(body)) + body


def _spans(data: bytes | bytearray | memoryview) -> tuple[memoryview, list[tuple[int, int]]]:
    view = memoryview(data).cast("B")
    total = len(view)
    if total < MIN_SIZE:
        raise ProtocolError(f"message is {total} bytes, shorter than the minimum of 20")
    pos = 0
    spans = []
    for name in _FIELDS:
        if total - pos < 4:
            raise ProtocolError(f"{name} length runs past the end of the message")
        length = _U32.unpack_from(view, pos)[0]
        pos += 4
        if length > total - pos:
            raise ProtocolError(
                f"{name} length {length} runs past the end of the message"
                f" ({total - pos} bytes left)"
            )
        spans.append((pos, pos + length))
        pos += length
    if pos != total:
        raise ProtocolError(f"{total - pos} bytes remain after the payload")
    return view, spans


def _names(view: memoryview, spans: list[tuple[int, int]], count: int) -> list[str]:
    names: list[str] = []
    for i in range(count):
        start, end = spans[i]
        try:
            names.append(str(view[start:end], "utf-8"))
        except UnicodeDecodeError:
            raise ProtocolError(
                f"{_FIELDS[i]} is not valid UTF-8", "invalid_name",
                _name_or_none(view, spans[0]), _name_or_none(view, spans[1]),
            ) from None
    return names


def _name_or_none(view: memoryview, span: tuple[int, int]) -> str | None:
    # Room and event are named in the error whenever they are valid themselves,
    # whichever field was the invalid one.
    try:
        return str(view[span[0]:span[1]], "utf-8")
    except UnicodeDecodeError:
        return None


def decode(data: bytes | bytearray | memoryview) -> tuple[str, str, str, str, bytes]:
    """Decode a message body into (room, event, dst, src, payload)."""
    view, spans = _spans(data)
    room, event, dst, src = _names(view, spans, 4)
    start, end = spans[4]
    return room, event, dst, src, bytes(view[start:end])


def decode_client(data: bytes | bytearray | memoryview) -> tuple[str, str, str, bytes]:
    """Decode what a client sent into (room, event, dst, payload).

    src is bounds-checked but not decoded: the server replaces it, so whatever a
    client puts there (invalid UTF-8 included) is ignored.
    """
    view, spans = _spans(data)
    room, event, dst = _names(view, spans, 3)
    start, end = spans[4]
    return room, event, dst, bytes(view[start:end])
