"""Batch frames (docs/protocol.md §13) over real sockets: negotiation, the server's batched
flushes, a client's batches handled as their messages one by one, in order, each counted
against the rate limit and the turn budget, and the error answers.

The test client (tests/v2client.py) reads and writes batches by hand, not with roomer's
codec.
"""

from __future__ import annotations

import asyncio
from typing import Any

from rawclient import TIMEOUT, url_of
from v2client import ASK, ERROR_REPLY, EVENT, REPLY, Client2, batch, connect2, encode
from websockets.asyncio.client import connect as ws_connect

import roomer
from roomer.frames import BATCH_FRAME_MAX

BATCH = ["roomer.v2.batch"]


def relay(room: str, event: str, payload: str | bytes = b"") -> bytes:
    return encode(EVENT, 0, "", room, event, "", "", payload)


async def members(server: Any, *subprotocols: list[str] | None) -> list[Client2]:
    clients = [await connect2(server, offered) for offered in subprotocols]
    for client in clients:
        assert (await client.ask("", "r", "join")).kind == REPLY
    for i, client in enumerate(clients):  # the others' presence, read now
        for _ in clients[i + 1:]:
            await client.expect("new_member", "r")
    return clients


async def test_the_101_names_batches_when_offered(make_server: Any) -> None:
    server = await make_server()
    for offered, chosen in ((["roomer.v2.batch"], "roomer.v2.batch"),
                            (["roomer.v2", "roomer.v2.batch"], "roomer.v2.batch"),
                            (["roomer.v2.batch", "roomer.v2"], "roomer.v2.batch"),
                            (["roomer.v1", "roomer.v2.batch"], "roomer.v2.batch"),
                            (["roomer.v2"], "roomer.v2")):
        ws = await ws_connect(url_of(server), subprotocols=offered)  # type: ignore[arg-type]
        assert ws.subprotocol == chosen, offered
        await ws.close()


async def test_a_server_whose_messages_are_smaller_than_a_batch_offers_none(
        make_server: Any) -> None:
    # A client's batch may reach BATCH_FRAME_MAX bytes (§13): below that, the server
    # would have to close a batching client with 1009, so it answers plain v2.
    for limit, chosen in ((BATCH_FRAME_MAX - 1, "roomer.v2"),
                          (BATCH_FRAME_MAX, "roomer.v2.batch")):
        server = await make_server(max_message_size=limit)
        ws = await ws_connect(url_of(server),
                              subprotocols=["roomer.v2.batch", "roomer.v2"])  # type: ignore[list-item]
        assert ws.subprotocol == chosen, limit
        await ws.close()
    assert BATCH_FRAME_MAX == 1 + 4 * 256 + 64 * 1024


async def test_what_one_turn_sends_a_client_is_one_batch(make_server: Any) -> None:
    server = await make_server()
    sender, batched, plain = await members(server, BATCH, BATCH, None)
    before, plain_before = batched.frames, plain.frames
    await sender.ws.send(batch(*(relay("r", "move", str(i)) for i in range(20))))
    for client in (batched, plain):
        got = [await client.expect("move", "r") for _ in range(20)]
        assert [m.payload for m in got] == [str(i).encode() for i in range(20)]
        assert {m.src for m in got} == {sender.id}
    assert batched.frames - before == 1 and batched.batches[-1] == 20
    assert plain.frames - plain_before == 20  # no batches unless negotiated
    stats = server.stats()
    assert stats["batches_in"] == 1 and stats["batches_out"] >= 1


async def test_a_batch_is_its_messages_in_order(make_server: Any) -> None:
    server = await make_server()

    @server.on("echo")
    def echo(conn: Any, msg: roomer.Message) -> bytes:
        return msg.payload.upper()

    sender, other = await members(server, BATCH, BATCH)
    assert (await other.ask("", "s", "join")).kind == REPLY
    answers = {i: asyncio.get_running_loop().create_future() for i in (1, 2, 3)}
    sender.answers.update(answers)
    await sender.ws.send(batch(
        encode(ASK, 1, "", "s", "join"),  # joins s before the relay to s after it
        relay("r", "one"),
        encode(ASK, 2, "", "r", "echo", payload=b"hi"),
        relay("r", "two"),
        b"\x04" + bytes(28),  # an entry that is no v2 message: answered on its own
        encode(ASK, 3, "nope", "r", "x"),  # an error reply, and the rest goes on
        relay("s", "three"),
    ))
    joined, echoed, left = [await asyncio.wait_for(answers[i], TIMEOUT) for i in (1, 2, 3)]
    assert joined.kind == REPLY and sorted(joined.json()) == sorted([sender.id, other.id])
    assert (echoed.kind, echoed.payload) == (REPLY, b"HI")
    assert (left.kind, left.json()["code"]) == (ERROR_REPLY, "no_such_namespace")
    error = await sender.expect("error", "root")
    assert error.json()["code"] == "malformed"
    assert error.json()["message"].startswith("kind 4 is not 0")
    got = [await other.recv() for _ in range(4)]
    assert [(m.room, m.event) for m in got] == [("s", "new_member"), ("r", "one"),
                                                ("r", "two"), ("s", "three")]
    assert server.counters["messages_in"] >= 7


