"""The picows listener and the Server API: the only module that does socket I/O.

Protocol and behaviour: shared DESIGN.md §1-§5, documented for users in README.md.
The parts live beside it: options in config.py, rooms in registry.py, the routing of a
client message in routing.py, plain HTTP and upgrade checks in http.py, counters in
metrics.py, hooks in hooks.py.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from picows import WSCloseCode, WSFrame, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

from . import codec, fanout
from .config import Config
from .errors import Deny
from .handlers import Handler, check_handler
from .hooks import Hook, Hooks
from .http import HttpSide
from .metrics import Metrics
from .registry import ROOT, Registry
from .routing import Router, name_ok

__all__ = ["Connection", "Server"]

log = logging.getLogger("roomer")

Payload = bytes | bytearray | memoryview | str


class Connection(fanout.Peer):
    """One client. Created by the server at the HTTP upgrade; also its picows listener.

    Attributes: ``id`` (unguessable UUIDv4 text), ``claims`` (what ``authorize``
    returned), ``request`` (the upgrade request), ``rooms`` (names of joined rooms).
    """

    # Slots keep an idle connection small (no per-instance dict with the compiled Peer).
    __slots__ = ("_async_busy", "_backlog", "_backlog_held", "_budget_held", "_fragments", "_heard",
                 "_pinged_at", "_quiet_since", "_read_holds", "_registered", "_rooms", "_tokens",
                 "_tokens_at", "claims", "id", "request", "server")

    def __init__(self, server: Server, request: WSUpgradeRequest, claims: Any) -> None:
        super().__init__(server._engine)
        self.server = server
        self.id = str(uuid.uuid4())
        self.claims = claims
        self.request = request
        # A dict, not a set: smaller when it holds a few rooms, and keeps join order.
        self._rooms: dict[str, None] = {}
        self._registered = False
        # Messages waiting while async work of this connection runs (or the turn
        # budget holds it): a client's messages are handled in order.
        self._backlog: deque[bytes] | None = None
        self._async_busy = False
        self._backlog_held = False
        self._budget_held = False
        self._read_holds = 0
        self._fragments: bytearray | None = None
        self._tokens = 0.0
        self._tokens_at = 0.0
        # Idle detection for pings: any frame from the client sets _heard.
        self._heard = True
        self._quiet_since = 0.0
        self._pinged_at = 0.0

    def __repr__(self) -> str:
        return f"<roomer.Connection {self.id}>"

    @property
    def rooms(self) -> frozenset[str]:
        return frozenset(self._rooms)

    # picows callbacks ---------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.attach(transport)
        self.server._connected(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self._heard = True
        msg_type = frame.msg_type
        if transport.is_close_frame_sent and msg_type is not WSMsgType.CLOSE:
            # Closing: read nothing more. picows keeps parsing after its own protocol
            # error (a frame over max_message_size gets 1009, then is still delivered).
            return
        if msg_type is WSMsgType.BINARY or msg_type is WSMsgType.TEXT:
            if self._fragments is not None:
                self.close(WSCloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
            elif frame.fin:
                self.server._router.received(self, frame.get_payload_as_bytes())
            else:
                self._fragments = bytearray(frame.get_payload_as_memoryview())
        elif msg_type is WSMsgType.CONTINUATION:
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
        elif msg_type is WSMsgType.CLOSE:
            self.close_outbox()
            transport.send_close(frame.get_close_code(), frame.get_close_message())
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
        self.close_outbox()
        self.server._disconnected(self)

    # server-side API -----------------------------------------------------------------

    def send(self, event: str, payload: Payload = b"", room: str = ROOT) -> bool:
        """Send a server-originated message (src empty) to this client."""
        return bool(self.send_frame(codec.encode_frame(room, event, "", "", payload)))

    def try_send(self, message: bytes) -> bool:
        """Queue an encoded roomer message (``Message.encode()``) to this client.

        Non-blocking: False when it was dropped (outbox full, or closing).
        """
        return bool(self.send_frame(codec.frame_header(len(message)) + bytes(message)))

    def send_to_room(self, room: str, event: str, payload: Payload = b"") -> int:
        """Broadcast to ``room``'s members except this connection, with src = this id."""
        members = self.server.registry.rooms.get(room)
        if not members:
            return 0
        frame = codec.encode_frame(room, event, "", self.id, payload)
        sent: int = self.server._engine.broadcast(members, frame, self)
        return sent

    def send_to_client(self, dst: str, event: str, payload: Payload = b"",
                       room: str = ROOT) -> bool:
        """A direct message to client ``dst`` with src = this id. False if unknown."""
        target = self.server.registry.conns.get(dst)
        if target is None:
            return False
        return bool(target.send_frame(codec.encode_frame(room, event, dst, self.id, payload)))

    def join(self, room: str) -> None:
        """Put this client in ``room`` (server-driven: no on_join hook, no room limit)."""
        self.server._check_room_name(room)
        self.server.registry.add_member(self, room)

    def leave(self, room: str) -> None:
        """Take this client out of ``room`` (server-driven: no on_leave hook)."""
        self.server._check_room_name(room)
        self.server.registry.remove_member(self, room, ack=True)

    def close(self, code: int | WSCloseCode = 1000, reason: str = "") -> None:
        """Write what is queued, send a close frame and disconnect."""
        tr = self.transport
        self.close_outbox()
        if tr is None or tr.is_disconnected:
            return
        if not tr.is_close_frame_sent:
            tr.send_close(WSCloseCode(code), reason.encode()[:123])
        tr.disconnect(True)

    def abort(self, code: int | WSCloseCode, reason: str) -> None:
        """Close without waiting for queued data: for receivers that stopped reading."""
        tr = self.transport
        if tr is None or tr.is_disconnected:
            return
        if not tr.is_close_frame_sent:
            tr.send_close(WSCloseCode(code), reason.encode()[:123])
        tr.disconnect(False)


