"""A session resumed on another node than the one holding it: taken over through the
backplane (roomer/session_moves.py) over the in-process hub, real Redis and real NATS,
with every message it missed once and in order, whichever node sent it."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from clusterkit import Proxy
from rawclient import decode, eventually
from test_scaleout import Nodes, nodes  # noqa: F401  (the fixture)
from test_sessions import SessionClient
from v2client import connect2
from waiting import TIMEOUT, pace, scaled

import roomer

SECRET = "a secret the nodes share"


async def _stream(server: Any, room: str, event: str, count: int, rate: float) -> None:
    """``count`` numbered ``event`` messages to ``room`` from ``server``, ``rate``/s."""
    step = max(1, int(rate / 100))  # a batch per 10 ms
    for first in range(0, count, step):
        for n in range(first, min(count, first + step)):
            server.broadcast(room, event, str(n).encode())
        await pace(step / rate)


async def _read(client: SessionClient, seen: dict[str, list[int]], until: int) -> None:
    """Read numbered messages into ``seen`` (by event) until every stream got ``until``."""
    while any(not numbers or numbers[-1] < until for numbers in seen.values()):
        msg = await client.recv()
        if msg.event in seen:
            seen[msg.event].append(int(msg.payload))
        if client.count % 64 == 0:
            await client.ack()


def _gaps(numbers: list[int]) -> list[tuple[int, int]]:
    """Where ``numbers`` does not go up by one: (previous, next) pairs."""
    return [(a, b) for a, b in itertools.pairwise(numbers) if b != a + 1]


async def test_a_reset_resumed_on_the_other_node_gets_every_message_once_in_order(
        nodes: Nodes) -> None:  # noqa: F811
    a_node, b_node = await nodes(2, resume_window=scaled(10), resume_secret=SECRET)
    client = await SessionClient.open(a_node.address[1])
    await client.join("game")
    await client.join("table")
    watcher = await connect2(b_node)  # sees the client's presence at the table
    await watcher.send("", "table", "join")
    await watcher.expect("join_ack", "table")
    await eventually(lambda: sorted(a_node.members("table")) == sorted([client.id, watcher.id]))
    # Two streams, one from each node: a's reach the client locally until the cut,
    # b's cross the broker until the session moves to b.
    seen: dict[str, list[int]] = {"a": [], "b": []}
    streams = [asyncio.ensure_future(_stream(a_node, "game", "a", 3000, 1000)),
               asyncio.ensure_future(_stream(b_node, "game", "b", 3000, 1000))]
    try:
        await _read(client, seen, 700)
        client.reset()
        await eventually(lambda: a_node.stats()["sessions_held"] == 1)
        assert (await watcher.expect("member_dropped", "table")).payload == client.id.encode()
        client.port = b_node.address[1]
        again = await client.resume()
        assert again.verdict is not None and again.verdict.event == "session.resumed", \
            again.verdict
        assert again.id == client.id and again.token != client.token
        await _read(again, seen, 2999)
    finally:
        await asyncio.wait_for(asyncio.gather(*streams), TIMEOUT)
    for stream, numbers in seen.items():
        assert numbers == list(range(3000)), (stream, _gaps(numbers))
    assert (await watcher.expect("member_back", "table")).payload == client.id.encode()
    a_stats, b_stats = a_node.stats(), b_node.stats()
    assert a_stats["sessions_moved_out"] == 1 and a_stats["sessions_held"] == 0
    assert b_stats["sessions_moved_in"] == 1 and b_stats["sessions_resumed"] == 1
    assert a_node.connection(client.id) is None
    assert b_node.connection(client.id) is not None
    assert sorted(b_node.members("table")) == sorted([client.id, watcher.id])
    assert b_node.members("game") == [client.id]
    assert a_node.members("table") == []  # (a lists only rooms it has members in)
    await watcher.expect_nothing()  # no member_left, no new_member: it only moved


async def _read_until_closed(client: SessionClient, seen: dict[str, list[int]]) -> int:
    """Read numbered messages into ``seen`` until the server's close frame: its code."""
    while True:
        opcode, body = await client.sock.recv_frame()
        if opcode == 0x8:
            return int.from_bytes(body[:2], "big")
        if opcode == 0x9:
            await client.sock.pong(body)
            continue
        client.count += 1
        msg = decode(body)
        if msg.event in seen:
            seen[msg.event].append(int(msg.payload))


