"""A game room as the app writes it (`GameRoom`), its players (`Player`),
its timers, and the seat rules the room's node applies (docs/design.md §10).

The app subclasses `GameRoom`; roomer makes one instance per room, on the node
that owns it, and calls its hooks there only. Everything about seats is decided here,
one request at a time on the owner's loop: a seat counts from the moment a join is
admitted (before ``on_join`` runs), so an async hook cannot let two players take the
last seat.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import Deny, RoomerError

if TYPE_CHECKING:
    from ..connection import Payload
    from ..message import Message
    from ..namespaces import Namespace
    from .manager import Games

__all__ = ["GameRoom", "Player", "SeatRefused", "Timer", "on_message"]

log = logging.getLogger("roomer")

F = TypeVar("F", bound=Callable[..., Any])

# What a room is while it exists: being created (on_create runs), open, ending.
CREATING, OPEN, ENDED = range(3)


class SeatRefused(RoomerError):
    """A join or create refused, with the error code its client gets."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def on_message(event: str) -> Callable[[F], F]:
    """Decorator: make a method of a `GameRoom` subclass the handler of ``event``
    sent to the room: ``method(self, player, msg)``, sync or async, ``msg`` a
    `roomer.Message`. For an ask its return value is the reply.

    Raises:
        ValueError: ``event`` is not a non-empty str.
    """
    if not isinstance(event, str) or not event:
        raise ValueError("event name must be a non-empty str")

    def mark(fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"handler for {event!r} is not callable")
        fn._roomer_event = event  # type: ignore[attr-defined]
        return fn

    return mark


class Timer:
    """A room's timer (`GameRoom.call_later`, `GameRoom.call_every`);
    ``cancel()`` stops it. Cancelled with its room."""

    __slots__ = ("_args", "_fn", "_handle", "_period", "_room", "cancelled")

    def __init__(self, room: GameRoom, period: float | None, fn: Callable[..., Any],
                 args: tuple[Any, ...]) -> None:
        self._room = room
        self._period = period
        self._fn = fn
        self._args = args
        self._handle: asyncio.TimerHandle | None = None
        self.cancelled = False

    def _arm(self, when: float) -> None:
        loop = self._room._games.loop
        self._handle = loop.call_at(when, self._fire, when)

    def _fire(self, when: float) -> None:
        room = self._room
        if self._period is None:
            room._timers.discard(self)
            self.cancelled = True
        else:
            # From the deadline, not from now: the rate holds when a callback is slow;
            # deadlines missed meanwhile are skipped, never run back to back.
            now = room._games.loop.time()
            nxt = when + self._period
            if nxt <= now:
                nxt += (int((now - nxt) / self._period) + 1) * self._period
            self._arm(nxt)
        room._call("timer", self._fn, *self._args)

    def cancel(self) -> None:
        """Stop the timer (nothing happens if it fired or was cancelled)."""
        self.cancelled = True
        self._room._timers.discard(self)
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class Player:
    """A client in a game room, as the room sees it, on whatever node it is connected.

    Attributes:
        id: The client's connection id.
        claims: What ``authorize`` returned for it; for a client connected to another
            node, its JSON form (None when it had none or it is not JSON-able).
        options: The options of its join (a dict).
        data: A dict of the app's own, for the player's stay in the room.
        node: The key of the node it is connected to ("" for this node).
    """

    __slots__ = ("_conn", "_room", "busy", "claims", "data", "id", "node", "options",
                 "queue")

    def __init__(self, room: GameRoom, id: str, claims: Any, options: dict[str, Any],
                 node: str = "", conn: Any = None) -> None:
        self._room = room
        self._conn = conn
        self.id = id
        self.claims = claims
        self.options = options
        self.data: dict[str, Any] = {}
        self.node = node
        # Its messages waiting behind an async handler of its own (owner side).
        self.busy = False
        self.queue: list[Any] | None = None

    def __repr__(self) -> str:
        return f"<roomer.Player {self.id} in {self._room.id}>"

    def send(self, event: str, payload: Payload = b"") -> None:
        """Send a server-originated message to this player, in the room. Loop thread
        only."""
        self._room.send(self, event, payload)

    def leave(self) -> None:
        """Take this player out of the room (the room decides: ``on_left`` gets
        consented False). Loop thread only."""
        self._room._games.remove_player(self._room, self)


def is_window(value: object) -> bool:
    """Whether ``value`` is a dropped player's window: finite seconds, 0 or more."""
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value) and value >= 0)


