"""Game rooms on two nodes in one process, over the in-process hub, the real Redis and the
real NATS (docs/design.md §10): seats counted once for the whole cluster under concurrent
joins, one tick per period at every member, joins, messages, answers and removals across
nodes, the atomic claim of a chosen id, the cluster's room list, and a node that leaves.
tests/test_games_procs.py kills an owner process with SIGKILL."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import game_app
import pytest
from clusterkit import Proxy, eventually
from test_games_list import Watcher, listed
from v2client import ERROR_REPLY, REPLY, Client2, connect2

import roomer

Nodes = Callable[..., Awaitable[list[roomer.Server]]]


@pytest.fixture
async def nodes(backplane_url: str, prefix: str) -> AsyncIterator[Nodes]:
    """``await nodes(n, **options)``: n servers with tests/game_app.py's room types."""
    started: list[roomer.Server] = []

    async def start(count: int = 2, **options: Any) -> list[roomer.Server]:
        made = []
        for i in range(count):
            server = roomer.Server(backplane=backplane_url, backplane_prefix=prefix,
                                   node_id=f"n{len(started)}-{i}", **options)
            game_app.setup(server)
            await server.start("127.0.0.1", 0)
            started.append(server)
            made.append(server)
        return made

    game_app.hook_log.clear()
    yield start
    for server in started:
        await server.shutdown(timeout=2.0)


def body(msg: Any) -> Any:
    return json.loads(msg.payload)


