"""The cluster protocol: rooms, presence, direct messages and node liveness across the nodes
(server processes) sharing one broker, on any :mod:`transport <roomer.backplane.transport>`.

Sans-server: the server tells a :class:`Cluster` what happens locally (a client connected,
joined, left) and what to publish, as it happens, with plain calls; the cluster calls the
server back through :class:`ClusterEvents` for what arrives from other nodes. Nothing here
touches a socket or imports the server. All calls run on the event loop's thread.

How the server drives it::

    cluster = Cluster(create("redis://127.0.0.1:6379/0"))
    await cluster.start(events)                 # ConnectionError: broker down, id in use
    cluster.local_connected(conn.id)            # at connect: direct messages find it here
    cluster.local_joined(room, conn.id)         # then, before its join_ack:
    await cluster.room_ready(room)              #   other nodes' members are known
    listed = local_ids + cluster.remote_members(room)
    cluster.publish_room(room, frame, exclude, sender=conn.id)  # after the local fan-out;
                                                # False: dropped (counted)
    cluster.publish_all(frame, exclude)         # broadcast_all
    ok = await cluster.send_direct(id, frame)   # an id not held here; False: no_such_client
                                                # (cancelled: not known, say nothing)
    cluster.local_left(room, conn.id); cluster.local_disconnected(conn.id)
    await cluster.close()                       # at shutdown: the others drop our members

Cost: a node subscribes to a room's channel only while it has local members there (and
``linger`` seconds after, see below), so a room message crosses the broker once (one
publish) and reaches only the nodes with members in the room; what crosses is a small
header and the finished frame. A room whose members are all on one node costs nothing:
that node publishes its frames only while it knows of members elsewhere (or is still
learning who is there). Direct messages go to a
channel per client that only the node holding it subscribes to: the broker's subscription
table is the registry, and it dies with the node's connection (no TTL to wait out).

Member lists. Each node publishes its members' joins and leaves on the room's channel, and
answers a member-list request with its full list of the room on the same channel. A node
that subscribes to a room asks every node it knows alive for its list and waits (at most
``sync_timeout``) for their answers, so a joiner's join_ack can list every member. The
request goes out twice: on the room channel, where the nodes with members there get it
after the asker's join (so they know of the new member before they answer, and do not
skip publishing to it), and on ``ctl``, where the nodes with nothing there answer on the
asker's node channel. The list of node X's members is
built only from X's messages on the room channel, which the broker delivers in X's publish
order, so a join, a leave and a full list from X can never be applied out of order; the
out-of-band "nothing here" answer only ends the wait.

What one client can make member lists cost is bounded. A node keeps following a room for
``linger`` seconds after its last local member left (at most 1,024 rooms so), its lists
kept current by the joins and leaves it still hears: a member joining again meanwhile
costs its join and a "check" on the room channel that each node with members there
answers "heard" on this node's channel (they handled the join before the joiner is told
who is there), never a member list. A client looping join/leave against a room of 5,000
members elsewhere thus costs about 90 broker bytes per cycle instead of 185 KB. And a node
publishes its full list of a room at most once per ``sync_timeout / 4``: requests meanwhile
share the next one (a list on the room channel answers every node subscribed to it). What
the protocol relies on: the
broker delivers messages from one publisher connection on one channel in publish order
(Redis and NATS both do), each transport publishes on one connection in call order, and
member ids are unique across nodes (UUIDs). It does not rely on any order across channels,
but for a session moving between nodes (below).

Liveness. Every node publishes a heartbeat every ``heartbeat_interval``; a node not heard
for ``node_timeout`` is dead: its members are reported left (``remote_left``) and dropped
from the lists, so a node killed with SIGKILL is gone from the others within
``node_timeout + heartbeat_interval`` (7 s by default). A node restarted with the same
``node_id`` has a new incarnation (its start time): the old one's members leave at once. A
node that closes says goodbye, and its members leave at once. A starting node first
probes (the others answer without counting it yet): if a live node has its id, it fails
with :class:`~roomer.backplane.errors.NodeIdInUse` and nobody saw it; two live nodes found
sharing an id later log an error, count it (``id_collisions``), and the newer takes a
fresh id. The default id is host-pid plus 6 random hex digits.

Incarnations. A key (``node id:incarnation``) declared dead stays dead: whatever still
comes from it (frames, presence, answers) is dropped and counted (``stale_dropped``), and
it is told so on its node channel (at most once per heartbeat interval). A node that was
paused past ``node_timeout`` (SIGSTOP, a loop blocked) notices it itself before it
publishes anything (its heartbeat task did not run), and a node cut off from the broker
meanwhile learns it from that notice: either way it drops what it had queued for the
broker, says goodbye under the old key and starts over under a new one, announcing every
member again and asking for everyone's lists (``incarnations`` counts it). Its clients'
rooms carry on; the others' clients see its members leave, then join again, and never a
message of the dead incarnation in between.

Outages. The transport probes the broker (a round trip every ``probe_interval``, 0.5 s):
a broken connection, or a probe unanswered for ``probe_timeout`` (1.5 s: a stalled
broker), takes the link down; the server hears ``link_down()``. While it is down nothing
is declared dead (this node cannot tell: silence counts only up to the broker's last
answer), local rooms go on and publishes are dropped and counted. The transport retries
at least every second. When it is back it has subscribed again to everything; the node
then announces its full member list of every room (and an empty one for rooms it left
meanwhile, or whose last leave the broker may not have seen), asks every node for
theirs, reports the differences as joins and leaves, and the server hears
``link_up(down_for)``: messages between nodes may have been lost meanwhile. Every list
heals within ``sync_timeout`` and nothing was queued while away. A node that does not
answer in time (not back yet itself) keeps the members known of it: it announces them
when it is back, and only ``node_timeout`` takes them away.

Bounds. What one client sends to other nodes may hold at most ``sender_share`` of the
transport's buffer (the ``sender`` of :meth:`Cluster.publish_room`): past it its frames
are dropped and counted, not everyone's. A frame larger than the broker takes (NATS'
max_payload, 1 MiB by default, which a 1 MiB message wrapped in its header passes)
crosses in pieces that the receiving node joins; :attr:`Cluster.max_payload` is the
largest frame the backplane carries at all.

Sessions moving. Every frame (room, to all, direct) carries its node's sequence number,
and each node keeps, per channel it hears, the last one it got from each origin. A node
taking a resumed session over from the node holding it (roomer/session_moves.py) keeps
what arrives for the session (:meth:`Cluster.capture`), the holder says what it delivered
(:meth:`Cluster.cut`), and the frames newer than that are the claimer's to deliver
(:meth:`Cluster.captured`); a ``HERE`` presence message then lists the member on its new
node everywhere, without a leave or a join. That the claimer kept everything the holder
did not deliver rests on one broker delivering in the order it handles messages: a frame
published before the claimer's subscription took effect reaches the holder before the
claimer's "ready" does.

Order. Across nodes exactly this holds: the frames and presence one node publishes into one
room reach every other node's members of that room in that node's publish order (one
connection, one channel). Two nodes' messages into one room are interleaved in broker
arrival order, which may differ from the order the clients sent them; ``publish_all``,
direct messages and room messages travel on different channels and keep no order between
them. A sync-broadcaster server's global order is per node: it does not extend across
nodes (a broadcast is published, not awaited on the other nodes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Protocol

from . import envelope as env
from .errors import NodeIdInUse
from .names import Names
from .transport import Transport, create

__all__ = ["Capture", "Cluster", "ClusterEvents", "NodeWatcher"]

log = logging.getLogger("roomer.backplane")

#: What a node id may be.
NODE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Rooms left while the broker may not have heard it; past this many, a reconnect starts
# a new incarnation instead (the others drop all our members and hear them again).
_MAX_UNCERTAIN = 50_000
_MAX_GONE = 4096
# Rooms followed without local members (see Cluster.linger); past this, the oldest goes.
_MAX_LINGERING = 1024
# The answer to a hello (a heartbeat on the node channel starting with this letter).
_HELLO_ANSWER = ord("i")
# Seconds close() waits for the broker to confirm the goodbye.
_GOODBYE_WAIT = 1.0


class ClusterEvents(Protocol):
    """What the server does with what other nodes publish (called on the loop's thread)."""

    def remote_frame(self, room: str, frame: bytes, exclude: str | None) -> None:
        """Deliver ``frame`` to this node's members of ``room`` but ``exclude``."""

    def remote_frame_all(self, frame: bytes, exclude: str | None) -> None:
        """Deliver ``frame`` to every connection of this node but ``exclude``."""

    def remote_direct(self, member: str, frame: bytes) -> bool:
        """Deliver ``frame`` to the local client ``member``; False if it is gone."""

    def remote_joined(self, room: str, member: str) -> None:
        """A member on another node joined ``room``: send ``new_member`` here."""

    def remote_left(self, room: str, member: str) -> None:
        """A member on another node left ``room`` (or its node died): ``member_left``."""

    def remote_presence(self, room: str, member: str, event: str) -> None:
        """A member on another node dropped (``member_dropped``: its session is held) or
        is back (``member_back``: resumed there, or moved there from another node)."""

    def link_down(self) -> None:
        """The broker is unreachable or stalled (or this node was): frames to and from
        the other nodes are dropped and counted until :meth:`link_up`; local rooms go on.
        The server marks /healthz degraded and may tell its clients."""

    def link_up(self, down_for: float) -> None:
        """The link is back after ``down_for`` seconds (0 when not known): messages between
        this node and the others may have been lost meanwhile, in both directions, and the
        member lists heal within ``sync_timeout`` (differences arrive as
        ``remote_joined``/``remote_left``). The server may tell its clients so."""


class NodeWatcher(Protocol):
    """What a layer above the cluster (game rooms) is told about nodes, on the loop's
    thread (:meth:`Cluster.watch`)."""

    def node_found(self, key: str) -> None:
        """``key`` is heard for the first time (a new node, or one back after it was
        declared dead)."""

    def node_lost(self, key: str) -> None:
        """``key`` is dead (silent past node_timeout) or said goodbye."""

    def reconnected(self) -> None:
        """The broker is back after an outage (publishes meanwhile were dropped)."""

    def restarted(self) -> None:
        """This node starts over under a new key (``Cluster.key``): the others dropped
        what its old key held."""


class _Pending:
    """A node's members of a room being rebuilt while that node answers a request:
    ``members`` is what its messages said since (its list if it answers "none here"),
    ``known`` what was known of it before, updated by those messages (its list if it does
    not answer in time: a node still away after an outage keeps its members; only
    ``node_timeout`` takes them away)."""

    __slots__ = ("known", "members", "until")

    def __init__(self, until: float, known: dict[str, None] | None) -> None:
        self.members: dict[str, None] = {}
        self.known: dict[str, None] = dict(known) if known else {}
        self.until = until

    def joined(self, member: str) -> None:
        self.members[member] = None
        self.known[member] = None

    def left(self, member: str) -> None:
        self.members.pop(member, None)
        self.known.pop(member, None)


class _Room:
    """A room this node follows (is subscribed to): it has local members there, or had
    until less than ``linger`` seconds ago."""

    __slots__ = ("announce_timer", "announced", "awaiting", "captures", "channel", "last",
                 "linger", "local", "name", "pending", "quiet", "ready", "subscribed",
                 "syncing", "timer", "view")

    def __init__(self, name: str, channel: str, ready: asyncio.Future[None],
                 quiet: bool = False) -> None:
        self.name = name
        self.channel = channel
        self.quiet = quiet  # frames only: no presence, no member lists
        self.local: dict[str, None] = {}
        # node key -> its members, as reported to the server (remote_joined/left).
        self.view: dict[str, dict[str, None]] = {}
        # node key -> what its messages say while its answer to a request is awaited.
        self.pending: dict[str, _Pending] = {}
        self.ready = ready
        self.subscribed = False  # the broker confirmed our subscription
        self.syncing = False
        self.timer: asyncio.TimerHandle | None = None
        # Nodes whose "heard" answer to our check a re-joined lingering room waits for.
        self.awaiting: set[str] = set()
        # The last full list of ours on the room channel (loop time), and the one due.
        self.announced = -math.inf
        self.announce_timer: asyncio.TimerHandle | None = None
        # While nobody is here: when the node stops following the room.
        self.linger: asyncio.TimerHandle | None = None
        # The seq of the last frame from each origin (raw key -> 8 bytes; a key that
        # died stays: a cut must name it while a frame of it may be kept elsewhere), and
        # the sessions moving here that keep this room's frames meanwhile.
        self.last: dict[bytes, bytes] = {}
        self.captures: list[Capture] = []


class Capture:
    """What reaches this node for a member whose session moves here while the node
    holding it still delivers to it: every frame for it, in arrival order, with its
    channel, origin and seq, until the holder's cut (:meth:`Cluster.cut`) says which of
    them it did not deliver (:meth:`Cluster.captured`). At most ``limit`` bytes: past
    them ``overflowed`` is set and nothing more is kept."""

    __slots__ = ("frames", "limit", "member", "overflowed", "rooms", "size", "waits")

    def __init__(self, member: str, limit: int) -> None:
        self.member = member
        self.limit = limit
        self.rooms: list[str] = []
        # (channel: "r:<room>", "a" or "d"; origin key; seq; frame)
        self.frames: list[tuple[str, bytes, bytes, bytes]] = []
        self.size = 0
        self.overflowed = False
        # Subscriptions the broker has to confirm before the holder may cut.
        self.waits: list[asyncio.Future[Any]] = []

    def keep(self, channel: str, data: bytes, frame: bytes) -> None:
        size = len(frame)
        if self.overflowed or self.size + size > self.limit:
            self.overflowed = True
            return
        self.size += size
        pos = 2 + data[1]
        self.frames.append((channel, data[2:pos], data[pos:pos + env.SEQ], frame))


def _listed(st: _Room, member: str) -> bool:
    """Whether a node's list of ``st`` has ``member`` (a session that moved: its old
    node's leave or death is not the member's)."""
    return any(member in members for members in st.view.values())


def _keep_own(captures: Iterable[Capture], channel: str, message: bytes, frame: bytes,
              exclude: str | None) -> None:
    """A frame this node publishes, kept for the sessions moving here: the broker may
    not echo it back (NATS does not, and the cluster drops its own room frames), and the
    holder may have its cut before it."""
    for capture in captures:
        if exclude != capture.member:
            capture.keep(channel, message, frame)


def _seqs(last: dict[bytes, bytes]) -> dict[str, int]:
    return {origin.decode(): int.from_bytes(seq, "big") for origin, seq in list(last.items())}


def _default_node_id() -> str:
    # host-pid alone is not unique: containers sharing a hostname all run as PID 1.
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40] or "node"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def _renamed(node_id: str) -> str:
    """A fresh id for a node that found its id used by another live node."""
    return f"{node_id[:57]}-{secrets.token_hex(3)}"


