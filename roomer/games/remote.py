"""What other nodes send the game rooms of this server (docs/design.md §10): the
`roomer.backplane.games.GamesSide` of the server's `roomer.games.manager.Games`, handed to
its `GameLink`. Requests about rooms owned here (joins, confirmations, leaves, messages,
reservations, syncs), what owners send this node's members (answers, sends, removals,
closes), listings, and node liveness.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import codec
from .listing import RoomListing
from .room import OPEN, Player, SeatRefused, _AlreadyIn

if TYPE_CHECKING:
    from ..connection import Connection
    from ..namespaces import Namespace
    from .manager import Games

__all__ = ["FromOtherNodes"]


class FromOtherNodes:
    """The cluster's side of one server's game rooms (loop thread only)."""

    def __init__(self, games: Games) -> None:
        self.games = games

    def _conn(self, namespace: str, client: str) -> tuple[Namespace[Any] | None,
                                                           Connection | None]:
        ns = self.games.core.namespaces.get(namespace)
        if ns is None:
            return None, None
        conn = ns.registry.conns.get(client)
        # (A held session takes what is sent to it, for its resume.)
        return ns, conn if conn is not None and (conn.inbound.open or conn.held) else None

    async def remote_join(self, origin: str, namespace: str, room: str, client: str,
                          claims: Any, options: dict[str, Any]) -> None:
        """A node asks a seat for its client in a room owned here (SeatRefused)."""
        local = self.games.rooms.get((namespace, room))
        if self.games._stopping:
            raise SeatRefused("room_unavailable", "the room's server is shutting down")
        if local is None or local._state != OPEN:
            raise SeatRefused("no_such_room", "no such room")
        player = Player(local, client, claims, options, origin, None)
        try:
            pending = local._admit(player)
        except _AlreadyIn:
            return
        if pending is not None:
            await pending

    def remote_confirm(self, origin: str, namespace: str, room: str, client: str,
                       abort: bool) -> None:
        local = self.games.rooms.get((namespace, room))
        player = local._joining.get(client) if local is not None else None
        if player is None or player.node != origin:
            if not abort and (local is None or client not in local.players):
                # In the room on its node, but the room ended (or forgot it) meanwhile.
                self.games.link.closed(origin, namespace, room, "closed", "the room ended",
                                 [client])
            return
        assert local is not None
        if abort:
            local._unseat(player)
        else:
            local._confirm(player)

    def remote_left(self, origin: str, namespace: str, room: str, client: str,
                    consented: bool) -> None:
        local = self.games.rooms.get((namespace, room))
        if local is None:
            return
        player = local.players.get(client) or local._joining.get(client)
        if player is not None and player.node == origin:
            local._left(client, consented)

    def remote_message(self, origin: str, namespace: str, room: str, client: str,
                       event: str, ask: int, payload: bytes) -> None:
        local = self.games.rooms.get((namespace, room))
        player = local.players.get(client) if local is not None else None
        if local is None or player is None or player.node != origin:
            self.games.link.answer(origin, namespace, room, client, event, ask, "not_member",
                             "join the room before sending to it")
            return
        self.games.deliver(local, player, event, payload, ask)

    def remote_answer(self, namespace: str, room: str, client: str, event: str, ask: int,
                      code: str | None, payload: bytes) -> None:
        _, conn = self._conn(namespace, client)
        if conn is not None:
            self.games.answer_local(conn, namespace, room, event, ask, code,
                              payload if code is None else payload.decode())

    def remote_send(self, namespace: str, room: str, client: str, event: str,
                    payload: bytes) -> None:
        ns, conn = self._conn(namespace, client)
        if ns is not None and conn is not None:
            ns.registry.send(conn, codec.encode_frame(room, event, "", "", payload))

    def remote_remove(self, namespace: str, room: str, client: str) -> None:
        ns, conn = self._conn(namespace, client)
        if ns is not None and conn is not None:
            ns.registry.remove_member(conn, room, ack=True)

    def remote_closed(self, namespace: str, room: str, code: str, message: str,
                      ids: list[str] | None) -> None:
        ns = self.games.core.namespaces.get(namespace)
        if ns is None:
            return
        members = ns.registry.rooms.get(room) or {}
        for conn in list(members.values()):
            if ids is None or conn.id in ids:
                self.games._close_out(conn, ns, room, code, message)
        self.games._forget_remote(ns, room)

    def remote_reserve(self, namespace: str, room: str, ids: list[str],
                       seconds: float | None) -> bool:
        local = self.games.rooms.get((namespace, room))
        return local is not None and self.games.reserve(local, ids, seconds)

    def remote_sync(self, origin: str, rooms: list[tuple[str, str, list[str]]]) -> None:
        """``origin`` (back after an outage or a pause) holds these members in rooms
        owned here: its players that it does not hold leave; those it holds that a room
        does not count are closed out there; a seat being joined that it holds is in (its
        confirmation was lost), one it does not hold is freed (its abort was lost; a join
        in flight meanwhile is closed out when its confirmation comes)."""
        held = {(ns, room): set(ids) for ns, room, ids in rooms}
        for key, local in list(self.games.rooms.items()):
            mine = held.get(key, set())
            for player_id, player in list(local.players.items()):
                if player.node == origin and player_id not in mine:
                    local._left(player_id, False)
            for player_id, player in list(local._joining.items()):
                if player.node == origin:
                    if player_id in mine:
                        local._confirm(player)
                    else:
                        local._unseat(player)
        for (ns, room), ids in held.items():
            found = self.games.rooms.get((ns, room))
            if found is None or found._state != OPEN:
                self.games.link.closed(origin, ns, room, "owner_lost",
                                 "the room ended while its server was away", None)
                continue
            unknown = [i for i in ids if i not in found.players and i not in found._joining]
            if unknown:
                self.games.link.closed(origin, ns, room, "owner_lost",
                                 "the room lost this player while its server was away",
                                 unknown)

    def remote_dropped(self, origin: str, namespace: str, room: str, client: str) -> None:
        """A player of a room owned here dropped on its node: the room's on_drop says
        how long it is held, if it says anything."""
        local = self.games.rooms.get((namespace, room))
        player = None if local is None else local.players.get(client)
        if local is None or player is None or player.node != origin:
            return
        window = local._drop_window(player)
        if window is not None:
            self.games.link.window(origin, namespace, room, client, window)

    def remote_window(self, namespace: str, room: str, client: str, seconds: float) -> None:
        self.games.core.sessions.rewindow(client, (namespace, room), seconds)

    def remote_freeze(self, namespace: str, room: str, client: str) -> bool:
        """A node takes over the session of ``client``, a player of a room owned here."""
        return self.games.seat_moves.freeze(namespace, room, client)

    def remote_moved(self, namespace: str, room: str, client: str, to: str | None) -> None:
        self.games.seat_moves.thaw(namespace, room, client, to)

    def listings(self, origin: str, entries: list[list[Any]], full: bool) -> None:
        """Listings of rooms ``origin`` owns (``full``: all of them)."""
        node_id = origin.rpartition(":")[0]
        seen: set[tuple[str, str]] = set()
        for entry in entries:
            (ns, room_id, type_name, clients, max_clients, locked, private, unlisted,
             metadata, reserved, created) = entry
            key = (ns, room_id)
            seen.add(key)
            if key in self.games.rooms:
                continue  # ours (a late word of an owner that lost it)
            self.games.replica.put(key, RoomListing(
                room_id, type_name, clients, max_clients, locked, private, unlisted,
                metadata, ns, node_id, reserved, created), origin)
            self.games.watches.changed(key, type_name)
            for waiter in self.games._awaited.pop(key, ()):
                if not waiter.done():
                    waiter.set_result(None)
        if full:
            for key in list(self.games.replica.by_owner.get(origin, ())):
                if key not in seen:
                    gone = self.games.replica.drop(key)
                    if gone is not None:
                        self.games.watches.changed(key, gone.type)

    def unlisted(self, origin: str, keys: list[tuple[str, str]]) -> None:
        for key in keys:
            if self.games.replica.owners.get(key) == origin:
                gone = self.games.replica.drop(key)
                if gone is not None:
                    self.games.watches.changed(key, gone.type)

    def own_listings(self, keys: list[tuple[str, str]] | None
                     ) -> tuple[list[list[Any]], list[list[str]]]:
        """The wire listings of rooms owned here (``keys``; every room for None), and the
        keys of those that ended."""
        entries: list[list[Any]] = []
        gone: list[list[str]] = []
        for key in list(self.games.rooms) if keys is None else keys:
            room = self.games.rooms.get(key)
            if room is None or room._state != OPEN:
                gone.append(list(key))
                continue
            entries.append([key[0], room.id, room.type, room.clients, room.max_clients,
                            room.locked, room._private, room._unlisted, room._metadata,
                            len(room._reserved), room._created_at])
        return entries, gone

    def held_in(self, owner: str) -> list[tuple[str, str, list[str]]]:
        """This node's members of the rooms ``owner`` owns."""
        held = []
        for (namespace, room), key in list(self.games.remote.items()):
            ns = self.games.core.namespaces.get(namespace)
            if key == owner and ns is not None:
                held.append((namespace, room, list(ns.registry.rooms.get(room) or ())))
        return held

    def node_lost(self, key: str) -> None:
        """A node died (or left): its rooms end for the members here, and its players
        leave the rooms owned here."""
        for listing in self.games.replica.drop_owner(key):
            self.games.watches.changed((listing.namespace, listing.id), listing.type)
        for (namespace, room), owner in list(self.games.remote.items()):
            ns = self.games.core.namespaces.get(namespace)
            if owner == key and ns is not None:
                self.games._close_members(ns, room, "owner_lost", "the room's server is gone")
        for local in list(self.games.rooms.values()):
            for player_id, player in list(local.players.items()):
                if player.node == key:
                    local._left(player_id, False)
            for player in list(local._joining.values()):
                if player.node == key:
                    local._unseat(player)

    def restarted(self) -> None:
        """The cluster declared this node dead: the others ended its rooms and dropped
        its members from theirs. So does this node."""
        for local in list(self.games.rooms.values()):
            self.games.dispose(local, "owner_lost", "this server lost the cluster")
        for (namespace, room) in list(self.games.remote):
            ns = self.games.core.namespaces.get(namespace)
            if ns is not None:
                self.games._close_members(ns, room, "owner_lost", "this server lost the cluster")