async def next_of(client: Client2, event: str, room: str, timeout: float = 5.0) -> Any:
    """The next ``event`` in ``room`` the client gets (what comes before is passed over)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        msg = await client.recv(max(0.01, deadline - loop.time()))
        if msg.event == event and msg.room == room:
            return msg


async def create(client: Client2, what: str = "table", options: Any = None) -> str:
    answer = await client.ask("", what, "room.create", json.dumps(options or {}))
    assert answer.kind == REPLY, answer
    return str(body(answer)["room"])


async def test_twenty_clients_race_for_four_seats_across_two_nodes(nodes: Nodes) -> None:
    a_node, b_node = await nodes(2)
    clients = [await connect2((a_node, b_node)[i % 2]) for i in range(21)]
    owner, racers = clients[0], clients[1:]
    for round_ in range(8):
        room = await create(owner, "table")
        table = a_node.game_room(room)
        table.auto_dispose = False
        await owner.ask("", room, "leave")  # the room keeps its four seats for the race
        answers = await asyncio.gather(*(c.ask("", room, "join") for c in racers))
        winners = [c for c, a in zip(racers, answers, strict=True) if a.kind == REPLY]
        losers = [a for a in answers if a.kind == ERROR_REPLY]
        assert len(winners) == 4, (round_, [a.payload for a in answers])
        assert {body(a)["code"] for a in losers} <= {"room_full", "room_locked"}
        assert table.clients == 4 and table.locked
        seated = sorted(c.id for c in winners)
        await eventually(lambda t=table, ids=seated: sorted(a_node.members(t.id)) == ids)
        for winner in winners:
            await winner.ask("", room, "leave")
        await eventually(lambda t=table: t.clients == 0)
        table.close()


async def test_a_tick_reaches_members_on_both_nodes_once_per_period(nodes: Nodes) -> None:
    a_node, b_node = await nodes(2)
    here, there = await connect2(a_node), await connect2(b_node)
    room = await create(here, "ticker")
    assert (await there.ask("", room, "join")).kind == REPLY

    async def ticks(client: Client2, count: int) -> list[int]:
        got: list[int] = []
        while len(got) < count:
            msg = await client.recv()
            if msg.event == "tick":
                got.append(body(msg)[0])
        return got

    near, far = await asyncio.gather(ticks(here, 30), ticks(there, 30))
    for got in (near, far):
        assert got == list(range(got[0], got[0] + 30)), got  # each once, in order
    assert b_node.game_room(room) is None  # the room, and its tick, live on one node
    assert b_node.counters["game_ticks"] == 0


async def test_joins_messages_answers_and_removals_cross_nodes(nodes: Nodes) -> None:
    a_node, b_node = await nodes(2)
    ada, bob = await connect2(a_node), await connect2(b_node)
    room = await create(ada, "table", {"mode": "duel"})
    await ada.expect("welcome", room)
    refused = await bob.ask("", room, "join", json.dumps({"name": "bad"}))
    assert body(refused) == {"code": "join_denied", "message": "no bad names"}
    answer = await bob.ask("", room, "join", json.dumps({"name": "bob"}))
    assert answer.kind == REPLY and body(answer) == [bob.id, ada.id]
    welcome = await bob.expect("welcome", room)  # on_joined ran on the owner, after
    assert body(welcome) == {"id": bob.id, "room": room}
    assert (await ada.expect("new_member", room)).text == bob.id
    player = a_node.game_room(room).players[bob.id]
    assert player.node and player.options == {"name": "bob"}

    assert body(await bob.ask("", room, "roll")) == {"rolled": 4}
    assert body(await bob.ask("", room, "deny")) == {"code": "denied",
                                                    "message": "not your turn"}
    assert body(await bob.ask("", room, "nothing"))["code"] == "no_handler"
    await bob.send("", room, "note", payload=b"over there")
    assert (await bob.expect("noted", room)).payload == b"over there"
    for payload in (b"4", b"1"):
        await bob.send("", room, "slow", payload=payload)
    assert body(await bob.ask("", room, "state"))["players"] == [ada.id, bob.id]
    assert a_node.game_room(room).seen[-3:] == [(bob.id, "over there"), (bob.id, "4"),
                                                (bob.id, "1")]
    await bob.ask("", room, "kick")
    assert (await bob.expect("leave_ack", room)).payload == bob.id.encode()
    assert ("left", room, bob.id, False) in game_app.hook_log
    cleo = await connect2(b_node)
    await cleo.ask("", room, "join")
    await cleo.ask("", room, "leave")
    await eventually(lambda: ("left", room, cleo.id, True) in game_app.hook_log)
    dan = await connect2(b_node)
    await dan.ask("", room, "join")
    await dan.close()
    await eventually(lambda: ("left", room, dan.id, False) in game_app.hook_log)


async def test_join_or_create_and_reservations_across_nodes(nodes: Nodes) -> None:
    a_node, b_node = await nodes(2)
    ada = await connect2(a_node)
    room = await create(ada, "table", {"mode": "duel"})
    a_node.game_room(room).set_metadata(mode="duel")
    bob = await connect2(b_node)
    await eventually(lambda: [(r.id, dict(r.metadata)) for r in b_node.list_rooms("table")]
                     == [(room, {"mode": "duel"})])
    joined = body(await bob.ask("", "table", "room.join_or_create",
                                json.dumps({"mode": "duel"})))
    assert joined["room"] == room and joined["members"] == [bob.id, ada.id]
    cleo, dan = await connect2(b_node), await connect2(b_node)
    # The window covers the two joins below (cross-node round trips on a loaded machine),
    # and ends before the wait for its expiry does.
    assert await b_node.reserve_seats(room, [cleo.id, "a-friend"], 2.0) is True
    assert await b_node.reserve_seats(room, ["x", "y", "z"]) is False  # 2 + 2 of 4
    full = await dan.ask("", room, "join")
    assert body(full)["code"] == "room_full"
    assert (await cleo.ask("", room, "join")).kind == REPLY  # its seat was held
    # the friend never comes: its seat is released, the room takes dan
    await eventually(lambda: a_node.game_room(room).reserved == 0)
    assert (await dan.ask("", room, "join")).kind == REPLY


async def test_two_nodes_creating_one_id_at_once_one_wins(nodes: Nodes) -> None:
    a_node, b_node = await nodes(2)
    a, b = await connect2(a_node), await connect2(b_node)
    for n in range(5):
        name = f"table:final-{n}"
        got = await asyncio.gather(a.ask("", name, "room.create"),
                                   b.ask("", name, "room.create"))
        kinds = sorted(answer.kind for answer in got)
        assert kinds == [REPLY, ERROR_REPLY], [answer.payload for answer in got]
        loser = next(answer for answer in got if answer.kind == ERROR_REPLY)
        assert body(loser)["code"] in ("room_exists",)
        owners = [s for s in (a_node, b_node) if s.game_room(name) is not None]
        assert len(owners) == 1
    # an id comes free when its room ends
    room = a_node.game_room("table:final-0") or b_node.game_room("table:final-0")
    assert room is not None
    room.close()
    await eventually(lambda: not any(
        r.id == "table:final-0" for s in (a_node, b_node) for r in s.list_rooms()))
    again = await a.ask("", "table:final-0", "room.create")
    assert again.kind == REPLY, again


async def test_the_room_list_covers_the_cluster_after_a_burst(nodes: Nodes) -> None:
    a_node, b_node = await nodes(2, room_list_interval=0.1)
    watcher = Watcher(await connect2(b_node), "table")
    await watcher.watch()
    clients = [await connect2((a_node, b_node)[i % 2]) for i in range(16)]
    rng = random.Random(11)
    rooms: list[str] = []
    for step in range(80):
        client = rng.choice(clients)
        roll = rng.random()
        if roll < 0.3 or not rooms:
            answer = await client.ask("", "table", "room.create")
            if answer.kind == REPLY:
                rooms.append(body(answer)["room"])
        elif roll < 0.75:
            await client.ask("", rng.choice(rooms), "join")
        elif roll < 0.95:
            await client.ask("", rng.choice(rooms), "leave")
        else:
            await client.ask("", rng.choice(rooms), "lock" if step % 2 else "unlock")

    def real() -> dict[str, dict[str, Any]]:
        """Each room as its owner's object says, listed rooms only."""
        return {r.id: r.entry() for server in (a_node, b_node)
                for r in server.list_rooms("table")
                if server.game_room(r.id) is not None and not (r.private or r.unlisted)}

    await eventually(lambda: watcher.rooms == real() and listed(b_node) == real()
                     and listed(a_node) == real(), timeout=10,
                     what="the watched list is the rooms' real state")
    watcher.stop()