class Server:
    """A roomer server: rooms, handlers, hooks and fan-out over picows.

    ``Server(**options)``: every option is a field of :class:`roomer.Config`,
    documented in README.md ("Server options"); ``server.config`` holds them.
    """

    def __init__(self, **options: Any) -> None:
        self.config = Config(**options)
        # Mutable on purpose: an app (the demo) adds pages after building the server.
        self.routes: dict[str, tuple[str, bytes]] = dict(self.config.routes)
        self.metrics = Metrics()
        self.registry = Registry(self.config.root_presence)
        self.hooks = Hooks()
        self._handlers: dict[str, Handler] = {}
        self._router = Router(self)
        self._http = HttpSide(self.config, self.routes, self.metrics_text,
                              lambda: self._closing, self._new_connection)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._engine_obj: Any = None
        self._server: asyncio.Server | None = None
        self._closing = False
        self._closed: asyncio.Event | None = None
        self._sync_lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.started_at = time.time()

    @property
    def sync_broadcast(self) -> bool:
        return self.config.sync_broadcast

    @property
    def counters(self) -> dict[str, int]:
        return self.metrics.counters

    @property
    def errors(self) -> dict[str, int]:
        return self.metrics.errors

    # registration ------------------------------------------------------------------------

    def on(self, event: str) -> Callable[[Handler], Handler]:
        """Decorator: run ``fn(conn, msg)`` (sync or async) for client messages of ``event``."""

        def register(fn: Handler) -> Handler:
            check_handler(event, fn, self._handlers)
            self._handlers[event] = fn
            return fn

        return register

    def on_connect(self, fn: Hook) -> Hook:
        """Decorator: ``fn(conn)`` after the upgrade; raise Deny to close with 1008."""
        return Hooks.add(self.hooks.connect, fn)

    def on_disconnect(self, fn: Hook) -> Hook:
        """Decorator: ``fn(conn)`` once the connection is gone (after its rooms' leaves)."""
        return Hooks.add(self.hooks.disconnect, fn)

    def on_join(self, fn: Hook) -> Hook:
        """Decorator: ``fn(conn, room)`` before a client's join; raise Deny to refuse."""
        return Hooks.add(self.hooks.join, fn)

    def on_leave(self, fn: Hook) -> Hook:
        """Decorator: ``fn(conn, room)`` before a client's leave (Deny refuses) and for
        every room a disconnecting client was in (Deny ignored)."""
        return Hooks.add(self.hooks.leave, fn)

    # introspection -----------------------------------------------------------------------

    @property
    def _engine(self) -> Any:
        if self._engine_obj is None:
            raise RuntimeError("the server is not started")
        return self._engine_obj

    @property
    def connection_count(self) -> int:
        return len(self.registry.conns)

    def connections(self) -> list[Connection]:
        return list(self.registry.conns.values())

    def connection(self, conn_id: str) -> Connection | None:
        return self.registry.conns.get(conn_id)

    def rooms(self) -> list[str]:
        """Names of the rooms that have members (root included while it has any)."""
        return list(self.registry.rooms)

    def members(self, room: str) -> list[str]:
        """Ids of ``room``'s members, in join order; empty for an unknown room."""
        return list(self.registry.rooms.get(room, ()))

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("the server is not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    _GAUGES = ("connections", "rooms")

    def stats(self) -> dict[str, Any]:
        engine = self._engine_obj
        gauges = {"connections": len(self.registry.conns), "rooms": len(self.registry.rooms)}
        return self.metrics.snapshot(gauges, engine.stats if engine is not None else {})

    def metrics_text(self) -> str:
        """Prometheus text exposition of the server's counters."""
        return Metrics.prometheus(self.stats(), self._GAUGES)

    # sending from anywhere ---------------------------------------------------------------

    def _on_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def _call_soon(self, fn: Callable[[], Any]) -> None:
        assert self._loop is not None
        self._loop.call_soon(fn)

    def broadcast(self, room: str, event: str, payload: Payload = b"",
                  exclude: Connection | str | None = None) -> asyncio.Future[int]:
        """Send a server-originated message (src empty) to ``room``'s members.

        Returns a future of how many receivers it was queued to. In the default async
        mode it is already done (never blocks); with ``sync_broadcast`` it completes once
        every member has room in its outbox, so ``await`` it. From another thread it
        is scheduled on the server's loop.
        """
        frame = codec.encode_frame(room, event, "", "", payload)
        return self._deliver(lambda: self.registry.rooms.get(room), frame, exclude)

    def broadcast_all(self, event: str, payload: Payload = b"", room: str = ROOT,
                      exclude: Connection | str | None = None) -> asyncio.Future[int]:
        """Like broadcast, to every connected client (the message names ``room``)."""
        frame = codec.encode_frame(room, event, "", "", payload)
        return self._deliver(lambda: self.registry.conns, frame, exclude)

    def _deliver(self, members_of: Callable[[], dict[str, Connection] | None], frame: bytes,
                 exclude: Connection | str | None) -> Any:
        loop = self._loop
        if loop is None:
            raise RuntimeError("the server is not started")
        if exclude is not None and not isinstance(exclude, (str, Connection)):
            raise TypeError("exclude must be a Connection, a connection id or None")
        if not self._on_loop_thread():
            return asyncio.run_coroutine_threadsafe(
                self._deliver_async(members_of, frame, exclude), loop)
        if self.config.sync_broadcast:
            return loop.create_task(self._deliver_async(members_of, frame, exclude))
        fut: asyncio.Future[int] = loop.create_future()
        fut.set_result(self._deliver_now(members_of(), frame, exclude))
        return fut

    async def _deliver_async(self, members_of: Callable[[], dict[str, Connection] | None],
                             frame: bytes, exclude: Connection | str | None) -> int:
        if not self.config.sync_broadcast:
            return self._deliver_now(members_of(), frame, exclude)
        assert self._sync_lock is not None
        # One admission at a time, in call order: the global order of sync broadcasts.
        async with self._sync_lock:
            while True:
                members = members_of()
                if not members:
                    return 0
                excluded = self._resolve(exclude)
                if self._engine.over_limit(members, excluded) is None:
                    sent: int = self._engine.broadcast(members, frame, excluded)
                    return sent
                await self._engine.wait_drain()

    def _resolve(self, exclude: Connection | str | None) -> Connection | None:
        if isinstance(exclude, str):
            return self.registry.conns.get(exclude)
        return exclude

    def _deliver_now(self, members: dict[str, Connection] | None, frame: bytes,
                     exclude: Connection | str | None) -> int:
        if not members:
            return 0
        sent: int = self._engine.broadcast(members, frame, self._resolve(exclude))
        return sent

    def send_to(self, conn_id: str, event: str, payload: Payload = b"",
                room: str = ROOT) -> bool:
        """Send a server-originated message to one client. False if it is not here."""
        if not self._on_loop_thread():
            raise RuntimeError("send_to from another thread: use server.call_threadsafe")
        conn = self.registry.conns.get(conn_id)
        if conn is None:
            return False
        return conn.send(event, payload, room)

    def do(self, fn: Callable[[Connection], Any]) -> int:
        """Call ``fn(conn)`` for every connected client; returns how many."""
        conns = list(self.registry.conns.values())
        for conn in conns:
            fn(conn)
        return len(conns)

    def call_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the server's loop, from any thread."""
        if self._loop is None:
            raise RuntimeError("the server is not started")
        self._loop.call_soon_threadsafe(fn, *args)

    def kick(self, conn_id: str, reason: str = "kicked", code: int = 1008) -> bool:
        """Close one client's connection. False if it is not here."""
        conn = self.registry.conns.get(conn_id)
        if conn is None:
            return False
        conn.close(code, reason)
        return True

    # lifecycle -----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 8080, *,
                    reuse_port: bool = False) -> None:
        """Listen on host:port (port 0 picks a free one; see ``address``)."""
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
        self.registry.engine = self._engine_obj
        kwargs: dict[str, Any] = {}
        if reuse_port:
            kwargs["reuse_port"] = True
        self._server = await ws_create_server(
            self._http.upgrade,
            host,
            port,
            websocket_handshake_timeout=config.handshake_timeout,
            max_frame_size=config.max_message_size,
            read_buffer_init_size=config.read_buffer_size,
            logger_name="roomer.picows",
            **kwargs,
        )
        if config.sync_broadcast:
            self._spawn(self._watch_slow())
        if config.ping_interval is not None:
            self._spawn(self._ping_idle(config.ping_interval, config.ping_timeout))

    async def serve_forever(self) -> None:
        """Serve until ``shutdown`` (or cancellation)."""
        if self._closed is None:
            raise RuntimeError("the server is not started")
        await self._closed.wait()

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every connection with 1001 after writing its outbox,
        and wait up to ``timeout`` seconds for them to go."""
        if self._server is None or self._closing:
            return
        self._closing = True
        self._server.close()
        conns = self.registry.conns
        for conn in list(conns.values()):
            conn.close(WSCloseCode.GOING_AWAY, "server shutdown")
        deadline = time.monotonic() + timeout
        while conns and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(conns.values()):
            conn.abort(WSCloseCode.GOING_AWAY, "server shutdown")
        for task in list(self._tasks):
            task.cancel()
        await self._server.wait_closed()
        assert self._closed is not None
        self._closed.set()

    def run(self, host: str = "127.0.0.1", port: int = 8080, *, reuse_port: bool = False,
            on_started: Callable[[Server], Any] | None = None) -> None:
        """Serve on uvloop (asyncio if uvloop is missing) until SIGINT or SIGTERM."""

        async def main() -> None:
            await self.start(host, port, reuse_port=reuse_port)
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

    def _new_connection(self, request: WSUpgradeRequest, claims: Any) -> Connection:
        return Connection(self, request, claims)

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
        if conn.transport is None or conn.transport.is_disconnected:
            return
        self._accept(conn)
        self._router.drain(conn)

    def _accept(self, conn: Connection) -> None:
        conn._registered = True
        self.registry.conns[conn.id] = conn
        self.registry.add_member(conn, ROOT)

    def _disconnected(self, conn: Connection) -> None:
        if not conn._registered:
            return
        conn._registered = False
        for room in list(conn._rooms):
            self.registry.remove_member(conn, room, ack=False)
            try:
                pending = Hooks.run(self.hooks.leave, conn, room)
            except Deny:
                pass  # a disconnect cannot be refused
            except Exception:
                log.exception("on_leave hook raised for a disconnect")
            else:
                if pending is not None:
                    self._spawn(self._quiet(pending, "on_leave"))
        del self.registry.conns[conn.id]
        try:
            pending = Hooks.run(self.hooks.disconnect, conn)
        except Exception:
            log.exception("on_disconnect hook raised")
        else:
            if pending is not None:
                self._spawn(self._quiet(pending, "on_disconnect"))

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

    def _overflowed(self, conn: Connection) -> None:
        self.metrics.counters["dropped_slow_disconnects"] += 1
        conn.abort(WSCloseCode.POLICY_VIOLATION, "slow consumer: outbox limit exceeded")

    async def _watch_slow(self) -> None:
        # Sync mode never drops: a receiver that stays over its limit is disconnected.
        write_timeout = self.config.write_timeout
        period = min(1.0, write_timeout / 4)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for conn in list(self.registry.conns.values()):
                since = conn.over_since
                if since and now - since > write_timeout:
                    self.metrics.counters["dropped_slow_disconnects"] += 1
                    conn.abort(WSCloseCode.POLICY_VIOLATION, "write timeout")

    async def _ping_idle(self, interval: float, timeout: float) -> None:
        # One scan for all connections, not a timer task per connection: an idle
        # connection then costs a few fields, not a coroutine (see README, memory).
        assert self._loop is not None
        loop = self._loop
        period = max(0.05, min(interval, timeout) / 2)
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for conn in list(self.registry.conns.values()):
                if conn._heard:
                    conn._heard = False
                    conn._quiet_since = now
                    conn._pinged_at = 0.0
                elif conn._pinged_at:
                    if now - conn._pinged_at >= timeout:
                        conn.abort(WSCloseCode.INTERNAL_ERROR, "ping timeout")
                elif now - conn._quiet_since >= interval and conn.transport is not None:
                    conn._pinged_at = now
                    conn.transport.send_ping()

    # rooms ----------------------------------------------------------------------------------

    def _check_room_name(self, room: str) -> None:
        limit = self.config.max_room_name
        if not isinstance(room, str) or not name_ok(room, limit):
            raise ValueError(f"room names are 1-{limit} bytes of UTF-8")
