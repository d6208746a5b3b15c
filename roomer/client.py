"""asyncio client with the shape of roomer's JS client (roomer.js).

    root = await roomer.connect("ws://127.0.0.1:8080/ws")
    lobby = await root.join("lobby")
    lobby.on("chat", lambda payload, sender: print(sender, payload))
    lobby.send("chat", b"hello")

With ``protocol="v2"`` (docs/protocol.md) the same client also connects to namespaces
(``await root.namespace("chat")``), asks the server (``await room.ask("roll")``) and
answers the server's asks (the return value of a handler registered with ``room.on``).
It also finds game rooms (docs/protocol.md §10): ``await root.join_or_create("table",
options)``, ``root.create(...)``, ``root.join(id, options)`` and ``root.watch_rooms(type)``.

With ``resume=True`` it keeps a resumable session (docs/protocol.md §11): a connection that
drops is opened again by itself, and the server gives back the same id, the same rooms and
every message missed, once each and in order.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
import threading
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from . import codec
from .errors import AskTimeout, ClientError, ProtocolError, RoomerError
from .frames import ASK, BATCH_BYTES, ERROR_REPLY, EVENT, REPLY, reply_payload

__all__ = ["PROTOCOLS", "ClientError", "Room", "RoomWatch", "connect"]

log = logging.getLogger("roomer.client")

ROOT = "root"
Payload = bytes | bytearray | memoryview | str

#: ``connect(protocol=...)`` values and the WebSocket subprotocols each offers: v2 with
#: batch frames (docs/protocol.md §13) first, plain v2 for a server without them.
PROTOCOLS: dict[str, str | None] = {"v1": None, "v2": "roomer.v2.batch, roomer.v2"}
_V2_NAMED = frozenset({"roomer.v2", "roomer.v2.batch"})

MAX_ASK_ID = 0xFFFFFFFF

# What v2 asks the server for itself (join, leave, namespace, disconnect), with the
# client's own state to keep: not for ask().
OWN_ASKS = frozenset({"join", "leave", "connect", "disconnect"})

# Sessions (docs/protocol.md §11). The server keeps what this client has not acknowledged,
# up to its resume_replay bytes: acknowledging often keeps that small and the resume able.
ACK_EVERY = 256  # messages
ACK_DELAY = 0.5  # seconds after the first unacknowledged message
# What the app sends while the connection is away waits, within these bounds (past them
# send raises ConnectionError): a client away for its whole window must not grow without
# limit, and a long queue is stale by the time it could go.
QUEUE_MESSAGES = 1000
QUEUE_BYTES = 1 << 20
# The queue is written at most this many messages a second (the first second's worth at
# once): the server's rate limit (200 frames/s by default) would drop the tail of a
# larger burst, and close the connection past twice it. roomer.js paces its queue alike.
FLUSH_RATE = 100.0
# Reconnection attempts: the first after RETRY_FIRST, doubling up to RETRY_MAX, each
# times a random factor in [RETRY_JITTER, 1] so that clients cut together do not all
# come back in the same instant.
RETRY_FIRST = 0.1
RETRY_MAX = 5.0
RETRY_JITTER = 0.5
# The server's events of a session, in root of the default namespace: the client's own.
SESSION_EVENTS = frozenset({"session", "session.resumed", "session.lost"})


def _stay_away(transport: WSTransport) -> bool:
    """Whether the server closed ``transport`` with a code that means "do not come back":
    1000 (a kick), 1001 (shutdown), 1008 (policy) or 4000-4999 (the application's).
    Without a close frame (a reset, EOF) or with another code (1011 ping timeout...) the
    session may be resumed."""
    handshake = transport.close_handshake
    if handshake is None or handshake.recv is None:
        return False
    code = handshake.recv.code.value
    return code in (1000, 1001, 1008) or 4000 <= code <= 4999


def _session_url(url: str, token: str | None = None, received: int = 0) -> str:
    """``url`` asking for a new session (no ``token``) or the resume of one, its other
    query fields kept as they are."""
    parts = urllib.parse.urlsplit(url)
    kept = [field for field in parts.query.split("&")
            if field and field.partition("=")[0] not in ("session", "received")]
    if token is None:
        kept.append("session=new")
    else:
        kept += [f"session={urllib.parse.quote(token, safe='')}", f"received={received}"]
    return urllib.parse.urlunsplit(parts._replace(query="&".join(kept)))


def _json_object(payload: bytes) -> dict[str, Any]:
    """A verdict's JSON object, or {} if it is none (a server is not trusted to be
    well-formed)."""
    try:
        info = json.loads(payload)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}

# What an internal ask does with its answer, called as the answer is read (before the
# next message of the same read is dispatched): (reply payload, None) or (None, error).
Apply = Callable[[bytes | None, Exception | None], None]


class Room:
    """A joined (or joining) room. Awaiting it waits until the server acknowledged the join.

    Threads: the client belongs to the thread of the event loop it was connected in.
    ``id``, ``open``, ``members``, ``namespace_name``, ``pending_asks`` and
    ``unknown_replies`` may be read from any thread; every other method raises
    RuntimeError from another thread (hand the call to the loop with
    ``loop.call_soon_threadsafe`` or ``asyncio.run_coroutine_threadsafe``)."""

    def __init__(self, client: _Client, name: str, space: _Space | None = None) -> None:
        self.name = name
        self._client = client
        self._space = client.default if space is None else space
        self._handlers: dict[str, list[Callable[..., Any]]] = {}
        self._members: list[str] = []
        self._open = False
        self._joined: asyncio.Future[Room] = client.loop.create_future()
        self._left: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        where = f" in {self._space.name!r}" if self._space.name else ""
        return f"<roomer.client.Room {self.name!r}{where} open={self._open}>"

    def __await__(self) -> Any:
        return asyncio.shield(self._joined).__await__()

    @property
    def namespace_name(self) -> str:
        """The namespace this room is in (``""``: the default one, all that v1 has)."""
        return self._space.name

    # the JS client's API ----------------------------------------------------------------

    def id(self) -> str:
        """This client's id (the server assigned it at connect)."""
        return self._client.id

    def open(self) -> bool:
        """True while the room is joined and the connection is up (or, with
        ``resume=True``, away and being resumed)."""
        return self._open

    def members(self) -> list[str]:
        """A copy of the member ids the server reported (join_ack, then presence)."""
        return list(self._members)

    def on(self, event: str, handler: Callable[..., Any]) -> Callable[..., Any]:
        """Call ``handler`` for ``event``: custom events get (payload, sender_id);
        new_member/member_left get (member_id), and so do member_dropped/member_back (v2:
        a member's connection dropped and the server holds its session; it came back);
        error gets (dict); open/close get (). With ``resume=True``, root also gets
        dropped (), resumed (id) and lost (code): see `roomer.connect`.

        v2: an ask of the server for ``event`` in this room is answered by the first
        handler of ``event`` (sync or async, called with (payload, "")): its return value
        is the reply (bytes as they are, str as UTF-8, None empty, anything else JSON);
        a roomer.RoomerError it raises is an error reply with its code and text, any other
        exception ``handler_error`` "internal error"; no handler: ``no_handler``."""
        self._client.loop_only("on")
        if not callable(handler):
            raise TypeError("handler is not callable")
        self._handlers.setdefault(event, []).append(handler)
        return handler

    def off(self, event: str, handler: Callable[..., Any] | None = None) -> None:
        """Remove one handler of ``event``, or all of them."""
        self._client.loop_only("off")
        if handler is None:
            self._handlers.pop(event, None)
        elif handler in self._handlers.get(event, []):
            self._handlers[event].remove(handler)

    def join(self, name: str, options: Mapping[str, Any] | None = None) -> Room:
        """Join room ``name`` (in this room's namespace); ``await`` the result to wait for
        the server's answer (v1: its join_ack; v2: the join ask's reply). A refusal raises
        roomer.ClientError with the server's code. ``options`` (a JSON-able dict) go to a
        game room's ``on_join`` (``room_full``, ``room_locked``, ``no_such_room``,
        ``join_denied``... refuse such a join)."""
        self._client.loop_only("join")
        return self._client.join(name, self._space, options)

    def create(self, type: str, options: Mapping[str, Any] | None = None) -> Room:
        """v2: create a game room of ``type`` (or with the id ``type:suffix``) and join it.
        Returns the room at once, to register handlers on; ``await`` it for the server's
        answer: then its ``name`` is the room's id. A refusal raises roomer.ClientError
        (``create_denied`` with the hook's text, ``room_exists``, ``room_limit``...)."""
        self._client.loop_only("create")
        return self._client.find_room("room.create", type, self._space, options)

    def join_or_create(self, type: str, options: Mapping[str, Any] | None = None) -> Room:
        """v2: join a game room of ``type`` that the server picks by ``options`` (its type's
        ``filter_by`` and ``sort_by``), or create one. As `create`: the room at once,
        named by its id once awaited."""
        self._client.loop_only("join_or_create")
        return self._client.find_room("room.join_or_create", type, self._space, options)

    def watch_rooms(self, type: str, filter: Mapping[str, Any] | None = None) -> RoomWatch:
        """v2: watch the list of game rooms of ``type`` (whose metadata hold ``filter``'s
        keys and values). Returns the watch at once; ``await`` it for the first list.
        A second watch of the same type replaces the first."""
        self._client.loop_only("watch_rooms")
        return self._client.watch(type, self._space, filter)

    def leave(self) -> asyncio.Future[None]:
        """Leave this room; the future resolves on leave_ack (v2: the leave ask's reply);
        a refusal (``leave_denied``) raises roomer.ClientError. On a namespace's root:
        ``disconnect()``."""
        self._client.loop_only("leave")
        if self._space.name and self is self._space.root:
            return self.disconnect()
        return self._client.leave(self)

    def send(self, event: str, payload: Payload = b"", dst: str = "") -> None:
        """Send to the room's members (or, with ``dst``, to that client only)."""
        self._client.loop_only("send")
        self._client.send(self._space.name, self.name, event, payload, dst)

    async def wait_for(self, event: str, timeout: float | None = None) -> tuple[Any, ...]:
        """Wait for the next ``event`` in this room; returns its handler arguments."""
        self._client.loop_only("wait_for")
        fut: asyncio.Future[tuple[Any, ...]] = self._client.loop.create_future()

        def once(*args: Any) -> None:
            if not fut.done():
                fut.set_result(args)

        self.on(event, once)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.off(event, once)

    async def close(self) -> None:
        """Close the whole connection (every room)."""
        self._client.loop_only("close")
        await self._client.close()

    # protocol v2 ----------------------------------------------------------------------

    def namespace(self, name: str) -> Room:
        """v2: connect this client to namespace ``name`` and return that namespace's root
        room at once, whose ``join``, ``send`` and ``ask`` are in the namespace. Await it
        to wait for the server's answer (register handlers first: what the namespace's
        on_connected hook sends arrives with it); a refusal raises roomer.ClientError
        (``no_such_namespace``, ``namespace_denied``...). ``""``, and a namespace
        connected (or connecting) already, give its root as it is."""
        self._client.loop_only("namespace")
        return self._client.namespace(name)

    def disconnect(self) -> asyncio.Future[None]:
        """v2: leave this room's namespace (not the default one: close() the connection);
        its rooms close. Resolves on the server's reply."""
        self._client.loop_only("disconnect")
        return self._client.disconnect(self._space)

    async def ask(self, event: str, payload: Payload = b"", timeout: float | None = 5.0
                  ) -> bytes:
        """v2: ask the server ``event`` in this room and return its reply's payload.

        Raises roomer.ClientError (``.code``: the server's, e.g. ``no_handler``,
        ``denied``) on an error reply, roomer.AskTimeout after ``timeout`` seconds without
        an answer (None: no limit), ConnectionError if the connection closes first. The
        waiter is gone in every case; a late reply is counted (``unknown_replies``)."""
        if event in OWN_ASKS:
            raise ValueError(f"{event!r} is asked by the method of that name: asked here, "
                             "the server would do it behind this client's back")
        client = self._client
        client.loop_only("ask")
        ask_id, fut = client.start_ask(self._space.name, self.name, event, payload, timeout)
        try:
            return await fut
        finally:
            client.forget(ask_id, fut)

    def pending_asks(self) -> int:
        """v2: this connection's asks of the server that wait for an answer."""
        return len(self._client.asks)

    def unknown_replies(self) -> int:
        """v2: replies this connection got to no ask waiting (late or unknown ids)."""
        return self._client.unknown_replies

    # dispatch ----------------------------------------------------------------------------

    def _opened(self, members: bytes | list[str]) -> None:
        """The server acknowledged a join of this room with its member list (JSON)."""
        self._members = json.loads(members) if isinstance(members, bytes) else members
        first = not self._open
        self._open = True
        if not self._joined.done():
            self._joined.set_result(self)
        if first:
            self._emit("open")

    def _emit(self, event: str, *args: Any) -> None:
        for handler in list(self._handlers.get(event, ())):
            try:
                result = handler(*args)
            except Exception:
                log.exception("client handler for %r raised", event)
                continue
            if inspect.isawaitable(result):
                self._client.spawn(result)


