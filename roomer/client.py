"""asyncio client with the shape of roomer's JS client (roomer.js).

    root = await roomer.connect("ws://127.0.0.1:8080/ws")
    lobby = await root.join("lobby")
    lobby.on("chat", lambda payload, sender: print(sender, payload))
    lobby.send("chat", b"hello")
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Callable
from typing import Any

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from . import codec
from .errors import ClientError, ProtocolError

__all__ = ["ClientError", "Room", "connect"]

log = logging.getLogger("roomer.client")

ROOT = "root"
Payload = bytes | bytearray | memoryview | str


class Room:
    """A joined (or joining) room. Awaiting it waits until the server acknowledged the join."""

    def __init__(self, client: _Client, name: str) -> None:
        self.name = name
        self._client = client
        self._handlers: dict[str, list[Callable[..., Any]]] = {}
        self._members: list[str] = []
        self._open = False
        self._joined: asyncio.Future[Room] = client.loop.create_future()
        self._left: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<roomer.client.Room {self.name!r} open={self._open}>"

    def __await__(self) -> Any:
        return asyncio.shield(self._joined).__await__()

    # the JS client's API ----------------------------------------------------------------

    def id(self) -> str:
        """This client's id (the server assigned it at connect)."""
        return self._client.id

    def open(self) -> bool:
        """True while the room is joined and the connection is up."""
        return self._open

    def members(self) -> list[str]:
        """A copy of the member ids the server reported (join_ack, then presence)."""
        return list(self._members)

    def on(self, event: str, handler: Callable[..., Any]) -> Callable[..., Any]:
        """Call ``handler`` for ``event``: custom events get (payload, sender_id);
        new_member/member_left get (member_id); error gets (dict); open/close get ()."""
        if not callable(handler):
            raise TypeError("handler is not callable")
        self._handlers.setdefault(event, []).append(handler)
        return handler

    def off(self, event: str, handler: Callable[..., Any] | None = None) -> None:
        """Remove one handler of ``event``, or all of them."""
        if handler is None:
            self._handlers.pop(event, None)
        elif handler in self._handlers.get(event, []):
            self._handlers[event].remove(handler)

    def join(self, name: str) -> Room:
        """Join room ``name``; ``await`` the result to wait for the server's join_ack."""
        return self._client.join(name)

    def leave(self) -> asyncio.Future[None]:
        """Leave this room; the future resolves on leave_ack."""
        return self._client.leave(self)

    def send(self, event: str, payload: Payload = b"", dst: str = "") -> None:
        """Send to the room's members (or, with ``dst``, to that client only)."""
        self._client.send(self.name, event, payload, dst)

    async def wait_for(self, event: str, timeout: float | None = None) -> tuple[Any, ...]:
        """Wait for the next ``event`` in this room; returns its handler arguments."""
        fut: asyncio.Future[tuple[Any, ...]] = self._client.loop.create_future()

        def once(*args: Any) -> None:
            if not fut.done():
                fut.set_result(args)

        self.on(event, once)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.off(event, once)

    async def close(self) -> None:
        """Close the whole connection (every room)."""
        await self._client.close()

    # dispatch ----------------------------------------------------------------------------

    def _emit(self, event: str, *args: Any) -> None:
        for handler in list(self._handlers.get(event, ())):
            try:
                result = handler(*args)
            except Exception:
                log.exception("client handler for %r raised", event)
                continue
            if inspect.isawaitable(result):
                self._client.spawn(result)


class _Client(WSListener):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.id = ""
        self.transport: WSTransport | None = None
        self.rooms: dict[str, Room] = {}
        self.root = Room(self, ROOT)
        self.rooms[ROOT] = self.root
        self.closed: asyncio.Future[None] = loop.create_future()
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, awaitable: Any) -> None:
        task = self.loop.create_task(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
            return
        if frame.msg_type not in (WSMsgType.BINARY, WSMsgType.TEXT):
            return
        try:
            room, event, dst, src, payload = codec.decode(frame.get_payload_as_bytes())
        except ProtocolError:
            log.warning("server sent a malformed message; ignored")
            return
        self._dispatch(room, event, dst, src, payload)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        for room in list(self.rooms.values()):
            self._closed_room(room, ConnectionError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _closed_room(self, room: Room, exc: Exception) -> None:
        was_open = room._open
        room._open = False
        self.rooms.pop(room.name, None)
        if not room._joined.done():
            room._joined.set_exception(exc)
            room._joined.exception()  # retrieved: nobody may be awaiting it
        if room._left is not None and not room._left.done():
            room._left.set_result(None)
        if was_open:
            room._emit("close")

    def _dispatch(self, room_name: str, event: str, dst: str, src: str, payload: bytes) -> None:
        room = self.rooms.get(room_name)
        if event == "join_ack":
            if room is None:  # a server-driven join
                room = self.rooms[room_name] = Room(self, room_name)
            if room_name == ROOT:
                self.id = src
            room._members = json.loads(payload)
            first = not room._open
            room._open = True
            if not room._joined.done():
                room._joined.set_result(room)
            if first:
                room._emit("open")
        elif room is None:
            if event == "error":
                self.root._emit("error", json.loads(payload))
        elif event == "leave_ack":
            self._closed_room(room, ConnectionError("left"))
        elif event == "new_member":
            member = payload.decode()
            if member not in room._members:
                room._members.append(member)
            room._emit("new_member", member)
        elif event == "member_left":
            member = payload.decode()
            if member in room._members:
                room._members.remove(member)
            room._emit("member_left", member)
        elif event == "error":
            info = json.loads(payload)
            if info.get("event") == "join" and not room._joined.done():
                self.rooms.pop(room_name, None)
                room._joined.set_exception(
                    ClientError(info.get("code", ""), info.get("message", ""), "join"))
            room._emit("error", info)
        else:
            room._emit(event, payload, src)

    # requests --------------------------------------------------------------------------

    def _write(self, room: str, event: str, payload: Payload = b"", dst: str = "") -> None:
        if self.transport is None or self.transport.is_disconnected:
            raise ConnectionError("not connected")
        self.transport.send(WSMsgType.BINARY, codec.encode(room, event, dst, "", payload))

    def send(self, room: str, event: str, payload: Payload, dst: str) -> None:
        self._write(room, event, payload, dst)

    def join(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(self, name)
        self._write(name, "join")
        return room

    def leave(self, room: Room) -> asyncio.Future[None]:
        if room._left is None or room._left.done():
            room._left = self.loop.create_future()
        self._write(room.name, "leave")
        return room._left

    async def close(self) -> None:
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.send_close(WSCloseCode.OK)
            self.transport.disconnect()
        await self.closed


async def connect(url: str, *, timeout: float = 10.0, **picows_options: Any) -> Room:
    """Connect and return the root room once the server told this client its id.

    ``picows_options`` go to ``picows.ws_connect`` (e.g. ``extra_headers``).
    """
    loop = asyncio.get_running_loop()
    client = _Client(loop)
    picows_options.setdefault("enable_auto_ping", False)
    await asyncio.wait_for(ws_connect(lambda: client, url, **picows_options), timeout)
    try:
        return await asyncio.wait_for(client.root, timeout)
    except BaseException:
        await client.close()
        raise
