"""Who is connected and who is in which room, with the presence messages membership
changes send (DESIGN §2). No socket I/O: frames go to the fan-out engine.

Acks and presence are control frames: never dropped to make room (a client awaiting
its join_ack must get it); a receiver that cannot take them is cut off instead.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from . import codec

if TYPE_CHECKING:
    from .server import Connection

__all__ = ["ROOT", "Registry"]

ROOT = "root"


class Registry:
    """Connections by id and rooms by name; a room is a dict id -> Connection in join
    order (the fan-out engine iterates it directly). An empty room is deleted."""

    __slots__ = ("_listings", "conns", "engine", "rooms", "root_presence")

    def __init__(self, root_presence: bool) -> None:
        self.root_presence = root_presence
        self.conns: dict[str, Connection] = {}
        self.rooms: dict[str, dict[str, Connection]] = {}
        self.engine: Any = None  # the fan-out engine, set when the server starts
        # The JSON member list of a room, kept until its membership changes: re-joins
        # (and joins into a big, stable room) do not re-encode it each time.
        self._listings: dict[str, str] = {}

    def quiet(self, room: str) -> bool:
        """Root sends no presence unless root_presence (O(N²) in a connect storm)."""
        return room == ROOT and not self.root_presence

    def _listing(self, room: str, members: dict[str, Connection]) -> str:
        listing = self._listings.get(room)
        if listing is None:
            listing = self._listings[room] = json.dumps(list(members))
        return listing

    def add_member(self, conn: Connection, room: str) -> None:
        """Put ``conn`` in ``room``: join_ack to it, new_member to the others if it was
        not there yet (a re-join re-sends the join_ack only)."""
        members = self.rooms.get(room)
        if members is None:
            members = self.rooms[room] = {}
        quiet = self.quiet(room)
        fresh = conn.id not in members
        if fresh:
            members[conn.id] = conn
            conn._rooms[room] = None
            self._listings.pop(room, None)
        listed = json.dumps([conn.id]) if quiet else self._listing(room, members)
        conn.send_control(codec.encode_frame(room, "join_ack", "", conn.id, listed))
        if fresh and not quiet:
            self.engine.broadcast_control(
                members, codec.encode_frame(room, "new_member", "", "", conn.id), conn)

    def remove_member(self, conn: Connection, room: str, *, ack: bool) -> None:
        """Take ``conn`` out of ``room``: leave_ack to it when ``ack``, member_left to
        the rest if it was a member."""
        members = self.rooms.get(room)
        was_member = members is not None and members.pop(conn.id, None) is not None
        conn._rooms.pop(room, None)
        if ack:
            conn.send_control(codec.encode_frame(room, "leave_ack", "", conn.id, conn.id))
        if not was_member or members is None:
            return
        self._listings.pop(room, None)
        if not members:
            del self.rooms[room]
        elif not self.quiet(room):
            self.engine.broadcast_control(
                members, codec.encode_frame(room, "member_left", "", "", conn.id))

    def leave_all(self, conn: Connection) -> list[str]:
        """Take ``conn`` out of every room (a disconnect: no acks); the rooms it left."""
        left = list(conn._rooms)
        for room in left:
            self.remove_member(conn, room, ack=False)
        return left
