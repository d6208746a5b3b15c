"""Namespaces (docs/protocol.md §6): handlers, hooks, rooms and connected clients of their
own on one server.

Every server has a default namespace (``""``, what v1 clients speak):
``server.default``, whose decorators and sending methods the server also offers as its
own. ``server.namespace("chat")`` declares another, which v2 clients connect to with an
ask. A namespace's handlers and hooks get the client as that namespace sees it: the
`Connection` itself in the default namespace, a
`NamespaceConnection` (whose sends, joins and asks happen in that namespace)
in the others. A namespace knows its connected clients explicitly: a client that leaves a
namespace's root room is still connected to it (counted, and reached by ``broadcast_all``
and ``do``) until it leaves the namespace or disconnects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import codec, frames
from .connection import Connection, NamespaceConnection, Payload
from .errors import AskTimeout
from .games import GAME_EVENTS, GameRoom, RoomListing
from .handlers import Handler, check_handler
from .hooks import Hook, Hooks
from .message import Message
from .registry import ROOT, Registry

if TYPE_CHECKING:
    from .core import Core

__all__ = ["C", "DefaultNamespace", "NamedNamespace", "Namespace"]

#: The type a namespace's handlers and hooks get: Connection or NamespaceConnection.
C = TypeVar("C", Connection, NamespaceConnection)

Exclude = Connection | NamespaceConnection | str | None


class Namespace(Generic[C]):
    """One namespace of a server: its handlers, its hooks, its rooms, its connected
    clients, and the ways to send into them.

    Thread safety: ``broadcast`` and ``broadcast_all`` may be called from any thread;
    the read-only snapshots ``members``, ``rooms``, ``connections`` and
    ``connection_count`` too; everything else runs on the server's loop thread only
    (RuntimeError from another).
    """

    def __init__(self, core: Core, name: str, registry: Registry) -> None:
        self._core = core
        self.name = name
        self.registry = registry
        self.hooks = Hooks()
        self.handlers: dict[str, Handler[C]] = {}
        registry.joined = self._joined
        registry.left = self._left

    def __repr__(self) -> str:
        return f"<roomer.Namespace {self.name!r}>"

    def view(self, conn: Connection) -> C | None:
        """``conn`` as this namespace's handlers see it; None if it is not connected."""
        raise NotImplementedError

    # registration ---------------------------------------------------------------------

    def on(self, event: str) -> Callable[[Handler[C]], Handler[C]]:
        """Decorator: run ``fn(conn, msg)`` (sync or async) for client messages of
        ``event`` in this namespace; for an ask its return value is the reply.

        Raises:
            ValueError: ``event`` is empty, reserved, or has a handler already.
            TypeError: ``fn`` is not callable.
        """

        def register(fn: Handler[C]) -> Handler[C]:
            self._core.loop_only("on")
            if event in GAME_EVENTS:
                raise ValueError(f"event name {event!r} is reserved (game rooms)")
            check_handler(event, fn, self.handlers)
            self.handlers[event] = fn
            return fn

        return register

    def _add(self, hooks: list[Hook], fn: Hook, what: str) -> Any:
        self._core.loop_only(what)
        return Hooks.add(hooks, fn)

    def on_connect(self, fn: Callable[[C], Any]) -> Callable[[C], Any]:
        """Decorator: ``fn(conn)`` as a client connects; raise Deny to refuse it (in the
        default namespace: at the upgrade, closing with 1008)."""
        return self._add(self.hooks.connect, fn, "on_connect")

    def on_connected(self, fn: Callable[[C], Any]) -> Callable[[C], Any]:
        """Decorator: ``fn(conn)`` once a client is in (its connect answered)."""
        return self._add(self.hooks.connected, fn, "on_connected")

    def on_disconnect(self, fn: Callable[[C], Any]) -> Callable[[C], Any]:
        """Decorator: ``fn(conn)`` once a client is out (after its rooms' leaves). Every
        on_disconnect hook runs, whatever an earlier one raised."""
        return self._add(self.hooks.disconnect, fn, "on_disconnect")

    def on_moved_in(self, fn: Callable[[C], Any]) -> Callable[[C], Any]:
        """Decorator: ``fn(conn)`` when a client's session moved here from another node
        (its resume landed here): it is in its rooms, ``conn.data`` came with it; no
        connect or join hook ran here for it."""
        return self._add(self.hooks.moved_in, fn, "on_moved_in")

    def on_moved_out(self, fn: Callable[[C], Any]) -> Callable[[C], Any]:
        """Decorator: ``fn(conn)`` when a client's session moved to another node: it is
        gone from here without leaving its rooms (no leave or disconnect hook runs), so
        forget what this process kept for it."""
        return self._add(self.hooks.moved_out, fn, "on_moved_out")

    def on_join(self, fn: Callable[[C, str], Any]) -> Callable[[C, str], Any]:
        """Decorator: ``fn(conn, room)`` before a client's join; raise Deny to refuse."""
        return self._add(self.hooks.join, fn, "on_join")

    def on_joined(self, fn: Callable[[C, str], Any]) -> Callable[[C, str], Any]:
        """Decorator: ``fn(conn, room)`` after a member joined (its ack sent)."""
        return self._add(self.hooks.joined, fn, "on_joined")

    def on_leave(self, fn: Callable[[C, str], Any]) -> Callable[[C, str], Any]:
        """Decorator: ``fn(conn, room)`` before a client's leave (Deny refuses) and for
        every room of a client leaving the namespace (Deny ignored)."""
        return self._add(self.hooks.leave, fn, "on_leave")

    def on_left(self, fn: Callable[[C, str], Any]) -> Callable[[C, str], Any]:
        """Decorator: ``fn(conn, room)`` after a member left a room, whatever the cause.
        Every on_left hook runs, whatever an earlier one raised."""
        return self._add(self.hooks.left, fn, "on_left")

    def on_event(self, fn: Callable[[C, Message], Any]) -> Callable[[C, Message], Any]:
        """Decorator: ``fn(conn, msg)`` for messages whose event has no handler here
        (nothing is relayed unless it relays; for an ask its return value replies).

        Raises:
            ValueError: an on_event catch-all is registered here already (only one can
                answer a message: a second would silently never be called).
        """
        if self.hooks.event:
            raise ValueError(f"an on_event catch-all is already registered in {self!r}")
        return self._add(self.hooks.event, fn, "on_event")

    # introspection --------------------------------------------------------------------

    def members(self, room: str) -> list[str]:
        """Ids of ``room``'s members, in join order (this node's, then the other nodes'
        with a backplane); empty for a room without members here. Any thread."""
        return self.registry.members(room)

    def rooms(self) -> list[str]:
        """Names of the rooms that have members here (root included while it has any).
        Any thread."""
        return list(self.registry.rooms)

    def connections(self) -> list[C]:
        """The clients connected to this namespace here, as its handlers see them. Any
        thread."""
        # Copied in one C call first: from another thread, a comprehension over the live
        # dict could see it change size midway (RuntimeError).
        conns = list(self.registry.conns.values())
        return [view for conn in conns if (view := self.view(conn)) is not None]

    @property
    def connection_count(self) -> int:
        """How many clients are connected to this namespace here. Any thread."""
        return len(self.registry.conns)

    # game rooms (roomer/games; the game rooms guide) ------------------------------------

    def define(self, name: str, room: type[GameRoom], **settings: Any) -> None:
        """Define a game room type of this namespace: ``name`` starts the ids of its rooms
        (``name:suffix``), ``room`` is the `roomer.GameRoom` subclass roomer makes
        one instance of per room. Before start only.

        Args:
            name: The type's name: 1-32 characters of A-Z a-z 0-9 _ -.
            room: The GameRoom subclass.
            **settings: ``max_clients``, ``tick_rate``, ``auto_dispose`` (these override
                the class attributes of the same name), ``filter_by`` (metadata keys
                join-or-create matches against the joiner's options), ``sort_by`` (e.g.
                ``{"clients": -1}``), ``max_rooms`` (rooms of this type one node may own),
                ``allow_create`` (False: clients may not create rooms of this type).

        Raises:
            ValueError, TypeError: a bad name, class or setting, or a name defined here
                already.
            RuntimeError: the server is started.
        """
        self._core.games.define(self, name, room, settings)

    async def create_room(self, type: str, options: dict[str, Any] | None = None,
                          room_id: str | None = None) -> str:
        """Create a game room of ``type`` owned by this node, with nobody in it (it waits
        ``seat_reservation`` seconds for a first player). Loop thread only.

        Args:
            type: A type defined in this namespace.
            options: What its ``on_create`` gets.
            room_id: An id of your own (``type:suffix``), claimed across the cluster;
                None for a random one.

        Returns:
            The room's id.

        Raises:
            ValueError: ``type`` is not defined here.
            roomer.RoomerError: the room could not be created (``.code``: ``room_exists``,
                ``room_limit``, ``create_denied``, ``invalid_name``...).
        """
        self._core.loop_only("create_room")
        return await self._core.games.create_room(self, type, options, room_id)

    def game_room(self, room_id: str) -> GameRoom | None:
        """The game room object of ``room_id`` if this node owns it (and it is open), else
        None. Loop thread only."""
        self._core.loop_only("game_room")
        return self._core.games.game_room(self.name, room_id)

    def list_rooms(self, type: str | None = None, **metadata: Any) -> list[RoomListing]:
        """The game rooms of this namespace in the whole cluster (of ``type``; whose
        metadata hold every ``metadata`` key with that value), private and unlisted ones
        included, from this node's copy of the room list. Any thread."""
        return self._core.games.list_rooms(self.name, type, metadata)

    async def reserve_seats(self, room_id: str, ids: list[str],
                            seconds: float | None = None) -> bool:
        """Reserve a seat for each client id in a game room of this namespace, wherever in
        the cluster it lives (`roomer.GameRoom.reserve`). Loop thread only.

        Returns:
            False when the room is unknown or the seats do not all fit.
        """
        self._core.loop_only("reserve_seats")
        return await self._core.games.reserve_seats(self, room_id, list(ids), seconds)

    # sending from anywhere --------------------------------------------------------------

    def broadcast(self, room: str, event: str, payload: Payload = b"",
                  exclude: Exclude = None) -> Any:
        """Send a server-originated message (src empty) to ``room``'s members, here and
        on the other nodes. Any thread.

        Args:
            room: The room whose members get it.
            event: The message's event.
            payload: The message's payload (bytes, or str sent as UTF-8).
            exclude: A member not to send it to (a connection or its id).

        Returns:
            A future of how many receivers here it was queued to: done at once in async
            mode; with ``sync_broadcast`` it completes once every member here has room in
            its outbox. From another thread, a ``concurrent.futures.Future``.
        """
        frame = codec.encode_frame(room, event, "", "", payload)
        registry = self.registry
        return self._deliver(
            lambda: registry.rooms.get(room), _conn_of(exclude),
            lambda excluded: registry.broadcast(room, frame, excluded),
            lambda excluded: registry.publish_room(room, frame, excluded))

    def broadcast_all(self, event: str, payload: Payload = b"", room: str = ROOT,
                      exclude: Exclude = None) -> Any:
        """Like `broadcast`, to every client connected to this namespace (the
        message names ``room``). Any thread."""
        frame = codec.encode_frame(room, event, "", "", payload)
        registry = self.registry
        return self._deliver(
            lambda: registry.conns, _conn_of(exclude),
            lambda excluded: registry.broadcast_all(frame, excluded),
            lambda excluded: registry.publish_all(frame, excluded))

    def send_to(self, conn_id: str, event: str, payload: Payload = b"",
                room: str = ROOT) -> bool:
        """Send a server-originated message to one client. Loop thread only.

        Returns:
            False if it is not here (or it was not queued: outbox full in async mode, or
            closing); with a backplane an id held by no local connection is handed to
            the other nodes (True).
        """
        self._core.loop_only("send_to")
        return self._direct(conn_id, codec.encode_frame(room, event, "", "", payload))

    def do(self, fn: Callable[[C], Any]) -> int:
        """Call ``fn(conn)`` for every client connected to this namespace here. Loop
        thread only.

        Returns:
            How many it was called for.
        """
        self._core.loop_only("do")
        views = self.connections()
        for view in views:
            fn(view)
        return len(views)

    def _direct(self, dst: str, frame: bytes) -> bool:
        """A v1 ``frame`` to client ``dst`` of this namespace, here or on another node."""
        sent = self.registry.direct(dst, frame)
        return sent if isinstance(sent, bool) else sent is not None

    def _deliver(self, members_of: Callable[[], dict[str, Connection] | None],
                 exclude: Connection | str | None, fan: Callable[[Connection | None], int],
                 publish: Callable[[str | None], None]) -> Any:
        """A server-originated broadcast: ``fan`` it out here (to ``members_of()``, but
        ``exclude``) and ``publish`` it to the other nodes; sync mode admits it first."""
        core = self._core
        loop = core.loop
        if loop is None:
            raise RuntimeError("the server is not started")
        if exclude is not None and not isinstance(exclude, (str, Connection)):
            raise TypeError("exclude must be a Connection, a connection id or None")
        if not core.on_loop_thread():
            return asyncio.run_coroutine_threadsafe(
                self._deliver_async(members_of, exclude, fan, publish), loop)
        if core.config.sync_broadcast:
            return loop.create_task(self._deliver_async(members_of, exclude, fan, publish))
        fut: asyncio.Future[int] = loop.create_future()
        fut.set_result(self._deliver_now(exclude, fan, publish))
        return fut

    async def _deliver_async(self, members_of: Callable[[], dict[str, Connection] | None],
                             exclude: Connection | str | None,
                             fan: Callable[[Connection | None], int],
                             publish: Callable[[str | None], None]) -> int:
        core = self._core
        if not core.config.sync_broadcast:
            return self._deliver_now(exclude, fan, publish)
        # One admission at a time, in call order: the global order of sync broadcasts
        # (this node's: the other nodes get it in publish order, unawaited).
        async with core.sync_lock:
            while True:
                members = members_of()
                if not members or core.engine.over_limit(
                        members, self._resolve(exclude)) is None:
                    return self._deliver_now(exclude, fan, publish)
                await core.engine.wait_drain()

    def _resolve(self, exclude: Connection | str | None) -> Connection | None:
        if isinstance(exclude, str):
            return self.registry.conns.get(exclude)
        return exclude

    def _deliver_now(self, exclude: Connection | str | None,
                     fan: Callable[[Connection | None], int],
                     publish: Callable[[str | None], None]) -> int:
        publish(exclude.id if isinstance(exclude, Connection) else exclude)
        return fan(self._resolve(exclude))

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
        self._core.check_room_name(room)
        if not conn.inbound.open or self.registry.rooms_of(conn) is None:
            return False
        pending = self.registry.add_member(conn, room)
        if pending is not None:  # the backplane learns the room's members first
            self._core.spawn(pending)  # type: ignore[arg-type]
        return True

    def _leave(self, conn: Connection, room: str) -> bool:
        self._core.check_room_name(room)
        if not conn.inbound.open or self.registry.rooms_of(conn) is None:
            return False
        self.registry.remove_member(conn, room, ack=True)
        return True

    async def _ask(self, conn: Connection, event: str, payload: Payload, room: str,
                   timeout: float | None) -> bytes:
        core = self._core
        core.loop_only("ask")
        if not conn.v2:
            raise RuntimeError("a protocol v1 client cannot be asked (it did not offer "
                               "the roomer.v2 subprotocol)")
        if not conn.inbound.open or self.registry.rooms_of(conn) is None:
            raise ConnectionError("the client is not connected to this namespace")
        assert core.loop is not None
        ask_id, waiter = conn.asks.open(core.loop, self.name, room,
                                        core.config.max_pending_asks)
        core.metrics.counters["asks_out"] += 1
        conn.send_control(frames.encode(True, self.name, room, event, "", "", payload,
                                        frames.ASK, ask_id))
        core.router.pace(conn)  # its answer must be read, however full its backlog
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            core.metrics.counters["ask_timeouts"] += 1
            raise AskTimeout(f"no answer to {event!r} within {timeout} s") from None
        finally:
            conn.asks.close(ask_id)
            if conn.inbound.open:
                core.router.pace(conn)

    # hooks the registry runs --------------------------------------------------------------

    def _joined(self, conn: Connection, room: str) -> None:
        self._core.after(self.hooks.joined, self.view(conn), room, what="on_joined")

    def _left(self, conn: Connection, room: str) -> None:
        if self._core.games.active:
            self._core.games.member_left(self, conn, room)  # a game room's owner is told
        self._core.after(self.hooks.left, self.view(conn), room, what="on_left")

    def leave_namespace(self, conn: Connection) -> None:
        """``conn`` leaves this namespace (a disconnect ask, or the socket gone): out of
        its rooms (on_leave for each, Deny ignored; on_left), then on_disconnect."""
        view = self.view(conn)
        if view is None:
            return
        registry = self.registry
        for room in list(registry.rooms_of(conn) or ()):
            self._core.after(self.hooks.leave, view, room, what="on_leave")
            registry.remove_member(conn, room, ack=False)
        conn.asks.fail("the client left the namespace", self.name)
        if self._core.games.active:
            self._core.games.forget(self, conn)  # its room-list watches here end
        self._forget(conn)
        self._core.after(self.hooks.disconnect, view, what="on_disconnect")

    def _forget(self, conn: Connection) -> None:
        """Out of this namespace's clients (its rooms are left already)."""
        raise NotImplementedError


