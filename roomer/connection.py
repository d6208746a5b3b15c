"""A connected client as server-side code sees it: `Connection` (in the default
namespace) and `NamespaceConnection` (the same client in another namespace).

No socket I/O here: a Connection is also the client's outbox (a fan-out
`Peer`), and what it asks of its socket (close, pause and resume
reading, ping) is done by the picows listener that roomer/server.py makes of it. Its
inbound state (order, pacing, limits) is its `Inbound`, owned by
the router.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from . import codec, fanout
from .asks import Asks
from .inbound import CONNECTING, Inbound
from .registry import ROOT

if TYPE_CHECKING:
    from .core import Core
    from .namespaces import Namespace
    from .sessions import Session

__all__ = ["Connection", "NamespaceConnection", "Payload"]

#: What a message's payload may be given as (a str is sent as its UTF-8 bytes).
Payload = bytes | bytearray | memoryview | str


class Connection(fanout.Peer):
    """One client, created at its WebSocket upgrade; handlers and hooks of the default
    namespace get it.

    Attributes:
        id: The client's id: unguessable UUIDv4 text, unique in the cluster.
        claims: What ``authorize`` returned for it (None without ``authorize``).
        request: Its upgrade request (``path``, ``headers``).
        v2: Whether it speaks protocol v2 (it offered the ``roomer.v2`` subprotocol).
        inbound: Its inbound state (roomer.inbound.Inbound), owned by the router.

    Its methods run on the server's loop thread only; from another thread they raise
    RuntimeError (use ``server.call_threadsafe``).
    """

    # Slots keep an idle connection small (no per-instance dict with the compiled Peer).
    __slots__ = ("_core", "_cut", "_data", "_pending_joins", "_rooms", "_session", "_spaces",
                 "asks", "claims", "id", "request")

    def __init__(self, core: Core, request: Any, claims: Any, v2: bool = False) -> None:
        super().__init__(core.engine)
        self._core = core
        self.v2 = v2
        self.id = str(uuid.uuid4())
        self.claims = claims
        self.request = request
        self.inbound: Inbound = core.router.inbound()
        # The server's asks of this client waiting for an answer.
        self.asks = Asks()
        # Kept by the registries: the rooms it is in here (a dict, not a set: smaller
        # when it holds a few rooms, and it keeps join order), and its views in the
        # namespaces it connected to besides the default one.
        self._rooms: dict[str, None] = {}
        self._spaces: dict[str, NamespaceConnection] | None = None
        # Server-driven joins made while on_connect runs: they happen at acceptance.
        self._pending_joins: list[str] | None = None
        self._cut = False  # disconnected as a slow consumer: counted once
        # A resumable session's state (roomer/sessions.py), None without one.
        self._session: Session | None = None
        self._data: dict[str, Any] | None = None  # made when first asked for

    def __repr__(self) -> str:
        return f"<roomer.Connection {self.id}>"

    @property
    def rooms(self) -> frozenset[str]:
        """Names of the rooms of the default namespace it is in."""
        return frozenset(self._rooms)

    @property
    def namespace(self) -> str:
        """``""``: this is the default namespace's view of the client."""
        return ""

    def room_count(self) -> int:
        """Rooms it is in, every namespace's root left out: what ``max_rooms_per_connection``
        bounds."""
        count = len(self._rooms) - (ROOT in self._rooms)
        for view in (self._spaces or {}).values():
            count += len(view._rooms) - (ROOT in view._rooms)
        return count

    def send(self, event: str, payload: Payload = b"", room: str = ROOT) -> bool:
        """Send a server-originated message (src empty) to this client.

        Returns:
            False when it was not queued (outbox full in async mode, or closing).
        """
        self._core.loop_only("Connection.send")
        return self._default._send(self, event, payload, room)

    def try_send(self, message: bytes) -> bool:
        """Queue an encoded roomer message (``Message.encode()``) to this client.

        Returns:
            False when it was dropped (outbox full, or closing). Never blocks.
        """
        self._core.loop_only("Connection.try_send")
        frame = codec.frame_header(len(message)) + bytes(message)
        return self._default.registry.send(self, frame)

    def send_to_room(self, room: str, event: str, payload: Payload = b"") -> int:
        """Broadcast to ``room``'s members except this client, with src = its id.

        Returns:
            How many receivers on this node it was queued to.
        """
        self._core.loop_only("Connection.send_to_room")
        return self._default._send_to_room(self, room, event, payload)

    def send_to_client(self, dst: str, event: str, payload: Payload = b"",
                       room: str = ROOT) -> bool:
        """A direct message to client ``dst`` with src = this client's id.

        Returns:
            False if ``dst`` is unknown (with a backplane: True once handed to the other
            nodes, whether one holds ``dst`` or not).
        """
        self._core.loop_only("Connection.send_to_client")
        return self._default._send_to_client(self, dst, event, payload, room)

    def join(self, room: str) -> bool:
        """Put this client in ``room`` (server-driven: no on_join hook, no room limit;
        on_joined runs). From an on_connect hook the join takes effect once the
        connection is accepted (after its root join_ack).

        Returns:
            False, and nothing done, once it is closing.

        Raises:
            ValueError: ``room`` is not a valid room name.
        """
        self._core.loop_only("Connection.join")
        if self.inbound.state == CONNECTING:
            self._core.check_room_name(room)
            if self._pending_joins is None:
                self._pending_joins = []
            self._pending_joins.append(room)
            return True
        return self._default._join(self, room)

    def leave(self, room: str) -> bool:
        """Take this client out of ``room`` (server-driven: no on_leave hook; on_left
        runs).

        Returns:
            False, and nothing done, once it is closing.

        Raises:
            ValueError: ``room`` is not a valid room name.
        """
        self._core.loop_only("Connection.leave")
        if self.inbound.state == CONNECTING:
            self._core.check_room_name(room)
            if self._pending_joins and room in self._pending_joins:
                self._pending_joins.remove(room)
            return True
        return self._default._leave(self, room)

    async def ask(self, event: str, payload: Payload = b"", room: str = ROOT,
                  timeout: float | None = 5.0) -> bytes:
        """Ask this (v2) client, in the default namespace (docs/protocol.md §7).

        Returns:
            Its handler's answer.

        Raises:
            roomer.AskTimeout: No answer within ``timeout`` seconds (None: no limit).
            roomer.ClientError: It answered with an error reply.
            ConnectionError: It disconnected first (or is not connected).
            RuntimeError: It speaks protocol v1, which has no asks.
        """
        return await self._default._ask(self, event, payload, room, timeout)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Stop handling this client, write what is queued, send a close frame and
        disconnect. Messages it sent and roomer had not handled yet are dropped.

        Raises:
            ValueError: ``code`` is not a close code an endpoint may send (1000-1003,
                1007-1014, 3000-4999).
            TypeError: ``reason`` is not a str.
        """
        self._core.loop_only("Connection.close")
        check_close(code, reason)
        self.stop(code, reason, flush=True, graceful=True)

    def abort(self, code: int, reason: str) -> None:
        """Close without writing what is queued: for receivers that stopped reading.

        Raises:
            ValueError, TypeError: as `close`.
        """
        self._core.loop_only("Connection.abort")
        check_close(code, reason)
        self.stop(code, reason, flush=False, graceful=False)

    def stop(self, code: int, reason: str, *, flush: bool, graceful: bool) -> None:
        """Close: ``flush`` hands the outbox to the transport first; ``graceful`` lets
        the transport write out what it holds (a client that never reads would keep it
        for ever). For roomer's own callers, who pass valid codes."""
        session = self._session
        if session is not None and session.held:
            # No socket to close: the held session ends (the client starts over).
            self._core.sessions.end(self)
            return
        self.inbound.close()
        if flush:
            self.close_outbox()
        else:
            self.discard_outbox()
        self.shut(code, reason, graceful)

    def cut_off(self, reason: str) -> bool:
        """Disconnect a receiver that does not keep up (1008, its outbox discarded);
        False if it was cut off already (each is counted once)."""
        if self._cut:
            return False
        self._cut = True
        self.stop(1008, reason, flush=False, graceful=False)
        return True

    def replay_full(self) -> None:
        """The fan-out's call: what this session keeps for a resume passed
        ``resume_replay`` (the oldest messages are forgotten)."""
        self._core.sessions.trim(self)

    @property
    def resumable(self) -> bool:
        """Whether it has a resumable session (it asked with ``session=new``)."""
        return self._session is not None

    @property
    def data(self) -> dict[str, Any]:
        """The app's own data about this client, for as long as it is connected: kept
        while its session is held, and carried along when the session moves to another
        node (then only what JSON can encode crosses)."""
        if self._data is None:
            self._data = {}
        return self._data

    @property
    def held(self) -> bool:
        """Whether its session is held: its socket dropped, and what is sent to it waits
        for the client to resume within the window."""
        return self._session is not None and self._session.held

    @property
    def _default(self) -> Namespace[Connection]:
        return self._core.namespaces[""]

    # The socket side, done by the server's picows listener (roomer/server.py). ---------

    def shut(self, code: int, reason: str, graceful: bool) -> None:
        """Send a close frame with ``code`` and ``reason`` and disconnect."""
        raise NotImplementedError

    def let_go(self, close: int | None = None) -> None:
        """Hold the session and drop the socket: without a close frame (its client came
        back on another socket first, here or on another node), or with ``close`` (the
        server shuts down: its client resumes on another node)."""
        raise NotImplementedError

    def pause_reading(self) -> None:
        """Stop reading the socket (the router's pacing: not for applications)."""
        raise NotImplementedError

    def resume_reading(self) -> None:
        """Read the socket again (the router's pacing: not for applications)."""
        raise NotImplementedError

    def ping(self) -> None:
        """Send a WebSocket ping (the server's ping round)."""
        raise NotImplementedError


