"""A WebSocket client on a bare socket, so a test controls exactly when (and whether) it
reads and answers pings. Frames are built by hand from the RFC and docs/protocol.md §2."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

from waiting import scaled

import roomer


def _msg(room: str, event: str, payload: bytes = b"", dst: str = "") -> bytes:
    out = b""
    for field in (room, event, dst, ""):
        raw = field.encode()
        out += struct.pack(">I", len(raw)) + raw
    return out + struct.pack(">I", len(payload)) + payload


def _masked_frame(body: bytes, opcode: int = 0x2, *, fin: bool = True, rsv: int = 0) -> bytes:
    mask = os.urandom(4)
    size = len(body)
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    if size < 126:
        head = struct.pack(">BB", first, 0x80 | size)
    elif size < 65536:
        head = struct.pack(">BBH", first, 0x80 | 126, size)
    else:
        head = struct.pack(">BBQ", first, 0x80 | 127, size)
    # One big-integer XOR: a byte-by-byte loop over a 15 MB burst held the test's loop
    # (the server's too) for seconds on a loaded machine.
    key = (mask * (size // 4 + 1))[:size]
    masked = (int.from_bytes(body, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")
    return head + mask + masked


class RawSocket:
    """A WebSocket client on a bare socket, so a test controls exactly when it reads."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    @classmethod
    async def open(cls, port: int, rcvbuf: int | None = None) -> RawSocket:
        return await cls.open_path(port, "/ws", rcvbuf)

    @classmethod
    async def open_path(cls, port: int, path: str, rcvbuf: int | None = None) -> RawSocket:
        """Upgrade on ``path``; asserts the 101."""
        self = await cls.open_raw(port, path, rcvbuf)
        head = await self.http_response()
        assert head.startswith(b"HTTP/1.1 101"), head
        return self

    @classmethod
    async def open_raw(cls, port: int, path: str = "/ws", rcvbuf: int | None = None,
                       request: bytes | None = None) -> RawSocket:
        """Send an upgrade request (``request`` verbatim if given); read no answer."""
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        if request is None:
            key = base64.b64encode(os.urandom(16)).decode()
            request = (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        await loop.sock_sendall(sock, request)
        return cls(sock)

    async def http_response(self) -> bytes:
        """The HTTP response head (status line and headers); the rest stays buffered."""
        loop = asyncio.get_running_loop()
        while b"\r\n\r\n" not in self.buf:
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), scaled(5))
            if not data:
                raise ConnectionError(f"closed before a full response: {bytes(self.buf)!r}")
            self.buf += data
        head, rest = bytes(self.buf).split(b"\r\n\r\n", 1)
        self.buf = bytearray(rest)
        return head

    async def send(self, room: str, event: str, payload: bytes = b"") -> None:
        frame = _masked_frame(_msg(room, event, payload))
        await asyncio.get_running_loop().sock_sendall(self.sock, frame)

    async def send_many(self, messages: list[tuple[str, str, bytes]]
                        | list[tuple[str, str, bytes, str]]) -> None:
        """Send many messages (room, event, payload[, dst]) in one write, so the server
        reads them in large chunks."""
        await self.send_bodies([_msg(*m) for m in messages])

    async def send_bodies(self, bodies: list[bytes]) -> None:
        """Send raw message bodies (well-formed or not), one binary frame each, at once."""
        frames = b"".join(_masked_frame(body) for body in bodies)
        await asyncio.get_running_loop().sock_sendall(self.sock, frames)

    async def send_frame(self, opcode: int, body: bytes, *, fin: bool = True,
                         rsv: int = 0) -> None:
        """Any single frame, built by hand (opcodes, RSV bits and fragments as given)."""
        frame = _masked_frame(body, opcode, fin=fin, rsv=rsv)
        await asyncio.get_running_loop().sock_sendall(self.sock, frame)

    async def send_raw_bytes(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def pong(self, body: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, _masked_frame(body, 0xA))

    async def recv_frame(self, chunk: int = 65536) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        while True:
            frame = self._parse()
            if frame is not None:
                return frame
            data = await asyncio.wait_for(loop.sock_recv(self.sock, chunk), scaled(10))
            if not data:
                raise ConnectionError("closed")
            self.buf += data

    def _parse(self) -> tuple[int, bytes] | None:
        buf = self.buf
        if len(buf) < 2:
            return None
        size, at = buf[1] & 0x7F, 2
        if size == 126:
            if len(buf) < 4:
                return None
            size, at = struct.unpack(">H", buf[2:4])[0], 4
        elif size == 127:
            if len(buf) < 10:
                return None
            size, at = struct.unpack(">Q", buf[2:10])[0], 10
        if len(buf) < at + size:
            return None
        opcode, body = buf[0] & 0x0F, bytes(buf[at:at + size])
        del buf[:at + size]
        return opcode, body

    async def close_frame(self, timeout: float = 10) -> tuple[int | None, bytes]:
        """Read until the server's close frame: (its status code or None, its reason);
        ``timeout`` in seconds before scaling."""
        async def wait() -> tuple[int | None, bytes]:
            while True:
                opcode, body = await self.recv_frame()
                if opcode == 0x8:
                    if len(body) < 2:
                        return None, b""
                    return struct.unpack(">H", body[:2])[0], body[2:]

        return await asyncio.wait_for(wait(), scaled(timeout))

    async def recv(self) -> tuple[str, str, str, str, bytes]:
        opcode, body = await self.recv_frame()
        assert opcode == 2, (opcode, body)
        return roomer.Message.decode(body)

    def close(self) -> None:
        self.sock.close()


async def joined(port: int, room: str, rcvbuf: int | None = None) -> tuple[RawSocket, str]:
    """A bare-socket client that has joined ``room``, and its id."""
    client = await RawSocket.open(port, rcvbuf)
    root_ack = await client.recv()
    await client.send(room, "join")
    while (await client.recv())[1] != "join_ack":
        pass
    return client, root_ack[3]
