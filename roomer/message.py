"""The roomer message as a plain data type; encoding is done by the selected codec."""

from __future__ import annotations

from typing import NamedTuple

from . import codec

__all__ = ["Message"]


class Message(NamedTuple):
    """One roomer message: room, event, dst, src and an opaque payload."""

    room: str
    event: str
    dst: str = ""
    src: str = ""
    payload: bytes = b""

    def encode(self) -> bytes:
        """The wire form of docs/protocol.md §2 (the WebSocket message body)."""
        return codec.encode(self.room, self.event, self.dst, self.src, self.payload)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> Message:
        """Parse wire bytes; raises `roomer.ProtocolError` on bad input."""
        return cls(*codec.decode(data))

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8 (raises UnicodeDecodeError if it is not)."""
        return self.payload.decode()
