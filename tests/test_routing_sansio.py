"""The router, registries and namespaces with no socket: frames in, bytes out, on a clock
the test moves (tests/sansio.py). What a client's message does (docs/protocol.md §2), its
order and pacing, and the bounds (docs/design.md, "Bounds"), exactly and with no sleep."""

from __future__ import annotations

import asyncio
import json

from sansio import CONTINUATION, PING, Frame, Node, messages_of

import roomer
from roomer import codec, frames
from roomer.inbound import BACKLOG_PAUSE

pytestmark = []


def node(**options: object) -> Node:
    return Node(asyncio.get_running_loop(), **options)


async def test_connect_join_relay_and_leave() -> None:
    n = node()
    a, b = n.connect(), n.connect()
    await n.turn()
    (ack,) = n.received(a)
    assert (ack.room, ack.event, ack.src, json.loads(ack.payload)) == (
        "root", "join_ack", a.id, [a.id])
    n.received(b)
    n.send(a, "lobby", "join")
    n.send(b, "lobby", "join")
    await n.turn()
    assert [m.event for m in n.received(a)] == ["join_ack", "new_member"]
    (ack,) = n.received(b)
    assert json.loads(ack.payload) == [a.id, b.id]
    n.send(a, "lobby", "chat", b"hi")
    await n.turn()
    assert n.received(a) == []  # not echoed to its sender
    (relayed,) = n.received(b)
    assert relayed == roomer.Message("lobby", "chat", "", a.id, b"hi")
    n.send(b, "lobby", "leave")
    await n.turn()
    assert [m.event for m in n.received(b)] == ["leave_ack"]
    (left,) = n.received(a)
    assert (left.event, left.payload) == ("member_left", b.id.encode())


async def test_the_check_order_answers_the_first_failure() -> None:
    n = node()
    a = n.connect()
    await n.turn()
    n.received(a)
    n.frame(a, Frame(b"\x00" * 5))  # malformed
    n.send(a, "r" * 129, "x")  # invalid room name
    n.send(a, "lobby", "join_ack")  # reserved
    n.send(a, "lobby", "chat")  # not a member
    n.send(a, "root", "chat")  # root is not for broadcasts
    n.send(a, "lobby", "psst", dst="nobody")  # no such client
    await n.turn()
    errors = [(m.room, json.loads(m.payload)["code"]) for m in n.received(a)]
    assert errors == [("root", "malformed"), ("root", "invalid_name"),
                      ("lobby", "reserved_event"), ("lobby", "not_member"),
                      ("root", "forbidden"), ("lobby", "no_such_client")]
    assert n.core.metrics.errors["not_member"] == 1


async def test_a_read_of_many_messages_is_held_at_the_turn_budget() -> None:
    n = node(turn_messages=10, rate_limit=None, byte_limit=None)
    a, b = n.connect(), n.connect()
    for conn in (a, b):
        n.send(conn, "r", "join")
    await n.turn()
    n.received(a), n.received(b)
    writes = len(b.transport.chunks)
    for i in range(25):  # one read of picows: every frame handed over at once
        n.send(a, "r", "m", b"%d" % i)
    assert a.paused  # held after 10: its socket is not read until the turn is out
    await n.turn(5)
    # Each turn wrote what the turn before handled: 10, 10, then 5, in order.
    chunks = b.transport.chunks[writes:]
    assert [len(messages_of(chunk)) for chunk in chunks] == [10, 10, 5]
    assert [m.payload for m in n.received(b)] == [b"%d" % i for i in range(25)]
    assert not a.paused
    assert n.core.metrics.counters["turn_holds"] == 2


async def test_messages_wait_behind_an_async_handler_in_order() -> None:
    n = node(rate_limit=None, byte_limit=None)
    gate = asyncio.Event()
    order: list[bytes] = []

    @n.server.on("slow")
    async def slow(conn: roomer.Connection, msg: roomer.Message) -> None:
        await gate.wait()
        order.append(msg.payload)

    @n.server.on("fast")
    def fast(conn: roomer.Connection, msg: roomer.Message) -> None:
        order.append(msg.payload)

    a = n.connect()
    n.send(a, "root", "slow", b"1")
    for i in range(2, BACKLOG_PAUSE + 3):
        n.send(a, "root", "fast", b"%d" % i)
    assert order == [] and a.paused  # the backlog is full: not read
    gate.set()
    for _ in range(20):
        await n.turn()
    assert order == [b"%d" % i for i in range(1, BACKLOG_PAUSE + 3)]
    assert not a.paused


async def test_a_server_stall_does_not_rate_limit_its_clients() -> None:
    n = node(rate_limit=(20, 1.0))
    a, b = n.connect(), n.connect()
    for conn in (a, b):
        n.send(conn, "r", "join")
    await n.turn()
    n.received(a), n.received(b)
    n.clock.now += 10.0  # the process was stopped for 10 s; no beat meanwhile
    for i in range(60):  # a sent 6 a second (30% of its limit) the whole time
        n.send(a, "r", "m", b"%d" % i)
    await n.turn(10)
    assert [json.loads(m.payload)["code"] for m in n.received(a) if m.event == "error"] == []
    assert [m.payload for m in n.received(b)] == [b"%d" % i for i in range(60)]
    assert n.core.metrics.counters["stalls"] == 1
    assert a.closed is None


async def test_the_same_burst_without_a_stall_is_rate_limited() -> None:
    n = node(rate_limit=(20, 1.0))
    a = n.connect()
    n.send(a, "r", "join")
    await n.turn()
    n.received(a)
    for i in range(60):
        n.clock.now += 0.001
        n.send(a, "r", "m", b"%d" % i)
    await n.turn(10)
    codes = [json.loads(m.payload)["code"] for m in n.received(a) if m.event == "error"]
    assert codes == ["rate_limited"]
    assert a.closed == (1008, "rate limit exceeded")


