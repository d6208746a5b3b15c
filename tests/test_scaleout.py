"""Servers sharing rooms through a backplane: the semantics of one node across nodes
over real Redis and NATS and the in-process hub, with real clients on
each server. tests/test_scaleout_procs.py runs the same over separate processes."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from rawclient import connect, eventually, http_get
from waiting import scaled

import roomer

Nodes = Callable[..., Awaitable[list[roomer.Server]]]


@pytest.fixture
async def nodes(backplane_url: str, prefix: str) -> AsyncIterator[Nodes]:
    """``await nodes(n, setup=None, **options)``: n servers on free ports over one
    backplane (``setup(server)`` before each starts)."""
    started: list[roomer.Server] = []

    async def start(count: int = 2, setup: Callable[[roomer.Server], None] | None = None,
                    **options: Any) -> list[roomer.Server]:
        made = []
        for i in range(count):
            server = roomer.Server(backplane=backplane_url, backplane_prefix=prefix,
                                   node_id=f"n{len(started)}-{i}", **options)
            if setup is not None:
                setup(server)
            await server.start("127.0.0.1", 0)
            started.append(server)
            made.append(server)
        return made

    yield start
    for server in started:
        await server.shutdown(timeout=2.0)


async def test_a_room_spans_nodes(nodes: Nodes) -> None:
    a_node, b_node = await nodes(2)
    a = await connect(a_node)
    b = await connect(b_node)
    assert await a.join("lobby") == [a.id]
    listed = await b.join("lobby")  # b's node learns a's members before its join_ack
    assert listed == [b.id, a.id]
    assert (await a.expect("new_member", "lobby")).text == b.id
    assert sorted(a_node.members("lobby")) == sorted(b_node.members("lobby")) == sorted(
        [a.id, b.id])
    taken = a_node._core.router.relay.taken
    await a.send("lobby", "chat", payload=b"hi from a")
    got = await b.expect("chat", "lobby")
    assert (got.src, got.payload) == (a.id, b"hi from a")
    # It took the relay path, which publishes to the other nodes as the router does.
    assert a_node._core.router.relay.taken == taken + 1
    await a.expect_nothing()  # the sender is excluded on every node
    await b.send("lobby", "chat", payload=b"hi from b")
    assert (await a.expect("chat", "lobby")).payload == b"hi from b"
    await b.leave("lobby")
    assert (await a.expect("member_left", "lobby")).text == b.id
    assert a_node.members("lobby") == [a.id]


async def test_three_nodes_and_server_side_broadcasts(nodes: Nodes) -> None:
    servers = await nodes(3)
    clients = [await connect(s) for s in servers]
    for i, client in enumerate(clients):
        await client.join("arena")
        for earlier in clients[:i]:
            await earlier.expect("new_member", "arena")
    await servers[1].broadcast("arena", "tick", "t1")
    for client in clients:
        assert (await client.expect("tick", "arena")).payload == b"t1"
    await servers[2].broadcast("arena", "tick", "t2", exclude=clients[0].id)
    for client in clients[1:]:
        assert (await client.expect("tick")).payload == b"t2"
    await clients[0].expect_nothing()
    await servers[0].broadcast_all("news", "to all")
    for client in clients:
        assert (await client.expect("news", "root")).payload == b"to all"


async def test_direct_messages_find_the_node_that_holds_the_id(nodes: Nodes) -> None:
    a_node, b_node = await nodes(2)
    a = await connect(a_node)
    b = await connect(b_node)
    # b's node has the broker's word that it listens on b's direct channel (a client
    # that connected less than a broker round trip ago is not reachable yet).
    cluster = b_node._core.default.registry.cluster
    await asyncio.wait_for(cluster.transport.flush(), scaled(5))
    await a.send("root", "psst", dst=b.id, payload=b"secret")
    got = await b.expect("psst", "root")
    assert (got.src, got.dst, got.payload) == (a.id, b.id, b"secret")
    await a.send("root", "psst", dst=str(uuid.uuid4()))
    await a.expect_error("no_such_client", "root", "psst")
    assert a_node.send_to(b.id, "from-server", "x") is True
    assert (await b.expect("from-server")).payload == b"x"


async def test_a_node_that_shuts_down_takes_its_members_out(nodes: Nodes) -> None:
    a_node, b_node = await nodes(2)
    a = await connect(a_node)
    b = await connect(b_node)
    await a.join("r")
    await b.join("r")
    await a.expect("new_member", "r")
    await b_node.shutdown(timeout=2.0)
    assert (await a.expect("member_left", "r", timeout=scaled(5))).text == b.id
    await eventually(lambda: a_node.members("r") == [a.id])


async def test_health_and_metrics_show_the_backplane(nodes: Nodes) -> None:
    (server,) = await nodes(1)
    await nodes(1)
    status, _, body = await http_get(server, "/healthz")
    assert (status, body) == (200, b"ok\n")  # the detail is for health_detail=True only
    text = server.health_text()
    assert text.startswith("ok\n") and ": connected; other nodes: 1" in text
    _, _, body = await http_get(server, "/metrics")
    metrics = body.decode()
    for name in ("roomer_backplane_connected 1", "roomer_backplane_nodes 1",
                 "roomer_backplane_published_total", "roomer_backplane_dropped_total"):
        assert name in metrics, name
    stats = server.stats()["backplane"]
    assert stats["connected"] is True and "://" in stats["url"]
    assert json.dumps(stats)  # plain data


def test_backplane_options_are_validated() -> None:
    for options, error in (({"backplane": "http://x"}, ValueError),
                           ({"backplane": 6379}, TypeError),
                           ({"node_id": "no spaces"}, ValueError),
                           ({"node_timeout": 0}, ValueError),
                           ({"backplane_prefix": "a b"}, ValueError)):
        with pytest.raises(error):
            roomer.Server(**options)


async def test_a_missing_broker_is_a_clear_error_at_start() -> None:
    server = roomer.Server(backplane="redis://127.0.0.1:1/0")
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(server.start("127.0.0.1", 0), scaled(30))


async def test_a_leave_while_the_join_waits_for_the_backplane_wins(make_server) -> None:
    # A server-driven join waits for the other nodes' members; a leave meanwhile must
    # not be followed by the join landing anyway (leave_ack, then join_ack: a member the
    # app took out).
    server = await make_server(backplane=f"memory://{uuid.uuid4().hex}")

    @server.on("flip")
    def flip(conn, msg):  # type: ignore[no-untyped-def]
        assert conn.join("r") and conn.leave("r")

    a = await connect(server)
    await a.send("root", "flip")
    await a.expect("leave_ack", "r")
    await a.expect_nothing(0.5)
    assert server.members("r") == [] and server.connection(a.id).rooms == {"root"}
    assert "r" not in server.rooms()
    # Still joinable, by the client and by the server.
    assert await a.join("r") == [a.id]
    await a.leave("r")
    server.connection(a.id).join("r")
    await a.expect("join_ack", "r")


async def test_a_failed_listen_leaves_no_cluster_behind() -> None:
    # The cluster is joined before the listen call; when that fails (port in use) the
    # server is not started, so shutdown() does nothing: start itself must leave.
    from roomer.backplane.transport_memory import hub

    name = uuid.uuid4().hex
    before = asyncio.all_tasks()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = roomer.Server(backplane=f"memory://{name}")
        with pytest.raises(OSError):
            await server.start("127.0.0.1", port)
    assert server.registry.cluster is None
    assert hub(name).subscribers == {}
    await eventually(lambda: asyncio.all_tasks() == before, what="start's tasks all ended")
    await server.start("127.0.0.1", 0)  # and it can be started again
    try:
        assert hub(name).subscribers
    finally:
        await server.shutdown(timeout=1.0)


def test_room_names_must_fit_the_backplane_envelope() -> None:
    """The cluster names a namespace's room ``namespace\\x00room`` in one-byte-length name
    lists; a longer one raised inside loop callbacks (member-list requests) instead."""
    with pytest.raises(ValueError, match="max_room_name"):
        roomer.Server(backplane="memory://x", max_room_name=256)
    roomer.Server(max_room_name=1000).namespace("chat")  # no backplane: no envelope
    server = roomer.Server(backplane="memory://x", max_room_name=250)
    server.namespace("abcd")  # 4 + 1 + 250 = 255 fits
    with pytest.raises(ValueError, match="namespace 'abcde'"):
        server.namespace("abcde")


async def test_a_session_held_on_one_node_keeps_its_place_for_the_other(
        nodes: Nodes) -> None:
    """A client of node a drops and resumes there: b's member never sees it leave, and
    what b sends meanwhile reaches it; dropped again and ended, b sees it leave."""
    from test_sessions import SessionClient

    a_node, b_node = await nodes(2, resume_window=scaled(10))
    held = await SessionClient.open(a_node.address[1])
    await held.join("lobby")
    b = await connect(b_node)
    await b.join("lobby")
    await eventually(lambda: sorted(a_node.members("lobby")) == sorted([held.id, b.id]))
    held.reset()
    await eventually(lambda: a_node.stats()["sessions_held"] == 1)
    await b.send("lobby", "chat", payload=b"while you were away")
    again = await held.resume()
    assert again.verdict is not None and again.verdict.event == "session.resumed"
    got = await again.recv()
    while got.event != "chat":
        got = await again.recv()
    assert (got.src, got.payload) == (b.id, b"while you were away")
    assert sorted(b_node.members("lobby")) == sorted([held.id, b.id])
    await b.expect_nothing()  # no member_left (and v1: no member_dropped either)
    # Dropped again, and this time ended by the app (close of a held session): b sees
    # it leave, on its node too.
    again.reset()
    await eventually(lambda: a_node.stats()["sessions_held"] == 1)
    conn = a_node.connection(held.id)
    assert conn is not None
    conn.close()  # the app ends the held session: the client starts over
    assert (await b.expect("member_left", "lobby")).text == held.id
    assert b_node.members("lobby") == [b.id]
