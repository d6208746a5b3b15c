"""A raw roomer test client on the ``websockets`` library.

It builds and parses roomer messages by hand from docs/protocol.md §2 with ``struct`` (uint32
big-endian lengths) and never imports roomer's codec, so a server test cannot pass
because both halves of roomer agree on the same mistake.
"""

from __future__ import annotations

import asyncio
import json
import struct
import uuid
from collections.abc import Iterable
from typing import Any, NamedTuple

from waiting import TIMEOUT, eventually, scaled
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

__all__ = ["TIMEOUT", "Msg", "RawClient", "connect", "connect_ws", "decode", "encode",
           "eventually", "http_get", "pair_in", "url_of"]

QUIET = 0.2  # how long "nothing arrives" is watched once the anchor is in (scaled)

Field = str | bytes


class Msg(NamedTuple):
    room: str
    event: str
    dst: str
    src: str
    payload: bytes

    @property
    def text(self) -> str:
        return self.payload.decode()

    def json(self) -> Any:
        return json.loads(self.payload)


def _field(value: Field) -> bytes:
    data = value.encode() if isinstance(value, str) else bytes(value)
    return struct.pack(">I", len(data)) + data


def encode(room: Field, event: Field, dst: Field = "", src: Field = "",
           payload: Field = b"") -> bytes:
    """The five length-prefixed fields of docs/protocol.md §2 (str fields are UTF-8 encoded)."""
    return b"".join(_field(f) for f in (room, event, dst, src, payload))


def decode(data: bytes) -> Msg:
    """Strict parse of a server message; AssertionError on anything off-contract."""
    assert isinstance(data, bytes), f"server sent a text frame: {data!r}"
    assert len(data) >= 20, f"message shorter than 20 bytes: {data!r}"
    pos = 0
    fields: list[bytes] = []
    for _ in range(5):
        assert pos + 4 <= len(data), f"length field runs past the end: {data!r}"
        (size,) = struct.unpack_from(">I", data, pos)
        pos += 4
        assert pos + size <= len(data), f"field runs past the end: {data!r}"
        fields.append(data[pos:pos + size])
        pos += size
    assert pos == len(data), f"{len(data) - pos} trailing bytes: {data!r}"
    room, event, dst, src = (f.decode("utf-8") for f in fields[:4])
    return Msg(room, event, dst, src, fields[4])


def url_of(server: Any, path: str = "/") -> str:
    host, port = server.address
    return f"ws://{host}:{port}{path}"


