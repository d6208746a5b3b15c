"""The asyncio client's session resume (docs/protocol.md §11) against a real in-process
server over real sockets: a client whose socket the server resets comes back by itself
with its id, its rooms and every message once and in order; what the app sends while
away follows the resume; a resume the server refuses starts a new session; the app's
close, the server's "do not come back" codes and resume=False are not resumed."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest
from waiting import TIMEOUT, eventually, pace, scaled

import roomer
import roomer.client

PROTOCOLS = ["v1", "v2"]


def url(server: roomer.Server) -> str:
    return f"ws://127.0.0.1:{server.address[1]}/ws"


def cut(server: roomer.Server, client_id: str) -> None:
    """Reset the client's TCP connection from the server's side: no close frame, and
    what the server had written but the client not read yet is lost with it."""
    conn = server.connection(client_id)
    assert conn is not None and conn.transport is not None
    raw = conn.transport.underlying_transport
    raw.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                            struct.pack("ii", 1, 0))
    raw.abort()


def next_event(room: roomer.Room, event: str) -> asyncio.Future[tuple[Any, ...]]:
    """The handler arguments of ``room``'s next ``event``, as a future registered now."""
    return asyncio.ensure_future(room.wait_for(event, TIMEOUT))


class Collector:
    """Records a room's ``event`` payloads as text; ``reached(n)`` waits for n of them."""

    def __init__(self, room: roomer.Room, event: str) -> None:
        self.seen: list[str] = []
        self._wanted: tuple[int, asyncio.Future[None]] | None = None
        room.on(event, self._got)

    def _got(self, payload: bytes, sender: str) -> None:
        self.seen.append(payload.decode())
        wanted = self._wanted
        if wanted is not None and len(self.seen) >= wanted[0] and not wanted[1].done():
            wanted[1].set_result(None)

    async def reached(self, count: int, timeout: float = TIMEOUT) -> list[str]:
        if len(self.seen) < count:
            self._wanted = (count, asyncio.get_running_loop().create_future())
            await asyncio.wait_for(self._wanted[1], timeout)
        return self.seen


async def stream(server: roomer.Server, room: str, count: int, rate: float,
                 cut_at: int, cut_it: Callable[[], None]) -> None:
    """``count`` numbered broadcasts to ``room``, ``rate`` a second in batches of 10 ms;
    ``cut_it()`` right after the batch holding number ``cut_at`` went out, so that
    batch is in flight, unread, when the socket is reset."""
    step = max(1, int(rate / 100))
    for first in range(0, count, step):
        last = min(count, first + step)
        for n in range(first, last):
            server.broadcast(room, "tick", str(n).encode())
        if first <= cut_at < last:
            cut_it()
        await pace(step / rate)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_reset_mid_stream_resumes_with_every_message_once_in_order(
        make_server: Any, protocol: str) -> None:
    server = await make_server(resume_window=scaled(10))
    root = await roomer.connect(url(server), protocol=protocol, resume=True)
    own: list[str] = []
    for event in ("session", "session.resumed", "session.lost"):
        root.on(event, lambda *args, event=event: own.append(event))
    try:
        game = await root.join("game")
        ticks = Collector(game, "tick")
        resumed = next_event(root, "resumed")
        first_id = root.id()
        await stream(server, "game", 3000, 1000, 1000, lambda: cut(server, first_id))
        assert await resumed == (first_id,)
        numbers = await ticks.reached(3000, scaled(10))
        assert [int(n) for n in numbers] == list(range(3000))
        assert root.id() == first_id and game.open() and root.open()
        assert server.members("game") == [first_id]
        stats = server.stats()
        assert stats["sessions_resumed"] == 1 and stats["sessions_held"] == 0
        # The session's own events are the client's, not the app's.
        assert own == []
        # Acknowledged as they came, the last ones half a second after they came: the
        # server keeps nothing for a resume once the stream is over.
        conn = server.connection(first_id)
        assert conn is not None
        await eventually(lambda: conn.replay is not None and len(conn.replay) == 0,
                         what="every message acknowledged")
    finally:
        await root.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_what_is_sent_while_away_goes_out_in_order_after_the_resume(
        make_server: Any, protocol: str) -> None:
    server = await make_server(resume_window=scaled(10))
    # A query of the application's own is kept, on the first URL and on the resume's.
    root = await roomer.connect(url(server) + "?app=demo", protocol=protocol, resume=True)
    other = await roomer.connect(url(server))
    try:
        game = await root.join("game")
        said = Collector(await other.join("game"), "say")
        dropped, resumed = next_event(root, "dropped"), next_event(root, "resumed")
        cut(server, root.id())
        await dropped
        assert game.open() and root.open()
        for n in range(20):
            game.send("say", str(n))
        # What expects an answer is refused while away: its answer could be lost.
        with pytest.raises(ConnectionError):
            root.join("elsewhere")
        with pytest.raises(ConnectionError):
            game.leave()
        if protocol == "v2":
            with pytest.raises(ConnectionError):
                await root.ask("anything")
        assert "elsewhere" not in root._client.rooms
        await resumed
        game.send("say", "after")
        assert await said.reached(21) == [str(n) for n in range(20)] + ["after"]
        assert game.open() and set(server.members("game")) == {root.id(), other.id()}
        conn = server.connection(root.id())
        assert conn is not None and conn.request.path.startswith(b"/ws?app=demo&session=")
    finally:
        await other.close()
        await root.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_past_the_window_the_resume_is_lost_and_a_new_session_begins(
        make_server: Any, protocol: str) -> None:
    # The server holds the dropped session for a millisecond: the client's first
    # attempt, a twentieth of a second at least after the drop, finds it gone.
    server = await make_server(resume_window=0.001)
    root = await roomer.connect(url(server), protocol=protocol, resume=True)
    other = await roomer.connect(url(server))
    try:
        game = await root.join("game")
        theirs = await other.join("game")
        said = Collector(theirs, "say")
        old_id = root.id()
        dropped, lost = next_event(root, "dropped"), next_event(root, "lost")
        closed = next_event(game, "close")
        cut(server, old_id)
        await dropped
        game.send("say", "queued while away")
        assert await lost == ("resume_failed",)
        await closed
        new_id = root.id()
        assert new_id != old_id and root.open() and not game.open()
        assert root.members() == [new_id]
        assert sorted(root._client.rooms) == ["root"]
        assert server.stats()["sessions_expired"] == 1
        # The new session resumes like the first one did.
        assert server.connection(new_id).resumable  # type: ignore[union-attr]
        # What was queued for the lost session was dropped: the first message the
        # other member gets is one sent in the new session.
        again = await root.join("game")
        again.send("say", "new session")
        assert await said.reached(1) == ["new session"]
    finally:
        await other.close()
        await root.close()