async def test_a_node_that_shuts_down_hands_its_sessions_over(nodes: Nodes) -> None:  # noqa: F811
    """A graceful shutdown with a backplane (a rolling restart) closes session clients with
    1012 and holds their sessions until their resume lands on another node: nothing is
    lost, and the others never see them leave."""
    a_node, b_node = await nodes(2, resume_window=scaled(10), resume_secret=SECRET)
    client = await SessionClient.open(a_node.address[1])
    await client.join("game")
    await client.join("table")
    watcher = await connect2(b_node)
    await watcher.send("", "table", "join")
    await watcher.expect("join_ack", "table")
    await eventually(lambda: sorted(b_node.members("table")) == sorted([client.id, watcher.id]))
    seen: dict[str, list[int]] = {"b": []}
    stream = asyncio.ensure_future(_stream(b_node, "game", "b", 2000, 1000))
    try:
        await _read(client, seen, 300)
        stopping = asyncio.ensure_future(a_node.shutdown(timeout=scaled(8)))
        assert await _read_until_closed(client, seen) == 1012
        client.port = b_node.address[1]
        again = await client.resume()
        assert again.verdict is not None and again.verdict.event == "session.resumed", \
            again.verdict
        await _read(again, seen, 1999)
        await asyncio.wait_for(stopping, TIMEOUT)
    finally:
        await asyncio.wait_for(stream, TIMEOUT)
    assert seen["b"] == list(range(2000)), _gaps(seen["b"])
    assert b_node.stats()["sessions_moved_in"] == 1
    assert sorted(b_node.members("table")) == sorted([client.id, watcher.id])
    assert (await watcher.expect("member_dropped", "table")).payload == client.id.encode()
    assert (await watcher.expect("member_back", "table")).payload == client.id.encode()
    await watcher.expect_nothing()  # and no member_left when a said goodbye


async def test_a_whole_group_shutting_down_does_not_wait_for_a_taker(nodes: Nodes) -> None:  # noqa: F811
    """Every node shuts down at once (a --workers group stopped): none waits for the
    others to take its sessions."""
    a_node, b_node = await nodes(2, resume_window=scaled(10), resume_secret=SECRET)
    clients = [await SessionClient.open(node.address[1]) for node in (a_node, b_node)]
    for client in clients:
        await client.join("game")
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.gather(a_node.shutdown(timeout=30), b_node.shutdown(timeout=30))
    # Far less than the 29 s each would wait for a taker (the test's own bound).
    assert loop.time() - began < scaled(10)


async def test_a_client_that_notices_first_takes_its_live_session_over_from_the_other_node(
        nodes: Nodes) -> None:  # noqa: F811
    a_node, b_node = await nodes(2, resume_window=scaled(10), resume_secret=SECRET)
    client = await SessionClient.open(a_node.address[1])
    await client.join("game")
    for n in range(5):
        a_node.broadcast("game", "tick", str(n).encode())
    assert (await client.recv()).payload == b"0"
    # Its socket on a is still up as far as a knows: b takes the session over from it.
    client.port = b_node.address[1]
    again = await client.resume()
    assert again.verdict is not None and again.verdict.event == "session.resumed"
    assert [(await again.recv()).payload for _ in range(4)] == [b"1", b"2", b"3", b"4"]
    with pytest.raises(ConnectionError):  # a dropped the old socket, without a close frame
        while True:
            await client.sock.recv_frame()
    a_node.broadcast("game", "tick", b"5")  # from a, to the client on b now
    assert (await again.recv()).payload == b"5"
    assert b_node.members("game") == [client.id] and a_node.connection(client.id) is None


async def test_tokens_the_other_node_cannot_take_are_one_error_and_a_fresh_session(
        nodes: Nodes) -> None:  # noqa: F811
    a_node, b_node = await nodes(2, resume_window=scaled(10), resume_secret=SECRET)
    client = await SessionClient.open(a_node.address[1])
    await client.join("game")
    b_port = b_node.address[1]

    async def refused(query: str) -> SessionClient:
        fresh = await SessionClient.open(b_port, query)
        assert fresh.verdict is not None and fresh.verdict.event == "session.lost"
        assert fresh.verdict.json()["code"] == "resume_failed"
        await fresh._start()  # then a new session, with a new id
        assert fresh.id != client.id
        return fresh

    token = client.token
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    await refused(f"session={forged}&received=0")
    # Signed with another secret: another cluster's token (a node with no secret set).
    lone = await SessionClient.open((await nodes(1, resume_window=scaled(10)))[0].address[1])
    await refused(f"session={lone.token}&received=0")
    # A count beyond what was sent, then a resume on b that spends the token.
    await refused(f"session={token}&received=99")
    client.reset()
    await eventually(lambda: a_node.stats()["sessions_held"] == 1)
    client.port = b_port
    again = await client.resume()
    assert again.verdict is not None and again.verdict.event == "session.resumed"
    # The spent token, replayed on a (the session is on b now) and on b.
    await refused(f"session={token}&received={client.count}")
    assert (await SessionClient.open(a_node.address[1],
                                     f"session={token}&received={client.count}")
            ).verdict.event == "session.lost"  # type: ignore[union-attr]
    # A session that ended (the app closed it): no node holds it.
    b_node.connection(client.id).close()  # type: ignore[union-attr]
    await refused(f"session={again.token}&received={again.count}")
    assert b_node.stats()["resume_failures"] == 5 and a_node.stats()["resume_failures"] == 1
    assert a_node.stats()["sessions_moved_out"] == 1


