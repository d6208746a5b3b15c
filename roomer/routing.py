"""Routing of what a client sends (DESIGN §3, in its check order) and the order and
pacing of a connection's messages: one at a time, in order, within the turn budget."""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import codec
from .errors import Deny, ProtocolError, RoomerError
from .handlers import RESERVED_EVENTS, registered
from .hooks import Hook, Hooks
from .message import Message
from .registry import ROOT

if TYPE_CHECKING:
    from .server import Connection, Server

__all__ = ["BACKLOG_PAUSE", "Router", "name_ok"]

log = logging.getLogger("roomer")

# Messages a connection may queue while an async handler or hook of its runs; past
# this its reads are paused, so a client cannot grow server memory without bound.
BACKLOG_PAUSE = 64


def name_ok(name: str, limit: int) -> bool:
    size = len(name) if name.isascii() else len(name.encode())
    return 0 < size <= limit


class Router:
    """Takes each message a connection received and does what DESIGN §3 says."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.config = server.config
        self.registry = server.registry
        self.metrics = server.metrics
        self.hooks = server.hooks
        self._budget_paused: list[Connection] = []

    # order and pacing ----------------------------------------------------------------

    def received(self, conn: Connection, data: bytes) -> None:
        if not conn._registered and conn._backlog is None:
            return
        backlog = conn._backlog
        if backlog is not None:
            backlog.append(data)
            if len(backlog) >= BACKLOG_PAUSE and not conn._backlog_held:
                conn._backlog_held = True
                conn.hold_reading()
            return
        pending = self.dispatch(conn, data)
        if pending is not None:
            conn._backlog = deque()
            self.server._spawn(self._continue(conn, pending))
        elif conn._budget_held:
            # The rest of this read waits for the next turn, like the reads after it.
            conn._backlog = deque()

    async def _continue(self, conn: Connection, pending: Awaitable[None]) -> None:
        conn._async_busy = True
        try:
            await pending
        finally:
            conn._async_busy = False
        self.drain(conn)

    def drain(self, conn: Connection) -> None:
        """Handle a connection's queued messages in order, until one starts async work
        (which drains the rest when it ends) or the turn budget holds the connection
        (the next turn resumes)."""
        backlog = conn._backlog
        while backlog and conn._registered:
            if conn._budget_held:
                return
            pending = self.dispatch(conn, backlog.popleft())
            if pending is not None:
                self.server._spawn(self._continue(conn, pending))
                return
        conn._backlog = None
        if conn._backlog_held:
            conn._backlog_held = False
            conn.release_reading()

    def _over_budget(self, conn: Connection) -> None:
        # This loop turn has queued enough: the sender is read again after the flush,
        # so a flood cannot stretch one turn (and everyone's latency) without bound.
        if conn._budget_held:
            return
        conn._budget_held = True
        conn.hold_reading()
        if not self._budget_paused:
            self.server._call_soon(self._resume_budget)  # runs after the engine's flush
        self._budget_paused.append(conn)

    def _resume_budget(self) -> None:
        paused, self._budget_paused = self._budget_paused, []
        for conn in paused:
            conn._budget_held = False
            conn.release_reading()
            if conn._backlog is not None and not conn._async_busy:
                self.drain(conn)

    async def _hold_sender(self, conn: Connection, members: dict[str, Connection]) -> None:
        engine = self.server._engine
        conn.hold_reading()
        try:
            while engine.over_limit(members, conn) is not None:
                await engine.wait_drain()
        finally:
            conn.release_reading()

    # replies -------------------------------------------------------------------------

    def error(self, conn: Connection, code: str, message: str, room: str = ROOT,
              event: str = "") -> None:
        self.metrics.error(code)
        body = json.dumps({"code": code, "message": message, "event": event})
        conn.send_frame(codec.encode_frame(room, "error", "", "", body))

    def _rate_limited(self, conn: Connection) -> bool:
        assert self.config.rate_limit is not None
        count, per = self.config.rate_limit
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

    # DESIGN §3 -----------------------------------------------------------------------

    def dispatch(self, conn: Connection, data: bytes) -> Awaitable[None] | None:
        """Route one client message (DESIGN §3). An awaitable when async work remains."""
        config = self.config
        counters = self.metrics.counters
        counters["messages_in"] += 1
        try:
            room, event, dst, payload = codec.decode_client(data)
        except ProtocolError as exc:
            if exc.code == "invalid_name":
                bad_room, bad_event = exc.room, exc.event
                self.error(
                    conn, "invalid_name", str(exc),
                    bad_room if bad_room and name_ok(bad_room, config.max_room_name) else ROOT,
                    bad_event if bad_event and name_ok(bad_event, config.max_event_name)
                    else "")
            else:
                self.error(conn, "malformed", str(exc))
            return None
        if not name_ok(room, config.max_room_name):
            self.error(conn, "invalid_name",
                       f"room names are 1-{config.max_room_name} bytes", ROOT,
                       event if name_ok(event, config.max_event_name) else "")
            return None
        if not name_ok(event, config.max_event_name):
            self.error(conn, "invalid_name",
                       f"event names are 1-{config.max_event_name} bytes", room)
            return None
        if config.rate_limit is not None and self._rate_limited(conn):
            self.error(conn, "rate_limited", "too many messages", room, event)
            return None
        if event == "join":
            return self._client_join(conn, room)
        if event == "leave":
            return self._client_leave(conn, room)
        if event in RESERVED_EVENTS:
            self.error(conn, "reserved_event", f"{event!r} is reserved", room, event)
            return None
        if dst:
            target = self.registry.conns.get(dst)
            if target is None:
                self.error(conn, "no_such_client", "no client with that id", room, event)
                return None
            counters["direct"] += 1
            target.send_frame(codec.encode_frame(room, event, dst, conn.id, payload))
            return None
        handler = self.server._handlers.get(event) or registered().get(event)
        if handler is not None:
            counters["handled"] += 1
            msg = Message(room, event, dst, conn.id, payload)
            try:
                result = handler(conn, msg)
            except Exception as exc:
                self._handler_failed(conn, exc, room, event)
                return None
            if inspect.isawaitable(result):
                return self._await_handler(conn, result, room, event)
            return None
        if room == ROOT and not config.allow_root_broadcast:
            self.error(conn, "forbidden", "broadcasting into root is not allowed", room, event)
            return None
        members = self.registry.rooms.get(room)
        if members is None or conn.id not in members:
            self.error(conn, "not_member", "join the room before sending to it", room, event)
            return None
        counters["relayed"] += 1
        engine = self.server._engine
        engine.broadcast(members, codec.encode_frame(room, event, "", conn.id, payload), conn)
        if engine.turn_bytes >= config.turn_budget * engine.turn_receivers:
            self._over_budget(conn)
        if engine.sync and engine.over_limit(members, conn) is not None:
            # Sync mode: the relay is queued (never dropped); the sender waits by
            # not being read until the room's receivers have room again.
            return self._hold_sender(conn, members)
        return None

    def _handler_failed(self, conn: Connection, exc: Exception, room: str, event: str) -> None:
        if isinstance(exc, RoomerError):
            message = str(exc) or type(exc).__name__
        else:
            log.error("handler for %r raised", event, exc_info=exc)
            message = "internal error"
        self.error(conn, "handler_error", message, room, event)

    async def _await_handler(self, conn: Connection, pending: Awaitable[Any], room: str,
                             event: str) -> None:
        try:
            await pending
        except Exception as exc:
            self._handler_failed(conn, exc, room, event)

    # join and leave ------------------------------------------------------------------

    def _client_join(self, conn: Connection, room: str) -> Awaitable[None] | None:
        if room in conn._rooms:
            self.registry.add_member(conn, room)
            return None
        limit = self.config.max_rooms_per_connection
        if limit is not None and room != ROOT and len(conn._rooms) - (ROOT in conn._rooms) >= limit:
            self.error(conn, "too_many_rooms", f"at most {limit} rooms per connection",
                       room, "join")
            return None
        return self._after_hooks(self.hooks.join, conn, room, "join", self.registry.add_member)

    def _client_leave(self, conn: Connection, room: str) -> Awaitable[None] | None:
        if room not in conn._rooms:
            self.registry.remove_member(conn, room, ack=True)
            return None
        return self._after_hooks(self.hooks.leave, conn, room, "leave", self._leave_with_ack)

    def _leave_with_ack(self, conn: Connection, room: str) -> None:
        self.registry.remove_member(conn, room, ack=True)

    def _after_hooks(self, hooks: list[Hook], conn: Connection, room: str, event: str,
                     apply: Callable[[Connection, str], None]) -> Awaitable[None] | None:
        """Run a room's join/leave hooks, then ``apply(conn, room)`` unless one refused."""
        try:
            pending = Hooks.run(hooks, conn, room)
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
            self.error(conn, code, str(exc) or "denied", room, event)
        else:
            log.error("%s hook raised", event, exc_info=exc)
            self.error(conn, code, "internal error", room, event)
