"""The picows listener and the Server API: the only module that does socket I/O.

A `Server` listens with picows, answers plain HTTP through roomer/http.py, and
makes each upgraded client a `WSConnection`: the socket side of a
`roomer.Connection`. Everything below it has no I/O: the router
(roomer/routing.py) decides what each frame does, the registries (roomer/registry.py)
keep rooms and presence, the namespaces (roomer/namespaces.py) hold handlers and hooks,
and all of them share one `roomer.core.Core`. docs/design.md draws the parts and
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
import socket
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from ssl import SSLContext
from typing import Any

from picows import WSCloseCode, WSFrame, WSMsgType, WSTransport, WSUpgradeRequest

from . import fanout
from .config import Config, Routes
from .connection import Connection, NamespaceConnection, Payload, sendable_close_code
from .core import Core
from .errors import Deny
from .games import GameRoom, RoomListing
from .handlers import Handler
from .hooks import Hook, Hooks
from .http import HttpSide
from .http_messages import MAX_HEAD, Answer
from .inbound import CLOSING, Liveness
from .message import Message
from .metrics import Metrics
from .namespaces import Exclude, NamedNamespace, Namespace
from .registry import ROOT, Nodes, Registry
from .routing import BEAT, name_ok
from .sessions import NOT_HERE
from .static_files import StaticFiles

__all__ = ["Server", "WSConnection"]

log = logging.getLogger("roomer")

MAX_NAMESPACE = 255  # UTF-8 bytes

# Connections the ping round looks at per loop turn.
SCAN_SLICE = 512
# The buffer gauges walk every connection (about 3 ms for 20,000): /metrics asked in a loop
# gets figures at most this old rather than that walk each time.
BUFFERS_EVERY = 1.0


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


# What _authorized returns for an async authorize that refused (or failed).
_REFUSED = object()


def _close_reason(reason: str) -> bytes:
    """``reason`` cut to the 123 bytes a close frame holds, on a character boundary: a
    split UTF-8 character fails the whole close (browsers report 1006, and roomer.js then
    reconnects after a Deny it should have respected)."""
    raw = reason.encode()
    if len(raw) <= 123:
        return raw
    return raw[:123].decode("utf-8", "ignore").encode()


class WSConnection(Connection):
    """A `roomer.Connection` on a picows WebSocket: its picows listener, and what
    it asks of its socket (close, pause and resume reading, ping). ``authorizing`` is
    an async ``authorize``'s awaitable, awaited once the WebSocket is up."""

    __slots__ = ("_authorizing", "_takeover", "_verdict")

    def __init__(self, core: Core, request: Any, claims: Any, v2: bool,
                 authorizing: Awaitable[Any] | None = None) -> None:
        super().__init__(core, request, claims, v2)
        self._authorizing = authorizing
        # A failed resume's verdict, written before anything else.
        self._verdict: bytes | None = None
        # The session it resumes, held by another node: (id, nonce, messages received).
        self._takeover: tuple[str, bytes, int] | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        if self._takeover is not None:
            self._core.spawn(self._take_over(transport, *self._takeover))
            self._takeover = None
            return
        session = self._session
        if session is not None and session.resuming is not None:
            self._resume(transport)
            return
        verdict, self._verdict = self._verdict, None
        if verdict is not None:
            transport.underlying_transport.write(verdict)
        self.attach(transport)
        authorizing, self._authorizing = self._authorizing, None
        self._core.lifecycle.connected(self, authorizing)

    def on_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        # Every frame but a plain relay's (Peer.on_ws_frame takes those).
        if transport is not self.transport:
            return  # a session's old socket, or its new one still being authorized
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
        if reply == 1001 and self.resumable:
            # Going away (a page unloads, a reload): the session is held, as for a drop.
            if not transport.is_close_frame_sent:
                transport.send_close(WSCloseCode(reply))
            transport.disconnect()
            return
        self.inbound.close()
        self.close_outbox()
        if not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode(reply))
        transport.disconnect()

    def _resume(self, transport: WSTransport) -> None:
        # A held session's new socket: the verdict, what the client missed, what waited.
        authorizing, self._authorizing = self._authorizing, None
        if authorizing is not None:
            self._core.spawn(self._resume_authorized(transport, authorizing))
            return
        sessions = self._core.sessions
        verdict = sessions.verdict(self)
        if not sessions.resumed(self):  # it ended while the socket came up
            transport.send_close(WSCloseCode(1011), b"session ended")
            transport.disconnect()
            return
        transport.underlying_transport.write(verdict)
        self.attach(transport)

    async def _resume_authorized(self, transport: WSTransport,
                                 authorizing: Awaitable[Any]) -> None:
        # An async authorize decides first, within handshake_timeout, and must say what
        # it said of the session's client; else the new socket is closed as a refused
        # connection would be, and the session stays held (its token is spent).
        session = self._session
        assert session is not None
        try:
            claims = await self._authorized(transport, authorizing)
        except asyncio.CancelledError:
            session.resuming = None
            raise
        if claims is _REFUSED or claims != self.claims or transport.is_disconnected:
            session.resuming = None
            if claims is not _REFUSED:
                transport.send_close(WSCloseCode(1008), b"unauthorized")
                transport.disconnect()
            return
        self._resume(transport)

    async def _take_over(self, transport: WSTransport, member: str, nonce: bytes,
                         count: int) -> None:
        # The session is claimed from its node through the backplane while the new
        # socket waits for its verdict (what the client sends meanwhile is not read).
        authorizing, self._authorizing = self._authorizing, None
        if authorizing is not None:
            claims = await self._authorized(transport, authorizing)
            if claims is _REFUSED:
                return
            self.claims = claims
        sessions = self._core.sessions
        try:
            verdict = await sessions.moves.take_over(self, member, nonce, count)
        except asyncio.CancelledError:
            transport.disconnect(False)  # the server shuts down: nobody else closes it
            raise
        if verdict is None:
            self._core.metrics.counters["resume_failures"] += 1
            sessions.start(self)
            self._verdict = sessions.lost(self)
            self.inbound.count_error(self._core.router.clock(), self._core.config.error_limit)
            if not transport.is_disconnected:
                self.on_ws_connected(transport)
            return
        if transport.is_disconnected:
            # Gone while its session moved here: its client will not see it.
            self._core.lifecycle.disconnected(self)
            return
        transport.underlying_transport.write(verdict)
        self.attach(transport)

    async def _authorized(self, transport: WSTransport, authorizing: Awaitable[Any]) -> Any:
        """An async authorize's claims for a resume, within handshake_timeout; _REFUSED
        (the new socket closed as a refused connection would be) if it refused or
        failed."""
        try:
            return await asyncio.wait_for(authorizing, self._core.config.handshake_timeout)
        except asyncio.CancelledError:
            transport.disconnect(False)
            raise
        except Exception as exc:
            if not isinstance(exc, (Deny, TimeoutError)):
                log.error("authorize raised", exc_info=exc)
            transport.send_close(WSCloseCode(1008 if isinstance(exc, Deny) else 1011),
                                 b"unauthorized" if isinstance(exc, Deny) else b"")
            transport.disconnect()
            return _REFUSED

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        session = self._session
        if session is not None:
            if transport is not self.transport:
                return  # a socket it had before a resume (or a take-over) moved it on
            # Dropped, not closed: no close frame came, and the server closed nothing
            # (but a ping timeout, which shuts the socket only).
            if self.inbound.open and self._core.sessions.hold(self):
                return
        self.discard_outbox()
        self._core.lifecycle.disconnected(self)
        # picows' protocol holds this connection as its listener, and the connection held
        # the protocol (attach): without this link cut, a closed connection is a cycle
        # that only a full garbage collection frees, which an idle server may not run for
        # hours (10,000 clients gone left 7.8 KiB each behind).
        self.detach()

    def shut(self, code: int, reason: str, graceful: bool) -> None:
        tr = self.transport
        if tr is None or tr.is_disconnected:
            return
        if not tr.is_close_frame_sent:
            tr.send_close(WSCloseCode(code), _close_reason(reason))
        tr.disconnect(graceful)

    def let_go(self, close: int | None = None) -> None:
        old = self.transport
        self._core.sessions.hold(self, leaving=close is not None)
        if old is None:
            return
        if close is None:
            old.disconnect(False)
        else:
            old.send_close(WSCloseCode(close), b"server restart: resume elsewhere")
            old.disconnect()

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

    ``Server(**options)``: every option is a field of `roomer.Config` (the
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
                              lambda: core.closing, self._new_connection,
                              self.metrics.counters)
        self._started_hooks: list[Hook] = []
        self._stopping_hooks: list[Hook] = []
        self._server: asyncio.Server | None = None
        # The transports HttpFront reads (WebSockets are the registry's to close).
        self._clients: set[Any] = set()
        self._closed: asyncio.Event | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        # Tasks awaiting wait_closed(): shutdown neither waits for them nor cancels them
        # (a handler that awaits the shutdown it started would wait for itself).
        self._waiting: set[asyncio.Task[Any]] = set()
        self._pinged_round = 0.0  # when the last ping round ran (monotonic)
        self._scan: Iterator[Connection] | None = None  # the ping round's, while it runs
        self._buffers: tuple[float, dict[str, int]] | None = None  # when taken, gauges

    def __repr__(self) -> str:
        return f"<roomer.Server {'listening' if self._server else 'not started'}>"

    # the default namespace, as the server's own ---------------------------------------------

    def on(self, event: str) -> Callable[[Handler[Connection]], Handler[Connection]]:
        """Decorator: a handler of ``event`` in the default namespace
        (`Namespace.on`)."""
        return self.default.on(event)

    def on_connect(self, fn: Callable[[Connection], Any]) -> Callable[[Connection], Any]:
        """Decorator: the default namespace's `Namespace.on_connect`: ``fn(conn)``
        at the upgrade; raise Deny to close it with 1008."""
        return self.default.on_connect(fn)

    def on_connected(self, fn: Callable[[Connection], Any]) -> Callable[[Connection], Any]:
        """Decorator: `Namespace.on_connected` of the default namespace."""
        return self.default.on_connected(fn)

    def on_disconnect(self, fn: Callable[[Connection], Any]) -> Callable[[Connection], Any]:
        """Decorator: `Namespace.on_disconnect` of the default namespace."""
        return self.default.on_disconnect(fn)

    def on_join(self, fn: Callable[[Connection, str], Any]) -> Callable[[Connection, str], Any]:
        """Decorator: `Namespace.on_join` of the default namespace."""
        return self.default.on_join(fn)

    def on_moved_in(self, fn: Callable[[Connection], Any]) -> Callable[[Connection], Any]:
        """Decorator: `Namespace.on_moved_in` of the default namespace."""
        return self.default.on_moved_in(fn)

    def on_moved_out(self, fn: Callable[[Connection], Any]) -> Callable[[Connection], Any]:
        """Decorator: `Namespace.on_moved_out` of the default namespace."""
        return self.default.on_moved_out(fn)

    def on_joined(self, fn: Callable[[Connection, str], Any]
                  ) -> Callable[[Connection, str], Any]:
        """Decorator: `Namespace.on_joined` of the default namespace."""
        return self.default.on_joined(fn)

    def on_leave(self, fn: Callable[[Connection, str], Any]
                 ) -> Callable[[Connection, str], Any]:
        """Decorator: `Namespace.on_leave` of the default namespace."""
        return self.default.on_leave(fn)

    def on_left(self, fn: Callable[[Connection, str], Any]) -> Callable[[Connection, str], Any]:
        """Decorator: `Namespace.on_left` of the default namespace."""
        return self.default.on_left(fn)

    def on_event(self, fn: Callable[[Connection, Message], Any]
                 ) -> Callable[[Connection, Message], Any]:
        """Decorator: `Namespace.on_event` of the default namespace."""
        return self.default.on_event(fn)

    def broadcast(self, room: str, event: str, payload: Payload = b"",
                  exclude: Exclude = None) -> Any:
        """`Namespace.broadcast` in the default namespace. Any thread."""
        return self.default.broadcast(room, event, payload, exclude)

    def broadcast_all(self, event: str, payload: Payload = b"", room: str = ROOT,
                      exclude: Exclude = None) -> Any:
        """`Namespace.broadcast_all` in the default namespace: every client. Any
        thread."""
        return self.default.broadcast_all(event, payload, room, exclude)

    def send_to(self, conn_id: str, event: str, payload: Payload = b"",
                room: str = ROOT) -> bool:
        """`Namespace.send_to` in the default namespace. Loop thread only."""
        return self.default.send_to(conn_id, event, payload, room)

    def do(self, fn: Callable[[Connection], Any]) -> int:
        """Call ``fn(conn)`` for every client here (`Namespace.do`). Loop thread
        only."""
        return self.default.do(fn)

    def members(self, room: str) -> list[str]:
        """Ids of ``room``'s members (`Namespace.members`). Any thread."""
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
        """Define a game room type in the default namespace (`Namespace.define`).
        Before start only."""
        self.default.define(name, room, **settings)

    async def create_room(self, type: str, options: dict[str, Any] | None = None,
                          room_id: str | None = None) -> str:
        """`Namespace.create_room` in the default namespace. Loop thread only."""
        return await self.default.create_room(type, options, room_id)

    def game_room(self, room_id: str) -> GameRoom | None:
        """`Namespace.game_room` in the default namespace. Loop thread only."""
        return self.default.game_room(room_id)

    def list_rooms(self, type: str | None = None, **metadata: Any) -> list[RoomListing]:
        """`Namespace.list_rooms` in the default namespace. Any thread."""
        return self.default.list_rooms(type, **metadata)

    async def reserve_seats(self, room_id: str, ids: list[str],
                            seconds: float | None = None) -> bool:
        """`Namespace.reserve_seats` in the default namespace. Loop thread only."""
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
        """The server's counters by name (live; what /metrics shows as ``*_total``)."""
        return self.metrics.counters

    @property
    def errors(self) -> dict[str, int]:
        """Error replies sent, by code (live)."""
        return self.metrics.errors

    def stats(self) -> dict[str, Any]:
        """Counters and gauges (what /metrics shows). Any thread."""
        engine = self._core._engine
        namespaces = list(self._core.namespaces.values())
        gauges = {"connections": len(self.registry.conns),
                  "rooms": sum(len(ns.registry.rooms) for ns in namespaces),
                  "sessions_held": len(self._core.sessions.held),
                  **self._buffer_gauges(),
                  **self._core.games.stats()}
        out = self.metrics.snapshot(gauges, engine.stats if engine is not None else {})
        cluster = self.registry.cluster
        if cluster is not None:
            out["backplane"] = cluster.state()
        return out

    def _buffer_gauges(self) -> dict[str, int]:
        now = time.monotonic()
        if self._buffers is None or now - self._buffers[0] >= BUFFERS_EVERY:
            conns = list(self.registry.conns.values())
            gauges = {"outbox_bytes": sum(conn.outbox_capacity for conn in conns)}
            if fanout.COMPILED:  # the pure-Python twin cannot see picows' read buffers
                gauges["read_buffer_bytes"] = sum(c.read_buffer_capacity for c in conns)
            self._buffers = (now, gauges)
        return self._buffers[1]

    def health_text(self) -> str:
        """The /healthz body: its first line ``ok``, or ``degraded`` while the backplane's
        link is not up (a node whose broker is away still serves its own rooms), then
        the backplane's state when there is one."""
        cluster = self.registry.cluster
        if cluster is None:
            return "ok\n"
        state = cluster.state()
        link = {"up": "connected", "degraded": "degraded (the broker answers late)"}.get(
            state["link"], "disconnected (local rooms only)")
        first = "ok" if state["link"] == "up" else "degraded"
        return (f"{first}\nbackplane {state['url']}: {link}; "
                f"other nodes: {len(state['nodes'])}\n")

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
            ValueError, TypeError: as `Connection.close` (nothing is done then).
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
            write_delay=config.write_delay,
            replay_limit=config.resume_replay,
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
        return await HttpFront.listen(
            self._http,
            host,
            port,
            clients=self._clients,
            accepted=self._core.router.relay.accepted,
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
        registries = {name: ns.registry for name, ns in self._core.namespaces.items()}
        transport = create(
            config.backplane, max_buffer=config.backplane_buffer,
            sender_share=config.backplane_sender_share,
            probe_interval=config.backplane_probe_timeout / 3,
            probe_timeout=config.backplane_probe_timeout)
        cluster = Cluster(
            transport, node_id=config.node_id, prefix=config.backplane_prefix,
            node_timeout=config.node_timeout, heartbeat_interval=config.node_timeout / 6,
            quiet_rooms=[key for registry in registries.values()
                         for key in registry.quiet_keys()])
        await cluster.start(Nodes(registries))
        for registry in registries.values():
            registry.cluster = cluster
        self._core.sessions.moves.attach(cluster)  # sessions move between nodes
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
        Await `wait_closed` for its end."""
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
        """`close`, then `wait_closed`."""
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
            # Sessions are handed over to the nodes their clients come back to, while
            # this one is still in the cluster (a second is kept for the rest).
            await core.sessions.leave(deadline - 1.0)
            # Then: the other nodes drop this node's members at once (not after a timeout).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(cluster.close(), max(0.1, deadline - loop.time()))
        conns = self.registry.conns
        for conn in list(conns.values()):
            conn.stop(1001, "server shutdown", flush=True, graceful=True)
        await tasks.drain(deadline, self._waiting, lambda: not conns)
        for conn in list(conns.values()):
            conn.stop(1001, "server shutdown", flush=False, graceful=False)
        tasks.cancel_work(self._waiting)
        for transport in list(self._clients):  # plain HTTP clients, heads still coming
            transport.abort()
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

    def _new_connection(self, request: WSUpgradeRequest, claims: Any, v2: bool,
                        batch: bool) -> Connection:
        conn = self._connection(request, claims, v2)
        # Batch frames are the new socket's choice: a resumed session may differ.
        conn.batch = batch
        return conn

    def _connection(self, request: WSUpgradeRequest, claims: Any, v2: bool) -> Connection:
        sessions = self._core.sessions
        asked = _session_asked(request.path) if sessions.enabled else None
        lost = False
        if asked is not None and asked[0] != "new":
            held, why = sessions.claim(asked[0], asked[1], v2, claims)
            elsewhere = sessions.moves.elsewhere(*asked) if why == NOT_HERE else None
            if elsewhere is not None:  # held by another node, maybe: claimed from there
                if inspect.isawaitable(claims):  # an async authorize: awaited first
                    conn = WSConnection(self._core, request, None, v2, claims)
                else:
                    conn = WSConnection(self._core, request, claims, v2)
                conn._takeover = elsewhere
                return conn
            if held is not None:
                if inspect.isawaitable(claims):  # an async authorize: awaited first
                    assert isinstance(held, WSConnection)
                    held._authorizing = claims
                if held.transport is not None:  # still connected: its client came back first
                    held.let_go()
                held.request = request
                return held
            lost = True
            self.metrics.counters["resume_failures"] += 1
            log.debug("a resume was refused: %s", why)
        if inspect.isawaitable(claims):  # an async authorize: awaited once connected
            conn = WSConnection(self._core, request, None, v2, claims)
        else:
            conn = WSConnection(self._core, request, claims, v2)
        if asked is not None:
            sessions.start(conn)
        if lost:
            conn._verdict = sessions.lost(conn)
            conn.inbound.count_error(self._core.router.clock(), self.config.error_limit)
        return conn

    def _overflowed(self, conn: Connection) -> None:
        self._cut_off(conn, "slow consumer: outbox limit exceeded")

    def _cut_off(self, conn: Connection, reason: str) -> None:
        if conn.cut_off(reason):  # counted once per connection, whichever bound found it
            self.metrics.counters["dropped_slow_disconnects"] += 1

    def _check_write_timeouts(self, _now: float) -> None:
        # Sync mode never drops: a receiver that stays over its limit is disconnected. Time
        # the server itself did not run (a stall: it wrote nothing) is not the receiver's.
        now = time.monotonic()
        write_timeout = self.config.write_timeout
        stall_end = self._core.router.stall_end
        for conn in list(self.registry.conns.values()):
            since = conn.over_since
            if since and now - max(since, stall_end) > write_timeout:
                self._cut_off(conn, "write timeout")

    def _ping_idle(self, now: float) -> None:
        # One scan for all connections, not a timer task per connection: an idle
        # connection then costs a few fields, not a coroutine. The scan goes SCAN_SLICE
        # connections per loop turn: tens of thousands of quiet clients pinged in one turn
        # stalled everyone's messages for over a second.
        if self._scan is not None:
            return  # the last round's scan is still going
        router = self._core.router
        # After a stall of the server itself, what it could not read meanwhile (pongs
        # included) is still in the kernel: this round hears everyone instead of judging.
        stalled = router.stall_end > self._pinged_round
        self._pinged_round = time.monotonic()
        self._scan = iter(list(self.registry.conns.values()))
        self._scan_step(now, stalled)

    def _scan_step(self, now: float, stalled: bool) -> None:
        config = self.config
        assert config.ping_interval is not None and self._scan is not None
        interval, timeout = config.ping_interval, config.ping_timeout
        router = self._core.router
        for count, conn in enumerate(self._scan, 1):
            if conn.transport is None:
                continue  # a held session: no socket to hear
            router.lift(conn, interval + timeout)
            if stalled:
                conn.inbound.heard()
            verdict = conn.inbound.liveness(now, interval, timeout)
            if verdict is not Liveness.HEARD:
                # Quiet for a whole period: the buffers a burst grew are given back.
                conn.trim_buffers()
                if verdict is Liveness.PING:
                    conn.ping()
                elif verdict is Liveness.DEAD:
                    self.metrics.counters["ping_timeouts"] += 1
                    if conn.resumable:
                        # A dropped session, not a closed one: held once the socket goes.
                        conn.shut(1011, "ping timeout", False)
                    else:
                        conn.stop(1011, "ping timeout", flush=False, graceful=False)
            if count == SCAN_SLICE:
                self._core.call_soon(lambda: self._scan_step(now, stalled))
                return
        self._scan = None
        # Once a round, the allocator returns what is free: glibc keeps freed memory
        # otherwise (read buffers cut back, a crowd gone, and what a lobby's join storm
        # allocated: 5,000 members of one room kept 15.7 KiB each, 8.0 once returned).
        # It costs microseconds when there is nothing to return, about 10 ms for 100 MB.
        if _malloc_trim is not None:
            _malloc_trim(0)


def _session_asked(path: bytes) -> tuple[str, str] | None:
    """``session`` and ``received`` from an upgrade's query string (docs/protocol.md
    §11), None when it asks for no session."""
    query = path.partition(b"?")[2].partition(b"#")[0]
    if b"session=" not in query:
        return None
    try:
        fields = dict(urllib.parse.parse_qsl(query.decode("latin-1"), max_num_fields=16))
    except ValueError:  # a query of more fields than any roomer client sends
        return None
    session = fields.get("session")
    return None if session is None else (session, fields.get("received", ""))


# Plain HTTP, and the way to picows ----------------------------------------------------------
#
# The connection's first reader, on its own below everything else: the rest of this module
# sees WebSocket connections only.

# A client that does not read holds at most about HTTP_HIGH_WATER + HTTP_PIECE bytes of its
# answer in this process (and what the kernel's socket buffer takes), until http_timeout.
HTTP_PIECE = 32 * 1024
HTTP_HIGH_WATER = 64 * 1024
# Bytes one answer writes in a loop turn before the others (and the WebSocket clients) run.
HTTP_TURN = 256 * 1024
# Bytes read and dropped after a request head (pipelined requests, a body roomer does not
# read): reading them keeps the close clean (unread bytes make the kernel reset the
# connection, and the client lose the answer's end); more than this is abuse, and cut.
HTTP_DISCARD = 1 << 20
# After the answer: seconds between looks at whether the client has taken it all (then the
# connection is closed, if the client has not closed it first).
HTTP_LINGER = 1.0
HEAD_BUFFER = 2048
# Connections cut per loop turn for passing the handshake deadline.
EXPIRE_SLICE = 128


class _Expiry:
    """A listener's connections past their handshake deadline, cut EXPIRE_SLICE per loop
    turn: the deadlines of sockets opened together (2,000 half-open ones, a connect storm
    that never upgrades) fall in the same turn, and cutting them all at once stalled every
    other client's messages for hundreds of milliseconds."""

    __slots__ = ("_due", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: list[Any] = []
        self._scheduled = False

    def add(self, transport: Any) -> None:
        self._due.append(transport)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._cut)

    def _cut(self) -> None:
        now, self._due = self._due[:EXPIRE_SLICE], self._due[EXPIRE_SLICE:]
        for transport in now:
            transport.abort()
        if self._due:
            self._loop.call_soon(self._cut)
        else:
            self._scheduled = False


