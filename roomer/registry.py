"""Who is connected to a namespace and who is in which of its rooms, with the presence
messages membership changes send (docs/protocol.md §8), here and, with a backplane, on the
other nodes. No socket I/O: frames go to the fan-out engine and to the cluster.

Acks and presence are control frames: never dropped to make room (a client awaiting
its join_ack must get it); a receiver that cannot take them is cut off instead.

Frames are encoded once as v1 and given to v2 receivers as v2 (roomer/frames.py): the
default namespace's rooms may hold both kinds of client; any other namespace's only v2.

With a backplane (``cluster`` set, a `roomer.backplane.Cluster`) a room of
namespace ``N`` is followed on the cluster as ``N\\x00room`` (the default namespace's as
``room``), and its ``broadcast_all`` as ``N\x00`` (the default namespace's goes to every
node); `Nodes` is the cluster's `ClusterEvents` and hands
what other nodes publish to the registry of its namespace.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import codec, frames

if TYPE_CHECKING:
    from .backplane import Cluster
    from .connection import Connection

__all__ = ["LINK_DOWN", "LINK_UP", "MAX_ID", "ROOT", "Nodes", "Registry", "could_be_id",
           "direct_envelope"]

ROOT = "root"

# Server events of protocol v2 about the backplane's link (docs/protocol.md §12).
LINK_DOWN, LINK_UP = "cluster.down", "cluster.up"

# The longest ``dst`` looked up as a client id (ids are 36 characters).
MAX_ID = 64

# Called after a member joined or left a room (the namespace's on_joined/on_left hooks).
Membership = Callable[["Connection", str], None]


class Registry:
    """The connected clients of one namespace (``conns``: id -> Connection) and its rooms
    by name; a room is a dict id -> Connection in join order (the fan-out engine iterates
    it directly). An empty room is deleted."""

    __slots__ = ("_joining", "_listings", "_v2_conns", "_v2_members", "cluster", "conns",
                 "engine", "joined", "left", "namespace", "rooms", "root_presence")

    def __init__(self, root_presence: bool, namespace: str = "") -> None:
        self.namespace = namespace
        self.root_presence = root_presence
        self.conns: dict[str, Connection] = {}
        self.rooms: dict[str, dict[str, Connection]] = {}
        self.engine: Any = None  # the fan-out engine, set when the server starts
        self.cluster: Cluster | None = None  # set when the server starts with a backplane
        self.joined: Membership | None = None
        self.left: Membership | None = None
        # The JSON member list of a room, kept until its membership changes: re-joins
        # (and joins into a big, stable room) do not re-encode it each time.
        self._listings: dict[str, str] = {}
        # v2 members per room of the default namespace, and v2 connections: a room (or a
        # broadcast to all) without any gets v1 frames only.
        self._v2_members: dict[str, int] = {}
        self._v2_conns = 0
        # Joins waiting for the backplane, by (connection id, room): a token per wait. A
        # leave meanwhile takes them all, so a join does not land after its leave_ack.
        self._joining: dict[tuple[str, str], list[object]] = {}

    def quiet(self, room: str) -> bool:
        """Root sends no presence unless root_presence (O(N²) in a connect storm); a
        namespace's root never does."""
        return room == ROOT and (self.namespace != "" or not self.root_presence)

    def key(self, room: str) -> str:
        """The room's name on the cluster (``""``: a named namespace's every client)."""
        return f"{self.namespace}\x00{room}" if self.namespace else room

    def quiet_keys(self) -> list[str]:
        """The cluster names of this namespace that carry frames only (no presence, no
        member lists)."""
        keys = [self.key(ROOT)] if self.quiet(ROOT) else []
        if self.namespace:
            keys.append(self.key(""))
        return keys

    def rooms_of(self, conn: Connection) -> dict[str, None] | None:
        """The rooms ``conn`` is in here (None: not connected to this namespace)."""
        if not self.namespace:
            return conn._rooms
        spaces = conn._spaces
        view = None if spaces is None else spaces.get(self.namespace)
        return None if view is None else view._rooms

    def frame(self, conn: Connection, room: str, event: str, dst: str, src: str,
              payload: frames.Payload, kind: int = frames.EVENT, id: int = 0) -> bytes:
        """A message to one connection, in its protocol version."""
        return frames.encode(conn.v2, self.namespace, room, event, dst, src, payload, kind, id)

    # connections ---------------------------------------------------------------------

    def accept(self, conn: Connection) -> None:
        """``conn`` is connected to this namespace."""
        self.conns[conn.id] = conn
        self._v2_conns += conn.v2
        cluster = self.cluster
        if cluster is not None:
            if self.namespace:
                cluster.local_joined(self.key(""), conn.id)
            else:
                cluster.local_connected(conn.id)

    def drop(self, conn: Connection) -> None:
        """``conn`` is no longer connected to this namespace (its rooms are left)."""
        if self.conns.pop(conn.id, None) is None:
            return
        self._v2_conns -= conn.v2
        cluster = self.cluster
        if cluster is not None:
            if self.namespace:
                cluster.local_left(self.key(""), conn.id)
            else:
                cluster.local_disconnected(conn.id)

    def moved_out(self, conn: Connection) -> list[str]:
        """``conn``'s session moved to another node: out of this namespace's clients and
        rooms here with nothing said (its new node tells everyone it is there), and the
        cluster names of what it was in."""
        keys = []
        rooms = self.rooms_of(conn)
        for room in list(rooms or ()):
            members = self.rooms.get(room)
            if members is not None and members.pop(conn.id, None) is not None:
                self._listings.pop(room, None)
                self._count_v2(conn, room, -1)
                if not members:
                    del self.rooms[room]
            keys.append(self.key(room))
        if rooms is not None:
            rooms.clear()
        if self.conns.pop(conn.id, None) is not None:
            self._v2_conns -= conn.v2
            if self.namespace:
                keys.append(self.key(""))
        return keys

    def moved_in(self, conn: Connection, rooms: list[str]) -> list[str]:
        """``conn``'s session moved here from another node, in ``rooms``: in this
        namespace's clients and rooms with nothing said (the cluster says it is here),
        and the cluster names of what it is in."""
        self.conns[conn.id] = conn
        self._v2_conns += conn.v2
        own = self.rooms_of(conn)
        assert own is not None
        keys = [self.key("")] if self.namespace else []
        for room in rooms:
            members = self.rooms.setdefault(room, {})
            if conn.id not in members:
                members[conn.id] = conn
                own[room] = None
                self._listings.pop(room, None)
                self._count_v2(conn, room, 1)
            keys.append(self.key(room))
        return keys

    def _count_v2(self, conn: Connection, room: str, change: int) -> None:
        if conn.v2 and not self.namespace:
            count = self._v2_members.get(room, 0) + change
            if count > 0:
                self._v2_members[room] = count
            else:
                self._v2_members.pop(room, None)

    # membership -----------------------------------------------------------------------

    def members(self, room: str) -> list[str]:
        """Ids of ``room``'s members here, then on the other nodes."""
        local = list(self.rooms.get(room, ()))
        if self.cluster is not None and local:
            local += self.cluster.remote_members(self.key(room))
        return local

    def _listing(self, room: str) -> str:
        listing = self._listings.get(room)
        if listing is None:
            listing = self._listings[room] = json.dumps(self.members(room))
        return listing

    def add_member(self, conn: Connection, room: str, *, reply: int = 0, ack: bool = True,
                   announce: bool = True) -> Awaitable[None] | None:
        """Put ``conn`` in ``room``: join_ack to it (or, for an ask, the reply ``reply``;
        nothing without ``ack``), new_member to the others if it was not there yet (a
        re-join re-sends the join_ack only), then ``joined`` (not for the root join that
        comes with connecting: ``announce`` False). With a backplane, the first member of
        a room on this node waits (an awaitable is returned) until the other nodes'
        members are known, so its join_ack lists them."""
        members = self.rooms.get(room)
        if members is None or conn.id not in members:
            cluster = self.cluster
            if cluster is not None:
                key = self.key(room)
                cluster.local_joined(key, conn.id)
                if not cluster.ready(key):
                    # Registered now, not when the coroutine starts: a leave right after
                    # this call must find it.
                    token = object()
                    self._joining.setdefault((conn.id, room), []).append(token)
                    return self._add_when_ready(conn, room, reply, ack, announce, token)
        self._add_now(conn, room, reply, ack, announce)
        return None

    async def _add_when_ready(self, conn: Connection, room: str, reply: int, ack: bool,
                              announce: bool, token: object) -> None:
        assert self.cluster is not None
        key = self.key(room)
        waiting = (conn.id, room)
        try:
            await self.cluster.room_ready(key)
        finally:
            tokens = self._joining.get(waiting)
            cancelled = tokens is None or token not in tokens
            if tokens is not None and not cancelled:
                tokens.remove(token)
                if not tokens:
                    del self._joining[waiting]
        rooms = self.rooms_of(conn)
        if cancelled:
            if reply and conn.inbound.open:
                # Something answers every ask: the server-driven leave came first.
                conn.send_control(self.frame(
                    conn, room, "join", "", "", json.dumps(
                        {"code": "join_denied", "message": "left before the join completed"}),
                    frames.ERROR_REPLY, reply))
        elif conn.inbound.open and rooms is not None:
            self._add_now(conn, room, reply, ack, announce)
        elif rooms is None or room not in rooms:
            self.cluster.local_left(key, conn.id)  # gone while the others were asked

    def _add_now(self, conn: Connection, room: str, reply: int, ack: bool,
                 announce: bool) -> None:
        rooms = self.rooms_of(conn)
        if rooms is None:
            return  # left the namespace meanwhile
        members = self.rooms.get(room)
        if members is None:
            members = self.rooms[room] = {}
        quiet = self.quiet(room)
        fresh = conn.id not in members
        if fresh:
            members[conn.id] = conn
            rooms[room] = None
            self._listings.pop(room, None)
            self._count_v2(conn, room, 1)
        if ack:
            listed = json.dumps([conn.id]) if quiet else self._listing(room)
            if reply:
                conn.send_control(self.frame(conn, room, "join", "", conn.id, listed,
                                             frames.REPLY, reply))
            else:
                conn.send_control(self.frame(conn, room, "join_ack", "", conn.id, listed))
        if fresh:
            if not quiet:
                self.fan(room, members,
                          codec.encode_frame(room, "new_member", "", "", conn.id), conn, True)
            if announce and self.joined is not None:
                self.joined(conn, room)

    def remove_member(self, conn: Connection, room: str, *, ack: bool,
                      reply: int = 0) -> None:
        """Take ``conn`` out of ``room``: leave_ack to it (or the reply ``reply``) when
        ``ack``, member_left to the rest (here and on the other nodes) if it was one."""
        members = self.rooms.get(room)
        was_member = members is not None and members.pop(conn.id, None) is not None
        rooms = self.rooms_of(conn)
        if rooms is not None:
            rooms.pop(room, None)
        if self._joining and self._joining.pop((conn.id, room), None) is not None and (
                not was_member and self.cluster is not None):
            # Its join never lands: the other nodes stop counting it now.
            self.cluster.local_left(self.key(room), conn.id)
        if ack:
            if reply:
                conn.send_control(self.frame(conn, room, "leave", "", conn.id, conn.id,
                                             frames.REPLY, reply))
            else:
                conn.send_control(self.frame(conn, room, "leave_ack", "", conn.id, conn.id))
        if not was_member or members is None:
            return
        if room != ROOT:
            # Asks of it in this room go unanswered now: their memory goes with them.
            conn.asks.fail("the client left the room", self.namespace, room)
        self._listings.pop(room, None)
        self._count_v2(conn, room, -1)
        if self.cluster is not None:
            self.cluster.local_left(self.key(room), conn.id)
        if not members:
            del self.rooms[room]
        elif not self.quiet(room):
            self.fan(room, members,
                      codec.encode_frame(room, "member_left", "", "", conn.id), None, True)
        if self.left is not None:
            self.left(conn, room)

    # sending --------------------------------------------------------------------------

    def fan(self, room: str, members: dict[str, Connection], frame: bytes,
             exclude: Connection | None, control: bool = False) -> int:
        """Queue the v1 ``frame`` to ``members`` but ``exclude``, each in its version."""
        engine = self.engine
        if self.namespace:  # every member speaks v2
            v2 = frames.as_v2(frame, self.namespace)
            sent: int = (engine.broadcast_control if control else engine.broadcast)(
                members, v2, exclude)
            return sent
        if room not in self._v2_members:
            sent = (engine.broadcast_control if control else engine.broadcast)(
                members, frame, exclude)
            return sent
        sent = engine.broadcast_mixed(members, frame, frames.as_v2(frame, ""), exclude,
                                      control)
        return sent

    def broadcast(self, room: str, frame: bytes, exclude: Connection | None) -> int:
        """A v1 ``frame`` to ``room``'s members here but ``exclude``; how many took it."""
        members = self.rooms.get(room)
        if not members:
            return 0
        return self.fan(room, members, frame, exclude)

    def broadcast_all(self, frame: bytes, exclude: Connection | None) -> int:
        """A v1 ``frame`` to every connection of this namespace here but ``exclude``."""
        engine = self.engine
        if self.namespace:  # every client speaks v2
            sent: int = engine.broadcast(self.conns, frames.as_v2(frame, self.namespace),
                                         exclude)
            return sent
        if not self._v2_conns:
            sent = engine.broadcast(self.conns, frame, exclude)
            return sent
        sent = engine.broadcast_mixed(self.conns, frame, frames.as_v2(frame, ""), exclude)
        return sent

    def direct(self, dst: str, frame: bytes) -> bool | asyncio.Future[bool] | None:
        """A v1 data ``frame`` to client ``dst`` of this namespace: whether it was queued
        here, or (with a backplane, ``dst`` held by no local connection) the future of
        whether another node held it; None: no such client."""
        if not could_be_id(dst):
            # Not looked up, nor handed to the backplane: a huge id would cost a subject
            # escape per byte there, and a broker drops a node that publishes one.
            return None
        target = self.conns.get(dst)
        if target is not None:
            return self.send(target, frame)
        if self.cluster is None:
            return None
        return self.cluster.send_direct(dst, direct_envelope(self.namespace, frame))

    def send(self, conn: Connection, frame: bytes) -> bool:
        """A v1 data ``frame`` to one connection, in its version."""
        if conn.v2:
            return bool(conn.send_frame(frames.as_v2(frame, self.namespace)))
        return bool(conn.send_frame(frame))

    def publish_room(self, room: str, frame: bytes, exclude: str | None) -> None:
        """A room broadcast to the other nodes' members, beside the local fan-out (a
        relay publishes after it, a server broadcast before it)."""
        if self.cluster is not None:
            # The excluded client is the one that caused it (a relay, send_to_room, a
            # handler's broadcast excluding its sender): its share of the backplane's
            # buffer pays for it.
            self.cluster.publish_room(self.key(room), frame, exclude, sender=exclude)

    def publish_all(self, frame: bytes, exclude: str | None) -> None:
        if self.cluster is None:
            return
        if self.namespace:
            self.cluster.publish_room(self.key(""), frame, exclude)
        else:
            self.cluster.publish_all(frame, exclude)

    # what other nodes publish ---------------------------------------------------------

    def remote_joined(self, room: str, member: str) -> None:
        self._presence(room, "new_member", member)

    def remote_left(self, room: str, member: str) -> None:
        self._presence(room, "member_left", member)

    def _presence(self, room: str, event: str, member: str) -> None:
        self._listings.pop(room, None)
        members = self.rooms.get(room)
        if members and not self.quiet(room):
            self.fan(room, members, codec.encode_frame(room, event, "", "", member), None,
                      True)

    def presence_v2(self, room: str, event: str, member: str) -> None:
        """``member_dropped`` or ``member_back`` of ``member`` to ``room``'s v2 members
        here (v1 has no such event), if the room has presence."""
        members = self.rooms.get(room)
        if not members or self.quiet(room):
            return
        frame = None
        for conn in members.values():
            # A named namespace's members are the clients' views of it.
            target = getattr(conn, "conn", conn)
            if target.id == member or not target.v2:
                continue
            if frame is None:
                frame = self.frame(target, room, event, "", "", member)
            target.send_control(frame)


