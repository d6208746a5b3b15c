"""Resumable sessions (docs/protocol.md §11), with no socket I/O: tokens, the count of
messages a client acknowledged, the held connections of dropped sessions and their end.

A session is a `Connection` that asked for one (``session=new`` at the upgrade). What its
outbox writes is kept in ``conn.replay`` (the fan-out's Peer appends every write) until the
client acknowledges it; ``Session.base`` counts the messages before the first byte kept.
When its socket drops, the Connection itself is held: it stays in its rooms, its outbox
gathers what is sent meanwhile, and a resume attaches the new socket to it after putting
back in front of the outbox what the client had not received. roomer/server.py decides
when a socket dropped and hands the new one over; the rest is here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import inspect
import json
import os
import secrets
import uuid
from typing import TYPE_CHECKING, Any

from .config import RESUME_SECRET_ENV
from .registry import ROOT
from .session_moves import Moves

if TYPE_CHECKING:
    from .connection import Connection
    from .core import Core

__all__ = ["NOT_HERE", "Session", "Sessions"]

#: Why a claim failed when the token is good but its session is not held here.
NOT_HERE = "no such session"

_NONCE = 12
_MAC = 16
# A token: the session's id (16 bytes of its UUID), a nonce, and their MAC; 44 bytes in
# URL-safe base64, no padding.
_TOKEN_BYTES = 16 + _NONCE + _MAC
_TOKEN_CHARS = 59


class Session:
    """One connection's session state."""

    __slots__ = ("base", "dropped", "dropped_at", "held", "moving", "nonce", "resuming",
                 "timer", "windows")

    def __init__(self) -> None:
        self.nonce = b""
        # Messages before the first byte of conn.replay.
        self.base = 0
        # Held: the socket dropped (at loop time dropped_at) and the window runs (its
        # timer): the shortest of what its game rooms set (windows), else the server's.
        self.held = False
        self.dropped_at = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.windows: dict[tuple[str, str], float] | None = None
        # Messages the fan-out had dropped for it when it was held: one more means a
        # message the client can never get.
        self.dropped = 0
        # A new socket claimed it at its upgrade: (messages received, the verdict
        # frame's payload) until the socket is up.
        self.resuming: tuple[int, bytes] | None = None
        # Another node claimed it (roomer/session_moves.py): that node's key, the
        # messages its client received, and when the claim is given up.
        self.moving: tuple[str, int, asyncio.TimerHandle] | None = None