class RoomWatch:
    """v2: a live list of the game rooms of one type (`Room.watch_rooms`). Await it
    for the first list; ``rooms`` is then kept up to date: room id -> ``{"id", "type",
    "clients", "max_clients", "locked", "metadata"}``."""

    def __init__(self, client: _Client, space: _Space, type: str) -> None:
        self.type = type
        self.rooms: dict[str, dict[str, Any]] = {}
        self._client = client
        self._space = space
        self._handlers: list[Callable[..., Any]] = []
        self._ready: asyncio.Future[RoomWatch] = client.loop.create_future()

    def __await__(self) -> Any:
        return asyncio.shield(self._ready).__await__()

    def __repr__(self) -> str:
        return f"<roomer.client.RoomWatch {self.type!r} rooms={len(self.rooms)}>"

    def on_change(self, fn: Callable[[list[dict[str, Any]], list[str]], Any]
                  ) -> Callable[..., Any]:
        """Call ``fn(changed, removed)`` after each update (entries changed or added,
        ids removed), once ``rooms`` holds it."""
        self._client.loop_only("on_change")
        if not callable(fn):
            raise TypeError("handler is not callable")
        self._handlers.append(fn)
        return fn

    async def close(self) -> None:
        """Stop watching."""
        self._client.loop_only("close")
        if self._space.watches.get(self.type) is self:
            del self._space.watches[self.type]
            ask_id, fut = self._client.start_ask(self._space.name, self.type,
                                                 "rooms.unwatch", b"", self._client.timeout)
            try:
                await fut
            finally:
                self._client.forget(ask_id, fut)

    def _apply(self, changed: list[dict[str, Any]], removed: list[str]) -> None:
        for entry in changed:
            self.rooms[entry["id"]] = entry
        for room_id in removed:
            self.rooms.pop(room_id, None)
        for fn in list(self._handlers):
            try:
                result = fn(changed, removed)
            except Exception:
                log.exception("room watch handler raised")
                continue
            if inspect.isawaitable(result):
                self._client.spawn(result)


