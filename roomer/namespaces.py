"""Namespaces (docs/protocol.md §6): handlers, hooks and rooms of their own on one server.

``server.namespace("chat")`` returns a :class:`Namespace`, with the decorators and the
sending methods of the server itself, which is the default namespace ``""`` (what v1
clients speak). A v2 client connects to a namespace with an ask; its handlers and hooks
there get a :class:`NamespaceConnection`: the connection seen from that namespace (its
sends, joins and asks are in it). Handlers and hooks of the default namespace get the
:class:`roomer.Connection` itself, which is its default namespace's view.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import codec, frames
from .errors import AskTimeout
from .handlers import Handler, check_handler
from .hooks import Hook, Hooks
from .registry import OPEN, ROOT, Registry

if TYPE_CHECKING:
    from .server import Connection, Server

__all__ = ["Namespace", "NamespaceConnection", "reply_payload"]

Payload = frames.Payload
View = Any  # a Connection (default namespace) or a NamespaceConnection

MAX_ASK_ID = 0xFFFFFFFF


def reply_payload(value: object) -> bytes | str:
    """What a handler returned, as a reply's payload (docs/protocol.md §7)."""
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview, str)):
        return value if isinstance(value, (bytes, str)) else bytes(value)
    return json.dumps(value)


class Namespace:
    """One namespace of a server: its handlers, its hooks, its rooms, and the ways to send
    into them. The server's own methods are its default namespace's.

    Thread safety is the server's: ``broadcast`` and ``broadcast_all`` from any thread,
    the read-only ``members``/``rooms``/``connections`` snapshots from any thread,
    everything else on the server's loop thread only (RuntimeError from another).
    """

    def __init__(self, server: Server, name: str, registry: Registry) -> None:
        self.server = server
        self.name = name
        self.registry = registry
        self.hooks = Hooks()
        self.handlers: dict[str, Handler] = {}
        registry.joined = self._joined
        registry.left = self._left

    def __repr__(self) -> str:
        return f"<roomer.Namespace {self.name!r}>"

    # registration ---------------------------------------------------------------------

    def on(self, event: str) -> Callable[[Handler], Handler]:
        """Decorator: run ``fn(conn, msg)`` (sync or async) for client messages of
        ``event`` in this namespace; for an ask its return value is the reply."""

        def register(fn: Handler) -> Handler:
            self.server._loop_only("on")
            check_handler(event, fn, self.handlers)
            self.handlers[event] = fn
            return fn

        return register

    def _add(self, hooks: list[Hook], fn: Hook, what: str) -> Hook:
        self.server._loop_only(what)
        return Hooks.add(hooks, fn)

    def on_connect(self, fn: Hook) -> Hook:
        """Decorator: ``fn(conn)`` as a client connects; raise Deny to refuse it (in the
        default namespace: at the upgrade, closing with 1008)."""
        return self._add(self.hooks.connect, fn, "on_connect")

    def on_connected(self, fn: Hook) -> Hook:
        """Decorator: ``fn(conn)`` once a client is in (its connect answered)."""
        return self._add(self.hooks.connected, fn, "on_connected")

    def on_disconnect(self, fn: Hook) -> Hook:
        """Decorator: ``fn(conn)`` once a client is out (after its rooms' leaves)."""
        return self._add(self.hooks.disconnect, fn, "on_disconnect")

    def on_join(self, fn: Hook) -> Hook:
        """Decorator: ``fn(conn, room)`` before a client's join; raise Deny to refuse."""
        return self._add(self.hooks.join, fn, "on_join")

    def on_joined(self, fn: Hook) -> Hook:
        """Decorator: ``fn(conn, room)`` after a member joined (its ack sent)."""
        return self._add(self.hooks.joined, fn, "on_joined")

    def on_leave(self, fn: Hook) -> Hook:
        """Decorator: ``fn(conn, room)`` before a client's leave (Deny refuses) and for
        every room of a client leaving the namespace (Deny ignored)."""
        return self._add(self.hooks.leave, fn, "on_leave")

    def on_left(self, fn: Hook) -> Hook:
        """Decorator: ``fn(conn, room)`` after a member left a room, whatever the cause."""
        return self._add(self.hooks.left, fn, "on_left")

    def on_event(self, fn: Hook) -> Hook:
        """Decorator: ``fn(conn, msg)`` for messages whose event has no handler here
        (nothing is relayed unless it relays; for an ask its return value replies). One
        per namespace, like a handler per event: a second raises ValueError."""
        if self.hooks.event:
            # Only one can answer a message: a second would be silently never called.
            raise ValueError(f"an on_event catch-all is already registered in {self!r}")
        return self._add(self.hooks.event, fn, "on_event")

    # introspection --------------------------------------------------------------------

    def view(self, conn: Connection) -> View:
        """``conn`` as this namespace's handlers see it."""
        if not self.name:
            return conn
        spaces = conn._spaces
        return None if spaces is None else spaces.get(self.name)

    def members(self, room: str) -> list[str]:
        """Ids of ``room``'s members, in join order (this node's, then the other nodes'
        with a backplane); empty for a room without members here."""
        return self.registry.members(room)

    def rooms(self) -> list[str]:
        """Names of the rooms that have members here (root included while it has any)."""
        return list(self.registry.rooms)

    def connections(self) -> list[View]:
        """The connections in this namespace, as its handlers see them."""
        if not self.name:
            return list(self.registry.conns.values())
        # Copied in one C call first: from another thread, a comprehension over the live
        # dict could see it change size midway (RuntimeError).
        conns = list(self.registry.rooms.get(ROOT, {}).values())
        return [self.view(conn) for conn in conns]

    @property
    def connection_count(self) -> int:
        if not self.name:
            return len(self.registry.conns)
        return len(self.registry.rooms.get(ROOT, ()))

    # sending from anywhere --------------------------------------------------------------

    def broadcast(self, room: str, event: str, payload: Payload = b"",
                  exclude: Connection | NamespaceConnection | str | None = None,
                  ) -> asyncio.Future[int]:
        """Send a server-originated message (src empty) to ``room``'s members, here and
        on the other nodes. A future of how many receivers here it was queued to: done at
        once in async mode; with ``sync_broadcast`` it completes once every member here
        has room in its outbox. From another thread it is scheduled on the server's loop
        (a ``concurrent.futures.Future``)."""
        frame = codec.encode_frame(room, event, "", "", payload)
        registry = self.registry
        return self.server._deliver(
            lambda: registry.rooms.get(room), _conn_of(exclude),
            lambda excluded: registry.broadcast(room, frame, excluded),
            lambda excluded: registry.publish_room(room, frame, excluded))

    def broadcast_all(self, event: str, payload: Payload = b"", room: str = ROOT,
                      exclude: Connection | NamespaceConnection | str | None = None,
                      ) -> asyncio.Future[int]:
        """Like broadcast, to every client in this namespace (the message names
        ``room``)."""
        frame = codec.encode_frame(room, event, "", "", payload)
        registry = self.registry
        members = (lambda: registry.conns) if not self.name else (
            lambda: registry.rooms.get(ROOT))
        return self.server._deliver(
            members, _conn_of(exclude),
            lambda excluded: registry.broadcast_all(frame, excluded),
            lambda excluded: registry.publish_all(frame, excluded))

    def send_to(self, conn_id: str, event: str, payload: Payload = b"",
                room: str = ROOT) -> bool:
        """Send a server-originated message to one client. False if it is not here (or
        it was not queued: outbox full in async mode, or closing); with a backplane an id
        held by no local connection is handed to the other nodes (True)."""
        self.server._loop_only("send_to")
        return self._direct(conn_id, codec.encode_frame(room, event, "", "", payload))

    def do(self, fn: Callable[[View], Any]) -> int:
        """Call ``fn(conn)`` for every client in this namespace here; returns how many."""
        self.server._loop_only("do")
        views = self.connections()
        for view in views:
            fn(view)
        return len(views)

    def _direct(self, dst: str, frame: bytes) -> bool:
        """A v1 ``frame`` to client ``dst`` of this namespace, here or on another node."""
        sent = self.registry.direct(dst, frame)
        return sent if isinstance(sent, bool) else sent is not None

    # what a connection does in this namespace (Connection / NamespaceConnection) -----

    def _send(self, conn: Connection, event: str, payload: Payload, room: str) -> bool:
        return bool(conn.send_frame(self.registry.frame(conn, room, event, "", "", payload)))

    def _send_to_room(self, conn: Connection, room: str, event: str, payload: Payload) -> int:
        frame = codec.encode_frame(room, event, "", conn.id, payload)
        self.registry.publish_room(room, frame, conn.id)
        return self.registry.broadcast(room, frame, conn)

    def _send_to_client(self, conn: Connection, dst: str, event: str, payload: Payload,
                        room: str) -> bool:
        return self._direct(dst, codec.encode_frame(room, event, dst, conn.id, payload))

    def _join(self, conn: Connection, room: str) -> bool:
        self.server._check_room_name(room)
        if conn._state != OPEN or self.registry.rooms_of(conn) is None:
            return False
        pending = self.registry.add_member(conn, room)
        if pending is not None:  # the backplane learns the room's members first
            self.server._spawn(pending)  # type: ignore[arg-type]
        return True

    def _leave(self, conn: Connection, room: str) -> bool:
        self.server._check_room_name(room)
        if conn._state != OPEN or self.registry.rooms_of(conn) is None:
            return False
        self.registry.remove_member(conn, room, ack=True)
        return True

    async def _ask(self, conn: Connection, event: str, payload: Payload, room: str,
                   timeout: float) -> bytes:
        server = self.server
        server._loop_only("ask")
        if not conn.v2:
            raise RuntimeError("a protocol v1 client cannot be asked (it did not offer "
                               "the roomer.v2 subprotocol)")
        if conn._state != OPEN or self.registry.rooms_of(conn) is None:
            raise ConnectionError("the client is not connected to this namespace")
        asks = conn._asks
        if asks is None:
            asks = conn._asks = {}
        ask_id = conn._ask_id
        while ask_id in asks or ask_id == 0:
            ask_id = ask_id % MAX_ASK_ID + 1
        conn._ask_id = ask_id % MAX_ASK_ID + 1
        assert server._loop is not None
        waiter: asyncio.Future[bytes] = server._loop.create_future()
        asks[ask_id] = waiter
        server.metrics.counters["asks_out"] += 1
        conn.send_control(frames.encode(True, self.name, room, event, "", "", payload,
                                        frames.ASK, ask_id))
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            server.metrics.counters["ask_timeouts"] += 1
            raise AskTimeout(f"no answer to {event!r} within {timeout} s") from None
        finally:
            asks.pop(ask_id, None)

    # hooks the registry runs --------------------------------------------------------------

    def _joined(self, conn: Connection, room: str) -> None:
        self.server._after(self.hooks.joined, self.view(conn), room, what="on_joined")

    def _left(self, conn: Connection, room: str) -> None:
        self.server._after(self.hooks.left, self.view(conn), room, what="on_left")

    def leave_namespace(self, conn: Connection) -> None:
        """``conn`` leaves this namespace (a disconnect ask, or the socket gone): out of
        its rooms (on_leave for each, Deny ignored; on_left), then on_disconnect."""
        view = self.view(conn)
        rooms = self.registry.rooms_of(conn)
        for room in list(rooms or ()):
            self.server._after(self.hooks.leave, view, room, what="on_leave")
            self.registry.remove_member(conn, room, ack=False)
        if self.name and conn._spaces is not None:
            conn._spaces.pop(self.name, None)
        self.server._after(self.hooks.disconnect, view, what="on_disconnect")