@pytest.mark.parametrize("owner", ["holder", "claimer", "third"])
async def test_a_game_seat_moves_with_its_session(nodes: Nodes, owner: str) -> None:  # noqa: F811
    """A player keeps its seat when its session moves, wherever the room's owner is: what
    the room sends it (player.send) meanwhile arrives once and in order, and its messages
    reach the room's handlers from its new node."""
    from game_app import Table

    servers = await nodes(3, resume_window=scaled(10), resume_secret=SECRET,
                          setup=lambda server: server.define("table", Table))
    holder, claimer = servers[0], servers[1]
    owning = servers[["holder", "claimer", "third"].index(owner)]
    room_id = await owning.default.create_room("table", room_id="table:m")
    room = owning.default.game_room(room_id)
    assert room is not None
    client = await SessionClient.open(holder.address[1])
    await client.join(room_id)
    await eventually(lambda: client.id in room.players)
    player = room.players[client.id]
    seen: dict[str, list[int]] = {"n": []}
    sent = 0
    stop = asyncio.Event()

    async def sends() -> None:
        # One a loop turn, so that every step of the move has some in flight.
        nonlocal sent
        while not stop.is_set():
            player.send("n", str(sent))
            sent += 1
            await asyncio.sleep(0)

    task = asyncio.ensure_future(sends())
    try:
        await _read(client, seen, 300)
        client.reset()
        await eventually(lambda: holder.stats()["sessions_held"] == 1)
        client.port = claimer.address[1]
        again = await client.resume()
        assert again.verdict is not None and again.verdict.event == "session.resumed", \
            again.verdict
        await _read(again, seen, seen["n"][-1] + 300)
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)
    await _read(again, seen, sent - 1)
    assert seen["n"] == list(range(sent)), _gaps(seen["n"])
    assert room.players.get(client.id) is player
    cluster = claimer.registry.cluster
    assert cluster is not None
    assert player.node == ("" if owner == "claimer" else cluster.key)
    await again.send(room_id, "note", b"still here")
    while (msg := await again.recv()).event != "noted":
        pass
    assert msg.payload == b"still here" and room.seen[-1] == (client.id, "still here")
    assert claimer.members(room_id) == [client.id]


async def test_the_python_client_moves_with_its_namespace_direct_and_all_messages(
        backplane_url: str, prefix: str) -> None:
    """A v2 client of roomer.client behind a load balancer that sends its reconnect to the
    other node: its namespace room, the messages sent to it by id and those to everyone
    all arrive once and in order across the move."""
    servers = []
    for i in range(2):
        server = roomer.Server(backplane=backplane_url, backplane_prefix=prefix,
                               node_id=f"m{i}", resume_window=scaled(10), resume_secret=SECRET)
        server.namespace("chat")
        await server.start("127.0.0.1", 0)
        servers.append(server)
    a_node, b_node = servers
    balancer = Proxy(a_node.address[1])
    await balancer.start()
    root = await roomer.connect(f"ws://127.0.0.1:{balancer.port}/ws", protocol="v2",
                                resume=True)
    try:
        chat = root.namespace("chat")
        await chat
        table = chat.join("t")
        await table
        got: dict[str, list[int]] = {"tick": [], "dm": [], "all": []}
        table.on("tick", lambda payload, sender: got["tick"].append(int(payload)))
        root.on("dm", lambda payload, sender: got["dm"].append(int(payload)))
        root.on("all", lambda payload, sender: got["all"].append(int(payload)))
        resumed = asyncio.ensure_future(root.wait_for("resumed", TIMEOUT))
        first_id = root.id()
        assert a_node.namespace("chat").members("t") == [first_id]

        async def streams() -> None:
            for n in range(1500):
                a_node.namespace("chat").broadcast("t", "tick", str(n))
                b_node.send_to(first_id, "dm", str(n))
                b_node.broadcast_all("all", str(n))
                if n % 10 == 9:
                    await pace(0.01)
                if n == 500:
                    await balancer.cut()  # a reset both ways, mid-stream
                    balancer.target_port = b_node.address[1]
                    await balancer.restore()

        await asyncio.wait_for(streams(), scaled(20))
        assert await resumed == (first_id,)
        await eventually(lambda: all(len(seen) >= 1500 for seen in got.values()), 10)
        for event, seen in got.items():
            assert seen == list(range(1500)), (event, _gaps(seen))
        assert root.id() == first_id and b_node.connection(first_id) is not None
        assert b_node.stats()["sessions_moved_in"] == 1
    finally:
        await root.close()
        await balancer.cut()
        for server in servers:
            await server.shutdown(timeout=2)


