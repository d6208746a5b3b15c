"""Rooms over real loopback sockets: root auto-join, join/leave acks, presence
(docs/protocol.md §8)."""

from __future__ import annotations

import asyncio
import json

from rawclient import connect, encode, eventually, pair_in
from waiting import scaled, suspend


def test_rawclient_encodes_the_design_example() -> None:
    # docs/protocol.md §2: a client asking to join "lobby" is exactly these 29 bytes.
    example = "00000005 6c6f626279 00000004 6a6f696e 00000000 00000000 00000000"
    assert encode("lobby", "join") == bytes.fromhex(example.replace(" ", ""))


# root ---------------------------------------------------------------------------------


async def test_root_join_ack_tells_the_id(make_server) -> None:
    server = await make_server()
    a = await connect(server)
    ack = a.root_ack
    assert ack is not None
    assert (ack.room, ack.event, ack.dst, ack.src) == ("root", "join_ack", "", a.id)
    assert json.loads(ack.payload) == [a.id]
    b = await connect(server)
    assert b.id != a.id
    assert sorted(server.members("root")) == sorted([a.id, b.id])
    assert "root" in server.rooms()


async def test_quiet_root_by_default(make_server) -> None:
    server = await make_server()
    a = await connect(server)
    b = await connect(server)
    assert json.loads(b.root_ack.payload) == [b.id]  # lists only itself
    await a.expect_nothing()  # no new_member in root
    await b.close()
    await eventually(lambda: server.connection_count == 1)
    await a.expect_nothing()  # no member_left in root


async def test_root_presence_option(make_server) -> None:
    server = await make_server(root_presence=True)
    a = await connect(server)
    b = await connect(server)
    assert sorted(json.loads(b.root_ack.payload)) == sorted([a.id, b.id])
    msg = await a.expect("new_member", "root")
    assert (msg.src, msg.dst, msg.payload) == ("", "", b.id.encode())
    await b.close()
    msg = await a.expect("member_left", "root")
    assert (msg.src, msg.dst, msg.payload) == ("", "", b.id.encode())


async def test_leave_root_and_join_it_again_quietly(make_server) -> None:
    server = await make_server()
    a = await connect(server)
    b = await connect(server)
    await a.leave("root")
    assert server.members("root") == [b.id]
    await b.expect_nothing()
    assert await a.join("root") == [a.id]  # quiet join_ack: only itself
    await b.expect_nothing()
    assert sorted(server.members("root")) == sorted([a.id, b.id])


# join / leave ---------------------------------------------------------------------------


async def test_join_acks_and_new_member(make_server) -> None:
    server = await make_server()
    a = await connect(server)
    b = await connect(server)
    c = await connect(server)
    assert await a.join("lobby") == [a.id]
    assert sorted(await b.join("lobby")) == sorted([a.id, b.id])
    msg = await a.expect("new_member", "lobby")
    assert (msg.src, msg.dst, msg.payload) == ("", "", b.id.encode())
    assert sorted(await c.join("lobby")) == sorted([a.id, b.id, c.id])
    for other in (a, b):
        msg = await other.expect("new_member", "lobby")
        assert (msg.src, msg.dst, msg.payload) == ("", "", c.id.encode())
    await c.expect_nothing()  # the joiner gets no new_member about itself
    assert server.members("lobby") == [a.id, b.id, c.id]  # join order


async def test_rejoin_resends_join_ack_without_new_member(make_server) -> None:
    server = await make_server()
    a = await connect(server)
    b = await connect(server)
    await a.join("lobby")
    await b.join("lobby")
    await a.expect("new_member", "lobby")
    assert sorted(await b.join("lobby")) == sorted([a.id, b.id])
    await a.expect_nothing()
    assert server.members("lobby") == [a.id, b.id]


async def test_leave_acks_member_left_and_idempotence(make_server) -> None:
    server = await make_server()
    a, b = await pair_in(server, "lobby")
    await b.leave("lobby")
    msg = await a.expect("member_left", "lobby")
    assert (msg.src, msg.dst, msg.payload) == ("", "", b.id.encode())
    assert server.members("lobby") == [a.id]
    await b.leave("lobby")  # idempotent: leave_ack again...
    await a.expect_nothing()  # ...and no second member_left
    await b.leave("never-joined")
    await a.expect_nothing()
    assert "never-joined" not in server.rooms()
    assert b.id not in server.members("lobby")


