"""The few bits of the roomer wire format (docs/protocol.md §2) the benchmark needs.

Kept separate from roomer's own codec on purpose: the harness must measure roomer from the
outside, and the peers must not depend on the code under test.
"""

from __future__ import annotations

import struct

__all__ = ["chat_payload", "decode", "encode", "relayed_frame_size", "ws_header_size"]

_U32 = struct.Struct(">I")
# seq, send time (ns, CLOCK_MONOTONIC): the probe's latency and flow-control stamp.
STAMP = struct.Struct(">QQ")

LOBBY = "lobby"
CHAT = "chat"
ID_LEN = 36  # canonical UUIDv4 text: what roomer and every peer hand out


def encode(room: str, event: str, dst: str, src: str, payload: bytes) -> bytes:
    parts = []
    for field in (room.encode(), event.encode(), dst.encode(), src.encode(), payload):
        parts.append(_U32.pack(len(field)))
        parts.append(field)
    return b"".join(parts)


def decode(body: bytes) -> tuple[str, str, str, str, bytes]:
    """Decode one message; raises ValueError on anything malformed."""
    fields: list[bytes] = []
    pos = 0
    for _ in range(5):
        if pos + 4 > len(body):
            raise ValueError("truncated message")
        (size,) = _U32.unpack_from(body, pos)
        pos += 4
        if pos + size > len(body):
            raise ValueError("length runs past the end")
        fields.append(body[pos : pos + size])
        pos += size
    if pos != len(body):
        raise ValueError("trailing bytes")
    room, event, dst, src, payload = fields
    return room.decode(), event.decode(), dst.decode(), src.decode(), payload


def ws_header_size(body_size: int) -> int:
    """Size of an unmasked (server-to-client) WebSocket frame header."""
    if body_size < 126:
        return 2
    if body_size < 65536:
        return 4
    return 10


def relayed_body_size(
    payload_size: int, room: str = LOBBY, event: str = CHAT, id_len: int = ID_LEN
) -> int:
    """Body of a relayed broadcast: dst empty, src = the sender's id."""
    return 20 + len(room.encode()) + len(event.encode()) + id_len + payload_size


def relayed_frame_size(payload_size: int, id_len: int = ID_LEN) -> int:
    body = relayed_body_size(payload_size, id_len=id_len)
    return body + ws_header_size(body)


def chat_payload(seq: int, sent_ns: int, size: int) -> bytes:
    """A payload of exactly `size` bytes (>= 16) that starts with (seq, send time)."""
    return STAMP.pack(seq, sent_ns) + bytes(size - STAMP.size)


JOIN_LOBBY = encode(LOBBY, "join", "", "", b"")
