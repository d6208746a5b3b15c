"""asyncio client with the shape of roomer's JS client (roomer.js).

    root = await roomer.connect("ws://127.0.0.1:8080/ws")
    lobby = await root.join("lobby")
    lobby.on("chat", lambda payload, sender: print(sender, payload))
    lobby.send("chat", b"hello")

With ``protocol="v2"`` (docs/protocol.md) the same client also connects to namespaces
(``await root.namespace("chat")``), asks the server (``await room.ask("roll")``) and
answers the server's asks (the return value of a handler registered with ``room.on``).
It also finds game rooms (docs/protocol.md §10): ``await root.join_or_create("table",
options)``, ``root.create(...)``, ``root.join(id, options)`` and ``root.watch_rooms(type)``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from . import codec
from .errors import AskTimeout, ClientError, ProtocolError, RoomerError
from .frames import ASK, ERROR_REPLY, EVENT, REPLY, reply_payload

__all__ = ["PROTOCOLS", "ClientError", "Room", "RoomWatch", "connect"]

log = logging.getLogger("roomer.client")

ROOT = "root"
Payload = bytes | bytearray | memoryview | str

#: ``connect(protocol=...)`` values and the WebSocket subprotocol each offers.
PROTOCOLS: dict[str, str | None] = {"v1": None, "v2": "roomer.v2"}

MAX_ASK_ID = 0xFFFFFFFF

# What v2 asks the server for itself (join, leave, namespace, disconnect), with the
# client's own state to keep: not for ask().
OWN_ASKS = frozenset({"join", "leave", "connect", "disconnect"})

# What an internal ask does with its answer, called as the answer is read (before the
# next message of the same read is dispatched): (reply payload, None) or (None, error).
Apply = Callable[[bytes | None, Exception | None], None]


class Room:
    """A joined (or joining) room. Awaiting it waits until the server acknowledged the join."""

    def __init__(self, client: _Client, name: str, space: _Space | None = None) -> None:
        self.name = name
        self._client = client
        self._space = client.default if space is None else space
        self._handlers: dict[str, list[Callable[..., Any]]] = {}
        self._members: list[str] = []
        self._open = False
        self._joined: asyncio.Future[Room] = client.loop.create_future()
        self._left: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        where = f" in {self._space.name!r}" if self._space.name else ""
        return f"<roomer.client.Room {self.name!r}{where} open={self._open}>"

    def __await__(self) -> Any:
        return asyncio.shield(self._joined).__await__()

    @property
    def namespace_name(self) -> str:
        """The namespace this room is in (``""``: the default one, all that v1 has)."""
        return self._space.name

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
        new_member/member_left get (member_id); error gets (dict); open/close get ().

        v2: an ask of the server for ``event`` in this room is answered by the first
        handler of ``event`` (sync or async, called with (payload, "")): its return value
        is the reply (bytes as they are, str as UTF-8, None empty, anything else JSON);
        a roomer.RoomerError it raises is an error reply with its code and text, any other
        exception ``handler_error`` "internal error"; no handler: ``no_handler``."""
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

    def join(self, name: str, options: Mapping[str, Any] | None = None) -> Room:
        """Join room ``name`` (in this room's namespace); ``await`` the result to wait for
        the server's answer (v1: its join_ack; v2: the join ask's reply). A refusal raises
        roomer.ClientError with the server's code. ``options`` (a JSON-able dict) go to a
        game room's ``on_join`` (``room_full``, ``room_locked``, ``no_such_room``,
        ``join_denied``... refuse such a join)."""
        return self._client.join(name, self._space, options)

    def create(self, type: str, options: Mapping[str, Any] | None = None) -> Room:
        """v2: create a game room of ``type`` (or with the id ``type:suffix``) and join it.
        Returns the room at once, to register handlers on; ``await`` it for the server's
        answer: then its ``name`` is the room's id. A refusal raises roomer.ClientError
        (``create_denied`` with the hook's text, ``room_exists``, ``room_limit``...)."""
        return self._client.find_room("room.create", type, self._space, options)

    def join_or_create(self, type: str, options: Mapping[str, Any] | None = None) -> Room:
        """v2: join a game room of ``type`` that the server picks by ``options`` (its type's
        ``filter_by`` and ``sort_by``), or create one. As `create`: the room at once,
        named by its id once awaited."""
        return self._client.find_room("room.join_or_create", type, self._space, options)

    def watch_rooms(self, type: str, filter: Mapping[str, Any] | None = None) -> RoomWatch:
        """v2: watch the list of game rooms of ``type`` (whose metadata hold ``filter``'s
        keys and values). Returns the watch at once; ``await`` it for the first list.
        A second watch of the same type replaces the first."""
        return self._client.watch(type, self._space, filter)

    def leave(self) -> asyncio.Future[None]:
        """Leave this room; the future resolves on leave_ack (v2: the leave ask's reply);
        a refusal (``leave_denied``) raises roomer.ClientError. On a namespace's root:
        ``disconnect()``."""
        if self._space.name and self is self._space.root:
            return self.disconnect()
        return self._client.leave(self)

    def send(self, event: str, payload: Payload = b"", dst: str = "") -> None:
        """Send to the room's members (or, with ``dst``, to that client only)."""
        self._client.send(self._space.name, self.name, event, payload, dst)

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

    # protocol v2 ----------------------------------------------------------------------

    def namespace(self, name: str) -> Room:
        """v2: connect this client to namespace ``name`` and return that namespace's root
        room at once, whose ``join``, ``send`` and ``ask`` are in the namespace. Await it
        to wait for the server's answer (register handlers first: what the namespace's
        on_connected hook sends arrives with it); a refusal raises roomer.ClientError
        (``no_such_namespace``, ``namespace_denied``...). ``""``, and a namespace
        connected (or connecting) already, give its root as it is."""
        return self._client.namespace(name)

    def disconnect(self) -> asyncio.Future[None]:
        """v2: leave this room's namespace (not the default one: close() the connection);
        its rooms close. Resolves on the server's reply."""
        return self._client.disconnect(self._space)

    async def ask(self, event: str, payload: Payload = b"", timeout: float | None = 5.0
                  ) -> bytes:
        """v2: ask the server ``event`` in this room and return its reply's payload.

        Raises roomer.ClientError (``.code``: the server's, e.g. ``no_handler``,
        ``denied``) on an error reply, roomer.AskTimeout after ``timeout`` seconds without
        an answer (None: no limit), ConnectionError if the connection closes first. The
        waiter is gone in every case; a late reply is counted (``unknown_replies``)."""
        if event in OWN_ASKS:
            raise ValueError(f"{event!r} is asked by the method of that name: asked here, "
                             "the server would do it behind this client's back")
        client = self._client
        ask_id, fut = client.start_ask(self._space.name, self.name, event, payload, timeout)
        try:
            return await fut
        finally:
            client.forget(ask_id, fut)

    def pending_asks(self) -> int:
        """v2: this connection's asks of the server that wait for an answer."""
        return len(self._client.asks)

    def unknown_replies(self) -> int:
        """v2: replies this connection got to no ask waiting (late or unknown ids)."""
        return self._client.unknown_replies

    # dispatch ----------------------------------------------------------------------------

    def _opened(self, members: bytes | list[str]) -> None:
        """The server acknowledged a join of this room with its member list (JSON)."""
        self._members = json.loads(members) if isinstance(members, bytes) else members
        first = not self._open
        self._open = True
        if not self._joined.done():
            self._joined.set_result(self)
        if first:
            self._emit("open")

    def _emit(self, event: str, *args: Any) -> None:
        for handler in list(self._handlers.get(event, ())):
            try:
                result = handler(*args)
            except Exception:
                log.exception("client handler for %r raised", event)
                continue
            if inspect.isawaitable(result):
                self._client.spawn(result)