class _Space:
    """The client's rooms in one namespace (``""``: the default one), and its watches of
    room lists by type."""

    __slots__ = ("name", "rooms", "root", "watches")

    def __init__(self, client: _Client, name: str) -> None:
        self.name = name
        self.rooms: dict[str, Room] = {}
        self.root = Room(client, ROOT, self)
        self.rooms[ROOT] = self.root
        self.watches: dict[str, RoomWatch] = {}


class _Session:
    """The client's side of a resumable session (docs/protocol.md §11): its token, the
    messages received in it, and, while the connection is away, what the app sent."""

    __slots__ = ("ack_timer", "acked", "attempt", "away", "count", "flush_at",
                 "flush_budget", "flush_timer", "lost_code", "queue", "queued_bytes", "task",
                 "token", "window")

    def __init__(self) -> None:
        self.token: str | None = None  # None until the server announced the session
        self.window = 0.0
        self.count = 0  # messages received in the session (a verdict is not one)
        self.acked = 0
        self.ack_timer: asyncio.TimerHandle | None = None
        # From a drop to the verdict of a resume: sends queue, asks fail.
        self.away = False
        self.task: asyncio.Task[None] | None = None
        # The current attempt's outcome: True once a verdict came, False if its socket
        # went first. None between attempts.
        self.attempt: asyncio.Future[bool] | None = None
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.flush_timer: asyncio.TimerHandle | None = None
        # The queue's writing after a resume: a bucket of FLUSH_RATE messages.
        self.flush_budget = 0.0
        self.flush_at = 0.0
        # A lost session's code, told once the new session's root join_ack brings the
        # new id.
        self.lost_code: str | None = None

    def hold(self, data: bytes) -> None:
        if len(self.queue) >= QUEUE_MESSAGES or self.queued_bytes + len(data) > QUEUE_BYTES:
            raise ConnectionError(
                f"resuming the session, and the send queue is full ({QUEUE_MESSAGES} "
                f"messages or {QUEUE_BYTES} bytes)")
        self.queue.append(data)
        self.queued_bytes += len(data)

    def take(self) -> bytes:
        data = self.queue.popleft()
        self.queued_bytes -= len(data)
        return data

    def drop_queue(self) -> None:
        self.queue.clear()
        self.queued_bytes = 0

    def stop_timers(self) -> None:
        for timer in (self.ack_timer, self.flush_timer):
            if timer is not None:
                timer.cancel()
        self.ack_timer = self.flush_timer = None


