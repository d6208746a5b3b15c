"""Who is connected and who is in which room, with the presence messages membership
changes send (DESIGN §2), here and, with a backplane, on the other nodes. No socket I/O:
frames go to the fan-out engine and to the cluster.

Acks and presence are control frames: never dropped to make room (a client awaiting
its join_ack must get it); a receiver that cannot take them is cut off instead.

With a backplane (``cluster`` set, a :class:`roomer.backplane.Cluster`) the registry is
also the cluster's :class:`~roomer.backplane.ClusterEvents`: what other nodes publish
into a room reaches this node's members of it, their members appear in member lists,
and their joins and leaves are presence here.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from . import codec

if TYPE_CHECKING:
    from .backplane import Cluster
    from .server import Connection

__all__ = ["CLOSING", "CONNECTING", "GONE", "OPEN", "ROOT", "Registry"]

ROOT = "root"

# A connection's life: on_connect runs, accepted, closing (nothing more of it is
# handled), disconnected (out of every room).
CONNECTING, OPEN, CLOSING, GONE = range(4)


class Registry:
    """Connections by id and rooms by name; a room is a dict id -> Connection in join
    order (the fan-out engine iterates it directly). An empty room is deleted."""

    __slots__ = ("_listings", "cluster", "conns", "engine", "rooms", "root_presence")

    def __init__(self, root_presence: bool) -> None:
        self.root_presence = root_presence
        self.conns: dict[str, Connection] = {}
        self.rooms: dict[str, dict[str, Connection]] = {}
        self.engine: Any = None  # the fan-out engine, set when the server starts
        self.cluster: Cluster | None = None  # set when the server starts with a backplane
        # The JSON member list of a room, kept until its membership changes: re-joins
        # (and joins into a big, stable room) do not re-encode it each time.
        self._listings: dict[str, str] = {}

    def quiet(self, room: str) -> bool:
        """Root sends no presence unless root_presence (O(N²) in a connect storm)."""
        return room == ROOT and not self.root_presence

    # connections --------------------------------------------------------------------

    def accept(self, conn: Connection) -> None:
        self.conns[conn.id] = conn
        if self.cluster is not None:
            self.cluster.local_connected(conn.id)

    def drop(self, conn: Connection) -> list[str]:
        """``conn`` is gone: out of every room (no acks); the rooms it was in."""
        left = list(conn._rooms)
        for room in left:
            self.remove_member(conn, room, ack=False)
        del self.conns[conn.id]
        if self.cluster is not None:
            self.cluster.local_disconnected(conn.id)
        return left

    # membership -----------------------------------------------------------------------

    def members(self, room: str) -> list[str]:
        """Ids of ``room``'s members here, then on the other nodes."""
        local = list(self.rooms.get(room, ()))
        if self.cluster is not None and local:
            local += self.cluster.remote_members(room)
        return local

    def _listing(self, room: str) -> str:
        listing = self._listings.get(room)
        if listing is None:
            listing = self._listings[room] = json.dumps(self.members(room))
        return listing

    def add_member(self, conn: Connection, room: str) -> Awaitable[None] | None:
        """Put ``conn`` in ``room``: join_ack to it, new_member to the others if it was
        not there yet (a re-join re-sends the join_ack only). With a backplane, the first
        member of a room on this node waits (an awaitable is returned) until the other
        nodes' members are known, so its join_ack lists them."""
        members = self.rooms.get(room)
        if members is None or conn.id not in members:
            cluster = self.cluster
            if cluster is not None:
                cluster.local_joined(room, conn.id)
                if not cluster.ready(room):
                    return self._add_when_ready(conn, room)
        self._add_now(conn, room)
        return None

    async def _add_when_ready(self, conn: Connection, room: str) -> None:
        assert self.cluster is not None
        await self.cluster.room_ready(room)
        if conn._state == OPEN:
            self._add_now(conn, room)
        elif room not in conn._rooms:
            self.cluster.local_left(room, conn.id)  # gone while the others were asked

    def _add_now(self, conn: Connection, room: str) -> None:
        members = self.rooms.get(room)
        if members is None:
            members = self.rooms[room] = {}
        quiet = self.quiet(room)
        fresh = conn.id not in members
        if fresh:
            members[conn.id] = conn
            conn._rooms[room] = None
            self._listings.pop(room, None)
        listed = json.dumps([conn.id]) if quiet else self._listing(room)
        conn.send_control(codec.encode_frame(room, "join_ack", "", conn.id, listed))
        if fresh and not quiet:
            self.engine.broadcast_control(
                members, codec.encode_frame(room, "new_member", "", "", conn.id), conn)

    def remove_member(self, conn: Connection, room: str, *, ack: bool) -> None:
        """Take ``conn`` out of ``room``: leave_ack to it when ``ack``, member_left to
        the rest (here and on the other nodes) if it was a member."""
        members = self.rooms.get(room)
        was_member = members is not None and members.pop(conn.id, None) is not None
        conn._rooms.pop(room, None)
        if ack:
            conn.send_control(codec.encode_frame(room, "leave_ack", "", conn.id, conn.id))
        if not was_member or members is None:
            return
        self._listings.pop(room, None)
        if self.cluster is not None:
            self.cluster.local_left(room, conn.id)
        if not members:
            del self.rooms[room]
        elif not self.quiet(room):
            self.engine.broadcast_control(
                members, codec.encode_frame(room, "member_left", "", "", conn.id))

    # sending across nodes -------------------------------------------------------------

    def publish_room(self, room: str, frame: bytes, exclude: str | None) -> None:
        """After the local fan-out of a room broadcast: the other nodes' members too."""
        if self.cluster is not None:
            self.cluster.publish_room(room, frame, exclude)

    def publish_all(self, frame: bytes, exclude: str | None) -> None:
        if self.cluster is not None:
            self.cluster.publish_all(frame, exclude)

    # what other nodes publish (roomer.backplane.ClusterEvents) ------------------------

    def remote_frame(self, room: str, frame: bytes, exclude: str | None) -> None:
        members = self.rooms.get(room)
        if members:
            self.engine.broadcast(members, frame, self.conns.get(exclude) if exclude else None)

    def remote_frame_all(self, frame: bytes, exclude: str | None) -> None:
        self.engine.broadcast(self.conns, frame, self.conns.get(exclude) if exclude else None)

    def remote_direct(self, member: str, frame: bytes) -> bool:
        conn = self.conns.get(member)
        if conn is None or conn._state != OPEN:
            return False
        conn.send_frame(frame)
        return True

    def remote_joined(self, room: str, member: str) -> None:
        self._presence(room, "new_member", member)

    def remote_left(self, room: str, member: str) -> None:
        self._presence(room, "member_left", member)

    def _presence(self, room: str, event: str, member: str) -> None:
        self._listings.pop(room, None)
        members = self.rooms.get(room)
        if members and not self.quiet(room):
            self.engine.broadcast_control(
                members, codec.encode_frame(room, event, "", "", member))
