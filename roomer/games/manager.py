"""One server's game rooms (docs/design.md §10): the types its namespaces define, the rooms
this node owns, the rooms owned elsewhere that its clients are in, and what each game
message a client sends does (docs/protocol.md §10).

The router hands `Games.route` every message about a game room (its id is
``type:suffix`` for a type defined in the message's namespace) and every game ask
(``room.create``, ``room.join_or_create``, ``rooms.watch``, ``rooms.unwatch``). Seats are
asked of the room's owner: the room object here, or through the cluster's
`roomer.backplane.games.GameLink` on the node that owns it; either way the flow
is the same (a seat, then the registry room, then the confirmation that runs
``on_joined``). Without a backplane every room is owned here. What other nodes send is
handled by roomer/games/remote.py.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import secrets
import string
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .. import codec, frames
from ..errors import RoomerError
from ..message import Message
from .listing import Feed, Replica, RoomListing, Watches, matches
from .room import ENDED, OPEN, GameRoom, Player, SeatRefused, _AlreadyIn, _refusal, claims_json
from .seat_moves import SeatMoves
from .ticker import Ticker
from .types import RoomType, make_type, split_id

if TYPE_CHECKING:
    from ..connection import Connection, Payload
    from ..core import Core
    from ..namespaces import Namespace

__all__ = ["GAME_EVENTS", "OWNER_QUEUE", "Games"]

log = logging.getLogger("roomer")

#: Events a client sends to find rooms and watch them, and those the server sends about
#: them (docs/protocol.md §10). No handler may take them.
ASKS = frozenset({"room.create", "room.join_or_create", "rooms.watch", "rooms.unwatch"})
SENT = frozenset({"room.closed", "rooms.changes"})
GAME_EVENTS = ASKS | SENT

#: A player's messages that may wait behind the room's async handler (then room_busy).
OWNER_QUEUE = 64
# How many rooms join-or-create tries before it creates one.
TRIES = 3
# Random room id suffixes: 12 base-62 characters, 71 bits.
ID_ALPHABET = string.ascii_letters + string.digits
ID_LENGTH = 12


def random_suffix() -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


class _Seat:
    """A seat obtained from a room's owner for one client: confirm it once the client is
    in the registry room, abort it otherwise."""

    __slots__ = ("_done", "abort_fn", "confirm_fn")

    def __init__(self, confirm: Callable[[], bool], abort: Callable[[], None]) -> None:
        self.confirm_fn = confirm
        self.abort_fn = abort
        self._done = False

    def confirm(self) -> bool:
        """False when the room ended meanwhile."""
        if self._done:
            return True
        self._done = True
        return self.confirm_fn()

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self.abort_fn()


class Games:
    """The game rooms of one server (loop thread only, but for the read-only
    `list_rooms`)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.config = core.config
        self.metrics = core.metrics
        #: Whether any namespace defines a type: the router asks nothing otherwise.
        self.active = False
        self.types: dict[str, dict[str, RoomType]] = {}
        self.rooms: dict[tuple[str, str], GameRoom] = {}  # owned here
        self._count: dict[tuple[str, str], int] = {}  # rooms owned here by (ns, type)
        self.remote: dict[tuple[str, str], str] = {}  # owned elsewhere, members here
        self.replica = Replica()
        self.link: Any = None  # roomer.backplane.games.GameLink with a backplane
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.ticker: Ticker = None  # type: ignore[assignment]
        self.watches = Watches(self.config.max_listed_rooms, self.config.max_room_watches,
                               self.listing, self._rooms_of)
        self._consenting: tuple[str, tuple[str, str]] | None = None
        self._closing_out: set[tuple[str, tuple[str, str]]] = set()
        self._stopping = False
        self._claiming: set[tuple[str, str]] = set()  # chosen ids being claimed
        # Lookups of a room id this node does not know yet (created a moment ago
        # elsewhere): woken when its listing arrives.
        self._awaited: dict[tuple[str, str], list[asyncio.Future[None]]] = {}
        self.seat_moves = SeatMoves(self)

    # definition and start ----------------------------------------------------------------

    def define(self, namespace: Namespace[Any], name: str, cls: type[GameRoom],
               settings: Mapping[str, Any]) -> RoomType:
        if self.core.started:
            raise RuntimeError("room types are defined before the server starts")
        room_type = make_type(namespace.name, name, cls, settings)
        of_ns = self.types.setdefault(namespace.name, {})
        if name in of_ns:
            raise ValueError(f"room type {name!r} is defined already in {namespace!r}")
        limit = self.config.max_room_name
        if len(name.encode()) + 2 > limit:
            raise ValueError(f"room type {name!r} leaves no room for ids within "
                             f"max_room_name ({limit})")
        of_ns[name] = room_type
        self.active = True
        return room_type

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ticker = Ticker(loop, self.metrics, self._after_tick)
        if self.active:
            assert self.core.tasks is not None
            self.core.tasks.every(self.config.room_list_interval, self._flush_watches)

    async def stop(self, deadline: float) -> None:
        """Shutdown: every room owned here is told ``shutdown`` and disposed (its
        on_dispose hooks may finish until ``deadline``)."""
        self._stopping = True
        for room in list(self.rooms.values()):
            room._locked = True
            self.dispose(room, "shutdown", "the server is shutting down")
        if self.ticker is not None:
            self.ticker.stop()
        if self.link is not None:
            await self.link.flush(max(0.0, deadline - self.loop.time()))

    # the router's side -------------------------------------------------------------------

    def room_type(self, namespace: str, room: str) -> RoomType | None:
        """The type of a game room id of ``namespace`` (None: not a game room)."""
        sep = room.find(":")
        if sep <= 0:
            return None
        of_ns = self.types.get(namespace)
        return of_ns.get(room[:sep]) if of_ns else None

    def route(self, conn: Connection, ns: Namespace[Any], ask: int, room: str, event: str,
              payload: bytes) -> Awaitable[None] | None:
        """A client's message about a game room or a game ask (the router checked the
        names). An awaitable when the answer waits for work (the client's next messages
        wait behind it)."""
        name = ns.name
        if event in ASKS:
            if not ask:
                self._error(conn, ns, 0, room, event, "forbidden",
                            f"{event!r} is an ask (protocol v2)")
                return None
            of_ns = self.types.get(name)
            if event in ("rooms.watch", "rooms.unwatch"):
                self._watch(conn, ns, ask, room, event, payload)
                return None
            type_name, suffix = split_id(room) if ":" in room else (room, "")
            room_type = of_ns.get(type_name) if of_ns else None
            if room_type is None:
                self._error(conn, ns, ask, room, event, "no_such_room_type",
                            f"no room type {type_name!r} here")
                return None
            options = self._options(conn, ns, ask, room, event, payload)
            if options is None:
                return None
            if event == "room.create":
                return self._create_flow(conn, ns, ask, room_type, room if suffix else None,
                                         options)
            if suffix:
                self._error(conn, ns, ask, room, event, "no_such_room_type",
                            "join_or_create takes a room type, not an id")
                return None
            return self._join_or_create_flow(conn, ns, ask, room_type, options)
        if event in SENT:
            self._error(conn, ns, ask, room, event, "reserved_event",
                        f"{event!r} is reserved")
            return None
        room_type = self.room_type(name, room)
        assert room_type is not None
        if event == "join":
            return self._join(conn, ns, ask, room_type, room, payload)
        if event == "leave":
            self._leave(conn, ns, ask, room)
            return None
        self._message(conn, ns, ask, room_type, room, event, payload)
        return None

    def _error(self, conn: Connection, ns: Namespace[Any], ask: int, room: str, event: str,
               code: str, message: str) -> None:
        self.core.router.error(conn, code, message, room, event, ns.name, ask)

    def _options(self, conn: Connection, ns: Namespace[Any], ask: int, room: str,
                 event: str, payload: bytes) -> dict[str, Any] | None:
        """The options a join or create carries (an empty payload is none), or None
        after refusing them."""
        if not payload:
            return {}
        limit = self.config.max_join_options
        options: Any = None
        if len(payload) <= limit:
            try:
                options = json.loads(payload)
            except (ValueError, UnicodeDecodeError):
                options = None
        if not isinstance(options, dict):
            self._error(conn, ns, ask, room, event, "invalid_options",
                        f"options are a JSON object of at most {limit} bytes")
            return None
        return options

    def _room_limit(self, conn: Connection, ns: Namespace[Any], ask: int, room: str,
                    event: str) -> bool:
        limit = self.config.max_rooms_per_connection
        if limit is not None and conn.room_count() >= limit:
            self._error(conn, ns, ask, room, event, "too_many_rooms",
                        f"at most {limit} rooms per connection")
            return True
        return False

    # joining -----------------------------------------------------------------------------

    def _join(self, conn: Connection, ns: Namespace[Any], ask: int, room_type: RoomType,
              room: str, payload: bytes) -> Awaitable[None] | None:
        registry = ns.registry
        if room in (registry.rooms_of(conn) or {}):
            return registry.add_member(conn, room, reply=ask)  # joined already: re-ack
        if self._room_limit(conn, ns, ask, room, "join"):
            return None
        options = self._options(conn, ns, ask, room, "join", payload)
        if options is None:
            return None
        return self._join_flow(conn, ns, ask, room, options)

    async def _join_flow(self, conn: Connection, ns: Namespace[Any], ask: int, room: str,
                         options: dict[str, Any]) -> None:
        try:
            seat = await self._seat(conn, ns, room, options)
        except SeatRefused as refused:
            if conn.inbound.open:
                self._error(conn, ns, ask, room, "join", refused.code, str(refused))
            return
        await self._enter(conn, ns, room, seat, lambda: ns.registry.add_member(
            conn, room, reply=ask))

    async def _enter(self, conn: Connection, ns: Namespace[Any], room: str, seat: _Seat,
                     add: Callable[[], Awaitable[None] | None],
                     answer: Callable[[], None] | None = None) -> bool:
        """Put ``conn`` in the registry room its seat is for (``add``, which answers
        the client, or ``answer`` after it), then confirm the seat; abort it if the
        client is gone first. Whether it is in."""
        registry = ns.registry
        if not conn.inbound.open or registry.rooms_of(conn) is None:
            seat.abort()
            return False
        key = (ns.name, room)
        owner = self._owner_key(key)
        if owner is not None:
            self.remote[key] = owner
        pending = add()
        if pending is not None:
            await pending
        inside = room in (registry.rooms_of(conn) or {})
        if not inside or not conn.inbound.open:
            seat.abort()
            self._forget_remote(ns, room)
            return False
        if answer is not None:
            answer()
        if not seat.confirm():
            # The room ended while the client was being put in: out again.
            self._close_out(conn, ns, room, "no_such_room", "the room ended")
            return False
        return True

    def _owner_key(self, key: tuple[str, str]) -> str | None:
        """The node owning a room that is not owned here (None: owned here, or unknown)."""
        if key in self.rooms:
            return None
        return self.replica.owners.get(key)

    async def _seat(self, conn: Connection, ns: Namespace[Any], room: str,
                    options: dict[str, Any]) -> _Seat:
        """A seat for ``conn`` in ``room`` from its owner; SeatRefused otherwise."""
        if self._stopping:
            raise SeatRefused("room_unavailable", "the server is shutting down")
        key = (ns.name, room)
        local = self.rooms.get(key)
        if local is None and self.link is not None:
            owner = self.replica.owners.get(key)
            if owner is None:
                owner = await self._find_owner(key)
            if owner is not None:
                return await self._remote_seat(conn, ns, room, owner, options)
            local = self.rooms.get(key)
        if local is None or local._state != OPEN:
            raise SeatRefused("no_such_room", "no such room")
        return await self._local_seat(local, conn.id, conn.claims, options, "", conn)

    async def _local_seat(self, room: GameRoom, client: str, claims: Any,
                          options: dict[str, Any], node: str, conn: Any) -> _Seat:
        player = Player(room, client, claims, options, node, conn)
        try:
            pending = room._admit(player)
        except _AlreadyIn:
            return _Seat(lambda: room._state == OPEN, lambda: None)
        if pending is not None:
            await pending

        def confirm() -> bool:
            if room._state != OPEN:
                return False
            room._confirm(player)
            return True

        return _Seat(confirm, lambda: room._unseat(player))

    async def _remote_seat(self, conn: Connection, ns: Namespace[Any], room: str,
                           owner: str, options: dict[str, Any]) -> _Seat:
        link = self.link
        await link.request_join(owner, ns.name, room, conn.id, claims_json(conn.claims),
                                options)
        return _Seat(lambda: link.confirm(owner, ns.name, room, conn.id) or True,
                     lambda: link.abort(owner, ns.name, room, conn.id))

    async def _find_owner(self, key: tuple[str, str]) -> str | None:
        """A room this node does not know: it may have been created a moment ago on
        another node, whose listing has not arrived yet. Wait a little for it."""
        if self.link is None:
            return None
        waiter = self.loop.create_future()
        self._awaited.setdefault(key, []).append(waiter)
        try:
            await asyncio.wait_for(waiter, self.link.lookup_wait)
        except TimeoutError:
            pass
        finally:
            waiters = self._awaited.get(key)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._awaited[key]
        return self.replica.owners.get(key)

    # creating ------------------------------------------------------------------------------

    async def _create_flow(self, conn: Connection, ns: Namespace[Any], ask: int,
                           room_type: RoomType, room_id: str | None,
                           options: dict[str, Any]) -> None:
        asked = room_id or room_type.name
        if not room_type.allow_create:
            self._error(conn, ns, ask, asked, "room.create", "create_denied",
                        f"rooms of type {room_type.name!r} are created by the server")
            return
        if self._room_limit(conn, ns, ask, asked, "room.create"):
            return
        try:
            room = await self.create(ns, room_type, options, room_id)
        except SeatRefused as refused:
            if conn.inbound.open:
                self._error(conn, ns, ask, asked, "room.create", refused.code, str(refused))
            return
        await self._seat_creator(conn, ns, ask, "room.create", asked, room, options)

    async def _seat_creator(self, conn: Connection, ns: Namespace[Any], ask: int,
                            event: str, asked: str, room: GameRoom,
                            options: dict[str, Any]) -> None:
        try:
            seat = await self._local_seat(room, conn.id, conn.claims, options, "", conn)
        except SeatRefused as refused:
            self.maybe_dispose(room)
            if conn.inbound.open:
                self._error(conn, ns, ask, asked, event, refused.code, str(refused))
            return
        if not await self._enter(conn, ns, room.id, seat,
                                 lambda: ns.registry.add_member(conn, room.id, ack=False),
                                 self._answer_joined(conn, ns, ask, event, asked, room.id)):
            self.maybe_dispose(room)

    def _answer_joined(self, conn: Connection, ns: Namespace[Any], ask: int, event: str,
                       asked: str, room: str) -> Callable[[], None]:
        def answer() -> None:
            body = json.dumps({"room": room, "members": ns.registry.members(room)})
            conn.send_control(frames.encode(True, ns.name, asked, event, "", "", body,
                                            frames.REPLY, ask))
        return answer

    async def create(self, ns: Namespace[Any], room_type: RoomType,
                     options: dict[str, Any], room_id: str | None = None,
                     metadata: Mapping[str, Any] | None = None) -> GameRoom:
        """A room of ``room_type`` owned here, created (on_create done); SeatRefused
        otherwise (``room_limit``, ``room_exists``, ``create_denied``...)."""
        if self._stopping or self.core.closing:
            raise SeatRefused("room_unavailable", "the server is shutting down")
        name = ns.name
        counted = (name, room_type.name)
        if len(self.rooms) >= self.config.max_game_rooms or (
                room_type.max_rooms is not None
                and self._count.get(counted, 0) >= room_type.max_rooms):
            raise SeatRefused("room_limit", "this server holds as many rooms as it may")
        claimed = False
        if room_id is None:
            while True:
                room_id = f"{room_type.name}:{random_suffix()}"
                if (name, room_id) not in self.rooms and (name, room_id) not in (
                        self.replica.rooms):
                    break
        else:
            self._check_id(room_type, room_id)
            key = (name, room_id)
            if key in self.rooms or key in self.replica.rooms or key in self._claiming:
                raise SeatRefused("room_exists", f"room {room_id!r} exists already")
            if self.link is not None:
                self._claiming.add(key)  # taken here while the broker is asked
                try:
                    claimed = await self.link.claim(name, room_id)
                finally:
                    self._claiming.discard(key)
                if not claimed or self._stopping:
                    if claimed:
                        self.link.release(name, room_id)
                    raise SeatRefused("room_exists", f"room {room_id!r} exists already")
        key = (name, room_id)
        room = room_type.cls()
        room._bind(self, ns, room_type.name, room_id, room_type.settings)
        room._claimed = claimed
        if metadata:
            room._metadata.update(metadata)
        self.rooms[key] = room
        self._count[counted] = self._count.get(counted, 0) + 1
        try:
            result = room.on_create(options)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self._unregister(room)
            raise _refusal(exc, "create_denied", "on_create") from None
        if self._stopping or self.rooms.get(key) is not room:
            self._unregister(room)
            raise SeatRefused("room_unavailable", "the server is shutting down")
        try:
            self.check_metadata(room._metadata)
        except ValueError as exc:
            self._unregister(room)
            raise SeatRefused("create_denied", str(exc)) from None
        room._state = OPEN
        self.metrics.counters["game_rooms_created"] += 1
        if room.tick_rate is not None:
            self.ticker.add(room)
        self.changed(room)
        return room

    def _check_id(self, room_type: RoomType, room_id: str) -> None:
        wanted, suffix = split_id(room_id)
        if wanted != room_type.name or not suffix:
            raise SeatRefused("invalid_name", f"a room id of type {room_type.name!r} is "
                              f"{room_type.name}:<suffix>")
        if len(room_id.encode()) > self.config.max_room_name:
            raise SeatRefused("invalid_name", f"room names are 1-{self.config.max_room_name}"
                              " bytes")

    def _unregister(self, room: GameRoom) -> None:
        """Forget a room owned here (created or ended)."""
        key = (room.namespace.name, room.id)
        if self.rooms.get(key) is room:
            del self.rooms[key]
            counted = (key[0], room.type)
            left = self._count.get(counted, 1) - 1
            if left > 0:
                self._count[counted] = left
            else:
                self._count.pop(counted, None)
            if getattr(room, "_claimed", False) and self.link is not None:
                self.link.release(key[0], room.id)

    # join or create ------------------------------------------------------------------------

    async def _join_or_create_flow(self, conn: Connection, ns: Namespace[Any], ask: int,
                                   room_type: RoomType, options: dict[str, Any]) -> None:
        event, asked = "room.join_or_create", room_type.name
        if self._room_limit(conn, ns, ask, asked, event):
            return
        wanted = {key: options.get(key) for key in room_type.filter_by}
        tried: set[str] = set()
        for _ in range(TRIES):
            candidate = self._candidate(ns.name, room_type, wanted, tried)
            if candidate is None:
                break
            tried.add(candidate)
            try:
                seat = await self._seat(conn, ns, candidate, options)
            except SeatRefused as refused:
                if refused.code in ("room_full", "room_locked", "no_such_room",
                                    "join_denied", "room_unavailable"):
                    continue
                if conn.inbound.open:
                    self._error(conn, ns, ask, asked, event, refused.code, str(refused))
                return
            await self._enter(conn, ns, candidate, seat,
                              lambda room=candidate: ns.registry.add_member(  # type: ignore
                                  conn, room, ack=False),
                              self._answer_joined(conn, ns, ask, event, asked, candidate))
            return
        if not room_type.allow_create:
            self._error(conn, ns, ask, asked, event, "no_such_room",
                        "no room to join, and clients do not create rooms of this type")
            return
        try:
            room = await self.create(ns, room_type, options, None,
                                     {k: v for k, v in wanted.items() if v is not None})
        except SeatRefused as refused:
            if conn.inbound.open:
                self._error(conn, ns, ask, asked, event, refused.code, str(refused))
            return
        await self._seat_creator(conn, ns, ask, event, asked, room, options)

    def _candidate(self, namespace: str, room_type: RoomType, wanted: dict[str, Any],
                   tried: set[str]) -> str | None:
        """The first room join-or-create should try, in the type's order."""
        found = [listing for listing in self._rooms_of(namespace, room_type.name)
                 if listing.id not in tried and listing.open_seats
                 and matches(listing, wanted)]
        if not found:
            return None
        found.sort(key=lambda listing: listing.created)
        for key, direction in reversed(room_type.sort_by):
            found.sort(key=lambda listing, k=key: _order(listing, k),  # type: ignore
                       reverse=direction < 0)
        return found[0].id

    # leaving and messages ------------------------------------------------------------------

    def _leave(self, conn: Connection, ns: Namespace[Any], ask: int, room: str) -> None:
        registry = ns.registry
        self._consenting = (conn.id, (ns.name, room))
        try:
            registry.remove_member(conn, room, ack=True, reply=ask)
        finally:
            self._consenting = None

    def member_left(self, ns: Namespace[Any], conn: Connection, room: str) -> None:
        """The registry took ``conn`` out of ``room`` (a leave, a disconnect, a removal):
        for a game room, its owner is told."""
        if self.room_type(ns.name, room) is None:
            return
        key = (ns.name, room)
        marker = (conn.id, key)
        if marker in self._closing_out:
            return
        consented = self._consenting == marker
        local = self.rooms.get(key)
        if local is not None:
            local._left(conn.id, consented)
            return
        owner = self.remote.get(key)
        if owner is not None and self.link is not None:
            self.link.left(owner, ns.name, room, conn.id, consented)
        self._forget_remote(ns, room)

    def _forget_remote(self, ns: Namespace[Any], room: str) -> None:
        key = (ns.name, room)
        if key in self.remote and not ns.registry.rooms.get(room):
            del self.remote[key]

    def _message(self, conn: Connection, ns: Namespace[Any], ask: int, room_type: RoomType,
                 room: str, event: str, payload: bytes) -> None:
        members = ns.registry.rooms.get(room)
        if members is None or conn.id not in members:
            self._error(conn, ns, ask, room, event, "not_member",
                        "join the room before sending to it")
            return
        key = (ns.name, room)
        local = self.rooms.get(key)
        if local is not None:
            player = local.players.get(conn.id)
            if player is None:
                self._error(conn, ns, ask, room, event, "not_member",
                            "join the room before sending to it")
                return
            self.deliver(local, player, event, payload, ask)
            return
        if event not in room_type.handlers:
            self._error(conn, ns, ask, room, event, "no_handler",
                        f"nothing answers {event!r} in this room")
            return
        owner = self.remote.get(key)
        if owner is None or self.link is None:
            self._error(conn, ns, ask, room, event, "no_such_room", "no such room")
            return
        self.link.message(owner, ns.name, room, conn.id, event, ask, payload)

    def deliver(self, room: GameRoom, player: Player, event: str, payload: bytes,
                ask: int) -> None:
        """A player's message to the room's handler, one at a time per player."""
        self.metrics.counters["game_messages"] += 1
        if player.busy:
            queue = player.queue
            if queue is None:
                queue = player.queue = []
            if len(queue) >= OWNER_QUEUE:
                self.answer(room, player, event, ask, "room_busy",
                            f"{OWNER_QUEUE} messages wait for the room already")
                return
            queue.append((event, payload, ask))
            return
        self._handle(room, player, event, payload, ask)

    def _handle(self, room: GameRoom, player: Player, event: str, payload: bytes,
                ask: int) -> None:
        handler = room._handlers.get(event)
        if handler is None:
            self.answer(room, player, event, ask, "no_handler",
                        f"nothing answers {event!r} in this room")
            return
        try:
            result = handler(room, player, Message(room.id, event, "", player.id, payload))
        except Exception as exc:
            self._failed(room, player, event, ask, exc)
            return
        if inspect.isawaitable(result):
            player.busy = True
            self.core.spawn(self._handle_later(room, player, event, ask, result))
            return
        if ask:
            self.answer(room, player, event, ask, None, result)

    async def _handle_later(self, room: GameRoom, player: Player, event: str, ask: int,
                            pending: Awaitable[Any]) -> None:
        try:
            result = await pending
        except Exception as exc:
            self._failed(room, player, event, ask, exc)
        else:
            if ask:
                self.answer(room, player, event, ask, None, result)
        finally:
            player.busy = False
        queue = player.queue
        while queue and not player.busy and room.players.get(player.id) is player:
            event, payload, ask = queue.pop(0)
            self._handle(room, player, event, payload, ask)
        if not queue:
            player.queue = None

    def _failed(self, room: GameRoom, player: Player, event: str, ask: int,
                exc: Exception) -> None:
        if isinstance(exc, RoomerError):
            code = exc.code if ask else "handler_error"
            message = str(exc) or type(exc).__name__
        else:
            log.error("handler of %r in %s raised", event, room.id, exc_info=exc)
            code, message = "handler_error", "internal error"
        self.answer(room, player, event, ask, code, message)

    def answer(self, room: GameRoom, player: Player, event: str, ask: int,
               code: str | None, value: Any) -> None:
        """An answer to a player's message: an error (``code``) as an error reply or
        event, or for an ask the handler's return value as its reply."""
        name = room.namespace.name
        conn = player._conn
        if conn is None:  # on another node
            if self.seat_moves.held_back(room, player, lambda: self.answer(
                    room, player, event, ask, code, value)):
                return
            if code is None:
                try:
                    body = frames.reply_payload(value)
                except (TypeError, ValueError):
                    code, value = "handler_error", "internal error"
                else:
                    self.link.answer(player.node, name, room.id, player.id, event, ask,
                                     None, body)
                    return
            self.link.answer(player.node, name, room.id, player.id, event, ask, code,
                             str(value))
            return
        self.answer_local(conn, name, room.id, event, ask, code, value)

    def answer_local(self, conn: Connection, namespace: str, room: str, event: str,
                     ask: int, code: str | None, value: Any) -> None:
        if code is not None:
            self.core.router.error(conn, code, str(value), room, event, namespace, ask)
            return
        try:
            body = frames.reply_payload(value)
        except (TypeError, ValueError):
            self.core.router.error(conn, "handler_error", "internal error", room, event,
                                   namespace, ask)
            return
        conn.send_control(frames.encode(True, namespace, room, event, "", "", body,
                                        frames.REPLY, ask))

    # what a room does ------------------------------------------------------------------------

    def broadcast(self, room: GameRoom, event: str, payload: Payload,
                  exclude: str | None) -> None:
        registry = room.namespace.registry
        frame = codec.encode_frame(room.id, event, "", "", payload)
        registry.publish_room(room.id, frame, exclude)
        registry.broadcast(room.id, frame, registry.conns.get(exclude) if exclude else None)

    def send(self, room: GameRoom, player: Player, event: str, payload: Payload) -> None:
        conn = player._conn
        if conn is None:
            if self.seat_moves.held_back(room, player, lambda: self.send(
                    room, player, event, payload)):
                return
            self.link.send(player.node, room.namespace.name, room.id, player.id, event,
                           bytes(payload.encode() if isinstance(payload, str) else payload))
            return
        room.namespace.registry.send(conn, codec.encode_frame(room.id, event, "", "",
                                                              payload))

    def remove_player(self, room: GameRoom, player: Player) -> None:
        conn = player._conn
        if conn is not None:
            room.namespace.registry.remove_member(conn, room.id, ack=True)
            return
        if player.node and self.link is not None and not self.seat_moves.held_back(
                room, player, lambda: self.link.remove(player.node, room.namespace.name,
                                                       room.id, player.id)):
            self.link.remove(player.node, room.namespace.name, room.id, player.id)
        room._left(player.id, False)

    def reserve(self, room: GameRoom, ids: list[str], seconds: float | None) -> bool:
        if room._state != OPEN:
            return False
        if not all(isinstance(i, str) and i for i in ids):
            raise TypeError("reserve takes client ids (non-empty str)")
        span = self.config.seat_reservation if seconds is None else float(seconds)
        if not span > 0:
            raise ValueError("seconds must be positive")
        new = [i for i in dict.fromkeys(ids) if i not in room._reserved
               and i not in room.players and i not in room._joining]
        if room.max_clients is not None and room._taken() + len(new) > room.max_clients:
            return False
        for client in dict.fromkeys(ids):
            if client in room.players or client in room._joining:
                continue
            old = room._reserved.get(client)
            if old is not None:
                old.cancel()
            room._reserved[client] = self.loop.call_later(span, self._expired, room, client)
        room._changed()
        return True

    def _expired(self, room: GameRoom, client: str) -> None:
        if room._reserved.pop(client, None) is not None:
            room._changed()
            self.maybe_dispose(room)

    def check_metadata(self, metadata: Mapping[str, Any]) -> None:
        try:
            size = len(json.dumps(metadata))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"room metadata must be JSON-able: {exc}") from None
        if size > self.config.max_room_metadata:
            raise ValueError(f"room metadata is {size} bytes of JSON, more than "
                             f"max_room_metadata ({self.config.max_room_metadata})")

    def maybe_dispose(self, room: GameRoom) -> None:
        if room.auto_dispose and room._state == OPEN and room._taken() == 0:
            self.dispose(room, "closed", "")

    def dispose(self, room: GameRoom, code: str, message: str) -> None:
        """End a room owned here: its members are told ``room.closed`` and taken out
        (on_left for each), then on_dispose."""
        if room._state == ENDED:
            return
        was_open = room._state == OPEN
        room._state = ENDED
        self.ticker.remove(room)
        for timer in list(room._timers):
            timer.cancel()
        for handle in room._reserved.values():
            handle.cancel()
        room._reserved.clear()
        room._joining.clear()
        ns = room.namespace
        self._close_members(ns, room.id, code, message)
        nodes = {player.node for player in room.players.values() if player.node}
        for node in nodes:
            self.link.closed(node, ns.name, room.id, code, message)
        for player_id in list(room.players):
            player = room.players.pop(player_id)
            room._call("on_left", room.on_left, player, False)
        self._unregister(room)
        self.changed(room)
        self.metrics.counters["game_rooms_disposed"] += 1
        if was_open:
            room._call("on_dispose", room.on_dispose)

    def _close_members(self, ns: Namespace[Any], room: str, code: str,
                       message: str) -> None:
        """Tell this node's members of ``room`` it closed, and take them out of it."""
        members = ns.registry.rooms.get(room)
        for conn in list((members or {}).values()):
            self._close_out(conn, ns, room, code, message)
        self.remote.pop((ns.name, room), None)

    def _close_out(self, conn: Connection, ns: Namespace[Any], room: str, code: str,
                   message: str) -> None:
        body = json.dumps({"code": code, "message": message})
        conn.send_control(frames.encode(conn.v2, ns.name, room, "room.closed", "", "", body))
        marker = (conn.id, (ns.name, room))
        self._closing_out.add(marker)
        try:
            ns.registry.remove_member(conn, room, ack=False)
        finally:
            self._closing_out.discard(marker)

    def _after_tick(self, room: GameRoom) -> None:
        # With a write delay, a tick's frames go out with the tick, not a delay later.
        engine = self.core.engine
        if engine.write_delay:
            members = room.namespace.registry.rooms.get(room.id)
            if members:
                engine.flush_peers(members)

    # the room list -----------------------------------------------------------------------------

    def listing(self, key: tuple[str, str]) -> RoomListing | None:
        room = self.rooms.get(key)
        if room is not None:
            return self.listing_of(room) if room._state == OPEN else None
        return self.replica.rooms.get(key)

    def listing_of(self, room: GameRoom) -> RoomListing:
        link = self.link
        return RoomListing(room.id, room.type, room.clients, room.max_clients, room.locked,
                           room._private, room._unlisted, dict(room._metadata),
                           room.namespace.name, link.node_id if link is not None else "",
                           len(room._reserved), room._created_at)

    def _rooms_of(self, namespace: str, type_name: str) -> Iterable[RoomListing]:
        for (name, _), room in list(self.rooms.items()):
            if name == namespace and room.type == type_name and room._state == OPEN:
                yield self.listing_of(room)
        for (name, _), listing in list(self.replica.rooms.items()):
            if name == namespace and listing.type == type_name:
                yield listing

    def changed(self, room: GameRoom) -> None:
        """A room owned here changed what it lists (or ended)."""
        key = (room.namespace.name, room.id)
        self.watches.changed(key, room.type)
        if self.link is not None:
            self.link.changed(key)

    def list_rooms(self, namespace: str, type_name: str | None,
                   metadata: Mapping[str, Any]) -> list[RoomListing]:
        """The cluster's rooms of ``namespace`` (of one type), whose metadata match."""
        found: list[RoomListing] = []
        types = [type_name] if type_name is not None else list(self.types.get(namespace, ()))
        for name in types:
            found.extend(listing for listing in self._rooms_of(namespace, name)
                         if matches(listing, metadata))
        found.sort(key=lambda listing: (listing.node, listing.created))
        return found

    def _watch(self, conn: Connection, ns: Namespace[Any], ask: int, room: str,
               event: str, payload: bytes) -> None:
        of_ns = self.types.get(ns.name)
        if not of_ns or room not in of_ns:
            self._error(conn, ns, ask, room, event, "no_such_room_type",
                        f"no room type {room!r} here")
            return
        if event == "rooms.unwatch":
            self.watches.unwatch(conn, ns.name, room)
            self.answer_local(conn, ns.name, room, event, ask, None, None)
            return
        wanted = self._options(conn, ns, ask, room, event, payload)
        if wanted is None:
            return
        try:
            shown = self.watches.watch(conn, ns.name, room, wanted)
        except ValueError as exc:
            self._error(conn, ns, ask, room, event, "too_many_watches", str(exc))
            return
        self.answer_local(conn, ns.name, room, event, ask, None, {"rooms": shown})

    def _flush_watches(self, _now: float) -> None:
        self.watches.flush(self._send_feed)

    def _send_feed(self, feed: Feed, frame: bytes) -> None:
        self.core.engine.broadcast_control(feed.watchers, frame)

    def drop_windows(self, conn: Connection) -> dict[tuple[str, str], float]:
        """How long each game room of dropped ``conn`` keeps its seat: the room's
        ``on_drop`` (rooms owned here), else its type's ``resume_window`` (rooms with
        neither are left out)."""
        out = {}
        for name, ns in self.core.namespaces.items():
            for room in ns.registry.rooms_of(conn) or ():
                room_type = self.room_type(name, room)
                if room_type is None:
                    continue
                local = self.rooms.get((name, room))
                player = None if local is None else local.players.get(conn.id)
                window = None
                if local is not None and player is not None:
                    window = local._drop_window(player)
                if window is None:
                    window = room_type.resume_window
                if window is not None:
                    out[(name, room)] = window
        return out

    def ask_drop_windows(self, conn: Connection) -> None:
        """``conn`` is held: the owners of its game rooms on other nodes are asked what
        their ``on_drop`` says (roomer/sessions.py's ``rewindow`` takes the answers)."""
        if self.link is None:
            return
        for name, ns in self.core.namespaces.items():
            for room in ns.registry.rooms_of(conn) or ():
                owner = self.remote.get((name, room))
                if owner is not None:
                    self.link.dropped(owner, name, room, conn.id)

    def forget(self, ns: Namespace[Any], conn: Connection) -> None:
        """``conn`` left namespace ``ns``: its watches there end."""
        self.watches.forget(conn, ns.name)

    # the server API ------------------------------------------------------------------------------

    def type_of(self, namespace: str, type_name: str) -> RoomType:
        of_ns = self.types.get(namespace)
        room_type = of_ns.get(type_name) if of_ns else None
        if room_type is None:
            raise ValueError(f"no room type {type_name!r} in namespace {namespace!r}")
        return room_type

    def game_room(self, namespace: str, room_id: str) -> GameRoom | None:
        room = self.rooms.get((namespace, room_id))
        return room if room is not None and room._state == OPEN else None

    async def create_room(self, ns: Namespace[Any], type_name: str,
                          options: Mapping[str, Any] | None, room_id: str | None) -> str:
        room_type = self.type_of(ns.name, type_name)
        room = await self.create(ns, room_type, dict(options or {}), room_id)
        # Nobody in it yet: it waits seat_reservation for a first player.
        self.loop.call_later(self.config.seat_reservation, self.maybe_dispose, room)
        return room.id

    async def reserve_seats(self, ns: Namespace[Any], room_id: str, ids: list[str],
                            seconds: float | None) -> bool:
        key = (ns.name, room_id)
        room = self.rooms.get(key)
        if room is not None:
            return self.reserve(room, ids, seconds)
        owner = self.replica.owners.get(key)
        if owner is None:
            owner = await self._find_owner(key)
        if owner is None:
            return False
        result: bool = await self.link.request_reserve(owner, ns.name, room_id, ids, seconds)
        return result

    def stats(self) -> dict[str, int]:
        return {"game_rooms": len(self.rooms), "game_watches": len(self.watches)}

    async def attach(self, cluster: Any) -> None:
        """The server joined a cluster: game rooms cross it (if any type is defined)."""
        if not self.active:
            return
        from ..backplane.games import GameLink
        from .remote import FromOtherNodes
        self.link = GameLink(cluster, FromOtherNodes(self))
        await self.link.start()


def _order(listing: RoomListing, key: str) -> tuple[int, Any]:
    """A sort key that never compares unlike values: numbers, then text, then the rest
    (missing last)."""
    if key in ("clients", "max_clients", "reserved"):
        value = getattr(listing, key)
    else:
        value = listing.metadata.get(key)
    if isinstance(value, bool):
        return (2, int(value))
    if isinstance(value, (int, float)):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    if value is None:
        return (4, 0)
    return (3, json.dumps(value, sort_keys=True))