async def test_no_broadcast_after_leave_ack(make_server) -> None:
    server = await make_server()
    a, b = await pair_in(server, "r")
    await b.send("r", "leave")
    # a keeps relaying into the room while b's leave is processed.
    for i in range(50):
        await a.send("r", "chat", payload=str(i))
    seen_ack = False
    while True:
        msg = await b.recv()
        if msg.event == "leave_ack":
            seen_ack = True
            break
        assert msg.event == "chat" and msg.room == "r"
    assert seen_ack
    for i in range(20):
        await a.send("r", "chat", payload=f"after{i}")
    server.broadcast("r", "tick", b"x")
    await b.expect_nothing()


async def test_empty_rooms_are_deleted(make_server) -> None:
    server = await make_server()
    a = await connect(server)
    b = await connect(server)
    await a.join("one")
    await b.join("one")
    await a.expect("new_member", "one")
    await a.join("two")
    assert {"root", "one", "two"} <= set(server.rooms())
    await a.leave("two")
    assert "two" not in server.rooms()
    assert server.members("two") == []
    await a.leave("one")
    assert "one" in server.rooms()
    await b.expect("member_left", "one")
    await b.leave("one")
    assert "one" not in server.rooms()
    await b.join("three")
    await b.close()
    await eventually(lambda: "three" not in server.rooms())


async def test_disconnect_sends_member_left_in_every_room(make_server) -> None:
    server = await make_server()
    a = await connect(server)
    b = await connect(server)
    c = await connect(server)
    for room in ("r1", "r2"):
        await a.join(room)
        await b.join(room)
        await a.expect("new_member", room)
    await c.join("r2")
    await a.expect("new_member", "r2")
    await b.expect("new_member", "r2")
    await b.close()
    got = {(m.room, m.event, m.src, m.payload) for m in [await a.recv(), await a.recv()]}
    assert got == {("r1", "member_left", "", b.id.encode()),
                   ("r2", "member_left", "", b.id.encode())}
    msg = await c.expect("member_left", "r2")
    assert msg.payload == b.id.encode()
    await a.expect_nothing()
    await c.expect_nothing()
    assert server.members("r1") == [a.id]
    assert server.members("r2") == [a.id, c.id]


async def test_join_ack_comes_before_later_broadcasts(make_server) -> None:
    # a relays into "r" non-stop while b joins: the first thing b sees in "r" must be
    # its join_ack, never a relay that overtook it.
    server = await make_server()
    a = await connect(server)
    await a.join("r")

    async def spam() -> None:
        for i in range(300):
            await a.send("r", "chat", payload=str(i))
            if i % 10 == 0:
                server.broadcast("r", "tick")
                await suspend()  # the joins interleave with the relays

    joiners = [await connect(server) for _ in range(4)]
    task = asyncio.create_task(spam())
    try:
        for j in joiners:
            await j.send("r", "join")
        for j in joiners:
            first = await j.recv()
            assert (first.room, first.event) == ("r", "join_ack"), first
    finally:
        await asyncio.wait_for(task, scaled(10))


async def test_join_ack_before_broadcast_from_handler(make_server) -> None:
    server = await make_server()

    @server.on("enter")
    def enter(conn, msg) -> None:
        conn.join("game")
        server.broadcast("game", "welcome", conn.id)

    a = await connect(server)
    b = await connect(server)
    await a.join("game")
    await b.send("root", "enter")
    ack = await b.expect("join_ack", "game")
    assert sorted(ack.json()) == sorted([a.id, b.id])
    welcome = await b.expect("welcome", "game")
    assert (welcome.src, welcome.dst, welcome.payload) == ("", "", b.id.encode())
    assert (await a.expect("new_member", "game")).payload == b.id.encode()
    assert (await a.expect("welcome", "game")).payload == b.id.encode()


async def test_server_driven_join_and_leave(make_server) -> None:
    server = await make_server()
    joined: list[str] = []

    @server.on_join
    def on_join(conn, room) -> None:  # not called for server-driven moves
        joined.append(room)

    @server.on("move")
    def move(conn, msg) -> None:
        conn.leave("old")
        conn.join("new")

    a = await connect(server)
    b = await connect(server)
    await a.join("old")
    await b.join("new")
    await a.send("root", "move")
    await a.expect("leave_ack", "old")
    ack = await a.expect("join_ack", "new")
    assert ack.src == a.id and sorted(ack.json()) == sorted([a.id, b.id])
    assert (await b.expect("new_member", "new")).payload == a.id.encode()
    assert "old" not in server.rooms()
    conn = server.connection(a.id)
    assert conn is not None and conn.rooms == frozenset({"root", "new"})
    assert joined == ["old", "new"]  # the two client joins; conn.join ran no hook
