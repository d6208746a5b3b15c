"""Protocol v2 over real sockets (docs/protocol.md §1, §6, §7): negotiation, v1 and v2
clients together, namespaces and their hooks, asks both ways."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from rawclient import TIMEOUT, connect, url_of
from v2client import ASK, ERROR_REPLY, EVENT, REPLY, Client2, connect2, encode
from waiting import eventually, scaled, suspend
from websockets.asyncio.client import connect as ws_connect

import roomer

# negotiation --------------------------------------------------------------------------


async def test_the_101_names_the_protocol_offered(make_server: Any) -> None:
    server = await make_server()
    for offered, chosen in ((["roomer.v2"], "roomer.v2"), (["x", "roomer.v2"], "roomer.v2"),
                            (["roomer.v1"], "roomer.v1"), (["chat"], None), (None, None),
                            # docs/protocol.md §1: roomer.v2 "alone or in a list" is v2.
                            (["roomer.v1", "roomer.v2"], "roomer.v2"),
                            (["x", "roomer.v1"], "roomer.v1")):
        ws = await ws_connect(url_of(server), subprotocols=offered)  # type: ignore[arg-type]
        assert ws.subprotocol == chosen, offered
        await ws.close()


async def test_v1_and_v2_clients_share_the_default_namespace(make_server: Any) -> None:
    server = await make_server()
    old = await connect(server)
    new = await connect2(server)
    await old.join("lobby")
    joined = await new.ask("", "lobby", "join")
    assert joined.kind == REPLY and joined.json() == [old.id, new.id]
    assert (await old.expect("new_member", "lobby")).text == new.id
    await old.send("lobby", "chat", payload=b"from v1")
    got = await new.expect("chat", "lobby", "")
    assert (got.kind, got.src, got.payload) == (EVENT, old.id, b"from v1")
    await new.send("", "lobby", "chat", payload=b"from v2")
    got1 = await old.expect("chat", "lobby")
    assert (got1.src, got1.payload) == (new.id, b"from v2")
    await new.send("", "root", "psst", dst=old.id, payload=b"dm")
    assert (await old.expect("psst")).dst == old.id
    await server.broadcast("lobby", "tick", "both")
    assert (await old.expect("tick")).payload == b"both"
    assert (await new.expect("tick")).payload == b"both"


async def test_a_mixed_room_is_framed_once_per_version(make_server: Any) -> None:
    server = await make_server()
    calls: list[tuple[str, int]] = []
    engine = server._core.engine

    class Spy:
        def __getattr__(self, name: str) -> Any:
            real = getattr(engine, name)
            if name.startswith("broadcast"):
                def spy(members: Any, *frames: Any, **kw: Any) -> Any:
                    calls.append((name, sum(isinstance(f, bytes) for f in frames)))
                    return real(members, *frames, **kw)
                return spy
            return real

    clients = [await connect(server) for _ in range(3)] + [await connect2(server)
                                                           for _ in range(3)]
    for client in clients:
        if isinstance(client, Client2):
            await client.ask("", "r", "join")
        else:
            await client.join("r")
    for ns in server._core.namespaces.values():
        ns.registry.engine = Spy()
    await server.broadcast("r", "x", "y")
    assert calls == [("broadcast_mixed", 2)]  # one call, one v1 and one v2 frame


# namespaces -------------------------------------------------------------------------------


async def test_namespaces_are_isolated_and_must_be_connected(make_server: Any) -> None:
    server = await make_server()
    chat = server.namespace("chat") if False else None  # declared before start below
    assert chat is None
    server2 = roomer.Server()
    chat = server2.namespace("chat")
    assert server2.namespace("chat") is chat
    await server2.start("127.0.0.1", 0)
    try:
        a = await connect2(server2)
        b = await connect2(server2)
        refused = await a.ask("chat", "lobby", "join")
        assert (refused.kind, refused.json()["code"]) == (ERROR_REPLY, "not_connected")
        unknown = await a.ask("nope", "", "connect")
        assert (unknown.kind, unknown.json()["code"]) == (ERROR_REPLY, "no_such_namespace")
        assert (await a.connect_to("chat")).kind == REPLY
        assert (await b.connect_to("chat")).kind == REPLY
        assert (await a.ask("chat", "lobby", "join")).json() == [a.id]
        assert (await b.ask("", "lobby", "join")).json() == [b.id]  # not the same room
        await a.expect_nothing()
        assert chat.members("lobby") == [a.id] and server2.members("lobby") == [b.id]
        assert (await b.ask("chat", "lobby", "join")).json() == [a.id, b.id]
        assert (await a.expect("new_member", "lobby", "chat")).text == b.id
        await b.send("chat", "lobby", "chat", payload=b"hi")
        got = await a.expect("chat", "lobby", "chat")
        assert (got.namespace, got.src) == ("chat", b.id)
        v1 = await connect(server2)
        await v1.join("lobby")
        await b.expect("new_member", "lobby", "")  # the default namespace's lobby
        await a.expect_nothing()
        await chat.broadcast("lobby", "news", "n")
        assert (await a.expect("news", "lobby", "chat")).payload == b"n"
        assert chat.send_to(a.id, "hey", "you") is True
        assert (await a.expect("hey", "root", "chat")).payload == b"you"
        assert chat.send_to(v1.id, "hey") is False  # not in the namespace
        assert chat.do(lambda view: view.send("all")) == 2
        await a.close()
        await b.close()
    finally:
        await server2.shutdown(timeout=1)


async def test_namespace_hooks_fire_once_each_in_order(make_server: Any) -> None:
    server = roomer.Server()
    game = server.namespace("game")
    seen: list[str] = []

    def record(name: str) -> Any:
        def hook(view: Any, *args: Any) -> None:
            assert isinstance(view, roomer.NamespaceConnection) and view.namespace == "game"
            seen.append(f"{name}{':' + args[0] if args and isinstance(args[0], str) else ''}")
        return hook

    for name in ("connect", "connected", "join", "joined", "leave", "left", "disconnect"):
        getattr(game, f"on_{name}")(record(name))
    await server.start("127.0.0.1", 0)
    try:
        c = await connect2(server)
        await c.connect_to("game")
        await c.ask("game", "r", "join")
        await c.ask("game", "r", "leave")
        await c.ask("game", "s", "join")
        assert (await c.ask("game", "", "disconnect")).kind == REPLY
        # Leaving the namespace leaves its every room, root (its connection) included.
        assert seen == ["connect", "connected", "join:r", "joined:r", "leave:r", "left:r",
                        "join:s", "joined:s", "leave:root", "left:root", "leave:s", "left:s",
                        "disconnect"]
        seen.clear()
        await c.connect_to("game")
        await c.ask("game", "t", "join")
        await c.close()  # the socket goes: every room left, then disconnect
        await eventually(lambda: "disconnect" in seen, what="on_disconnect ran")
        assert seen == ["connect", "connected", "join:t", "joined:t", "leave:root",
                        "left:root", "leave:t", "left:t", "disconnect"]
    finally:
        await server.shutdown(timeout=1)


async def test_namespace_hooks_deny_where_they_may(make_server: Any) -> None:
    server = roomer.Server()
    vip = server.namespace("vip")

    @vip.on_connect
    async def only_named(view: roomer.NamespaceConnection) -> None:
        if view.request.path != b"/ws?vip=1":
            raise roomer.Deny("members only")

    @vip.on_join
    def no_secret(view: roomer.NamespaceConnection, room: str) -> None:
        if room == "secret":
            raise roomer.Deny("not this one")

    @vip.on_leave
    def stay(view: roomer.NamespaceConnection, room: str) -> None:
        if room == "sticky":
            raise roomer.Deny("you stay")

    await server.start("127.0.0.1", 0)
    try:
        outsider = await connect2(server)
        refused = await outsider.connect_to("vip")
        assert (refused.kind, refused.json()) == (ERROR_REPLY, {
            "code": "namespace_denied", "message": "members only"})
        ws = await ws_connect(url_of(server, "/ws?vip=1"), subprotocols=["roomer.v2"])  # type: ignore[list-item]
        member = Client2(ws)
        member.id = (await member.recv()).src
        assert (await member.connect_to("vip")).kind == REPLY
        denied = await member.ask("vip", "secret", "join")
        assert denied.json()["code"] == "join_denied" and denied.room == "secret"
        assert (await member.ask("vip", "sticky", "join")).kind == REPLY
        kept = await member.ask("vip", "sticky", "leave")
        assert (kept.kind, kept.json()["code"]) == (ERROR_REPLY, "leave_denied")
        assert vip.members("sticky") == [member.id]
        # as events (kind 0) the refusals are error events in the namespace
        await member.send("vip", "secret", "join")
        err = await member.expect("error", "secret", "vip")
        assert err.json()["code"] == "join_denied"
        await member.close()
        await outsider.close()
    finally:
        await server.shutdown(timeout=1)


def test_namespace_names_fit_the_backplane_envelope() -> None:
    # A direct message to another node carries its namespace behind one length byte:
    # 256 bytes would wrap around (or raise) there, so they are refused up front.
    server = roomer.Server(max_event_name=1000)
    assert server.namespace("n" * 255).name == "n" * 255
    assert server.namespace("é" * 127).name == "é" * 127  # 254 bytes
    for name in ("n" * 256, "é" * 128):
        with pytest.raises(ValueError, match="namespace names are 1-255 bytes"):
            server.namespace(name)
    with pytest.raises(ValueError, match="1-64 bytes"):
        roomer.Server().namespace("n" * 65)


def test_a_second_catch_all_is_refused() -> None:
    # Only the first would ever run: a second registration is a mistake to say at once.
    server = roomer.Server()
    for ns in (server, server.namespace("arena")):
        ns.on_event(lambda view, msg: None)
        with pytest.raises(ValueError, match="on_event"):
            ns.on_event(lambda view, msg: None)
    assert len(server.namespace("other").hooks.event) == 0


async def test_the_catch_all_gets_events_without_a_handler(make_server: Any) -> None:
    server = roomer.Server()
    arena = server.namespace("arena")
    got: list[str] = []

    @arena.on_event
    def anything(view: roomer.NamespaceConnection, msg: roomer.Message) -> str:
        got.append(msg.event)
        return f"caught {msg.event}"

    @arena.on("named")
    def named(view: roomer.NamespaceConnection, msg: roomer.Message) -> str:
        return "named"

    await server.start("127.0.0.1", 0)
    try:
        c = await connect2(server)
        other = await connect2(server)
        for client in (c, other):
            await client.connect_to("arena")
            await client.ask("arena", "r", "join")
        await c.expect("new_member")
        assert (await c.ask("arena", "r", "named")).payload == b"named"
        assert (await c.ask("arena", "r", "whatever")).payload == b"caught whatever"
        await c.send("arena", "r", "chat", payload=b"not relayed")
        await other.expect_nothing()
        assert got == ["whatever", "chat"]
        await c.close()
        await other.close()
    finally:
        await server.shutdown(timeout=1)


# asks, client to server -------------------------------------------------------------------


async def test_a_handlers_return_value_answers_an_ask(make_server: Any) -> None:
    server = await make_server()

    @server.on("roll")
    def roll(conn: roomer.Connection, msg: roomer.Message) -> Any:
        return {"bytes": b"\x01\x02", "text": "six", "json": {"n": 6}, "none": None}[
            msg.payload.decode()]

    @server.on("slow")
    async def slow(conn: roomer.Connection, msg: roomer.Message) -> str:
        await suspend()
        return "done"

    @server.on("refuse")
    def refuse(conn: roomer.Connection, msg: roomer.Message) -> None:
        raise roomer.Deny("not your turn")

    class OutOfStock(roomer.RoomerError):
        code = "out_of_stock"

    @server.on("buy")
    def buy(conn: roomer.Connection, msg: roomer.Message) -> None:
        raise OutOfStock("none left")

    @server.on("crash")
    def crash(conn: roomer.Connection, msg: roomer.Message) -> None:
        raise ZeroDivisionError

    c = await connect2(server)
    assert (await c.ask("", "root", "roll", "bytes")).payload == b"\x01\x02"
    assert (await c.ask("", "root", "roll", "text")).payload == b"six"
    assert (await c.ask("", "root", "roll", "json")).json() == {"n": 6}
    assert (await c.ask("", "root", "roll", "none")).payload == b""
    answer = await c.ask("", "room1", "slow")
    assert (answer.kind, answer.room, answer.event, answer.payload) == (REPLY, "room1", "slow",
                                                                       b"done")
    for event, code, message in (("refuse", "denied", "not your turn"),
                                 ("buy", "out_of_stock", "none left"),
                                 ("crash", "handler_error", "internal error"),
                                 ("unhandled", "no_handler", None)):
        refused = await c.ask("", "root", event)
        assert refused.kind == ERROR_REPLY and refused.json()["code"] == code, refused
        if message:
            assert refused.json()["message"] == message
    refused = await c.ask("", "root", "roll", dst=c.id)
    assert refused.json()["code"] == "forbidden"
    refused = await c.ask("", "root", "join_ack")
    assert refused.json()["code"] == "reserved_event"
    assert server.counters["asks_in"] == 8  # every ask a handler answered
    await c.expect_nothing()  # nothing but replies: no error events, no join_acks


async def test_join_and_leave_asks_reply_instead_of_acking(make_server: Any) -> None:
    server = await make_server(max_rooms_per_connection=1)
    c = await connect2(server)
    joined = await c.ask("", "a", "join")
    assert (joined.kind, joined.event, joined.json()) == (REPLY, "join", [c.id])
    full = await c.ask("", "b", "join")
    assert (full.kind, full.json()["code"]) == (ERROR_REPLY, "too_many_rooms")
    left = await c.ask("", "a", "leave")
    assert (left.kind, left.payload) == (REPLY, c.id.encode())
    bad = await c.ask("", "x" * 200, "join")
    assert bad.json()["code"] == "invalid_name"
    await c.expect_nothing()


async def test_a_thousand_asks_in_flight_on_one_connection(make_server: Any) -> None:
    server = await make_server(rate_limit=None, byte_limit=None, turn_messages=64)

    @server.on("echo")
    async def echo(conn: roomer.Connection, msg: roomer.Message) -> bytes:
        await suspend()
        return msg.payload

    c = await connect2(server)
    answers = await asyncio.gather(*(c.ask("", "root", "echo", b"%d" % i) for i in range(1000)))
    assert [a.payload for a in answers] == [b"%d" % i for i in range(1000)]
    assert len({a.id for a in answers}) == 1000


async def test_a_broken_ask_is_answered_by_an_error_reply(make_server: Any) -> None:
    server = await make_server()
    c = await connect2(server)

    async def ask_raw(ask_id: int, data: bytes) -> Any:
        waiter = asyncio.get_running_loop().create_future()
        c.answers[ask_id] = waiter
        await c.ws.send(data)
        return await asyncio.wait_for(waiter, TIMEOUT)

    cut = await ask_raw(77, encode(ASK, 77, "", "root", "x")[:-4])  # no payload length
    assert (cut.kind, cut.json()["code"]) == (ERROR_REPLY, "malformed")
    invalid = await ask_raw(78, b"\x01\x00\x00\x00\x4e" + b"".join(
        len(f).to_bytes(4, "big") + f for f in (b"", b"\xff", b"ev", b"", b"", b"")))
    assert (invalid.kind, invalid.json()["code"], invalid.event) == (ERROR_REPLY,
                                                                   "invalid_name", "ev")
    # a header too broken to know the ask's id: an error event
    await c.ws.send(b"\x07" + bytes(28))
    err = await c.expect("error", "root", "")
    assert err.kind == EVENT and err.json()["code"] == "malformed"


# asks, server to client --------------------------------------------------------------------


async def _answering(client: Client2, answer: Any) -> asyncio.Task[None]:
    async def loop() -> None:
        while True:
            msg = await client.recv(30)
            if msg.kind == ASK:
                kind, body = answer(msg)
                await client.send(msg.namespace, msg.room, msg.event, payload=body,
                                  kind=kind, id=msg.id)

    return asyncio.ensure_future(loop())


async def test_the_server_asks_a_client(make_server: Any) -> None:
    server = await make_server(max_pending_asks=1000)
    c = await connect2(server)
    conn = server.connection(c.id)
    assert conn is not None and conn.v2

    def answer(msg: Any) -> tuple[int, bytes]:
        if msg.payload == b"refuse":
            return ERROR_REPLY, json.dumps({"code": "nope", "message": "no"}).encode()
        return REPLY, msg.payload.upper()

    answering = await _answering(c, answer)
    assert await conn.ask("shout", b"hello") == b"HELLO"
    with pytest.raises(roomer.ClientError) as info:
        await conn.ask("shout", b"refuse")
    assert info.value.code == "nope"
    many = await asyncio.gather(*(conn.ask("shout", b"m%d" % i) for i in range(1000)))
    assert many == [b"M%d" % i for i in range(1000)]
    assert len(conn.asks) == 0
    answering.cancel()
    assert server.counters["asks_out"] == 1002


async def test_asks_that_time_out_leave_no_waiter(make_server: Any) -> None:
    server = await make_server(max_pending_asks=200)
    c = await connect2(server)
    conn = server.connection(c.id)
    assert conn is not None
    results = await asyncio.gather(*(conn.ask("silent", timeout=0.05) for _ in range(200)),
                                   return_exceptions=True)
    assert all(isinstance(r, roomer.AskTimeout) for r in results)
    assert len(conn.asks) == 0
    assert server.counters["ask_timeouts"] == 200
    late = await c.recv()
    await c.send("", "root", "silent", kind=REPLY, id=late.id)  # a late answer
    await c.send("", "root", "silent", kind=REPLY, id=123456)  # an id never used
    await eventually(lambda: server.counters["unknown_replies"] == 2, what="both unknown")


async def test_an_ask_fails_when_the_client_goes_and_v1_cannot_be_asked(
        make_server: Any) -> None:
    server = await make_server()
    c = await connect2(server)
    conn = server.connection(c.id)
    old = await connect(server)
    v1 = server.connection(old.id)
    assert conn is not None and v1 is not None
    with pytest.raises(RuntimeError, match="v1"):
        await v1.ask("x")
    pending = asyncio.ensure_future(conn.ask("x", timeout=10))
    await c.recv()
    await c.close()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(pending, scaled(5))


async def test_namespaces_across_nodes(prefix: str) -> None:
    url = f"memory://{uuid.uuid4().hex}"
    servers = []
    for i in range(2):
        server = roomer.Server(backplane=url, backplane_prefix=prefix, node_id=f"v{i}")
        server.namespace("chat")
        await server.start("127.0.0.1", 0)
        servers.append(server)
    try:
        a = await connect2(servers[0])
        b = await connect2(servers[1])
        for client in (a, b):
            await client.connect_to("chat")
        assert (await a.ask("chat", "lobby", "join")).json() == [a.id]
        assert sorted((await b.ask("chat", "lobby", "join")).json()) == sorted([a.id, b.id])
        assert (await a.expect("new_member", "lobby", "chat")).text == b.id
        await b.send("chat", "lobby", "chat", payload=b"across")
        got = await a.expect("chat", "lobby", "chat")
        assert (got.src, got.payload) == (b.id, b"across")
        await a.send("chat", "root", "dm", dst=b.id, payload=b"direct")
        got = await b.expect("dm", "root", "chat")
        assert (got.src, got.payload) == (a.id, b"direct")
        await servers[0].namespace("chat").broadcast("lobby", "news", "x")
        assert (await b.expect("news", "lobby", "chat")).payload == b"x"
        await a.close()
        await b.close()
    finally:
        for server in servers:
            await server.shutdown(timeout=1)


async def test_a_reply_that_is_not_json_able_is_an_error_reply(make_server: Any) -> None:
    # A handler's return value that json cannot encode is the handler's fault: an error
    # reply, as an exception it raised would be, and the connection stays.
    server = await make_server()

    @server.on("set")
    def a_set(conn: roomer.Connection, msg: roomer.Message) -> Any:
        return {1, 2}

    @server.on("later")
    async def an_object(conn: roomer.Connection, msg: roomer.Message) -> Any:
        return object()

    c = await connect2(server)
    for event in ("set", "later"):
        refused = await c.ask("", "root", event)
        assert (refused.kind, refused.json()) == (ERROR_REPLY, {
            "code": "handler_error", "message": "internal error"}), refused
    assert (await c.ask("", "root", "join")).kind == REPLY  # still connected


async def test_a_handler_may_ask_its_own_client(make_server: Any) -> None:
    # The handler that asks keeps the connection busy (its messages wait in order behind
    # it), but the answer to the server's own ask must not wait there: it is what the
    # handler waits for.
    server = await make_server()

    @server.on("ask-me")
    async def ask_me(conn: roomer.Connection, msg: roomer.Message) -> bytes:
        return b"got " + await conn.ask("q", msg.payload, timeout=2)

    c = await connect2(server)
    waiter = asyncio.get_running_loop().create_future()
    c.answers[1] = waiter
    await c.send("", "root", "ask-me", payload=b"hi", kind=ASK, id=1)
    asked = await c.recv()
    assert (asked.kind, asked.event, asked.payload) == (ASK, "q", b"hi")
    await c.send("", "root", "q", payload=b"HI", kind=REPLY, id=asked.id)
    answer = await asyncio.wait_for(waiter, TIMEOUT)
    assert (answer.kind, answer.payload) == (REPLY, b"got HI")
    assert server.counters["ask_timeouts"] == 0


async def test_a_rate_limited_ask_gets_an_error_reply(make_server: Any) -> None:
    # docs/protocol.md §7: a refusal of an ask is an error reply to its id, rate_limited
    # included (for the first refused message of a window, as for events).
    server = roomer.Server(rate_limit=(2, 60.0))
    server.namespace("chat")
    await server.start("127.0.0.1", 0)
    try:
        c = await connect2(server)
        assert (await c.connect_to("chat")).kind == REPLY
        assert (await c.ask("chat", "root", "join")).kind == REPLY  # the 2nd token
        refused = await c.ask("chat", "lobby", "roll")
        assert (refused.kind, refused.namespace, refused.room, refused.event,
                refused.json()["code"]) == (ERROR_REPLY, "chat", "lobby", "roll",
                                            "rate_limited")
        await c.close()
        # in the default namespace too, and an event's is an error event as before
        for first in (EVENT, ASK):
            c = await connect2(server)
            await c.ask("", "root", "join")
            await c.ask("", "root", "join")
            if first == ASK:
                refused = await c.ask("", "lobby", "roll")
                assert (refused.kind, refused.namespace, refused.json()["code"]) == (
                    ERROR_REPLY, "", "rate_limited")
            else:
                await c.send("", "lobby", "roll")
                err = await c.expect("error", "lobby", "")
                assert (err.kind, err.json()["code"], err.json()["event"]) == (
                    EVENT, "rate_limited", "roll")
            await c.close()
    finally:
        await server.shutdown(timeout=1)


async def test_a_handler_that_asks_its_own_pipelining_client_gets_the_answer(
        make_server: Any) -> None:
    # The client pipelines 200 messages; the first one's handler asks it something. The
    # answer arrives behind 199 queued messages: the server must read it anyway (it once
    # paused reading at 64 queued, and the ask waited for ever).
    server = await make_server(rate_limit=None, byte_limit=None)
    handled: list[bytes] = []

    @server.on("work")
    async def work(conn: roomer.Connection, msg: roomer.Message) -> None:
        if msg.payload == b"0":
            handled.append(await conn.ask("confirm", b"?", timeout=None))
        handled.append(msg.payload)

    c = await connect2(server)
    for i in range(200):
        await c.send("", "root", "work", payload=b"%d" % i)
    asked = await c.expect("confirm")
    assert asked.kind == ASK
    await c.send("", "root", "confirm", kind=REPLY, id=asked.id, payload=b"yes")
    await eventually(lambda: len(handled) == 201)  # every message, after the answer
    assert handled == [b"yes"] + [b"%d" % i for i in range(200)]


async def test_a_client_that_floods_while_asked_fails_the_ask_not_the_server(
        make_server: Any) -> None:
    server = await make_server(rate_limit=None, byte_limit=None, error_limit=None)
    outcome: list[str] = []

    @server.on("work")
    async def work(conn: roomer.Connection, msg: roomer.Message) -> None:
        if msg.payload == b"0":
            try:
                await conn.ask("confirm", b"?", timeout=None)
                outcome.append("answered")
            except ConnectionError as exc:
                outcome.append(str(exc))

    c = await connect2(server)
    await c.send("", "root", "work", payload=b"0")
    await c.expect("confirm")
    # Never answers; keeps sending: past the hard bound the ask fails, the rest go on.
    for i in range(1, 2000):
        await c.send("", "root", "work", payload=b"%d" % i)
    await eventually(lambda: outcome != [])
    assert outcome == ["the client's messages fill its backlog while it is asked"]
    await c.send("", "root", "work", payload=b"last")
    conn = server.connection(c.id)
    assert conn is not None
    await eventually(lambda: conn.inbound.backlog == 0)