async def test_a_broken_batch_is_refused_whole(make_server: Any) -> None:
    server = await make_server()
    sender, other = await members(server, BATCH, BATCH)
    await sender.ws.send(batch(relay("r", "lost"), relay("r", "lost")) + b"\x00")
    error = await sender.expect("error", "root")
    assert error.json() == {"code": "malformed", "event": "",
                            "message": "entry 3 length runs past the end of the batch"}
    await sender.ws.send(b"\x04")
    assert (await sender.expect("error", "root")).json()["message"] == (
        "a batch must hold at least one message")
    await sender.ws.send(batch(*[relay("r", "lost")] * 257))
    assert (await sender.expect("error", "root")).json()["message"] == (
        "a batch holds more than 256 messages")
    await other.expect_nothing()
    assert server.errors["malformed"] == 3


async def test_a_batch_needs_the_subprotocol(make_server: Any) -> None:
    server = await make_server()
    sender, other = await members(server, None, None)
    await sender.ws.send(batch(relay("r", "x"), relay("r", "y")))
    error = await sender.expect("error", "root")
    assert error.json()["message"].startswith("kind 4 is not 0 (event)")
    await other.expect_nothing()


async def test_each_message_of_a_batch_draws_from_the_rate_limit(make_server: Any) -> None:
    server = await make_server(rate_limit=(10, 60.0))
    sender, other = await members(server, BATCH, BATCH)
    # The joins and asks above drew 1 each; the batch's first 9 fit, the rest are refused
    # with one rate_limited error (naming the room and event of the first refused).
    await sender.ws.send(batch(*(relay("r", "m", str(i)) for i in range(15))))
    got = [await other.expect("m", "r") for _ in range(9)]
    assert [m.payload for m in got] == [str(i).encode() for i in range(9)]
    error = await sender.expect("error", "r")
    assert error.json() == {"code": "rate_limited", "event": "m",
                            "message": "too many messages or bytes"}
    await other.expect_nothing()
    # A batch frame past the limit is refused whole, as one message: four more make as
    # many refusals as the limit in the window, which closes, as a flood of frames does.
    for _ in range(4):
        await sender.ws.send(batch(*(relay("r", "m") for _ in range(10))))
    await asyncio.wait_for(sender.reader, TIMEOUT)
    assert (sender.ws.close_code, sender.ws.close_reason) == (1008, "rate limit exceeded")
    assert server.counters["abuse_closes"] == 1


async def test_a_big_batch_is_held_by_the_turn_budget_and_kept_in_order(
        make_server: Any) -> None:
    server = await make_server(turn_messages=8, rate_limit=None, byte_limit=None)
    sender, batched, plain = await members(server, BATCH, BATCH, None)
    bodies = [relay("r", "m", str(i)) for i in range(256)]
    await sender.ws.send(batch(*bodies[:200]))
    await sender.ws.send(batch(*bodies[200:]))
    for client in (batched, plain):
        got = [await client.expect("m", "r") for _ in range(256)]
        assert [m.payload for m in got] == [str(i).encode() for i in range(256)]
    # Held every 8 messages: the batch was handled over many turns, each turn's
    # relays going out as one batch.
    assert server.counters["turn_holds"] >= 256 // 8 - 2
    assert max(batched.batches) <= 8 and len(batched.batches) >= 256 // 8 - 2


async def test_the_python_client_reads_batches(make_server: Any) -> None:
    server = await make_server()
    root = await roomer.client.connect(url_of(server), protocol="v2")
    room = await root.join("r")
    got: list[bytes] = []
    done = asyncio.Event()

    def on_m(payload: bytes, src: str) -> None:
        got.append(payload)
        if len(got) == 30:
            done.set()

    room.on("m", on_m)
    sender = await connect2(server, BATCH)
    assert (await sender.ask("", "r", "join")).kind == REPLY
    before = server.stats()["batches_out"]
    await sender.ws.send(batch(*(relay("r", "m", str(i)) for i in range(30))))
    await asyncio.wait_for(done.wait(), TIMEOUT)
    assert got == [str(i).encode() for i in range(30)]
    assert server.stats()["batches_out"] == before + 1
    await root.close()


async def test_plain_relays_in_a_batch_take_the_relay_path(make_server: Any) -> None:
    server = await make_server()

    @server.on("echo")
    def echo(conn: Any, msg: roomer.Message) -> None:
        conn.send("echoed", msg.payload, msg.room)

    relay_path = server._core.router.relay
    sender, other = await members(server, BATCH, BATCH)
    before = relay_path.taken
    await sender.ws.send(batch(*(relay("r", "m", str(i)) for i in range(10))))
    assert [(await other.expect("m", "r")).payload for _ in range(10)] == [
        str(i).encode() for i in range(10)]
    assert relay_path.taken == before + 10
    # From the first message the router must see (a handler's event), the rest is the
    # router's, in order; it gives the plain relays among them back to the relay path.
    await sender.ws.send(batch(relay("r", "m", "a"), relay("r", "m", "b"),
                               encode(EVENT, 0, "", "r", "echo", payload=b"e"),
                               relay("r", "m", "c")))
    assert [(await other.expect("m", "r")).payload for _ in range(3)] == [b"a", b"b", b"c"]
    assert (await sender.expect("echoed", "r")).payload == b"e"
    assert relay_path.taken == before + 13
    assert server.counters["batches_in"] == 2
