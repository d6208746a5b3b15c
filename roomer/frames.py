"""What the server sends, framed for the protocol version of whoever gets it (sans-I/O).

The server encodes a message once, as a v1 frame; a v2 receiver's frame is made from its
body with one copy (docs/protocol.md §3: the v1 body is a suffix of the v2 body). Frames
that cross the backplane are v1 frames too, so every node adapts them for its own
receivers in the same way.
"""

from __future__ import annotations

import json

from . import codec

__all__ = ["ASK", "BATCH", "BATCH_BYTES", "BATCH_FRAME_MAX", "ERROR_REPLY", "EVENT", "REPLY",
           "as_v2", "encode", "reply_payload", "v1_body"]

# v2 kinds (docs/protocol.md §3), and the first byte of a batch frame (§13)
EVENT, ASK, REPLY, ERROR_REPLY, BATCH = range(5)

# The entries' bytes a roomer writer gathers in one batch at most (a larger message goes
# alone), and so the largest batch frame it writes: the kind byte, 256 lengths, entries.
BATCH_BYTES = 64 * 1024
BATCH_FRAME_MAX = 1 + 4 * codec.BATCH_MAX + BATCH_BYTES

Payload = bytes | bytearray | memoryview | str


def v1_body(frame: bytes) -> memoryview:
    """The roomer message inside a frame this server made (final, unmasked, binary), as
    a view: as_v2 copies it once, into the v2 frame, not first into a slice."""
    size = frame[1]
    return memoryview(frame)[2 if size < 126 else 4 if size == 126 else 10:]


def as_v2(frame: bytes, namespace: str) -> bytes:
    """The v2 event frame of the v1 ``frame`` in ``namespace``."""
    return codec.frame_v2_from_v1_body(EVENT, 0, namespace, v1_body(frame))


def encode(v2: bool, namespace: str, room: str, event: str, dst: str, src: str,
           payload: Payload, kind: int = EVENT, id: int = 0) -> bytes:
    """One message framed for one receiver: v2 if it speaks v2, else v1 (then the
    namespace is the default one, and the kind an event)."""
    if v2:
        return codec.encode_frame_v2(kind, id, namespace, room, event, dst, src, payload)
    return codec.encode_frame(room, event, dst, src, payload)


def reply_payload(value: object) -> bytes | str:
    """What an ask's handler returned, as its reply's payload (docs/protocol.md §7):
    nothing for None, bytes and text as they are, anything else as JSON.

    Raises:
        TypeError, ValueError: ``value`` is not JSON-able.
    """
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview, str)):
        return value if isinstance(value, (bytes, str)) else bytes(value)
    return json.dumps(value)