class RoomWatch:
    """v2: a live list of the game rooms of one type (`Room.watch_rooms`). Await it
    for the first list; ``rooms`` is then kept up to date: room id -> ``{"id", "type",
    "clients", "max_clients", "locked", "metadata"}``."""

    def __init__(self, client: _Client, space: _Space, type: str) -> None:
        self.type = type
        self.rooms: dict[str, dict[str, Any]] = {}
        self._client = client
        self._space = space
        self._handlers: list[Callable[..., Any]] = []
        self._ready: asyncio.Future[RoomWatch] = client.loop.create_future()

    def __await__(self) -> Any:
        return asyncio.shield(self._ready).__await__()

    def __repr__(self) -> str:
        return f"<roomer.client.RoomWatch {self.type!r} rooms={len(self.rooms)}>"

    def on_change(self, fn: Callable[[list[dict[str, Any]], list[str]], Any]
                  ) -> Callable[..., Any]:
        """Call ``fn(changed, removed)`` after each update (entries changed or added,
        ids removed), once ``rooms`` holds it."""
        if not callable(fn):
            raise TypeError("handler is not callable")
        self._handlers.append(fn)
        return fn

    async def close(self) -> None:
        """Stop watching."""
        if self._space.watches.get(self.type) is self:
            del self._space.watches[self.type]
            ask_id, fut = self._client.start_ask(self._space.name, self.type,
                                                 "rooms.unwatch", b"", self._client.timeout)
            try:
                await fut
            finally:
                self._client.forget(ask_id, fut)

    def _apply(self, changed: list[dict[str, Any]], removed: list[str]) -> None:
        for entry in changed:
            self.rooms[entry["id"]] = entry
        for room_id in removed:
            self.rooms.pop(room_id, None)
        for fn in list(self._handlers):
            try:
                result = fn(changed, removed)
            except Exception:
                log.exception("room watch handler raised")
                continue
            if inspect.isawaitable(result):
                self._client.spawn(result)


