"""Resumable sessions (docs/protocol.md §11) over real sockets: a dropped client comes
back with its id, its rooms and every message it had not received, exactly once and in
order; a refused resume is one error and a fresh session; the others see the client
dropped, back, or left once the window ends."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

import pytest
from rawclient import Msg, connect, decode
from rawsocket import RawSocket
from v2client import connect2
from waiting import TIMEOUT, eventually, pace, scaled, suspend

import roomer
from roomer import Server


class SessionClient:
    """A v1 client on a bare socket that keeps a session as §11 says: it counts the
    messages it receives, acknowledges them, and can be cut with a reset."""

    def __init__(self, sock: RawSocket, port: int) -> None:
        self.sock = sock
        self.port = port
        self.id = ""
        self.token = ""
        self.count = 0
        self.verdict: Msg | None = None

    @classmethod
    async def open(cls, port: int, query: str = "session=new") -> SessionClient:
        client = cls(await RawSocket.open_path(port, f"/ws?{query}"), port)
        if "received=" in query:  # a resume: its verdict first
            client.verdict = await client._recv_uncounted()
        else:
            await client._start()
        return client

    async def _start(self) -> None:
        ack = await self.recv()
        assert (ack.room, ack.event) == ("root", "join_ack"), ack
        self.id = ack.src
        announced = await self.recv()
        assert (announced.room, announced.event) == ("root", "session"), announced
        self.token = announced.json()["token"]

    async def _recv_uncounted(self) -> Msg:
        while True:
            opcode, body = await self.sock.recv_frame()
            if opcode == 0x9:
                await self.sock.pong(body)
            elif opcode == 0x2:
                return decode(body)
            else:
                raise AssertionError(f"frame {opcode:#x} {body!r}")

    async def recv(self) -> Msg:
        msg = await self._recv_uncounted()
        self.count += 1
        return msg

    async def send(self, room: str, event: str, payload: bytes = b"") -> None:
        await self.sock.send(room, event, payload)

    async def ack(self) -> None:
        await self.send("root", "session.ack", str(self.count).encode())

    async def join(self, room: str) -> None:
        await self.send(room, "join")
        while (await self.recv()).event != "join_ack":
            pass

    def reset(self) -> None:
        """Cut the TCP connection with a reset: no close frame, unread bytes lost."""
        self.sock.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                  struct.pack("ii", 1, 0))
        self.sock.sock.close()

    async def resume(self, extra: str = "") -> SessionClient:
        """A new socket resuming this session (``extra``: more of the query); its
        verdict is in ``verdict``."""
        again = await SessionClient.open(
            self.port, f"session={self.token}&received={self.count}{extra}")
        assert again.verdict is not None
        if again.verdict.event == "session.resumed":
            body = again.verdict.json()
            again.id, again.token, again.count = body["id"], body["token"], self.count
        else:
            await again._start()
        return again


async def _stream(server: Any, room: str, count: int, rate: float) -> None:
    """``count`` numbered messages to ``room`` from the server, ``rate`` per second."""
    step = max(1, int(rate / 100))  # a batch per 10 ms
    for first in range(0, count, step):
        for n in range(first, min(count, first + step)):
            server.broadcast(room, "tick", str(n).encode())
        await pace(step / rate)


async def _numbers(client: SessionClient, until: int) -> list[int]:
    seen: list[int] = []
    while not seen or seen[-1] < until:
        msg = await client.recv()
        if msg.event == "tick":
            seen.append(int(msg.payload))
        if client.count % 64 == 0:
            await client.ack()
    return seen


async def test_a_reset_in_a_stream_resumes_with_every_message_once_in_order(
        make_server: Any) -> None:
    server = await make_server(resume_window=scaled(10))
    port = server.address[1]
    client = await SessionClient.open(port)
    await client.join("game")
    stream = asyncio.ensure_future(_stream(server, "game", 3000, 1000))
    try:
        first = await _numbers(client, 700)
        client.reset()
        await eventually(lambda: server.stats()["sessions_held"] == 1)
        again = await client.resume()
        assert again.verdict is not None and again.verdict.event == "session.resumed"
        assert again.id == client.id and again.token != client.token
        rest = await _numbers(again, 2999)
    finally:
        await asyncio.wait_for(stream, TIMEOUT)
    numbers = first + rest
    assert numbers == list(range(3000))
    stats = server.stats()
    assert stats["sessions_resumed"] == 1 and stats["sessions_held"] == 0
    assert stats["connections"] == 1 and server.members("game") == [client.id]


async def test_a_client_that_notices_the_drop_first_takes_its_session_over(
        make_server: Any) -> None:
    server = await make_server(resume_window=scaled(10))
    port = server.address[1]
    client = await SessionClient.open(port)
    await client.join("game")
    for n in range(5):
        server.broadcast("game", "tick", str(n).encode())
    first = await client.recv()
    assert first.payload == b"0"
    # Its old socket is still up as far as the server knows.
    again = await client.resume()
    assert again.verdict is not None and again.verdict.event == "session.resumed"
    assert again.id == client.id
    assert [(await again.recv()).payload for _ in range(4)] == [b"1", b"2", b"3", b"4"]
    # The old socket is dropped without a close frame.
    with pytest.raises(ConnectionError):
        while True:
            await client.sock.recv_frame()
    server.broadcast("game", "tick", b"5")
    assert (await again.recv()).payload == b"5"
    assert server.stats()["connections"] == 1 and server.members("game") == [client.id]


async def test_others_see_dropped_then_back_and_v1_sees_neither(make_server: Any) -> None:
    server = await make_server(resume_window=scaled(10))
    port = server.address[1]
    client = await SessionClient.open(port)
    await client.join("game")
    watcher = await connect2(server)
    await watcher.send("", "game", "join")
    await watcher.expect("join_ack", "game")
    old = await connect(server)
    await old.join("game")
    await watcher.expect("new_member", "game")
    client.reset()
    dropped = await watcher.expect("member_dropped", "game")
    assert dropped.payload == client.id.encode()
    again = await client.resume()
    back = await watcher.expect("member_back", "game")
    assert back.payload == again.id.encode()
    # What was sent while it was away comes first (the others' joins), then live.
    await old.send("game", "hello")
    seen = [await again.recv() for _ in range(3)]
    assert [(m.event, m.payload) for m in seen] == [
        ("new_member", watcher.id.encode()), ("new_member", old.id.encode()),
        ("hello", b"")]
    # The v1 member saw nothing of the drop.
    await old.expect_nothing()


async def test_the_window_ends_as_a_disconnect(make_server: Any) -> None:
    server = await make_server(resume_window=scaled(0.3))
    port = server.address[1]
    client = await SessionClient.open(port)
    await client.join("game")
    other = await connect(server)
    await other.join("game")
    client.reset()
    left = await other.expect("member_left", "game")
    assert left.payload == client.id.encode()
    assert server.stats()["sessions_expired"] == 1
    again = await client.resume()
    assert again.verdict is not None and again.verdict.event == "session.lost"
    assert again.verdict.json()["code"] == "resume_failed"
    assert again.id != client.id and again.count == 2


@pytest.mark.parametrize("spoil", ["forged", "replayed", "garbage"])
async def test_bad_tokens_are_one_error_and_a_fresh_session(make_server: Any,
                                                             spoil: str) -> None:
    server = await make_server(resume_window=scaled(10))
    port = server.address[1]
    client = await SessionClient.open(port)
    await client.join("game")
    token = client.token
    if spoil == "forged":
        token = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    elif spoil == "garbage":
        token = "%00" * 10
    elif spoil == "replayed":
        client.reset()
        again = await client.resume()
        assert again.verdict is not None and again.verdict.event == "session.resumed"
        client = again
    attempt = await SessionClient.open(port, f"session={token}&received=0")
    assert attempt.verdict is not None and attempt.verdict.event == "session.lost"
    assert attempt.verdict.json() == {"code": "resume_failed",
                                      "message": "the session cannot be resumed"}
    await attempt._start()
    assert attempt.id != client.id
    assert server.stats()["resume_failures"] == 1
    assert client.id in server.members("game")


async def test_messages_dropped_while_held_end_the_session(make_server: Any) -> None:
    server = await make_server(resume_window=scaled(10), outbox_limit=4096)
    port = server.address[1]
    client = await SessionClient.open(port)
    await client.join("game")
    client.reset()
    await eventually(lambda: server.stats()["sessions_held"] == 1)
    for _ in range(100):
        server.broadcast("game", "tick", b"x" * 100)
    again = await client.resume()
    assert again.verdict is not None and again.verdict.event == "session.lost"
    assert server.stats()["sessions_lost"] == 1
    await eventually(lambda: server.members("game") == [])


async def test_acks_bound_what_is_kept(make_server: Any) -> None:
    server = await make_server(resume_window=scaled(10), resume_replay=4096)
    port = server.address[1]
    client = await SessionClient.open(port)
    await client.join("game")
    conn = server.connection(client.id)
    for _ in range(200):
        server.broadcast("game", "tick", b"x" * 100)
    numbers = 0
    while numbers < 200:
        if (await client.recv()).event == "tick":
            numbers += 1
    # Nothing acknowledged: at most resume_replay bytes kept.
    assert len(conn.replay) <= 4096
    await client.ack()
    await eventually(lambda: len(conn.replay) == 0)
    # A resume from before what was forgotten fails.
    client.count = 5
    client.reset()
    await eventually(lambda: server.stats()["sessions_held"] == 1)
    again = await client.resume()
    assert again.verdict is not None and again.verdict.event == "session.lost"


async def test_an_ack_beyond_what_was_sent_is_an_error(make_server: Any) -> None:
    server = await make_server(resume_window=scaled(10))
    client = await SessionClient.open(server.address[1])
    await client.send("root", "session.ack", b"1000")
    error = await client.recv()
    assert error.event == "error" and error.json()["code"] == "malformed"
    await client.send("root", "session.ack", b"soon")
    error = await client.recv()
    assert error.event == "error" and error.json()["code"] == "malformed"


async def test_no_session_asked_nothing_changes(make_server: Any) -> None:
    server = await make_server(resume_window=scaled(10))
    plain = await connect(server)
    await plain.join("game")
    other = await connect(server)
    await other.join("game")
    await plain.ws.close()
    left = await other.expect("member_left", "game")
    assert left.payload == plain.id.encode()
    assert server.stats()["sessions_dropped"] == 0
    assert json.loads(other.root_ack.payload) == [other.id]  # type: ignore[union-attr]


class Seat(roomer.GameRoom):
    """A room type whose dropped players are held 0.3 s (scaled), whatever the server's
    window; it records who left and whether they chose to."""

    max_clients = 4
    resume_window = scaled(0.3)
    auto_dispose = False
    gone: asyncio.Queue[tuple[str, bool]]

    def on_left(self, player: roomer.Player, consented: bool) -> None:
        Seat.gone.put_nowait((player.id, consented))


class NoHold(Seat):
    resume_window = 0.0


@pytest.mark.parametrize("kind", ["seat", "nohold"])
async def test_a_room_type_sets_the_window_of_its_players(kind: str) -> None:
    Seat.gone = asyncio.Queue()
    server = Server(resume_window=scaled(30))
    server.define("seat", Seat)
    server.define("nohold", NoHold)
    await server.start("127.0.0.1", 0)
    try:
        room = await server.default.create_room(kind, room_id=f"{kind}:a")
        client = await SessionClient.open(server.address[1])
        await client.join(room)
        client.reset()
        # Held for the type's window (0.3 s, not the server's 30 s), or not at all.
        assert await asyncio.wait_for(Seat.gone.get(), TIMEOUT) == (client.id, False)
        stats = server.stats()
        assert stats["sessions_dropped"] == (1 if kind == "seat" else 0)
        assert stats["sessions_expired"] == (1 if kind == "seat" else 0)
    finally:
        await server.shutdown()


async def test_an_async_authorize_decides_a_resume_with_the_same_claims(
        make_server: Any) -> None:
    async def authorize(request: Any) -> str:
        await suspend()  # decided after the upgrade, as a database lookup is
        user = request.path.decode().rpartition("user=")[2]
        if user == "mallory":
            raise roomer.Deny("no")
        return user

    server = await make_server(resume_window=scaled(10), authorize=authorize)
    port = server.address[1]
    client = await SessionClient.open(port, "session=new&user=ada")
    await client.join("game")
    client.reset()
    await eventually(lambda: server.stats()["sessions_held"] == 1)
    # Other claims, or a refusal: the socket is closed, the session stays held.
    for who, code in (("bob", 1008), ("mallory", 1008)):
        raw = await RawSocket.open_path(
            port, f"/ws?session={client.token}&received={client.count}&user={who}")
        assert (await raw.close_frame())[0] == code
        raw.sock.close()
    assert server.stats()["sessions_held"] == 1 and server.members("game") == [client.id]
    # The token of a refused resume is spent: the same claims then get session.lost.
    again = await client.resume("&user=ada")
    assert again.verdict is not None and again.verdict.event == "session.lost"


async def test_an_async_authorize_resumes_with_the_same_claims(make_server: Any) -> None:
    async def authorize(request: Any) -> str:
        await suspend()
        return request.path.decode().rpartition("user=")[2]

    server = await make_server(resume_window=scaled(10), authorize=authorize)
    client = await SessionClient.open(server.address[1], "session=new&user=ada")
    await client.join("game")
    server.broadcast("game", "tick", b"0")
    client.reset()
    await eventually(lambda: server.stats()["sessions_held"] == 1)
    again = await client.resume("&user=ada")
    assert again.verdict is not None and again.verdict.event == "session.resumed"
    assert (await again.recv()).payload == b"0"
    assert server.connection(client.id).claims == "ada"