async def test_resume_false_closes_on_a_reset_as_before(make_server: Any) -> None:
    server = await make_server(resume_window=scaled(10))
    root = await roomer.connect(url(server))
    assert not server.connection(root.id()).resumable  # type: ignore[union-attr]
    game = await root.join("game")
    closed = next_event(game, "close")
    cut(server, root.id())
    await closed
    await asyncio.wait_for(root._client.closed, TIMEOUT)
    assert not root.open() and not game.open()
    with pytest.raises(ConnectionError):
        game.send("say", "hello")
    assert server.stats()["sessions_dropped"] == 0


@pytest.mark.parametrize("code", [1000, 4001])
async def test_a_close_that_says_do_not_come_back_is_not_resumed(
        make_server: Any, code: int) -> None:
    server = await make_server(resume_window=scaled(10))
    root = await roomer.connect(url(server), resume=True)
    game = await root.join("game")
    closed = next_event(game, "close")
    server.connection(root.id()).close(code, "go away")  # type: ignore[union-attr]
    await closed
    await asyncio.wait_for(root._client.closed, TIMEOUT)
    assert not root.open()
    assert server.stats()["sessions_dropped"] == 0


async def test_another_close_by_the_server_is_resumed_or_lost_not_final(
        make_server: Any) -> None:
    # 1011 (what a ping timeout sends): the client comes back; this server ended the
    # session with the close, so the verdict is lost and a new session begins.
    server = await make_server(resume_window=scaled(10))
    root = await roomer.connect(url(server), resume=True)
    old_id = root.id()
    lost = next_event(root, "lost")
    server.connection(old_id).close(1011, "internal error")  # type: ignore[union-attr]
    assert await lost == ("resume_failed",)
    assert root.open() and root.id() != old_id
    await root.close()


async def test_the_queue_is_bounded_and_close_stops_the_resume(make_server: Any) -> None:
    server = await make_server(resume_window=scaled(10))
    root = await roomer.connect(url(server), resume=True)
    game = await root.join("game")
    dropped, closed = next_event(root, "dropped"), next_event(game, "close")
    cut(server, root.id())
    await dropped
    with pytest.raises(ConnectionError, match="queue is full"):
        game.send("big", b"x" * roomer.client.QUEUE_BYTES)
    for n in range(roomer.client.QUEUE_MESSAGES):
        game.send("say", str(n))
    with pytest.raises(ConnectionError, match="queue is full"):
        game.send("say", "one too many")
    await root.close()
    await closed
    session = root._client.session
    assert session is not None and session.task is not None
    await asyncio.wait_for(asyncio.wait({session.task}), TIMEOUT)
    assert session.task.cancelled() and not session.queue
    assert not root.open() and server.stats()["sessions_resumed"] == 0
    with pytest.raises(ConnectionError):
        game.send("say", "closed")


