"""The relay path (roomer.fanout.Relay): a plain relay goes from picows' frame callback to
the members' outboxes without the router, and does exactly what the router would; every
other message is left to the router. Over real sockets, on the event loop production
runs; the compiled pass runs the compiled path and the pure pass its twin."""

from __future__ import annotations

import os
import uuid
from typing import Any

from rawclient import connect, encode
from rawsocket import joined
from v2client import batch, connect2
from v2client import encode as encode_v2
from waiting import eventually

import roomer
from roomer import fanout


def taken(server: roomer.Server) -> int:
    return server._core.router.relay.taken  # type: ignore[no-any-return]


async def three_in_r(server: roomer.Server, batches: bool = False
                     ) -> tuple[Any, str, Any, Any]:
    """In room r: a bare-socket v1 client (and its id), a v1 client and a v2 client
    (with batch frames if ``batches``), the presence of their joins read by the two that
    read."""
    a, a_id = await joined(server.address[1], "r")
    b = await connect(server)
    await b.join("r")
    c = await connect2(server, ["roomer.v2.batch"] if batches else None)
    await c.ask("", "r", "join")
    await b.expect("new_member", "r")
    return a, a_id, b, c


def test_the_twin_under_test_is_the_one_loaded() -> None:
    assert (os.environ.get("ROOMER_NO_EXTENSIONS") != "1") == fanout.COMPILED
    assert fanout.Relay.__module__ == ("roomer._fanout" if fanout.COMPILED
                                       else "roomer._fanout_py")


async def test_a_burst_of_relays_takes_the_path_and_arrives_whole_and_in_order(
        make_server) -> None:
    server = await make_server(turn_messages=8)
    sender, sender_id, b, c = await three_in_r(server)
    before = (taken(server), server.counters["relayed"], server.counters["messages_in"],
              server.counters["turn_holds"])
    payloads = [bytes([i % 256]) * (i % 300) for i in range(200)]
    # One write: many frames in each read, far past the turn budget (8 per turn).
    await sender.send_many([("r", "move", p) for p in payloads])
    assert [await b.recv() for _ in payloads] == [
        ("r", "move", "", sender_id, p) for p in payloads]
    got = [await c.recv() for _ in payloads]
    assert [(m.kind, m.namespace, m.room, m.event, m.src) for m in got] == [
        (0, "", "r", "move", sender_id)] * 200
    assert [m.payload for m in got] == payloads
    # The first turn's share went the relay path; what the budget held waited in the
    # backlog, which the router drains in order, each through the relay path too.
    assert taken(server) - before[0] == 200
    assert server.counters["relayed"] - before[1] == 200
    assert server.counters["messages_in"] - before[2] == 200
    assert server.counters["turn_holds"] > before[3]  # the budget held the sender
    await b.expect_nothing()
    sender.close()


async def test_what_is_not_a_plain_relay_is_left_to_the_router(make_server) -> None:
    server = await make_server()
    handled = []

    @server.on("echo")
    def echo(conn: roomer.Connection, msg: roomer.Message) -> None:
        handled.append(msg.payload)

    a, b = await connect(server), await connect(server)
    await a.join("r")
    await b.join("r")
    await a.expect("new_member", "r")
    before = taken(server)
    await a.send("r", "echo", payload=b"h")  # a handler's event
    await eventually(lambda: handled == [b"h"])
    await a.send("r", "chat", dst=str(uuid.uuid4()))  # a direct message to nobody
    await a.expect_error("no_such_client", "r", "chat")
    await a.send("elsewhere", "chat")  # a room it is not in
    await a.expect_error("not_member", "elsewhere", "chat")
    await a.send("root", "chat")  # root broadcast is off by default
    await a.expect_error("forbidden", "root", "chat")
    await a.send("r", "new_member")  # reserved
    await a.expect_error("reserved_event", "r", "new_member")
    await a.send("r", "x" * 200)  # an event name too long
    await a.expect_error("invalid_name", "r", "")
    await a.send(b"r\xff", "chat")  # not UTF-8
    await a.expect_error("invalid_name", "root", "chat")
    await a.send("r", "chat", payload=b"relayed")  # and then a plain relay
    assert await b.recv() == ("r", "chat", "", a.id, b"relayed")
    assert taken(server) - before == 1
    await b.expect_nothing()

    # A handler registered while the server runs takes its event from the next message.
    server.on("late")(lambda conn, msg: handled.append(msg.event))
    await a.send("r", "late")
    await eventually(lambda: handled[-1:] == ["late"])
    assert taken(server) - before == 1
    await b.expect_nothing()