class _Client(WSListener):
    def __init__(self, loop: asyncio.AbstractEventLoop, v2: bool = False,
                 timeout: float = 10.0, resume: bool = False, coalesce: bool = False) -> None:
        super().__init__()
        self.loop = loop
        self.thread = threading.get_ident()  # the loop's: connect runs on it
        self.v2 = v2
        # This socket's server may send batch frames (it named roomer.v2.batch).
        self.batch = False
        # With coalesce (and batch frames), what this turn of the loop writes, written
        # as one batch when it ends: (data, whether a drop queues it for the resume).
        self.coalesce = coalesce
        self._held: list[tuple[bytes, bool]] = []
        self._held_bytes = 0
        self._held_due = False
        self.timeout = timeout
        self.id = ""
        self.transport: WSTransport | None = None
        self.default = _Space(self, "")
        self.spaces: dict[str, _Space] = {"": self.default}
        self.rooms = self.default.rooms
        self.root = self.default.root
        self.closed: asyncio.Future[None] = loop.create_future()
        self._tasks: set[asyncio.Task[Any]] = set()
        # v2: this client's asks waiting for an answer, by id: (the future an ask() call
        # awaits, or what an internal ask does with its answer; the timeout's timer).
        self.asks: dict[int, tuple[asyncio.Future[bytes] | None, Apply | None,
                                   asyncio.TimerHandle | None]] = {}
        self.next_ask_id = 1
        self.unknown_replies = 0
        # v1: joins sent and not yet answered, in order. The server answers a client's
        # messages in order, and refuses a join of an invalid name in room root, which
        # names no room: it is the oldest join still waiting.
        self.v1_joins: deque[Room] = deque()
        # The session, with resume=True (docs/protocol.md §11), and what a reconnection
        # needs: the URL asked at first and picows' options.
        self.session: _Session | None = _Session() if resume else None
        self.url = ""
        self.connect_options: dict[str, Any] = {}
        self.closing = False  # close() was called: no more reconnecting

    def loop_only(self, what: str) -> None:
        if threading.get_ident() != self.thread:
            raise RuntimeError(
                f"{what} from another thread: the client belongs to its event loop's thread; "
                "use loop.call_soon_threadsafe or asyncio.run_coroutine_threadsafe")

    def spawn(self, awaitable: Any) -> None:
        task = self.loop.create_task(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_ws_connected(self, transport: WSTransport) -> None:
        session = self.session
        if self.closing or (session is not None and session.away and session.attempt is None):
            # The socket of an attempt given up (timed out, or close() came meanwhile).
            transport.disconnect(False)
            return
        self.transport = transport
        if self.v2:
            chosen = transport.response.headers.get("Sec-WebSocket-Protocol")
            self.batch = chosen == "roomer.v2.batch"
            if chosen not in _V2_NAMED:
                # A server that speaks v1 only: every byte would be misread, so stop here.
                if not self.root._joined.done():
                    self.root._joined.set_exception(ClientError(
                        "unsupported_protocol",
                        f"the server did not accept protocol v2 (its 101 named subprotocol "
                        f"{chosen!r}, not 'roomer.v2'): it speaks v1 only", "connect"))
                if session is not None:
                    session.token = None  # not the server of the session: no resuming
                transport.send_close(WSCloseCode.PROTOCOL_ERROR, b"roomer.v2 expected")
                transport.disconnect()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if transport is not self.transport:
            return  # a socket given up on
        if frame.msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
            return
        if frame.msg_type not in (WSMsgType.BINARY, WSMsgType.TEXT):
            return
        data = frame.get_payload_as_bytes()
        session = self.session
        if session is not None and session.away:
            self._verdict(data)  # never in a batch: written before anything else
            return
        if self.batch and data[:1] == b"\x04":
            try:
                messages = codec.split_batch(data)
            except ProtocolError:
                log.warning("server sent a malformed batch; ignored")
                return
        else:
            messages = [data]
        for data in messages:
            if session is not None:
                self._counted(session)
            self._received(data)

    def _received(self, data: bytes) -> None:
        if self.v2:
            self._received_v2(data)
            return
        try:
            room, event, dst, src, payload = codec.decode(data)
        except ProtocolError:
            log.warning("server sent a malformed message; ignored")
            return
        self._dispatch(self.default, room, event, dst, src, payload)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if transport is not self.transport:
            return  # a socket given up on
        session = self.session
        if session is None or self.closing or session.token is None or _stay_away(transport):
            self._torn_down()
        elif session.away:
            # An attempt's socket went before its verdict: the next attempt follows.
            if session.attempt is not None and not session.attempt.done():
                session.attempt.set_result(False)
        else:
            self._dropped(session)

    def _torn_down(self) -> None:
        """The connection is closed for good: every room closes, closed resolves."""
        self._held.clear()
        self._held_bytes = 0
        session = self.session
        if session is not None:
            session.away = False
            session.token = None
            session.drop_queue()
            session.stop_timers()
            task = session.task
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        exc = ConnectionError("connection closed")
        self._fail_asks(exc)
        self.v1_joins.clear()
        for space in list(self.spaces.values()):
            for room in list(space.rooms.values()):
                self._closed_room(room, exc)
        if not self.closed.done():
            self.closed.set_result(None)

    def _fail_asks(self, exc: Exception) -> None:
        asks, self.asks = self.asks, {}
        for fut, apply, timer in asks.values():
            if timer is not None:
                timer.cancel()
            self._fail(fut, apply, exc)

    # sessions (docs/protocol.md §11) ------------------------------------------------------

    def _counted(self, session: _Session) -> None:
        session.count += 1
        self._schedule_ack(session)

    def _schedule_ack(self, session: _Session) -> None:
        if session.token is None:
            return  # no session (yet, or the server has them off): nothing to acknowledge
        if session.count - session.acked >= ACK_EVERY:
            self._send_ack(session)
        elif session.count > session.acked and session.ack_timer is None:
            session.ack_timer = self.loop.call_later(ACK_DELAY, self._send_ack, session)

    def _send_ack(self, session: _Session) -> None:
        if session.ack_timer is not None:
            session.ack_timer.cancel()
            session.ack_timer = None
        transport = self.transport
        if (session.away or session.token is None or transport is None
                or transport.is_disconnected):
            return
        payload = str(session.count).encode()
        if self.v2:
            data = codec.encode_v2(EVENT, 0, "", ROOT, "session.ack", "", "", payload)
        else:
            data = codec.encode(ROOT, "session.ack", "", "", payload)
        transport.send(WSMsgType.BINARY, data)
        session.acked = session.count

    def _announced(self, payload: bytes) -> None:
        """The server's ``session`` event: the token to resume with, and its window."""
        session = self.session
        if session is None:
            return
        info = _json_object(payload)
        if not isinstance(info.get("token"), str) or not info["token"]:
            log.warning("server sent a session with no token; not resumable")
            return
        session.token = info["token"]
        window = info.get("window")
        session.window = float(window) if isinstance(window, (int, float)) else 0.0
        self._schedule_ack(session)

    def _dropped(self, session: _Session) -> None:
        """The socket of a session dropped: the rooms stay, what waited for an answer on
        it fails (the server may or may not have had it), and reconnecting begins."""
        log.info("connection lost; resuming the session")
        session.away = True
        session.stop_timers()
        # What was held for this turn's batch was never written: the app's sends wait for
        # the resume, as sends made while away do; the rest fails with its asks.
        held, self._held = self._held, []
        self._held_bytes = 0
        for data, queued in held:
            if queued:
                session.hold(data)
        exc = ConnectionError("connection lost (resuming the session)")
        self._fail_asks(exc)
        self._fail_v1_requests(exc)
        session.task = self.loop.create_task(self._resume(session))
        self.root._emit("dropped")

    def _fail_v1_requests(self, exc: Exception) -> None:
        joins, self.v1_joins = self.v1_joins, deque()
        for room in joins:
            self._closed_room(room, exc)
        if self.v2:
            return  # v2 leaves are asks: failed with them
        for room in list(self.default.rooms.values()):
            if room._left is not None and not room._left.done():
                room._left.set_exception(exc)
                room._left.exception()  # retrieved: nobody may be awaiting it

    async def _resume(self, session: _Session) -> None:
        """Reconnect until a server's verdict, or until the session's window (from the
        drop) is over; then the connection is closed for good. The first attempt is
        made whatever the window: its verdict says whether the server still holds it."""
        loop = self.loop
        give_up_at = loop.time() + session.window
        pause = RETRY_FIRST
        try:
            while True:
                await asyncio.sleep(pause * random.uniform(RETRY_JITTER, 1.0))
                if await self._attempt(session):
                    return
                left = give_up_at - loop.time()
                if left <= 0:
                    break
                pause = min(pause * 2, RETRY_MAX, left)
            log.warning("the session could not be resumed within its window of %s s",
                        session.window)
        except Exception:
            log.exception("resuming the session failed")
        self._torn_down()

    async def _attempt(self, session: _Session) -> bool:
        """One reconnection: True once the server's verdict came (resumed, or lost and
        a new session begun), False if it could not be had within ``timeout``."""
        outcome = session.attempt = self.loop.create_future()
        url = _session_url(self.url, session.token, session.count)
        try:
            return await asyncio.wait_for(self._connect(url, outcome), self.timeout)
        except Exception as exc:  # refused, reset, an HTTP error, no verdict in time
            log.info("resuming the session: attempt failed: %r", exc)
            transport = self.transport
            if session.away and transport is not None and not transport.is_disconnected:
                transport.disconnect(False)  # up, but no verdict in time
            return False
        finally:
            session.attempt = None

    async def _connect(self, url: str, outcome: asyncio.Future[bool]) -> bool:
        # This same listener gets the new socket: rooms, handlers and asks stay with it.
        await ws_connect(lambda: self, url, **self.connect_options)
        return await outcome

    def _verdict(self, data: bytes) -> None:
        """The first message on a resuming socket (not counted)."""
        session = self.session
        assert session is not None
        event, payload = self._root_event(data)
        if event == "session.resumed":
            self._resumed(session, payload)
        elif event == "session.lost":
            self._lost(session, payload)
        else:
            # No verdict: a server with sessions off answers as to anyone, root join_ack
            # first: message 1 of a connection without a session.
            self._lost(session, b"")
            self._counted(session)
            self._received(data)
        if session.attempt is not None and not session.attempt.done():
            session.attempt.set_result(True)

    def _root_event(self, data: bytes) -> tuple[str, bytes]:
        """(event, payload) of a message to root of the default namespace, else ("", b"")."""
        try:
            if self.v2:
                kind, _, name, room, event, _, _, payload = codec.decode_v2(data)
            else:
                kind, name = EVENT, ""
                room, event, _, _, payload = codec.decode(data)
        except ProtocolError:
            return "", b""
        if kind != EVENT or name or room != ROOT:
            return "", b""
        return event, payload

    def _resumed(self, session: _Session, payload: bytes) -> None:
        """The server kept the session: id and rooms are as they were, what this client
        missed comes next, and what the app sent meanwhile goes out."""
        info = _json_object(payload)
        session.away = False
        if isinstance(info.get("token"), str):
            session.token = info["token"]
        if isinstance(info.get("window"), (int, float)):
            session.window = float(info["window"])
        if isinstance(info.get("id"), str) and info["id"]:
            self.id = info["id"]
        log.info("session resumed")
        # What the server kept up to here can go: its ack may have been lost with the
        # socket.
        self._send_ack(session)
        session.flush_budget, session.flush_at = FLUSH_RATE, self.loop.time()
        self._flush()
        self.root._emit("resumed", self.id)

    def _lost(self, session: _Session, payload: bytes) -> None:
        """The server could not resume the session: a new one begins on this socket (its
        root join_ack brings the new id). The old rooms and namespaces are gone with the
        old id, and so is what the app sent for them."""
        code = str(_json_object(payload).get("code") or "resume_failed")
        log.info("the session could not be resumed (%s): a new one begins", code)
        session.away = False
        session.token = None
        session.count = session.acked = 0
        session.drop_queue()
        session.stop_timers()
        session.lost_code = code
        exc = ConnectionError("session lost")
        self.v1_joins.clear()
        for name, space in list(self.spaces.items()):
            for room in list(space.rooms.values()):
                if room is not self.root:
                    self._closed_room(room, exc)
            space.watches.clear()
            if name:
                del self.spaces[name]

    def _began(self) -> None:
        """The root join_ack of a connection came: after a lost session, tell the app
        now, when root.id() is the new id."""
        session = self.session
        if session is not None and session.lost_code is not None:
            code, session.lost_code = session.lost_code, None
            self.root._emit("lost", code)

    def _flush(self) -> None:
        """Write what the app sent while away, at most FLUSH_RATE messages a second."""
        session = self.session
        assert session is not None
        session.flush_timer = None
        transport = self.transport
        if session.away or transport is None or transport.is_disconnected:
            return
        self._write_held()  # what was written before goes first
        now = self.loop.time()
        session.flush_budget = min(FLUSH_RATE,
                             session.flush_budget + (now - session.flush_at) * FLUSH_RATE)
        session.flush_at = now
        while session.queue and session.flush_budget >= 1:
            transport.send(WSMsgType.BINARY, session.take())
            session.flush_budget -= 1
        if session.queue:
            session.flush_timer = self.loop.call_later(10 / FLUSH_RATE, self._flush)

    def _closed_room(self, room: Room, exc: Exception) -> None:
        was_open = room._open
        room._open = False
        rooms = room._space.rooms
        if rooms.get(room.name) is room:
            del rooms[room.name]
        if not room._joined.done():
            room._joined.set_exception(exc)
            room._joined.exception()  # retrieved: nobody may be awaiting it
        if room._left is not None and not room._left.done():
            room._left.set_result(None)
        if was_open:
            room._emit("close")

    def _refused_join(self, room: Room, refused: ClientError) -> None:
        if room in self.v1_joins:
            self.v1_joins.remove(room)
        rooms = room._space.rooms
        if rooms.get(room.name) is room:
            del rooms[room.name]
        if not room._joined.done():
            room._joined.set_exception(refused)

    def _dispatch(self, space: _Space, room_name: str, event: str, dst: str, src: str,
                  payload: bytes) -> None:
        if event == "rooms.changes":
            watch = space.watches.get(room_name)
            if watch is not None:
                info = json.loads(payload)
                watch._apply(info.get("changed", []), info.get("removed", []))
            return
        if event in SESSION_EVENTS and space is self.default:
            # The session's own (verdicts are read before dispatch): not the app's.
            if event == "session" and room_name == ROOT:
                self._announced(payload)
            return
        room = space.rooms.get(room_name)
        if event == "join_ack":
            if room is None:  # a server-driven join
                room = space.rooms[room_name] = Room(self, room_name, space)
            if room in self.v1_joins:
                self.v1_joins.remove(room)
            if room_name == ROOT and space is self.default:
                self.id = src
                room._opened(payload)
                self._began()
            else:
                room._opened(payload)
        elif room is None:
            if event == "error":
                space.root._emit("error", json.loads(payload))
        elif event == "leave_ack":
            self._closed_room(room, ConnectionError("left"))
        elif event == "room.closed":
            # A game room ended under its members (docs/protocol.md §10): its handlers
            # get {"code", "message"}, then the room closes.
            info = json.loads(payload)
            room._emit("room.closed", info, src)
            self._closed_room(room, ClientError(str(info.get("code", "")),
                                                str(info.get("message", "")), "join"))
        elif event == "new_member":
            member = payload.decode()
            if member not in room._members:
                room._members.append(member)
            room._emit("new_member", member)
        elif event == "member_left":
            member = payload.decode()
            if member in room._members:
                room._members.remove(member)
            room._emit("member_left", member)
        elif event in ("member_dropped", "member_back"):
            # A member's connection dropped and the server holds its session (or it
            # came back): it stays a member all along.
            room._emit(event, payload.decode())
        elif event == "error":
            info = json.loads(payload)
            refused = ClientError(str(info.get("code", "")), str(info.get("message", "")),
                                  str(info.get("event", "")))
            if refused.event == "join":
                if not room._joined.done():
                    self._refused_join(room, refused)
                elif room_name == ROOT and refused.code == "invalid_name" and self.v1_joins:
                    self._refused_join(self.v1_joins[0], refused)
            elif refused.event == "leave" and room._left is not None and not room._left.done():
                room._left.set_exception(refused)
            room._emit("error", info)
        else:
            room._emit(event, payload, src)

    # protocol v2: what the server sends ---------------------------------------------------

    def _received_v2(self, data: bytes) -> None:
        try:
            kind, ask_id, name, room, event, dst, src, payload = codec.decode_v2(data)
        except ProtocolError:
            log.warning("server sent a malformed message; ignored")
            return
        if kind >= REPLY:
            self._answered(kind, ask_id, event, payload)
            return
        space = self.spaces.get(name)
        if kind == ASK:
            self._asked(space, name, ask_id, room, event, src, payload)
        elif space is not None:  # else: a namespace left meanwhile
            self._dispatch(space, room, event, dst, src, payload)

    def _answered(self, kind: int, ask_id: int, event: str, payload: bytes) -> None:
        entry = self.asks.pop(ask_id, None)
        if entry is None or (entry[0] is not None and entry[0].done()):
            self.unknown_replies += 1
            return
        fut, apply, timer = entry
        if timer is not None:
            timer.cancel()
        if kind == REPLY:
            if apply is not None:
                apply(payload, None)
            if fut is not None:
                fut.set_result(payload)
            return
        self._fail(fut, apply, ClientError.from_reply(payload, event))

    def _fail(self, fut: asyncio.Future[bytes] | None, apply: Apply | None,
              exc: Exception) -> None:
        if apply is not None:
            apply(None, exc)
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    def _asked(self, space: _Space | None, name: str, ask_id: int, room_name: str,
               event: str, src: str, payload: bytes) -> None:
        """The server asks: the room's first handler of ``event`` answers."""
        room = space.rooms.get(room_name) if space is not None else None
        handlers = room._handlers.get(event) if room is not None else None
        if not handlers:
            self._error_reply(name, ask_id, room_name, event, "no_handler",
                              f"nothing answers {event!r}")
            return
        try:
            result = handlers[0](payload, src)
        except Exception as exc:
            self._handler_failed(name, ask_id, room_name, event, exc)
            return
        if inspect.isawaitable(result):
            self.spawn(self._answer_later(name, ask_id, room_name, event, result))
        else:
            self._reply(name, ask_id, room_name, event, result)

    async def _answer_later(self, name: str, ask_id: int, room: str, event: str,
                            pending: Any) -> None:
        try:
            result = await pending
        except Exception as exc:
            self._handler_failed(name, ask_id, room, event, exc)
            return
        self._reply(name, ask_id, room, event, result)

    def _reply(self, name: str, ask_id: int, room: str, event: str, value: object) -> None:
        try:
            body = reply_payload(value)
        except (TypeError, ValueError) as exc:  # not JSON-able
            self._handler_failed(name, ask_id, room, event, exc)
            return
        self._write_v2(REPLY, ask_id, name, room, event, "", body, quiet=True)

    def _handler_failed(self, name: str, ask_id: int, room: str, event: str,
                        exc: Exception) -> None:
        if isinstance(exc, ClientError):
            code, message = exc.code, exc.server_message
        elif isinstance(exc, RoomerError):
            code, message = exc.code, str(exc) or type(exc).__name__
        else:
            log.error("client handler for the ask %r raised", event, exc_info=exc)
            code, message = "handler_error", "internal error"
        self._error_reply(name, ask_id, room, event, code, message)

    def _error_reply(self, name: str, ask_id: int, room: str, event: str, code: str,
                     message: str) -> None:
        body = json.dumps({"code": code, "message": message})
        self._write_v2(ERROR_REPLY, ask_id, name, room, event, "", body, quiet=True)

    # protocol v2: asking the server ---------------------------------------------------------

    def start_ask(self, namespace: str, room: str, event: str, payload: Payload,
                  timeout: float | None, apply: Apply | None = None,
                  ) -> tuple[int, asyncio.Future[bytes]]:
        """Send an ask now; its id and the future of its answer (with ``apply``, the
        future is not used: ``apply`` gets the answer or the error)."""
        if not self.v2:
            raise RuntimeError("asks need protocol v2: roomer.connect(url, protocol='v2')")
        asks = self.asks
        ask_id = self.next_ask_id
        while ask_id in asks:  # unique among the asks still waiting
            ask_id = ask_id % MAX_ASK_ID + 1
        self.next_ask_id = ask_id % MAX_ASK_ID + 1
        fut: asyncio.Future[bytes] = self.loop.create_future()
        self._write_v2(ASK, ask_id, namespace, room, event, "", payload)
        timer = None if timeout is None else self.loop.call_later(
            timeout, self._expire, ask_id, event, timeout)
        asks[ask_id] = (None if apply is not None else fut, apply, timer)
        return ask_id, fut

    def forget(self, ask_id: int, fut: asyncio.Future[bytes]) -> None:
        """The asker stopped waiting (answered, timed out, cancelled): drop its waiter."""
        entry = self.asks.get(ask_id)
        if entry is not None and entry[0] is fut:
            del self.asks[ask_id]
            if entry[2] is not None:
                entry[2].cancel()

    def _expire(self, ask_id: int, event: str, timeout: float) -> None:
        entry = self.asks.pop(ask_id, None)
        if entry is not None:
            self._fail(entry[0], entry[1],
                       AskTimeout(f"no answer to {event!r} within {timeout} s"))

    def namespace(self, name: str) -> Room:
        if not self.v2:
            raise RuntimeError("namespaces need protocol v2: roomer.connect(url, "
                               "protocol='v2')")
        if not isinstance(name, str):
            raise TypeError("a namespace name is a str")
        known = self.spaces.get(name)
        if known is not None:  # connected, or connecting
            return known.root
        space = self.spaces[name] = _Space(self, name)
        root = space.root

        def apply(payload: bytes | None, error: Exception | None) -> None:
            if error is not None:
                if self.spaces.get(name) is space:
                    del self.spaces[name]
                if not root._joined.done():
                    root._joined.set_exception(error)
                return
            root._members = [self.id]
            root._open = True
            if not root._joined.done():
                root._joined.set_result(root)
            root._emit("open")

        try:
            self.start_ask(name, ROOT, "connect", b"", self.timeout, apply)
        except BaseException:
            del self.spaces[name]
            raise
        return root

    def disconnect(self, space: _Space) -> asyncio.Future[None]:
        if not self.v2:
            raise RuntimeError("namespaces need protocol v2")
        if not space.name:
            raise ValueError("the default namespace cannot be left: close() the connection")
        fut: asyncio.Future[None] = self.loop.create_future()
        if self.spaces.get(space.name) is not space:
            fut.set_result(None)  # left already
            return fut

        def apply(payload: bytes | None, error: Exception | None) -> None:
            if error is None:
                if self.spaces.get(space.name) is space:
                    del self.spaces[space.name]
                for room in list(space.rooms.values()):
                    self._closed_room(room, ConnectionError("left the namespace"))
            if fut.done():
                return
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)

        self.start_ask(space.name, ROOT, "disconnect", b"", self.timeout, apply)
        return fut

    # requests --------------------------------------------------------------------------

    def _write(self, room: str, event: str, payload: Payload = b"", dst: str = "",
               queued: bool = False) -> None:
        self._out(codec.encode(room, event, dst, "", payload), queued)

    def _write_v2(self, kind: int, ask_id: int, namespace: str, room: str, event: str,
                  dst: str, payload: Payload, quiet: bool = False,
                  queued: bool = False) -> None:
        data = codec.encode_v2(kind, ask_id, namespace, room, event, dst, "", payload)
        if quiet and not self._live():
            return  # an answer to a server gone meanwhile (it failed its asks): nobody to tell
        self._out(data, queued)

    def _live(self) -> bool:
        transport, session = self.transport, self.session
        return (transport is not None and not transport.is_disconnected
                and (session is None or not session.away))

    def _out(self, data: bytes, queued: bool) -> None:
        """Write ``data``; while a session is away, what may be ``queued`` (the app's
        sends) waits for the resume, behind what waits already; requests that expect an
        answer (joins, leaves, asks) are refused: their answer could be lost."""
        session = self.session
        if session is not None and (session.away or (queued and session.queue)):
            if not queued:
                raise ConnectionError("the connection is away, resuming its session")
            session.hold(data)
            return
        transport = self.transport
        if transport is None or transport.is_disconnected:
            raise ConnectionError("not connected")
        if not (self.coalesce and self.batch):
            transport.send(WSMsgType.BINARY, data)
            return
        if self._held and (len(self._held) == codec.BATCH_MAX
                           or self._held_bytes + len(data) > BATCH_BYTES):
            self._write_held()  # a new list: append to self._held, not a name for the old
        self._held.append((data, queued))
        self._held_bytes += len(data)
        if self._held_bytes > BATCH_BYTES:
            self._write_held()  # larger than any batch: alone, at once
        elif not self._held_due:
            self._held_due = True
            self.loop.call_soon(self._turn_ended)

    def _turn_ended(self) -> None:
        self._held_due = False
        self._write_held()

    def _write_held(self) -> None:
        """Write what is held: one message as it is, several as one batch frame."""
        transport = self.transport
        if not self._held or transport is None or transport.is_disconnected:
            return  # a socket gone: on_ws_disconnected decided (queued, or dropped)
        held, self._held = self._held, []
        self._held_bytes = 0
        if len(held) == 1:
            transport.send(WSMsgType.BINARY, held[0][0])
        else:
            transport.send(WSMsgType.BINARY, codec.encode_batch([data for data, _ in held]))

    def send(self, namespace: str, room: str, event: str, payload: Payload,
             dst: str) -> None:
        if self.v2:
            self._write_v2(EVENT, 0, namespace, room, event, dst, payload, queued=True)
        else:
            self._write(room, event, payload, dst, queued=True)

    def join(self, name: str, space: _Space | None = None,
             options: Mapping[str, Any] | None = None) -> Room:
        space = self.default if space is None else space
        body = b"" if options is None else json.dumps(dict(options)).encode()
        room = space.rooms.get(name)
        if room is None:
            room = space.rooms[name] = Room(self, name, space)
        if not self.v2:
            try:
                self._write(name, "join", body)
            except BaseException:
                if space.rooms.get(name) is room and not room._open:
                    del space.rooms[name]
                raise
            if not room._joined.done():
                self.v1_joins.append(room)
            return room

        def apply(payload: bytes | None, error: Exception | None) -> None:
            if error is None:
                assert payload is not None
                room._opened(payload)
                return
            if room._open:
                return  # a re-join refused: the room stays as it was
            if space.rooms.get(name) is room:
                del space.rooms[name]
            if not room._joined.done():
                room._joined.set_exception(error)
            if isinstance(error, ClientError):
                room._emit("error", {"code": error.code, "message": error.server_message,
                                     "event": "join"})

        try:
            self.start_ask(space.name, name, "join", body, self.timeout, apply)
        except BaseException:
            if space.rooms.get(name) is room and not room._open:
                del space.rooms[name]
            raise
        return room

    def find_room(self, event: str, type: str, space: _Space,
                  options: Mapping[str, Any] | None) -> Room:
        """A create or join-or-create (docs/protocol.md §10): the Room at once, put under
        its id when the answer comes (before any message of the room is dispatched)."""
        if not self.v2:
            raise RuntimeError("game rooms are found with asks: roomer.connect(url, "
                               "protocol='v2')")
        if not isinstance(type, str) or not type:
            raise TypeError("a room type is a non-empty str")
        room = Room(self, type, space)
        body = json.dumps(dict(options or {})).encode()

        def apply(payload: bytes | None, error: Exception | None) -> None:
            if error is not None:
                if not room._joined.done():
                    room._joined.set_exception(error)
                return
            assert payload is not None
            answer = json.loads(payload)
            room.name = answer["room"]
            space.rooms[room.name] = room
            room._opened(list(answer["members"]))

        self.start_ask(space.name, type, event, body, self.timeout, apply)
        return room

    def watch(self, type: str, space: _Space, wanted: Mapping[str, Any] | None
              ) -> RoomWatch:
        if not self.v2:
            raise RuntimeError("room lists are watched with asks: protocol='v2'")
        watch = RoomWatch(self, space, type)
        space.watches[type] = watch

        def apply(payload: bytes | None, error: Exception | None) -> None:
            if error is not None:
                if space.watches.get(type) is watch:
                    del space.watches[type]
                if not watch._ready.done():
                    watch._ready.set_exception(error)
                return
            assert payload is not None
            watch.rooms = {entry["id"]: entry for entry in json.loads(payload)["rooms"]}
            if not watch._ready.done():
                watch._ready.set_result(watch)

        self.start_ask(space.name, type, "rooms.watch",
                       json.dumps(dict(wanted or {})).encode(), self.timeout, apply)
        return watch

    def leave(self, room: Room) -> asyncio.Future[None]:
        if not self.v2:
            self._write(room.name, "leave")
            if room._left is None or room._left.done():
                room._left = self.loop.create_future()
            return room._left
        if room._left is None or room._left.done():
            room._left = self.loop.create_future()
        left = room._left

        def apply(payload: bytes | None, error: Exception | None) -> None:
            if error is None:
                self._closed_room(room, ConnectionError("left"))
                return
            if not left.done():
                left.set_exception(error)
            if isinstance(error, ClientError):
                room._emit("error", {"code": error.code, "message": error.server_message,
                                     "event": "leave"})

        self.start_ask(room._space.name, room.name, "leave", b"", self.timeout, apply)
        return left

    async def close(self) -> None:
        self.closing = True
        transport = self.transport
        if transport is not None and not transport.is_disconnected:
            self._write_held()
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
        else:
            self._torn_down()  # away between attempts: nothing to close but the rooms
        await self.closed