class _Space:
    """The client's rooms in one namespace (``""``: the default one), and its watches of
    room lists by type."""

    __slots__ = ("name", "rooms", "root", "watches")

    def __init__(self, client: _Client, name: str) -> None:
        self.name = name
        self.rooms: dict[str, Room] = {}
        self.root = Room(client, ROOT, self)
        self.rooms[ROOT] = self.root
        self.watches: dict[str, RoomWatch] = {}


class _Client(WSListener):
    def __init__(self, loop: asyncio.AbstractEventLoop, v2: bool = False,
                 timeout: float = 10.0) -> None:
        super().__init__()
        self.loop = loop
        self.v2 = v2
        self.timeout = timeout
        self.id = ""
        self.transport: WSTransport | None = None
        self.default = _Space(self, "")
        self.spaces: dict[str, _Space] = {"": self.default}
        self.rooms = self.default.rooms
        self.root = self.default.root
        self.closed: asyncio.Future[None] = loop.create_future()
        self._tasks: set[asyncio.Task[Any]] = set()
        # v2: this client's asks waiting for an answer, by id: (the future an ask() call
        # awaits, or what an internal ask does with its answer; the timeout's timer).
        self.asks: dict[int, tuple[asyncio.Future[bytes] | None, Apply | None,
                                   asyncio.TimerHandle | None]] = {}
        self.next_ask_id = 1
        self.unknown_replies = 0
        # v1: joins sent and not yet answered, in order. The server answers a client's
        # messages in order, and refuses a join of an invalid name in room root, which
        # names no room: it is the oldest join still waiting.
        self.v1_joins: deque[Room] = deque()

    def spawn(self, awaitable: Any) -> None:
        task = self.loop.create_task(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if self.v2:
            chosen = transport.response.headers.get("Sec-WebSocket-Protocol")
            if chosen != PROTOCOLS["v2"]:
                # A server that speaks v1 only: every byte would be misread, so stop here.
                self.root._joined.set_exception(ClientError(
                    "unsupported_protocol",
                    f"the server did not accept protocol v2 (its 101 named subprotocol "
                    f"{chosen!r}, not 'roomer.v2'): it speaks v1 only", "connect"))
                transport.send_close(WSCloseCode.PROTOCOL_ERROR, b"roomer.v2 expected")
                transport.disconnect()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
            return
        if frame.msg_type not in (WSMsgType.BINARY, WSMsgType.TEXT):
            return
        if self.v2:
            self._received_v2(frame.get_payload_as_bytes())
            return
        try:
            room, event, dst, src, payload = codec.decode(frame.get_payload_as_bytes())
        except ProtocolError:
            log.warning("server sent a malformed message; ignored")
            return
        self._dispatch(self.default, room, event, dst, src, payload)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        asks, self.asks = self.asks, {}
        for fut, apply, timer in asks.values():
            if timer is not None:
                timer.cancel()
            self._fail(fut, apply, ConnectionError("connection closed"))
        self.v1_joins.clear()
        for space in list(self.spaces.values()):
            for room in list(space.rooms.values()):
                self._closed_room(room, ConnectionError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _closed_room(self, room: Room, exc: Exception) -> None:
        was_open = room._open
        room._open = False
        rooms = room._space.rooms
        if rooms.get(room.name) is room:
            del rooms[room.name]
        if not room._joined.done():
            room._joined.set_exception(exc)
            room._joined.exception()  # retrieved: nobody may be awaiting it
        if room._left is not None and not room._left.done():
            room._left.set_result(None)
        if was_open:
            room._emit("close")

    def _refused_join(self, room: Room, refused: ClientError) -> None:
        if room in self.v1_joins:
            self.v1_joins.remove(room)
        rooms = room._space.rooms
        if rooms.get(room.name) is room:
            del rooms[room.name]
        if not room._joined.done():
            room._joined.set_exception(refused)

    def _dispatch(self, space: _Space, room_name: str, event: str, dst: str, src: str,
                  payload: bytes) -> None:
        if event == "rooms.changes":
            watch = space.watches.get(room_name)
            if watch is not None:
                info = json.loads(payload)
                watch._apply(info.get("changed", []), info.get("removed", []))
            return
        room = space.rooms.get(room_name)
        if event == "join_ack":
            if room is None:  # a server-driven join
                room = space.rooms[room_name] = Room(self, room_name, space)
            if room_name == ROOT and space is self.default:
                self.id = src
            if room in self.v1_joins:
                self.v1_joins.remove(room)
            room._opened(payload)
        elif room is None:
            if event == "error":
                space.root._emit("error", json.loads(payload))
        elif event == "leave_ack":
            self._closed_room(room, ConnectionError("left"))
        elif event == "room.closed":
            # A game room ended under its members (docs/protocol.md §10): its handlers
            # get {"code", "message"}, then the room closes.
            info = json.loads(payload)
            room._emit("room.closed", info, src)
            self._closed_room(room, ClientError(str(info.get("code", "")),
                                                str(info.get("message", "")), "join"))
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
            refused = ClientError(str(info.get("code", "")), str(info.get("message", "")),
                                  str(info.get("event", "")))
            if refused.event == "join":
                if not room._joined.done():
                    self._refused_join(room, refused)
                elif room_name == ROOT and refused.code == "invalid_name" and self.v1_joins:
                    self._refused_join(self.v1_joins[0], refused)
            elif refused.event == "leave" and room._left is not None and not room._left.done():
                room._left.set_exception(refused)
            room._emit("error", info)
        else:
            room._emit(event, payload, src)

    # protocol v2: what the server sends ---------------------------------------------------

    def _received_v2(self, data: bytes) -> None:
        try:
            kind, ask_id, name, room, event, dst, src, payload = codec.decode_v2(data)
        except ProtocolError:
            log.warning("server sent a malformed message; ignored")
            return
        if kind >= REPLY:
            self._answered(kind, ask_id, event, payload)
            return
        space = self.spaces.get(name)
        if kind == ASK:
            self._asked(space, name, ask_id, room, event, src, payload)
        elif space is not None:  # else: a namespace left meanwhile
            self._dispatch(space, room, event, dst, src, payload)

    def _answered(self, kind: int, ask_id: int, event: str, payload: bytes) -> None:
        entry = self.asks.pop(ask_id, None)
        if entry is None or (entry[0] is not None and entry[0].done()):
            self.unknown_replies += 1
            return
        fut, apply, timer = entry
        if timer is not None:
            timer.cancel()
        if kind == REPLY:
            if apply is not None:
                apply(payload, None)
            if fut is not None:
                fut.set_result(payload)
            return
        self._fail(fut, apply, ClientError.from_reply(payload, event))

    def _fail(self, fut: asyncio.Future[bytes] | None, apply: Apply | None,
              exc: Exception) -> None:
        if apply is not None:
            apply(None, exc)
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    def _asked(self, space: _Space | None, name: str, ask_id: int, room_name: str,
               event: str, src: str, payload: bytes) -> None:
        """The server asks: the room's first handler of ``event`` answers."""
        room = space.rooms.get(room_name) if space is not None else None
        handlers = room._handlers.get(event) if room is not None else None
        if not handlers:
            self._error_reply(name, ask_id, room_name, event, "no_handler",
                              f"nothing answers {event!r}")
            return
        try:
            result = handlers[0](payload, src)
        except Exception as exc:
            self._handler_failed(name, ask_id, room_name, event, exc)
            return
        if inspect.isawaitable(result):
            self.spawn(self._answer_later(name, ask_id, room_name, event, result))
        else:
            self._reply(name, ask_id, room_name, event, result)

    async def _answer_later(self, name: str, ask_id: int, room: str, event: str,
                            pending: Any) -> None:
        try:
            result = await pending
        except Exception as exc:
            self._handler_failed(name, ask_id, room, event, exc)
            return
        self._reply(name, ask_id, room, event, result)

    def _reply(self, name: str, ask_id: int, room: str, event: str, value: object) -> None:
        try:
            body = reply_payload(value)
        except (TypeError, ValueError) as exc:  # not JSON-able
            self._handler_failed(name, ask_id, room, event, exc)
            return
        self._write_v2(REPLY, ask_id, name, room, event, "", body, quiet=True)

    def _handler_failed(self, name: str, ask_id: int, room: str, event: str,
                        exc: Exception) -> None:
        if isinstance(exc, ClientError):
            code, message = exc.code, exc.server_message
        elif isinstance(exc, RoomerError):
            code, message = exc.code, str(exc) or type(exc).__name__
        else:
            log.error("client handler for the ask %r raised", event, exc_info=exc)
            code, message = "handler_error", "internal error"
        self._error_reply(name, ask_id, room, event, code, message)

    def _error_reply(self, name: str, ask_id: int, room: str, event: str, code: str,
                     message: str) -> None:
        body = json.dumps({"code": code, "message": message})
        self._write_v2(ERROR_REPLY, ask_id, name, room, event, "", body, quiet=True)

    # protocol v2: asking the server ---------------------------------------------------------

    def start_ask(self, namespace: str, room: str, event: str, payload: Payload,
                  timeout: float | None, apply: Apply | None = None,
                  ) -> tuple[int, asyncio.Future[bytes]]:
        """Send an ask now; its id and the future of its answer (with ``apply``, the
        future is not used: ``apply`` gets the answer or the error)."""
        if not self.v2:
            raise RuntimeError("asks need protocol v2: roomer.connect(url, protocol='v2')")
        asks = self.asks
        ask_id = self.next_ask_id
        while ask_id in asks:  # unique among the asks still waiting
            ask_id = ask_id % MAX_ASK_ID + 1
        self.next_ask_id = ask_id % MAX_ASK_ID + 1
        fut: asyncio.Future[bytes] = self.loop.create_future()
        self._write_v2(ASK, ask_id, namespace, room, event, "", payload)
        timer = None if timeout is None else self.loop.call_later(
            timeout, self._expire, ask_id, event, timeout)
        asks[ask_id] = (None if apply is not None else fut, apply, timer)
        return ask_id, fut

    def forget(self, ask_id: int, fut: asyncio.Future[bytes]) -> None:
        """The asker stopped waiting (answered, timed out, cancelled): drop its waiter."""
        entry = self.asks.get(ask_id)
        if entry is not None and entry[0] is fut:
            del self.asks[ask_id]
            if entry[2] is not None:
                entry[2].cancel()

    def _expire(self, ask_id: int, event: str, timeout: float) -> None:
        entry = self.asks.pop(ask_id, None)
        if entry is not None:
            self._fail(entry[0], entry[1],
                       AskTimeout(f"no answer to {event!r} within {timeout} s"))

    def namespace(self, name: str) -> Room:
        if not self.v2:
            raise RuntimeError("namespaces need protocol v2: roomer.connect(url, "
                               "protocol='v2')")
        if not isinstance(name, str):
            raise TypeError("a namespace name is a str")
        known = self.spaces.get(name)
        if known is not None:  # connected, or connecting
            return known.root
        space = self.spaces[name] = _Space(self, name)
        root = space.root

        def apply(payload: bytes | None, error: Exception | None) -> None:
            if error is not None:
                if self.spaces.get(name) is space:
                    del self.spaces[name]
                if not root._joined.done():
                    root._joined.set_exception(error)
                return
            root._members = [self.id]
            root._open = True
            if not root._joined.done():
                root._joined.set_result(root)
            root._emit("open")

        try:
            self.start_ask(name, ROOT, "connect", b"", self.timeout, apply)
        except BaseException:
            del self.spaces[name]
            raise
        return root

    def disconnect(self, space: _Space) -> asyncio.Future[None]:
        if not self.v2:
            raise RuntimeError("namespaces need protocol v2")
        if not space.name:
            raise ValueError("the default namespace cannot be left: close() the connection")
        fut: asyncio.Future[None] = self.loop.create_future()
        if self.spaces.get(space.name) is not space:
            fut.set_result(None)  # left already
            return fut

        def apply(payload: bytes | None, error: Exception | None) -> None:
            if error is None:
                if self.spaces.get(space.name) is space:
                    del self.spaces[space.name]
                for room in list(space.rooms.values()):
                    self._closed_room(room, ConnectionError("left the namespace"))
            if fut.done():
                return
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)

        self.start_ask(space.name, ROOT, "disconnect", b"", self.timeout, apply)
        return fut

    # requests --------------------------------------------------------------------------

    def _write(self, room: str, event: str, payload: Payload = b"", dst: str = "") -> None:
        if self.transport is None or self.transport.is_disconnected:
            raise ConnectionError("not connected")
        self.transport.send(WSMsgType.BINARY, codec.encode(room, event, dst, "", payload))

    def _write_v2(self, kind: int, ask_id: int, namespace: str, room: str, event: str,
                  dst: str, payload: Payload, quiet: bool = False) -> None:
        data = codec.encode_v2(kind, ask_id, namespace, room, event, dst, "", payload)
        if self.transport is None or self.transport.is_disconnected:
            if quiet:  # an answer to a server gone meanwhile: nobody to tell
                return
            raise ConnectionError("not connected")
        self.transport.send(WSMsgType.BINARY, data)

    def send(self, namespace: str, room: str, event: str, payload: Payload,
             dst: str) -> None:
        if self.v2:
            self._write_v2(EVENT, 0, namespace, room, event, dst, payload)
        else:
            self._write(room, event, payload, dst)

    def join(self, name: str, space: _Space | None = None,
             options: Mapping[str, Any] | None = None) -> Room:
        space = self.default if space is None else space
        body = b"" if options is None else json.dumps(dict(options)).encode()
        room = space.rooms.get(name)
        if room is None:
            room = space.rooms[name] = Room(self, name, space)
        if not self.v2:
            if not room._joined.done():
                self.v1_joins.append(room)
            self._write(name, "join", body)
            return room

        def apply(payload: bytes | None, error: Exception | None) -> None:
            if error is None:
                assert payload is not None
                room._opened(payload)
                return
            if room._open:
                return  # a re-join refused: the room stays as it was
            if space.rooms.get(name) is room:
                del space.rooms[name]
            if not room._joined.done():
                room._joined.set_exception(error)
            if isinstance(error, ClientError):
                room._emit("error", {"code": error.code, "message": error.server_message,
                                     "event": "join"})

        try:
            self.start_ask(space.name, name, "join", body, self.timeout, apply)
        except BaseException:
            if space.rooms.get(name) is room and not room._open:
                del space.rooms[name]
            raise
        return room

    def find_room(self, event: str, type: str, space: _Space,
                  options: Mapping[str, Any] | None) -> Room:
        """A create or join-or-create (docs/protocol.md §10): the Room at once, put under
        its id when the answer comes (before any message of the room is dispatched)."""
        if not self.v2:
            raise RuntimeError("game rooms are found with asks: roomer.connect(url, "
                               "protocol='v2')")
        if not isinstance(type, str) or not type:
            raise TypeError("a room type is a non-empty str")
        room = Room(self, type, space)
        body = json.dumps(dict(options or {})).encode()

        def apply(payload: bytes | None, error: Exception | None) -> None:
            if error is not None:
                if not room._joined.done():
                    room._joined.set_exception(error)
                return
            assert payload is not None
            answer = json.loads(payload)
            room.name = answer["room"]
            space.rooms[room.name] = room
            room._opened(list(answer["members"]))

        self.start_ask(space.name, type, event, body, self.timeout, apply)
        return room

    def watch(self, type: str, space: _Space, wanted: Mapping[str, Any] | None
              ) -> RoomWatch:
        if not self.v2:
            raise RuntimeError("room lists are watched with asks: protocol='v2'")
        watch = RoomWatch(self, space, type)
        space.watches[type] = watch

        def apply(payload: bytes | None, error: Exception | None) -> None:
            if error is not None:
                if space.watches.get(type) is watch:
                    del space.watches[type]
                if not watch._ready.done():
                    watch._ready.set_exception(error)
                return
            assert payload is not None
            watch.rooms = {entry["id"]: entry for entry in json.loads(payload)["rooms"]}
            if not watch._ready.done():
                watch._ready.set_result(watch)

        self.start_ask(space.name, type, "rooms.watch",
                       json.dumps(dict(wanted or {})).encode(), self.timeout, apply)
        return watch

    def leave(self, room: Room) -> asyncio.Future[None]:
        if room._left is None or room._left.done():
            room._left = self.loop.create_future()
        if not self.v2:
            self._write(room.name, "leave")
            return room._left
        left = room._left

        def apply(payload: bytes | None, error: Exception | None) -> None:
            if error is None:
                self._closed_room(room, ConnectionError("left"))
                return
            if not left.done():
                left.set_exception(error)
            if isinstance(error, ClientError):
                room._emit("error", {"code": error.code, "message": error.server_message,
                                     "event": "leave"})

        self.start_ask(room._space.name, room.name, "leave", b"", self.timeout, apply)
        return left

    async def close(self) -> None:
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.send_close(WSCloseCode.OK)
            self.transport.disconnect()
        await self.closed


def _with_subprotocol(headers: Mapping[str, str] | Iterable[tuple[str, str]] | None,
                      subprotocol: str) -> list[tuple[str, str]]:
    items = list(headers.items() if isinstance(headers, Mapping) else headers or ())
    return [*items, ("Sec-WebSocket-Protocol", subprotocol)]


async def connect(url: str, *, protocol: str = "v1", timeout: float = 10.0,
                  **picows_options: Any) -> Room:
    """Connect and return the root room once the server told this client its id.

    ``protocol``: ``"v1"`` (the default: the original roomer protocol, no subprotocol
    offered) or ``"v2"`` (offers ``roomer.v2``: namespaces and asks; a server that does
    not name it in its 101 answer raises roomer.ClientError ``unsupported_protocol``).
    ``timeout`` bounds the connection and, with v2, each join, leave and namespace
    connect. ``picows_options`` go to ``picows.ws_connect`` (e.g. ``extra_headers``).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, not {protocol!r}")
    subprotocol = PROTOCOLS[protocol]
    loop = asyncio.get_running_loop()
    client = _Client(loop, subprotocol is not None, timeout)
    picows_options.setdefault("enable_auto_ping", False)
    if subprotocol is not None:
        picows_options["extra_headers"] = _with_subprotocol(
            picows_options.get("extra_headers"), subprotocol)
    await asyncio.wait_for(ws_connect(lambda: client, url, **picows_options), timeout)
    try:
        return await asyncio.wait_for(client.root, timeout)
    except BaseException:
        await client.close()
        raise