class Sessions:
    """A server's sessions (see the module docstring). Loop thread only."""

    def __init__(self, core: Core) -> None:
        self._core = core
        secret = core.config.resume_secret
        if secret is None:
            secret = os.environ.get(RESUME_SECRET_ENV)
            if secret is not None and len(secret) < 16:
                raise ValueError(f"{RESUME_SECRET_ENV}: at least 16 characters")
        self._key = secret.encode() if secret is not None else secrets.token_bytes(32)
        #: Held connections by id, oldest first.
        self.held: dict[str, Connection] = {}
        # Set when the last held session is released, while a shutdown waits for it.
        self._none_held: asyncio.Event | None = None
        self.moves = Moves(self, core)

    @property
    def enabled(self) -> bool:
        return self._core.config.resume_window > 0

    # tokens ----------------------------------------------------------------------------

    def _mac(self, raw_id: bytes, nonce: bytes) -> bytes:
        return hmac.new(self._key, raw_id + nonce, hashlib.sha256).digest()[:_MAC]

    def _token(self, conn: Connection, session: Session) -> str:
        session.nonce = secrets.token_bytes(_NONCE)
        raw_id = uuid.UUID(conn.id).bytes
        raw = raw_id + session.nonce + self._mac(raw_id, session.nonce)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def _parse(self, token: str) -> tuple[str, bytes] | None:
        """The session id and nonce a token names, None unless this server signed it."""
        if len(token) != _TOKEN_CHARS:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=")
        except ValueError:
            return None
        if len(raw) != _TOKEN_BYTES:
            return None
        raw_id, nonce, mac = raw[:16], raw[16:16 + _NONCE], raw[16 + _NONCE:]
        if not hmac.compare_digest(mac, self._mac(raw_id, nonce)):
            return None
        return str(uuid.UUID(bytes=raw_id)), nonce

    def _announcement(self, conn: Connection, session: Session, **more: str) -> bytes:
        """A ``session`` or ``session.resumed`` payload, with a fresh token."""
        return json.dumps({**more, "token": self._token(conn, session),
                           "window": self._core.config.resume_window}).encode()

    # a live session ----------------------------------------------------------------------

    def start(self, conn: Connection) -> None:
        """``conn`` asked for a session at its upgrade: what it is sent is kept from its
        first message on."""
        conn._session = Session()
        conn.replay = bytearray()

    def accepted(self, conn: Connection) -> None:
        """Its root join_ack was queued: the session's token follows it."""
        session = conn._session
        if session is not None:
            conn.send_control(self._core.default.registry.frame(
                conn, ROOT, "session", "", "", self._announcement(conn, session)))

    def ack(self, conn: Connection, payload: bytes) -> str | None:
        """The client has received ``payload`` (decimal) messages: what precedes them is
        forgotten. The error's text when the ack is not one."""
        session, replay = conn._session, conn.replay
        if session is None or replay is None:
            return "this connection has no session"
        if not payload.isdigit() or len(payload) > 20:
            return "a session.ack's payload is a decimal count of messages"
        count = int(payload)
        if count <= session.base:
            return None  # an old ack, overtaken
        pos, seen = conn.replay_count(count - session.base)
        if seen < count - session.base:
            return "acknowledges more messages than were sent"
        del replay[:pos]
        session.base = count
        return None

    def trim(self, conn: Connection) -> None:
        """Its kept messages passed ``resume_replay`` bytes: the oldest are forgotten,
        down to half of it (a resume that needs them fails)."""
        session, replay = conn._session, conn.replay
        if session is None or replay is None:
            return
        pos, seen = conn.replay_count(0, len(replay) - self._core.config.resume_replay // 2)
        del replay[:pos]
        session.base += seen

    # dropped, held, resumed ----------------------------------------------------------------

    def hold(self, conn: Connection, *, leaving: bool = False) -> bool:
        """``conn``'s socket dropped: keep it for the window. False when it has no
        session to keep (it then disconnects as always). ``leaving``: the server shuts
        down and holds it for another node to take over."""
        session, core = conn._session, self._core
        if session is None or session.held or (core.closing and not leaving) \
                or not self.enabled:
            return False
        games = core.games
        windows = games.drop_windows(conn) if games.active else None
        window = min(windows.values()) if windows else core.config.resume_window
        if window <= 0:
            return False
        if len(self.held) >= core.config.max_held_sessions:
            oldest = next(iter(self.held.values()))
            core.metrics.counters["sessions_evicted"] += 1
            self.end(oldest)
        session.held = True
        session.dropped = conn.dropped
        session.windows = windows
        assert core.loop is not None
        session.dropped_at = core.loop.time()
        session.timer = core.loop.call_later(window, self._expired, conn)
        self.held[conn.id] = conn
        conn.detach()
        conn.inbound.gone()
        conn.asks.fail("the client disconnected")
        core.metrics.counters["sessions_dropped"] += 1
        _presence(core, conn, "member_dropped")
        if games.active:
            games.ask_drop_windows(conn)  # the owners of its other game rooms answer later
        return True

    def rewindow(self, member: str, room: tuple[str, str], window: float) -> None:
        """The owner of game room ``room`` (another node) says how long held ``member``
        keeps its seat there: its window is the shortest again, from its drop."""
        conn = self._core.default.registry.conns.get(member)
        session = None if conn is None else conn._session
        if conn is None or session is None or not session.held:
            return
        windows = session.windows = session.windows or {}
        windows[room] = window
        loop = self._core.loop
        assert loop is not None and session.timer is not None
        session.timer.cancel()
        session.timer = loop.call_later(
            max(0.0, session.dropped_at + min(windows.values()) - loop.time()),
            self._expired, conn)

    async def leave(self, until: float) -> None:
        """The server shuts down with a backplane: every connected session's client is
        closed with 1012 (come back: to another node), its session held here for that
        node to take over; returns once none is held, or at loop time ``until``."""
        core = self._core
        cluster = core.default.registry.cluster
        if not self.enabled or cluster is None:
            return
        cluster.going()
        if not cluster.takers():
            return  # no node to take them: they end as at any shutdown
        for conn in list(core.default.registry.conns.values()):
            if conn._session is not None and conn.transport is not None and conn.inbound.open:
                conn.let_go(1012)
        self._none_held = none_held = asyncio.Event()
        loop = core.loop
        assert loop is not None
        try:
            # Until every held session moved, or no other node can take one (they all
            # shut down too: a whole --workers group stops).
            while self.held and cluster.takers() and loop.time() < until:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(none_held.wait(),
                                           min(0.1, max(0.0, until - loop.time())))
        finally:
            self._none_held = None

    def _expired(self, conn: Connection) -> None:
        session = conn._session
        if session is not None and session.held:
            self._core.metrics.counters["sessions_expired"] += 1
            self.end(conn)

    def _release(self, conn: Connection, session: Session) -> None:
        """No longer held (resumed, moved, or ending): its window stops, and so does a
        move another node asked for."""
        session.held = False
        if session.timer is not None:
            session.timer.cancel()
            session.timer = None
        if session.moving is not None:
            session.moving[2].cancel()
            session.moving = None
        self.held.pop(conn.id, None)
        if not self.held and self._none_held is not None:
            self._none_held.set()

    def end(self, conn: Connection) -> None:
        """A held session ends (window over, evicted, cut, shutdown): the client leaves
        as a dropped one always did."""
        session = conn._session
        if session is None or not session.held:
            return
        self._release(conn, session)
        conn.replay = None
        conn.discard_outbox()
        self._core.lifecycle.disconnected(conn)

    def claim(self, token: str, received: str, v2: bool, claims: Any
              ) -> tuple[Connection | None, str]:
        """A new socket's upgrade asks to resume (``claims``: what ``authorize`` said of
        it): the connection it takes over, or None and why not (for the log; the client
        is told only that it failed). A session still connected is taken over too: its
        client noticed the drop before the server did (the token proves it is the
        same client); the caller holds it, then drops its old socket."""
        parsed = self._parse(token)
        if parsed is None:
            return None, "not a token of this server"
        conn = self._core.default.registry.conns.get(parsed[0])  # held ones are there too
        if conn is None:
            return None, NOT_HERE
        # (An async authorize's claims are compared once it decided: server.py.)
        why = self.check(conn, parsed[1], received, v2,
                         not inspect.isawaitable(claims) and claims != conn.claims)
        if why:
            return None, why
        assert conn._session is not None
        conn._session.resuming = (int(received),
                                  self._announcement(conn, conn._session, id=conn.id))
        return conn, ""

    def check(self, conn: Connection, nonce: bytes, received: str, v2: bool,
              claims_differ: bool) -> str:
        """Whether a new socket (here or on another node) may take ``conn``'s session
        over: "" if so, else why not. A held session that lost messages ends here."""
        session = conn._session
        if session is None or session.resuming is not None or session.moving is not None:
            return NOT_HERE
        if not hmac.compare_digest(nonce, session.nonce):
            return "a spent token"
        if not session.held and not (conn.transport is not None and conn.inbound.open):
            return "a session still connecting or closing"
        if conn.v2 != v2:
            return "another protocol version"
        if claims_differ:
            return "authorize's claims differ"
        if not received.isdigit() or len(received) > 20:
            return "no count of messages received"
        count = int(received)
        if count < session.base or (session.held and conn.dropped != session.dropped):
            if session.held:
                self._core.metrics.counters["sessions_lost"] += 1
                self.end(conn)
            return "messages it missed were forgotten"
        if conn.replay_count(count - session.base)[1] < count - session.base:
            return "counts more messages than were sent"
        return ""

    def verdict(self, conn: Connection) -> bytes:
        """The resumed verdict's frame, written before anything else on the new socket."""
        session = conn._session
        assert session is not None and session.resuming is not None
        return self._core.default.registry.frame(conn, ROOT, "session.resumed", "", conn.id,
                                                 session.resuming[1])

    def resumed_verdict(self, conn: Connection) -> bytes:
        """The resumed verdict of a session that moved here, with a fresh token."""
        session = conn._session
        assert session is not None
        return self._core.default.registry.frame(
            conn, ROOT, "session.resumed", "", conn.id,
            self._announcement(conn, session, id=conn.id))

    def resumed(self, conn: Connection) -> bool:
        """The claimed session's new socket is attached: what the client missed goes out
        first, then what waited. False if it ended while the socket came up."""
        session, replay = conn._session, conn.replay
        if session is None or session.resuming is None:
            return False
        count = session.resuming[0]
        session.resuming = None
        if not session.held or replay is None:
            return False
        self._release(conn, session)
        pos, _ = conn.replay_count(count - session.base)
        missed = bytes(replay[pos:])
        del replay[pos:]
        # Written again, the missed messages are kept again: the replay ends at `count`.
        conn.prepend(missed)
        conn.inbound = self._core.router.inbound()
        conn.inbound.accept()
        self._core.metrics.counters["sessions_resumed"] += 1
        _presence(self._core, conn, "member_back")
        return True

    def lost(self, conn: Connection) -> bytes:
        """The verdict frame of a resume that failed (one text whatever the cause)."""
        payload = json.dumps({"code": "resume_failed",
                              "message": "the session cannot be resumed"}).encode()
        return self._core.default.registry.frame(conn, ROOT, "session.lost", "", "", payload)


def _presence(core: Core, conn: Connection, event: str, *, publish: bool = True) -> None:
    """``member_dropped`` or ``member_back`` to the v2 members of every room ``conn`` is in
    that has presence (v1 clients have no such event), here and (``publish``) on the
    other nodes."""
    for ns in core.namespaces.values():
        registry = ns.registry
        rooms = registry.rooms_of(conn)
        if not rooms:
            continue
        for room in rooms:
            registry.presence_v2(room, event, conn.id)
        if publish and registry.cluster is not None:
            registry.cluster.presence(conn.id, [registry.key(room) for room in rooms],
                                      back=event == "member_back")