async def test_rate_limits_hold_on_the_path(make_server) -> None:
    server = await make_server(rate_limit=(5, 60.0))
    a, b = await connect(server), await connect(server)
    await a.join("r")
    await b.join("r")
    await a.expect("new_member", "r")
    before = taken(server)
    for i in range(9):
        await a.send("r", "chat", payload=str(i))
    # 5 frames a minute: the join and four relays; then one rate_limited error, three
    # drops, and the fifth refusal in the window closes it.
    for i in range(4):
        assert (await b.recv()).payload == str(i).encode()
    body = await a.expect_error("rate_limited", "r", "chat")
    assert "too many" in body["message"]
    assert (await a.closed())[0] == 1008
    assert taken(server) - before == 9
    assert server.counters["abuse_closes"] == 1
    assert (await b.expect("member_left", "r")).payload == a.id.encode()  # nothing else


async def test_direct_messages_to_clients_here_take_the_path_in_each_version(
        make_server) -> None:
    server = await make_server()
    a, b = await connect(server), await connect(server)
    c = await connect2(server)
    before = (taken(server), server.counters["direct"], server.counters["messages_in"])

    @server.on("dm")  # handlers never see a direct message, on either path
    def dm(conn: roomer.Connection, msg: roomer.Message) -> None:
        raise AssertionError("a handler got a direct message")

    for i in range(3):
        await a.send("anywhere", "dm", dst=b.id, payload=b"%d" % i)
        await a.send("anywhere", "dm", dst=c.id, payload=b"%d" % i)
    await c.send("", "root", "dm", dst=a.id, payload=b"from v2")
    for i in range(3):
        assert await b.recv() == ("anywhere", "dm", b.id, a.id, b"%d" % i)
        msg = await c.recv()
        assert (msg.kind, msg.namespace, msg.room, msg.event, msg.dst, msg.src,
                msg.payload) == (0, "", "anywhere", "dm", c.id, a.id, b"%d" % i)
    assert await a.recv() == ("root", "dm", a.id, c.id, b"from v2")
    assert taken(server) - before[0] == 7
    assert server.counters["direct"] - before[1] == 7
    assert server.counters["messages_in"] - before[2] == 7
    await b.expect_nothing()


# The same messages to a server with the relay path and to one without it --------------


def _v1(room: bytes, event: bytes, dst: bytes = b"", payload: bytes = b"p") -> bytes:
    return encode(room, event, dst, b"", payload)


def _v2(kind: int, ask: int, namespace: bytes, room: bytes, event: bytes, dst: bytes = b"",
        payload: bytes = b"p") -> bytes:
    return encode_v2(kind, ask, namespace, room, event, dst, b"", payload)  # type: ignore[arg-type]


def _crafted(ids: dict[str, bytes]) -> tuple[list[bytes], list[bytes]]:
    """What the v1 client and the v2 client send: every way a message can be or almost
    be a plain relay or direct message."""
    b, c, nobody = ids["b"], ids["c"], str(uuid.uuid4()).encode()
    v1 = [
        _v1(b"r", b"chat"), _v1(b"r", b"chat", payload=b""), _v1(b"r", b"\xc3\xa9v\xc3\xa9nt"),
        _v1(b"r", b"chat", b), _v1(b"r", b"chat", c), _v1(b"x", b"dm", b), _v1(b"r", b"dm", nobody),
        _v1(b"r", b"dm", b"not-an-id"), _v1(b"r", b"dm", b"\xff"),
        _v1(b"x", b"chat"), _v1(b"root", b"chat"), _v1(b"", b"chat"), _v1(b"r", b""),
        _v1(b"r" * 128, b"chat"), _v1(b"r" * 129, b"chat"), _v1(b"r", b"e" * 64),
        _v1(b"r", b"e" * 65), _v1("é".encode() * 64, b"chat"), _v1(b"\xff", b"chat"),
        _v1(b"r", b"\xfe"), _v1(b"r", b"echo"), _v1(b"r", b"join_ack"), _v1(b"r", b"error"),
        _v1(b"r", b"session.ack", payload=b"1"), _v1(b"r2", b"join"), _v1(b"r2", b"chat"),
        _v1(b"r2", b"leave"), _v1(b"r2", b"chat"), _v1(b"table:abc", b"chat"),
        _v1(b"table:abc", b"chat", b), _v1(b":abc", b"chat"), _v1(b"r", b"room.create"),
        _v1(b"r", b"chat")[:-1], _v1(b"r", b"chat") + b"\x00", b"\x00" * 19, b"",
        b"\xff\xff\xff\xff" + b"\x00" * 16,  # a room length past the end
    ]
    v2 = [
        _v2(0, 0, b"", b"r", b"chat"), _v2(0, 0, b"", b"r", b"chat", b), _v2(1, 7, b"", b"r",
                                                                             b"chat"),
        _v2(0, 0, b"ns", b"r", b"chat"), _v2(0, 0, b"nope", b"r", b"chat"),
        _v2(2, 9, b"", b"r", b"chat"), _v2(5, 0, b"", b"r", b"chat"), _v2(0, 3, b"", b"r",
                                                                         b"chat"),
        _v2(0, 0, b"", b"r", b"echo"), _v2(0, 0, b"", b"x", b"chat"),
        _v2(0, 0, b"", b"r", b"connect"), _v2(0, 0, b"", b"r", b"disconnect"),
        _v2(0, 0, b"", b"r", b"chat")[:-2],
    ]
    return v1, v2


