"""The server-side API over loopback: handlers, hooks, authorize/origins, sending from
anywhere, introspection, kick and graceful shutdown (docs/protocol.md §9 step 6)."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from rawclient import Msg, connect, connect_ws, decode, encode, eventually, pair_in, url_of
from waiting import TIMEOUT, pace, scaled, stall, suspend
from websockets.exceptions import ConnectionClosed, InvalidStatus

import roomer
from roomer.handlers import unregister_handler

RESERVED = ("join", "leave", "join_ack", "leave_ack", "new_member", "member_left", "error",
            "open", "close")


# handlers ---------------------------------------------------------------------------------


async def test_sync_handler_replies_and_nothing_is_relayed(make_server) -> None:
    server = await make_server()
    seen: list[roomer.Message] = []

    @server.on("ping")
    def ping(conn, msg) -> None:
        seen.append(msg)
        conn.send("pong", msg.payload, room=msg.room)

    a, b = await pair_in(server, "r")
    await a.send("r", "ping", dst="", src="forged", payload=b"\x01\x02")
    assert await a.recv() == ("r", "pong", "", "", b"\x01\x02")
    await b.expect_nothing()  # a handled event is not relayed
    assert seen == [roomer.Message("r", "ping", "", a.id, b"\x01\x02")]
    assert server.counters["handled"] == 1


async def test_handler_runs_without_membership_and_in_root(make_server) -> None:
    server = await make_server()
    server.on("whoami")(lambda conn, msg: conn.send("you", conn.id, room=msg.room))
    a = await connect(server)
    await a.send("root", "whoami")
    assert await a.recv() == ("root", "you", "", "", a.id.encode())
    await a.send("elsewhere", "whoami")
    assert await a.recv() == ("elsewhere", "you", "", "", a.id.encode())


async def test_async_handler_broadcasts(make_server) -> None:
    server = await make_server()

    @server.on("announce")
    async def announce(conn, msg) -> None:
        await suspend()
        server.broadcast(msg.room, "announced", msg.payload)

    a, b = await pair_in(server, "r")
    await a.send("r", "announce", payload=b"hello")
    for c in (a, b):  # server-originated: src empty, the sender included
        assert await c.recv() == ("r", "announced", "", "", b"hello")


async def test_handler_send_to_room_and_send_to_client(make_server) -> None:
    server = await make_server()

    @server.on("shout")
    def shout(conn, msg) -> None:
        conn.send_to_room(msg.room, "shouted", msg.payload)

    @server.on("whisper")
    def whisper(conn, msg) -> None:
        target = msg.payload.decode()
        ok = conn.send_to_client(target, "whispered", b"psst", room="r")
        conn.send("whisper_result", b"1" if ok else b"0")

    a = await connect(server)
    b = await connect(server)
    c = await connect(server)
    await a.join("r")
    await b.join("r")
    await a.expect("new_member")
    await a.send("r", "shout", payload=b"HEY")
    assert await b.recv() == ("r", "shouted", "", a.id, b"HEY")
    await a.expect_nothing()  # send_to_room excludes the connection itself
    await c.expect_nothing()
    await a.send("root", "whisper", payload=c.id)
    assert await c.recv() == ("r", "whispered", c.id, a.id, b"psst")
    assert (await a.recv()).payload == b"1"
    await a.send("root", "whisper", payload="nobody")
    assert (await a.recv()).payload == b"0"


async def test_async_handler_keeps_message_order(make_server) -> None:
    server = await make_server()

    @server.on("slow")
    async def slow(conn, msg) -> None:
        await stall(0.05)  # the fast messages behind it wait, in order
        conn.send("done", msg.payload)

    server.on("fast")(lambda conn, msg: conn.send("done", msg.payload))
    a = await connect(server)
    await a.send("root", "slow", payload=b"1")
    await a.send("root", "fast", payload=b"2")
    await a.send("root", "slow", payload=b"3")
    await a.send("root", "fast", payload=b"4")
    assert [(await a.recv()).payload for _ in range(4)] == [b"1", b"2", b"3", b"4"]


async def test_handler_error_deny_message(make_server) -> None:
    server = await make_server()

    @server.on("sync_deny")
    def sync_deny(conn, msg) -> None:
        raise roomer.Deny("not your turn")

    @server.on("async_deny")
    async def async_deny(conn, msg) -> None:
        await suspend()
        raise roomer.Deny("still not your turn")

    server.on("echo")(lambda conn, msg: conn.send("echo", msg.payload))
    a = await connect(server)
    await a.send("r", "sync_deny")
    body = await a.expect_error("handler_error", "r", "sync_deny")
    assert body["message"] == "not your turn"
    await a.send("root", "async_deny")
    body = await a.expect_error("handler_error", "root", "async_deny")
    assert body["message"] == "still not your turn"
    await a.send("root", "echo", payload=b"up")  # the connection stays up
    assert (await a.expect("echo")).payload == b"up"
    assert server.errors["handler_error"] == 2


async def test_handler_error_internal(make_server, caplog: pytest.LogCaptureFixture) -> None:
    server = await make_server()

    @server.on("boom")
    def boom(conn, msg) -> None:
        raise RuntimeError("secret database password")

    @server.on("aboom")
    async def aboom(conn, msg) -> None:
        raise KeyError("secret key")

    server.on("echo")(lambda conn, msg: conn.send("echo", msg.payload))
    a = await connect(server)
    with caplog.at_level(logging.ERROR, logger="roomer"):
        await a.send("r", "boom")
        body = await a.expect_error("handler_error", "r", "boom")
        assert body["message"] == "internal error"
        await a.send("r", "aboom")
        body = await a.expect_error("handler_error", "r", "aboom")
        assert body["message"] == "internal error"
    assert "secret" not in json.dumps(body)
    assert any(r.exc_info and "secret database password" in str(r.exc_info[1])
               for r in caplog.records)  # logged with its traceback
    await a.send("root", "echo", payload=b"up")
    assert (await a.expect("echo")).payload == b"up"


async def test_module_level_register_handler(make_server) -> None:
    def fn(conn, msg) -> None:
        conn.send("module", msg.payload)

    assert roomer.register_handler("test_server_api_evt", fn) is fn
    try:
        server = await make_server()
        a = await connect(server)
        await a.send("root", "test_server_api_evt", payload=b"m")
        assert await a.recv() == ("root", "module", "", "", b"m")
        # a handler on the Server itself takes precedence
        server.on("test_server_api_evt")(lambda conn, msg: conn.send("server", b""))
        await a.send("root", "test_server_api_evt")
        assert (await a.recv()).event == "server"
    finally:
        unregister_handler("test_server_api_evt")


def test_register_handler_rejects() -> None:
    def fn(conn, msg) -> None:
        pass

    with pytest.raises(ValueError):
        roomer.register_handler("", fn)
    for name in RESERVED:
        with pytest.raises(ValueError):
            roomer.register_handler(name, fn)
    with pytest.raises(TypeError):
        roomer.register_handler("test_nc", "not callable")  # type: ignore[arg-type]
    roomer.register_handler("test_dup", fn)
    try:
        with pytest.raises(ValueError):
            roomer.register_handler("test_dup", fn)
    finally:
        unregister_handler("test_dup")
    unregister_handler("test_dup")  # unknown names are ignored


def test_server_on_rejects() -> None:
    server = roomer.Server()

    def fn(conn, msg) -> None:
        pass

    with pytest.raises(ValueError):
        server.on("")(fn)
    for name in RESERVED:
        with pytest.raises(ValueError):
            server.on(name)(fn)
    with pytest.raises(TypeError):
        server.on("x")(42)  # type: ignore[arg-type]
    server.on("x")(fn)
    with pytest.raises(ValueError):
        server.on("x")(fn)


# lifecycle hooks -------------------------------------------------------------------------


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_on_connect_deny_closes_1008(make_server, is_async: bool) -> None:
    server = await make_server()
    seen: list[str] = []

    if is_async:
        @server.on_connect
        async def hook(conn) -> None:
            await suspend()
            seen.append(conn.id)
            raise roomer.Deny("banned")
    else:
        @server.on_connect
        def hook(conn) -> None:
            seen.append(conn.id)
            raise roomer.Deny("banned")

    ws = await connect_ws(server)
    with pytest.raises(ConnectionClosed):
        data = await asyncio.wait_for(ws.recv(), scaled(5))
        raise AssertionError(f"got a message: {decode(data)}")  # type: ignore[arg-type]
    assert ws.protocol.close_rcvd is not None
    assert (ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason) == (1008, "banned")
    assert len(seen) == 1
    assert server.connection_count == 0
    assert server.members("root") == []


async def test_a_long_close_reason_is_cut_on_a_character_boundary(make_server) -> None:
    # 123 bytes fit a close frame; cut mid-character, the reason is invalid UTF-8 and the
    # client fails the close (websockets: 1007 here, browsers: 1006).
    server = await make_server()
    reason = "é" * 80  # 160 bytes, a 2-byte character across byte 123

    @server.on_connect
    def hook(conn) -> None:
        raise roomer.Deny(reason)

    ws = await connect_ws(server)
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), scaled(5))
    rcvd = ws.protocol.close_rcvd
    assert rcvd is not None and rcvd.code == 1008
    assert reason.startswith(rcvd.reason) and 121 <= len(rcvd.reason.encode()) <= 123


async def test_on_connect_and_on_disconnect(make_server) -> None:
    server = await make_server()
    events: list[tuple[str, str]] = []

    @server.on_connect
    async def hello(conn) -> None:
        await stall(0.02)  # the root join_ack waits for the hook
        events.append(("connect", conn.id))

    @server.on_disconnect
    def bye(conn) -> None:
        events.append(("disconnect", conn.id))

    a = await connect(server)
    assert events == [("connect", a.id)]
    await a.send("r", "join")  # queued while nothing else is pending: works
    await a.expect("join_ack", "r")
    await a.close()
    await eventually(lambda: len(events) == 2)
    assert events == [("connect", a.id), ("disconnect", a.id)]


async def test_messages_sent_during_async_on_connect_are_kept(make_server) -> None:
    server = await make_server()
    gate = asyncio.Event()

    @server.on_connect
    async def hook(conn) -> None:
        await asyncio.wait_for(gate.wait(), scaled(5))

    ws = await connect_ws(server)
    await ws.send(encode("r", "join"))
    # The anchor: the server answered a ping sent after the join, so it read the join
    # while the hook was still running.
    await asyncio.wait_for(await ws.ping(), TIMEOUT)
    assert not gate.is_set()
    gate.set()
    first = decode(await asyncio.wait_for(ws.recv(), scaled(5)))  # type: ignore[arg-type]
    assert (first.room, first.event) == ("root", "join_ack")
    second = decode(await asyncio.wait_for(ws.recv(), scaled(5)))  # type: ignore[arg-type]
    assert (second.room, second.event, second.src) == ("r", "join_ack", first.src)
    await ws.close()


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_on_join_deny(make_server, is_async: bool) -> None:
    server = await make_server()
    calls: list[tuple[str, str]] = []

    if is_async:
        @server.on_join
        async def hook(conn, room) -> None:
            await suspend()
            calls.append((conn.id, room))
            if room.startswith("vip"):
                raise roomer.Deny("members only")
    else:
        @server.on_join
        def hook(conn, room) -> None:
            calls.append((conn.id, room))
            if room.startswith("vip"):
                raise roomer.Deny("members only")

    a = await connect(server)
    b = await connect(server)
    await b.join("open")
    await a.send("vip-lounge", "join")
    body = await a.expect_error("join_denied", "vip-lounge", "join")
    assert body["message"] == "members only"
    assert "vip-lounge" not in server.rooms()
    await a.send("vip-lounge", "chat")  # not a member
    await a.expect_error("not_member", "vip-lounge", "chat")
    assert sorted(await a.join("open")) == sorted([a.id, b.id])
    await b.expect("new_member", "open")
    assert calls == [(b.id, "open"), (a.id, "vip-lounge"), (a.id, "open")]


async def test_on_join_plain_exception_is_internal_error(make_server) -> None:
    server = await make_server()

    @server.on_join
    def hook(conn, room) -> None:
        raise ValueError("secret")

    a = await connect(server)
    await a.send("r", "join")
    body = await a.expect_error("join_denied", "r", "join")
    assert body["message"] == "internal error"
    await a.leave("root")  # still connected


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_on_leave_deny(make_server, is_async: bool) -> None:
    server = await make_server()
    calls: list[str] = []

    if is_async:
        @server.on_leave
        async def hook(conn, room) -> None:
            await suspend()
            calls.append(room)
            if room == "jail":
                raise roomer.Deny("you stay")
    else:
        @server.on_leave
        def hook(conn, room) -> None:
            calls.append(room)
            if room == "jail":
                raise roomer.Deny("you stay")

    a, b = await pair_in(server, "jail")
    await b.send("jail", "leave")
    body = await b.expect_error("leave_denied", "jail", "leave")
    assert body["message"] == "you stay"
    await a.expect_nothing()  # no member_left
    await a.send("jail", "chat", payload=b"still here?")
    assert (await b.recv()).payload == b"still here?"
    assert server.members("jail") == [a.id, b.id]
    await b.join("free")
    await b.leave("free")
    await b.close()  # on_leave runs for every room on disconnect, Deny ignored
    await a.expect("member_left", "jail")
    await eventually(lambda: len(calls) == 4)
    assert sorted(calls) == sorted(["jail", "free", "jail", "root"])
    assert server.members("jail") == [a.id]


# authorize and origins ---------------------------------------------------------------------


async def test_authorize(make_server) -> None:
    def authorize(request):
        token = request.headers.get("Authorization")
        if token != "Bearer good":
            raise roomer.Deny("bad token: do not show this")
        return {"user": "alice"}

    server = await make_server(authorize=authorize)
    server.on("claims")(lambda conn, msg: conn.send("claims", json.dumps(conn.claims)))
    with pytest.raises(InvalidStatus) as info:
        await connect(server)
    assert info.value.response.status_code == 401
    assert b"do not show" not in (info.value.response.body or b"")
    with pytest.raises(InvalidStatus) as info:
        await connect(server, additional_headers={"Authorization": "Bearer bad"})
    assert info.value.response.status_code == 401
    a = await connect(server, additional_headers={"Authorization": "Bearer good"})
    await a.send("root", "claims")
    assert json.loads((await a.expect("claims")).payload) == {"user": "alice"}
    assert server.connection(a.id).claims == {"user": "alice"}
    assert server.connection_count == 1


async def test_allowed_origins(make_server) -> None:
    server = await make_server(allowed_origins=["https://game.example"])
    with pytest.raises(InvalidStatus) as info:
        await connect(server, origin="https://evil.example")
    assert info.value.response.status_code == 403
    a = await connect(server, origin="https://game.example")
    assert server.members("root") == [a.id]


async def test_any_origin_by_default(make_server) -> None:
    server = await make_server()
    await connect(server, origin="https://anything.example")
    await connect(server)
    assert server.connection_count == 2


# sending from anywhere -------------------------------------------------------------------


async def test_broadcast_from_a_timer_with_exclude(make_server) -> None:
    server = await make_server()
    a = await connect(server)
    b = await connect(server)
    c = await connect(server)
    for x in (a, b, c):
        await x.join("r")
    for _ in range(2):
        await a.expect("new_member")
    await b.expect("new_member")
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, server.broadcast, "r", "tick", b"1")
    assert await a.recv() == ("r", "tick", "", "", b"1")
    assert await b.recv() == ("r", "tick", "", "", b"1")
    assert await c.recv() == ("r", "tick", "", "", b"1")

    async def later() -> int:
        await suspend()
        return await server.broadcast("r", "tock", "2", exclude=server.connection(a.id))

    assert await asyncio.wait_for(asyncio.create_task(later()), scaled(5)) == 2
    await asyncio.wait_for(server.broadcast("r", "tack", b"3", exclude=b.id), scaled(5))
    assert await b.recv() == ("r", "tock", "", "", b"2")
    assert await c.recv() == ("r", "tock", "", "", b"2")
    assert await a.recv() == ("r", "tack", "", "", b"3")
    assert await c.recv() == ("r", "tack", "", "", b"3")
    await a.expect_nothing()
    await b.expect_nothing()
    assert await server.broadcast("empty-room", "x") == 0


async def test_broadcast_from_another_thread(make_server) -> None:
    server = await make_server()
    a = await connect(server)
    await a.join("r")
    count = await asyncio.to_thread(
        lambda: server.broadcast("r", "threaded", b"t").result(5))
    assert count == 1
    assert await a.recv() == ("r", "threaded", "", "", b"t")


async def test_send_to_do_and_broadcast_all(make_server) -> None:
    server = await make_server()
    a = await connect(server)
    b = await connect(server)
    c = await connect(server)
    await c.leave("root")  # broadcast_all reaches every connection, in root or not

    async def later() -> None:
        await suspend()
        assert server.send_to(b.id, "private", b"p", room="dm")
        assert not server.send_to("no-such-id", "private")

    await asyncio.wait_for(later(), scaled(5))
    assert await b.recv() == ("dm", "private", "", "", b"p")
    await a.expect_nothing(0.05)
    sent = server.broadcast_all("all", b"*", exclude=server.connection(a.id))
    assert await asyncio.wait_for(sent, scaled(5)) == 2
    assert await b.recv() == ("root", "all", "", "", b"*")
    assert await c.recv() == ("root", "all", "", "", b"*")
    await asyncio.wait_for(server.broadcast_all("all2", room="news", exclude=c.id), scaled(5))
    assert (await a.recv())[:2] == ("news", "all2")
    assert (await b.recv())[:2] == ("news", "all2")
    seen: list[str] = []
    assert server.do(lambda conn: (seen.append(conn.id), conn.send("done"))) == 3
    assert sorted(seen) == sorted([a.id, b.id, c.id])
    for x in (a, b, c):
        assert await x.recv() == ("root", "done", "", "", b"")
    await a.expect_nothing()
    await c.expect_nothing(0.05)


async def test_try_send(make_server) -> None:
    server = await make_server()
    a = await connect(server)
    conn = server.connection(a.id)
    raw = encode("r", "custom", "", "", b"raw bytes")
    assert conn.try_send(raw) is True
    assert await a.recv() == ("r", "custom", "", "", b"raw bytes")
    assert conn.try_send(roomer.Message("r", "m", payload=b"x").encode())
    assert await a.recv() == ("r", "m", "", "", b"x")


# introspection, kick, shutdown ---------------------------------------------------------------


async def test_connection_count_rooms_members(make_server) -> None:
    server = await make_server()
    assert server.connection_count == 0
    assert server.rooms() == []
    a = await connect(server)
    b = await connect(server)
    assert server.connection_count == 2
    await a.join("r")
    await b.join("r")
    conn = server.connection(a.id)
    assert conn is not None and conn.id == a.id and conn.rooms == frozenset({"root", "r"})
    assert {c.id for c in server.connections()} == {a.id, b.id}
    assert sorted(server.rooms()) == ["r", "root"]
    assert server.members("r") == [a.id, b.id]
    assert server.members("unknown") == []
    await a.close()
    await eventually(lambda: server.connection_count == 1)
    assert server.members("r") == [b.id]
    assert server.connection(a.id) is None


async def test_kick(make_server) -> None:
    server = await make_server()
    a, b = await pair_in(server, "r")
    assert server.kick(b.id) is True
    assert await b.closed() == (1008, "kicked")
    msg = await a.expect("member_left", "r")
    assert msg.payload == b.id.encode()
    await eventually(lambda: server.connection_count == 1)
    assert server.kick(b.id) is False
    assert server.kick(a.id, reason="bye", code=4000)
    assert await a.closed() == (4000, "bye")


async def test_kicked_client_is_not_read_anymore(make_server) -> None:
    server = await make_server()
    a, b = await pair_in(server, "r")
    server.kick(b.id)
    try:  # b keeps talking after its kick: none of it is relayed
        for _ in range(10):
            await b.send("r", "chat")
    except ConnectionClosed:
        pass
    assert (await a.recv()).event == "member_left"
    await a.expect_nothing()


async def test_graceful_shutdown(make_server) -> None:
    server = await make_server()
    clients = [await connect(server) for _ in range(3)]
    for c in clients:
        await c.join("r")
    for i, c in enumerate(clients):  # consume the new_members
        for _ in range(len(clients) - 1 - i):
            await c.expect("new_member")
    def body(i: int) -> bytes:  # 800 kB in all: more than the socket buffers take at once
        return str(i).encode().ljust(4000, b".")

    for i in range(200):
        server.broadcast("r", "last", body(i))
    server.send_to(clients[0].id, "bye", b"only you")
    url = url_of(server)
    await asyncio.wait_for(server.shutdown(timeout=3), scaled(5))
    for n, c in enumerate(clients):
        got = []
        try:
            while True:
                got.append(await c.recv())
        except ConnectionClosed:
            pass
        assert [m.payload for m in got[:200]] == [body(i) for i in range(200)]
        assert got[200:] == ([Msg("root", "bye", "", "", b"only you")] if n == 0 else [])
        assert c.ws.protocol.close_rcvd is not None
        assert c.ws.protocol.close_rcvd.code == 1001
    assert server.connection_count == 0
    with pytest.raises(OSError):
        await connect(url)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_on_connect_plain_exception_closes_1011(make_server, is_async: bool) -> None:
    server = await make_server()

    if is_async:
        @server.on_connect
        async def hook(conn) -> None:
            raise RuntimeError("oops")
    else:
        @server.on_connect
        def hook(conn) -> None:
            raise RuntimeError("oops")

    ws = await connect_ws(server)
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), scaled(5))
    assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1011
    assert "oops" not in ws.protocol.close_rcvd.reason
    assert server.connection_count == 0


async def test_sync_broadcaster_basics(make_server) -> None:
    server = await make_server(sync_broadcast=True)
    a, b = await pair_in(server, "r")
    await a.send("r", "chat", payload=b"relayed")
    assert await b.recv() == ("r", "chat", "", a.id, b"relayed")
    assert await asyncio.wait_for(server.broadcast("r", "tick", b"t", exclude=a.id), scaled(5)) == 1
    assert await b.recv() == ("r", "tick", "", "", b"t")
    await a.expect_nothing()


async def test_shutdown_closes_clients_still_in_on_connect(make_server) -> None:
    server = await make_server()
    entered = asyncio.Event()

    @server.on_connect
    async def hook(conn) -> None:
        entered.set()
        await asyncio.Event().wait()  # never returns: the shutdown must not wait for it

    ws = await connect_ws(server)
    await asyncio.wait_for(entered.wait(), scaled(5))
    await asyncio.wait_for(server.shutdown(timeout=1), scaled(3))  # must not wait for the hook
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), scaled(5))
    assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1001


async def test_broadcast_rejects_a_wrong_exclude_type(make_server) -> None:
    server = await make_server()
    with pytest.raises(TypeError, match="exclude"):
        server.broadcast("lobby", "news", b"x", exclude=42)


# close / wait_closed, server hooks ----------------------------------------------------------


async def test_a_handler_may_await_the_shutdown_it_starts(make_server) -> None:
    # Before, shutdown() waited for every client task, the handler awaiting it included,
    # until its own timeout. Now the handler's wait ends with the shutdown.
    server = await make_server()
    done = asyncio.Event()

    @server.on("stop")
    async def stop(conn: roomer.Connection, msg: roomer.Message) -> None:
        await server.shutdown(timeout=60)
        done.set()

    a = await connect(server)
    await a.send("root", "stop")
    # Far below the 60 s a deadlock would take.
    await asyncio.wait_for(done.wait(), 20)
    assert await a.closed() == (1001, "server shutdown")


async def test_close_is_idempotent_and_works_from_any_thread(make_server) -> None:
    server = await make_server()
    a = await connect(server)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, server.close)
    server.close()
    server.close(timeout=0.1)
    await asyncio.wait_for(server.wait_closed(), 10)
    await asyncio.wait_for(server.wait_closed(), 1)  # closed: returns at once
    assert await a.closed() == (1001, "server shutdown")


async def test_wait_closed_of_a_server_never_started() -> None:
    server = roomer.Server()
    server.close()
    await asyncio.wait_for(server.wait_closed(), 1)


async def test_on_started_and_on_stopping_hooks() -> None:
    events: list[str] = []
    server = roomer.Server()
    tasks: list[asyncio.Task[None]] = []

    async def tick(srv: roomer.Server) -> None:  # an app's own loop
        while True:
            srv.broadcast("r", "tick", b"t")
            await pace(0.01)

    @server.on_started
    async def begin(srv: roomer.Server) -> None:
        events.append("started")
        tasks.append(asyncio.get_running_loop().create_task(tick(srv)))

    @server.on_stopping
    def end(srv: roomer.Server) -> None:
        events.append("stopping")
        for task in tasks:
            task.cancel()
        srv.broadcast_all("bye", b"last word")  # clients are still there

    await server.start("127.0.0.1", 0)
    try:
        a = await connect(server)
        await a.join("r")
        await a.expect("tick", "r")
    finally:
        await server.shutdown(timeout=5)
    assert events == ["started", "stopping"]
    got = []
    try:
        while True:
            got.append(await a.recv())
    except ConnectionClosed:
        pass
    assert [m.event for m in got if m.event != "tick"] == ["bye"]
    with pytest.raises(RuntimeError, match="before the server starts"):
        server.on_started(lambda srv: None)


@pytest.mark.parametrize(("code", "reason", "error"), [
    (1005, "x", ValueError), (70000, "x", ValueError), (1000, b"bytes", TypeError),
    (True, "x", TypeError)])
async def test_kick_refuses_what_cannot_go_on_the_wire_and_changes_nothing(
        make_server, code: object, reason: object, error: type[Exception]) -> None:
    server = await make_server()
    a, b = await pair_in(server, "r")
    with pytest.raises(error):
        server.kick(b.id, reason=reason, code=code)  # type: ignore[arg-type]
    # Nothing was done: b is still served.
    await b.send("r", "chat", payload=b"still here")
    assert (await a.recv()).payload == b"still here"
    assert server.kick(b.id, reason="now", code=4001)
    assert await b.closed() == (4001, "now")


def test_nothing_below_the_server_imports_it() -> None:
    # The layering of docs/design.md: server.py is the only module doing socket I/O, and
    # the modules it drives never import it; the Python client imports nothing of the
    # server side.
    import ast
    import pathlib

    package = pathlib.Path(roomer.__file__).parent
    above = {"server", "cli", "demo", "__init__", "__main__", "workers"}
    server_side = {"server", "routing", "registry", "namespaces", "core", "lifecycle",
                   "connection", "inbound", "asks", "tasks", "http", "static_files",
                   "handlers", "hooks", "metrics", "config"}
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                imported.add((node.module or "").split(".")[0])
        if path.stem not in above:
            assert "server" not in imported, f"{path.name} imports roomer.server"
        if path.stem == "client":
            assert not imported & server_side, f"client.py imports {imported & server_side}"
