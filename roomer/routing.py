"""Routing of what a client sends (DESIGN §3, in its check order) and the order and
pacing of a connection's messages.

Pacing, the same for every kind of inbound message:
- admission: every frame a client sends draws from its rate limit before it is copied
  or decoded; past the limit frames are dropped with one ``rate_limited`` error per
  window, and a client that keeps sending at twice its limit is closed with 1008;
- order: one message at a time, in arrival order; while async work of a message runs
  (a handler, a hook, a sync-mode wait) the next ones queue, and past ``BACKLOG_PAUSE``
  queued the socket is not read;
- turn budget: a connection is handled for at most ``turn_messages`` messages per loop
  turn, and no further once the turn has queued ``turn_budget`` bytes per receiver it
  touched; then it is read again after the turn's writes, so no client stretches a turn;
- errors: a connection that causes more than ``error_limit`` error replies in a window
  is closed with 1008.
"""

from __future__ import annotations

import asyncio
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
from .registry import CONNECTING, OPEN, ROOT

if TYPE_CHECKING:
    from .server import Connection, Server

__all__ = ["BACKLOG_PAUSE", "Router", "name_ok"]

log = logging.getLogger("roomer")

# What a join or leave does once its hooks agreed: an awaitable when it must wait.
Apply = Callable[["Connection", str], "Awaitable[None] | None"]