class HttpFront(asyncio.BufferedProtocol):
    """The first reader of every connection on the roomer port.

    It reads the request head (at most ``MAX_HEAD`` bytes, within ``handshake_timeout``) and
    asks :meth:`HttpSide.answer`. A WebSocket upgrade goes to picows: a picows protocol
    becomes the transport's protocol and is fed the bytes read so far; from then on picows
    reads the socket itself. Anything else is answered here: the head, then the body in
    pieces, each written only while the transport holds less than ``HTTP_HIGH_WATER``
    unsent (``pause_writing``/``resume_writing``), all of it within ``http_timeout`` (then
    the connection is aborted). Then the write side is shut (the client reads to the end)
    and the connection closed once the client has it all or closes first.

    Why in front of picows: picows (2.3.1) reads the request head itself and takes only GET
    over HTTP/1.1 (HEAD, OPTIONS and HTTP/1.0 get its 400, whose body repeats a token of the
    request line) before any roomer code runs, and it writes an answer whole before it closes
    (a 20 MiB file held per client that does not read). picows has no public way to serve an
    accepted connection, so its protocol is built here as ``picows.ws_create_server`` builds it
    (``picows.picows.WSProtocol``, not public API: picows is pinned exactly in pyproject.toml).
    """

    __slots__ = ("_accepted", "_answer", "_at", "_buf", "_clients", "_discarded", "_eof",
                 "_expiry", "_http", "_lingering", "_loop", "_paused", "_pumping", "_timer",
                 "_transport", "_ws_protocol")

    def __init__(self, loop: asyncio.AbstractEventLoop, http: HttpSide,
                 ws_protocol: Callable[[], Any], expiry: _Expiry,
                 clients: set[Any], accepted: Callable[[], Any]) -> None:
        self._loop = loop
        self._http = http
        self._expiry = expiry
        self._clients = clients
        self._accepted = accepted
        self._ws_protocol = ws_protocol
        self._transport: Any = None
        self._buf = bytearray(HEAD_BUFFER)
        self._at = 0
        self._timer: asyncio.TimerHandle | None = None
        self._answer: Answer | None = None
        self._paused = False
        self._pumping = False
        self._lingering: asyncio.TimerHandle | None = None
        self._eof = False
        self._discarded = 0

    @classmethod
    async def listen(cls, http: HttpSide, host: str, port: int, *,
                     clients: set[Any], accepted: Callable[[], Any],
                     websocket_handshake_timeout: float,
                     max_frame_size: int, read_buffer_init_size: int,
                     enable_auto_pong: bool, logger_name: str,
                     **kwargs: Any) -> asyncio.Server:
        """Listen on host:port as ``picows.ws_create_server`` does (its options, and
        ``kwargs`` for the event loop's ``create_server``), each connection read by an
        HttpFront; ``clients`` holds the transports still read by one (plain HTTP, a
        request head still coming), for a shutdown to cut; ``accepted()`` is called for
        each connection accepted."""
        from picows import WSAutoPingStrategy
        from picows import picows as picows_impl

        ws_protocol_class = picows_impl.WSProtocol  # type: ignore[attr-defined]
        # ws_create_server's logger name. picows makes each connection a child Logger of a
        # Logger (about 0.5 KiB each, for a name suffix); an adapter it shares as it is.
        logger = logging.LoggerAdapter(logging.getLogger(f"picows.{logger_name}"), {})
        loop = asyncio.get_running_loop()

        def ws_protocol() -> Any:
            return ws_protocol_class(
                host_port=None, ws_path=None, is_client_side=False,
                ws_listener_factory=http.upgrade, logger=logger,
                disconnect_on_exception=True,
                websocket_handshake_timeout=websocket_handshake_timeout,
                enable_auto_ping=False, auto_ping_idle_timeout=20, auto_ping_reply_timeout=20,
                auto_ping_strategy=WSAutoPingStrategy.PING_WHEN_IDLE,
                enable_auto_pong=enable_auto_pong, max_frame_size=max_frame_size,
                extra_headers=None, read_buffer_init_size=read_buffer_init_size)

        try:
            ws_protocol()  # once now: a picows that builds it otherwise fails at start
        except TypeError as exc:
            raise RuntimeError("this picows builds its server protocol differently from "
                               "picows 2.3.1, which roomer needs") from exc
        expiry = _Expiry(loop)
        server: asyncio.Server = await loop.create_server(
            lambda: cls(loop, http, ws_protocol, expiry, clients, accepted), host, port,
            **kwargs)
        return server

    # reading ---------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        self._clients.add(transport)
        self._accepted()
        self._timer = self._loop.call_later(self._http.config.handshake_timeout,
                                            self._expiry.add, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        buf = self._buf
        if self._answer is not None:
            return memoryview(buf)  # what follows a head is read and dropped
        if self._at == len(buf):
            grown = bytearray(min(2 * len(buf), MAX_HEAD))
            grown[:self._at] = buf
            self._buf = buf = grown
        return memoryview(buf)[self._at:]

    def buffer_updated(self, nbytes: int) -> None:
        if self._answer is not None:
            self._discarded += nbytes
            if self._discarded > HTTP_DISCARD:
                self._transport.abort()
            return
        start = max(0, self._at - 3)
        self._at += nbytes
        end = self._buf.find(b"\r\n\r\n", start, self._at)
        if end < 0:
            if self._at >= MAX_HEAD:
                self._start(self._http.too_large())
            return
        answer = self._http.answer(bytes(memoryview(self._buf)[:end]))
        if answer is None:
            self._hand_over()
        else:
            self._start(answer)

    def eof_received(self) -> bool:
        if self._answer is None or self._lingering is not None:
            return False  # no request, or the answer is out: close
        self._eof = True  # half-closed after its request: the answer still goes out
        return True

    def _hand_over(self) -> None:
        self._cancel_timer()
        transport, self._transport = self._transport, None
        self._clients.discard(transport)
        ws = self._ws_protocol()
        ws.connection_made(transport)
        transport.set_protocol(ws)
        data = memoryview(self._buf)[:self._at]
        # picows takes the head (and any frames after it) as if it had read them; it may
        # answer and close at once (a refused upgrade).
        while data and not transport.is_closing():
            room = ws.get_buffer(-1)
            size = min(len(room), len(data))
            room[:size] = data[:size]
            ws.buffer_updated(size)
            data = data[size:]

    # writing ---------------------------------------------------------------------------

    def _start(self, answer: Answer) -> None:
        self._cancel_timer()
        self._answer = answer
        transport = self._transport
        sock = transport.get_extra_info("socket")
        if sock is not None:  # the last piece is not held back for an ACK (Nagle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._timer = self._loop.call_later(self._http.config.http_timeout, self._too_slow)
        transport.set_write_buffer_limits(high=HTTP_HIGH_WATER)
        transport.write(answer.head)
        self._pump()

    def _pump(self) -> None:
        self._pumping = False
        answer, transport = self._answer, self._transport
        if answer is None or transport is None or transport.is_closing() or \
                self._lingering is not None:
            return
        body = answer.body
        budget = HTTP_TURN
        try:
            while body is not None and body.remaining and not self._paused:
                if budget <= 0:
                    if not self._pumping:
                        self._pumping = True
                        self._loop.call_soon(self._pump)
                    return
                piece = body.read(HTTP_PIECE)
                budget -= len(piece)
                transport.write(piece)  # may pause_writing() at once
        except OSError as exc:
            # The client must not take a short or mixed body for the whole: no clean end.
            log.warning("plain HTTP answer cut short: %s", exc)
            transport.abort()
            return
        if body is None or not body.remaining:
            self._written()

    def _written(self) -> None:
        # All of it is in the transport. Shut the write side after it (FIN), and close
        # once the client has taken it (or closes first): closing with the client's bytes
        # still arriving would reset the connection under the answer's end.
        transport = self._transport
        if self._eof or not transport.can_write_eof():  # TLS: close_notify then close
            transport.close()
            return
        transport.write_eof()
        self._lingering = self._loop.call_later(HTTP_LINGER, self._linger)

    def _linger(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size():  # still being read: the deadline stands
            self._lingering = self._loop.call_later(HTTP_LINGER, self._linger)
        else:
            transport.close()

    def pause_writing(self) -> None:
        if not self._paused:
            self._paused = True
            self._http.counters["http_waiting"] += 1

    def resume_writing(self) -> None:
        if self._paused:
            self._paused = False
            self._http.counters["http_waiting"] -= 1
            self._pump()

    def _too_slow(self) -> None:
        self._timer = None
        self._http.counters["http_timeouts"] += 1
        if self._transport is not None:
            self._transport.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._lingering is not None:
            self._lingering.cancel()
        if self._paused:
            self._paused = False
            self._http.counters["http_waiting"] -= 1
        answer, self._answer = self._answer, None
        if answer is not None:
            answer.close()
        self._clients.discard(self._transport)
        self._transport = None