def check_close(code: int, reason: str) -> None:
    """ValueError/TypeError for a close code or reason roomer may not put on the wire."""
    if isinstance(code, bool) or not isinstance(code, int):
        raise TypeError("close code must be an int")
    if not sendable_close_code(code):
        raise ValueError(f"close code {code} may not be sent: use 1000-1003, 1007-1014 or "
                         "3000-4999 (4000-4999 are the application's own)")
    if not isinstance(reason, str):
        raise TypeError("close reason must be a str")


def sendable_close_code(code: int) -> bool:
    """A close code an endpoint may put on the wire (RFC 6455 §7.4, IANA registry)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class NamespaceConnection:
    """A client as one namespace's handlers and hooks see it: ``id``, ``claims``,
    ``request``, ``namespace``, ``rooms``; its sends, joins, leaves and asks happen in that
    namespace. Its methods run on the server's loop thread only, as Connection's."""

    __slots__ = ("_namespace", "_rooms", "conn")

    def __init__(self, conn: Connection, namespace: Namespace[NamespaceConnection]) -> None:
        self.conn = conn
        self._namespace = namespace
        self._rooms: dict[str, None] = {}  # kept by the namespace's registry

    def __repr__(self) -> str:
        return f"<roomer.NamespaceConnection {self.conn.id} in {self._namespace.name!r}>"

    @property
    def id(self) -> str:
        """The client's id (the same in every namespace)."""
        return self.conn.id

    @property
    def claims(self) -> Any:
        """What ``authorize`` returned for the client."""
        return self.conn.claims

    @property
    def data(self) -> dict[str, Any]:
        """The client's `Connection.data` (the same in every namespace)."""
        return self.conn.data

    @property
    def request(self) -> Any:
        """The client's upgrade request (``path``, ``headers``)."""
        return self.conn.request

    @property
    def v2(self) -> bool:
        """Always True: only v2 clients connect to namespaces."""
        return True

    @property
    def namespace(self) -> str:
        """The name of the namespace this view is in."""
        return self._namespace.name

    @property
    def rooms(self) -> frozenset[str]:
        """Names of the rooms of this namespace the client is in."""
        return frozenset(self._rooms)

    def send(self, event: str, payload: Payload = b"", room: str = ROOT) -> bool:
        """A server-originated message to this client, in this namespace."""
        self.conn._core.loop_only("NamespaceConnection.send")
        return self._namespace._send(self.conn, event, payload, room)

    def send_to_room(self, room: str, event: str, payload: Payload = b"") -> int:
        """Broadcast to ``room``'s members except this client, with src = its id."""
        self.conn._core.loop_only("NamespaceConnection.send_to_room")
        return self._namespace._send_to_room(self.conn, room, event, payload)

    def send_to_client(self, dst: str, event: str, payload: Payload = b"",
                       room: str = ROOT) -> bool:
        """A direct message to client ``dst`` in this namespace, src = this id."""
        self.conn._core.loop_only("NamespaceConnection.send_to_client")
        return self._namespace._send_to_client(self.conn, dst, event, payload, room)

    def join(self, room: str) -> bool:
        """Server-driven join (no on_join hook, no room limit; on_joined runs)."""
        self.conn._core.loop_only("NamespaceConnection.join")
        return self._namespace._join(self.conn, room)

    def leave(self, room: str) -> bool:
        """Server-driven leave (no on_leave hook; on_left runs)."""
        self.conn._core.loop_only("NamespaceConnection.leave")
        return self._namespace._leave(self.conn, room)

    async def ask(self, event: str, payload: Payload = b"", room: str = ROOT,
                  timeout: float | None = 5.0) -> bytes:
        """Ask this client (docs/protocol.md §7), as `Connection.ask`."""
        return await self._namespace._ask(self.conn, event, payload, room, timeout)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the whole connection (every namespace), as `Connection.close`."""
        self.conn.close(code, reason)