async def test_a_long_queue_is_paced_under_the_servers_rate_limit(make_server: Any) -> None:
    # 250 messages at once would pass the default rate limit (200 frames/s): the tail
    # would be dropped. Paced, every one arrives.
    server = await make_server(resume_window=scaled(10))
    root = await roomer.connect(url(server), resume=True)
    other = await roomer.connect(url(server))
    try:
        game = await root.join("game")
        said = Collector(await other.join("game"), "say")
        errors: list[Any] = []
        game.on("error", errors.append)
        dropped, resumed = next_event(root, "dropped"), next_event(root, "resumed")
        cut(server, root.id())
        await dropped
        for n in range(250):
            game.send("say", str(n))
        await resumed
        assert await said.reached(250, scaled(10)) == [str(n) for n in range(250)]
        assert errors == []
    finally:
        await other.close()
        await root.close()


async def test_the_window_passes_without_a_server_and_the_client_gives_up(
        make_server: Any) -> None:
    server = await make_server(resume_window=scaled(0.5))
    root = await roomer.connect(url(server), resume=True)
    game = await root.join("game")
    gave_up, closed = next_event(root, "close"), next_event(game, "close")
    resumed: list[Any] = []
    root.on("resumed", lambda *args: resumed.append(args))
    dropped = next_event(root, "dropped")
    cut(server, root.id())
    await dropped
    await server.shutdown(timeout=1.0)  # its port refuses the attempts from now on
    await gave_up
    await closed
    await asyncio.wait_for(root._client.closed, TIMEOUT)
    assert resumed == [] and not root.open()


async def test_v2_members_see_a_member_dropped_then_back(make_server: Any) -> None:
    server = await make_server(resume_window=scaled(10))
    watcher = await roomer.connect(url(server), protocol="v2")
    root = await roomer.connect(url(server), resume=True)
    try:
        theirs = await watcher.join("game")
        await root.join("game")
        await eventually(lambda: root.id() in theirs.members(), what="presence")
        dropped = next_event(theirs, "member_dropped")
        back = next_event(theirs, "member_back")
        cut(server, root.id())
        assert await dropped == (root.id(),)
        assert root.id() in theirs.members()  # still a member
        assert await back == (root.id(),)
        assert theirs.members() == [watcher.id(), root.id()]
    finally:
        await watcher.close()
        await root.close()


async def test_every_256th_message_is_acknowledged_at_once(
        make_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # No acknowledgement by time: what the server forgets is what the count acknowledged.
    monkeypatch.setattr(roomer.client, "ACK_DELAY", 3600.0)
    server = await make_server(resume_window=scaled(10))
    root = await roomer.connect(url(server), resume=True)
    try:
        game = await root.join("game")  # messages 1-3: root join_ack, session, join_ack
        ticks = Collector(game, "tick")
        for n in range(600):
            server.broadcast("game", "tick", f"{n:03}")
        await ticks.reached(600)
        conn = server.connection(root.id())
        assert conn is not None and conn.replay is not None
        tick_frame = len(roomer.codec.encode_frame("game", "tick", "", "", "000"))
        # 603 messages, acknowledged at 256 and 512: the last 91 ticks are kept.
        await eventually(lambda: len(conn.replay) == 91 * tick_frame,
                         what="acknowledged up to message 512")
    finally:
        await root.close()


async def test_a_server_with_sessions_off_is_connected_to_as_without_resume(
        make_server: Any) -> None:
    server = await make_server(resume_window=0)
    root = await roomer.connect(url(server), resume=True)
    game = await root.join("game")
    closed = next_event(root, "close")
    cut(server, root.id())
    await closed  # no token came: nothing to resume
    assert not game.open()


def test_the_session_url_keeps_the_applications_query() -> None:
    session_url = roomer.client._session_url
    assert session_url("ws://h:1/ws") == "ws://h:1/ws?session=new"
    assert session_url("ws://h:1/ws?a=1&b=%20") == "ws://h:1/ws?a=1&b=%20&session=new"
    assert (session_url("wss://h/x?session=old&a=1&received=9", "t-_0", 12)
            == "wss://h/x?a=1&session=t-_0&received=12")
