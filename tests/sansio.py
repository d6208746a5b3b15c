"""A roomer server with no sockets: the router, registries, namespaces and fan-out engine
of a real :class:`roomer.core.Core`, fed frames by hand, its output read from the bytes
each connection's outbox wrote, on a clock the test sets.

    node = Node(loop)                 # Core started on the running loop
    a, b = node.connect(), node.connect()
    node.send(a, "lobby", "join")     # a frame, as picows would hand it over
    await node.turn()                 # one loop turn: the outboxes are written
    node.received(a)                  # [Message(...), ...]: what a was sent

What is not here is the socket itself: the picows listener (roomer/server.py) calls the
same router with real frames, and the tests over real sockets cover it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from roomer import codec, fanout, frames
from roomer.config import Config
from roomer.connection import Connection
from roomer.core import Core
from roomer.message import Message

__all__ = ["Clock", "Frame", "Node", "Probe", "messages_of"]

BINARY, CONTINUATION, PING, PONG = 2, 0, 9, 10


class Frame:
    """What picows hands the listener for one frame (the parts the router reads)."""

    __slots__ = ("fin", "msg_type", "payload")

    def __init__(self, payload: bytes, msg_type: int = BINARY, fin: bool = True) -> None:
        self.payload = payload
        self.msg_type = msg_type
        self.fin = fin

    @property
    def payload_size(self) -> int:
        return len(self.payload)

    def get_payload_as_bytes(self) -> bytes:
        return bytes(self.payload)

    def get_payload_as_memoryview(self) -> memoryview:
        return memoryview(self.payload)


class Transport:
    """Stands in for picows' WSTransport: its ``underlying_transport.write`` records."""

    def __init__(self) -> None:
        self.underlying_transport = self
        self.data = bytearray()
        self.chunks: list[bytes] = []  # one per write
        self.is_disconnected = False
        self.is_close_frame_sent = False

    def write(self, data: bytes) -> None:
        self.data += data
        self.chunks.append(data)


class Probe(Connection):
    """A connection whose socket side records what roomer asked of it."""

    __slots__ = ("closed", "paused", "pings")

    def __init__(self, core: Core, v2: bool) -> None:
        super().__init__(core, None, None, v2)
        self.closed: tuple[int, str] | None = None
        self.paused = False
        self.pings = 0

    def shut(self, code: int, reason: str, graceful: bool) -> None:
        if self.closed is None:
            self.closed = (code, reason)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def ping(self) -> None:
        self.pings += 1


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def messages_of(data: bytes | bytearray, v2: bool = False) -> list[Any]:
    """The roomer messages in bytes a server wrote (unmasked frames): v1 as
    :class:`Message`, v2 as (kind, id, namespace, Message)."""
    out: list[Any] = []
    view = memoryview(bytes(data))
    i = 0
    while i < len(view):
        first, size = view[i], view[i + 1] & 0x7F
        i += 2
        if size == 126:
            size = int.from_bytes(view[i:i + 2], "big")
            i += 2
        elif size == 127:
            size = int.from_bytes(view[i:i + 8], "big")
            i += 8
        body = bytes(view[i:i + size])
        i += size
        if first & 0x0F != 2:
            out.append(("control", first & 0x0F, body))
        elif v2:
            kind, ask, ns, room, event, dst, src, payload = codec.decode_v2(body)
            out.append((kind, ask, ns, Message(room, event, dst, src, payload)))
        else:
            out.append(Message.decode(body))
    return out


class Node:
    """One server's core on the running loop, with no listener (see the module
    docstring). Options are :class:`roomer.Config`'s."""

    def __init__(self, loop: asyncio.AbstractEventLoop, setup: Any = None,
                 **options: Any) -> None:
        self.config = Config(**options)
        self.core = core = Core(self.config)
        if setup is not None:  # what an app does before start (define room types...)
            setup(core.default)
        self.clock = Clock()
        core.router.clock = self.clock
        engine = fanout.Fanout(loop, outbox_limit=self.config.outbox_limit,
                               flush_threshold=self.config.flush_threshold,
                               sync=self.config.sync_broadcast)
        core.start(loop, engine)
        core.router.start()
        self._read: dict[str, int] = {}

    @property
    def server(self) -> Any:
        """The default namespace, where a Server's own methods go."""
        return self.core.default

    def connect(self, v2: bool = False) -> Probe:
        conn = Probe(self.core, v2)
        conn.attach(Transport())
        self.core.lifecycle.connected(conn)
        return conn

    def disconnect(self, conn: Probe) -> None:
        conn.discard_outbox()
        self.core.lifecycle.disconnected(conn)

    def frame(self, conn: Probe, frame: Frame) -> None:
        self.core.router.frame(conn, frame)

    def send(self, conn: Probe, room: str, event: str, payload: bytes | str = b"",
             dst: str = "") -> None:
        """A v1 message from ``conn``, in one frame."""
        self.frame(conn, Frame(codec.encode(room, event, dst, "", payload)))

    def send_v2(self, conn: Probe, room: str, event: str, payload: bytes | str = b"",
                namespace: str = "", kind: int = frames.EVENT, ask: int = 0) -> None:
        self.frame(conn, Frame(codec.encode_v2(kind, ask, namespace, room, event, "", "",
                                               payload)))

    async def turn(self, turns: int = 1) -> None:
        """Let the loop run ``turns`` turns (the engine writes at the end of each)."""
        loop = asyncio.get_running_loop()
        for _ in range(turns):
            done = loop.create_future()
            loop.call_soon(done.set_result, None)
            await done

    def received(self, conn: Probe) -> list[Any]:
        """What ``conn`` was written since the last call."""
        transport = conn.transport
        start = self._read.get(conn.id, 0)
        self._read[conn.id] = len(transport.data)
        return messages_of(transport.data[start:], conn.v2)

    def events(self, conn: Probe) -> list[str]:
        """The events of :meth:`received`, v1."""
        return [m.event for m in self.received(conn)]