class Cluster:
    """One node of a cluster. ``transport`` is a :class:`Transport` or a URL for
    :func:`create`. ``node_id`` (``A-Z a-z 0-9 - _``, at most 64; default host-pid-random)
    must be unique among live nodes: :meth:`start` refuses one a live node has. ``prefix``
    separates clusters sharing a broker. In ``quiet_rooms`` (the server's ``root`` without
    root presence) frames cross nodes but joins and leaves do not: no presence, no member
    lists, nothing to wait for. A room
    stays followed ``linger`` seconds after its last local member left (0: unsubscribe at
    once), so a member joining again meanwhile costs no member lists. See the module
    documentation for what the timings bound."""

    def __init__(self, transport: Transport | str, *, node_id: str | None = None,
                 heartbeat_interval: float = 1.0, node_timeout: float = 6.0,
                 sync_timeout: float = 0.5, prefix: str = "roomer",
                 quiet_rooms: Iterable[str] = (), linger: float = 10.0) -> None:
        if isinstance(transport, str):
            transport = create(transport)
        if not isinstance(transport, Transport):
            raise TypeError("transport must be a roomer.backplane Transport or a URL")
        node_id = _default_node_id() if node_id is None else node_id
        if not isinstance(node_id, str) or not NODE_ID.fullmatch(node_id):
            raise ValueError("node_id: 1-64 characters of A-Z a-z 0-9 - _")
        if not heartbeat_interval > 0 or not sync_timeout > 0:
            raise ValueError("heartbeat_interval and sync_timeout must be positive")
        if not node_timeout >= 2 * heartbeat_interval:
            raise ValueError("node_timeout must be at least twice heartbeat_interval")
        if not 0 <= linger < math.inf:
            raise ValueError("linger must be a finite number of seconds, 0 or more")
        self.transport = transport
        self.node_id = node_id
        self.heartbeat_interval = float(heartbeat_interval)
        self.node_timeout = float(node_timeout)
        self.sync_timeout = float(sync_timeout)
        self.linger = float(linger)
        # One full member list per room on its channel per this many seconds: requests
        # within it share the next one (due well within the askers' sync_timeout).
        self.answer_gap = self.sync_timeout / 4
        self.names = Names(prefix)
        self.quiet_rooms = frozenset(quiet_rooms)
        self.frames_out = 0
        self.frames_local = 0
        self.frames_in = 0
        self.direct_out = 0
        self.direct_in = 0
        self.nodes_lost = 0
        self.incarnations = 0
        self.stale_dropped = 0
        self.id_collisions = 0
        self.oversize_dropped = 0
        self.pieces_lost = 0
        self.lists_sent = 0
        self.lists_coalesced = 0
        self._events: ClusterEvents | None = None
        self._watchers: list[NodeWatcher] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rooms: dict[str, _Room] = {}
        self._lingering: dict[str, None] = {}  # rooms followed without members, oldest first
        self._clients: dict[str, None] = {}
        self._nodes: dict[str, float] = {}      # node key -> when last heard (loop time)
        self._by_id: dict[str, str] = {}        # node id -> its current key
        # Keys declared dead (silent, replaced) or gone (goodbye): whatever they still send
        # is dropped. The value is when a node declared dead was last told so (inf: it
        # said goodbye, never told); the raw keys serve the frame paths' check.
        self._gone: dict[str, float] = {}
        self._gone_raw: set[bytes] = set()
        self._past_keys: dict[str, None] = {}  # this node's own earlier keys
        self._collided: dict[str, None] = {}   # other live keys seen with our node id
        self._starting = False
        self._conflict: str | None = None      # a live node with our id, seen at start
        self._tick_at = 0.0  # when the heartbeat task last ran (loop time)
        # Messages larger than the broker takes cross in pieces (see _pieces): the next
        # id, and the pieces received of each message, by (origin, id).
        self._piece_id = 0
        self._assembling: dict[tuple[bytes, bytes], list[bytes]] = {}
        self._assembling_bytes = 0
        self._partial: dict[tuple[str, str], dict[str, None]] = {}
        self._uncertain: dict[str, float] = {}  # room -> seq of our last leave there
        # The seq of the leave that overflowed _uncertain (inf: left while the broker was
        # away; 0: no overflow): once the broker confirmed it, the lost rooms are safe.
        self._overflow_at = 0.0
        self._rekey = False  # start a new incarnation on reconnect (stalled while away)
        self._requests: list[str] = []
        self._requests_scheduled = False
        self._expect = 0
        self._discovered: asyncio.Future[None] | None = None
        self._greeted: asyncio.Future[None] | None = None
        self._unheard: set[str] = set()  # nodes that have not answered our hello yet
        self._ticker: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        # Frames published (F, A and D): their seq. The last seq from each origin on the
        # "all" channel and on each local client's channel; sessions moving here.
        self._seq = 0
        self._last_all: dict[bytes, bytes] = {}
        self._last_direct: dict[str, dict[bytes, bytes]] = {}
        self._captures: dict[str, Capture] = {}
        self._going: set[str] = set()  # nodes shutting down: they take no session
        #: Called for a session's move between nodes (roomer/sessions.py): ``(origin,
        #: kind, body)`` for a claim (on the client's channel: its answer says whether
        #: this node holds the session), an offer, a ready and a handover.
        self.on_session: Callable[[str, int, bytes], bool] | None = None
        self._set_identity()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, events: ClusterEvents) -> None:
        """Connect, subscribe to the control channels, learn which nodes are alive (waits
        at most ``sync_timeout``), then say hello and start heartbeats.

        Raises:
            ConnectionError: the broker cannot be reached.
            NodeIdInUse: a live node of this cluster has this ``node_id`` (it answered the
                probe that comes before the hello, so the others never saw this node).
        """
        if self._started or self._starting:
            raise RuntimeError("a Cluster starts once")
        self._starting = True
        self._loop = asyncio.get_running_loop()
        self._events = events
        transport = self.transport
        await transport.connect(self._on_state)
        subscribed = [transport.subscribe(self.names.ctl, self._on_ctl),
                      transport.subscribe(self._node_channel, self._on_node),
                      transport.subscribe(self.names.all, self._on_all)]
        try:
            await asyncio.wait_for(asyncio.gather(*subscribed), transport.timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            await transport.close()
            task = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and task is not None \
                    and task.cancelling():
                raise  # our caller cancels us; not a subscription cancelled by a drop
            raise ConnectionError(f"backplane {transport.url}: subscriptions not confirmed") \
                from exc
        self._discovered = self._loop.create_future()
        # A probe first: answered by every live node, ours included if one has our id,
        # but counting us as a node nowhere (a hello would make the others take us for
        # that node restarted, and drop its members).
        transport.publish(self.names.ctl, self._hdr[env.PROBE], control=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._discovered), self.sync_timeout)
        self._starting = False
        if self._conflict is not None:
            await transport.close()
            raise NodeIdInUse(self.node_id, self._conflict)
        self._started = True
        # Then the hello, and start() returns once every node known answered it (each
        # then counts us as a node), or after sync_timeout.
        self._unheard = set(self._nodes)
        self._greeted = self._loop.create_future()
        transport.publish(self.names.ctl, self._hdr[env.HELLO], control=True)
        if self._unheard:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._greeted), self.sync_timeout)
        self._tick_at = self._loop.time()
        self._ticker = self._loop.create_task(self._tick())

    async def close(self) -> None:
        """Say goodbye (the other nodes drop this node's members at once), unsubscribe and
        disconnect."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._ticker is not None:
                self._ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._ticker
            if self._started and self.transport.connected:
                self.transport.publish(self.names.ctl, self._hdr[env.BYE], control=True)
                # Best effort: a node that misses it times us out anyway. Waiting the
                # transport's whole timeout would eat the caller's shutdown budget.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.transport.flush(),
                                           min(self.transport.timeout, _GOODBYE_WAIT))
        finally:
            # Also when the caller's deadline cancels us mid-goodbye: otherwise the
            # transport's tasks, connections and reconnect loop outlive the node.
            rooms = list(self._rooms.values())
            self._rooms.clear()  # pending timers find their room gone and do nothing
            self._lingering.clear()
            for st in rooms:
                for timer in (st.linger, st.announce_timer):
                    if timer is not None:
                        timer.cancel()
                self._set_ready(st)
            await self.transport.close()

    # -- node events for the layers above (game rooms) ---------------------------------------

    def watch(self, watcher: NodeWatcher) -> None:
        """Tell ``watcher`` when nodes are found and lost, when the broker is back, and
        when this node starts over under a new key."""
        self._watchers.append(watcher)

    def alive(self, key: str) -> bool:
        """Whether ``key`` is this node or a node heard within node_timeout."""
        return key == self.key or key in self._nodes

    def node_keys(self) -> list[str]:
        """The keys of the other nodes heard within node_timeout."""
        return list(self._nodes)

    def _tell(self, what: str, *args: str) -> None:
        for watcher in self._watchers:
            try:
                getattr(watcher, what)(*args)
            except Exception:
                log.exception("backplane %s: %s watcher raised", self.transport.url, what)

    # -- local membership -------------------------------------------------------------------

    def local_connected(self, member: str) -> None:
        """``member`` connected here: direct messages to it now reach this node."""
        if not self._live() or member in self._clients:
            return
        self._awake()
        self._clients[member] = None
        self.transport.subscribe(self.names.client(member), partial(self._on_direct, member))

    def local_disconnected(self, member: str) -> None:
        if member not in self._clients or self._closed:
            return
        del self._clients[member]
        self._last_direct.pop(member, None)
        self.transport.unsubscribe(self.names.client(member))

    def local_joined(self, room: str, member: str) -> None:
        """``member`` (connected here) joined ``room``. The first local member subscribes
        this node to the room; await :meth:`room_ready` before listing its members."""
        if not self._live():
            return
        self._awake()
        st = self._rooms.get(room)
        if st is not None:
            if member not in st.local:
                back = not st.local
                st.local[member] = None
                if back:
                    self._stop_lingering(st)
                if not st.quiet:
                    self._publish_presence(st.channel, env.JOINED, member)
                    if back:
                        self._check(st)
            return
        self._follow(room, member)

    def _follow(self, room: str, member: str | None) -> asyncio.Future[None]:
        """Subscribe to ``room`` and learn its lists, for ``member`` (which joined: its
        join is published) or for a session moving here (None); the broker's
        confirmation of the subscription is returned."""
        assert self._loop is not None
        quiet = room in self.quiet_rooms
        st = self._rooms[room] = _Room(room, self.names.room(room), self._loop.create_future(),
                                       quiet)
        if member is not None:
            st.local[member] = None
        confirmed = self.transport.subscribe(st.channel, partial(self._on_room, st))
        if quiet:
            st.ready.set_result(None)
            return confirmed
        self._uncertain.pop(room, None)
        if member is not None:
            self._publish_presence(st.channel, env.JOINED, member)
        if not self.transport.connected:
            st.ready.set_result(None)  # nobody to ask; the lists heal on reconnect
            return confirmed
        st.syncing = True
        st.timer = self._loop.call_later(self.sync_timeout, self._sync_deadline, st)
        confirmed.add_done_callback(partial(self._subscribed, st))
        return confirmed

    def local_left(self, room: str, member: str) -> None:
        """``member`` left ``room`` here. After the last local member this node follows
        the room ``linger`` seconds more (a member joining again meanwhile needs no member
        lists: this node kept them), then unsubscribes."""
        st = self._rooms.get(room)
        if st is None or member not in st.local or self._closed:
            return
        self._awake()
        del st.local[member]
        if not st.quiet:
            self._publish_presence(st.channel, env.LEFT, member)
        self._maybe_unfollow(st)

    def _maybe_unfollow(self, st: _Room) -> None:
        """Nobody here in ``st`` now: linger, or stop following it."""
        if st.local or st.captures or st.linger is not None:
            return
        room = st.name
        if st.quiet or not self.linger or not st.ready.done() or not self.transport.connected:
            # Nothing to keep (frames only), or lists not learned yet: a later join asks.
            self._unfollow(st)
            return
        assert self._loop is not None
        st.linger = self._loop.call_later(self.linger, self._unfollow, st)
        self._lingering[room] = None
        if len(self._lingering) > _MAX_LINGERING:
            self._unfollow(self._rooms[next(iter(self._lingering))])

    def _stop_lingering(self, st: _Room) -> None:
        if st.linger is not None:
            st.linger.cancel()
            st.linger = None
        self._lingering.pop(st.name, None)

    def _unfollow(self, st: _Room) -> None:
        """Stop following a room without local members: unsubscribe, forget its lists."""
        room = st.name
        if self._rooms.get(room) is not st or st.local or st.captures:
            return
        self._stop_lingering(st)
        if st.announce_timer is not None:
            st.announce_timer.cancel()
            st.announce_timer = None
        del self._rooms[room]
        self.transport.unsubscribe(st.channel)
        self._set_ready(st)
        if st.quiet:
            return
        for key in [key for key in self._partial if key[0] == room]:
            del self._partial[key]
        # Until the broker confirms that leave, a reconnect must say "none here" again.
        seq = self.transport.seq if self.transport.connected else math.inf
        self._uncertain[room] = seq
        if len(self._uncertain) > _MAX_UNCERTAIN:
            self._uncertain.clear()
            self._overflow_at = max(self._overflow_at, seq)

    def ready(self, room: str) -> bool:
        """Whether ``room``'s members on other nodes are known (True for a room this node
        does not follow: there is nothing to wait for)."""
        st = self._rooms.get(room)
        return st is None or st.ready.done()

    async def room_ready(self, room: str) -> None:
        """Returns once the members other nodes have in ``room`` are known, at most
        ``sync_timeout`` after this node subscribed to it (at once if it had already)."""
        st = self._rooms.get(room)
        if st is not None and not st.ready.done():
            await asyncio.shield(st.ready)

    def remote_members(self, room: str) -> list[str]:
        """Members of ``room`` on other nodes (empty for a room without local members:
        this node does not follow rooms it has no members in)."""
        st = self._rooms.get(room)
        if st is None or not st.local:
            return []  # not followed, or followed a while longer without members
        # Copied in C calls first: members() may be called from any thread.
        return [member for members in list(st.view.values()) for member in list(members)]

    # -- publishing ---------------------------------------------------------------------------

    @property
    def max_payload(self) -> int:
        """The largest frame :meth:`publish_room`, :meth:`publish_all` and
        :meth:`send_direct` carry to the other nodes (half the transport's ``max_buffer``:
        8 MiB by default); larger ones are dropped and counted. Frames past the broker's
        own limit (NATS' max_payload, 1 MiB by default) cross in pieces. A server may
        refuse a larger message at the edge instead."""
        # Pieces are numbered in two bytes; a piece's header is at most 265 bytes.
        most_pieces = 0xFFFF * max(1, self.transport.max_payload - 265)
        return min(self.transport.max_buffer // 2, most_pieces)

    def publish_room(self, room: str, frame: bytes, exclude: str | None = None,
                     sender: str | None = None) -> bool:
        """Hand ``frame`` (a finished WebSocket frame) to the other nodes' members of
        ``room`` but ``exclude``: one publish, whatever the number of nodes and members.

        Args:
            room: The room's name on the cluster.
            frame: The finished WebSocket frame.
            exclude: A member id not to deliver it to (on any node).
            sender: The client that caused it (its id): its bytes waiting for the broker
                count against its share of the buffer (see :class:`Transport`).

        Returns:
            False if it was dropped and counted (the broker is away, the buffer is full,
            ``sender`` holds its share of it, or it is larger than :attr:`max_payload`);
            True if it was handed to the broker, or nothing needed publishing.
        """
        if self._closed:
            return False
        self._awake()
        st = self._rooms.get(room)
        if st is None:
            channel = self.names.room(room)
        elif not st.view and not st.pending and st.ready.done() and not st.quiet \
                and not st.captures:
            # Every member is here: nothing to publish. Safe because a node joining asks
            # for our list on the room channel after its join there, so we know it has
            # members before our answer lets its joiner in.
            self.frames_local += 1
            return True
        else:
            channel = st.channel
        if len(frame) > self.max_payload:
            return self._oversize()
        self.frames_out += 1
        message = self._framed(env.ROOM, frame, exclude)
        if st is not None and st.captures:
            _keep_own(st.captures, "r:" + room, message, frame, exclude)
        return self.transport.publish(channel, self._pieces(message), sender=sender)

    def publish_all(self, frame: bytes, exclude: str | None = None,
                    sender: str | None = None) -> bool:
        """Hand ``frame`` to every connection on the other nodes but ``exclude``; as
        :meth:`publish_room` for ``sender`` and what it returns."""
        if self._closed:
            return False
        self._awake()
        if len(frame) > self.max_payload:
            return self._oversize()
        self.frames_out += 1
        message = self._framed(env.ALL, frame, exclude)
        if self._captures:
            _keep_own(self._captures.values(), "a", message, frame, exclude)
        return self.transport.publish(self.names.all, self._pieces(message), sender=sender)

    def send_direct(self, member: str, frame: bytes,
                    sender: str | None = None) -> asyncio.Future[bool]:
        """Hand ``frame`` to the one node holding ``member`` (call it for ids not held here).

        Returns:
            A future: True once a node took it, False if no node holds ``member`` (answer
            ``no_such_client``); cancelled when that cannot be known (dropped as
            :meth:`publish_room` says, or lost on the way): never a wrong "no such client".
        """
        if self._closed or len(frame) > self.max_payload:
            if not self._closed:
                self._oversize()
            assert self._loop is not None
            done: asyncio.Future[bool] = self._loop.create_future()
            done.cancel()
            return done
        self._awake()
        self.direct_out += 1
        self._seq += 1
        message = b"".join((self._hdr[env.DIRECT], self._seq.to_bytes(env.SEQ, "big"), frame))
        capture = self._captures.get(member)
        if capture is not None:
            _keep_own((capture,), "d", message, frame, None)
        return self.transport.publish_direct(self.names.client(member), self._pieces(message),
                                             sender=sender)

    # -- sessions moving between nodes (roomer/sessions.py) ----------------------------------

    def capture(self, member: str, limit: int) -> Capture:
        """A session of ``member`` is claimed from the node holding it: from now on what
        reaches this node for it on its client channel and on "all" is kept (at most
        ``limit`` bytes); :meth:`capture_rooms` adds its rooms."""
        self._live()
        capture = self._captures[member] = Capture(member, limit)
        if member not in self._clients:
            self._clients[member] = None
            capture.waits.append(self.transport.subscribe(
                self.names.client(member), partial(self._on_direct, member)))
        return capture

    def capture_rooms(self, capture: Capture, rooms: Iterable[str]) -> None:
        """Keep ``rooms``' frames for ``capture`` too, following those not followed yet;
        await every future in ``capture.waits`` before the holder cuts."""
        for room in rooms:
            if room in capture.rooms:
                continue
            capture.rooms.append(room)
            st = self._rooms.get(room)
            if st is None:
                capture.waits.append(self._follow(room, None))
                st = self._rooms[room]
            else:
                self._stop_lingering(st)
            st.captures.append(capture)
            capture.waits.append(asyncio.shield(st.ready))

    def capture_end(self, capture: Capture, *, moved_in: bool) -> None:
        """Stop keeping frames for ``capture``: the session moved in (:meth:`moved_in`
        made it a local member) or its move failed (nothing of it stays here)."""
        if self._captures.get(capture.member) is capture:
            del self._captures[capture.member]
        for room in capture.rooms:
            st = self._rooms.get(room)
            if st is not None and capture in st.captures:
                st.captures.remove(capture)
                self._maybe_unfollow(st)
        if not moved_in:
            self.local_disconnected(capture.member)

    def cut(self, member: str, rooms: Iterable[str]) -> dict[str, dict[str, int]]:
        """What this node delivered to ``member`` so far: the seq of the last frame of
        each origin on each of its channels (``r:<room>``, ``a`` for all, ``d`` for its
        own), this node's own included."""
        own = {self.key: self._seq}
        out = {"a": {**_seqs(self._last_all), **own},
               "d": {**_seqs(self._last_direct.get(member, {})), **own}}
        for room in rooms:
            st = self._rooms.get(room)
            out["r:" + room] = {**_seqs(st.last if st is not None else {}), **own}
        return out

    @staticmethod
    def captured(capture: Capture, cut: dict[str, dict[str, int]]) -> list[tuple[str, bytes]]:
        """The frames ``capture`` kept that the holder did not deliver (newer than its
        ``cut``), in arrival order: ``(channel, frame)``."""
        out = []
        for channel, origin, seq, frame in capture.frames:
            if int.from_bytes(seq, "big") > cut.get(channel, {}).get(origin.decode(), 0):
                out.append((channel, frame))
        return out

    def moved_out(self, member: str, rooms: Iterable[str], to: str) -> None:
        """``member``'s session moved to node ``to``: no longer here, and nothing said
        (``to`` says it is there: ``HERE``). Until this node hears that, it lists the
        member under ``to`` (so it publishes its rooms' frames for it)."""
        for room in rooms:
            st = self._rooms.get(room)
            if st is None or member not in st.local:
                continue
            del st.local[member]
            if not st.quiet:
                st.view.setdefault(to, {})[member] = None
            self._maybe_unfollow(st)
        self.local_disconnected(member)

    def moved_in(self, member: str, rooms: Iterable[str]) -> None:
        """``member``'s session moved here (its capture ends): a local member of
        ``rooms``, announced as here (the others forget it on its old node)."""
        for room in rooms:
            st = self._rooms.get(room)
            if st is None:
                self.local_joined(room, member)  # (not captured: nothing to wait for)
                continue
            self._stop_lingering(st)
            st.local[member] = None
            if not st.quiet:
                self._forget_elsewhere(st, member, self.key)
                self._publish_presence(st.channel, env.HERE, member)

    def presence(self, member: str, rooms: Iterable[str], *, back: bool) -> None:
        """``member``'s session here was dropped (held), or is back."""
        kind = env.HERE if back else env.DROPPED
        for room in rooms:
            st = self._rooms.get(room)
            if st is not None and not st.quiet and member in st.local:
                self._publish_presence(st.channel, kind, member)

    def claim(self, member: str, body: bytes) -> asyncio.Future[bool]:
        """Ask the node holding ``member``'s session for it: the future says whether a
        node holds it (as :meth:`send_direct`)."""
        self._live()
        self._awake()
        return self.transport.publish_direct(self.names.client(member),
                                             self._pieces(self._hdr[env.CLAIM] + body))

    def going(self) -> None:
        """This node shuts down and hands its sessions over: the others know it takes
        none (when every node is going, nobody waits for a taker)."""
        if not self._closed:
            self.transport.publish(self.names.ctl, self._hdr[env.GOING], control=True)

    def takers(self) -> int:
        """Other live nodes that may take a session over (not shutting down)."""
        return sum(1 for key in self._nodes if key not in self._going)

    def tell_node(self, key: str, kind: int, body: bytes) -> bool:
        """An offer, a ready or a handover to node ``key``."""
        if self._closed:
            return False
        self._awake()
        return self.transport.publish(self.names.node(key), self._pieces(self._hdr[kind] + body),
                                      control=True)

    def _oversize(self) -> bool:
        self.oversize_dropped += 1
        self.transport.dropped += 1
        return False

    def _pieces(self, message: bytes) -> bytes | list[bytes]:
        """``message``, or its pieces if the broker takes less (in order, on one channel:
        the broker keeps them so; the receiving node joins them)."""
        limit = self.transport.max_payload
        if len(message) <= limit:
            return message
        head = self._hdr[env.PIECE]
        step = limit - len(head) - 8
        count = -(-len(message) // step)
        self._piece_id = (self._piece_id + 1) & 0xFFFFFFFF
        ident = self._piece_id.to_bytes(4, "big")
        total = count.to_bytes(2, "big")
        view = memoryview(message)
        return [b"".join((head, ident, i.to_bytes(2, "big"), total, view[i * step:(i + 1) * step]))
                for i in range(count)]

    def _whole(self, data: bytes) -> bytes | None:
        """A piece on a channel that checks staleness per piece: the whole message once
        its last piece is here, else (not yet, or from a node declared dead) None."""
        if self._gone_raw and self._stale(data):
            return None
        return self._assemble(data)

    def _assemble(self, data: bytes) -> bytes | None:
        """A piece received: the whole message once its last piece is here, else None.
        What is being joined is bounded (``max_buffer`` bytes: the oldest goes, counted in
        ``pieces_lost``); a piece out of turn loses its message."""
        pos = 2 + data[1]
        key = (data[2:pos], data[pos:pos + 4])
        index = int.from_bytes(data[pos + 4:pos + 6], "big")
        count = int.from_bytes(data[pos + 6:pos + 8], "big")
        part = data[pos + 8:]
        parts = self._assembling.pop(key, None)
        if parts is not None:
            self._assembling_bytes -= sum(map(len, parts))
        if index == 0:
            parts = []
        elif parts is None or len(parts) != index:
            self.pieces_lost += 1
            return None
        parts.append(part)
        if index + 1 == count:
            return b"".join(parts)
        self._assembling[key] = parts
        self._assembling_bytes += sum(map(len, parts))
        while self._assembling_bytes > self.transport.max_buffer and self._assembling:
            oldest = next(iter(self._assembling))
            self._assembling_bytes -= sum(map(len, self._assembling.pop(oldest)))
            self.pieces_lost += 1
        return None

    def state(self) -> dict[str, Any]:
        """For /healthz and /metrics: the transport's state and counters, this node's id
        and key, the other nodes known alive, and this node's own counters."""
        out = self.transport.state()
        out.update(
            node_id=self.node_id,
            node=self.key,
            nodes=sorted(key.rpartition(":")[0] for key in list(self._nodes)),
            rooms=len(self._rooms) - len(self._lingering),
            lingering=len(self._lingering),
            clients=len(self._clients),
            frames_out=self.frames_out,
            frames_local=self.frames_local,
            frames_in=self.frames_in,
            direct_out=self.direct_out,
            direct_in=self.direct_in,
            nodes_lost=self.nodes_lost,
            incarnations=self.incarnations,
            stale_dropped=self.stale_dropped,
            id_collisions=self.id_collisions,
            oversize_dropped=self.oversize_dropped,
            pieces_lost=self.pieces_lost,
            lists_sent=self.lists_sent,
            lists_coalesced=self.lists_coalesced,
        )
        return out

    # -- receiving ----------------------------------------------------------------------------

    def _own(self, data: bytes) -> bool:
        """Whether ``data`` is this node's own message, echoed by the broker."""
        return data[1] == self._key_len and data.startswith(self._key_bytes, 2)

    def _frame(self, data: bytes) -> tuple[bytes, str | None]:
        """The frame and the excluded member of an F or A message."""
        pos = data[1] + 2 + env.SEQ
        size = data[pos]
        pos += 1
        self.frames_in += 1
        return data[pos + size:], data[pos:pos + size].decode() if size else None

    def _stale(self, data: bytes) -> bool:
        """Whether ``data`` comes from a key declared dead or gone (then it is dropped,
        counted, and a node declared dead is told so)."""
        raw = data[2:2 + data[1]]
        if raw not in self._gone_raw:
            return False
        self.stale_dropped += 1
        self._tell_dead(raw.decode())
        return True

    def _on_room(self, st: _Room, data: bytes) -> None:
        if self._own(data):
            return
        if data[0] == env.PIECE:
            whole = self._whole(data)
            if whole is None:
                return
            data = whole
        n = data[1]
        if data[0] == env.ROOM:
            if self._gone_raw and self._stale(data):
                return
            pos = 2 + n
            st.last[data[2:pos]] = data[pos:pos + env.SEQ]
            frame, exclude = self._frame(data)
            if st.captures:
                for capture in st.captures:
                    if exclude != capture.member:
                        capture.keep("r:" + st.name, data, frame)
            assert self._events is not None
            self._events.remote_frame(st.name, frame, exclude)
            return
        if st.quiet:
            return
        origin = data[2:2 + n].decode()
        if not self._heard(origin):
            return
        kind = data[0]
        body = 2 + n
        if kind == env.JOINED:
            self._joined(st, origin, data[body:].decode())
        elif kind == env.LEFT:
            self._left(st, origin, data[body:].decode())
        elif kind == env.HERE:
            self._here(st, origin, data[body:].decode())
        elif kind == env.DROPPED:
            if st.ready.done():
                assert self._events is not None
                self._events.remote_presence(st.name, data[body:].decode(), "member_dropped")
        elif kind == env.REQUEST:
            self._answer_room(st)
        elif kind == env.CHECK:
            self.transport.publish(self.names.node(origin), b"".join(
                (self._hdr[env.HEARD], *env.pack_names((st.name,)))), control=True)
        elif kind == env.MEMBERS or kind == env.MEMBERS_MORE:
            names = env.unpack_names(data, body)
            key = (st.name, origin)
            members = self._partial.pop(key, None)
            if members is None:
                members = dict.fromkeys(names)
            else:
                members.update(dict.fromkeys(names))
            if kind == env.MEMBERS_MORE:
                self._partial[key] = members
            elif origin in st.pending:
                self._finish(st, origin, members)
            else:
                self._replace(st, origin, members)

    def _on_all(self, data: bytes) -> None:
        if self._own(data) or (self._gone_raw and self._stale(data)):
            return
        if data[0] == env.PIECE:
            whole = self._assemble(data)
            if whole is None:
                return
            data = whole
        pos = 2 + data[1]
        self._last_all[data[2:pos]] = data[pos:pos + env.SEQ]
        frame, exclude = self._frame(data)
        for capture in self._captures.values():
            if exclude != capture.member:
                capture.keep("a", data, frame)
        assert self._events is not None
        self._events.remote_frame_all(frame, exclude)

    def _on_direct(self, member: str, data: bytes) -> bool:
        if self._gone_raw and self._stale(data):
            return True  # dropped, which is not "no such client"
        if data[0] == env.PIECE:
            whole = self._assemble(data)
            if whole is None:
                return True  # not the last piece: nothing to answer yet
            data = whole
        if data[0] == env.CLAIM:
            return self.on_session is not None and self.on_session(
                data[2:2 + data[1]].decode(), env.CLAIM, data[2 + data[1]:])
        self.direct_in += 1
        pos = 2 + data[1]
        last = self._last_direct.get(member)
        if last is None:
            last = self._last_direct[member] = {}
        last[data[2:pos]] = data[pos:pos + env.SEQ]
        capture = self._captures.get(member)
        if capture is not None:
            if not self._own(data):  # (this node's own were kept as they went out)
                capture.keep("d", data, data[pos + env.SEQ:])
            return True
        assert self._events is not None
        return bool(self._events.remote_direct(member, data[pos + env.SEQ:]))

    def _on_ctl(self, data: bytes) -> None:
        if self._own(data):
            return
        n = data[1]
        kind = data[0]
        origin = data[2:2 + n].decode()
        if kind == env.BYE:
            self._node_gone(origin, "closed", said_bye=True)
            return
        if kind == env.PROBE:
            if origin.rpartition(":")[0] == self.node_id:
                self._same_id(origin)
            if self._started or self._starting:
                self.transport.publish(self.names.node(origin), self._hdr[env.HEARTBEAT] + b"p"
                                       + str(len(self._nodes)).encode(), control=True)
            return
        if not self._heard(origin):
            return
        if kind == env.GOING:
            self._going.add(origin)
        elif kind == env.HELLO:
            others = len(self._nodes) - 1
            self.transport.publish(self.names.node(origin), self._hdr[env.HEARTBEAT] + b"i"
                                   + str(others).encode(), control=True)
        elif kind == env.REQUEST:
            self._answer(origin, env.unpack_names(data, 2 + n), broadcast=True)

    def _on_node(self, data: bytes) -> None:
        if data[0] == env.PIECE:
            whole = self._whole(data)
            if whole is None:
                return
            data = whole
        n = data[1]
        kind = data[0]
        origin = data[2:2 + n].decode()
        if not self._heard(origin):
            return
        if kind == env.OFFER or kind == env.READY or kind == env.HANDOVER:
            if self.on_session is not None:
                self.on_session(origin, kind, data[2 + n:])
        elif kind == env.HEARTBEAT:
            if len(data) > 3 + n:  # an answer to our probe or hello: how many others it knows
                self._expect = max(self._expect, int(data[3 + n:]) + 1)
                if data[2 + n] == _HELLO_ANSWER:
                    self._unheard.discard(origin)
                    if not self._unheard and self._greeted is not None \
                            and not self._greeted.done():
                        self._greeted.set_result(None)
            if (self._discovered is not None and not self._discovered.done()
                    and len(self._nodes) >= self._expect):
                self._discovered.set_result(None)
        elif kind == env.NONE_HERE:
            for room in env.unpack_names(data, 2 + n):
                st = self._rooms.get(room)
                if st is not None:
                    pending = st.pending.get(origin)
                    if pending is not None:
                        self._finish(st, origin, pending.members)
        elif kind == env.REQUEST:
            self._answer(origin, env.unpack_names(data, 2 + n))
        elif kind == env.DEAD:
            if data[2 + n:].decode() == self.key:  # not a late notice to an earlier key
                self._restart(f"was declared dead by node {origin}")
        elif kind == env.HEARD:
            for room in env.unpack_names(data, 2 + n):
                st = self._rooms.get(room)
                if st is not None and origin in st.awaiting:
                    st.awaiting.discard(origin)
                    self._maybe_ready(st)

    # -- member lists -------------------------------------------------------------------------

    def _joined(self, st: _Room, origin: str, member: str) -> None:
        pending = st.pending.get(origin)
        if pending is not None:
            pending.joined(member)
            return
        members = st.view.get(origin)
        if members is None:
            members = st.view[origin] = {}
        elif member in members:
            return
        members[member] = None
        if st.ready.done():
            assert self._events is not None
            self._events.remote_joined(st.name, member)

    def _left(self, st: _Room, origin: str, member: str) -> None:
        pending = st.pending.get(origin)
        if pending is not None:
            pending.left(member)
            return
        members = st.view.get(origin)
        if members is None or member not in members:
            return
        del members[member]
        if not members:
            del st.view[origin]
        if st.ready.done() and not _listed(st, member):
            assert self._events is not None
            self._events.remote_left(st.name, member)

    def _here(self, st: _Room, origin: str, member: str) -> None:
        """``member`` is on ``origin`` now (its session resumed there, or moved there):
        forgotten wherever else it was."""
        self._forget_elsewhere(st, member, origin)
        pending = st.pending.get(origin)
        if pending is not None:
            pending.joined(member)
        else:
            st.view.setdefault(origin, {})[member] = None
        if st.ready.done():
            assert self._events is not None
            self._events.remote_presence(st.name, member, "member_back")

    @staticmethod
    def _forget_elsewhere(st: _Room, member: str, origin: str) -> None:
        """``member`` is on node ``origin`` (this one: its key): no other node's list of
        ``st`` has it."""
        for key, members in list(st.view.items()):
            if key != origin and member in members:
                del members[member]
                if not members:
                    del st.view[key]
        for key, pending in st.pending.items():
            if key != origin:
                pending.left(member)

    def _replace(self, st: _Room, origin: str, members: dict[str, None]) -> None:
        """``origin``'s members of the room are now ``members``; report the difference."""
        old = st.view.get(origin)
        if members:
            st.view[origin] = members
        else:
            st.view.pop(origin, None)
        if not st.ready.done():
            return  # the joiner's join_ack lists them
        assert self._events is not None
        if old:
            for member in old:
                if member not in members:
                    self._events.remote_left(st.name, member)
        for member in members:
            if not old or member not in old:
                self._events.remote_joined(st.name, member)

    def _finish(self, st: _Room, origin: str, members: dict[str, None]) -> None:
        """``origin`` answered (or ran out of time): its list is what its messages said."""
        st.pending.pop(origin, None)
        self._replace(st, origin, members)
        self._maybe_ready(st)

    def _maybe_ready(self, st: _Room) -> None:
        if st.syncing and not st.pending and not st.awaiting:
            self._set_ready(st)

    def _set_ready(self, st: _Room) -> None:
        st.syncing = False
        st.awaiting.clear()
        if st.timer is not None:
            st.timer.cancel()
            st.timer = None
        if not st.ready.done():
            st.ready.set_result(None)

    def _subscribed(self, st: _Room, confirmed: asyncio.Future[None]) -> None:
        if confirmed.cancelled() or self._rooms.get(st.name) is not st:
            return  # connection lost first (the reconnect asks for everything) or room gone
        st.subscribed = True
        if st.ready.done():  # the broker confirmed after sync_timeout: catch up, reporting
            self._request([st], list(self._nodes), None)
            return
        assert st.timer is not None
        until = st.timer.when()
        for key in self._nodes:
            st.pending[key] = _Pending(until, st.view.get(key))
        self._queue_request(st.name)
        self._maybe_ready(st)

    def _sync_deadline(self, st: _Room) -> None:
        st.timer = None
        if self._rooms.get(st.name) is not st:
            return
        self._give_up(st)
        self._set_ready(st)

    def _request(self, rooms: list[_Room], keys: list[str], target: str | None) -> None:
        """Ask nodes ``keys`` (all, on ctl, or ``target`` alone) for their lists of ``rooms``;
        meanwhile their messages build new lists, reported as differences on the answer."""
        rooms = [st for st in rooms if not st.quiet]
        if not rooms or not keys:
            return
        assert self._loop is not None
        until = self._loop.time() + self.sync_timeout
        for st in rooms:
            for key in keys:
                if key not in st.pending:
                    st.pending[key] = _Pending(until, st.view.get(key))
        if target is None:
            self._broadcast_request([st.name for st in rooms])
        else:
            channel = self.names.node(target)
            for chunk in env.pack_names(st.name for st in rooms):
                self.transport.publish(channel, self._hdr[env.REQUEST] + chunk, control=True)
        self._loop.call_later(self.sync_timeout, self._expire, rooms)

    def _expire(self, rooms: list[_Room]) -> None:
        assert self._loop is not None
        now = self._loop.time() + 1e-3
        for st in rooms:
            if self._rooms.get(st.name) is st:
                self._give_up(st, now)

    def _give_up(self, st: _Room, now: float = math.inf) -> None:
        """Stop waiting for the answers due by ``now``: each such node's list is what is
        known of it (see _Pending)."""
        for origin, pending in list(st.pending.items()):
            if pending.until <= now:
                self._finish(st, origin, pending.known)

    def _queue_request(self, room: str) -> None:
        # Rooms first joined in one loop turn share one request.
        self._requests.append(room)
        if not self._requests_scheduled:
            self._requests_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._send_requests)

    def _send_requests(self) -> None:
        self._requests_scheduled = False
        rooms, self._requests = self._requests, []
        # A room left since it was queued has no list to learn.
        rooms = [room for room in rooms
                 if room in self._rooms and (self._rooms[room].local or self._rooms[room].captures)]
        if rooms and self._live():
            self._broadcast_request(rooms)

    def _broadcast_request(self, rooms: list[str]) -> None:
        """Ask every node about ``rooms``: on each room's channel, where the nodes with
        members there get it after our join (so they know we have members before they
        answer), and on ``ctl``, where the others answer "none here"."""
        request = self._hdr[env.REQUEST]
        for room in rooms:
            self.transport.publish(self._rooms[room].channel, request, control=True)
        for chunk in env.pack_names(rooms):
            self.transport.publish(self.names.ctl, request + chunk, control=True)

    def _answer(self, origin: str, rooms: list[str], *, broadcast: bool = False) -> None:
        """A node asks for our members of ``rooms``: the list on each room's channel (in
        order with our joins and leaves there), "none here" on its node channel. A request
        on ``ctl`` is also made on the room channels: a room we are subscribed to is
        answered there, when that copy arrives."""
        none = []
        for room in rooms:
            st = self._rooms.get(room)
            if st is None or st.quiet:
                none.append(room)
            elif not (broadcast and st.subscribed):
                self._answer_room(st)
        if none:
            channel = self.names.node(origin)
            for chunk in env.pack_names(none):
                self.transport.publish(channel, self._hdr[env.NONE_HERE] + chunk, control=True)

    def _answer_room(self, st: _Room) -> None:
        """A node asked for our list of ``st``: publish it on the room channel now, or, if
        one went out less than ``answer_gap`` ago, once when the gap has passed for every
        request meanwhile. A list on the channel answers every node subscribed to it (what
        they hear after it from us keeps it current), so however many nodes ask, and
        however often one client makes its node ask, the room's list crosses the broker at
        most once per gap."""
        if st.announce_timer is not None:
            self.lists_coalesced += 1
            return
        assert self._loop is not None
        wait = st.announced + self.answer_gap - self._loop.time()
        if wait <= 0:
            self._announce_room(st)
        else:
            self.lists_coalesced += 1
            st.announce_timer = self._loop.call_later(wait, self._announce_due, st)

    def _announce_due(self, st: _Room) -> None:
        st.announce_timer = None
        if self._rooms.get(st.name) is st and not self._closed:
            self._announce_room(st)

    def _announce_room(self, st: _Room) -> None:
        assert self._loop is not None
        st.announced = self._loop.time()
        self.lists_sent += 1
        self._announce(st.channel, st.local)

    def _check(self, st: _Room) -> None:
        """Members here again in a room followed meanwhile: its lists are current (every
        join and leave on the channel reached us), so ask nobody for them. The nodes with
        members there only need to have handled our join before our joiner is told who
        is in the room (else they may skip publishing to us): the check goes on the room
        channel after the join, and each of them says "heard" on our node channel."""
        if not self.transport.connected:
            return  # nobody hears anything; the lists heal on reconnect
        keys = [key for key in st.view if key in self._nodes]
        if not keys:
            return
        assert self._loop is not None
        st.ready = self._loop.create_future()
        st.syncing = True
        st.awaiting.update(keys)
        st.timer = self._loop.call_later(self.sync_timeout, self._sync_deadline, st)
        self.transport.publish(st.channel, self._hdr[env.CHECK], control=True)

    def _announce(self, channel: str, members: dict[str, None] | tuple[()]) -> None:
        chunks = env.pack_names(members)
        for chunk in chunks[:-1]:
            self.transport.publish(channel, self._hdr[env.MEMBERS_MORE] + chunk, control=True)
        self.transport.publish(channel, self._hdr[env.MEMBERS] + chunks[-1], control=True)

    # -- nodes ----------------------------------------------------------------------------------

    def _heard(self, origin: str) -> bool:
        """Note that ``origin`` is alive; False if its messages are to be ignored."""
        if origin in self._gone:
            self.stale_dropped += 1
            self._tell_dead(origin)
            return False
        assert self._loop is not None
        now = self._loop.time()
        if origin in self._nodes:
            self._nodes[origin] = now
            return True
        node_id, _, incarnation = origin.rpartition(":")
        if node_id == self.node_id:
            self._same_id(origin)
            return False
        previous = self._by_id.get(node_id)
        if previous is not None:
            if previous.rpartition(":")[2] > incarnation:
                return False  # a late message of an older incarnation
            self._node_gone(previous, "restarted")
        self._nodes[origin] = now
        self._by_id[node_id] = origin
        log.info("backplane %s: node %s is here", self.transport.url, origin)
        # New to us, or back after we declared it dead: learn its members of our rooms.
        self._request(list(self._rooms.values()), [origin], origin)
        self._tell("node_found", origin)
        return True

    def _same_id(self, other: str) -> None:
        """``other`` has our node id and is not one of our own earlier keys: two live
        nodes share an id (started with the same --node-id, or a node paused past
        node_timeout came back while another took its id). Starting, we refuse to join
        if ``other`` is the older; running, the newer of the two takes a fresh id."""
        if other in self._past_keys or other in self._collided or self._closed:
            return
        if self._starting:
            if other < self.key:  # the older one stays; a newer starter refuses itself
                self._conflict = other
                if self._discovered is not None and not self._discovered.done():
                    self._discovered.set_result(None)
            return
        self._collided[other] = None
        if len(self._collided) > _MAX_GONE:
            del self._collided[next(iter(self._collided))]
        self.id_collisions += 1
        if other < self.key:
            fresh = _renamed(self.node_id)
            log.error("backplane %s: node id %r is used by two live nodes (this one, key %s, "
                      "and key %s): this one, the newer, continues as %r; give every node "
                      "its own node_id", self.transport.url, self.node_id, self.key, other,
                      fresh)
            self.node_id = fresh
            self._restart("gave up its node id")
        else:
            log.error("backplane %s: node id %r is used by two live nodes (this one, key %s, "
                      "and key %s): the newer takes a fresh id; give every node its own "
                      "node_id", self.transport.url, self.node_id, self.key, other)

    def _node_gone(self, key: str, why: str, *, said_bye: bool = False) -> None:
        """``key`` is dead (or closed): its members leave every room here, and whatever it
        still sends is dropped (a node declared dead that still talks is told so, and
        starts over under a new key)."""
        self._gone[key] = math.inf if said_bye else -math.inf
        self._gone_raw.add(key.encode())
        while len(self._gone) > _MAX_GONE:
            oldest = next(iter(self._gone))
            del self._gone[oldest]
            self._gone_raw.discard(oldest.encode())
        self._going.discard(key)
        if self._nodes.pop(key, None) is None:
            return
        node_id = key.rpartition(":")[0]
        if self._by_id.get(node_id) == key:
            del self._by_id[node_id]
        self.nodes_lost += 1
        log.log(logging.INFO if said_bye else logging.WARNING, "backplane %s: node %s %s; "
                "its members left", self.transport.url, key, why)
        for partial_key in [k for k in self._partial if k[1] == key]:
            del self._partial[partial_key]
        raw = key.encode()
        for piece_key in [k for k in self._assembling if k[0] == raw]:
            self._assembling_bytes -= sum(map(len, self._assembling.pop(piece_key)))
        events = self._events
        assert events is not None
        for st in list(self._rooms.values()):
            st.pending.pop(key, None)
            st.awaiting.discard(key)
            members = st.view.pop(key, None)
            if members and st.ready.done():
                for member in members:
                    if not _listed(st, member):  # (moved to a live node meanwhile)
                        events.remote_left(st.name, member)
            self._maybe_ready(st)
        self._tell("node_lost", key)

    def _tell_dead(self, key: str) -> None:
        """``key``, declared dead here, still talks: tell it (at most once per heartbeat
        interval), so that it starts over under a new key."""
        told = self._gone.get(key)
        assert self._loop is not None
        now = self._loop.time()
        if told is None or now - told < self.heartbeat_interval or self._closed:
            return
        self._gone[key] = now
        self.transport.publish(self.names.node(key), self._hdr[env.DEAD] + key.encode(),
                               control=True)

    def _awake(self) -> None:
        """Before this node publishes: if its loop was stalled (SIGSTOP, a blocking call)
        past node_timeout, the others have declared it dead: start over first, so that
        nothing goes out under the dead key."""
        assert self._loop is not None
        now = self._loop.time()
        if now - self._tick_at > self.node_timeout and self._ticker is not None:
            self._restart(f"was stalled {now - self._tick_at:.1f} s (node_timeout "
                          f"{self.node_timeout:g} s)")

    def _restart(self, why: str) -> None:
        """The others declared this node dead (or surely did): drop what waits for the
        broker under the old key, say goodbye under it, and come back under a new one,
        announcing every member again and asking for everyone's lists. The clients'
        rooms carry on; the other nodes report our members left, then joined again."""
        if self._closed:
            return
        assert self._loop is not None
        log.warning("backplane %s: node %s %s: it starts over as a new incarnation (its "
                    "members are announced again; %d messages waiting for the broker are "
                    "dropped)", self.transport.url, self.key, why,
                    self.transport.waiting())
        self.incarnations += 1
        self.transport.discard_pending()
        now = self._loop.time()
        stalled, self._tick_at = now - self._tick_at, now
        for key in self._nodes:
            self._nodes[key] = now  # our stall is not their silence
        if not self.transport.connected:
            # The goodbye would be lost, and the others, if they lost the broker too,
            # still count our members under the old key: change keys on reconnect,
            # goodbye first. (The link is down already: its return tells the server.)
            self._rekey = True
            return
        self._new_incarnation()
        self._reannounce()
        # Our clients missed what the others sent meanwhile; the others dropped ours.
        self._link(False)
        self._link(True, stalled if stalled > self.node_timeout else 0.0)

    async def _tick(self) -> None:
        assert self._loop is not None
        loop = self._loop
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            now = loop.time()
            late = now - self._tick_at - self.heartbeat_interval
            try:
                self._awake()
                self._tick_at = now = loop.time()
                self._beat(now, late)
            except Exception:
                # One bad round (a server callback raising in remote_left) must not end
                # the heartbeats: the others would declare this node and its members gone.
                log.exception("backplane %s: heartbeat round failed", self.transport.url)

    def _beat(self, now: float, late: float) -> None:
        if not self.transport.connected:
            return
        self.transport.publish(self.names.ctl, self._hdr[env.HEARTBEAT], control=True)
        self._prune_uncertain()
        if late > self.node_timeout / 2:
            # This loop was stalled: what it did not read is not the others' silence.
            for key in self._nodes:
                self._nodes[key] = now
            return
        # Silence counts only up to the broker's last answer to us: a stalled broker (or
        # link) silences everyone, which is not everyone's death.
        heard = min(now, self.transport.answered_at)
        limit = heard - self.node_timeout
        for key, seen in list(self._nodes.items()):
            if seen < limit:
                self._node_gone(key, f"silent for {now - seen:.1f} s")

    def _prune_uncertain(self) -> None:
        confirmed = self.transport.confirmed
        while self._uncertain:
            room = next(iter(self._uncertain))
            if self._uncertain[room] > confirmed:
                break
            del self._uncertain[room]
        if self._overflow_at and self._overflow_at <= confirmed:
            # Left while connected and heard by the broker: no reason for a new incarnation.
            self._overflow_at = 0.0

    def _on_state(self, up: bool) -> None:
        if not self._started or self._closed:
            return
        if not up:
            # Nothing more arrives: end every wait with what is known.
            for st in list(self._rooms.values()):
                self._give_up(st)
                self._set_ready(st)
            self._link(False)
            return
        assert self._loop is not None
        now = self._loop.time()
        for key in self._nodes:
            self._nodes[key] = now  # the outage is not their silence
        for st in self._rooms.values():
            st.subscribed = True  # the transport subscribed again to everything
        if self._overflow_at or self._rekey:
            self._overflow_at = 0.0
            self._rekey = False
            self._new_incarnation()
        self._reannounce()
        self._link(True, self.transport.last_outage)

    def _link(self, up: bool, down_for: float = 0.0) -> None:
        """Tell the server the link went down or came back (see ClusterEvents)."""
        assert self._events is not None
        try:
            if up:
                self._events.link_up(down_for)
            else:
                self._events.link_down()
        except Exception:
            log.exception("backplane %s: link callback raised", self.transport.url)

    def _reannounce(self) -> None:
        """After a reconnect or a new incarnation: hello, every room's list (empty ones
        for rooms the broker may not have heard us leave), and everyone's lists asked
        for, so that every list heals within sync_timeout."""
        self.transport.publish(self.names.ctl, self._hdr[env.HELLO], control=True)
        for st in self._rooms.values():
            if not st.quiet:
                self._announce_room(st)
        for room in self._uncertain:
            self._announce(self.names.room(room), ())
        self._uncertain.clear()
        self._request(list(self._rooms.values()), list(self._nodes), None)
        self._tell("reconnected")

    # -- helpers ----------------------------------------------------------------------------

    def _set_identity(self) -> None:
        # The incarnation is the start time (fixed width hex): a restarted node with the
        # same id sorts after its previous life.
        incarnation = f"{time.time_ns() // 1000:014x}"
        self.key = f"{self.node_id}:{incarnation}"
        self._key_bytes = self.key.encode()
        self._key_len = len(self._key_bytes)
        self._node_channel = self.names.node(self.key)
        self._hdr = {kind: env.header(kind, self._key_bytes) for kind in (
            env.ROOM, env.ALL, env.DIRECT, env.JOINED, env.LEFT, env.MEMBERS,
            env.MEMBERS_MORE, env.HEARTBEAT, env.HELLO, env.BYE, env.REQUEST, env.NONE_HERE,
            env.CHECK, env.HEARD, env.DEAD, env.PROBE, env.PIECE, env.DROPPED, env.HERE,
            env.CLAIM, env.OFFER, env.READY, env.HANDOVER, env.GOING)}

    def _new_incarnation(self) -> None:
        """Start over under a new key: the others drop every member of the old one."""
        self.transport.publish(self.names.ctl, self._hdr[env.BYE], control=True)
        self.transport.unsubscribe(self._node_channel)
        self._past_keys[self.key] = None
        if len(self._past_keys) > _MAX_GONE:
            del self._past_keys[next(iter(self._past_keys))]
        self._set_identity()
        self.transport.subscribe(self._node_channel, self._on_node)
        self._tell("restarted")

    def _live(self) -> bool:
        if not self._started:
            raise RuntimeError("Cluster.start() first")
        return not self._closed

    def _publish_presence(self, channel: str, kind: int, member: str) -> None:
        raw = member.encode()
        if len(raw) > 255:
            raise ValueError("member ids are at most 255 bytes on the backplane")
        self.transport.publish(channel, self._hdr[kind] + raw, control=True)

    def _framed(self, kind: int, frame: bytes, exclude: str | None) -> bytes:
        self._seq += 1
        head = self._hdr[kind] + self._seq.to_bytes(env.SEQ, "big")
        if not exclude:
            return b"".join((head, b"\x00", frame))
        raw = exclude.encode()
        if len(raw) > 255:
            raise ValueError("member ids are at most 255 bytes on the backplane")
        return b"".join((head, env.LENGTH[len(raw)], raw, frame))
