"""Membership that changes while messages fan out: leaves, disconnects, handler moves."""

from __future__ import annotations

import asyncio
from typing import Any

from rawsocket import RawSocket, joined
from waiting import scaled

import roomer


async def _events(client: RawSocket, stop: str) -> list[tuple[str, str, bytes]]:
    got = []
    while True:
        room, event, _, _, payload = await client.recv()
        got.append((room, event, payload))
        if event == stop:
            return got


async def test_receivers_leaving_and_dropping_mid_flood(make_server: Any) -> None:
    server = await make_server(rate_limit=None, byte_limit=None)  # a flood on purpose
    port = server.address[1]
    stayers = [await joined(port, "r") for _ in range(10)]
    leavers = [await joined(port, "r") for _ in range(10)]
    droppers = [await joined(port, "r") for _ in range(10)]
    sender, sender_id = await joined(port, "r")
    count = 300

    async def flood() -> None:
        for n in range(count):
            await sender.send("r", "m", b"%d" % n)
            if n == 100:
                for client, _ in leavers:
                    await client.send("r", "leave")
                for client, _ in droppers:
                    client.close()
        await sender.send("r", "end")

    reading = [asyncio.ensure_future(_events(c, "end")) for c, _ in stayers]
    leaving = [asyncio.ensure_future(_events(c, "leave_ack")) for c, _ in leavers]
    await flood()
    for got in await asyncio.wait_for(asyncio.gather(*reading), scaled(30)):
        relayed = [p for room, event, p in got if event == "m"]
        assert relayed == [b"%d" % n for n in range(count)]
        left = {p.decode() for room, event, p in got if event == "member_left"}
        assert left == {cid for _, cid in leavers + droppers}
    for got in await asyncio.wait_for(asyncio.gather(*leaving), scaled(30)):
        relayed = [int(p) for room, event, p in got if event == "m"]
        assert relayed == list(range(len(relayed)))  # a prefix, in order
        assert got[-1][1] == "leave_ack"
    # after its leave_ack a leaver gets nothing more of room r
    for client, _ in leavers:
        await client.send("root", "probe", b"")  # a handler-less root send answers an error
        room, event, _, _, _ = await client.recv()
        assert (room, event) == ("root", "error")
    assert sorted(server.members("r")) == sorted([cid for _, cid in stayers] + [sender_id])
    for client, _ in stayers + leavers:
        client.close()
    sender.close()


async def test_handler_moves_rooms_while_broadcasting(make_server: Any) -> None:
    server = await make_server()

    @server.on("move")
    def move(conn: roomer.Connection, msg: roomer.Message) -> None:
        # Broadcast, leave, join and broadcast again inside one handler call.
        conn.send_to_room("a", "bye", b"")
        conn.leave("a")
        conn.join("b")
        conn.send_to_room("b", "hello", b"")

    port = server.address[1]
    in_a, _ = await joined(port, "a")
    in_b, _ = await joined(port, "b")
    mover, mover_id = await joined(port, "a")
    await mover.send("a", "move")
    got_a = await asyncio.wait_for(_events(in_a, "member_left"), scaled(5))
    assert [(e, p) for _, e, p in got_a] == [
        ("new_member", mover_id.encode()), ("bye", b""), ("member_left", mover_id.encode())]
    got_b = await asyncio.wait_for(_events(in_b, "hello"), scaled(5))
    assert [(e, p) for _, e, p in got_b] == [("new_member", mover_id.encode()), ("hello", b"")]
    got_mover = await asyncio.wait_for(_events(mover, "join_ack"), scaled(5))
    assert [(r, e) for r, e, _ in got_mover] == [("a", "leave_ack"), ("b", "join_ack")]
    assert server.members("b")[-1] == mover_id
    assert mover_id not in server.members("a")
    for client in (in_a, in_b, mover):
        client.close()
