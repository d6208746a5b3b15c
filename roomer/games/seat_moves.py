"""Game seats of a session that moves to another node (roomer/session_moves.py): the
player keeps its seat, and what the room's owner sends it (``player.send``, answers, its
removal, the room's end) reaches it once, in order, on its new node.

Three nodes may be involved: the holder A (the session's node until the move), the
claimer B (its node after), and the room's owner, which may be either of them or a third
node C.

- **Owner A.** A turns the player into one on B in the loop turn of its cut: what the room
  sends it after goes to B through the games channel, behind the handover (one publisher,
  one broker).
- **Owner C.** Before B says it is ready, it asks C to hold back what C sends the player
  (a "freeze"); what C sent before reached A before B's ready (one broker), so A hands it
  over with the rest. Once the player is B's, B tells C it moved, and C sends it what it
  held back, then goes on sending to B. A move that fails tells C to go on with A; C lets
  go by itself after ``2 * MOVE_TIMEOUT``.
- **Owner B.** B holds back its own sends to the player while the move runs, and makes
  the player local once it is in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from .room import OPEN

if TYPE_CHECKING:
    from ..connection import Connection
    from .manager import Games
    from .room import GameRoom, Player

__all__ = ["SeatMoves"]

#: Seconds an owner holds back what it sends a moving player at most.
FREEZE_LIMIT = 10.0


class _Held:
    __slots__ = ("player", "sends", "timer")

    def __init__(self, player: Player | None, timer: asyncio.TimerHandle) -> None:
        self.player = player
        self.timer = timer
        self.sends: list[Callable[[], None]] = []


class SeatMoves:
    """The seats of sessions moving in and out of this node (loop thread only)."""

    def __init__(self, games: Games) -> None:
        self.games = games
        # (namespace, room, client) -> what the room sends that player, held back.
        self._held: dict[tuple[str, str, str], _Held] = {}

    def seats(self, conn: Connection) -> list[list[str]]:
        """``[namespace, room, owner key]`` of each game room ``conn`` is in."""
        games = self.games
        out: list[list[str]] = []
        if not games.active or games.link is None:
            return out
        for name, ns in games.core.namespaces.items():
            for room in ns.registry.rooms_of(conn) or ():
                if games.room_type(name, room) is None:
                    continue
                owner = games.link.node if (name, room) in games.rooms \
                    else games.remote.get((name, room))
                if owner is not None:
                    out.append([name, room, owner])
        return out

    # the holder ----------------------------------------------------------------------

    def moved_out(self, conn: Connection, seats: list[list[str]], to: str) -> None:
        """At the cut (``conn`` out of its rooms here already): the players of rooms owned
        here are on node ``to`` now; rooms owned elsewhere are forgotten if nobody here
        is in them any more."""
        games = self.games
        for name, room, _ in seats:
            local = games.rooms.get((name, room))
            if local is not None:
                player = local.players.get(conn.id)
                if player is not None:
                    player._conn = None
                    player.node = to
            else:
                ns = games.core.namespaces.get(name)
                if ns is not None:
                    games._forget_remote(ns, room)

    # the owner -----------------------------------------------------------------------

    def freeze(self, namespace: str, room: str, client: str) -> bool:
        """Hold back what room ``room`` sends ``client``, which is moving between nodes."""
        key = (namespace, room, client)
        if key not in self._held:
            local = self.games.rooms.get((namespace, room))
            self._held[key] = _Held(
                None if local is None else local.players.get(client),
                self.games.loop.call_later(FREEZE_LIMIT, self.thaw, namespace, room, client,
                                           None))
        return True

    def held_back(self, room: GameRoom, player: Player, send: Callable[[], None]) -> bool:
        """Whether ``send`` (to ``player``, on another node) waits for its move to end."""
        if not self._held:
            return False
        held = self._held.get((room.namespace.name, room.id, player.id))
        if held is None:
            return False
        held.sends.append(send)
        return True

    def thaw(self, namespace: str, room: str, client: str, node: str | None,
             conn: Connection | None = None) -> None:
        """The move of ``client`` ended: it is on ``node`` now (``conn``, this node's
        connection, for this node; None: it did not move), and what was held back goes
        there."""
        held = self._held.pop((namespace, room, client), None)
        if held is None:
            return
        held.timer.cancel()
        games = self.games
        player = held.player
        if player is not None and node is not None:
            # (Even if the room let it go meanwhile: its removal, held back, goes there.)
            player._conn = conn
            player.node = node
            local = games.rooms.get((namespace, room))
            if (local is None or local._state != OPEN) and conn is None \
                    and games.link is not None:
                # The room ended meanwhile: its end, sent to the old node, goes here too.
                games.link.closed(node, namespace, room, "closed", "the room ended",
                                  [client])
        for send in held.sends:
            send()

    # the claimer ---------------------------------------------------------------------

    async def hold(self, seats: list[list[str]], origin: str, client: str) -> bool:
        """Before the claimer says it is ready: the owners other than the holder hold back
        what they send ``client``. False if one could not be asked."""
        link = self.games.link
        if link is None:
            return not seats
        for name, room, owner in seats:
            if owner == link.node:
                self.freeze(name, room, client)
            elif owner != origin and not await link.request_freeze(owner, name, room, client):
                return False
        return True

    def release(self, seats: list[list[str]], origin: str, client: str) -> None:
        """The move failed: the owners asked to hold back go on with the holder."""
        link = self.games.link
        if link is None:
            return
        for name, room, owner in seats:
            if owner == link.node:
                self.thaw(name, room, client, None)
            elif owner != origin:
                link.moved(owner, name, room, client, "")

    def moved_in(self, conn: Connection, seats: list[list[str]], origin: str) -> None:
        """``conn`` is the moved session (in its rooms here already): its seats follow."""
        games = self.games
        link = games.link
        if link is None:
            return
        for name, room, owner in seats:
            if owner == link.node:
                self.thaw(name, room, conn.id, "", conn)
                continue
            games.remote[(name, room)] = owner
            if owner != origin:
                link.moved(owner, name, room, conn.id, link.node)