class RawClient:
    """One websockets connection speaking roomer by hand."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.id = ""
        self.root_ack: Msg | None = None

    # sending ------------------------------------------------------------------------

    async def send(self, room: Field, event: Field, dst: Field = "", src: Field = "",
                   payload: Field = b"") -> None:
        await self.send_raw(encode(room, event, dst, src, payload))

    async def send_raw(self, data: bytes | str | Iterable[bytes]) -> None:
        """bytes: a binary frame; str: a text frame; an iterable: fragments."""
        await asyncio.wait_for(self.ws.send(data), TIMEOUT)

    async def send_text(self, room: str, event: str, dst: str = "", src: str = "",
                        payload: str = "") -> None:
        await self.send_raw(encode(room, event, dst, src, payload).decode("utf-8"))

    # receiving ----------------------------------------------------------------------

    async def recv(self, timeout: float = TIMEOUT) -> Msg:
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        return decode(data)  # type: ignore[arg-type]

    async def expect(self, event: str, room: str | None = None,
                     timeout: float = TIMEOUT) -> Msg:
        """The next message, asserted to be ``event`` (in ``room`` if given)."""
        msg = await self.recv(timeout)
        assert msg.event == event, f"expected {event!r}, got {msg}"
        if room is not None:
            assert msg.room == room, f"expected room {room!r}, got {msg}"
        return msg

    async def expect_error(self, code: str, room: str, event: str) -> dict[str, Any]:
        """The next message is an ``error`` with this code, room and event; its body."""
        msg = await self.expect("error")
        body = msg.json()
        assert body["code"] == code, f"expected error {code!r}, got {body}"
        assert msg.room == room, f"error room {msg.room!r}, wanted {room!r}: {body}"
        assert body["event"] == event, f"error event {body['event']!r}, wanted {event!r}"
        assert msg.src == "" and msg.dst == "", msg
        assert isinstance(body["message"], str)
        assert set(body) == {"code", "message", "event"}, body
        return body  # type: ignore[no-any-return]

    async def expect_nothing(self, seconds: float = QUIET) -> None:
        """Nothing is waiting for this client. The anchor: a WebSocket ping, which roomer
        answers through the connection's outbox, so whatever the server had queued for
        this client before it read the ping arrives before the pong. Then ``seconds``
        (before scaling) of watching for anything later. A test whose unwanted message would come
        from another client anchors on that client too (a marker sent after it)."""
        pong = await asyncio.wait_for(self.ws.ping(), TIMEOUT)
        await asyncio.wait_for(pong, TIMEOUT)
        try:
            data = await asyncio.wait_for(self.ws.recv(), scaled(seconds))
        except TimeoutError:
            return
        raise AssertionError(f"unexpected message: {decode(data)}")  # type: ignore[arg-type]

    async def closed(self, timeout: float = TIMEOUT) -> tuple[int | None, str | None]:
        """Read until the server closes; (close code, reason). Messages are discarded."""
        async def drain() -> None:
            try:
                while True:
                    await self.ws.recv()
            except ConnectionClosed:
                pass

        await asyncio.wait_for(drain(), timeout)
        rcvd = self.ws.protocol.close_rcvd
        if rcvd is None:
            return None, None
        return rcvd.code, rcvd.reason

    # rooms ----------------------------------------------------------------------------

    async def join(self, room: str) -> list[str]:
        """Join and wait for the join_ack; the member list it carries."""
        await self.send(room, "join")
        msg = await self.expect("join_ack", room)
        assert msg.src == self.id and msg.dst == "", msg
        members = msg.json()
        assert isinstance(members, list) and self.id in members, msg
        return members  # type: ignore[no-any-return]

    async def leave(self, room: str) -> None:
        await self.send(room, "leave")
        msg = await self.expect("leave_ack", room)
        assert msg.src == self.id and msg.dst == "" and msg.payload == self.id.encode(), msg

    async def close(self) -> None:
        await asyncio.wait_for(self.ws.close(), TIMEOUT)


async def connect(target: Any, **kwargs: Any) -> RawClient:
    """Connect (to a Server or a ws:// url) and read the root join_ack telling the id."""
    url = target if isinstance(target, str) else url_of(target)
    ws = await asyncio.wait_for(ws_connect(url, open_timeout=TIMEOUT, **kwargs), TIMEOUT)
    client = RawClient(ws)
    msg = await client.recv()
    assert msg.room == "root" and msg.event == "join_ack" and msg.dst == "", msg
    client.id = msg.src
    client.root_ack = msg
    assert uuid.UUID(client.id).version == 4 and str(uuid.UUID(client.id)) == client.id
    return client


async def pair_in(server: Any, room: str) -> tuple[RawClient, RawClient]:
    """Two clients in ``room``; the first has already taken the second's new_member."""
    a = await connect(server)
    b = await connect(server)
    await a.join(room)
    await b.join(room)
    await a.expect("new_member")
    return a, b


async def connect_ws(target: Any, **kwargs: Any) -> ClientConnection:
    """A bare websockets connection (no root join_ack read)."""
    url = target if isinstance(target, str) else url_of(target)
    return await asyncio.wait_for(ws_connect(url, open_timeout=TIMEOUT, **kwargs), TIMEOUT)


async def http_get(server: Any, path: str, headers: dict[str, str] | None = None,
                   ) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP/1.1 GET over asyncio streams: (status, headers, body)."""
    host, port = server.address
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)
    try:
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        hdrs: dict[str, str] = {}
        for line in header_lines:
            if ":" in line:
                k, v = line.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        if "content-length" in hdrs:
            body = await asyncio.wait_for(
                reader.readexactly(int(hdrs["content-length"])), TIMEOUT)
        else:
            body = await asyncio.wait_for(reader.read(), TIMEOUT)
        return status, hdrs, body
    finally:
        writer.close()