def _conn_of(exclude: object) -> Any:
    if isinstance(exclude, NamespaceConnection):
        return exclude.conn
    return exclude


class NamespaceConnection:
    """A connection as one namespace's handlers and hooks see it: ``id``, ``claims``,
    ``request``, ``namespace``, ``rooms``; sends, joins, leaves and asks happen in that
    namespace. Its methods run on the server's loop thread only, as Connection's."""

    __slots__ = ("_namespace", "_rooms", "conn")

    def __init__(self, conn: Connection, namespace: Namespace) -> None:
        self.conn = conn
        self._namespace = namespace
        self._rooms: dict[str, None] = {}

    def __repr__(self) -> str:
        return f"<roomer.NamespaceConnection {self.conn.id} in {self._namespace.name!r}>"

    @property
    def id(self) -> str:
        return self.conn.id

    @property
    def claims(self) -> Any:
        return self.conn.claims

    @property
    def request(self) -> Any:
        return self.conn.request

    @property
    def namespace(self) -> str:
        return self._namespace.name

    @property
    def rooms(self) -> frozenset[str]:
        return frozenset(self._rooms)

    def send(self, event: str, payload: Payload = b"", room: str = ROOT) -> bool:
        """A server-originated message to this client, in this namespace."""
        self.conn.server._loop_only("NamespaceConnection.send")
        return self._namespace._send(self.conn, event, payload, room)

    def send_to_room(self, room: str, event: str, payload: Payload = b"") -> int:
        """Broadcast to ``room``'s members except this client, with src = its id."""
        self.conn.server._loop_only("NamespaceConnection.send_to_room")
        return self._namespace._send_to_room(self.conn, room, event, payload)

    def send_to_client(self, dst: str, event: str, payload: Payload = b"",
                       room: str = ROOT) -> bool:
        """A direct message to client ``dst`` in this namespace, src = this id."""
        self.conn.server._loop_only("NamespaceConnection.send_to_client")
        return self._namespace._send_to_client(self.conn, dst, event, payload, room)

    def join(self, room: str) -> bool:
        """Server-driven join (no on_join hook, no room limit; on_joined runs)."""
        self.conn.server._loop_only("NamespaceConnection.join")
        return self._namespace._join(self.conn, room)

    def leave(self, room: str) -> bool:
        """Server-driven leave (no on_leave hook; on_left runs)."""
        self.conn.server._loop_only("NamespaceConnection.leave")
        return self._namespace._leave(self.conn, room)

    async def ask(self, event: str, payload: Payload = b"", room: str = ROOT,
                  timeout: float = 5.0) -> bytes:
        """Ask this client (docs/protocol.md §7); its handler's answer (bytes). Raises
        roomer.AskTimeout, roomer.ClientError (an error reply) or ConnectionError."""
        return await self._namespace._ask(self.conn, event, payload, room, timeout)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the whole connection (every namespace)."""
        self.conn.close(code, reason)