async def test_a_node_that_shuts_down_ends_its_rooms_everywhere(nodes: Nodes) -> None:
    a_node, b_node = await nodes(2)
    ada, bob = await connect2(a_node), await connect2(b_node)
    room_a = await create(ada, "table")
    room_b = await create(bob, "table")
    await bob.ask("", room_a, "join")
    await ada.ask("", room_b, "join")
    await a_node.shutdown(timeout=2.0)
    closed = await next_of(bob, "room.closed", room_a, timeout=8)
    assert body(closed)["code"] in ("shutdown", "owner_lost")
    # its member of bob's room is gone from it, and its rooms from bob's list
    await eventually(lambda: list(b_node.game_room(room_b).players) == [bob.id])
    await eventually(lambda: [r.id for r in b_node.list_rooms()] == [room_b])


async def test_an_owner_cut_off_past_node_timeout_ends_its_rooms_when_it_is_back(
        redis_url: str, prefix: str) -> None:
    """Node A loses the broker (its connection cut by a proxy) for longer than
    node_timeout: B ends A's room for its member; when A is back it learns it was declared
    dead and ends the room for its own member too (the cluster forgot it), and a new room
    of A is listed on B and joinable from there."""
    proxy = Proxy(6379)
    await proxy.start()
    servers = []
    try:
        for node_id, url in (("a", f"redis://127.0.0.1:{proxy.port}/0"), ("b", redis_url)):
            server = roomer.Server(backplane=url, backplane_prefix=prefix, node_id=node_id,
                                   node_timeout=1.2)
            game_app.setup(server)
            await server.start("127.0.0.1", 0)
            servers.append(server)
        a_node, b_node = servers
        game_app.hook_log.clear()
        ada, bob = await connect2(a_node), await connect2(b_node)
        room = await create(ada, "table")
        assert (await bob.ask("", room, "join")).kind == REPLY
        await proxy.cut()
        closed = await next_of(bob, "room.closed", room, timeout=5)
        assert body(closed)["code"] == "owner_lost"
        assert b_node.list_rooms() == []
        await proxy.restore()
        closed = await next_of(ada, "room.closed", room, timeout=10)
        assert body(closed)["code"] == "owner_lost"
        assert a_node.game_room(room) is None
        again = await create(ada, "table")
        await eventually(lambda: [(r.id, r.clients) for r in b_node.list_rooms()] == [
            (again, 1)], timeout=5, what="A's new room listed on B")
        assert (await bob.ask("", again, "join")).kind == REPLY
    finally:
        for server in servers:
            await server.shutdown(timeout=2.0)
        await proxy.cut()