def _batches(ids: dict[str, bytes]) -> list[bytes]:
    """Batch frames (docs/protocol.md §13) the v2 client sends: of plain relays, and of
    plain relays mixed with what the router must do, in every position."""
    b = ids["b"]
    chat = _v2(0, 0, b"", b"r", b"chat")
    return [
        batch(chat, _v2(0, 0, b"", b"r", b"chat", payload=b"2")),
        batch(*[_v2(0, 0, b"", b"r", b"burst", payload=b"%d" % i) for i in range(30)]),
        batch(chat, _v2(0, 0, b"", b"r", b"echo"), chat),
        batch(_v2(0, 0, b"", b"r", b"echo"), chat, chat),
        batch(chat, _v2(0, 0, b"", b"r", b"dm", b), _v2(1, 4, b"", b"r", b"echo"), chat),
        batch(chat, b"\x04" + bytes(28), chat),  # an entry that is no v2 message
        batch(chat, _v2(0, 0, b"", b"r", b"join_ack"), _v2(0, 0, b"", b"x", b"chat"), chat),
        batch(_v2(0, 0, b"ns", b"r", b"chat"), chat),
        batch(chat, chat) + b"\x00",  # broken framing: refused whole
        batch(chat),
    ]


async def _observe(server: roomer.Server) -> tuple[dict[tuple[str, str], list], dict]:
    """Run the crafted messages through ``server``: what each client got from each
    sender (ids as the clients' names; the order between senders is the network's), and
    the counters that moved."""
    server.on("echo")(lambda conn, msg: conn.send("echoed", msg.payload, msg.room))
    a, a_id, b, c = await three_in_r(server, batches=True)
    names = {a_id: "a", b.id: "b", c.id: "c", "": "server"}
    before = dict(server.counters)
    v1, v2 = _crafted({"b": b.id.encode(), "c": c.id.encode()})
    v2 += _batches({"b": b.id.encode()})
    # Each ends with a relay to r and a direct message to itself: the anchors after
    # which nothing more is owed to anyone.
    await a.send_bodies([*v1, _v1(b"r", b"end"), _v1(b"r", b"mine", a_id.encode())])
    for data in [*v2, _v2(0, 0, b"", b"r", b"end"), _v2(0, 0, b"", b"r", b"mine",
                                                           c.id.encode())]:
        await c.ws.send(data)
    seen: dict[tuple[str, str], list] = {}

    def named(field: Any) -> Any:
        if isinstance(field, str):
            return names.get(field, field)
        if isinstance(field, bytes):  # ids in payloads: presence, member lists
            for cid, name in names.items():
                if cid:
                    field = field.replace(cid.encode(), name.encode())
        return field

    async def read(who: str, recv: Any, waits: set[tuple[str, str]]) -> None:
        while waits:
            msg = await recv()
            src = names.get(msg.src, msg.src)
            seen.setdefault((who, src), []).append(tuple(named(f) for f in msg))
            waits.discard((src, msg.event))

    await read("a", a.recv, {("c", "end"), ("a", "mine")})
    await read("b", b.recv, {("a", "end"), ("c", "end")})
    await read("c", c.recv, {("a", "end"), ("c", "mine")})
    # Turn holds are left out: how many depends on how the reads fall into loop turns.
    moved = {k: v - before.get(k, 0) for k, v in server.counters.items()
             if v != before.get(k, 0) and k not in ("connections_total", "turn_holds")}
    a.close()
    return seen, moved


async def test_the_relay_path_does_what_the_router_does(make_server) -> None:
    from game_app import Table

    def make(**options: object):
        async def start() -> roomer.Server:
            server = roomer.Server(allow_root_broadcast=False, **options)
            server.define("table", Table)
            server.namespace("ns")
            await server.start("127.0.0.1", 0)
            return server
        return start

    with_path = await make()()
    without = await make()()
    try:
        without._core.engine.relay = None  # every frame to the router
        got_with, moved_with = await _observe(with_path)
        got_without, moved_without = await _observe(without)
        assert taken(with_path) > 10
        assert taken(without) == 0
        assert got_with == got_without
        assert moved_with == moved_without
        assert with_path.errors == without.errors
    finally:
        await with_path.shutdown(timeout=1.0)
        await without.shutdown(timeout=1.0)
