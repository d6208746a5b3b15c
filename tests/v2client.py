"""A raw protocol v2 test client on the ``websockets`` library.

It builds and parses v2 messages by hand from docs/protocol.md §3 with ``struct`` and never
imports roomer's codec, so a test cannot pass because both halves of roomer agree on the
same mistake.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from typing import Any, NamedTuple

from rawclient import QUIET, TIMEOUT, url_of
from waiting import scaled
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

EVENT, ASK, REPLY, ERROR_REPLY, BATCH = range(5)


class Msg2(NamedTuple):
    kind: int
    id: int
    namespace: str
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


def _field(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else bytes(value)
    return struct.pack(">I", len(data)) + data


def encode(kind: int, id: int, namespace: str, room: str, event: str, dst: str = "",
           src: str = "", payload: str | bytes = b"") -> bytes:
    return struct.pack(">BI", kind, id) + b"".join(
        _field(f) for f in (namespace, room, event, dst, src, payload))


def batch(*bodies: bytes) -> bytes:
    """A batch frame's body (docs/protocol.md §13) of v2 ``bodies``, written by hand."""
    return bytes([BATCH]) + b"".join(_field(body) for body in bodies)


def split(data: bytes) -> list[bytes]:
    """The v2 bodies of a batch the server sent, read by hand (§13)."""
    assert data[0] == BATCH, data
    out, pos = [], 1
    while pos < len(data):
        (size,) = struct.unpack_from(">I", data, pos)
        assert size >= 29 and pos + 4 + size <= len(data), data
        out.append(data[pos + 4:pos + 4 + size])
        pos += 4 + size
    assert 1 <= len(out) <= 256, data
    return out


def decode(data: bytes) -> Msg2:
    assert isinstance(data, bytes), f"server sent a text frame: {data!r}"
    assert len(data) >= 29, data
    kind, id = struct.unpack_from(">BI", data)
    assert kind in (0, 1, 2, 3), data
    assert (id == 0) == (kind == 0), data
    pos = 5
    fields: list[bytes] = []
    for _ in range(6):
        (size,) = struct.unpack_from(">I", data, pos)
        pos += 4
        assert pos + size <= len(data), data
        fields.append(data[pos:pos + size])
        pos += size
    assert pos == len(data), data
    names = [f.decode() for f in fields[:5]]
    return Msg2(kind, id, *names, fields[5])


class Client2:
    """One v2 connection: ``ask`` waits for its answer; other messages queue in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        # It negotiated batch frames: what starts with byte 4 is a batch.
        self.batch = ws.subprotocol == "roomer.v2.batch"
        self.frames = 0  # WebSocket messages read
        self.batches: list[int] = []  # the size of each batch read
        self.id = ""
        self.next_id = 1
        self.answers: dict[int, asyncio.Future[Msg2]] = {}
        self.inbox: asyncio.Queue[Msg2] = asyncio.Queue()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):  # a server that died: nothing more
            await self._read_all()

    async def _read_all(self) -> None:
        async for data in self.ws:
            self.frames += 1
            bodies = [data]
            if self.batch and data[:1] == bytes([BATCH]):
                bodies = split(data)  # type: ignore[arg-type]
                self.batches.append(len(bodies))
            for body in bodies:
                msg = decode(body)  # type: ignore[arg-type]
                waiter = (self.answers.pop(msg.id, None) if msg.kind in (REPLY, ERROR_REPLY)
                          else None)
                if waiter is not None:
                    waiter.set_result(msg)
                else:
                    await self.inbox.put(msg)

    async def send(self, namespace: str, room: str, event: str, dst: str = "",
                   payload: str | bytes = b"", kind: int = EVENT, id: int = 0) -> None:
        await self.ws.send(encode(kind, id, namespace, room, event, dst, "", payload))

    async def ask(self, namespace: str, room: str, event: str,
                  payload: str | bytes = b"", dst: str = "") -> Msg2:
        ask_id = self.next_id
        self.next_id += 1
        waiter = asyncio.get_running_loop().create_future()
        self.answers[ask_id] = waiter
        await self.send(namespace, room, event, dst, payload, ASK, ask_id)
        return await asyncio.wait_for(waiter, TIMEOUT)

    async def recv(self, timeout: float = TIMEOUT) -> Msg2:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def expect(self, event: str, room: str | None = None, namespace: str | None = None,
                     timeout: float = TIMEOUT) -> Msg2:
        msg = await self.recv(timeout)
        assert msg.event == event, f"expected {event!r}, got {msg}"
        if room is not None:
            assert msg.room == room, msg
        if namespace is not None:
            assert msg.namespace == namespace, msg
        return msg

    async def expect_nothing(self, seconds: float = QUIET) -> None:
        """As RawClient.expect_nothing: a ping's pong anchors it, then ``seconds``."""
        pong = await asyncio.wait_for(self.ws.ping(), TIMEOUT)
        await asyncio.wait_for(pong, TIMEOUT)
        try:
            msg = await asyncio.wait_for(self.inbox.get(), scaled(seconds))
        except TimeoutError:
            return
        raise AssertionError(f"unexpected message: {msg}")

    async def connect_to(self, namespace: str) -> Msg2:
        return await self.ask(namespace, "", "connect")

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()


async def connect2(server: Any, subprotocols: list[str] | None = None) -> Client2:
    """A v2 client, connected (to a Server or a ws:// URL), that read its root join_ack
    (its id)."""
    ws = await asyncio.wait_for(
        ws_connect(server if isinstance(server, str) else url_of(server),
                   subprotocols=subprotocols or ["roomer.v2"],  # type: ignore[list-item]
                   open_timeout=TIMEOUT), TIMEOUT)
    assert ws.subprotocol == (subprotocols or ["roomer.v2"])[0], ws.subprotocol
    client = Client2(ws)
    first = await client.recv()
    assert (first.kind, first.namespace, first.room, first.event) == (EVENT, "", "root",
                                                                     "join_ack"), first
    client.id = first.src
    return client
