"""What each message a client sends does, in the check order of docs/protocol.md §9, and
the order and pacing of a connection's messages.

The `Router` owns every connection's `Inbound` and is the
only one to drive it. Pacing, the same for every kind of inbound work
(docs/design.md, "Bounds"):

- admission: every frame a client sends draws from its rate limits (frames and bytes)
  before it is copied or decoded; past them frames are dropped with one ``rate_limited``
  error per window, and a client that keeps sending at twice its frame limit is closed
  with 1008. A pause of the
  server itself (a blocked loop, a stopped process) is not charged to the clients: the
  frames that waited in the kernel meanwhile are admitted as what they were, a backlog;
- order: one message at a time, in arrival order; while async work of a message runs (a
  handler, a hook, a sync-mode wait) the next ones queue, and past ``BACKLOG_PAUSE``
  queued the socket is not read — unless the server waits for this client's answer to an
  ask (the answer must not wait unread behind the handler that asked), or reading has been
  paused for ping_interval + ping_timeout (a dead peer must be noticed); then it is read
  on up to ``BACKLOG_HARD``, where an ask that still waits fails rather than deadlock;
- turn budget: a connection is handled for at most ``turn_messages`` messages per loop
  turn, and no further once the turn has queued ``turn_budget`` bytes per receiver it
  touched; then it is read again after the turn's writes, so no client stretches a turn;
- errors: a connection that causes more than ``error_limit`` error replies in a window is
  closed with 1008.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import codec, fanout, frames
from .connection import NamespaceConnection
from .errors import ClientError, Deny, ProtocolError, RoomerError
from .games import GAME_EVENTS
from .handlers import RESERVED_EVENTS, registered
from .hooks import Hook, Hooks
from .inbound import Admission, Inbound
from .message import Message
from .registry import ROOT

if TYPE_CHECKING:
    import asyncio

    from .connection import Connection
    from .core import Core
    from .namespaces import Namespace

__all__ = ["STALL", "Router", "name_ok"]

log = logging.getLogger("roomer")

# v2 only: the events that connect to and leave a namespace (docs/protocol.md §6).
NAMESPACE_EVENTS = frozenset({"connect", "disconnect"})
JOIN_LEAVE = frozenset({"join", "leave"})
# Events the relay path leaves to the router whatever handlers there are.
ROUTED_EVENTS = RESERVED_EVENTS | GAME_EVENTS | NAMESPACE_EVENTS | JOIN_LEAVE

# The router's beat: a loop that runs less often than every STALL seconds is stalled (a
# blocking handler, a GC pause, a stopped process), and what clients sent meanwhile
# waited in the kernel.
BEAT = 0.05
STALL = 0.25

# WebSocket opcodes (RFC 6455 §5.2), as picows numbers its frames' msg_type.
CONTINUATION, TEXT, BINARY, PING, PONG = 0, 1, 2, 9, 10


def name_ok(name: str, limit: int) -> bool:
    size = len(name) if name.isascii() else len(name.encode())
    return 0 < size <= limit


def _pong(payload: bytes) -> bytes:
    # An unmasked final PONG frame (RFC 6455 §5.5.3); control payloads are <= 125 bytes.
    return bytes((0x8A, len(payload))) + payload


class Router:
    """Takes each frame and message a connection received and does what
    docs/protocol.md §9 says, paced as the module docstring says."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self.config = core.config
        self.metrics = core.metrics
        config = self.config
        #: The path of a plain relay, in compiled code (roomer.fanout.Relay); it keeps
        #: the state it shares with the router: the clock, the beat, the loop turn.
        self.relay = fanout.Relay(
            self, rate=config.rate_limit, byte_rate=config.byte_limit,
            turn_messages=config.turn_messages, turn_budget=config.turn_budget,
            allow_root=config.allow_root_broadcast, root=ROOT,
            max_room=config.max_room_name, max_event=config.max_event_name,
            slow=ROUTED_EVENTS, stall_after=STALL, poll_interval=config.poll_interval)
        self.relay.beat_at = time.monotonic()
        self._held: list[Connection] = []
        #: When the last stall of the server ended (clock time; 0: none yet): the server's
        #: own rounds (pings, write timeouts) do not count time before it against clients.
        self.stall_end = 0.0

    @property
    def clock(self) -> Callable[[], float]:
        """The clock admission reads (monotonic seconds); tests set their own."""
        clock: Callable[[], float] = self.relay.clock
        return clock

    @clock.setter
    def clock(self, value: Callable[[], float]) -> None:
        self.relay.clock = value

    def inbound(self) -> Inbound:
        """A new connection's inbound state."""
        return Inbound(self.config.rate_limit, self.clock(), self.config.byte_limit)

    def start(self) -> None:
        """The server starts: its beat starts now, and plain relays of the default
        namespace take the relay path."""
        core = self._core
        ns = core.default
        self.relay.beat_at = self.clock()
        self.relay.bind(core.engine, core.call_soon, ns.registry, ns.handlers, registered(),
                        ns.hooks.event, core.games, self.metrics.counters)

    # the loop's pulse ----------------------------------------------------------------

    def beat(self, _now: float) -> None:
        """Run every BEAT seconds by the server: how the router tells a stall."""
        self._stalled(self.clock())

    def _stalled(self, now: float) -> float:
        """How long the server was stalled lately (0: it was not)."""
        relay = self.relay
        late = now - relay.beat_at
        relay.beat_at = now
        if late > STALL:
            # What arrived meanwhile is read in the turns to come: for as long again
            # (and one rate-limit window more), admission allows for it.
            rate = self.config.rate_limit or self.config.byte_limit
            per = rate[1] if rate else 1.0
            relay.stall = late
            relay.stall_until = now + late + per
            self.stall_end = now
            self.metrics.counters["stalls"] += 1
        if now < relay.stall_until:
            stall: float = relay.stall
            return stall
        return 0.0

    # frames from the socket ------------------------------------------------------------

    def frame(self, conn: Connection, frame: Any) -> None:
        """A data, ping or pong frame of ``conn``'s (a picows WSFrame, or anything with its
        ``msg_type``, ``fin`` and ``get_payload_as_bytes``/``_as_memoryview``)."""
        inbound = conn.inbound
        inbound.heard()
        config = self.config
        if config.rate_limit is not None or config.byte_limit is not None:
            verdict = self._admit(conn, frame.payload_size, config.byte_limit)
            if verdict is not Admission.TAKE:
                self._refused(conn, frame, verdict)
                return
        kind = frame.msg_type
        if kind in (BINARY, TEXT):
            message = inbound.start(frame.fin, frame.get_payload_as_bytes() if frame.fin
                                    else frame.get_payload_as_memoryview())
        elif kind == CONTINUATION:
            message = inbound.more(frame.fin, frame.get_payload_as_memoryview(),
                                   self.config.max_message_size)
        else:
            if kind == PING:
                # Answered through the outbox, so a ping flood is bounded like any reply.
                conn.send_control(_pong(frame.get_payload_as_bytes()))
            # Control frames use up a turn like messages do, rate limit or not.
            self._worked(conn)
            return
        if message is None:
            return
        if isinstance(message, str):
            if message:
                conn.stop(1002, message, flush=True, graceful=True)
            else:
                conn.stop(1009, "message too big", flush=True, graceful=True)
            return
        self.received(conn, message)

    def _admit(self, conn: Connection, size: int,
               byte_rate: tuple[float, float] | None) -> Admission:
        """Draw one message of ``size`` bytes from ``conn``'s rate limits (and from
        ``byte_rate``, None for none)."""
        now = self.clock()
        relay = self.relay
        stall = self._stalled(now) if now - relay.beat_at > STALL else (
            relay.stall if now < relay.stall_until else 0.0)
        return conn.inbound.admit(now, self.config.rate_limit, stall, size, byte_rate)

    def _refused(self, conn: Connection, frame: Any, verdict: int) -> None:
        """A frame the rate limits refused (``verdict``: an Admission value)."""
        kind = frame.msg_type
        if kind != PING and kind != PONG:
            conn.inbound.dropped(frame.fin)
        self._refusal(conn, frame.get_payload_as_bytes(), verdict)

    def _refusal(self, conn: Connection, data: bytes, verdict: int) -> None:
        """Answer a message (``data``) the rate limits refused."""
        if not conn.inbound.open:
            return
        if verdict == Admission.REFUSE:
            room, event, namespace, ask = self._names_of(conn, data)
            self.error(conn, "rate_limited", "too many messages or bytes", room, event,
                       namespace, ask)
        elif verdict == Admission.ABUSE:
            self.abuse(conn, "rate limit exceeded")

    def _names_of(self, conn: Connection, data: bytes) -> tuple[str, str, str, int]:
        """Room, event, namespace and ask id (0: not an ask) to name in an error."""
        config = self.config
        namespace, ask = "", 0
        try:
            if conn.v2:
                kind, ask, namespace, room, event, _, _ = codec.decode_client_v2(data)
                if kind != frames.ASK:
                    ask = 0
            else:
                room, event, _, _ = codec.decode_client(data)
        except (ProtocolError, TypeError):
            return ROOT, "", "", 0
        if namespace and not name_ok(namespace, config.max_event_name):
            namespace = ""  # too long to name in an answer
        return (room if name_ok(room, config.max_room_name) else ROOT,
                event if name_ok(event, config.max_event_name) else "", namespace, ask)

    def abuse(self, conn: Connection, reason: str) -> None:
        """Close a client that passed its rate or error limit (1008)."""
        self.metrics.counters["abuse_closes"] += 1
        log.info("closing %s: %s", conn.id, reason)
        # Its replies so far go out with the close; nothing waits for it to read them.
        conn.stop(1008, reason, flush=True, graceful=False)

    # order and pacing ----------------------------------------------------------------

    def received(self, conn: Connection, data: bytes) -> None:
        """One whole message from ``conn`` (or a batch of them): handled now, or queued
        behind its others."""
        if conn.batch and data and data[0] == frames.BATCH:
            self._batch(conn, data)
        else:
            self._message(conn, data)

    def _batch(self, conn: Connection, data: bytes) -> None:
        """A batch (docs/protocol.md §13): its messages one by one, as if each had come in
        a frame of its own. The frame drew one message and its bytes from the rate
        limits; each further message draws one more message."""
        self.metrics.counters["batches_in"] += 1
        try:
            bodies = codec.split_batch(data)
        except ProtocolError as exc:
            self.metrics.counters["messages_in"] += 1
            self.error(conn, "malformed", str(exc))
            return
        self._message(conn, bodies[0])
        self.entries(conn, bodies[1:])

    def entries(self, conn: Connection, bodies: list[bytes]) -> None:
        """Messages of a batch after its first (which drew the batch's bytes), in order:
        each draws one message from the rate limit. The relay path hands over those
        after the ones it took."""
        limited = self.config.rate_limit is not None
        take = self.relay.take_admitted
        for body in bodies:
            if not conn.inbound.accepting():
                return
            if limited:
                verdict = self._admit(conn, 0, None)
                if verdict is not Admission.TAKE:
                    self._refusal(conn, body, verdict)
                    continue
            if conn.inbound.waiting() or not take(conn, body):
                self._message(conn, body)

    def _message(self, conn: Connection, data: bytes) -> None:
        inbound = conn.inbound
        if not inbound.accepting():
            return
        if inbound.busy and conn.v2 and inbound.open and data and (
                frames.REPLY <= data[0] <= frames.ERROR_REPLY):
            # An answer to the server's own ask is not one of the client's messages to
            # keep in order: the handler keeping the connection busy may be waiting on it.
            self.dispatch(conn, data)
            return
        if inbound.waiting():
            inbound.queue(data)
            self.pace(conn)
            return
        self._handle(conn, data)
        inbound.handled()

    def pace(self, conn: Connection) -> None:
        """Pause or resume reading ``conn`` by its backlog: call it when the backlog grew,
        and when an ask of it starts or ends."""
        inbound = conn.inbound
        asking = len(conn.asks) > 0
        if asking and inbound.overfull:
            # The client keeps sending while it is asked: its answer would wait behind
            # the rest, unread, for ever. The asks fail; the handler goes on.
            conn.asks.fail("the client's messages fill its backlog while it is asked")
            asking = False
        step = inbound.pace(self.clock(), asking)
        if step > 0:
            self._hold_reading(conn)
        elif step < 0:
            self._release_reading(conn)

    def lift(self, conn: Connection, after: float) -> None:
        """The ping round: a backlog's pause of reading older than ``after`` seconds is
        lifted (see the module docstring)."""
        if conn.inbound.lift(self.clock(), after) < 0:
            self._release_reading(conn)

    def drain(self, conn: Connection) -> None:
        """Handle a connection's queued messages in order, until one starts async work
        (its end drains the rest) or the turn budget holds it (the next turn resumes)."""
        inbound = conn.inbound
        take = self.relay.take_admitted
        while (data := inbound.next()) is not None:
            if not take(conn, data):  # a plain relay as fast as one that did not wait
                self._handle(conn, data)
        if inbound.settle():
            self._release_reading(conn)

    def _handle(self, conn: Connection, data: bytes) -> None:
        inbound = conn.inbound
        pending = self.dispatch(conn, data)
        engine = self._core.engine
        if engine.sync:
            grown = engine.take_grown()
            if grown:
                # Sync mode never drops: whatever this message queued past a receiver's
                # limit (a relay, a direct message, a handler's sends, an ack) makes its
                # sender wait, unread, until those receivers catch up.
                pending = self._then_wait(pending, conn, grown)
        if pending is not None:
            inbound.busy = True
            self._core.spawn(self._continue(conn, pending))
        self._worked(conn)

    def _worked(self, conn: Connection) -> None:
        """``conn`` caused one unit of work this turn: held once it used its share."""
        self.relay.worked(conn)

    async def _continue(self, conn: Connection, pending: Awaitable[None]) -> None:
        inbound = conn.inbound
        try:
            await pending
            engine = self._core.engine
            if engine.sync:
                grown = engine.take_grown()
                if grown:
                    await self._wait_for(conn, grown)
        finally:
            inbound.busy = False
        if not inbound.held:
            self.drain(conn)

    async def _then_wait(self, pending: Awaitable[None] | None, conn: Connection,
                         grown: list[Any]) -> None:
        if pending is not None:
            await pending
        await self._wait_for(conn, grown)

    async def _wait_for(self, conn: Connection, grown: list[Any]) -> None:
        engine = self._core.engine
        limit = engine.outbox_limit
        self._hold_reading(conn)
        try:
            while any(peer.pending > limit and not peer.closing for peer in grown):
                await engine.wait_drain()
        finally:
            self._release_reading(conn)

    def _hold(self, conn: Connection) -> None:
        # This loop turn has done enough for this connection: it is read again after
        # the turn's writes, so a flood cannot stretch one turn (and everyone's latency).
        inbound = conn.inbound
        if inbound.held:
            return
        inbound.held = True
        self._hold_reading(conn)
        self.metrics.counters["turn_holds"] += 1
        if not self._held:
            self._core.call_soon(self._release)  # runs after the engine's flush
        self._held.append(conn)

    def _release(self) -> None:
        held, self._held = self._held, []
        for conn in held:
            conn.inbound.held = False
            self._release_reading(conn)
            if not conn.inbound.busy:
                self.drain(conn)

    def _hold_reading(self, conn: Connection) -> None:
        if conn.inbound.hold_reading():
            conn.pause_reading()

    def _release_reading(self, conn: Connection) -> None:
        if conn.inbound.release_reading():
            conn.resume_reading()

    # replies -----------------------------------------------------------------------

    def error(self, conn: Connection, code: str, message: str, room: str = ROOT,
              event: str = "", namespace: str = "", ask: int = 0) -> None:
        """An ``error`` event, or for an ask its error reply (control frames: never
        dropped to make room); counted against the connection's error limit."""
        self.metrics.error(code)
        if ask:
            body = json.dumps({"code": code, "message": message})
            frame = frames.encode(True, namespace, room, event, "", "", body,
                                  frames.ERROR_REPLY, ask)
        else:
            body = json.dumps({"code": code, "message": message, "event": event})
            frame = frames.encode(conn.v2, namespace, room, "error", "", "", body)
        conn.send_control(frame)
        if conn.inbound.count_error(self.clock(), self.config.error_limit) and (
                conn.inbound.open):
            self.abuse(conn, "too many errors")

    def _reply(self, conn: Connection, ns: Namespace[Any], ask: int, room: str, event: str,
               value: object) -> None:
        try:
            body = frames.reply_payload(value)
        except (TypeError, ValueError) as exc:  # not JSON-able: the handler's fault
            self._handler_failed(conn, exc, room, event, ns.name, ask)
            return
        conn.send_control(frames.encode(True, ns.name, room, event, "", "", body,
                                        frames.REPLY, ask))

    # docs/protocol.md §9, §6-§7 --------------------------------------------------------

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
        return self._route(conn, self._core.namespaces[""], 0, room, event, dst, payload)

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
        config = self.config
        ns = self._core.namespaces.get(name)
        if ns is None:
            self.error(conn, "no_such_namespace", "no such namespace",
                       room if name_ok(room, config.max_room_name) else ROOT,
                       event if name_ok(event, config.max_event_name) else "",
                       name if name_ok(name, config.max_event_name) else "", ask)
            return None
        connected = not name or ns.view(conn) is not None
        if event in NAMESPACE_EVENTS:  # its room and payload are not used
            room = room if name_ok(room, config.max_room_name) else ROOT
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

    def _route(self, conn: Connection, ns: Namespace[Any], ask: int, room: str, event: str,
               dst: str, payload: bytes) -> Awaitable[None] | None:
        """docs/protocol.md §9's checks and routing, in namespace ``ns``; ``ask`` non-zero
        for an ask (its refusals are error replies, and something always answers it)."""
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
        games = self._core.games
        if event in GAME_EVENTS or (games.active and (not dst or event in JOIN_LEAVE)
                                    and games.room_type(name, room) is not None):
            # Game rooms and their asks: roomer/games (docs/protocol.md §10).
            return games.route(conn, ns, ask, room, event, payload)
        if event == "join":
            return self._client_join(conn, ns, room, ask)
        if event == "leave":
            return self._client_leave(conn, ns, room, ask)
        if event == "session.ack" and not name and not ask and not dst:
            problem = self._core.sessions.ack(conn, payload)
            if problem is not None:
                self.error(conn, "malformed", problem, room, event, name)
            return None
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
        registry.fan(room, members, frame, conn)
        registry.publish_room(room, frame, conn.id)
        return None

    def _direct(self, conn: Connection, ns: Namespace[Any], room: str, event: str, dst: str,
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
        elif conn.inbound.open:
            self.error(conn, "no_such_client", "no client with that id", room, event,
                       namespace)

    def _answered(self, conn: Connection, kind: int, ask: int, payload: bytes) -> None:
        """A client's reply or error reply to an ask of the server."""
        waiter = conn.asks.waiter(ask)
        if waiter is None:
            self.metrics.counters["unknown_replies"] += 1
            return
        # Answering the server's own asks draws nothing from the client's rate limit.
        conn.inbound.refund(self.config.rate_limit)
        if kind == frames.REPLY:
            waiter.set_result(payload)
            return
        waiter.set_exception(ClientError.from_reply(payload))

    # handlers ------------------------------------------------------------------------

    def _call(self, conn: Connection, ns: Namespace[Any], handler: Callable[..., Any],
              ask: int, room: str, event: str, dst: str,
              payload: bytes) -> Awaitable[None] | None:
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
                             event: str, ns: Namespace[Any], ask: int) -> None:
        try:
            result = await pending
        except Exception as exc:
            self._handler_failed(conn, exc, room, event, ns.name, ask)
            return
        if ask and conn.inbound.open:
            self._reply(conn, ns, ask, room, event, result)

    # join, leave, connect ------------------------------------------------------------

    def _client_join(self, conn: Connection, ns: Namespace[Any], room: str,
                     ask: int) -> Awaitable[None] | None:
        registry = ns.registry
        rooms = registry.rooms_of(conn) or {}
        if room in rooms:
            return registry.add_member(conn, room, reply=ask)
        limit = self.config.max_rooms_per_connection
        if limit is not None and room != ROOT and conn.room_count() >= limit:
            self.error(conn, "too_many_rooms", f"at most {limit} rooms per connection",
                       room, "join", ns.name, ask)
            return None
        return self._after_hooks(
            ns.hooks.join, (ns.view(conn), room), conn, ns, room, "join", "join_denied", ask,
            lambda: registry.add_member(conn, room, reply=ask))

    def _client_leave(self, conn: Connection, ns: Namespace[Any], room: str,
                      ask: int) -> Awaitable[None] | None:
        registry = ns.registry
        if room not in (registry.rooms_of(conn) or {}):
            registry.remove_member(conn, room, ack=True, reply=ask)
            return None
        return self._after_hooks(
            ns.hooks.leave, (ns.view(conn), room), conn, ns, room, "leave", "leave_denied",
            ask, lambda: registry.remove_member(conn, room, ack=True, reply=ask))

    def _connect(self, conn: Connection, ns: Any, ask: int,
                 room: str) -> Awaitable[None] | None:
        view = NamespaceConnection(conn, ns)

        def apply() -> Awaitable[None] | None:
            pending = ns.enter(conn, view)
            if pending is not None:
                return self._connected_later(conn, ns, ask, room, pending)
            self._connected(conn, ns, ask, room)
            return None

        return self._after_hooks(ns.hooks.connect, (view,), conn, ns, room, "connect",
                                 "namespace_denied", ask, apply)

    async def _connected_later(self, conn: Connection, ns: Namespace[Any], ask: int,
                               room: str, pending: Awaitable[None]) -> None:
        await pending
        if conn.inbound.open:
            self._connected(conn, ns, ask, room)

    def _connected(self, conn: Connection, ns: Namespace[Any], ask: int, room: str) -> None:
        if ask:
            self._reply(conn, ns, ask, room, "connect", None)
        self._core.after(ns.hooks.connected, ns.view(conn), what="on_connected")

    def _after_hooks(self, hooks: list[Hook], args: tuple[Any, ...], conn: Connection,
                     ns: Namespace[Any], room: str, event: str, code: str, ask: int,
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
                                 ns: Namespace[Any], room: str, event: str, code: str,
                                 ask: int,
                                 apply: Callable[[], Awaitable[None] | None]) -> None:
        try:
            await pending
        except Exception as exc:
            self._hook_refused(conn, exc, code, room, event, ns.name, ask)
            return
        if conn.inbound.open:
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