async def test_a_ping_flood_is_paced_without_a_rate_limit() -> None:
    n = node(rate_limit=None, byte_limit=None, turn_messages=16)
    a = n.connect()
    await n.turn()
    n.received(a)
    for _ in range(100):
        n.frame(a, Frame(b"p", msg_type=PING))
    assert a.paused  # pings use up a turn like messages
    await n.turn()
    assert len(n.received(a)) == 100  # every ping answered (a read is bounded anyway)


async def test_fragments_are_assembled_and_bounded() -> None:
    n = node(max_message_size=64)
    a, b = n.connect(), n.connect()
    for conn in (a, b):
        n.send(conn, "r", "join")
    await n.turn()
    n.received(a), n.received(b)
    body = codec.encode("r", "m", "", "", b"xy")
    n.frame(a, Frame(body[:10], fin=False))
    n.frame(a, Frame(body[10:], msg_type=CONTINUATION))
    await n.turn()
    assert [m.payload for m in n.received(b)] == [b"xy"]
    n.frame(a, Frame(b"z" * 40, fin=False))
    n.frame(a, Frame(b"z" * 40, msg_type=CONTINUATION, fin=False))
    assert a.closed == (1009, "message too big")


async def test_too_many_errors_close_the_connection() -> None:
    n = node(error_limit=(5, 10.0), rate_limit=None, byte_limit=None)
    a = n.connect()
    for _ in range(6):
        n.send(a, "nowhere", "chat")
    assert a.closed == (1008, "too many errors")
    assert n.core.metrics.counters["abuse_closes"] == 1


async def test_the_room_limit_counts_every_namespace() -> None:
    n = node(max_rooms_per_connection=3, rate_limit=None, byte_limit=None)
    from roomer.namespaces import NamedNamespace
    from roomer.registry import Registry

    for name in ("a", "b"):
        n.core.namespaces[name] = NamedNamespace(n.core, name, Registry(False, name))
        n.core.namespaces[name].registry.engine = n.core.engine
    c = n.connect(v2=True)
    await n.turn()
    n.received(c)
    for name in ("a", "b"):
        n.send_v2(c, "root", "connect", namespace=name, kind=frames.ASK, ask=1)
    n.send_v2(c, "r1", "join", namespace="a", kind=frames.ASK, ask=2)
    n.send_v2(c, "r2", "join", namespace="b", kind=frames.ASK, ask=3)
    n.send_v2(c, "r3", "join", kind=frames.ASK, ask=4)
    n.send_v2(c, "r4", "join", namespace="a", kind=frames.ASK, ask=5)
    await n.turn()
    replies = {ask: kind for kind, ask, _, _ in n.received(c)}
    assert replies == {1: frames.REPLY, 2: frames.REPLY, 3: frames.REPLY, 4: frames.REPLY,
                       5: frames.ERROR_REPLY}
    assert c.room_count() == 3


async def test_a_client_that_leaves_a_namespace_root_is_still_connected_to_it() -> None:
    n = node(rate_limit=None, byte_limit=None)
    from roomer.namespaces import NamedNamespace
    from roomer.registry import Registry

    ns = n.core.namespaces["game"] = NamedNamespace(n.core, "game", Registry(False, "game"))
    ns.registry.engine = n.core.engine
    c = n.connect(v2=True)
    n.send_v2(c, "root", "connect", namespace="game", kind=frames.ASK, ask=1)
    n.send_v2(c, "root", "leave", namespace="game", kind=frames.ASK, ask=2)
    await n.turn()
    n.received(c)
    assert ns.connection_count == 1 and [v.id for v in ns.connections()] == [c.id]
    assert ns.do(lambda view: None) == 1
    ns.broadcast_all("news", b"x")
    await n.turn()
    (got,) = n.received(c)
    assert (got[2], got[3].event, got[3].payload) == ("game", "news", b"x")
    n.send_v2(c, "root", "disconnect", namespace="game", kind=frames.ASK, ask=3)
    await n.turn()
    assert ns.connection_count == 0


async def test_disconnect_hooks_all_run_when_one_raises() -> None:
    n = node()
    ran: list[str] = []

    @n.server.on_disconnect
    def first(conn: roomer.Connection) -> None:
        ran.append("first")
        raise RuntimeError("a broken cleanup")

    @n.server.on_disconnect
    async def second(conn: roomer.Connection) -> None:
        ran.append("second")
        raise KeyError("another")

    @n.server.on_disconnect
    def third(conn: roomer.Connection) -> None:
        ran.append("third")

    a = n.connect()
    n.disconnect(a)
    await n.turn(3)
    assert ran == ["first", "second", "third"]


async def test_pending_asks_are_bounded_and_fail_when_their_room_is_left() -> None:
    n = node(max_pending_asks=2, rate_limit=None, byte_limit=None)
    c = n.connect(v2=True)
    n.send_v2(c, "r", "join", kind=frames.ASK, ask=1)
    await n.turn()
    n.received(c)
    first = asyncio.ensure_future(c.ask("q", b"", room="r", timeout=None))
    second = asyncio.ensure_future(c.ask("q", b"", timeout=None))
    await n.turn()
    third = asyncio.ensure_future(c.ask("q", b""))
    await n.turn()
    assert isinstance(third.exception(), RuntimeError)
    n.send_v2(c, "r", "leave", kind=frames.ASK, ask=2)
    await n.turn()
    assert isinstance(first.exception(), ConnectionError)
    assert not second.done() and len(c.asks) == 1
    n.disconnect(c)
    await n.turn()
    assert isinstance(second.exception(), ConnectionError) and len(c.asks) == 0