class DefaultNamespace(Namespace[Connection]):
    """The default namespace (``""``): every client is connected to it while it is
    connected at all, and its handlers get the `Connection` itself."""

    def view(self, conn: Connection) -> Connection:
        return conn

    def _forget(self, conn: Connection) -> None:
        self.registry.drop(conn)


class NamedNamespace(Namespace[NamespaceConnection]):
    """A namespace a v2 client connects to by name; its handlers get a
    `NamespaceConnection`."""

    def view(self, conn: Connection) -> NamespaceConnection | None:
        spaces = conn._spaces
        return None if spaces is None else spaces.get(self.name)

    def enter(self, conn: Connection, view: NamespaceConnection) -> Awaitable[None] | None:
        """Connect ``conn`` to this namespace as ``view`` (its hooks passed): in its
        clients and its root room; an awaitable when the backplane must learn the root's
        members first."""
        if conn._spaces is None:
            conn._spaces = {}
        conn._spaces[self.name] = view
        self.registry.accept(conn)
        return self.registry.add_member(conn, ROOT, ack=False, announce=False)

    def _forget(self, conn: Connection) -> None:
        self.registry.drop(conn)
        if conn._spaces is not None:
            conn._spaces.pop(self.name, None)
            if not conn._spaces:
                conn._spaces = None


def _conn_of(exclude: object) -> Any:
    if isinstance(exclude, NamespaceConnection):
        return exclude.conn
    return exclude
