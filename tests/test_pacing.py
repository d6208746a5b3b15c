"""One client never gets more than its share of a loop turn, whatever it sends (issue:
a malformed flood stalled everyone for seconds; only relays were paced).

Each scenario sends hundreds of messages of one kind in a single write, so the server
reads them all at once, and records which loop turn handled each one: no turn may
handle more than ``turn_messages`` of one connection, and every message is still
handled, in order. Rate and error limits are off here (they are tested on their own).
"""

from __future__ import annotations

import asyncio
import collections
import json
import socket
import struct
import uuid
from typing import Any

import pytest
from rawsocket import RawSocket, joined
from waiting import eventually, scaled, suspend

import roomer

TURN_MESSAGES = 16
COUNT = 400


def _body(room: bytes, event: bytes, dst: bytes = b"", payload: bytes = b"") -> bytes:
    return b"".join(struct.pack(">I", len(f)) + f for f in (room, event, dst, b"", payload))


def _spy_turns(server: roomer.Server) -> collections.Counter[tuple[int, str]]:
    """Messages handled per (loop turn, connection), by the router or the relay path."""
    router = server._core.router
    relay = router.relay
    counts: collections.Counter[tuple[int, str]] = collections.Counter()
    dispatch = router.dispatch

    def counted(conn: roomer.Connection, data: bytes) -> Any:
        counts[(relay.turn, conn.id)] += 1
        return dispatch(conn, data)

    def taken(conn: roomer.Connection) -> None:
        counts[(relay.turn, conn.id)] += 1

    router.dispatch = counted  # type: ignore[method-assign]
    relay.on_taken = taken
    return counts


async def _drain(client: RawSocket, want: int, timeout: float = 20) -> list[tuple]:
    got: list[tuple] = []

    async def read() -> None:
        while len(got) < want:
            got.append(await client.recv())

    await asyncio.wait_for(read(), timeout)
    return got


SCENARIOS = ["malformed", "invalid_name", "reserved", "join_leave", "rejoin", "dm_unknown",
             "dm_real", "handler_send", "async_handler", "relay", "not_member"]


