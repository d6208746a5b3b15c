"""The picows listener and the Server API: the only module that does socket I/O.

A :class:`Server` listens with picows, answers plain HTTP through roomer/http.py, and
makes each upgraded client a :class:`WSConnection`: the socket side of a
:class:`roomer.Connection`. Everything below it has no I/O: the router
(roomer/routing.py) decides what each frame does, the registries (roomer/registry.py)
keep rooms and presence, the namespaces (roomer/namespaces.py) hold handlers and hooks,
and all of them share one :class:`roomer.core.Core`. docs/design.md draws the parts and
the path of a message; docs/protocol.md is the wire contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import inspect
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from ssl import SSLContext
from typing import Any

from picows import WSCloseCode, WSFrame, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

from . import fanout
from .config import Config, Routes
from .connection import Connection, NamespaceConnection, Payload, sendable_close_code
from .core import Core
from .games import GameRoom, RoomListing
from .handlers import Handler
from .hooks import Hook, Hooks
from .http import HttpSide
from .inbound import CLOSING, Liveness
from .message import Message
from .metrics import Metrics
from .namespaces import Exclude, NamedNamespace, Namespace
from .registry import ROOT, Nodes, Registry
from .routing import BEAT, name_ok
from .static_files import StaticFiles

__all__ = ["Server", "WSConnection"]

log = logging.getLogger("roomer")

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


def _close_reason(reason: str) -> bytes:
    """``reason`` cut to the 123 bytes a close frame holds, on a character boundary: a
    split UTF-8 character fails the whole close (browsers report 1006, and roomer.js then
    reconnects after a Deny it should have respected)."""
    raw = reason.encode()
    if len(raw) <= 123:
        return raw
    return raw[:123].decode("utf-8", "ignore").encode()


class WSConnection(Connection):
    """A :class:`roomer.Connection` on a picows WebSocket: its picows listener, and what
    it asks of its socket (close, pause and resume reading, ping). ``authorizing`` is
    an async ``authorize``'s awaitable, awaited once the WebSocket is up."""

    __slots__ = ("_authorizing",)

    def __init__(self, core: Core, request: Any, claims: Any, v2: bool,
                 authorizing: Awaitable[Any] | None = None) -> None:
        super().__init__(core, request, claims, v2)
        self._authorizing = authorizing

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.attach(transport)
        authorizing, self._authorizing = self._authorizing, None
        self._core.lifecycle.connected(self, authorizing)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.last_in_buffer:
            self.read_done()
        if frame.msg_type is WSMsgType.CLOSE:
            self._close_received(transport, frame)
            return
        if self.inbound.state >= CLOSING or transport.is_close_frame_sent:
            # Closing: read nothing more. picows keeps parsing after its own protocol
            # error (a frame over max_message_size gets 1009, then is still delivered).
            return
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            self.stop(1002, "reserved bits set without an extension", flush=True,
                      graceful=True)
            return
        self._core.router.frame(self, frame)

    def _close_received(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.payload_size == 0:
            reply = 1000  # no status received: answer a plain normal closure
        else:
            reply = frame.get_close_code().value
            if not sendable_close_code(reply):
                reply = 1002
            else:
                reason = frame.get_close_message()  # None when only a code came
                try:
                    if reason:
                        reason.decode()
                except UnicodeDecodeError:
                    reply = 1007
        self.inbound.close()
        self.close_outbox()
        if not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode(reply))
        transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.discard_outbox()
        self._core.lifecycle.disconnected(self)

    def shut(self, code: int, reason: str, graceful: bool) -> None:
        tr = self.transport
        if tr is None or tr.is_disconnected:
            return
        if not tr.is_close_frame_sent:
            tr.send_close(WSCloseCode(code), _close_reason(reason))
        tr.disconnect(graceful)

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.underlying_transport.pause_reading()

    def resume_reading(self) -> None:
        tr = self.transport
        if tr is not None and not tr.is_disconnected:
            tr.underlying_transport.resume_reading()

    def ping(self) -> None:
        if self.transport is not None:
            self.transport.send_ping()