def _with_subprotocol(headers: Mapping[str, str] | Iterable[tuple[str, str]] | None,
                      subprotocol: str) -> list[tuple[str, str]]:
    items = list(headers.items() if isinstance(headers, Mapping) else headers or ())
    return [*items, ("Sec-WebSocket-Protocol", subprotocol)]


async def connect(url: str, *, protocol: str = "v1", timeout: float = 10.0,
                  resume: bool = False, coalesce: bool = False,
                  **picows_options: Any) -> Room:
    """Connect and return the root room once the server told this client its id.

    ``protocol``: ``"v1"`` (the default: the original roomer protocol, no subprotocol
    offered) or ``"v2"`` (offers ``roomer.v2.batch`` and ``roomer.v2``: namespaces and
    asks, and the server may send several messages in one batch frame; a server that
    names neither in its 101 answer raises roomer.ClientError ``unsupported_protocol``).
    ``timeout`` bounds the connection and, with v2, each join, leave and namespace
    connect. ``picows_options`` go to ``picows.ws_connect`` (e.g. ``extra_headers``).

    ``resume=True`` asks for a resumable session (docs/protocol.md §11; ``session=new``
    is added to the URL's query). When the connection drops (a reset, a lost network, a
    close by the server other than 1000, 1001, 1008 and 4000-4999) the client connects
    again by itself, with backoff, for the session's window (the server's
    ``resume_window``, from the drop), and the server gives back the same id and rooms
    and every message missed, once each and in order. Meanwhile rooms stay open, what
    waited for an answer (asks, joins, leaves) fails with ConnectionError, and what
    ``send`` sends waits in a queue (at most 1000 messages or 1 MiB: past it ``send``
    raises ConnectionError) written once resumed. Root tells the app with local events:
    ``dropped`` (no arguments), ``resumed`` (the id), ``lost`` (the server's code: the
    session could not be resumed, a new one began with a new id and only root; the
    other rooms closed and the queue was dropped). If the window passes first, the
    connection closes as without a session. Rooms see ``member_dropped`` and
    ``member_back`` (v2, the member's id) of other members' sessions.

    ``coalesce=True`` (v2 only: ValueError with v1) writes what the client writes in one
    turn of the event loop (sends, asks, joins, replies, in order) as one batch frame
    when the turn ends, at most 256 messages and 64 KiB of them per batch (a larger
    message goes alone): a bot that sends several messages at once costs the server one
    frame to read, not several. It adds no timer, only the rest of the turn. Against a
    server without batch frames each message goes alone, as without it. What is held when
    the connection drops was never written: with ``resume``, the sends among it wait in
    the queue like sends made while away.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, not {protocol!r}")
    if coalesce and protocol != "v2":
        raise ValueError("coalesce=True needs protocol='v2': batch frames are part of v2")
    subprotocol = PROTOCOLS[protocol]
    loop = asyncio.get_running_loop()
    client = _Client(loop, subprotocol is not None, timeout, resume, coalesce)
    picows_options.setdefault("enable_auto_ping", False)
    if subprotocol is not None:
        picows_options["extra_headers"] = _with_subprotocol(
            picows_options.get("extra_headers"), subprotocol)
    client.url, client.connect_options = url, picows_options
    if resume:
        url = _session_url(url)
    await asyncio.wait_for(ws_connect(lambda: client, url, **picows_options), timeout)
    try:
        return await asyncio.wait_for(client.root, timeout)
    except BaseException:
        await client.close()
        raise
