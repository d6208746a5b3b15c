"""The picows listener and the Server API: the only module that does socket I/O.

Protocol and behaviour: shared DESIGN.md §1-§5, documented for users in README.md.
The parts live beside it: options in config.py, rooms in registry.py, the routing of a
client message in routing.py, plain HTTP and upgrade checks in http.py, counters in
metrics.py, hooks in hooks.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from ssl import SSLContext
from typing import Any

from picows import WSCloseCode, WSFrame, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

from . import codec, fanout
from .config import Config
from .errors import Deny
from .hooks import Hook, Hooks
from .http import HttpSide
from .metrics import Metrics
from .namespaces import Namespace, NamespaceConnection
from .registry import CLOSING, CONNECTING, GONE, OPEN, ROOT, Nodes, Registry
from .routing import Router, name_ok

__all__ = ["Connection", "Server"]

log = logging.getLogger("roomer")

Payload = bytes | bytearray | memoryview | str

MAX_NAMESPACE = 255  # UTF-8 bytes


def _libc_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc: freed memory is the allocator's call
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


# glibc keeps freed heap memory (read buffers cut back after a burst) in the process
# until asked; asking costs a heap walk, so it is done once per ping round, if needed.
_malloc_trim = _libc_malloc_trim()


def _pong(payload: bytes) -> bytes:
    # An unmasked final PONG frame (RFC 6455 §5.5.3); control payloads are <= 125 bytes.
    return bytes((0x8A, len(payload))) + payload


def _close_reason(reason: str) -> bytes:
    """``reason`` cut to the 123 bytes a close frame holds, on a character boundary: a
    split UTF-8 character fails the whole close (browsers report 1006, and roomer.js then
    reconnects after a Deny it should have respected)."""
    raw = reason.encode()
    if len(raw) <= 123:
        return raw
    return raw[:123].decode("utf-8", "ignore").encode()


def _sendable_close_code(code: int) -> bool:
    """A close code an endpoint may put on the wire (RFC 6455 §7.4, IANA registry)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class Connection(fanout.Peer):
    """One client. Created by the server at the HTTP upgrade; also its picows listener.

    Attributes: ``id`` (unguessable UUIDv4 text), ``claims`` (what ``authorize``
    returned), ``request`` (the upgrade request), ``rooms`` (names of joined rooms of the
    default namespace), ``v2`` (it speaks protocol v2), ``namespace`` (``""``: it is the
    default namespace's view of the client; see roomer.NamespaceConnection for others).
    Its methods run on the server's loop thread only (they raise RuntimeError from any
    other thread: use ``server.call_threadsafe``).
    """

    # Slots keep an idle connection small (no per-instance dict with the compiled Peer).
    __slots__ = ("_ask_id", "_asks", "_backlog", "_backlog_held", "_busy", "_cut", "_errors",
                 "_errors_since", "_fragments", "_heard", "_held", "_limited", "_limited_since",
                 "_pending_joins", "_pinged_at", "_quiet_since", "_read_holds", "_rooms",
                 "_skipping", "_spaces", "_state", "_tokens", "_tokens_at", "_turn",
                 "_turn_work", "claims", "id", "request", "server")

    def __init__(self, server: Server, request: WSUpgradeRequest, claims: Any,
                 v2: bool = False) -> None:
        super().__init__(server._engine)
        self.server = server
        self.v2 = v2
        # The namespaces besides the default one this (v2) client connected to.
        self._spaces: dict[str, NamespaceConnection] | None = None
        # The server's asks of this client still waiting for an answer, by id.
        self._asks: dict[int, asyncio.Future[bytes]] | None = None
        self._ask_id = 1
        self.id = str(uuid.uuid4())
        self.claims = claims
        self.request = request
        self._state = CONNECTING
        # A dict, not a set: smaller when it holds a few rooms, and keeps join order.
        self._rooms: dict[str, None] = {}
        self._pending_joins: list[str] | None = None
        # Messages waiting while this connection is busy (async work of one of its
        # messages) or held (the turn budget): a client's messages are handled in order.
        self._backlog: deque[bytes] | None = None
        self._busy = False
        self._held = False
        self._backlog_held = False
        self._read_holds = 0
        self._turn = -1
        self._turn_work = 0
        self._fragments: bytearray | None = None
        self._skipping = False  # dropping the rest of a fragmented message
        limit = server.config.rate_limit
        self._tokens = float(limit[0]) if limit is not None else 0.0
        self._tokens_at = time.monotonic()
        self._limited = 0
        self._limited_since = 0.0
        self._errors = 0
        self._errors_since = 0.0
        self._cut = False
        # Idle detection for pings: any frame from the client sets _heard.
        self._heard = True
        self._quiet_since = 0.0
        self._pinged_at = 0.0

    def __repr__(self) -> str:
        return f"<roomer.Connection {self.id}>"

    @property
    def rooms(self) -> frozenset[str]:
        return frozenset(self._rooms)

    @property
    def namespace(self) -> str:
        return ""

    # picows callbacks ---------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.attach(transport)
        self.server._connected(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self._heard = True
        if frame.last_in_buffer:
            self.read_done()
        msg_type = frame.msg_type
        if msg_type is WSMsgType.CLOSE:
            self._close_received(transport, frame)
            return
        if self._state >= CLOSING or transport.is_close_frame_sent:
            # Closing: read nothing more. picows keeps parsing after its own protocol
            # error (a frame over max_message_size gets 1009, then is still delivered).
            return
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            self.close(WSCloseCode.PROTOCOL_ERROR, "reserved bits set without an extension")
            return
        if not self.server._router.admit(self, frame.get_payload_as_bytes):
            if msg_type is not WSMsgType.PING and msg_type is not WSMsgType.PONG:
                # A dropped piece of a fragmented message drops all of it.
                self._fragments = None
                self._skipping = not frame.fin
            return
        if msg_type is WSMsgType.BINARY or msg_type is WSMsgType.TEXT:
            if self._fragments is not None or self._skipping:
                self.close(WSCloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
            elif frame.fin:
                self.server._router.received(self, frame.get_payload_as_bytes())
            else:
                self._fragments = bytearray(frame.get_payload_as_memoryview())
        elif msg_type is WSMsgType.CONTINUATION:
            if self._skipping:
                self._skipping = not frame.fin
                return
            parts = self._fragments
            if parts is None:
                self.close(WSCloseCode.PROTOCOL_ERROR, "continuation without a message")
                return
            parts += frame.get_payload_as_memoryview()
            if len(parts) > self.server.config.max_message_size:
                self._fragments = None
                self.close(WSCloseCode.MESSAGE_TOO_BIG, "message too big")
            elif frame.fin:
                self._fragments = None
                self.server._router.received(self, bytes(parts))
        elif msg_type is WSMsgType.PING:
            # Answered through the outbox, so a ping flood is bounded like any reply.
            self.send_control(_pong(frame.get_payload_as_bytes()))

    def _close_received(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.payload_size == 0:
            reply = 1000  # no status received: answer a plain normal closure
        else:
            reply = frame.get_close_code().value
            if not _sendable_close_code(reply):
                reply = 1002
            else:
                reason = frame.get_close_message()  # None when only a code came
                try:
                    if reason:
                        reason.decode()
                except UnicodeDecodeError:
                    reply = 1007
        if self._state < CLOSING:
            self._state = CLOSING
        self.close_outbox()
        if not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode(reply))
        transport.disconnect()

    def hold_reading(self) -> None:
        """Stop reading this client until every hold is released (holds nest)."""
        self._read_holds += 1
        if self._read_holds == 1 and self.transport is not None:
            self.transport.underlying_transport.pause_reading()

    def release_reading(self) -> None:
        self._read_holds -= 1
        tr = self.transport
        if self._read_holds == 0 and tr is not None and not tr.is_disconnected:
            tr.underlying_transport.resume_reading()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.discard_outbox()
        self.server._disconnected(self)

    # server-side API -----------------------------------------------------------------

    def send(self, event: str, payload: Payload = b"", room: str = ROOT) -> bool:
        """Send a server-originated message (src empty) to this client. False when it
        was not queued (outbox full in async mode, or closing)."""
        self.server._loop_only("Connection.send")
        return self.server.default._send(self, event, payload, room)

    def try_send(self, message: bytes) -> bool:
        """Queue an encoded roomer message (``Message.encode()``) to this client.

        Non-blocking: False when it was dropped (outbox full, or closing).
        """
        self.server._loop_only("Connection.try_send")
        frame = codec.frame_header(len(message)) + bytes(message)
        return self.server.registry.send(self, frame)

    def send_to_room(self, room: str, event: str, payload: Payload = b"") -> int:
        """Broadcast to ``room``'s members except this connection, with src = this id."""
        self.server._loop_only("Connection.send_to_room")
        return self.server.default._send_to_room(self, room, event, payload)

    def send_to_client(self, dst: str, event: str, payload: Payload = b"",
                       room: str = ROOT) -> bool:
        """A direct message to client ``dst`` with src = this id. False if unknown (with a
        backplane: True once handed to the other nodes, whether one holds ``dst`` or not)."""
        self.server._loop_only("Connection.send_to_client")
        return self.server.default._send_to_client(self, dst, event, payload, room)

    def join(self, room: str) -> bool:
        """Put this client in ``room`` (server-driven: no on_join hook, no room limit;
        on_joined runs).

        From an on_connect hook the join takes effect once the connection is accepted
        (after its root join_ack). False, and nothing done, once it is closing.
        """
        self.server._loop_only("Connection.join")
        if self._state == CONNECTING:
            self.server._check_room_name(room)
            if self._pending_joins is None:
                self._pending_joins = []
            self._pending_joins.append(room)
            return True
        return self.server.default._join(self, room)

    def leave(self, room: str) -> bool:
        """Take this client out of ``room`` (server-driven: no on_leave hook; on_left
        runs). False, and nothing done, once it is closing."""
        self.server._loop_only("Connection.leave")
        if self._state == CONNECTING:
            self.server._check_room_name(room)
            if self._pending_joins and room in self._pending_joins:
                self._pending_joins.remove(room)
            return True
        return self.server.default._leave(self, room)

    async def ask(self, event: str, payload: Payload = b"", room: str = ROOT,
                  timeout: float = 5.0) -> bytes:
        """Ask this (v2) client, in the default namespace (docs/protocol.md §7): its
        handler's answer (bytes). Raises roomer.AskTimeout, roomer.ClientError (an error
        reply), ConnectionError (closed first) or RuntimeError (a v1 client)."""
        return await self.server.default._ask(self, event, payload, room, timeout)

    def close(self, code: int | WSCloseCode = 1000, reason: str = "") -> None:
        """Stop handling this client, write what is queued, send a close frame and
        disconnect. Messages it sent and roomer had not handled yet are dropped."""
        self.server._loop_only("Connection.close")
        self._closing(code, reason, flush=True, graceful=True)

    def abort(self, code: int | WSCloseCode, reason: str) -> None:
        """Close without writing what is queued: for receivers that stopped reading."""
        self.server._loop_only("Connection.abort")
        self._closing(code, reason, flush=False, graceful=False)

    def _closing(self, code: int | WSCloseCode, reason: str, *, flush: bool,
                 graceful: bool) -> None:
        # flush: hand the outbox to the transport first; graceful: let the transport
        # write out what it holds (a client that never reads would keep it forever).
        if self._state < CLOSING:
            self._state = CLOSING
        self._backlog = None
        if flush:
            self.close_outbox()
        else:
            self.discard_outbox()
        tr = self.transport
        if tr is None or tr.is_disconnected:
            return
        if not tr.is_close_frame_sent:
            tr.send_close(WSCloseCode(code), _close_reason(reason))
        tr.disconnect(graceful)


class Server(Namespace):
    """A roomer server: rooms, handlers, hooks and fan-out over picows.

    ``Server(**options)``: every option is a field of :class:`roomer.Config`,
    documented in README.md ("Server options"); ``server.config`` holds them. The server
    is its default namespace (``""``, what v1 clients speak): the decorators (``on``,
    ``on_connect``...) and the sending methods (``broadcast``, ``send_to``, ``do``...) are
    those of :class:`roomer.Namespace`; ``server.namespace(name)`` declares another.
    """

    def __init__(self, **options: Any) -> None:
        self.config = Config(**options)
        # Mutable on purpose: an app (the demo) adds pages after building the server.
        self.routes: dict[str, tuple[str, bytes]] = dict(self.config.routes)
        self.metrics = Metrics()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        super().__init__(self, "", Registry(self.config.root_presence))
        self._namespaces: dict[str, Namespace] = {"": self}
        self._router = Router(self)
        self._http = HttpSide(self.config, self.routes, self.metrics_text, self.health_text,
                              lambda: self._closing, self._new_connection)
        self._engine_obj: Any = None
        self._server: asyncio.Server | None = None
        self._closing = False
        self._closed: asyncio.Event | None = None
        self._sync_lock: asyncio.Lock | None = None
        # Work of clients (async handlers and hooks): shutdown lets it finish in time.
        self._tasks: set[asyncio.Task[Any]] = set()
        # The server's own loops (pings, the write-timeout watch): cancelled at shutdown.
        self._loops: set[asyncio.Task[Any]] = set()
        # (read buffers cut back, connections closed) when memory was last given back
        self._released = (0, 0)

    @property
    def default(self) -> Namespace:
        """The default namespace: the server itself."""
        return self

    @property
    def counters(self) -> dict[str, int]:
        return self.metrics.counters

    @property
    def errors(self) -> dict[str, int]:
        return self.metrics.errors

    def namespace(self, name: str) -> Namespace:
        """Declare (or get) the namespace ``name`` (docs/protocol.md §6): handlers, hooks
        and rooms of its own, for v2 clients that connect to it. Before ``start`` only."""
        existing = self._namespaces.get(name)
        if existing is not None:
            return existing
        if self._loop is not None:
            raise RuntimeError("namespaces are declared before the server starts")
        # A direct message to another node carries the namespace behind one length byte
        # (registry.direct_envelope), whatever max_event_name allows.
        limit = min(self.config.max_event_name, MAX_NAMESPACE)
        if not isinstance(name, str) or not name_ok(name, limit):
            raise ValueError(f"namespace names are 1-{limit} bytes of UTF-8 (\"\" is the "
                             "default namespace: the server itself)")
        self.config.check_namespace(name)
        created = Namespace(self, name, Registry(self.config.root_presence, name,
                                                 self.registry.conns))
        self._namespaces[name] = created
        return created

    # introspection -----------------------------------------------------------------------

    @property
    def _engine(self) -> Any:
        if self._engine_obj is None:
            raise RuntimeError("the server is not started")
        return self._engine_obj

    def connection(self, conn_id: str) -> Connection | None:
        return self.registry.conns.get(conn_id)

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("the server is not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    def stats(self) -> dict[str, Any]:
        engine = self._engine_obj
        gauges = {"connections": len(self.registry.conns), "rooms": len(self.registry.rooms)}
        out = self.metrics.snapshot(gauges, engine.stats if engine is not None else {})
        cluster = self.registry.cluster
        if cluster is not None:
            out["backplane"] = cluster.state()
        return out

    def health_text(self) -> str:
        """The /healthz body: ``ok``, and the backplane's state when there is one (a node
        whose broker is away still serves its own rooms, so it stays healthy)."""
        cluster = self.registry.cluster
        if cluster is None:
            return "ok\n"
        state = cluster.state()
        link = "connected" if state["connected"] else "disconnected (local rooms only)"
        return f"ok\nbackplane {state['url']}: {link}; other nodes: {len(state['nodes'])}\n"

    def metrics_text(self) -> str:
        """Prometheus text exposition of the server's counters."""
        return Metrics.prometheus(self.stats())

    # sending from anywhere ---------------------------------------------------------------

    def _on_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def _loop_only(self, what: str) -> None:
        # Before start anything goes (setting up); after, state belongs to the loop.
        if self._loop_thread is not None and threading.get_ident() != self._loop_thread:
            raise RuntimeError(f"{what} from another thread: it must run on the server's "
                               "loop; use server.call_threadsafe(fn, ...)")

    def _call_soon(self, fn: Callable[[], Any]) -> None:
        assert self._loop is not None
        self._loop.call_soon(fn)

    def _deliver(self, members_of: Callable[[], dict[str, Connection] | None],
                 exclude: Connection | str | None, fan: Callable[[Connection | None], int],
                 publish: Callable[[str | None], None]) -> Any:
        """A server-originated broadcast: ``fan`` it out here (to ``members_of()``, but
        ``exclude``) and ``publish`` it to the other nodes; sync mode admits it first."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the server is not started")
        if exclude is not None and not isinstance(exclude, (str, Connection)):
            raise TypeError("exclude must be a Connection, a connection id or None")
        if not self._on_loop_thread():
            return asyncio.run_coroutine_threadsafe(
                self._deliver_async(members_of, exclude, fan, publish), loop)
        if self.config.sync_broadcast:
            return loop.create_task(self._deliver_async(members_of, exclude, fan, publish))
        fut: asyncio.Future[int] = loop.create_future()
        fut.set_result(self._deliver_now(exclude, fan, publish))
        return fut

    async def _deliver_async(self, members_of: Callable[[], dict[str, Connection] | None],
                             exclude: Connection | str | None,
                             fan: Callable[[Connection | None], int],
                             publish: Callable[[str | None], None]) -> int:
        if not self.config.sync_broadcast:
            return self._deliver_now(exclude, fan, publish)
        assert self._sync_lock is not None
        # One admission at a time, in call order: the global order of sync broadcasts
        # (this node's: the other nodes get it in publish order, unawaited).
        async with self._sync_lock:
            while True:
                members = members_of()
                if not members or self._engine.over_limit(members, self._resolve(exclude)) \
                        is None:
                    return self._deliver_now(exclude, fan, publish)
                await self._engine.wait_drain()

    def _resolve(self, exclude: Connection | str | None) -> Connection | None:
        if isinstance(exclude, str):
            return self.registry.conns.get(exclude)
        return exclude

    def _deliver_now(self, exclude: Connection | str | None,
                     fan: Callable[[Connection | None], int],
                     publish: Callable[[str | None], None]) -> int:
        publish(exclude.id if isinstance(exclude, Connection) else exclude)
        return fan(self._resolve(exclude))

    def call_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the server's loop, from any thread."""
        if self._loop is None:
            raise RuntimeError("the server is not started")
        self._loop.call_soon_threadsafe(fn, *args)

    def kick(self, conn_id: str, reason: str = "kicked", code: int = 1008) -> bool:
        """Close one client's connection. False if it is not here."""
        self._loop_only("Server.kick")
        conn = self.registry.conns.get(conn_id)
        if conn is None:
            return False
        conn.close(code, reason)
        return True

    # lifecycle -----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 8080, *,
                    reuse_port: bool = False, ssl: SSLContext | None = None) -> None:
        """Listen on host:port (port 0 picks a free one; see ``address``); ``ssl`` (an
        ``ssl.SSLContext`` with the certificate loaded) serves wss:// and https://."""
        if self._server is not None:
            raise RuntimeError("the server is already started")
        config = self.config
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._closed = asyncio.Event()
        self._sync_lock = asyncio.Lock()
        self._engine_obj = fanout.Fanout(
            self._loop,
            outbox_limit=config.outbox_limit,
            # An outbox is written before it could pass the limit within one turn.
            flush_threshold=min(config.flush_threshold, config.outbox_limit),
            sync=config.sync_broadcast,
            disconnect_slow=config.slow_consumer == "disconnect",
            on_overflow=self._overflowed,
        )
        for ns in self._namespaces.values():
            ns.registry.engine = self._engine_obj
        if config.backplane is not None:
            await self._join_cluster()
        kwargs: dict[str, Any] = {}
        if reuse_port:
            kwargs["reuse_port"] = True
        if ssl is not None:
            kwargs["ssl"] = ssl
        try:
            self._server = await self._listen(host, port, kwargs)
        except BaseException:
            # Not started: shutdown() would do nothing, so the cluster (its broker
            # connection and tasks, this node's presence) goes now, and start may be retried.
            await self._leave_cluster()
            self._loop = self._loop_thread = None
            raise
        if config.sync_broadcast:
            self._every(min(1.0, config.write_timeout / 4), self._check_write_timeouts)
        if config.ping_interval is not None:
            self._every(max(0.05, min(config.ping_interval, config.ping_timeout) / 2),
                        self._ping_idle)

    async def _listen(self, host: str, port: int, kwargs: dict[str, Any]) -> asyncio.Server:
        config = self.config
        return await ws_create_server(
            self._http.upgrade,
            host,
            port,
            websocket_handshake_timeout=config.handshake_timeout,
            max_frame_size=config.max_message_size,
            read_buffer_init_size=config.read_buffer_size,
            # Pongs go through the outbox (bounded, rate limited) rather than straight
            # to the socket as picows would send them.
            enable_auto_pong=False,
            logger_name="roomer.picows",
            backlog=config.listen_backlog,
            **kwargs,
        )

    async def _join_cluster(self) -> None:
        from .backplane import Cluster, create

        config = self.config
        assert config.backplane is not None
        registries = {name: ns.registry for name, ns in self._namespaces.items()}
        # A namespace's root is quiet (frames only: no presence, no member lists), and so
        # is the default namespace's without root_presence.
        quiet = [registry.key(ROOT) for registry in registries.values()
                 if registry.quiet(ROOT)]
        transport = create(
            config.backplane, max_buffer=config.backplane_buffer,
            sender_share=config.backplane_sender_share,
            probe_interval=config.backplane_probe_timeout / 3,
            probe_timeout=config.backplane_probe_timeout)
        cluster = Cluster(
            transport, node_id=config.node_id, prefix=config.backplane_prefix,
            node_timeout=config.node_timeout, heartbeat_interval=config.node_timeout / 6,
            quiet_rooms=quiet)
        await cluster.start(Nodes(registries))
        for registry in registries.values():
            registry.cluster = cluster

    async def _leave_cluster(self) -> None:
        cluster = self.registry.cluster
        if cluster is None:
            return
        for ns in self._namespaces.values():
            ns.registry.cluster = None
        with contextlib.suppress(Exception):
            await cluster.close()

    async def serve_forever(self) -> None:
        """Serve until ``shutdown`` (or cancellation)."""
        if self._closed is None:
            raise RuntimeError("the server is not started")
        await self._closed.wait()

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Stop accepting and close every connection with 1001 after writing its outbox;
        within ``timeout`` seconds in all: the disconnect hooks this starts may finish
        until then, and whatever is still open (a client that does not read, a socket
        that never finished its upgrade, a slow HTTP reader) is then cut."""
        if self._server is None or self._closing:
            return
        self._loop_only("Server.shutdown")
        assert self._loop is not None and self._closed is not None
        loop = self._loop
        deadline = loop.time() + timeout
        self._closing = True
        for task in list(self._loops):
            task.cancel()
        self._server.close()
        cluster = self.registry.cluster
        if cluster is not None:
            # First: the other nodes drop this node's members at once (not after a timeout).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(cluster.close(), max(0.1, deadline - loop.time()))
        conns = self.registry.conns
        for conn in list(conns.values()):
            conn.close(WSCloseCode.GOING_AWAY, "server shutdown")
        while (conns or self._tasks) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(conns.values()):
            conn.abort(WSCloseCode.GOING_AWAY, "server shutdown")
        for task in list(self._tasks):
            task.cancel()
        abort_clients = getattr(self._server, "abort_clients", None)
        if abort_clients is not None:  # aiofastnet's server (picows' default)
            abort_clients()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._closed.set()

    def run(self, host: str = "127.0.0.1", port: int = 8080, *, reuse_port: bool = False,
            ssl: SSLContext | None = None,
            on_started: Callable[[Server], Any] | None = None) -> None:
        """Serve on uvloop (asyncio if uvloop is missing) until SIGINT or SIGTERM."""

        async def main() -> None:
            await self.start(host, port, reuse_port=reuse_port, ssl=ssl)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, lambda: loop.create_task(self.shutdown()))
            if on_started is not None:
                on_started(self)
            await self.serve_forever()

        try:
            import uvloop
        except ImportError:
            asyncio.run(main())
        else:
            uvloop.run(main())

    # connection lifecycle -----------------------------------------------------------------

    def _new_connection(self, request: WSUpgradeRequest, claims: Any, v2: bool) -> Connection:
        return Connection(self, request, claims, v2)

    def _connected(self, conn: Connection) -> None:
        self.metrics.counters["connections_total"] += 1
        if self._closing:
            conn.close(WSCloseCode.GOING_AWAY, "server shutdown")
            return
        try:
            pending = Hooks.run(self.hooks.connect, conn)
        except Exception as exc:
            self._refuse_connection(conn, exc)
            return
        if pending is None:
            self._accept(conn)
        else:
            conn._backlog = deque()
            self._spawn(self._accept_later(conn, pending))

    def _refuse_connection(self, conn: Connection, exc: Exception) -> None:
        if isinstance(exc, Deny):
            conn.close(WSCloseCode.POLICY_VIOLATION, str(exc))
        else:
            log.error("on_connect hook raised", exc_info=exc)
            conn.close(WSCloseCode.INTERNAL_ERROR, "internal error")

    async def _accept_later(self, conn: Connection, pending: Awaitable[None]) -> None:
        try:
            await pending
        except asyncio.CancelledError:
            # shutdown() cancels this while on_connect runs: the client is not in
            # the registry yet, so close it here (else wait_closed() waits forever).
            conn.abort(WSCloseCode.GOING_AWAY, "server shutdown")
            raise
        except Exception as exc:
            self._refuse_connection(conn, exc)
            return
        if conn._state != CONNECTING:
            return  # gone while on_connect ran
        if self._closing:
            conn.close(WSCloseCode.GOING_AWAY, "server shutdown")
            return
        self._accept(conn)
        self._router.drain(conn)

    def _accept(self, conn: Connection) -> None:
        conn._state = OPEN
        registry = self.registry
        registry.accept(conn)
        rooms = [ROOT, *(conn._pending_joins or ())]
        conn._pending_joins = None
        for i, room in enumerate(rooms):
            pending = registry.add_member(conn, room, announce=i > 0)
            if pending is not None:
                # The backplane learns who is in the room first: the client's messages
                # wait behind its joins.
                conn._busy = True
                if conn._backlog is None:
                    conn._backlog = deque()
                self._spawn(self._finish_joins(conn, pending, rooms[i + 1:]))
                return
        self._after(self.hooks.connected, conn, what="on_connected")

    async def _finish_joins(self, conn: Connection, pending: Awaitable[None],
                            rooms: list[str]) -> None:
        try:
            await pending
            for room in rooms:
                if conn._state != OPEN:
                    break
                joining = self.registry.add_member(conn, room)
                if joining is not None:
                    await joining
        finally:
            conn._busy = False
        if conn._state == OPEN:
            self._after(self.hooks.connected, conn, what="on_connected")
        self._router.drain(conn)

    def _disconnected(self, conn: Connection) -> None:
        conn._state = GONE
        conn._backlog = None
        asks, conn._asks = conn._asks, None
        for waiter in (asks or {}).values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("the client disconnected"))
        registry = self.registry
        if registry.conns.get(conn.id) is not conn:
            return  # never accepted: in no room
        # Every namespace it is in, the default one last: rooms left (on_leave, Deny
        # ignored; member_left; on_left), then on_disconnect.
        for name in list(conn._spaces or ()):
            self._namespaces[name].leave_namespace(conn)
        self.leave_namespace(conn)
        registry.drop(conn)

    def _after(self, hooks: list[Hook], *args: Any, what: str) -> None:
        """Run hooks that cannot refuse (joined, left, connected, disconnect...): sync
        ones now, async ones as tasks; what they raise is logged (a Deny ignored)."""
        if not hooks:
            return
        try:
            pending = Hooks.run(hooks, *args)
        except Deny:
            pass  # nothing to refuse here
        except Exception:
            log.exception("%s hook raised", what)
        else:
            if pending is not None:
                self._spawn(self._quiet(pending, what))

    async def _quiet(self, pending: Awaitable[Any], what: str) -> None:
        try:
            await pending
        except Deny:
            pass  # a disconnect cannot be refused
        except Exception:
            log.exception("%s hook raised", what)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _every(self, period: float, step: Callable[[float], None]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(self._repeat(period, step))
        self._loops.add(task)
        task.add_done_callback(self._loops.discard)

    async def _repeat(self, period: float, step: Callable[[float], None]) -> None:
        assert self._loop is not None
        loop = self._loop
        while True:
            await asyncio.sleep(period)
            try:
                step(loop.time())
            except Exception:
                # One bad round (a hook's side effect, a transport in a strange state)
                # must not end the pings or the watch for every connection.
                log.exception("roomer background round %s failed", step.__name__)

    def _abuse(self, conn: Connection, reason: str) -> None:
        self.metrics.counters["abuse_closes"] += 1
        log.info("closing %s: %s", conn.id, reason)
        # Its replies so far go out with the close; nothing waits for it to read them.
        conn._closing(WSCloseCode.POLICY_VIOLATION, reason, flush=True, graceful=False)

    def _cut_off(self, conn: Connection, reason: str) -> None:
        # Counted once per connection, whichever bound found it first.
        if conn._cut:
            return
        conn._cut = True
        self.metrics.counters["dropped_slow_disconnects"] += 1
        conn.abort(WSCloseCode.POLICY_VIOLATION, reason)

    def _overflowed(self, conn: Connection) -> None:
        self._cut_off(conn, "slow consumer: outbox limit exceeded")

    def _check_write_timeouts(self, _now: float) -> None:
        # Sync mode never drops: a receiver that stays over its limit is disconnected.
        now = time.monotonic()
        write_timeout = self.config.write_timeout
        for conn in list(self.registry.conns.values()):
            since = conn.over_since
            if since and now - since > write_timeout:
                self._cut_off(conn, "write timeout")

    def _ping_idle(self, now: float) -> None:
        # One scan for all connections, not a timer task per connection: an idle
        # connection then costs a few fields, not a coroutine (see README, memory).
        config = self.config
        assert config.ping_interval is not None
        interval, timeout = config.ping_interval, config.ping_timeout
        for conn in list(self.registry.conns.values()):
            if conn._heard or conn._read_holds:
                # A connection roomer itself is not reading cannot be heard: that is
                # not silence.
                conn._heard = False
                conn._quiet_since = now
                conn._pinged_at = 0.0
                continue
            # Quiet for a whole period: the buffers a burst grew are given back.
            conn.trim_buffers()
            if conn._pinged_at:
                if now - conn._pinged_at >= timeout:
                    conn.abort(WSCloseCode.INTERNAL_ERROR, "ping timeout")
            elif now - conn._quiet_since >= interval and conn.transport is not None:
                conn._pinged_at = now
                conn.transport.send_ping()
        # Read buffers cut back, or many connections gone, since memory was last given
        # back: ask the allocator to return what is free (after a crowd leaves, too).
        trims = self._engine.read_buffer_trims
        closed = self.metrics.counters["connections_total"] - len(self.registry.conns)
        if _malloc_trim is not None and (trims != self._released[0]
                                         or closed - self._released[1] >= 1000):
            self._released = (trims, closed)
            _malloc_trim(0)

    # rooms ----------------------------------------------------------------------------------

    def _check_room_name(self, room: str) -> None:
        limit = self.config.max_room_name
        if not isinstance(room, str) or not name_ok(room, limit):
            raise ValueError(f"room names are 1-{limit} bytes of UTF-8")