class Server:
    """A roomer server: rooms, handlers, hooks and fan-out over picows.

    ``Server(**options)``: every option is a field of :class:`roomer.Config` (the
    reference lists them); ``server.config`` holds them. The server has a default
    namespace, ``server.default`` (``""``, what v1 clients speak): its decorators (``on``,
    ``on_connect``...) and sending methods (``broadcast``, ``send_to``, ``do``...) are
    also the server's own, below. ``server.namespace(name)`` declares another.

    Thread safety: ``broadcast``, ``broadcast_all``, ``call_threadsafe`` and ``close`` may
    be called from any thread, as may the read-only snapshots (``members``, ``rooms``,
    ``connections``, ``connection_count``, ``stats``); everything else runs on the
    server's loop thread only (RuntimeError from another).
    """

    def __init__(self, **options: Any) -> None:
        self.config = config = Config(**options)
        # Mutable on purpose: an app (the demo) adds pages after building the server.
        self.routes: dict[str, tuple[str, bytes]] = Routes(config.routes)
        core = self._core = Core(config)
        self.metrics: Metrics = core.metrics
        #: The default namespace.
        self.default: Namespace[Connection] = core.default
        self._http = HttpSide(config, self.routes, self.metrics_text, self.health_text,
                              lambda: core.closing, self._new_connection)
        self._started_hooks: list[Hook] = []
        self._stopping_hooks: list[Hook] = []
        self._server: asyncio.Server | None = None
        self._closed: asyncio.Event | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        # Tasks awaiting wait_closed(): shutdown neither waits for them nor cancels them
        # (a handler that awaits the shutdown it started would wait for itself).
        self._waiting: set[asyncio.Task[Any]] = set()
        # (read buffers cut back, connections closed) when memory was last given back
        self._released = (0, 0)

    def __repr__(self) -> str:
        return f"<roomer.Server {'listening' if self._server else 'not started'}>"

    # the default namespace, as the server's own ---------------------------------------------

    def on(self, event: str) -> Callable[[Handler[Connection]], Handler[Connection]]:
        """Decorator: a handler of ``event`` in the default namespace
        (:meth:`Namespace.on`)."""
        return self.default.on(event)

    def on_connect(self, fn: Callable[[Connection], Any]) -> Callable[[Connection], Any]:
        """Decorator: the default namespace's :meth:`Namespace.on_connect`: ``fn(conn)``
        at the upgrade; raise Deny to close it with 1008."""
        return self.default.on_connect(fn)

    def on_connected(self, fn: Callable[[Connection], Any]) -> Callable[[Connection], Any]:
        """Decorator: :meth:`Namespace.on_connected` of the default namespace."""
        return self.default.on_connected(fn)

    def on_disconnect(self, fn: Callable[[Connection], Any]) -> Callable[[Connection], Any]:
        """Decorator: :meth:`Namespace.on_disconnect` of the default namespace."""
        return self.default.on_disconnect(fn)

    def on_join(self, fn: Callable[[Connection, str], Any]) -> Callable[[Connection, str], Any]:
        """Decorator: :meth:`Namespace.on_join` of the default namespace."""
        return self.default.on_join(fn)

    def on_joined(self, fn: Callable[[Connection, str], Any]
                  ) -> Callable[[Connection, str], Any]:
        """Decorator: :meth:`Namespace.on_joined` of the default namespace."""
        return self.default.on_joined(fn)

    def on_leave(self, fn: Callable[[Connection, str], Any]
                 ) -> Callable[[Connection, str], Any]:
        """Decorator: :meth:`Namespace.on_leave` of the default namespace."""
        return self.default.on_leave(fn)

    def on_left(self, fn: Callable[[Connection, str], Any]) -> Callable[[Connection, str], Any]:
        """Decorator: :meth:`Namespace.on_left` of the default namespace."""
        return self.default.on_left(fn)

    def on_event(self, fn: Callable[[Connection, Message], Any]
                 ) -> Callable[[Connection, Message], Any]:
        """Decorator: :meth:`Namespace.on_event` of the default namespace."""
        return self.default.on_event(fn)

    def broadcast(self, room: str, event: str, payload: Payload = b"",
                  exclude: Exclude = None) -> Any:
        """:meth:`Namespace.broadcast` in the default namespace. Any thread."""
        return self.default.broadcast(room, event, payload, exclude)

    def broadcast_all(self, event: str, payload: Payload = b"", room: str = ROOT,
                      exclude: Exclude = None) -> Any:
        """:meth:`Namespace.broadcast_all` in the default namespace: every client. Any
        thread."""
        return self.default.broadcast_all(event, payload, room, exclude)

    def send_to(self, conn_id: str, event: str, payload: Payload = b"",
                room: str = ROOT) -> bool:
        """:meth:`Namespace.send_to` in the default namespace. Loop thread only."""
        return self.default.send_to(conn_id, event, payload, room)

    def do(self, fn: Callable[[Connection], Any]) -> int:
        """Call ``fn(conn)`` for every client here (:meth:`Namespace.do`). Loop thread
        only."""
        return self.default.do(fn)

    def members(self, room: str) -> list[str]:
        """Ids of ``room``'s members (:meth:`Namespace.members`). Any thread."""
        return self.default.members(room)

    def rooms(self) -> list[str]:
        """Rooms of the default namespace that have members here. Any thread."""
        return self.default.rooms()

    def connections(self) -> list[Connection]:
        """Every client connected here. Any thread."""
        return self.default.connections()

    @property
    def connection_count(self) -> int:
        """How many clients are connected here. Any thread."""
        return self.default.connection_count

    def define(self, name: str, room: type[GameRoom], **settings: Any) -> None:
        """Define a game room type in the default namespace (:meth:`Namespace.define`).
        Before start only."""
        self.default.define(name, room, **settings)

    async def create_room(self, type: str, options: dict[str, Any] | None = None,
                          room_id: str | None = None) -> str:
        """:meth:`Namespace.create_room` in the default namespace. Loop thread only."""
        return await self.default.create_room(type, options, room_id)

    def game_room(self, room_id: str) -> GameRoom | None:
        """:meth:`Namespace.game_room` in the default namespace. Loop thread only."""
        return self.default.game_room(room_id)

    def list_rooms(self, type: str | None = None, **metadata: Any) -> list[RoomListing]:
        """:meth:`Namespace.list_rooms` in the default namespace. Any thread."""
        return self.default.list_rooms(type, **metadata)

    async def reserve_seats(self, room_id: str, ids: list[str],
                            seconds: float | None = None) -> bool:
        """:meth:`Namespace.reserve_seats` in the default namespace. Loop thread only."""
        return await self.default.reserve_seats(room_id, ids, seconds)

    @property
    def registry(self) -> Registry:
        """The default namespace's registry (its rooms and clients)."""
        return self.default.registry

    def namespace(self, name: str) -> Namespace[NamespaceConnection]:
        """Declare (or get) the namespace ``name`` (docs/protocol.md §6): handlers, hooks,
        rooms and clients of its own, for v2 clients that connect to it.

        Raises:
            RuntimeError: the server is started (namespaces are declared before).
            ValueError: ``name`` is not 1-255 bytes of UTF-8 within ``max_event_name``,
                or, with a backplane, too long for the cluster's room names.
        """
        core = self._core
        existing = core.namespaces.get(name)
        if existing is not None:
            if not name:
                raise ValueError("\"\" is the default namespace: use server.default")
            return existing
        if core.started:
            raise RuntimeError("namespaces are declared before the server starts")
        # A direct message to another node carries the namespace behind one length byte
        # (registry.direct_envelope), whatever max_event_name allows.
        limit = min(self.config.max_event_name, MAX_NAMESPACE)
        if not isinstance(name, str) or not name_ok(name, limit):
            raise ValueError(f"namespace names are 1-{limit} bytes of UTF-8 (\"\" is the "
                             "default namespace: server.default)")
        self.config.check_namespace(name)
        created = NamedNamespace(core, name, Registry(self.config.root_presence, name))
        core.namespaces[name] = created
        return created

    def serve_static(self, folder: str | None) -> None:
        """Serve the files of ``folder`` to plain GET requests in place of the
        ``static_dir`` the server was built with (``roomer serve app:server --static DIR``
        on a ready Server); None serves none. Before ``start`` only.

        Raises:
            TypeError: ``folder`` is not a path.
            ValueError: ``folder`` is not a folder.
            RuntimeError: the server is started.
        """
        if self._core.started:
            raise RuntimeError("the static folder is set before the server starts")
        checked = dataclasses.replace(self.config, static_dir=folder).static_dir
        # Only the HTTP side has read it so far, and it is given the new folder here.
        object.__setattr__(self.config, "static_dir", checked)
        self._http.static = StaticFiles(checked)

    # server lifecycle hooks -----------------------------------------------------------------

    def on_started(self, fn: Callable[[Server], Any]) -> Callable[[Server], Any]:
        """Decorator: ``fn(server)`` (sync or async) once the server listens: the place to
        start an app's own loops (a game tick, a publisher). Before start only."""
        self._before_start("on_started")
        return Hooks.add(self._started_hooks, fn)

    def on_stopping(self, fn: Callable[[Server], Any]) -> Callable[[Server], Any]:
        """Decorator: ``fn(server)`` (sync or async) as shutdown starts, before clients
        are closed (they can still be sent a last word), within the shutdown's deadline.
        Before start only."""
        self._before_start("on_stopping")
        return Hooks.add(self._stopping_hooks, fn)

    def _before_start(self, what: str) -> None:
        if self._core.started:
            raise RuntimeError(f"{what} hooks are registered before the server starts")

    # introspection -----------------------------------------------------------------------

    def connection(self, conn_id: str) -> Connection | None:
        """The client connected here with id ``conn_id``, or None."""
        return self.registry.conns.get(conn_id)

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) it listens on.

        Raises:
            RuntimeError: it is not started.
        """
        if self._server is None:
            raise RuntimeError("the server is not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    @property
    def counters(self) -> dict[str, int]:
        return self.metrics.counters

    @property
    def errors(self) -> dict[str, int]:
        return self.metrics.errors

    def stats(self) -> dict[str, Any]:
        """Counters and gauges (what /metrics shows). Any thread."""
        engine = self._core._engine
        namespaces = list(self._core.namespaces.values())
        gauges = {"connections": len(self.registry.conns),
                  "rooms": sum(len(ns.registry.rooms) for ns in namespaces),
                  **self._core.games.stats()}
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

    # from anywhere ---------------------------------------------------------------------------

    def call_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the server's loop, from any thread.

        Raises:
            RuntimeError: the server is not started.
        """
        loop = self._core.loop
        if loop is None:
            raise RuntimeError("the server is not started")
        loop.call_soon_threadsafe(fn, *args)

    def kick(self, conn_id: str, reason: str = "kicked", code: int = 1008) -> bool:
        """Close one client's connection. Loop thread only.

        Returns:
            False if it is not here.

        Raises:
            ValueError, TypeError: as :meth:`Connection.close` (nothing is done then).
        """
        self._core.loop_only("Server.kick")
        conn = self.registry.conns.get(conn_id)
        if conn is None:
            return False
        conn.close(code, reason)
        return True

    # start and stop ----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 8080, *,
                    reuse_port: bool = False, ssl: SSLContext | None = None) -> None:
        """Listen on host:port (port 0 picks a free one; see ``address``); ``ssl`` (an
        ``ssl.SSLContext`` with the certificate loaded) serves wss:// and https://.

        Raises:
            RuntimeError: it was started already.
            OSError: the address cannot be bound.
            ConnectionError: the backplane's broker cannot be reached.
        """
        if self._server is not None or self._core.started:
            raise RuntimeError("the server is already started")
        config = self.config
        core = self._core
        loop = asyncio.get_running_loop()
        engine = fanout.Fanout(
            loop,
            outbox_limit=config.outbox_limit,
            # An outbox is written before it could pass the limit within one turn.
            flush_threshold=min(config.flush_threshold, config.outbox_limit),
            sync=config.sync_broadcast,
            disconnect_slow=config.slow_consumer == "disconnect",
            on_overflow=self._overflowed,
        )
        core.start(loop, engine)
        self._closed = asyncio.Event()
        kwargs: dict[str, Any] = {}
        if reuse_port:
            kwargs["reuse_port"] = True
        if ssl is not None:
            kwargs["ssl"] = ssl
        try:
            if config.backplane is not None:
                await self._join_cluster()
            self._server = await self._listen(host, port, kwargs)
        except BaseException:
            # Not started: close() would do nothing, so the cluster (its broker
            # connection and tasks, this node's presence) goes now, and start may be retried.
            await self._leave_cluster()
            core.stopped()
            raise
        tasks = core.tasks
        assert tasks is not None
        core.router.start()
        tasks.every(BEAT, core.router.beat)
        if config.sync_broadcast:
            tasks.every(min(1.0, config.write_timeout / 4), self._check_write_timeouts)
        if config.ping_interval is not None:
            tasks.every(max(0.05, min(config.ping_interval, config.ping_timeout) / 2),
                        self._ping_idle)
        if self._started_hooks:
            core.after(self._started_hooks, self, what="on_started")

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
        from .backplane import Cluster

        config = self.config
        assert config.backplane is not None
        registries = {name: ns.registry for name, ns in self._core.namespaces.items()}
        cluster = Cluster(
            config.backplane, node_id=config.node_id, prefix=config.backplane_prefix,
            node_timeout=config.node_timeout, heartbeat_interval=config.node_timeout / 6,
            quiet_rooms=[key for registry in registries.values()
                         for key in registry.quiet_keys()])
        await cluster.start(Nodes(registries))
        for registry in registries.values():
            registry.cluster = cluster
        await self._core.games.attach(cluster)  # game rooms cross the cluster too

    async def _leave_cluster(self) -> None:
        cluster = self.registry.cluster
        if cluster is None:
            return
        for ns in self._core.namespaces.values():
            ns.registry.cluster = None
        with contextlib.suppress(Exception):
            await cluster.close()

    async def serve_forever(self) -> None:
        """Serve until the server is closed (or this is cancelled).

        Raises:
            RuntimeError: it is not started.
        """
        if self._closed is None:
            raise RuntimeError("the server is not started")
        await self.wait_closed()

    def close(self, timeout: float = 5.0) -> None:
        """Start the shutdown, once (later calls do nothing; from any thread): stop
        accepting, run the on_stopping hooks, close every connection with 1001 after
        writing its outbox, all within ``timeout`` seconds: the disconnect hooks this
        starts may finish until then, and whatever is still open (a client that does not
        read, a socket that never finished its upgrade, a slow HTTP reader) is then cut.
        Await :meth:`wait_closed` for its end."""
        core = self._core
        loop = core.loop
        if loop is None or self._server is None:
            return
        if not core.on_loop_thread():
            loop.call_soon_threadsafe(self.close, timeout)
            return
        if self._shutdown_task is None:
            self._shutdown_task = loop.create_task(self._shutdown(timeout))

    async def wait_closed(self) -> None:
        """Return once the server is closed (at once if it never started). A handler or
        hook may await it: the shutdown neither waits for nor cancels what awaits it."""
        if self._closed is None or (self._server is None and not self._closed.is_set()):
            return  # never started (or its start failed)
        task = asyncio.current_task()
        if task is not None:
            self._waiting.add(task)
        try:
            await self._closed.wait()
        finally:
            if task is not None:
                self._waiting.discard(task)

    async def shutdown(self, timeout: float = 5.0) -> None:
        """:meth:`close`, then :meth:`wait_closed`."""
        self.close(timeout)
        await self.wait_closed()

    async def _shutdown(self, timeout: float) -> None:
        core = self._core
        loop = core.loop
        tasks = core.tasks
        assert loop is not None and tasks is not None and self._server is not None
        assert self._closed is not None
        deadline = loop.time() + timeout
        core.closing = True
        tasks.stop_loops()
        self._server.close()
        stopping = core.after(self._stopping_hooks, self, what="on_stopping")
        if stopping is not None:
            await asyncio.wait({stopping}, timeout=max(0.0, deadline - loop.time()))
        # Game rooms owned here end (their members everywhere are told) while the node
        # is still in the cluster.
        await core.games.stop(deadline)
        cluster = self.registry.cluster
        if cluster is not None:
            # First: the other nodes drop this node's members at once (not after a timeout).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(cluster.close(), max(0.1, deadline - loop.time()))
        conns = self.registry.conns
        for conn in list(conns.values()):
            conn.stop(1001, "server shutdown", flush=True, graceful=True)
        await tasks.drain(deadline, self._waiting, lambda: not conns)
        for conn in list(conns.values()):
            conn.stop(1001, "server shutdown", flush=False, graceful=False)
        tasks.cancel_work(self._waiting)
        abort_clients = getattr(self._server, "abort_clients", None)
        if abort_clients is not None:  # aiofastnet's server (picows' default)
            abort_clients()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._closed.set()

    def run(self, host: str = "127.0.0.1", port: int = 8080, *, reuse_port: bool = False,
            ssl: SSLContext | None = None,
            on_started: Callable[[Server], Any] | None = None) -> None:
        """Serve on uvloop (asyncio if uvloop is missing) until SIGINT or SIGTERM,
        saying where it listens on stderr (unless ``on_started`` is given: it is called
        instead, once listening)."""

        async def main() -> None:
            await self.start(host, port, reuse_port=reuse_port, ssl=ssl)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.close)
            if on_started is not None:
                on_started(self)
            else:
                where, scheme = self.address, "wss" if ssl is not None else "ws"
                # On stderr, as uvicorn says it: stdout stays the app's.
                print(f"roomer listening on {scheme}://{where[0]}:{where[1]}/ws "
                      "(Ctrl-C stops it)", file=sys.stderr, flush=True)
            await self.serve_forever()

        try:
            import uvloop
        except ImportError:
            asyncio.run(main())
        else:
            uvloop.run(main())

    # connections ---------------------------------------------------------------------------

    def _new_connection(self, request: WSUpgradeRequest, claims: Any, v2: bool) -> Connection:
        if inspect.isawaitable(claims):  # an async authorize: awaited once connected
            return WSConnection(self._core, request, None, v2, claims)
        return WSConnection(self._core, request, claims, v2)

    def _overflowed(self, conn: Connection) -> None:
        self._cut_off(conn, "slow consumer: outbox limit exceeded")

    def _cut_off(self, conn: Connection, reason: str) -> None:
        if conn.cut_off(reason):  # counted once per connection, whichever bound found it
            self.metrics.counters["dropped_slow_disconnects"] += 1

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
        # connection then costs a few fields, not a coroutine.
        config = self.config
        assert config.ping_interval is not None
        interval, timeout = config.ping_interval, config.ping_timeout
        router = self._core.router
        for conn in list(self.registry.conns.values()):
            router.lift(conn, interval + timeout)
            verdict = conn.inbound.liveness(now, interval, timeout)
            if verdict is Liveness.HEARD:
                continue
            # Quiet for a whole period: the buffers a burst grew are given back.
            conn.trim_buffers()
            if verdict is Liveness.PING:
                conn.ping()
            elif verdict is Liveness.DEAD:
                conn.stop(1011, "ping timeout", flush=False, graceful=False)
        # Read buffers cut back, or many connections gone, since memory was last given
        # back: ask the allocator to return what is free (after a crowd leaves, too).
        trims = self._core.engine.read_buffer_trims
        closed = self.metrics.counters["connections_total"] - len(self.registry.conns)
        if _malloc_trim is not None and (trims != self._released[0]
                                         or closed - self._released[1] >= 1000):
            self._released = (trims, closed)
            _malloc_trim(0)

