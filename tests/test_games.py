"""Game rooms on one node, over real sockets (docs/protocol.md §10, the game rooms guide):
creating, joining, seats and locks, join-or-create, messages, leaving, ticks, timers,
reservations, closing, and the server-side API. The raw v2 client (tests/v2client.py)
checks the bytes; roomer's Python client checks its API. tests/test_games_cluster.py
runs the cluster's side."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import game_app
import pytest
from rawclient import connect, eventually
from v2client import ERROR_REPLY, REPLY, Client2, connect2

import roomer

Start = Callable[..., Awaitable[roomer.Server]]


def body(msg: Any) -> Any:
    return json.loads(msg.payload)


async def create(client: Client2, what: str = "table", options: Any = None) -> str:
    answer = await client.ask("", what, "room.create", json.dumps(options or {}))
    assert answer.kind == REPLY, answer
    info = body(answer)
    assert client.id in info["members"], info
    return str(info["room"])


async def refused(client: Client2, room: str, event: str, payload: Any = b"") -> dict[str, Any]:
    answer = await client.ask("", room, event, payload)
    assert answer.kind == ERROR_REPLY, answer
    return body(answer)  # type: ignore[no-any-return]


# creating and joining ---------------------------------------------------------------------


async def test_create_answers_the_id_and_members_then_on_joined_speaks(game_servers: Start) -> None:
    server = await game_servers()
    ada = await connect2(server)
    room = await create(ada, "table", {"mode": "duel", "name": "ada"})
    assert room.startswith("table:") and len(room) == len("table:") + 12
    welcome = await ada.expect("welcome", room)  # what on_joined sent, after the reply
    assert body(welcome) == {"id": ada.id, "room": room}
    assert game_app.hook_log == [("create", room, {"mode": "duel", "name": "ada"}),
                               ("join", room, ada.id), ("joined", room, ada.id)]
    table = server.game_room(room)
    assert isinstance(table, game_app.Table)
    assert list(table.players) == [ada.id] and table.players[ada.id].options["name"] == "ada"
    assert server.members(room) == [ada.id]
    [listing] = server.list_rooms("table")
    assert (listing.id, listing.clients, listing.max_clients, listing.locked) == (
        room, 1, 4, False)


async def test_join_by_id_with_options_and_presence(game_servers: Start) -> None:
    server = await game_servers()
    ada, bob = await connect2(server), await connect2(server)
    room = await create(ada)
    await ada.expect("welcome")
    answer = await bob.ask("", room, "join", json.dumps({"name": "bob"}))
    assert answer.kind == REPLY and body(answer) == [ada.id, bob.id]
    assert (await ada.expect("new_member", room)).text == bob.id
    await bob.expect("welcome", room)
    assert server.game_room(room).players[bob.id].options == {"name": "bob"}


async def test_a_refused_join_carries_the_hooks_reason_and_frees_the_seat(
        game_servers: Start) -> None:
    server = await game_servers()
    ada, bad = await connect2(server), await connect2(server)
    room = await create(ada)
    info = await refused(bad, room, "join", json.dumps({"name": "bad"}))
    assert info == {"code": "join_denied", "message": "no bad names"}
    table = server.game_room(room)
    assert table.clients == 1 and bad.id not in table.players
    assert room not in server.connection(bad.id).rooms


async def test_python_client_create_join_and_refusals(game_servers: Start) -> None:
    server = await game_servers()
    url = f"ws://127.0.0.1:{server.address[1]}/ws"
    ada = await roomer.connect(url, protocol="v2")
    welcomed: list[Any] = []
    table = ada.create("table", {"name": "ada"})
    table.on("welcome", lambda payload, sender: welcomed.append(json.loads(payload)))
    await table  # its handlers were there before the welcome came
    assert table.name.startswith("table:") and table.members() == [ada.id()]
    await eventually(lambda: welcomed)
    assert welcomed == [{"id": ada.id(), "room": table.name}]

    bob = await roomer.connect(url, protocol="v2")
    with pytest.raises(roomer.ClientError) as denied:
        await bob.join(table.name, {"name": "bad"})
    assert (denied.value.code, denied.value.server_message) == ("join_denied", "no bad names")
    with pytest.raises(roomer.ClientError) as create_denied:
        await bob.create("table", {"deny_create": True})
    assert (create_denied.value.code, create_denied.value.server_message) == (
        "create_denied", "no such game")
    joined = await bob.join(table.name, {"name": "bob"})
    assert joined.members() == [ada.id(), bob.id()]
    await bob.close()
    await ada.close()


async def test_a_v1_client_joins_a_game_room_by_id(game_servers: Start) -> None:
    server = await game_servers()
    ada = await connect2(server)
    room = await create(ada)
    old = await connect(server)  # protocol v1: a plain join, its payload the options
    await old.send(room, "join", payload=json.dumps({"name": "old"}))
    ack = await old.expect("join_ack", room)
    assert ack.json() == [ada.id, old.id]
    assert server.game_room(room).players[old.id].options == {"name": "old"}
    await old.expect("welcome", room)
    await old.send(room, "join", payload=json.dumps({"name": "bad"}))  # joined already
    await old.expect("join_ack", room)
    other = await connect(server)
    await other.send(room, "join", payload=json.dumps({"name": "bad"}))
    assert (await other.expect_error("join_denied", room, "join"))["message"] == "no bad names"


async def test_create_refusals(game_servers: Start) -> None:
    server = await game_servers(max_game_rooms=3)
    ada = await connect2(server)
    assert await refused(ada, "nosuch", "room.create") == {
        "code": "no_such_room_type", "message": "no room type 'nosuch' here"}
    assert (await refused(ada, "vip", "room.create"))["code"] == "create_denied"
    assert (await refused(ada, "table", "room.create", b"[1, 2]"))["code"] == "invalid_options"
    assert (await refused(ada, "table", "room.create", b"x" * 5000))["code"] == (
        "invalid_options")
    named = await create(ada, "table:friends-42")
    assert named == "table:friends-42"
    bob = await connect2(server)
    assert (await refused(bob, "table:friends-42", "room.create"))["code"] == "room_exists"
    await create(bob, "ticker")
    cleo = await connect2(server)
    await create(cleo)
    dan = await connect2(server)
    assert (await refused(dan, "table", "room.create"))["code"] == "room_limit"
    # as an event rather than an ask: there is no answer to carry the id
    await dan.send("", "table", "room.create")
    assert body(await dan.expect("error"))["code"] == "forbidden"


async def test_unknown_rooms_and_reserved_events(game_servers: Start) -> None:
    server = await game_servers()
    ada = await connect2(server)
    assert (await refused(ada, "table:nope", "join"))["code"] == "no_such_room"
    assert (await refused(ada, "table:nope", "roll"))["code"] == "not_member"
    assert (await refused(ada, "lobby", "room.closed"))["code"] == "reserved_event"
    with pytest.raises(ValueError, match="reserved"):
        server.on("room.create")(lambda conn, msg: None)


# seats and locks --------------------------------------------------------------------------


async def test_four_seats_the_fifth_is_refused_and_a_full_room_locks_itself(
        game_servers: Start) -> None:
    server = await game_servers()
    players = [await connect2(server) for _ in range(5)]
    room = await create(players[0])
    for player in players[1:4]:
        assert (await player.ask("", room, "join")).kind == REPLY
    assert await refused(players[4], room, "join") == {
        "code": "room_full", "message": "the room is full"}
    [listing] = server.list_rooms("table")
    assert listing.clients == 4 and listing.locked
    await players[3].ask("", room, "leave")
    await eventually(lambda: not server.list_rooms("table")[0].locked)
    assert (await players[4].ask("", room, "join")).kind == REPLY


async def test_lock_unlock_and_private(game_servers: Start) -> None:
    server = await game_servers()
    ada, bob = await connect2(server), await connect2(server)
    room = await create(ada, "table", {"mode": "m"})
    await ada.ask("", room, "lock")
    assert (await refused(bob, room, "join"))["code"] == "room_locked"
    # join-or-create passes over it: bob gets a room of his own
    other = body(await bob.ask("", "table", "room.join_or_create", json.dumps({"mode": "m"})))
    assert other["room"] != room
    await ada.ask("", room, "unlock")
    await ada.ask("", room, "private", b"true")
    cleo = await connect2(server)
    mine = body(await cleo.ask("", "table", "room.join_or_create", json.dumps({"mode": "m"})))
    assert mine["room"] == other["room"]  # never the private one
    dan = await connect2(server)
    assert (await dan.ask("", room, "join")).kind == REPLY  # a private room joins by id


# join or create ---------------------------------------------------------------------------


async def test_join_or_create_fills_rooms_by_filter_and_creates_when_none_fits(
        game_servers: Start) -> None:
    server = await game_servers()
    clients = [await connect2(server) for _ in range(7)]
    rooms = []
    for client in clients[:5]:
        answer = await client.ask("", "table", "room.join_or_create",
                                  json.dumps({"mode": "duel"}))
        rooms.append(body(answer)["room"])
    assert rooms[:4] == [rooms[0]] * 4 and rooms[4] != rooms[0]  # four seats, then anew
    assert server.game_room(rooms[4]).metadata == {"mode": "duel"}  # found by the next
    solo = body(await clients[5].ask("", "table", "room.join_or_create",
                                     json.dumps({"mode": "solo"})))
    assert solo["room"] not in rooms and solo["members"] == [clients[5].id]
    again = body(await clients[6].ask("", "table", "room.join_or_create",
                                      json.dumps({"mode": "duel"})))
    assert again["room"] == rooms[4] and again["members"] == [clients[4].id, clients[6].id]


async def test_join_or_create_sorts_and_skips_refusing_rooms(game_servers: Start) -> None:
    server = roomer.Server()
    server.define("table", game_app.Table, sort_by={"clients": -1})
    await server.start("127.0.0.1", 0)
    try:
        a, b, c, d = [await connect2(server) for _ in range(4)]
        first = await create(a)
        second = await create(b)
        assert (await c.ask("", second, "join")).kind == REPLY  # second is the fuller
        picked = body(await d.ask("", "table", "room.join_or_create"))
        assert picked["room"] == second
        e = await connect2(server)
        # a refusal by on_join is skipped too: the next room, then a new one
        bad = await refused(e, "table", "room.join_or_create", json.dumps({"name": "bad"}))
        assert bad["code"] == "join_denied"
        assert {listing.id for listing in server.list_rooms()} == {first, second}
    finally:
        await server.shutdown(timeout=2.0)


# messages -----------------------------------------------------------------------------------


async def test_room_handlers_answer_asks_and_errors_and_never_relay(game_servers: Start) -> None:
    server = await game_servers()
    ada, bob = await connect2(server), await connect2(server)
    room = await create(ada)
    await ada.expect("welcome")
    await bob.ask("", room, "join")
    await bob.expect("welcome")
    await ada.expect("new_member")
    assert body(await bob.ask("", room, "roll")) == {"rolled": 4}
    assert await refused(bob, room, "nothing") == {
        "code": "no_handler", "message": "nothing answers 'nothing' in this room"}
    assert await refused(bob, room, "boom") == {"code": "handler_error",
                                                 "message": "internal error"}
    assert await refused(bob, room, "deny") == {"code": "denied", "message": "not your turn"}
    await bob.send("", room, "deny")  # an event: the error is an event
    info = body(await bob.expect("error", room))
    assert (info["code"], info["message"]) == ("handler_error", "not your turn")
    await bob.send("", room, "note", payload=b"hi")
    assert (await bob.expect("noted", room)).payload == b"hi"
    assert server.game_room(room).seen[-1] == (bob.id, "hi")
    await ada.expect_nothing()  # nothing of bob's was relayed


async def test_one_players_messages_keep_their_order_behind_an_async_handler(
        game_servers: Start) -> None:
    server = await game_servers()
    ada = await connect2(server)
    room = await create(ada)
    await ada.expect("welcome")
    for payload in (b"5", b"1", b"3"):
        await ada.send("", room, "slow", payload=payload)
    await ada.send("", room, "note", payload=b"last")
    await ada.expect("noted", room)
    assert server.game_room(room).seen == [(ada.id, "5"), (ada.id, "1"), (ada.id, "3"),
                                           (ada.id, "last")]


# leaving ------------------------------------------------------------------------------------


async def test_leave_disconnect_kick_and_dispose(game_servers: Start) -> None:
    server = await game_servers()
    ada, bob, cleo = await connect2(server), await connect2(server), await connect2(server)
    room = await create(ada)
    for client in (bob, cleo):
        await client.ask("", room, "join")
    answer = await bob.ask("", room, "leave")
    assert answer.kind == REPLY
    await cleo.ask("", room, "kick")  # the room takes cleo out: a server-driven leave
    seen = [await cleo.recv() for _ in range(3)]
    assert [m.event for m in seen] == ["welcome", "member_left", "leave_ack"], seen
    assert seen[2].payload == cleo.id.encode()
    await ada.close()
    await eventually(lambda: server.game_room(room) is None)
    lefts = [e for e in game_app.hook_log if e[0] == "left"]
    assert lefts == [("left", room, bob.id, True), ("left", room, cleo.id, False),
                     ("left", room, ada.id, False)]
    assert game_app.hook_log[-1] == ("dispose", room)
    assert server.list_rooms() == []


async def test_close_tells_every_member_and_disposes(game_servers: Start) -> None:
    server = await game_servers()
    url = f"ws://127.0.0.1:{server.address[1]}/ws"
    ada = await roomer.connect(url, protocol="v2")
    bob = await roomer.connect(url, protocol="v2")
    table = await ada.create("table")
    other = await bob.join(table.name)
    told: list[Any] = []
    other.on("room.closed", lambda info, sender: told.append(info))
    closed = asyncio.Event()
    other.on("close", closed.set)
    await table.ask("end")
    await asyncio.wait_for(closed.wait(), 5)
    assert told == [{"code": "closed", "message": "game over"}]
    assert not other.open()
    assert game_app.hook_log[-1] == ("dispose", table.name)
    assert server.list_rooms() == []
    await ada.close()
    await bob.close()


# ticks and timers -------------------------------------------------------------------------


async def test_a_tick_numbers_its_ticks_with_the_real_elapsed_time(game_servers: Start) -> None:
    server = await game_servers()
    ada = await connect2(server)
    room = await create(ada, "ticker")
    seen = []
    while len(seen) < 10:
        msg = await ada.expect("tick", room)
        seen.append(body(msg))
    numbers = [n for n, _ in seen]
    assert numbers == list(range(numbers[0], numbers[0] + 10))
    assert all(0 < dt < 1.0 for _, dt in seen)
    room_obj = server.game_room(room)
    room_obj.set_tick_rate(None)
    count = room_obj.ticks
    await ada.ask("", room, "leave")  # anchor: the server handled everything before
    assert room_obj.ticks == count


async def test_timers_fire_and_end_with_their_room(game_servers: Start) -> None:
    server = await game_servers()
    ada = await connect2(server)
    room = await create(ada)
    table = server.game_room(room)
    fired: list[str] = []
    done = asyncio.Event()
    table.call_later(0.01, fired.append, "once")
    every = table.call_every(0.01, lambda: (fired.append("again"),
                                           len(fired) >= 4 and done.set()))
    never = table.call_later(30, fired.append, "never")
    await asyncio.wait_for(done.wait(), 5)
    assert fired[0] == "once" or fired[1] == "once"
    await ada.ask("", room, "leave")
    assert server.game_room(room) is None
    assert every.cancelled and never.cancelled and not table._timers


# reservations ------------------------------------------------------------------------------


async def test_reserved_seats_count_join_through_a_full_room_and_expire(
        game_servers: Start) -> None:
    server = await game_servers()
    clients = [await connect2(server) for _ in range(5)]
    owner, friend, stranger = clients[0], clients[1], clients[2]
    room = await create(owner)
    party = [friend.id, stranger.id, "someone-else"]
    assert body(await owner.ask("", room, "reserve", json.dumps(party))) is True
    state = body(await owner.ask("", room, "state"))
    assert (state["clients"], state["reserved"], state["locked"]) == (1, 3, True)
    assert (await refused(clients[3], room, "join"))["code"] == "room_full"
    assert (await friend.ask("", room, "join")).kind == REPLY  # its seat was held
    assert body(await owner.ask("", room, "reserve", json.dumps(["x"]))) is False  # all or none
    # the others' reservations expire (0.3 s): their seats free, the room unlocks
    await eventually(lambda: server.game_room(room).reserved == 0)
    state = body(await owner.ask("", room, "state"))
    assert (state["clients"], state["locked"]) == (2, False)
    assert (await clients[3].ask("", room, "join")).kind == REPLY


async def test_server_side_rooms_reservations_and_queries(game_servers: Start) -> None:
    server = await game_servers(seat_reservation=0.3)
    # Connected first: an empty room created by the server is disposed one reservation
    # span later, and a slow connect on a loaded machine once outlasted it.
    ada = await connect2(server)
    room = await server.create_room("table", {"mode": "ranked"}, room_id="table:final")
    assert room == "table:final" and server.game_room(room) is not None
    assert await server.reserve_seats(room, [ada.id]) is True
    assert await server.reserve_seats("table:nope", [ada.id]) is False
    assert [r.id for r in server.list_rooms("table")] == [room]
    server.game_room(room).set_metadata(mode="ranked")
    assert server.list_rooms(mode="ranked")[0].metadata == {"mode": "ranked"}
    assert server.list_rooms(mode="casual") == []
    empty = await server.create_room("table")
    # nobody comes within seat_reservation: the empty rooms are disposed
    await eventually(lambda: server.game_room(empty) is None
                     and server.game_room(room) is None)
    with pytest.raises(roomer.RoomerError) as exists:
        await server.create_room("table", room_id="table:x")
        await server.create_room("table", room_id="table:x")
    assert exists.value.code == "room_exists"
    with pytest.raises(ValueError):
        await server.create_room("nosuch")


async def test_metadata_is_bounded(game_servers: Start) -> None:
    server = await game_servers(max_room_metadata=64)
    room = await server.create_room("table")
    table = server.game_room(room)
    table.set_metadata(mode="duel", level=3)
    with pytest.raises(ValueError, match="max_room_metadata"):
        table.set_metadata(blob="x" * 100)
    with pytest.raises(ValueError, match="JSON"):
        table.set_metadata(bad=object())
    assert dict(table.metadata) == {"mode": "duel", "level": 3}
    table.set_metadata(level=None)
    assert dict(table.metadata) == {"mode": "duel"}


# shutdown ---------------------------------------------------------------------------------


async def test_shutdown_tells_members_and_disposes_rooms() -> None:
    server = roomer.Server()
    game_app.setup(server)
    await server.start("127.0.0.1", 0)
    game_app.hook_log.clear()
    ada = await connect2(server)
    room = await create(ada)
    await ada.expect("welcome")
    await server.shutdown(timeout=2.0)
    closed = await ada.expect("room.closed", room)
    assert body(closed) == {"code": "shutdown", "message": "the server is shutting down"}
    assert ("dispose", room) in game_app.hook_log


# definitions ---------------------------------------------------------------------------------


def test_define_refuses_what_it_cannot_run() -> None:
    server = roomer.Server()
    with pytest.raises(TypeError):
        server.define("t", object)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        server.define("has:colon", game_app.Table)
    with pytest.raises(ValueError, match="tick_rate"):
        server.define("fast", game_app.Ticker, tick_rate=120)
    with pytest.raises(ValueError, match="max_clients"):
        server.define("zero", game_app.Table, max_clients=0)
    with pytest.raises(TypeError, match="unknown"):
        server.define("typo", game_app.Table, max_client=3)
    server.define("table", game_app.Table)
    with pytest.raises(ValueError, match="already"):
        server.define("table", game_app.Table)

    class Bad(roomer.GameRoom):
        @roomer.on_message("join")
        def join(self, player: Any, msg: Any) -> None:
            pass

    with pytest.raises(ValueError, match="reserved"):
        server.define("bad", Bad)


async def test_game_rooms_in_a_named_namespace(game_servers: Start) -> None:
    server = roomer.Server()
    game_app.setup_ns(server, "games")
    await server.start("127.0.0.1", 0)
    try:
        ada = await connect2(server)
        await ada.connect_to("games")
        answer = await ada.ask("games", "table", "room.create")
        room = body(answer)["room"]
        assert server.namespace("games").game_room(room) is not None
        assert server.game_room(room) is None  # not the default namespace's
        assert (await refused(ada, "table", "room.create"))["code"] == "no_such_room_type"
    finally:
        await server.shutdown(timeout=2.0)


async def test_a_create_and_leave_loop_leaves_nothing_behind(game_servers: Start) -> None:
    """A hostile client creating rooms in a loop: each create seats it (its room limit
    bounds the rooms it holds), and each room it leaves is disposed."""
    server = await game_servers(max_rooms_per_connection=3)
    bad = await connect2(server)
    held = [await create(bad) for _ in range(3)]
    assert (await refused(bad, "table", "room.create"))["code"] == "too_many_rooms"
    for room in held:
        await bad.ask("", room, "leave")
    for _ in range(30):
        room = await create(bad)
        await bad.ask("", room, "leave")
    assert server.list_rooms() == [] and server.stats()["game_rooms"] == 0
    assert server.counters["game_rooms_created"] == server.counters["game_rooms_disposed"] == 33
