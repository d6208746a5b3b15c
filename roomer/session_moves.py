"""Sessions moving between nodes (docs/protocol.md §11, docs/design.md §11): a client
whose reconnect lands on another node than the one holding its session takes it over
through the backplane, and gets every message it missed once, in order. No socket I/O.

The claiming node B and the holding node A talk over the broker:

1. B checks the token (the nodes share ``resume_secret``), starts keeping what reaches
   it for the member on the member's own channel and on "all" (a `Capture`), and sends a
   claim on the member's channel, which only A subscribes to.
2. A checks the claim as it checks a resume of its own (token, count, protocol version,
   claims) and offers the session's rooms. It goes on holding the session meanwhile.
3. B follows those rooms too; once the broker confirmed each subscription, it says it is
   ready. From then on every frame for the member reaches B as well as A.
4. A cuts, in one loop turn: the bytes the client has not received (its kept replay past
   the client's count, then its outbox), and for each of the member's channels and each
   origin the seq of the last frame it delivered. It sends both to B and forgets the
   member without a word (until it hears B say so, it lists the member on B).
5. B, in one loop turn: takes the member into its rooms, announced as here (every node
   then lists it on B, and v2 members see ``member_back``), and writes the verdict, A's
   bytes, the frames it kept that are newer than A's cut, then live traffic.

Why nothing is lost or doubled: each origin's frames on one channel arrive at every node
in the origin's order, so A delivered a prefix of them (up to its cut) and B kept a
suffix that starts before the cut (B subscribed before it said ready, and what was
published before that reached A before B's ready did). What that rests on: one broker
that delivers in the order it handles messages (one Redis; one NATS server in practice).

A game seat moves with its session: roomer/games/seat_moves.py has the room owner's
part. Not carried: the joins and leaves of others that cross the broker during the hop
of the cut (the next member list is right).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from . import frames
from .backplane import envelope as env
from .connection import NamespaceConnection

if TYPE_CHECKING:
    from .backplane.cluster import Capture, Cluster
    from .connection import Connection
    from .core import Core
    from .sessions import Sessions

__all__ = ["MOVE_TIMEOUT", "Moves"]

log = logging.getLogger("roomer.sessions")

#: Seconds each step of a move may take (the client waits for its verdict meanwhile).
MOVE_TIMEOUT = 5.0


class _Claim:
    """A session this node claims from its holder."""

    __slots__ = ("capture", "conn", "member", "moved", "origin", "seats", "verdict")

    def __init__(self, conn: Connection, member: str, capture: Capture,
                 verdict: asyncio.Future[bytes | None]) -> None:
        self.conn = conn
        self.member = member
        self.capture = capture
        self.verdict = verdict
        self.origin = ""
        self.seats: list[list[str]] = []
        self.moved = False


class Moves:
    """A server's sessions moving in and out through its cluster. Loop thread only."""

    def __init__(self, sessions: Sessions, core: Core) -> None:
        self._sessions = sessions
        self._core = core
        # Answers this node waits for, by (member, kind): (origin, body).
        self._waiting: dict[tuple[str, int], asyncio.Future[tuple[str, bytes]]] = {}
        # Claims that said ready, by member: their handover is taken in as it arrives.
        self._claims: dict[str, _Claim] = {}

    @property
    def _cluster(self) -> Cluster | None:
        return self._core.default.registry.cluster

    def attach(self, cluster: Cluster) -> None:
        cluster.on_session = self._message

    def elsewhere(self, token: str, received: str) -> tuple[str, bytes, int] | None:
        """A resume's token that this cluster signed, for a session not held here: the
        session's id, nonce and the client's count, to claim it from its node."""
        parsed = self._sessions._parse(token)
        if parsed is None or self._cluster is None or not received.isdigit() \
                or len(received) > 20:
            return None
        return parsed[0], parsed[1], int(received)

    def _message(self, origin: str, kind: int, body: bytes) -> bool:
        try:
            if kind == env.CLAIM:
                return self._claimed(origin, body)
            if kind == env.READY:
                self._ready(origin, json.loads(body)["id"])
                return True
            if kind == env.OFFER:
                member = json.loads(body)["id"]
            else:
                member = json.loads(body[4:4 + int.from_bytes(body[:4], "big")])["id"]
        except (ValueError, KeyError, TypeError):
            log.warning("a malformed session move message from node %s", origin)
            return False
        if kind == env.HANDOVER:
            claim = self._claims.pop(member, None)
            if claim is None or claim.origin != origin or claim.verdict.done():
                log.warning("session %s was handed over after its claim here gave up",
                            member)
            else:
                self._handed_over(claim, body)
            return True
        waiting = self._waiting.pop((member, kind), None)
        if waiting is not None and not waiting.done():
            waiting.set_result((origin, body))
        return True

    # the holding node ----------------------------------------------------------------

    def _claimed(self, origin: str, body: bytes) -> bool:
        """Node ``origin`` claims a session: whether it is held (or connected) here."""
        ask = json.loads(body)
        member = ask["id"]
        conn = self._core.default.registry.conns.get(member)
        if conn is None or conn._session is None:
            return False
        why = self._sessions.check(conn, bytes.fromhex(ask["nonce"]), str(ask["received"]),
                                   bool(ask["v2"]), ask["claims"] != _claims(conn.claims))
        if not why and conn.transport is not None:
            conn.let_go()  # still connected here: its client came back elsewhere first
        session = conn._session
        if not why and (session is None or not session.held):
            why = "it could not be held"
        cluster = self._cluster
        assert cluster is not None
        if why:
            log.debug("a claim of a session from node %s was refused: %s", origin, why)
            cluster.tell_node(origin, env.OFFER, json.dumps(
                {"id": member, "ok": False}).encode())
            return True
        assert session is not None and self._core.loop is not None
        timer = self._core.loop.call_later(2 * MOVE_TIMEOUT, self._abandoned, conn)
        session.moving = (origin, int(ask["received"]), timer)
        cluster.tell_node(origin, env.OFFER, json.dumps(
            {"id": member, "ok": True, "rooms": _cluster_rooms(self._core, conn),
             "seats": self._core.games.seat_moves.seats(conn)}).encode())
        return True

    def _abandoned(self, conn: Connection) -> None:
        """The claimer never said it was ready: it told its client the session is lost."""
        session = conn._session
        if session is not None and session.moving is not None:
            session.moving = None
            self._core.metrics.counters["sessions_lost"] += 1
            self._sessions.end(conn)

    def _ready(self, origin: str, member: str) -> None:
        """The claimer follows the session's rooms: cut, hand over, forget."""
        conn = self._core.default.registry.conns.get(member)
        session = None if conn is None else conn._session
        moving = None if session is None else session.moving
        cluster = self._cluster
        assert cluster is not None
        if conn is None or session is None or moving is None or moving[0] != origin \
                or not session.held or conn.dropped != session.dropped:
            # Ended meanwhile (its window, the app), or a message it missed was dropped:
            # nothing to hand over.
            header = json.dumps({"id": member, "lost": True}).encode()
            cluster.tell_node(origin, env.HANDOVER, len(header).to_bytes(4, "big") + header)
            if conn is not None and session is not None and moving is not None \
                    and moving[0] == origin and session.held:
                self._core.metrics.counters["sessions_lost"] += 1
                self._sessions.end(conn)
            return
        moving[2].cancel()
        session.moving = None
        count = moving[1]
        keys = _cluster_rooms(self._core, conn)
        rooms = {ns.name: list(rooms) for ns in self._core.namespaces.values()
                 if (rooms := ns.registry.rooms_of(conn)) is not None}
        games = self._core.games
        seats = games.seat_moves.seats(conn)
        replay = conn.replay
        assert replay is not None
        pos, _ = conn.replay_count(count - session.base)
        header = json.dumps({"id": member, "count": count, "rooms": rooms, "seats": seats,
                             "data": _data(conn), "cut": cluster.cut(member, keys)}).encode()
        views = [(ns, ns.view(conn)) for ns in self._core.namespaces.values()
                 if ns.registry.rooms_of(conn) is not None]
        cluster.tell_node(origin, env.HANDOVER, b"".join(
            (len(header).to_bytes(4, "big"), header, replay[pos:], conn.queued())))
        # Gone from here without a word: the claimer says where it is now; its seats
        # in rooms owned here are on the claimer's node from now on.
        for ns in self._core.namespaces.values():
            if ns.registry.rooms_of(conn) is not None and games.active:
                games.forget(ns, conn)
            ns.registry.moved_out(conn)
        cluster.moved_out(member, keys, origin)
        games.seat_moves.moved_out(conn, seats, origin)
        conn._spaces = None
        self._sessions._release(conn, session)
        conn.replay = None
        conn.discard_outbox()
        self._core.metrics.counters["sessions_moved_out"] += 1
        for ns, view in views:
            self._core.after(ns.hooks.moved_out, view, what="on_moved_out")

    # the claiming node ---------------------------------------------------------------

    async def take_over(self, conn: Connection, member: str, nonce: bytes, count: int
                        ) -> bytes | None:
        """Claim ``member``'s session for ``conn`` (a new socket, not accepted yet): the
        verdict frame once ``conn`` is that session (what the client missed is queued
        after it), None if it cannot be (the client starts a new session)."""
        cluster = self._cluster
        assert cluster is not None and self._core.loop is not None
        config = self._core.config
        claim = _Claim(conn, member, cluster.capture(member, config.resume_replay
                                                     + config.outbox_limit),
                       self._core.loop.create_future())
        seat_moves = self._core.games.seat_moves
        try:
            offered = self._expect(member, env.OFFER)
            asked = json.dumps({"id": member, "nonce": nonce.hex(), "received": count,
                                "v2": conn.v2, "claims": _claims(conn.claims)}).encode()
            held = cluster.claim(member, asked)
            if not await _settled([held]) or not held.result():
                return _failed("no node holds it")
            claim.origin, body = await asyncio.wait_for(offered, MOVE_TIMEOUT)
            offer = json.loads(body)
            if not offer["ok"]:
                return _failed("its node refused the claim")
            claim.seats = offer["seats"]
            if claim.seats and not await seat_moves.hold(claim.seats, claim.origin, member):
                return _failed("the owner of a game room it is in did not answer")
            cluster.capture_rooms(claim.capture, offer["rooms"])
            if not await _settled(claim.capture.waits):
                return _failed("the broker did not confirm its subscriptions")
            self._claims[member] = claim
            cluster.tell_node(claim.origin, env.READY, json.dumps({"id": member}).encode())
            return await asyncio.wait_for(asyncio.shield(claim.verdict), MOVE_TIMEOUT)
        except (TimeoutError, ConnectionError):
            return _failed(f"no answer in {MOVE_TIMEOUT:g} s")
        finally:
            waiting = self._waiting.pop((member, env.OFFER), None)
            if waiting is not None:
                waiting.cancel()
            if self._claims.get(member) is claim:
                del self._claims[member]
            if not claim.verdict.done():
                claim.verdict.cancel()  # a handover after this is too late
            cluster.capture_end(claim.capture, moved_in=claim.moved)
            if claim.seats:
                seat_moves.release(claim.seats, claim.origin, member)

    def _handed_over(self, claim: _Claim, body: bytes) -> None:
        """The holder's cut, in the loop turn it arrives (before what its node sends
        after it, such as a game room's sends to the player): the session is this
        node's."""
        size = int.from_bytes(body[:4], "big")
        header = json.loads(body[4:4 + size])
        if header.get("lost"):
            claim.verdict.set_result(_failed("a message it missed was forgotten"))
            return
        cluster = self._cluster
        assert cluster is not None
        conn = claim.conn
        claim.moved = True
        verdict = self._moved_in(conn, claim.member, header, body[4 + size:],
                                 cluster.captured(claim.capture, header["cut"]))
        self._core.games.seat_moves.moved_in(conn, header["seats"], claim.origin)
        # Seats it lost meanwhile (the room let it go): their owners go on.
        claim.seats = [seat for seat in claim.seats if seat not in header["seats"]]
        if claim.capture.overflowed:
            # More came meanwhile than a session keeps: in, then ended as lost.
            self._core.metrics.counters["sessions_lost"] += 1
            self._core.lifecycle.disconnected(conn)
            claim.verdict.set_result(None)
            return
        claim.verdict.set_result(verdict)

    def _expect(self, member: str, kind: int) -> asyncio.Future[tuple[str, bytes]]:
        assert self._core.loop is not None
        waiting = self._waiting[(member, kind)] = self._core.loop.create_future()
        return waiting

    def _moved_in(self, conn: Connection, member: str, header: dict[str, Any], missed: bytes,
                  kept: list[tuple[str, bytes]]) -> bytes:
        """``conn`` becomes the session handed over: its id, its rooms (the default
        namespace first), what it missed queued; the verdict frame is returned."""
        core = self._core
        cluster = self._cluster
        assert cluster is not None
        sessions = self._sessions
        conn.id = member
        sessions.start(conn)
        session = conn._session
        assert session is not None
        session.base = int(header["count"])
        rooms: dict[str, list[str]] = header["rooms"]
        for name in sorted(rooms):  # "" first
            ns = core.namespaces.get(name)
            if ns is None:
                continue  # a namespace this node does not serve: its rooms are left
            if name:
                if conn._spaces is None:
                    conn._spaces = {}
                conn._spaces[name] = NamespaceConnection(conn, ns)
            cluster.moved_in(member, ns.registry.moved_in(conn, rooms[name]))
        conn._data = header.get("data")
        conn.prepend(b"".join([missed, *(_for(conn, channel, frame) for channel, frame in kept)]))
        conn.inbound.accept()
        counters = core.metrics.counters
        counters["sessions_resumed"] += 1
        counters["sessions_moved_in"] += 1
        from .sessions import _presence

        _presence(core, conn, "member_back", publish=False)  # the cluster's HERE says it there
        for name in sorted(rooms):
            ns = core.namespaces.get(name)
            if ns is not None:
                core.after(ns.hooks.moved_in, ns.view(conn), what="on_moved_in")
        return sessions.resumed_verdict(conn)


