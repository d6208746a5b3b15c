"""Game rooms across the cluster (docs/design.md §10): what crosses the broker between a
room's owner and the nodes its members are connected to, the cluster's room list, and
the atomic claim of a room id chosen by the app. Sans-server, like `.cluster`: the
game rooms of the server (roomer/games) call a `GameLink`, and it calls them back
through `GamesSide` for what arrives. All calls run on the event loop's thread.

Channels (beside the cluster's own, `.names`):

=======================================  =============================================
``<prefix>.games.node.<node key>``       requests to a node about the rooms it owns,
                                         and what an owner sends a member's node;
                                         subscribed by that node only
``<prefix>.games.list``                  every owner's listings; every node subscribes
=======================================  =============================================

Every message is ``kind (1 byte) | n (1 byte) | origin key (n bytes) | body``:

====  =======================  =========================================================
kind  name                     body (JSON unless said)
====  =======================  =========================================================
J     join request             ``{"r": id, "ns", "room", "c": client, "claims", "o": options}``
A     answer                   ``{"r": id, "ok": bool, "code", "msg"}`` (to a J or a V)
C     confirm                  ``{"ns", "room", "c"}``: the client is in, on_joined runs
K     abort                    ``{"ns", "room", "c"}``: the client never came in
L     left                     ``{"ns", "room", "c", "y": consented}``
M     message                  fields (u32 length each): ns, room, client, event, ask
                               (4 bytes), payload: a member's message to the room
R     answer to a member       fields: ns, room, client, event, ask, code ("" for a
                               reply), payload (the reply, or the error's text)
S     send                     fields: ns, room, client, event, payload (player.send)
O     remove                   ``{"ns", "room", "c"}``: the room takes the client out
X     closed                   ``{"ns", "room", "code", "msg", "ids"?}``: the room ended
                               for the node's members (``ids``: only those)
V     reservation              ``{"r": id, "ns", "room", "ids", "s": seconds}``
P     dropped                  ``{"ns", "room", "c"}``: the client's connection dropped,
                               its session is held: what does ``on_drop`` say?
H     hold                     ``{"ns", "room", "c", "w": seconds}``: on_drop's answer
W     freeze                   ``{"r": id, "ns", "room", "c"}``: hold back what the room
                               sends the client, whose session moves (answered by A)
G     moved                    ``{"ns", "room", "c", "to"}``: the client is on node
                               ``to`` now ("": its move failed); send what was held back
Y     sync                     ``{"rooms": [[ns, room, [ids]], ...]}``: the sender's
                               members in rooms the receiver owns (after an outage)
U     listings                 ``[[ns, id, type, clients, max, locked, private, unlisted,
                               metadata, reserved, created], ...]``
D     removed                  ``[[ns, id], ...]``
F/f   full list                as U; ``f`` parts then an ``F``: every room of the
                               sender, replacing what was known of it
Q     full list request        empty: answered with the sender's F on the asker's node
                               channel
====  =======================  =========================================================

What the order rests on: one publisher connection per node and one channel per
direction, so a node's join, confirm, messages and leave reach the owner in the order it
sent them, and the owner's answers, sends, removals and closes reach the member's node
in its order. A room's broadcasts take the room's channel (the cluster's), so a
broadcast and a ``player.send`` to one member keep no order between them.

Owner death: the cluster's liveness (``node_lost``) ends the rooms of the dead node for
the members here and removes the dead node's players from the rooms owned here. An
outage or a pause heals with ``Y`` (each node tells the owners what it holds) and ``Q``
(each node asks for everyone's full list again).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import struct
import time
from typing import Any, Protocol

from ..games.room import SeatRefused
from .cluster import Cluster
from .names import encode_token

__all__ = ["GameLink", "GamesSide"]

log = logging.getLogger("roomer.backplane")

#: Seconds a node waits for an owner's answer to a join or a reservation.
REQUEST_TIMEOUT = 5.0
#: Seconds a join by id waits for a room this node has not heard of yet.
LOOKUP_WAIT = 1.0
#: An owner publishes its listings at most this often (a change after a quiet spell at
#: once).
LIST_GAP = 0.1
#: Largest listing message (NATS' default max_payload is 1 MiB).
LIST_CHUNK = 60_000

_U32 = struct.Struct(">I")


def _fields(*parts: bytes) -> bytes:
    return b"".join(_U32.pack(len(part)) + part for part in parts)


def _unfields(data: bytes, pos: int, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        (size,) = _U32.unpack_from(data, pos)
        pos += 4
        out.append(data[pos:pos + size])
        pos += size
    return out


class GamesSide(Protocol):
    """What the game rooms of the server do with what other nodes send (roomer/games)."""

    def remote_join(self, origin: str, namespace: str, room: str, client: str, claims: Any,
                    options: dict[str, Any]) -> Any: ...

    def remote_confirm(self, origin: str, namespace: str, room: str, client: str,
                       abort: bool) -> None: ...

    def remote_left(self, origin: str, namespace: str, room: str, client: str,
                    consented: bool) -> None: ...

    def remote_message(self, origin: str, namespace: str, room: str, client: str,
                       event: str, ask: int, payload: bytes) -> None: ...

    def remote_answer(self, namespace: str, room: str, client: str, event: str, ask: int,
                      code: str | None, payload: bytes) -> None: ...

    def remote_send(self, namespace: str, room: str, client: str, event: str,
                    payload: bytes) -> None: ...

    def remote_remove(self, namespace: str, room: str, client: str) -> None: ...

    def remote_closed(self, namespace: str, room: str, code: str, message: str,
                      ids: list[str] | None) -> None: ...

    def remote_reserve(self, namespace: str, room: str, ids: list[str],
                       seconds: float | None) -> bool: ...

    def remote_sync(self, origin: str, rooms: list[tuple[str, str, list[str]]]) -> None: ...

    def remote_freeze(self, namespace: str, room: str, client: str) -> bool: ...

    def remote_dropped(self, origin: str, namespace: str, room: str, client: str) -> None: ...

    def remote_window(self, namespace: str, room: str, client: str, seconds: float
                      ) -> None: ...

    def remote_moved(self, namespace: str, room: str, client: str, to: str | None) -> None: ...

    def listings(self, origin: str, entries: list[list[Any]], full: bool) -> None: ...

    def unlisted(self, origin: str, keys: list[tuple[str, str]]) -> None: ...

    def own_listings(self, keys: list[tuple[str, str]] | None) -> tuple[list[list[Any]],
                                                                          list[list[str]]]: ...

    def held_in(self, owner: str) -> list[tuple[str, str, list[str]]]: ...

    def node_lost(self, key: str) -> None: ...

    def restarted(self) -> None: ...


class GameLink:
    """The game rooms' side of one node of a cluster (see the module docstring)."""

    lookup_wait = LOOKUP_WAIT

    def __init__(self, cluster: Cluster, side: GamesSide) -> None:
        self.cluster = cluster
        self.transport = cluster.transport
        self.side = side
        prefix = cluster.names.prefix
        self._prefix = prefix
        self.list_channel = f"{prefix}.games.list"
        self._node_channel = ""
        self._ids = itertools.count(1)
        self._requests: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self._dirty: dict[tuple[str, str], None] = {}
        self._listed_at = -math.inf
        self._list_timer: asyncio.TimerHandle | None = None
        self._partial: dict[str, list[list[Any]]] = {}
        self._started_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hdr: dict[int, bytes] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to the list channel and this node's channel, ask every node for its
        full list, and follow node liveness."""
        self._loop = asyncio.get_running_loop()
        self._started_at = time.monotonic()
        self._set_identity()
        transport = self.transport
        confirmed = [transport.subscribe(self.list_channel, self._on_list),
                     transport.subscribe(self._node_channel, self._on_node)]
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.gather(*confirmed), transport.timeout)
        self.cluster.watch(self)
        transport.publish(self.list_channel, self._hdr[ord("Q")], control=True)

    def _set_identity(self) -> None:
        key = self.cluster.key
        self._node_channel = self.channel_of(key)
        raw = key.encode()
        self._hdr = {kind: bytes((kind, len(raw))) + raw
                     for kind in b"JACKLMRSOXVYUDFfQWGPH"}

    def channel_of(self, key: str) -> str:
        return f"{self._prefix}.games.node.{encode_token(key)}"

    @property
    def node(self) -> str:
        """This node's key (what players' ``node`` and listings' owners name)."""
        return self.cluster.key

    @property
    def node_id(self) -> str:
        return self.cluster.node_id

    def alive(self, key: str) -> bool:
        return self.cluster.alive(key)

    async def flush(self, timeout: float) -> None:
        """Send what waits (listings) and wait for the broker, at most ``timeout``."""
        self._publish_listings()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.transport.flush(), max(0.01, timeout))

    # -- requests to an owner ------------------------------------------------------------------

    def _send(self, key: str, kind: int, body: bytes, control: bool = True) -> None:
        self.transport.publish(self.channel_of(key), self._hdr[kind] + body, control=control)

    def _json(self, key: str, kind: int, value: Any) -> None:
        self._send(key, kind, json.dumps(value).encode())

    async def _request(self, owner: str, kind: int, value: dict[str, Any]) -> Any:
        if not self.alive(owner) or not self.transport.connected:
            raise SeatRefused("room_unavailable", "the room's server cannot be reached")
        assert self._loop is not None
        request = next(self._ids)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._requests[request] = (owner, future)
        value["r"] = request
        self._json(owner, kind, value)
        try:
            return await asyncio.wait_for(future, REQUEST_TIMEOUT)
        except TimeoutError:
            raise SeatRefused("room_unavailable", "the room's server did not answer in "
                              f"{REQUEST_TIMEOUT:g} s") from None
        finally:
            self._requests.pop(request, None)

    async def request_join(self, owner: str, namespace: str, room: str, client: str,
                           claims: Any, options: dict[str, Any]) -> None:
        """Ask the owner for a seat; SeatRefused with its code otherwise."""
        answer = await self._request(owner, ord("J"), {
            "ns": namespace, "room": room, "c": client, "claims": claims, "o": options})
        if not answer.get("ok"):
            raise SeatRefused(str(answer.get("code", "room_unavailable")),
                              str(answer.get("msg", "")))

    async def request_reserve(self, owner: str, namespace: str, room: str, ids: list[str],
                              seconds: float | None) -> bool:
        try:
            answer = await self._request(owner, ord("V"), {
                "ns": namespace, "room": room, "ids": ids, "s": seconds})
        except SeatRefused:
            return False
        return bool(answer.get("ok"))

    async def request_freeze(self, owner: str, namespace: str, room: str,
                             client: str) -> bool:
        """Ask the owner to hold back what it sends ``client``, whose session moves to
        this node (roomer/games/seat_moves.py); False if it did not answer."""
        try:
            answer = await self._request(owner, ord("W"), {
                "ns": namespace, "room": room, "c": client})
        except SeatRefused:
            return False
        return bool(answer.get("ok"))

    def moved(self, owner: str, namespace: str, room: str, client: str, to: str) -> None:
        """``client``'s move ended: it is on node ``to`` now ("": it did not move)."""
        self._json(owner, ord("G"), {"ns": namespace, "room": room, "c": client, "to": to})

    def dropped(self, owner: str, namespace: str, room: str, client: str) -> None:
        """``client``'s connection dropped (its session is held here): what does the
        room's ``on_drop`` say?"""
        self._json(owner, ord("P"), {"ns": namespace, "room": room, "c": client})

    def window(self, node: str, namespace: str, room: str, client: str,
               seconds: float) -> None:
        """The room's ``on_drop`` answer for ``client``: hold it ``seconds``."""
        self._json(node, ord("H"), {"ns": namespace, "room": room, "c": client,
                                    "w": seconds})

    def confirm(self, owner: str, namespace: str, room: str, client: str) -> None:
        self._json(owner, ord("C"), {"ns": namespace, "room": room, "c": client})

    def abort(self, owner: str, namespace: str, room: str, client: str) -> None:
        self._json(owner, ord("K"), {"ns": namespace, "room": room, "c": client})

    def left(self, owner: str, namespace: str, room: str, client: str,
             consented: bool) -> None:
        self._json(owner, ord("L"), {"ns": namespace, "room": room, "c": client,
                                     "y": consented})

    def message(self, owner: str, namespace: str, room: str, client: str, event: str,
                ask: int, payload: bytes) -> None:
        # A member's input: a data message (dropped, counted, when the broker lags).
        self._send(owner, ord("M"), _fields(namespace.encode(), room.encode(),
                                            client.encode(), event.encode(),
                                            _U32.pack(ask), payload), control=bool(ask))

    # -- what an owner sends a member's node ------------------------------------------------

    def answer(self, node: str, namespace: str, room: str, client: str, event: str,
               ask: int, code: str | None, payload: bytes | str) -> None:
        raw = payload.encode() if isinstance(payload, str) else bytes(payload)
        self._send(node, ord("R"), _fields(namespace.encode(), room.encode(),
                                           client.encode(), event.encode(), _U32.pack(ask),
                                           (code or "").encode(), raw))

    def send(self, node: str, namespace: str, room: str, client: str, event: str,
             payload: bytes) -> None:
        self._send(node, ord("S"), _fields(namespace.encode(), room.encode(),
                                           client.encode(), event.encode(), payload),
                   control=False)

    def remove(self, node: str, namespace: str, room: str, client: str) -> None:
        self._json(node, ord("O"), {"ns": namespace, "room": room, "c": client})

    def closed(self, node: str, namespace: str, room: str, code: str, message: str,
               ids: list[str] | None = None) -> None:
        value: dict[str, Any] = {"ns": namespace, "room": room, "code": code, "msg": message}
        if ids is not None:
            value["ids"] = ids
        self._json(node, ord("X"), value)

    # -- claims ------------------------------------------------------------------------------

    def _claim_key(self, namespace: str, room: str) -> str:
        return f"{self._prefix}.games.claim.{encode_token(namespace + chr(0) + room)}"

    async def claim(self, namespace: str, room: str) -> bool:
        """Claim a chosen room id for this node, atomically across the cluster. A claim
        held by a node that is gone is taken over, once this node has been up long enough
        to know every live node. Raises SeatRefused ``room_unavailable`` when the broker
        cannot answer."""
        key = self._claim_key(namespace, room)
        me = self.node
        try:
            held = await self.transport.claim(key, me)
            for _ in range(3):
                if held is None or held == me:
                    return True
                if held == "":  # released meanwhile: try again
                    held = await self.transport.claim(key, me)
                    continue
                settled = time.monotonic() - self._started_at > (
                    self.cluster.node_timeout + self.cluster.heartbeat_interval)
                if self.alive(held) or not settled:
                    return False
                held = await self.transport.claim(key, me, replace=held)
        except ConnectionError as exc:
            raise SeatRefused("room_unavailable", f"the id cannot be claimed now: {exc}"
                              ) from None
        return held is None

    def release(self, namespace: str, room: str) -> None:
        assert self._loop is not None
        task = self._loop.create_task(self.transport.release(
            self._claim_key(namespace, room), self.node))
        task.add_done_callback(_ignore)

    # -- listings ----------------------------------------------------------------------------

    def changed(self, key: tuple[str, str]) -> None:
        """A room owned here changed its listing (or ended): published at most every
        LIST_GAP, a first change after a quiet spell at once (next loop turn)."""
        self._dirty[key] = None
        if self._list_timer is not None:
            return
        assert self._loop is not None
        wait = max(0.0, self._listed_at + LIST_GAP - self._loop.time())
        self._list_timer = self._loop.call_later(wait, self._publish_listings)

    def _publish_listings(self) -> None:
        if self._list_timer is not None:
            self._list_timer.cancel()
            self._list_timer = None
        if not self._dirty:
            return
        assert self._loop is not None
        self._listed_at = self._loop.time()
        keys, self._dirty = list(self._dirty), {}
        entries, gone = self.side.own_listings(keys)
        for chunk in _chunks(entries):
            self.transport.publish(self.list_channel, self._hdr[ord("U")] + chunk,
                                   control=True)
        for chunk in _chunks(gone):
            self.transport.publish(self.list_channel, self._hdr[ord("D")] + chunk,
                                   control=True)

    def _full_list(self, channel: str) -> None:
        entries, _ = self.side.own_listings(None)
        chunks = _chunks(entries) or [b"[]"]
        for chunk in chunks[:-1]:
            self.transport.publish(channel, self._hdr[ord("f")] + chunk, control=True)
        self.transport.publish(channel, self._hdr[ord("F")] + chunks[-1], control=True)

    # -- receiving ---------------------------------------------------------------------------

    def _origin(self, data: bytes) -> tuple[int, str, int]:
        n = data[1]
        return data[0], data[2:2 + n].decode(), 2 + n

    def _on_list(self, data: bytes) -> None:
        kind, origin, body = self._origin(data)
        if origin == self.node:
            return
        if kind == ord("Q"):
            self._full_list(self.channel_of(origin))
        else:
            self._listing(kind, origin, data[body:])

    def _listing(self, kind: int, origin: str, body: bytes) -> None:
        if not self.alive(origin):
            return  # a late word of a node declared dead, or not heard yet
        value = json.loads(body)
        if kind == ord("U"):
            self.side.listings(origin, value, False)
        elif kind == ord("D"):
            self.side.unlisted(origin, [(ns, room) for ns, room in value])
        elif kind == ord("f"):
            self._partial.setdefault(origin, []).extend(value)
        elif kind == ord("F"):
            self.side.listings(origin, self._partial.pop(origin, []) + value, True)

    def _on_node(self, data: bytes) -> None:
        kind, origin, body = self._origin(data)
        try:
            self._dispatch(kind, origin, data, body)
        except (ValueError, KeyError, struct.error) as exc:
            log.warning("backplane: a malformed game message (%r) from %s: %s",
                        chr(kind), origin, exc)

    def _dispatch(self, kind: int, origin: str, data: bytes, body: int) -> None:
        side = self.side
        if kind == ord("M"):
            ns, room, client, event, ask, payload = _unfields(data, body, 6)
            side.remote_message(origin, ns.decode(), room.decode(), client.decode(),
                                event.decode(), _U32.unpack(ask)[0], payload)
            return
        if kind == ord("R"):
            ns, room, client, event, ask, code, payload = _unfields(data, body, 7)
            side.remote_answer(ns.decode(), room.decode(), client.decode(), event.decode(),
                               _U32.unpack(ask)[0], code.decode() or None, payload)
            return
        if kind == ord("S"):
            ns, room, client, event, payload = _unfields(data, body, 5)
            side.remote_send(ns.decode(), room.decode(), client.decode(), event.decode(),
                             payload)
            return
        if kind in (ord("U"), ord("D"), ord("f"), ord("F")):
            self._listing(kind, origin, data[body:])
            return
        value = json.loads(data[body:]) if len(data) > body else {}
        if kind == ord("J"):
            self._join_asked(origin, value)
        elif kind == ord("A"):
            waiting = self._requests.get(value["r"])
            if waiting is not None and waiting[0] == origin and not waiting[1].done():
                waiting[1].set_result(value)
        elif kind in (ord("C"), ord("K")):
            side.remote_confirm(origin, value["ns"], value["room"], value["c"],
                                kind == ord("K"))
        elif kind == ord("L"):
            side.remote_left(origin, value["ns"], value["room"], value["c"],
                             bool(value.get("y")))
        elif kind == ord("O"):
            side.remote_remove(value["ns"], value["room"], value["c"])
        elif kind == ord("X"):
            side.remote_closed(value["ns"], value["room"], value["code"], value["msg"],
                               value.get("ids"))
        elif kind == ord("V"):
            ok = side.remote_reserve(value["ns"], value["room"], list(value["ids"]),
                                     value.get("s"))
            self._json(origin, ord("A"), {"r": value["r"], "ok": ok})
        elif kind == ord("Y"):
            side.remote_sync(origin, [(ns, room, ids) for ns, room, ids in value["rooms"]])
        elif kind == ord("P"):
            side.remote_dropped(origin, value["ns"], value["room"], value["c"])
        elif kind == ord("H"):
            side.remote_window(value["ns"], value["room"], value["c"], float(value["w"]))
        elif kind == ord("W"):
            ok = side.remote_freeze(value["ns"], value["room"], value["c"])
            self._json(origin, ord("A"), {"r": value["r"], "ok": ok})
        elif kind == ord("G"):
            side.remote_moved(value["ns"], value["room"], value["c"], value["to"] or None)
        elif kind == ord("Q"):
            self._full_list(self.channel_of(origin))

    def _join_asked(self, origin: str, value: dict[str, Any]) -> None:
        request = value["r"]
        pending = self.side.remote_join(origin, value["ns"], value["room"], value["c"],
                                        value.get("claims"), dict(value.get("o") or {}))
        assert self._loop is not None
        task = self._loop.create_task(self._answer_join(origin, request, pending))
        task.add_done_callback(_ignore)

    async def _answer_join(self, origin: str, request: int, pending: Any) -> None:
        try:
            await pending
        except SeatRefused as refused:
            self._json(origin, ord("A"), {"r": request, "ok": False, "code": refused.code,
                                          "msg": str(refused)})
            return
        self._json(origin, ord("A"), {"r": request, "ok": True})

    # -- nodes (Cluster.watch) ----------------------------------------------------------------

    def node_found(self, key: str) -> None:
        """A node new to us, or back: its full list, and what we hold in its rooms."""
        self._send(key, ord("Q"), b"")
        self._sync(key)

    def node_lost(self, key: str) -> None:
        self._partial.pop(key, None)
        for owner, future in list(self._requests.values()):
            if owner == key and not future.done():
                future.set_exception(SeatRefused("room_unavailable",
                                                 "the room's server is gone"))
        self.side.node_lost(key)

    def reconnected(self) -> None:
        """The broker is back: what was published meanwhile was dropped. Our full list
        goes out, everyone's is asked for, and each owner is told what we hold."""
        self._dirty.clear()
        self._full_list(self.list_channel)
        self.transport.publish(self.list_channel, self._hdr[ord("Q")], control=True)
        for key in self.cluster.node_keys():
            self._sync(key)

    def restarted(self) -> None:
        """This node was declared dead and starts over under a new key: the others
        forgot its rooms and its members in theirs."""
        self.transport.unsubscribe(self._node_channel)
        self._set_identity()
        self.transport.subscribe(self._node_channel, self._on_node)
        self.side.restarted()
        self.transport.publish(self.list_channel, self._hdr[ord("Q")], control=True)

    def _sync(self, key: str) -> None:
        # Sent empty too: "nobody of mine is in your rooms" is what a node back from an
        # outage needs to hear to let the players it still counts from us go.
        self._json(key, ord("Y"), {"rooms": self.side.held_in(key)})


def _chunks(items: list[Any]) -> list[bytes]:
    """JSON arrays of ``items`` of at most about LIST_CHUNK bytes each."""
    out: list[bytes] = []
    part: list[bytes] = []
    size = 0
    for item in items:
        raw = json.dumps(item).encode()
        if part and size + len(raw) > LIST_CHUNK:
            out.append(b"[" + b",".join(part) + b"]")
            part, size = [], 0
        part.append(raw)
        size += len(raw) + 1
    if part:
        out.append(b"[" + b",".join(part) + b"]")
    return out


def _ignore(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("backplane: a game room task failed", exc_info=task.exception())
