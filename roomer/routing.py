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

from . import codec, frames
from .errors import ClientError, Deny, ProtocolError, RoomerError
from .handlers import RESERVED_EVENTS, Handler, registered
from .hooks import Hook, Hooks
from .message import Message
from .namespaces import Namespace, NamespaceConnection, reply_payload
from .registry import CONNECTING, OPEN, ROOT

if TYPE_CHECKING:
    from .server import Connection, Server

__all__ = ["BACKLOG_PAUSE", "Router", "name_ok"]

log = logging.getLogger("roomer")

# v2 only: the events that connect to and leave a namespace (docs/protocol.md §6).
NAMESPACE_EVENTS = frozenset({"connect", "disconnect"})

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
        self.metrics = server.metrics
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
            room, event, namespace, ask = self._names_of(conn, data)
            self.error(conn, "rate_limited", "too many messages", room, event, namespace,
                       ask)
        elif conn._limited >= count and conn._state == OPEN:
            self.server._abuse(conn, "rate limit exceeded")
        return False

    def _names_of(self, conn: Connection, data: Any) -> tuple[str, str, str, int]:
        """Room, event, namespace and ask id (0: not an ask) to name in the error."""
        config = self.config
        namespace, ask = "", 0
        try:
            if conn.v2:
                kind, ask, namespace, room, event, _, _ = codec.decode_client_v2(data())
                if kind != frames.ASK:
                    ask = 0
            else:
                room, event, _, _ = codec.decode_client(data())
        except (ProtocolError, TypeError):
            return ROOT, "", "", 0
        if namespace and not name_ok(namespace, config.max_event_name):
            namespace = ""  # too long to name in an answer
        return (room if name_ok(room, config.max_room_name) else ROOT,
                event if name_ok(event, config.max_event_name) else "", namespace, ask)

    # order and pacing ----------------------------------------------------------------

    def received(self, conn: Connection, data: bytes) -> None:
        """One whole message from ``conn``: handled now, or queued behind its others."""
        state = conn._state
        if state != OPEN and (state != CONNECTING or conn._backlog is None):
            return
        if conn._busy and conn.v2 and state == OPEN and data and (
                frames.REPLY <= data[0] <= frames.ERROR_REPLY):
            # An answer to the server's own ask is not one of the client's messages to
            # keep in order: the handler keeping the connection busy may be waiting on it.
            self.dispatch(conn, data)
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

    # replies -----------------------------------------------------------------------

    def error(self, conn: Connection, code: str, message: str, room: str = ROOT,
              event: str = "", namespace: str = "", ask: int = 0) -> None:
        """An ``error`` event, or for an ask its error reply (control frames: never
        dropped to make room)."""
        self.metrics.error(code)
        if ask:
            body = json.dumps({"code": code, "message": message})
            frame = frames.encode(True, namespace, room, event, "", "", body,
                                  frames.ERROR_REPLY, ask)
        else:
            body = json.dumps({"code": code, "message": message, "event": event})
            frame = frames.encode(conn.v2, namespace, room, "error", "", "", body)
        conn.send_control(frame)
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

    def _reply(self, conn: Connection, ns: Namespace, ask: int, room: str, event: str,
               value: object) -> None:
        try:
            body = reply_payload(value)
        except (TypeError, ValueError) as exc:  # not JSON-able: the handler's fault
            self._handler_failed(conn, exc, room, event, ns.name, ask)
            return
        conn.send_control(frames.encode(True, ns.name, room, event, "", "", body,
                                        frames.REPLY, ask))

    # DESIGN §3, docs/protocol.md §6-§7 ------------------------------------------------

    def dispatch(self, conn: Connection, data: bytes) -> Awaitable[None] | None:
        """Route one client message. An awaitable when async work remains."""
        self.metrics.counters["messages_in"] += 1
        if conn.v2:
            return self._dispatch_v2(conn, data)
        try:
            room, event, dst, payload = codec.decode_client(data)
        except ProtocolError as exc:
            self._undecodable(conn, exc, "", 0)
            return None
        return self._route(conn, self.server.default, 0, room, event, dst, payload)

    def _dispatch_v2(self, conn: Connection, data: bytes) -> Awaitable[None] | None:
        try:
            kind, ask, name, room, event, dst, payload = codec.decode_client_v2(data)
        except ProtocolError as exc:
            asked = exc.id if exc.kind == frames.ASK and exc.id else 0
            self._undecodable(conn, exc, exc.namespace or "", asked)
            return None
        if kind >= frames.REPLY:
            self._answered(conn, kind, ask, payload)
            return None
        ns = self.server._namespaces.get(name)
        if ns is None:
            self.error(conn, "no_such_namespace", "no such namespace",
                       room if name_ok(room, self.config.max_room_name) else ROOT,
                       event if name_ok(event, self.config.max_event_name) else "",
                       name if name_ok(name, self.config.max_event_name) else "", ask)
            return None
        connected = not name or ns.view(conn) is not None
        if event in NAMESPACE_EVENTS:  # its room and payload are not used
            room = room if name_ok(room, self.config.max_room_name) else ROOT
            if event == "connect":
                if not connected:
                    return self._connect(conn, ns, ask, room)
                if ask:  # connected already: nothing to do
                    self._reply(conn, ns, ask, room, event, None)
            elif not name:
                self.error(conn, "forbidden", "the default namespace cannot be left",
                           room, event, name, ask)
            elif not connected:
                self.error(conn, "not_connected", "not connected to the namespace", room,
                           event, name, ask)
            else:
                ns.leave_namespace(conn)
                if ask:
                    self._reply(conn, ns, ask, room, event, None)
            return None
        if not connected:
            self.error(conn, "not_connected", "connect to the namespace first", room, event,
                       name, ask)
            return None
        return self._route(conn, ns, ask, room, event, dst, payload)

    def _undecodable(self, conn: Connection, exc: ProtocolError, namespace: str,
                     ask: int) -> None:
        config = self.config
        if exc.code == "invalid_name":
            bad_room, bad_event = exc.room, exc.event
            self.error(
                conn, "invalid_name", str(exc),
                bad_room if bad_room and name_ok(bad_room, config.max_room_name) else ROOT,
                bad_event if bad_event and name_ok(bad_event, config.max_event_name) else "",
                namespace if name_ok(namespace, config.max_event_name) else "", ask)
        else:
            self.error(conn, "malformed", str(exc), ROOT, "", "", ask)

    def _route(self, conn: Connection, ns: Namespace, ask: int, room: str, event: str,
               dst: str, payload: bytes) -> Awaitable[None] | None:
        """DESIGN §3's checks and routing, in namespace ``ns``; ``ask`` non-zero for an
        ask (its refusals are error replies, and something always answers it)."""
        config = self.config
        name = ns.name
        if not name_ok(room, config.max_room_name):
            self.error(conn, "invalid_name", f"room names are 1-{config.max_room_name} bytes",
                       ROOT, event if name_ok(event, config.max_event_name) else "", name, ask)
            return None
        if not name_ok(event, config.max_event_name):
            self.error(conn, "invalid_name",
                       f"event names are 1-{config.max_event_name} bytes", room, "", name, ask)
            return None
        if event == "join":
            return self._client_join(conn, ns, room, ask)
        if event == "leave":
            return self._client_leave(conn, ns, room, ask)
        if event in RESERVED_EVENTS:
            self.error(conn, "reserved_event", f"{event!r} is reserved", room, event, name,
                       ask)
            return None
        if dst:
            if ask:
                self.error(conn, "forbidden", "asks are answered by the server", room, event,
                           name, ask)
                return None
            self._direct(conn, ns, room, event, dst, payload)
            return None
        handler = ns.handlers.get(event)
        if handler is None and not name:
            handler = registered().get(event)
        if handler is None and ns.hooks.event:
            handler = ns.hooks.event[0]
        if handler is not None:
            return self._call(conn, ns, handler, ask, room, event, dst, payload)
        if ask:
            self.error(conn, "no_handler", f"nothing answers {event!r}", room, event, name, ask)
            return None
        if room == ROOT and not config.allow_root_broadcast:
            self.error(conn, "forbidden", "broadcasting into root is not allowed", room, event,
                       name)
            return None
        registry = ns.registry
        members = registry.rooms.get(room)
        if members is None or conn.id not in members:
            self.error(conn, "not_member", "join the room before sending to it", room, event,
                       name)
            return None
        self.metrics.counters["relayed"] += 1
        frame = codec.encode_frame(room, event, "", conn.id, payload)
        registry._fan(room, members, frame, conn)
        registry.publish_room(room, frame, conn.id)
        return None

    def _direct(self, conn: Connection, ns: Namespace, room: str, event: str, dst: str,
                payload: bytes) -> None:
        sent = ns.registry.direct(dst, codec.encode_frame(room, event, dst, conn.id, payload))
        if sent is None:
            self.error(conn, "no_such_client", "no client with that id", room, event, ns.name)
        elif isinstance(sent, bool):
            self.metrics.counters["direct"] += 1
        else:
            # Another node may hold it; if none does, the error comes when it says so.
            sent.add_done_callback(
                lambda found: self._direct_done(found, conn, ns.name, room, event))

    def _direct_done(self, found: asyncio.Future[bool], conn: Connection, namespace: str,
                     room: str, event: str) -> None:
        if found.cancelled() or found.exception() is not None:
            return
        if found.result():
            self.metrics.counters["direct"] += 1
        elif conn._state == OPEN:
            self.error(conn, "no_such_client", "no client with that id", room, event,
                       namespace)

    def _answered(self, conn: Connection, kind: int, ask: int, payload: bytes) -> None:
        """A client's reply or error reply to an ask of the server."""
        asks = conn._asks
        waiter = asks.get(ask) if asks else None
        if waiter is None or waiter.done():
            self.metrics.counters["unknown_replies"] += 1
            return
        # Answering the server's own asks draws nothing from the client's rate limit.
        limit = self.config.rate_limit
        if limit is not None:
            conn._tokens = min(limit[0], conn._tokens + 1.0)
        if kind == frames.REPLY:
            waiter.set_result(payload)
            return
        waiter.set_exception(ClientError.from_reply(payload))

    # handlers ------------------------------------------------------------------------

    def _call(self, conn: Connection, ns: Namespace, handler: Handler, ask: int, room: str,
              event: str, dst: str, payload: bytes) -> Awaitable[None] | None:
        self.metrics.counters["handled"] += 1
        if ask:
            self.metrics.counters["asks_in"] += 1
        msg = Message(room, event, dst, conn.id, payload)
        try:
            result = handler(ns.view(conn), msg)
        except Exception as exc:
            self._handler_failed(conn, exc, room, event, ns.name, ask)
            return None
        if inspect.isawaitable(result):
            return self._await_handler(conn, result, room, event, ns, ask)
        if ask:
            self._reply(conn, ns, ask, room, event, result)
        return None

    def _handler_failed(self, conn: Connection, exc: Exception, room: str, event: str,
                        namespace: str = "", ask: int = 0) -> None:
        code = "handler_error"
        if isinstance(exc, RoomerError):
            message = str(exc) or type(exc).__name__
            if ask:  # an error reply carries the error's own code
                code = exc.code
        else:
            log.error("handler for %r raised", event, exc_info=exc)
            message = "internal error"
        self.error(conn, code, message, room, event, namespace, ask)

    async def _await_handler(self, conn: Connection, pending: Awaitable[Any], room: str,
                             event: str, ns: Namespace, ask: int) -> None:
        try:
            result = await pending
        except Exception as exc:
            self._handler_failed(conn, exc, room, event, ns.name, ask)
            return
        if ask and conn._state == OPEN:
            self._reply(conn, ns, ask, room, event, result)

    # join, leave, connect ------------------------------------------------------------

    def _client_join(self, conn: Connection, ns: Namespace, room: str,
                     ask: int) -> Awaitable[None] | None:
        registry = ns.registry
        rooms = registry.rooms_of(conn) or {}
        if room in rooms:
            return registry.add_member(conn, room, reply=ask)
        limit = self.config.max_rooms_per_connection
        if limit is not None and room != ROOT and len(rooms) - (ROOT in rooms) >= limit:
            self.error(conn, "too_many_rooms", f"at most {limit} rooms per connection",
                       room, "join", ns.name, ask)
            return None
        return self._after_hooks(
            ns.hooks.join, (ns.view(conn), room), conn, ns, room, "join", "join_denied", ask,
            lambda: registry.add_member(conn, room, reply=ask))

    def _client_leave(self, conn: Connection, ns: Namespace, room: str,
                      ask: int) -> Awaitable[None] | None:
        registry = ns.registry
        if room not in (registry.rooms_of(conn) or {}):
            registry.remove_member(conn, room, ack=True, reply=ask)
            return None
        return self._after_hooks(
            ns.hooks.leave, (ns.view(conn), room), conn, ns, room, "leave", "leave_denied",
            ask, lambda: registry.remove_member(conn, room, ack=True, reply=ask))

    def _connect(self, conn: Connection, ns: Namespace, ask: int,
                 room: str) -> Awaitable[None] | None:
        view = NamespaceConnection(conn, ns)

        def apply() -> Awaitable[None] | None:
            if conn._spaces is None:
                conn._spaces = {}
            conn._spaces[ns.name] = view
            pending = ns.registry.add_member(conn, ROOT, ack=False, announce=False)
            if pending is not None:
                return self._connected_later(conn, ns, ask, room, pending)
            self._connected(conn, ns, ask, room)
            return None

        return self._after_hooks(ns.hooks.connect, (view,), conn, ns, room, "connect",
                                 "namespace_denied", ask, apply)

    async def _connected_later(self, conn: Connection, ns: Namespace, ask: int, room: str,
                               pending: Awaitable[None]) -> None:
        await pending
        if conn._state == OPEN:
            self._connected(conn, ns, ask, room)

    def _connected(self, conn: Connection, ns: Namespace, ask: int, room: str) -> None:
        if ask:
            self._reply(conn, ns, ask, room, "connect", None)
        self.server._after(ns.hooks.connected, ns.view(conn), what="on_connected")

    def _after_hooks(self, hooks: list[Hook], args: tuple[Any, ...], conn: Connection,
                     ns: Namespace, room: str, event: str, code: str, ask: int,
                     apply: Callable[[], Awaitable[None] | None]) -> Awaitable[None] | None:
        """Run hooks that may refuse (``code``), then ``apply()`` unless one did."""
        try:
            pending = Hooks.run(hooks, *args)
        except Exception as exc:
            self._hook_refused(conn, exc, code, room, event, ns.name, ask)
            return None
        if pending is None:
            return apply()
        return self._after_async_hooks(pending, conn, ns, room, event, code, ask, apply)

    async def _after_async_hooks(self, pending: Awaitable[None], conn: Connection,
                                 ns: Namespace, room: str, event: str, code: str, ask: int,
                                 apply: Callable[[], Awaitable[None] | None]) -> None:
        try:
            await pending
        except Exception as exc:
            self._hook_refused(conn, exc, code, room, event, ns.name, ask)
            return
        if conn._state == OPEN:
            applied = apply()
            if applied is not None:
                await applied

    def _hook_refused(self, conn: Connection, exc: Exception, code: str, room: str,
                      event: str, namespace: str, ask: int) -> None:
        if isinstance(exc, Deny):
            self.error(conn, code, str(exc) or "denied", room, event, namespace, ask)
        else:
            log.error("%s hook raised", event, exc_info=exc)
            self.error(conn, code, "internal error", room, event, namespace, ask)