async def test_conn_data_moves_and_the_move_hooks_run(nodes: Nodes) -> None:  # noqa: F811
    """``conn.data`` crosses with the session (what JSON can carry); on_moved_out runs on
    the node it leaves, on_moved_in on the node it reaches, and no connect, disconnect,
    join or leave hook runs on either."""
    seen: list[tuple[str, Any]] = []

    def setup(server: roomer.Server) -> None:
        @server.on_connect
        def named(conn: roomer.Connection) -> None:
            seen.append(("connect", conn.id))
            conn.data["nick"] = "ada"
            conn.data["since"] = [1, 2]

        server.on_disconnect(lambda conn: seen.append(("disconnect", conn.id)))
        server.on_left(lambda conn, room: seen.append(("left", conn.id)))
        server.on_joined(lambda conn, room: seen.append(("joined", conn.id)))
        server.on_moved_out(lambda conn: seen.append(("out", server.config.node_id, conn.id)))
        server.on_moved_in(lambda conn: seen.append(
            ("in", server.config.node_id, conn.id, dict(conn.data))))

    a_node, b_node = await nodes(2, resume_window=scaled(10), resume_secret=SECRET,
                                 setup=setup)
    client = await SessionClient.open(a_node.address[1])
    await client.join("game")
    seen.clear()
    client.reset()
    await eventually(lambda: a_node.stats()["sessions_held"] == 1)
    client.port = b_node.address[1]
    again = await client.resume()
    assert again.verdict is not None and again.verdict.event == "session.resumed"
    await eventually(lambda: len(seen) == 2)
    assert sorted(seen, key=str) == sorted([
        ("in", b_node.config.node_id, client.id, {"nick": "ada", "since": [1, 2]}),
        ("out", a_node.config.node_id, client.id)], key=str)
    moved = b_node.connection(client.id)
    assert moved is not None and moved.data == {"nick": "ada", "since": [1, 2]}
    # What JSON cannot carry stays behind: the session still moves, with empty data.
    moved.data["socket"] = object()
    again.reset()
    await eventually(lambda: b_node.stats()["sessions_held"] == 1)
    again.port = a_node.address[1]
    back = await again.resume()
    assert back.verdict is not None and back.verdict.event == "session.resumed"
    home = a_node.connection(client.id)
    assert home is not None and home.data == {}


class Match(roomer.GameRoom):
    """A room type whose on_drop holds a dropped player by the room's id: ``match:zero-*``
    not at all, ``match:long-*`` for a long time (more than the server's window)."""

    max_clients = 8
    auto_dispose = False
    gone: asyncio.Queue[tuple[str, str]]

    def on_drop(self, player: roomer.Player) -> float | None:
        if self.id.startswith("match:zero"):
            return 0
        return scaled(60) if self.id.startswith("match:long") else None

    def on_left(self, player: roomer.Player, consented: bool) -> None:
        Match.gone.put_nowait((self.id, player.id))


async def test_on_drop_sets_each_players_window_on_any_node(nodes: Nodes) -> None:  # noqa: F811
    """A room's on_drop shortens (0: the player leaves now) or lengthens the window of a
    dropped player, whether the room is owned by the player's node or another one (whose
    answer comes through the backplane)."""
    Match.gone = asyncio.Queue()
    a_node, b_node = await nodes(2, resume_window=scaled(3), resume_secret=SECRET,
                                 setup=lambda server: server.define("match", Match))
    for owner, name in ((a_node, "a"), (b_node, "b")):
        for kind in ("zero", "long"):
            await owner.default.create_room("match", room_id=f"match:{kind}-{name}")
    players = {}
    for room in ("match:zero-a", "match:long-a", "match:zero-b", "match:long-b", "game"):
        players[room] = client = await SessionClient.open(a_node.address[1])
        await client.join(room)
    for client in players.values():
        client.reset()
    # Owned here, 0: never held. Owned by b, 0: held until b's answer, then it ends.
    left = {await asyncio.wait_for(Match.gone.get(), TIMEOUT) for _ in range(2)}
    assert left == {("match:zero-a", players["match:zero-a"].id),
                    ("match:zero-b", players["match:zero-b"].id)}
    assert a_node.stats()["sessions_held"] >= 3  # the others, within the server's window
    # The server's window (3 s) ends for the player in no game room; the long ones stay.
    await eventually(lambda: a_node.stats()["sessions_expired"] == 2, 10)
    for room in ("match:long-a", "match:long-b"):
        again = await players[room].resume()
        assert again.verdict is not None and again.verdict.event == "session.resumed", room
    assert Match.gone.empty()
