"""The routing of game room messages with no socket (tests/sansio.py): what the router
hands roomer/games and what comes back, exactly, for v1 and v2 clients."""

from __future__ import annotations

import asyncio
import json

import game_app
from sansio import Node

from roomer import frames


def node(**options: object) -> Node:
    return Node(asyncio.get_running_loop(), setup=game_app.setup, **options)


def answers(n: Node, conn: object) -> list[tuple[int, int, str, str, dict]]:
    """(kind, id, room, event, JSON payload) of what ``conn`` (v2) was sent."""
    out = []
    for kind, ask, _, msg in n.received(conn):  # type: ignore[arg-type]
        out.append((kind, ask, msg.room, msg.event, json.loads(msg.payload or b"null")))
    return out


async def test_game_asks_as_events_and_sent_events_are_refused() -> None:
    n = node()
    a = n.connect(v2=True)
    await n.turn()
    n.received(a)
    n.send_v2(a, "table", "room.create")  # an event: nothing could carry the id
    n.send_v2(a, "table:x", "room.closed", kind=frames.ASK, ask=3)
    n.send_v2(a, "table", "rooms.watch", b"[]", kind=frames.ASK, ask=4)
    await n.turn()
    got = answers(n, a)
    assert [(k, i, e, p["code"]) for k, i, _, e, p in got] == [
        (frames.EVENT, 0, "error", "forbidden"),
        (frames.ERROR_REPLY, 3, "room.closed", "reserved_event"),
        (frames.ERROR_REPLY, 4, "rooms.watch", "invalid_options")]


async def test_a_game_room_message_is_never_relayed() -> None:
    n = node()
    a, b = n.connect(v2=True), n.connect()  # b speaks v1
    await n.turn()
    n.received(a)
    n.received(b)
    n.send_v2(a, "table:here", "room.create", kind=frames.ASK, ask=1)
    for _ in range(3):
        await n.turn()
    (reply, welcome) = answers(n, a)
    assert reply[:2] == (frames.REPLY, 1) and reply[4]["room"] == "table:here"
    assert welcome[3] == "welcome"
    n.send(b, "table:here", "join")  # v1: a plain join is a game join
    for _ in range(3):
        await n.turn()
    assert [m.event for m in n.received(b)] == ["join_ack", "welcome"]
    n.received(a)
    n.send(b, "table:here", "chat", b"hello")  # no handler in the room: refused, not relayed
    await n.turn()
    (error,) = n.received(b)
    assert (error.event, json.loads(error.payload)["code"]) == ("error", "no_handler")
    assert n.received(a) == []


async def test_a_plain_room_with_a_colon_is_plain_when_its_prefix_is_no_type() -> None:
    n = node()
    a, b = n.connect(), n.connect()
    await n.turn()
    n.received(a)
    n.received(b)
    for conn in (a, b):
        n.send(conn, "chat:general", "join")
    await n.turn()
    n.received(a)
    n.received(b)
    n.send(a, "chat:general", "say", b"hi")
    await n.turn()
    (relayed,) = n.received(b)
    assert (relayed.event, relayed.payload) == ("say", b"hi")