# Messages a connection may queue while it is busy or held; past this its reads are
# paused, so a client cannot grow server memory without bound.
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
        self._held: list[Connection] = []
        self._turn = 0
        self._tick_pending = False

    # admission -----------------------------------------------------------------------

    def admit(self, conn: Connection, data: Any) -> bool:
        """Draw one frame from the connection's rate limit; False: drop it. ``data`` is
        a callable giving the message bytes, used only to name the first refused one."""
        limit = self.config.rate_limit
        if limit is None:
            return True
        count, per = limit
        now = time.monotonic()
        conn._tokens = min(count, conn._tokens + (now - conn._tokens_at) * count / per)
        conn._tokens_at = now
        if conn._tokens >= 1.0:
            conn._tokens -= 1.0
            return True
        if now - conn._limited_since >= per:
            conn._limited_since = now
            conn._limited = 0
        conn._limited += 1
        if conn._limited == 1 and conn._state == OPEN:
            room, event = self._names_of(data)
            self.error(conn, "rate_limited", "too many messages", room, event)
        elif conn._limited >= count and conn._state == OPEN:
            self.server._abuse(conn, "rate limit exceeded")
        return False

    def _names_of(self, data: Any) -> tuple[str, str]:
        config = self.config
        try:
            room, event, _, _ = codec.decode_client(data())
        except (ProtocolError, TypeError):
            return ROOT, ""
        return (room if name_ok(room, config.max_room_name) else ROOT,
                event if name_ok(event, config.max_event_name) else "")

    # order and pacing ----------------------------------------------------------------

    def received(self, conn: Connection, data: bytes) -> None:
        """One whole message from ``conn``: handled now, or queued behind its others."""
        state = conn._state
        if state != OPEN and (state != CONNECTING or conn._backlog is None):
            return
        backlog = conn._backlog
        if backlog is not None:
            backlog.append(data)
            if len(backlog) >= BACKLOG_PAUSE and not conn._backlog_held:
                conn._backlog_held = True
                conn.hold_reading()
            return
        self._handle(conn, data)
        if conn._busy or conn._held:
            # The rest of this read waits, like the reads after it.
            conn._backlog = deque()

    def drain(self, conn: Connection) -> None:
        """Handle a connection's queued messages in order, until one starts async work
        (its end drains the rest) or the turn budget holds it (the next turn resumes)."""
        backlog = conn._backlog
        if backlog is None:
            return
        while backlog and conn._state == OPEN and not conn._busy and not conn._held:
            self._handle(conn, backlog.popleft())
        if backlog and conn._state == OPEN:
            return
        if not conn._busy and not conn._held:
            conn._backlog = None
            if conn._backlog_held:
                conn._backlog_held = False
                conn.release_reading()

    def _handle(self, conn: Connection, data: bytes) -> None:
        if conn._turn != self._turn:
            conn._turn = self._turn
            conn._turn_work = 0
        if not self._tick_pending:
            self._tick_pending = True
            self.server._call_soon(self._tick)
        pending = self.dispatch(conn, data)
        engine = self.server._engine
        if engine.sync:
            grown = engine.take_grown()
            if grown:
                # Sync mode never drops: whatever this message queued past a receiver's
                # limit (a relay, a direct message, a handler's sends, an ack) makes its
                # sender wait, unread, until those receivers catch up.
                pending = self._then_wait(pending, conn, grown)
        if pending is not None:
            conn._busy = True
            self.server._spawn(self._continue(conn, pending))
        conn._turn_work += 1
        if (conn._turn_work >= self.config.turn_messages
                or engine.turn_bytes >= self.config.turn_budget * engine.turn_receivers):
            self._hold(conn)

    def _tick(self) -> None:
        self._tick_pending = False
        self._turn += 1

    async def _continue(self, conn: Connection, pending: Awaitable[None]) -> None:
        try:
            await pending
            engine = self.server._engine
            if engine.sync:
                grown = engine.take_grown()
                if grown:
                    await self._wait_for(conn, grown)
        finally:
            conn._busy = False
        if not conn._held:
            self.drain(conn)

    async def _then_wait(self, pending: Awaitable[None] | None, conn: Connection,
                         grown: list[Any]) -> None:
        if pending is not None:
            await pending
        await self._wait_for(conn, grown)

    async def _wait_for(self, conn: Connection, grown: list[Any]) -> None:
        engine = self.server._engine
        limit = engine.outbox_limit
        conn.hold_reading()
        try:
            while any(peer.pending > limit and not peer.closing for peer in grown):
                await engine.wait_drain()
        finally:
            conn.release_reading()

    def _hold(self, conn: Connection) -> None:
        # This loop turn has done enough for this connection: it is read again after
        # the turn's writes, so a flood cannot stretch one turn (and everyone's latency).
        if conn._held:
            return
        conn._held = True
        conn.hold_reading()
        self.metrics.counters["turn_holds"] += 1
        if not self._held:
            self.server._call_soon(self._release)  # runs after the engine's flush
        self._held.append(conn)

    def _release(self) -> None:
        held, self._held = self._held, []
        for conn in held:
            conn._held = False
            conn.release_reading()
            if not conn._busy:
                self.drain(conn)

    # replies -------------------------------------------------------------------------

    def error(self, conn: Connection, code: str, message: str, room: str = ROOT,
              event: str = "") -> None:
        """An ``error`` reply (a control frame: never dropped to make room)."""
        self.metrics.error(code)
        body = json.dumps({"code": code, "message": message, "event": event})
        conn.send_control(codec.encode_frame(room, "error", "", "", body))
        limit = self.config.error_limit
        if limit is None:
            return
        count, per = limit
        now = time.monotonic()
        if now - conn._errors_since >= per:
            conn._errors_since = now
            conn._errors = 0
        conn._errors += 1
        if conn._errors > count and conn._state == OPEN:
            self.server._abuse(conn, "too many errors")

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
        if event == "join":
            return self._client_join(conn, room)
        if event == "leave":
            return self._client_leave(conn, room)
        if event in RESERVED_EVENTS:
            self.error(conn, "reserved_event", f"{event!r} is reserved", room, event)
            return None
        if dst:
            frame = codec.encode_frame(room, event, dst, conn.id, payload)
            target = self.registry.conns.get(dst)
            if target is not None:
                counters["direct"] += 1
                target.send_frame(frame)
            elif self.registry.cluster is not None:
                # Another node may hold it; if none does, the error comes when it says so.
                self.registry.cluster.send_direct(dst, frame).add_done_callback(
                    lambda found: self._direct_done(found, conn, room, event))
            else:
                self.error(conn, "no_such_client", "no client with that id", room, event)
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
        frame = codec.encode_frame(room, event, "", conn.id, payload)
        self.server._engine.broadcast(members, frame, conn)
        self.registry.publish_room(room, frame, conn.id)
        return None

    def _direct_done(self, found: asyncio.Future[bool], conn: Connection, room: str,
                     event: str) -> None:
        if found.cancelled() or found.exception() is not None:
            return
        if found.result():
            self.metrics.counters["direct"] += 1
        elif conn._state == OPEN:
            self.error(conn, "no_such_client", "no client with that id", room, event)

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
            return self.registry.add_member(conn, room)
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
        return None

    def _after_hooks(self, hooks: list[Hook], conn: Connection, room: str, event: str,
                     apply: Apply) -> Awaitable[None] | None:
        """Run a room's join/leave hooks, then ``apply(conn, room)`` unless one refused."""
        try:
            pending = Hooks.run(hooks, conn, room)
        except Exception as exc:
            self._hook_refused(conn, exc, f"{event}_denied", room, event)
            return None
        if pending is None:
            return apply(conn, room)
        return self._after_async_hooks(pending, conn, room, event, apply)

    async def _after_async_hooks(self, pending: Awaitable[None], conn: Connection, room: str,
                                 event: str, apply: Apply) -> None:
        try:
            await pending
        except Exception as exc:
            self._hook_refused(conn, exc, f"{event}_denied", room, event)
            return
        if conn._state == OPEN:
            applied = apply(conn, room)
            if applied is not None:
                await applied

    def _hook_refused(self, conn: Connection, exc: Exception, code: str, room: str,
                      event: str) -> None:
        if isinstance(exc, Deny):
            self.error(conn, code, str(exc) or "denied", room, event)
        else:
            log.error("%s hook raised", event, exc_info=exc)
            self.error(conn, code, "internal error", room, event)