async def _settled(waits: list[asyncio.Future[Any]]) -> bool:
    """Whether every one of ``waits`` completed (not cancelled) within MOVE_TIMEOUT."""
    if not waits:
        return True
    _, pending = await asyncio.wait(waits, timeout=MOVE_TIMEOUT)
    return not pending and not any(wait.cancelled() or wait.exception() for wait in waits)


def _failed(why: str) -> bytes | None:
    """No session moves here (the client gets a new one): None, and why in the log."""
    log.debug("a session could not be taken over from another node: %s", why)
    return None


def _data(conn: Connection) -> dict[str, Any] | None:
    """``conn.data`` as JSON can carry it (what it cannot is left behind, and logged)."""
    data = conn._data
    if not data:
        return None
    try:
        json.dumps(data)
    except (TypeError, ValueError) as exc:
        log.warning("conn.data of session %s cannot move to another node (not JSON: %s): "
                    "it starts empty there", conn.id, exc)
        return None
    return data


def _claims(claims: Any) -> str:
    """``authorize``'s claims as two nodes can compare them."""
    return json.dumps(claims, sort_keys=True, default=repr)


def _cluster_rooms(core: Core, conn: Connection) -> list[str]:
    """The cluster names of everything ``conn`` is in (a named namespace's clients too)."""
    keys = []
    for ns in core.namespaces.values():
        registry = ns.registry
        rooms = registry.rooms_of(conn)
        if rooms is None:
            continue
        if registry.namespace:
            keys.append(registry.key(""))
        keys.extend(registry.key(room) for room in rooms)
    return keys


def _for(conn: Connection, channel: str, frame: bytes) -> bytes:
    """A frame kept from the cluster (v1, as published), in ``conn``'s version."""
    if channel == "d":  # a direct message: its namespace, then the frame
        namespace = frame[1:1 + frame[0]].decode()
        frame = frame[1 + frame[0]:]
    elif channel == "a":
        namespace = ""
    else:
        namespace, sep, _ = channel[2:].partition("\x00")
        if not sep:
            namespace = ""
    return frames.as_v2(frame, namespace) if conn.v2 else frame