@pytest.mark.parametrize("kind", SCENARIOS)
async def test_every_kind_of_message_is_paced(make_server: Any, kind: str) -> None:
    server = await make_server(turn_messages=TURN_MESSAGES, rate_limit=None, byte_limit=None,
                               error_limit=None,
                               max_rooms_per_connection=None)

    @server.on("poke")
    def poke(conn: roomer.Connection, msg: roomer.Message) -> None:
        conn.send_to_room(msg.room, "poked", msg.payload)
        conn.send("poked-you", msg.payload, msg.room)

    @server.on("slowpoke")
    async def slowpoke(conn: roomer.Connection, msg: roomer.Message) -> None:
        await suspend()
        conn.send("poked-you", msg.payload, msg.room)

    port = server.address[1]
    peer, peer_id = await joined(port, "r")
    abuser, abuser_id = await joined(port, "r")
    await peer.recv()  # the abuser's new_member
    counts = _spy_turns(server)
    bodies = {
        "malformed": [b"\x00\x01\x02"] * COUNT,
        "invalid_name": [_body(b"\xff\xfe", b"ev")] * COUNT,
        "reserved": [_body(b"r", b"join_ack")] * COUNT,
        "join_leave": [_body(f"x{i // 2}".encode(), b"join" if i % 2 == 0 else b"leave")
                       for i in range(COUNT)],
        "rejoin": [_body(b"r", b"join")] * COUNT,
        "dm_unknown": [_body(b"root", b"dm", str(uuid.uuid4()).encode())] * COUNT,
        "dm_real": [_body(b"root", b"dm", peer_id.encode(), b"%d" % i) for i in range(COUNT)],
        "handler_send": [_body(b"r", b"poke", b"", b"%d" % i) for i in range(COUNT)],
        "async_handler": [_body(b"r", b"slowpoke", b"", b"%d" % i) for i in range(COUNT)],
        "relay": [_body(b"r", b"chat", b"", b"%d" % i) for i in range(COUNT)],
        "not_member": [_body(b"elsewhere", b"chat")] * COUNT,
    }[kind]
    await abuser.send_bodies(bodies)
    # Every message is handled, and answered, in order.
    replies = {"dm_real": 0, "relay": 0, "handler_send": COUNT}.get(kind, COUNT)
    got = await _drain(abuser, replies)
    if kind in ("dm_real", "relay", "handler_send"):
        received = await _drain(peer, COUNT)
        assert [m[4] for m in received] == [b"%d" % i for i in range(COUNT)]
    if kind in ("handler_send", "async_handler"):
        assert [m[4] for m in got] == [b"%d" % i for i in range(COUNT)]
    elif kind == "join_leave":
        assert [m[1] for m in got] == ["join_ack", "leave_ack"] * (COUNT // 2)
    elif kind == "rejoin":
        assert all(m[1] == "join_ack" for m in got)
    elif replies:
        assert all(m[1] == "error" for m in got)
    mine = {turn: n for (turn, conn_id), n in counts.items() if conn_id == abuser_id}
    assert sum(mine.values()) == COUNT
    assert max(mine.values()) <= TURN_MESSAGES, mine
    assert len(mine) >= COUNT // TURN_MESSAGES  # spread over that many turns at least
    if kind != "async_handler":  # (each of those ends its turn by going async)
        assert server.counters["turn_holds"] > 0
    if kind in ("relay", "dm_real"):
        # Relays and direct messages took the relay path, under the same bound: those
        # read while the budget held the connection too, once it was read again.
        assert server._core.router.relay.taken == COUNT
    for client in (peer, abuser):
        client.close()


@pytest.mark.parametrize("write_delay", [0, 0.05])
async def test_presence_amplification_stays_within_the_turn_budget(
        make_server: Any, write_delay: float) -> None:
    """A join/leave loop in a 100-member room: each message sends presence to 99 others,
    and what one turn queues stays within turn_budget per receiver touched (with a write
    delay too, where one write spans many turns)."""
    budget = 4 * 1024
    server = await make_server(turn_budget=budget, rate_limit=None, byte_limit=None,
                               error_limit=None, write_delay=write_delay)
    engine_turns: list[tuple[int, int]] = []
    router = server._core.router
    hold = router._hold

    def spy(conn: roomer.Connection) -> None:
        engine = server._core.engine
        engine_turns.append((engine.turn_bytes, engine.turn_receivers))
        hold(conn)

    router._hold = spy  # type: ignore[method-assign]
    port = server.address[1]
    members = [(await joined(port, "big"))[0] for _ in range(100)]
    for i, member in enumerate(members):  # each has the later joiners' new_member queued
        for _ in range(99 - i):
            await member.recv()
    abuser, _ = await joined(port, "other")
    await abuser.send_bodies([_body(b"big", b"join" if i % 2 == 0 else b"leave")
                              for i in range(600)])
    got = await _drain(abuser, 600)
    assert [m[1] for m in got] == ["join_ack", "leave_ack"] * 300
    received = await _drain(members[0], 600)
    assert [m[1] for m in received] == ["new_member", "member_left"] * 300
    assert engine_turns, "the flood was never held"
    one_message = 100 * 120  # presence to every member, frame overhead included
    assert max(b / r for b, r in engine_turns) < budget + one_message / 100
    for client in [*members, abuser]:
        client.close()


async def test_a_re_join_spray_never_loses_an_ack(make_server: Any) -> None:
    """Acks are control frames: 3,000 re-joins into a busy room, all answered."""
    server = await make_server(rate_limit=None, byte_limit=None, error_limit=None)
    port = server.address[1]
    others = [(await joined(port, "busy"))[0] for _ in range(30)]
    sprayer, sprayer_id = await joined(port, "busy")
    await sprayer.send_bodies([_body(b"busy", b"join")] * 3000)
    got = await _drain(sprayer, 3000, timeout=scaled(30))
    assert all(m[1] == "join_ack" and m[3] == sprayer_id for m in got)
    assert len(json.loads(got[-1][4])) == 31
    assert server.stats()["dropped"] == 0
    for client in [*others, sprayer]:
        client.close()


async def test_a_client_that_never_reads_its_replies_is_cut_off_not_grown(
        make_server: Any) -> None:
    """Control replies are never dropped; a client that never reads them takes the
    outbox past its hard limit (2x outbox_limit) and is disconnected, once."""
    limit = 32 * 1024
    server = await make_server(outbox_limit=limit, rate_limit=None, byte_limit=None,
                               error_limit=None)
    port = server.address[1]
    stuck = await RawSocket.open(port, rcvbuf=4096)
    await stuck.recv()  # root join_ack
    conn = server.connections()[0]
    # A small kernel send buffer, so what the client leaves unread piles up in roomer.
    conn.transport.underlying_transport.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    seen: list[int] = []

    async def push_until_cut() -> bool:
        if server.connection_count == 0:
            return True
        await stuck.send_bodies([b"\x00\x01"] * 200)  # 200 malformed errors, never read
        seen.append(conn.pending)
        return False

    await eventually(push_until_cut, what="the client that never reads cut off")
    assert max(seen) <= 2 * limit
    assert server.counters["dropped_slow_disconnects"] == 1
    stuck.close()
