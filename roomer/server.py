"""The picows listener and the Server API: the only module that does socket I/O.

Protocol and behaviour: shared DESIGN.md §1-§5, documented for users in README.md.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from picows import (
    WSCloseCode,
    WSFrame,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from . import codec, fanout
from .errors import Deny, ProtocolError, RoomerError
from .handlers import RESERVED_EVENTS, Handler, check_handler, registered
from .message import Message

__all__ = ["Connection", "Server"]

log = logging.getLogger("roomer")

ROOT = "root"
ERROR_CODES = (
    "malformed", "invalid_name", "join_denied", "leave_denied", "too_many_rooms",
    "reserved_event", "no_such_client", "handler_error", "forbidden", "not_member",
    "rate_limited",
)
# Messages a connection may queue while an async handler or hook of its runs; past
# this its reads are paused, so a client cannot grow server memory without bound.
BACKLOG_PAUSE = 64

Payload = bytes | bytearray | memoryview | str
Hook = Callable[..., Any]


def _payload_bytes(payload: Payload) -> bytes:
    if isinstance(payload, str):
        return payload.encode()
    return bytes(payload)


def _name_ok(name: str, limit: int) -> bool:
    size = len(name) if name.isascii() else len(name.encode())
    return 0 < size <= limit


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
                self.server._received(self, frame.get_payload_as_bytes())
            else:
                self._fragments = bytearray(frame.get_payload_as_memoryview())
        elif msg_type is WSMsgType.CONTINUATION:
            parts = self._fragments
            if parts is None:
                self.close(WSCloseCode.PROTOCOL_ERROR, "continuation without a message")
                return
            parts += frame.get_payload_as_memoryview()
            if len(parts) > self.server.max_message_size:
                self._fragments = None
                self.close(WSCloseCode.MESSAGE_TOO_BIG, "message too big")
            elif frame.fin:
                self._fragments = None
                self.server._received(self, bytes(parts))
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
        members = self.server._rooms.get(room)
        if not members:
            return 0
        frame = codec.encode_frame(room, event, "", self.id, payload)
        sent: int = self.server._engine.broadcast(members, frame, self)
        return sent

    def send_to_client(self, dst: str, event: str, payload: Payload = b"",
                       room: str = ROOT) -> bool:
        """A direct message to client ``dst`` with src = this id. False if unknown."""
        target = self.server._conns.get(dst)
        if target is None:
            return False
        return bool(target.send_frame(codec.encode_frame(room, event, dst, self.id, payload)))

    def join(self, room: str) -> None:
        """Put this client in ``room`` (server-driven: no on_join hook, no room limit)."""
        self.server._check_room_name(room)
        self.server._add_member(self, room)

    def leave(self, room: str) -> None:
        """Take this client out of ``room`` (server-driven: no on_leave hook)."""
        self.server._check_room_name(room)
        self.server._remove_member(self, room, ack=True)

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

    Every option is documented in README.md ("Server options").
    """

    def __init__(
        self,
        *,
        authorize: Callable[[WSUpgradeRequest], Any] | None = None,
        allowed_origins: Iterable[str] | None = None,
        sync_broadcast: bool = False,
        max_message_size: int = 1 << 20,
        outbox_limit: int = 1 << 20,
        slow_consumer: str = "drop",
        write_timeout: float = 10.0,
        flush_threshold: int = 64 * 1024,
        turn_budget: int = 16 * 1024,
        root_presence: bool = False,
        allow_root_broadcast: bool = False,
        max_room_name: int = 128,
        max_event_name: int = 64,
        max_rooms_per_connection: int | None = None,
        rate_limit: tuple[float, float] | None = None,
        ping_interval: float | None = 20.0,
        ping_timeout: float = 20.0,
        handshake_timeout: float = 5.0,
        read_buffer_size: int = 1024,
        routes: dict[str, tuple[str, bytes]] | None = None,
    ) -> None:
        if slow_consumer not in ("drop", "disconnect"):
            raise ValueError("slow_consumer must be 'drop' or 'disconnect'")
        if max_message_size < 20:
            raise ValueError("max_message_size must be at least 20 (the smallest message)")
        if write_timeout <= 0:
            raise ValueError("write_timeout must be positive")
        if rate_limit is not None:
            count, per = rate_limit
            if count <= 0 or per <= 0:
                raise ValueError("rate_limit must be (messages > 0, seconds > 0)")
        if max_rooms_per_connection is not None and max_rooms_per_connection < 1:
            raise ValueError("max_rooms_per_connection must be at least 1")
        self.authorize = authorize
        self.allowed_origins = None if allowed_origins is None else frozenset(allowed_origins)
        self.sync_broadcast = sync_broadcast
        self.max_message_size = max_message_size
        self.outbox_limit = outbox_limit
        self.slow_consumer = slow_consumer
        self.write_timeout = write_timeout
        self.flush_threshold = flush_threshold
        self.turn_budget = turn_budget
        self.root_presence = root_presence
        self.allow_root_broadcast = allow_root_broadcast
        self.max_room_name = max_room_name
        self.max_event_name = max_event_name
        self.max_rooms_per_connection = max_rooms_per_connection
        self.rate_limit = rate_limit
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.handshake_timeout = handshake_timeout
        self.read_buffer_size = read_buffer_size
        self.routes: dict[str, tuple[str, bytes]] = dict(routes or {})

        self._handlers: dict[str, Handler] = {}
        self._on_connect: list[Hook] = []
        self._on_disconnect: list[Hook] = []
        self._on_join: list[Hook] = []
        self._on_leave: list[Hook] = []
        self._conns: dict[str, Connection] = {}
        self._rooms: dict[str, dict[str, Connection]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._engine_obj: Any = None
        self._server: asyncio.Server | None = None
        self._closing = False
        self._closed: asyncio.Event | None = None
        self._sync_lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._budget_paused: list[Connection] = []
        self.started_at = time.time()
        self.counters: dict[str, int] = {
            "connections_total": 0,
            "messages_in": 0,
            "relayed": 0,
            "direct": 0,
            "handled": 0,
            "dropped_slow_disconnects": 0,
        }
        self.errors: dict[str, int] = dict.fromkeys(ERROR_CODES, 0)

    # registration ------------------------------------------------------------------------

    def on(self, event: str) -> Callable[[Handler], Handler]:
        """Decorator: run ``fn(conn, msg)`` (sync or async) for client messages of ``event``."""

        def register(fn: Handler) -> Handler:
            check_handler(event, fn, self._handlers)
            self._handlers[event] = fn
            return fn

        return register

    def _hook(self, hooks: list[Hook], fn: Hook) -> Hook:
        if not callable(fn):
            raise TypeError("hook is not callable")
        hooks.append(fn)
        return fn

    def on_connect(self, fn: Hook) -> Hook:
        """Decorator: ``fn(conn)`` after the upgrade; raise Deny to close with 1008."""
        return self._hook(self._on_connect, fn)

    def on_disconnect(self, fn: Hook) -> Hook:
        """Decorator: ``fn(conn)`` once the connection is gone (after its rooms' leaves)."""
        return self._hook(self._on_disconnect, fn)

    def on_join(self, fn: Hook) -> Hook:
        """Decorator: ``fn(conn, room)`` before a client's join; raise Deny to refuse."""
        return self._hook(self._on_join, fn)

    def on_leave(self, fn: Hook) -> Hook:
        """Decorator: ``fn(conn, room)`` before a client's leave (Deny refuses) and for
        every room a disconnecting client was in (Deny ignored)."""
        return self._hook(self._on_leave, fn)

    # introspection -----------------------------------------------------------------------

    @property
    def _engine(self) -> Any:
        if self._engine_obj is None:
            raise RuntimeError("the server is not started")
        return self._engine_obj

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    def connections(self) -> list[Connection]:
        return list(self._conns.values())

    def connection(self, conn_id: str) -> Connection | None:
        return self._conns.get(conn_id)

    def rooms(self) -> list[str]:
        """Names of the rooms that have members (root included while it has any)."""
        return list(self._rooms)

    def members(self, room: str) -> list[str]:
        """Ids of ``room``'s members, in join order; empty for an unknown room."""
        return list(self._rooms.get(room, ()))

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("the server is not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    def stats(self) -> dict[str, Any]:
        engine = self._engine_obj
        out: dict[str, Any] = dict(self.counters)
        out["connections"] = len(self._conns)
        out["rooms"] = len(self._rooms)
        out.update(engine.stats if engine is not None else {})
        out["errors"] = dict(self.errors)
        return out

    # sending from anywhere ---------------------------------------------------------------

    def _on_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def broadcast(self, room: str, event: str, payload: Payload = b"",
                  exclude: Connection | str | None = None) -> asyncio.Future[int]:
        """Send a server-originated message (src empty) to ``room``'s members.

        Returns a future of how many receivers it was queued to. In the default async
        mode it is already done (never blocks); with ``sync_broadcast`` it completes once
        every member has room in its outbox, so ``await`` it. From another thread it
        is scheduled on the server's loop.
        """
        frame = codec.encode_frame(room, event, "", "", payload)
        return self._deliver(lambda: self._rooms.get(room), frame, exclude)

    def broadcast_all(self, event: str, payload: Payload = b"", room: str = ROOT,
                      exclude: Connection | str | None = None) -> asyncio.Future[int]:
        """Like broadcast, to every connected client (the message names ``room``)."""
        frame = codec.encode_frame(room, event, "", "", payload)
        return self._deliver(lambda: self._conns, frame, exclude)

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
        if self.sync_broadcast:
            return loop.create_task(self._deliver_async(members_of, frame, exclude))
        fut: asyncio.Future[int] = loop.create_future()
        fut.set_result(self._deliver_now(members_of(), frame, exclude))
        return fut

    async def _deliver_async(self, members_of: Callable[[], dict[str, Connection] | None],
                             frame: bytes, exclude: Connection | str | None) -> int:
        if not self.sync_broadcast:
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
            return self._conns.get(exclude)
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
        conn = self._conns.get(conn_id)
        if conn is None:
            return False
        return conn.send(event, payload, room)

    def do(self, fn: Callable[[Connection], Any]) -> int:
        """Call ``fn(conn)`` for every connected client; returns how many."""
        conns = list(self._conns.values())
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
        conn = self._conns.get(conn_id)
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
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._closed = asyncio.Event()
        self._sync_lock = asyncio.Lock()
        self._engine_obj = fanout.Fanout(
            self._loop,
            outbox_limit=self.outbox_limit,
            # An outbox is written before it could pass the limit within one turn.
            flush_threshold=min(self.flush_threshold, self.outbox_limit),
            sync=self.sync_broadcast,
            disconnect_slow=self.slow_consumer == "disconnect",
            on_overflow=self._overflowed,
        )
        kwargs: dict[str, Any] = {}
        if reuse_port:
            kwargs["reuse_port"] = True
        self._server = await ws_create_server(
            self._upgrade,
            host,
            port,
            websocket_handshake_timeout=self.handshake_timeout,
            max_frame_size=self.max_message_size,
            read_buffer_init_size=self.read_buffer_size,
            logger_name="roomer.picows",
            **kwargs,
        )
        if self.sync_broadcast:
            self._spawn(self._watch_slow())
        if self.ping_interval is not None:
            self._spawn(self._ping_idle(self.ping_interval, self.ping_timeout))

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
        for conn in list(self._conns.values()):
            conn.close(WSCloseCode.GOING_AWAY, "server shutdown")
        deadline = time.monotonic() + timeout
        while self._conns and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self._conns.values()):
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

    # HTTP and upgrade ----------------------------------------------------------------------

    def _upgrade(self, request: WSUpgradeRequest) -> Any:
        path = request.path.split(b"?", 1)[0].decode("latin-1")
        if path == "/healthz":
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_ok_response(b"ok\n"), None)
        if path == "/metrics":
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_ok_response(
                    self.metrics_text().encode(),
                    {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}),
                None)
        if "upgrade" not in request.headers.get("Connection", "").lower():
            route = self.routes.get(path)
            if route is None:
                return None
            content_type, body = route
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_ok_response(body, {"Content-Type": content_type}),
                None)
        if self._closing:
            return self._http_error(503, b"shutting down\n")
        if self.allowed_origins is not None:
            origin = request.headers.get("Origin")
            if origin not in self.allowed_origins:
                return self._http_error(403, b"origin not allowed\n")
        claims: Any = None
        if self.authorize is not None:
            try:
                claims = self.authorize(request)
            except Deny:
                return self._http_error(401, b"unauthorized\n")
            except Exception:
                log.exception("authorize raised")
                return self._http_error(500, b"internal error\n")
        return Connection(self, request, claims)

    @staticmethod
    def _http_error(status: int, body: bytes) -> WSUpgradeResponseWithListener:
        return WSUpgradeResponseWithListener(
            WSUpgradeResponse.create_error_response(status, body), None)

    def metrics_text(self) -> str:
        """Prometheus text exposition of the server's counters."""
        stats = self.stats()
        lines = [
            "# TYPE roomer_connections gauge",
            f"roomer_connections {stats['connections']}",
            "# TYPE roomer_rooms gauge",
            f"roomer_rooms {stats['rooms']}",
        ]
        for key in ("connections_total", "messages_in", "relayed", "direct", "handled",
                    "deliveries", "dropped", "writes", "bytes_out",
                    "dropped_slow_disconnects"):
            if key in stats:
                lines.append(f"# TYPE roomer_{key} counter")
                lines.append(f"roomer_{key} {stats[key]}")
        lines.append("# TYPE roomer_errors counter")
        for code, count in stats["errors"].items():
            lines.append(f'roomer_errors{{code="{code}"}} {count}')
        return "\n".join(lines) + "\n"

    # connection lifecycle -----------------------------------------------------------------

    def _connected(self, conn: Connection) -> None:
        self.counters["connections_total"] += 1
        if self._closing:
            conn.close(WSCloseCode.GOING_AWAY, "server shutdown")
            return
        try:
            pending = self._run_hooks(self._on_connect, conn)
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

    def _run_hooks(self, hooks: list[Hook], conn: Connection,
                   *args: Any) -> Coroutine[Any, Any, None] | None:
        """Run hooks in order; their exceptions propagate. None when all ran; a
        coroutine finishing the rest once one of them turned out async."""
        for i, hook in enumerate(hooks):
            result = hook(conn, *args)
            if inspect.isawaitable(result):
                return self._finish_hooks(result, hooks[i + 1:], conn, args)
        return None

    async def _finish_hooks(self, first: Awaitable[Any], rest: list[Hook], conn: Connection,
                            args: tuple[Any, ...]) -> None:
        await first
        for hook in rest:
            result = hook(conn, *args)
            if inspect.isawaitable(result):
                await result

    async def _accept_later(self, conn: Connection, pending: Awaitable[None]) -> None:
        try:
            await pending
        except asyncio.CancelledError:
            # shutdown() cancels this while on_connect runs: the client is not in
            # _conns yet, so close it here (else wait_closed() waits for it forever).
            conn.abort(WSCloseCode.GOING_AWAY, "server shutdown")
            raise
        except Exception as exc:
            self._refuse_connection(conn, exc)
            return
        if conn.transport is None or conn.transport.is_disconnected:
            return
        self._accept(conn)
        self._drain(conn)

    def _accept(self, conn: Connection) -> None:
        conn._registered = True
        self._conns[conn.id] = conn
        self._add_member(conn, ROOT)

    def _disconnected(self, conn: Connection) -> None:
        if not conn._registered:
            return
        conn._registered = False
        for room in list(conn._rooms):
            self._remove_member(conn, room, ack=False)
            try:
                pending = self._run_hooks(self._on_leave, conn, room)
            except Deny:
                pass  # a disconnect cannot be refused
            except Exception:
                log.exception("on_leave hook raised for a disconnect")
            else:
                if pending is not None:
                    self._spawn(self._quiet(pending, "on_leave"))
        del self._conns[conn.id]
        try:
            pending = self._run_hooks(self._on_disconnect, conn)
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
        self.counters["dropped_slow_disconnects"] += 1
        conn.abort(WSCloseCode.POLICY_VIOLATION, "slow consumer: outbox limit exceeded")

    async def _watch_slow(self) -> None:
        # Sync mode never drops: a receiver that stays over its limit is disconnected.
        period = min(1.0, self.write_timeout / 4)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for conn in list(self._conns.values()):
                since = conn.over_since
                if since and now - since > self.write_timeout:
                    self.counters["dropped_slow_disconnects"] += 1
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
            for conn in list(self._conns.values()):
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
        if not isinstance(room, str) or not _name_ok(room, self.max_room_name):
            raise ValueError(f"room names are 1-{self.max_room_name} bytes of UTF-8")

    def _add_member(self, conn: Connection, room: str) -> None:
        members = self._rooms.get(room)
        if members is None:
            members = self._rooms[room] = {}
        quiet = room == ROOT and not self.root_presence
        fresh = conn.id not in members
        members[conn.id] = conn
        conn._rooms[room] = None
        listed = [conn.id] if quiet else list(members)
        conn.send_frame(
            codec.encode_frame(room, "join_ack", "", conn.id, json.dumps(listed)))
        if fresh and not quiet:
            self._engine.broadcast(
                members, codec.encode_frame(room, "new_member", "", "", conn.id), conn)

    def _remove_member(self, conn: Connection, room: str, *, ack: bool) -> None:
        members = self._rooms.get(room)
        was_member = members is not None and members.pop(conn.id, None) is not None
        conn._rooms.pop(room, None)
        if ack:
            conn.send_frame(
                codec.encode_frame(room, "leave_ack", "", conn.id, conn.id))
        if not was_member or members is None:
            return
        if not members:
            del self._rooms[room]
        elif room != ROOT or self.root_presence:
            self._engine.broadcast(
                members, codec.encode_frame(room, "member_left", "", "", conn.id))

    # inbound messages ---------------------------------------------------------------------

    def _received(self, conn: Connection, data: bytes) -> None:
        if not conn._registered and conn._backlog is None:
            return
        backlog = conn._backlog
        if backlog is not None:
            backlog.append(data)
            if len(backlog) >= BACKLOG_PAUSE and not conn._backlog_held:
                conn._backlog_held = True
                conn.hold_reading()
            return
        pending = self._dispatch(conn, data)
        if pending is not None:
            conn._backlog = deque()
            self._spawn(self._continue(conn, pending))
        elif conn._budget_held:
            # The rest of this read waits for the next turn, like the reads after it.
            conn._backlog = deque()

    async def _continue(self, conn: Connection, pending: Awaitable[None]) -> None:
        conn._async_busy = True
        try:
            await pending
        finally:
            conn._async_busy = False
        self._drain(conn)

    def _drain(self, conn: Connection) -> None:
        """Handle a connection's queued messages in order, until one starts async work
        (which drains the rest when it ends) or the turn budget holds the connection
        (the next turn resumes)."""
        backlog = conn._backlog
        while backlog and conn._registered:
            if conn._budget_held:
                return
            pending = self._dispatch(conn, backlog.popleft())
            if pending is not None:
                self._spawn(self._continue(conn, pending))
                return
        conn._backlog = None
        if conn._backlog_held:
            conn._backlog_held = False
            conn.release_reading()

    def _error(self, conn: Connection, code: str, message: str, room: str = ROOT,
               event: str = "") -> None:
        self.errors[code] = self.errors.get(code, 0) + 1
        body = json.dumps({"code": code, "message": message, "event": event})
        conn.send_frame(codec.encode_frame(room, "error", "", "", body))

    def _rate_limited(self, conn: Connection) -> bool:
        assert self.rate_limit is not None
        count, per = self.rate_limit
        now = time.monotonic()
        if conn._tokens_at == 0.0:
            conn._tokens = count
        else:
            conn._tokens = min(count, conn._tokens + (now - conn._tokens_at) * count / per)
        conn._tokens_at = now
        if conn._tokens < 1.0:
            return True
        conn._tokens -= 1.0
        return False

    def _dispatch(self, conn: Connection, data: bytes) -> Awaitable[None] | None:
        """Route one client message (DESIGN §3). An awaitable when async work remains."""
        self.counters["messages_in"] += 1
        try:
            room, event, dst, payload = codec.decode_client(data)
        except ProtocolError as exc:
            if exc.code == "invalid_name":
                bad_room, bad_event = exc.room, exc.event
                self._error(
                    conn, "invalid_name", str(exc),
                    bad_room if bad_room and _name_ok(bad_room, self.max_room_name) else ROOT,
                    bad_event if bad_event and _name_ok(bad_event, self.max_event_name) else "")
            else:
                self._error(conn, "malformed", str(exc))
            return None
        if not _name_ok(room, self.max_room_name):
            self._error(conn, "invalid_name",
                        f"room names are 1-{self.max_room_name} bytes", ROOT,
                        event if _name_ok(event, self.max_event_name) else "")
            return None
        if not _name_ok(event, self.max_event_name):
            self._error(conn, "invalid_name",
                        f"event names are 1-{self.max_event_name} bytes", room)
            return None
        if self.rate_limit is not None and self._rate_limited(conn):
            self._error(conn, "rate_limited", "too many messages", room, event)
            return None
        if event == "join":
            return self._client_join(conn, room)
        if event == "leave":
            return self._client_leave(conn, room)
        if event in RESERVED_EVENTS:
            self._error(conn, "reserved_event", f"{event!r} is reserved", room, event)
            return None
        if dst:
            target = self._conns.get(dst)
            if target is None:
                self._error(conn, "no_such_client", "no client with that id", room, event)
                return None
            self.counters["direct"] += 1
            target.send_frame(codec.encode_frame(room, event, dst, conn.id, payload))
            return None
        handler = self._handlers.get(event) or registered().get(event)
        if handler is not None:
            self.counters["handled"] += 1
            msg = Message(room, event, dst, conn.id, payload)
            try:
                result = handler(conn, msg)
            except Exception as exc:
                self._handler_failed(conn, exc, room, event)
                return None
            if inspect.isawaitable(result):
                return self._await_handler(conn, result, room, event)
            return None
        if room == ROOT and not self.allow_root_broadcast:
            self._error(conn, "forbidden", "broadcasting into root is not allowed", room, event)
            return None
        members = self._rooms.get(room)
        if members is None or conn.id not in members:
            self._error(conn, "not_member", "join the room before sending to it", room, event)
            return None
        self.counters["relayed"] += 1
        engine = self._engine
        engine.broadcast(members, codec.encode_frame(room, event, "", conn.id, payload), conn)
        if engine.turn_bytes >= self.turn_budget * engine.turn_receivers:
            self._over_budget(conn)
        if engine.sync and engine.over_limit(members, conn) is not None:
            # Sync mode: the relay is queued (never dropped); the sender waits by
            # not being read until the room's receivers have room again.
            return self._hold_sender(conn, members)
        return None

    def _over_budget(self, conn: Connection) -> None:
        # This loop turn has queued enough: the sender is read again after the flush,
        # so a flood cannot stretch one turn (and everyone's latency) without bound.
        if conn._budget_held:
            return
        conn._budget_held = True
        conn.hold_reading()
        if not self._budget_paused:
            assert self._loop is not None
            self._loop.call_soon(self._resume_budget)  # runs after the engine's flush
        self._budget_paused.append(conn)

    def _resume_budget(self) -> None:
        paused, self._budget_paused = self._budget_paused, []
        for conn in paused:
            conn._budget_held = False
            conn.release_reading()
            if conn._backlog is not None and not conn._async_busy:
                self._drain(conn)

    async def _hold_sender(self, conn: Connection, members: dict[str, Connection]) -> None:
        conn.hold_reading()
        try:
            while self._engine.over_limit(members, conn) is not None:
                await self._engine.wait_drain()
        finally:
            conn.release_reading()

    def _handler_failed(self, conn: Connection, exc: Exception, room: str, event: str) -> None:
        if isinstance(exc, RoomerError):
            message = str(exc) or type(exc).__name__
        else:
            log.error("handler for %r raised", event, exc_info=exc)
            message = "internal error"
        self._error(conn, "handler_error", message, room, event)

    async def _await_handler(self, conn: Connection, pending: Awaitable[Any], room: str,
                             event: str) -> None:
        try:
            await pending
        except Exception as exc:
            self._handler_failed(conn, exc, room, event)

    def _client_join(self, conn: Connection, room: str) -> Awaitable[None] | None:
        if room in conn._rooms:
            self._add_member(conn, room)
            return None
        limit = self.max_rooms_per_connection
        if limit is not None and room != ROOT and len(conn._rooms) - (ROOT in conn._rooms) >= limit:
            self._error(conn, "too_many_rooms", f"at most {limit} rooms per connection",
                        room, "join")
            return None
        return self._after_hooks(self._on_join, conn, room, "join", self._add_member)

    def _client_leave(self, conn: Connection, room: str) -> Awaitable[None] | None:
        if room not in conn._rooms:
            self._remove_member(conn, room, ack=True)
            return None
        return self._after_hooks(self._on_leave, conn, room, "leave", self._leave_with_ack)

    def _leave_with_ack(self, conn: Connection, room: str) -> None:
        self._remove_member(conn, room, ack=True)

    def _after_hooks(self, hooks: list[Hook], conn: Connection, room: str, event: str,
                     apply: Callable[[Connection, str], None]) -> Awaitable[None] | None:
        """Run a room's join/leave hooks, then ``apply(conn, room)`` unless one refused."""
        try:
            pending = self._run_hooks(hooks, conn, room)
        except Exception as exc:
            self._hook_refused(conn, exc, f"{event}_denied", room, event)
            return None
        if pending is None:
            apply(conn, room)
            return None
        return self._after_async_hooks(pending, conn, room, event, apply)

    async def _after_async_hooks(self, pending: Awaitable[None], conn: Connection, room: str,
                                 event: str, apply: Callable[[Connection, str], None]) -> None:
        try:
            await pending
        except Exception as exc:
            self._hook_refused(conn, exc, f"{event}_denied", room, event)
            return
        if conn._registered:
            apply(conn, room)

    def _hook_refused(self, conn: Connection, exc: Exception, code: str, room: str,
                      event: str) -> None:
        if isinstance(exc, Deny):
            self._error(conn, code, str(exc) or "denied", room, event)
        else:
            log.error("%s hook raised", event, exc_info=exc)
            self._error(conn, code, "internal error", room, event)