class GameRoom:
    """Base class of an app's game room type (docs: the game rooms guide).

    Subclass it, set class attributes (``max_clients``, ``tick_rate``, ``auto_dispose``)
    and define the hooks you need (``on_create``, ``on_join``, ``on_joined``, ``on_left``,
    ``on_tick``, ``on_dispose``) and message handlers (`roomer.on_message`); register
    it with ``server.define(name, cls, ...)``. roomer makes the instances: one per room, on
    the node that owns it. Keep the game's state in attributes of your own (set them in
    ``on_create``). Its methods run on the server's loop thread only.

    Attributes:
        id: The room's id (``type:suffix``).
        type: Its type name.
        namespace: Its namespace (a `roomer.Namespace`).
        players: The joined players by id, in join order.
        ticks: Ticks run so far.
    """

    #: Seats (None: no limit); joined, joining and reserved seats count.
    max_clients: int | None = None
    #: on_tick calls a second (None: no tick), 1 to 60.
    tick_rate: float | None = None
    #: Dispose the room when its last seat frees.
    auto_dispose: bool = True
    #: Seconds a player whose connection drops keeps its seat for a resume (None: the
    #: server's ``resume_window``; 0: it leaves at once). A player in several rooms is
    #: held for the shortest of theirs.
    resume_window: float | None = None

    id: str
    type: str
    namespace: Namespace[Any]
    players: dict[str, Player]
    ticks: int
    # roomer's own state of the room (set by _bind)
    _games: Games
    _state: int
    _joining: dict[str, Player]
    _reserved: dict[str, asyncio.TimerHandle]
    _metadata: dict[str, Any]
    _locked: bool
    _private: bool
    _unlisted: bool
    _timers: set[Timer]
    _last_tick: float
    _ticking: bool
    _handlers: dict[str, Callable[..., Any]]
    _created_at: float
    _claimed: bool

    # hooks (the app overrides those it needs) --------------------------------------------

    def on_create(self, options: dict[str, Any]) -> Any:
        """The room is created with the creator's options; raise roomer.Deny to refuse
        (the creator gets ``create_denied``)."""

    def on_join(self, player: Player) -> Any:
        """A client asks for a seat (its seat counts already); raise roomer.Deny to refuse
        (``join_denied`` with the text)."""

    def on_joined(self, player: Player) -> Any:
        """The player is in: its join was answered."""

    def on_left(self, player: Player, consented: bool) -> Any:
        """The player left: ``consented`` when it asked to, False when it disconnected,
        its node died or the room removed it."""

    def on_tick(self, dt: float) -> Any:
        """Every ``1 / tick_rate`` seconds; ``dt`` is the real time since the last one."""

    def on_dispose(self) -> Any:
        """The room ends (its last seat freed, ``close()``, shutdown)."""

    def on_drop(self, player: Player) -> float | None:
        """The player's connection dropped and its session is held for a resume: return
        how many seconds it keeps its seat here (more or less than ``resume_window``; 0:
        it leaves now), or None for ``resume_window``. Sync only; runs on the room's
        node (a player on another node holds the type's window until the answer)."""
        return None

    # what the room can do -------------------------------------------------------------------

    @property
    def clients(self) -> int:
        """Seats joined and being joined."""
        return len(self.players) + len(self._joining)

    @property
    def reserved(self) -> int:
        """Seats reserved (by `reserve`) and not joined yet."""
        return len(self._reserved)

    @property
    def locked(self) -> bool:
        """Whether the room takes no new player (locked by the app, or full)."""
        return self._locked or self._full()

    def lock(self) -> None:
        """Take no new player (reserved seats still join) until `unlock`."""
        if not self._locked:
            self._locked = True
            self._changed()

    def unlock(self) -> None:
        """Take players again (a full room stays locked until a seat frees)."""
        if self._locked:
            self._locked = False
            self._changed()

    @property
    def metadata(self) -> Mapping[str, Any]:
        """The room's metadata, as listed (read-only; `set_metadata` changes it)."""
        return MappingProxyType(self._metadata)

    def set_metadata(self, **values: Any) -> None:
        """Merge ``values`` into the metadata (None removes a key).

        Raises:
            ValueError: the metadata would not be JSON-able within
                ``max_room_metadata`` bytes (nothing is changed then).
        """
        merged = dict(self._metadata)
        for key, value in values.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        self._games.check_metadata(merged)
        self._metadata = merged
        self._changed()

    @property
    def private(self) -> bool:
        """A private room is joined by id only: never listed, never matched."""
        return self._private

    @private.setter
    def private(self, value: bool) -> None:
        self._private = bool(value)
        self._changed()

    @property
    def unlisted(self) -> bool:
        """An unlisted room is not in the room list; join-or-create may still pick it."""
        return self._unlisted

    @unlisted.setter
    def unlisted(self, value: bool) -> None:
        self._unlisted = bool(value)
        self._changed()

    def set_max_clients(self, seats: int | None) -> None:
        """Change the number of seats (None: no limit); a room full before and not now
        unlocks.

        Raises:
            ValueError: ``seats`` is not a positive int or None.
        """
        from .types import check_seats
        check_seats(seats)
        self.max_clients = seats
        self._changed()

    def set_tick_rate(self, rate: float | None) -> None:
        """Tick ``rate`` times a second from now on (None: stop ticking).

        Raises:
            ValueError: ``rate`` is not between 1 and 60, or None.
        """
        from .types import check_tick_rate
        check_tick_rate(rate)
        self.tick_rate = rate
        ticker = self._games.ticker
        ticker.remove(self)
        if rate is not None and self._state == OPEN:
            ticker.add(self)

    def broadcast(self, event: str, payload: Payload = b"",
                  exclude: Player | str | None = None) -> None:
        """Send a server-originated message to every member, on every node (encoded once
        per node). Loop thread only."""
        self._games.broadcast(self, event, payload,
                              exclude.id if isinstance(exclude, Player) else exclude)

    def send(self, player: Player | str, event: str, payload: Payload = b"") -> None:
        """Send a server-originated message to one member. Loop thread only."""
        target = self.players.get(player) if isinstance(player, str) else player
        if target is not None:
            self._games.send(self, target, event, payload)

    def reserve(self, ids: str | list[str], seconds: float | None = None) -> bool:
        """Hold a seat for each id (a client id, or a party's) for ``seconds``
        (``seat_reservation`` by default): it counts toward capacity, its client's join
        consumes it (even in a locked or full room) and it is released on expiry. All or
        none.

        Returns:
            False when they do not all fit (nothing is reserved then).
        """
        return self._games.reserve(self, [ids] if isinstance(ids, str) else list(ids),
                                   seconds)

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """Call ``fn(*args)`` (sync or async) in ``delay`` seconds, unless the room ends
        first or the timer is cancelled."""
        timer = Timer(self, None, fn, args)
        timer._arm(self._games.loop.time() + max(0.0, float(delay)))
        self._timers.add(timer)
        return timer

    def call_every(self, period: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """Call ``fn(*args)`` every ``period`` seconds until cancelled or the room ends.

        Raises:
            ValueError: ``period`` is not a positive number.
        """
        if not period > 0:
            raise ValueError("period must be a positive number of seconds")
        timer = Timer(self, float(period), fn, args)
        timer._arm(self._games.loop.time() + period)
        self._timers.add(timer)
        return timer

    def close(self, reason: str = "") -> None:
        """End the room now: its members get ``room.closed`` (code ``closed``, ``reason``
        as the message) and are taken out, then ``on_dispose`` runs. Loop thread only."""
        self._games.dispose(self, "closed", reason)

    def __repr__(self) -> str:
        return f"<roomer.GameRoom {getattr(self, 'id', '?')}>"

    # roomer's side -----------------------------------------------------------------------------

    def _bind(self, games: Games, namespace: Namespace[Any], type_name: str, room_id: str,
              settings: Mapping[str, Any]) -> None:
        self._games = games
        self.namespace = namespace
        self.type = type_name
        self.id = room_id
        self.players = {}
        self.ticks = 0
        self.max_clients = settings["max_clients"]
        self.tick_rate = settings["tick_rate"]
        self.auto_dispose = settings["auto_dispose"]
        self._state = CREATING
        self._joining = {}
        self._reserved = {}
        self._metadata = {}
        self._locked = False
        self._private = False
        self._unlisted = False
        self._timers = set()
        self._last_tick = 0.0
        self._ticking = False
        self._handlers = handlers_of(type(self))
        self._created_at = time.time()  # wall clock: listings compare across nodes
        self._claimed = False

    def _taken(self) -> int:
        return len(self.players) + len(self._joining) + len(self._reserved)

    def _full(self) -> bool:
        return self.max_clients is not None and self._taken() >= self.max_clients

    def _changed(self) -> None:
        if self._state == OPEN:
            self._games.changed(self)

    def _admit(self, player: Player) -> Awaitable[None] | None:
        """Give ``player`` a joining seat and run on_join; raise SeatRefused. An
        awaitable when on_join is async (its refusal frees the seat and raises)."""
        if self._state != OPEN:
            raise SeatRefused("no_such_room", "no such room")
        if player.id in self.players or player.id in self._joining:
            raise _AlreadyIn()
        reserved = self._reserved.pop(player.id, None)
        if reserved is not None:
            reserved.cancel()  # a seat being joined never expires
        elif self._full():
            raise SeatRefused("room_full", "the room is full")
        elif self._locked:
            raise SeatRefused("room_locked", "the room is locked")
        self._joining[player.id] = player
        self._changed()
        try:
            result = self.on_join(player)
        except Exception as exc:
            self._unseat(player)
            raise _refusal(exc, "join_denied", "on_join") from None
        if inspect.isawaitable(result):
            return self._admit_later(player, result)
        return None

    async def _admit_later(self, player: Player, pending: Awaitable[Any]) -> None:
        try:
            await pending
        except Exception as exc:
            self._unseat(player)
            raise _refusal(exc, "join_denied", "on_join") from None
        if self._state != OPEN or self._joining.get(player.id) is not player:
            raise SeatRefused("no_such_room", "the room ended during the join")

    def _unseat(self, player: Player) -> None:
        """A joining seat is given up (refused, aborted)."""
        if self._joining.get(player.id) is player:
            del self._joining[player.id]
            self._changed()
            self._games.maybe_dispose(self)

    def _confirm(self, player: Player) -> None:
        """The joining player is in the room on its node: joined, then on_joined."""
        if self._joining.get(player.id) is not player:
            return
        del self._joining[player.id]
        self.players[player.id] = player
        self._changed()
        self._call("on_joined", self.on_joined, player)

    def _left(self, player_id: str, consented: bool) -> None:
        """A member (or a joining player) is out of the room on its node."""
        joining = self._joining.get(player_id)
        if joining is not None:
            self._unseat(joining)
            return
        player = self.players.pop(player_id, None)
        if player is None:
            return
        self._changed()
        self._call("on_left", self.on_left, player, consented)
        self._games.maybe_dispose(self)

    def _tick(self, now: float) -> None:
        if self._ticking:
            self._games.metrics.counters["game_ticks_skipped"] += 1
            return
        dt = now - self._last_tick
        self._last_tick = now
        self.ticks += 1
        try:
            result = self.on_tick(dt)
        except Exception:
            log.exception("on_tick of %s raised", self.id)
            return
        if inspect.isawaitable(result):
            self._ticking = True
            self._games.core.spawn(self._tick_later(result))

    async def _tick_later(self, pending: Awaitable[Any]) -> None:
        try:
            await pending
        except Exception:
            log.exception("on_tick of %s raised", self.id)
        finally:
            self._ticking = False

    def _drop_window(self, player: Player) -> float | None:
        """What ``on_drop`` says for ``player`` (None: nothing, or nothing usable)."""
        try:
            window = self.on_drop(player)
        except Exception:
            log.exception("on_drop of %s raised", self.id)
            return None
        if inspect.isawaitable(window):
            if inspect.iscoroutine(window):
                window.close()
            log.error("on_drop of %s is async: it must return its seconds at once", self.id)
            return None
        if window is None:
            return None
        if not is_window(window):
            log.error("on_drop of %s returned %r: seconds (0 or more) or None", self.id,
                      window)
            return None
        return float(window)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        """Run a hook or timer that cannot refuse: what it raises is logged; async, it
        runs as a supervised task."""
        try:
            result = fn(*args)
        except Exception:
            log.exception("%s of %s raised", what, self.id)
            return
        if inspect.isawaitable(result):
            self._games.core.spawn(_logged(result, what, self.id))


class _AlreadyIn(Exception):
    """The player holds a seat already: its join needs no new one."""


def _refusal(exc: Exception, code: str, hook: str) -> SeatRefused:
    if isinstance(exc, SeatRefused):
        return exc
    if isinstance(exc, Deny):
        return SeatRefused(code, str(exc) or "denied")
    log.error("%s raised", hook, exc_info=exc)
    return SeatRefused(code, "internal error")


async def _logged(pending: Awaitable[Any], what: str, room_id: str) -> None:
    try:
        await pending
    except Exception:
        log.exception("%s of %s raised", what, room_id)


def handlers_of(cls: type) -> dict[str, Callable[..., Any]]:
    """The message handlers a GameRoom subclass marked with `on_message`, by event
    (a subclass's own override its bases')."""
    found: dict[str, Callable[..., Any]] = {}
    for klass in reversed(cls.__mro__):
        for value in vars(klass).values():
            event = getattr(value, "_roomer_event", None)
            if event is not None:
                found[event] = value
    return found


def claims_json(claims: Any) -> Any:
    """``claims`` as they cross to another node: JSON-able as they are, else None."""
    if claims is None:
        return None
    try:
        json.dumps(claims)
    except (TypeError, ValueError):
        return None
    return claims


def message_of(room_id: str, event: str, src: str, payload: bytes) -> Message:
    from ..message import Message
    return Message(room_id, event, "", src, payload)