class Nodes:
    """The cluster's `ClusterEvents`: what other nodes publish,
    handed to the registry of its namespace (a room name on the cluster is
    ``namespace\\x00room``, the default namespace's is the room itself)."""

    __slots__ = ("registries",)

    def __init__(self, registries: dict[str, Registry]) -> None:
        self.registries = registries

    def _split(self, key: str) -> tuple[Registry | None, str]:
        namespace, sep, room = key.partition("\x00")
        if not sep:
            return self.registries.get(""), key
        return self.registries.get(namespace), room

    def remote_frame(self, room: str, frame: bytes, exclude: str | None) -> None:
        registry, name = self._split(room)
        if registry is None:
            return
        excluded = registry.conns.get(exclude) if exclude else None
        if name:
            registry.broadcast(name, frame, excluded)
        else:  # a named namespace's broadcast_all
            registry.broadcast_all(frame, excluded)

    def remote_frame_all(self, frame: bytes, exclude: str | None) -> None:
        registry = self.registries[""]
        registry.broadcast_all(frame, registry.conns.get(exclude) if exclude else None)

    def remote_direct(self, member: str, frame: bytes) -> bool:
        # A direct message crosses as its namespace (1 byte of length), then a v1 frame.
        registry = self.registries.get(frame[1:1 + frame[0]].decode())
        conn = registry.conns.get(member) if registry is not None else None
        if registry is None or conn is None or not (conn.inbound.open or conn.held):
            return False
        registry.send(conn, frame[1 + frame[0]:])
        return True

    def remote_joined(self, room: str, member: str) -> None:
        registry, name = self._split(room)
        if registry is not None:
            registry.remote_joined(name, member)

    def remote_left(self, room: str, member: str) -> None:
        registry, name = self._split(room)
        if registry is not None:
            registry.remote_left(name, member)

    def remote_presence(self, room: str, member: str, event: str) -> None:
        registry, name = self._split(room)
        if registry is not None:
            registry.presence_v2(name, event, member)

    # The link to the broker (Cluster.state()["link"] says the same): v2 clients are told
    # that cross-node messages are being dropped, and then that some may have been lost
    # (docs/protocol.md §12); v1 has no such event, and is told nothing.

    def link_down(self) -> None:
        self._tell_v2(LINK_DOWN, {"message": "messages to and from other nodes are being "
                                             "dropped: the broker is unreachable"})

    def link_up(self, down_for: float) -> None:
        self._tell_v2(LINK_UP, {"down_for": round(down_for, 3), "message": (
            "the broker is back: messages to and from other nodes sent meanwhile may have "
            "been lost")})

    def _tell_v2(self, event: str, body: dict[str, object]) -> None:
        registry = self.registries[""]
        frame = frames.encode(True, "", ROOT, event, "", "", json.dumps(body))
        for conn in list(registry.conns.values()):
            if conn.v2 and conn.inbound.open:
                conn.send_control(frame)


def could_be_id(dst: str) -> bool:
    """Whether ``dst`` could name a client: ids are UUID text (36 ASCII characters); the
    bound leaves room should ids ever grow, and keeps anything huge away from lookups."""
    return len(dst) <= MAX_ID and dst.isascii()


def direct_envelope(namespace: str, frame: bytes) -> bytes:
    """What a direct message to a client on another node carries (see Nodes)."""
    raw = namespace.encode()
    return bytes((len(raw),)) + raw + frame
