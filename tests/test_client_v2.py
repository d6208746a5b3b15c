"""roomer's asyncio client speaking protocol v2 against a real server over real sockets:
negotiation, namespaces and their hooks, asks both ways, and v1 clients beside it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import waiting
from v2client import EVENT, REPLY
from v2client import encode as encode_v2
from websockets.asyncio.server import ServerConnection, serve

import roomer

TIMEOUT = waiting.TIMEOUT


def url(server: roomer.Server, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{server.address[1]}{path}"


@contextlib.asynccontextmanager
async def serving(setup: Callable[[roomer.Server], Any] | None = None,
                  **options: Any) -> AsyncIterator[roomer.Server]:
    """A started Server; ``setup`` declares its namespaces and handlers first."""
    server = roomer.Server(**options)
    if setup is not None:
        setup(server)
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.shutdown(timeout=1.0)


async def eventually(condition: Callable[[], bool], what: str) -> None:
    await waiting.eventually(condition, what=what)


# negotiation ------------------------------------------------------------------------------


async def test_v2_is_offered_and_v1_stays_the_default(make_server: Any) -> None:
    server = await make_server()
    old = await roomer.connect(url(server))
    new = await roomer.connect(url(server), protocol="v2")
    try:
        conns = {c.id: c for c in server.connections()}
        assert conns[old.id()].v2 is False and conns[new.id()].v2 is True
        assert new.open() and new.members() == [new.id()] and new.namespace_name == ""
        with pytest.raises(RuntimeError, match="v2"):
            await old.ask("x")
        with pytest.raises(RuntimeError, match="v2"):
            old.namespace("chat")
        with pytest.raises(ValueError, match="protocol"):
            await roomer.connect(url(server), protocol="v3")
    finally:
        await old.close()
        await new.close()


async def test_a_server_that_does_not_accept_v2_is_refused_clearly() -> None:
    # A plain WebSocket server (websockets, no subprotocols): its 101 names none.
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as plain:
        port = plain.sockets[0].getsockname()[1]
        with pytest.raises(roomer.ClientError) as info:
            await roomer.connect(f"ws://127.0.0.1:{port}/", protocol="v2", timeout=TIMEOUT)
    assert info.value.code == "unsupported_protocol"
    assert "v1 only" in str(info.value)


async def test_unknown_replies_are_counted_and_ignored() -> None:
    # A hand-built v2 server (tests/v2client.py's bytes, not roomer's codec): it sends the
    # root join_ack; once the client says go, replies to ids it never used, then a
    # message.
    async def handler(ws: ServerConnection) -> None:
        await ws.send(encode_v2(EVENT, 0, "", "root", "join_ack", "", "me", b'["me"]'))
        await ws.recv()
        await ws.send(encode_v2(REPLY, 77, "", "root", "x", "", "", b"nobody asked"))
        await ws.send(encode_v2(REPLY, 0xFFFFFFFF, "", "root", "x", "", "", b""))
        await ws.send(encode_v2(EVENT, 0, "", "root", "after", "", "", b"still here"))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, subprotocols=["roomer.v2"]) as raw:  # type: ignore[list-item]
        port = raw.sockets[0].getsockname()[1]
        root = await roomer.connect(f"ws://127.0.0.1:{port}/", protocol="v2")
        try:
            assert root.id() == "me"
            after = asyncio.ensure_future(root.wait_for("after", TIMEOUT))
            await waiting.suspend()  # the waiter is registered before anything can come
            root.send("go")
            assert await after == (b"still here", "")
            assert root.unknown_replies() == 2 and root.pending_asks() == 0
        finally:
            await root.close()


# v1 and v2 together ---------------------------------------------------------------------


async def test_v1_and_v2_clients_share_a_room_of_the_default_namespace(
        make_server: Any) -> None:
    server = await make_server()
    old = await roomer.connect(url(server))
    new = await roomer.connect(url(server), protocol="v2")
    try:
        lobby_old = await old.join("lobby")
        joined = asyncio.ensure_future(lobby_old.wait_for("new_member", TIMEOUT))
        lobby_new = await new.join("lobby")  # v2: a join ask, its reply the members
        assert lobby_new.members() == [old.id(), new.id()]
        assert await joined == (new.id(),)
        assert lobby_old.members() == [old.id(), new.id()]

        got_new = asyncio.ensure_future(lobby_new.wait_for("chat", TIMEOUT))
        lobby_old.send("chat", "from v1")
        assert await got_new == (b"from v1", old.id())
        got_old = asyncio.ensure_future(lobby_old.wait_for("chat", TIMEOUT))
        lobby_new.send("chat", b"from v2")
        assert await got_old == (b"from v2", new.id())

        direct = asyncio.ensure_future(old.wait_for("psst", TIMEOUT))
        new.send("psst", b"dm", dst=old.id())
        assert await direct == (b"dm", new.id())
        direct = asyncio.ensure_future(new.wait_for("psst", TIMEOUT))
        old.send("psst", b"dm back", dst=new.id())
        assert await direct == (b"dm back", old.id())

        tick_old = asyncio.ensure_future(lobby_old.wait_for("tick", TIMEOUT))
        tick_new = asyncio.ensure_future(lobby_new.wait_for("tick", TIMEOUT))
        await server.broadcast("lobby", "tick", "both")
        assert await tick_old == await tick_new == (b"both", "")

        left = asyncio.ensure_future(lobby_old.wait_for("member_left", TIMEOUT))
        closed: list[bool] = []
        lobby_new.on("close", lambda: closed.append(True))
        await lobby_new.leave()  # v2: a leave ask
        assert await left == (new.id(),)
        assert closed == [True] and not lobby_new.open()
        assert lobby_old.members() == [old.id()]
        # and the other way round: the v1 client leaves, the v2 one hears it
        lobby_new = await new.join("lobby")
        left = asyncio.ensure_future(lobby_new.wait_for("member_left", TIMEOUT))
        await lobby_old.leave()
        assert await left == (old.id(),)
        assert lobby_new.members() == [new.id()]
    finally:
        await old.close()
        await new.close()


async def test_v2_refusals_raise_client_errors(make_server: Any) -> None:
    server = await make_server(max_rooms_per_connection=1)

    @server.on_join
    def no_vault(conn: roomer.Connection, room: str) -> None:
        if room == "vault":
            raise roomer.Deny("no entry")

    @server.on_leave
    def stay(conn: roomer.Connection, room: str) -> None:
        if room == "sticky":
            raise roomer.Deny("you stay")

    root = await roomer.connect(url(server), protocol="v2")
    try:
        errors: list[dict[str, str]] = []
        vault = root.join("vault")
        vault.on("error", errors.append)
        with pytest.raises(roomer.ClientError) as info:
            await vault
        assert (info.value.code, info.value.server_message) == ("join_denied", "no entry")
        assert errors == [{"code": "join_denied", "message": "no entry", "event": "join"}]
        sticky = await root.join("sticky")
        with pytest.raises(roomer.ClientError) as info:
            await root.join("second")
        assert info.value.code == "too_many_rooms"
        with pytest.raises(roomer.ClientError) as info:
            await root.join("x" * 200)
        assert info.value.code == "invalid_name"
        with pytest.raises(roomer.ClientError) as info:
            await sticky.leave()
        assert info.value.code == "leave_denied"
        assert sticky.open() and server.members("sticky") == [root.id()]
        with pytest.raises(ValueError, match="default namespace"):
            root.disconnect()
    finally:
        await root.close()


# namespaces -----------------------------------------------------------------------------


def _chat_app(server: roomer.Server) -> None:
    chat = server.namespace("chat")
    vip = server.namespace("vip")

    @vip.on_connect
    def members_only(view: roomer.NamespaceConnection) -> None:
        if view.request.headers.get("X-Pass") != "gold":
            raise roomer.Deny("members only")

    @vip.on_join
    def no_secret(view: roomer.NamespaceConnection, room: str) -> None:
        if room == "secret":
            raise roomer.Deny("not this one")

    @chat.on("where")
    def where(view: roomer.NamespaceConnection, msg: roomer.Message) -> str:
        return f"{view.namespace}/{msg.room}"

    @server.on("where")
    def where_default(conn: roomer.Connection, msg: roomer.Message) -> str:
        return f"default/{msg.room}"


async def test_namespaces_are_isolated() -> None:
    async with serving(_chat_app) as server:
        chat = server.namespace("chat")
        a = await roomer.connect(url(server), protocol="v2")
        b = await roomer.connect(url(server), protocol="v2")
        old = await roomer.connect(url(server))
        try:
            a_chat = await a.namespace("chat")
            assert a.namespace("chat") is a_chat  # connected already: the same root
            assert (a_chat.namespace_name, a_chat.name, a_chat.open()) == ("chat", "root", True)
            a_lobby = await a_chat.join("lobby")
            b_lobby = await b.join("lobby")  # the default namespace's lobby
            old_lobby = await old.join("lobby")
            assert a_lobby.members() == [a.id()]
            await eventually(lambda: b_lobby.members() == [b.id(), old.id()], "presence")
            assert chat.members("lobby") == [a.id()]
            assert server.members("lobby") == [b.id(), old.id()]
            # the same room name, two rooms: nothing crosses
            heard: list[tuple[str, bytes]] = []
            a_lobby.on("chat", lambda payload, src: heard.append(("a", payload)))
            old_lobby.on("chat", lambda payload, src: heard.append(("old", payload)))
            b_lobby.send("chat", b"default only")
            a_lobby.send("chat", b"chat only")  # a is alone in chat/lobby: no one hears
            assert await a_chat.ask("where") == b"chat/root"
            assert await a_lobby.ask("where") == b"chat/lobby"
            assert await b_lobby.ask("where") == b"default/lobby"
            await eventually(lambda: ("old", b"default only") in heard, "old hears b")
            assert heard == [("old", b"default only")]

            b_chat = await b.namespace("chat")
            arrived = asyncio.ensure_future(a_lobby.wait_for("new_member", TIMEOUT))
            b_chat_lobby = await b_chat.join("lobby")
            assert await arrived == (b.id(),)
            assert b_chat_lobby.members() == [a.id(), b.id()]
            got = asyncio.ensure_future(a_lobby.wait_for("chat", TIMEOUT))
            b_chat_lobby.send("chat", "in chat")
            assert await got == (b"in chat", b.id())

            news = asyncio.ensure_future(a_lobby.wait_for("news", TIMEOUT))
            await chat.broadcast("lobby", "news", "chat news")
            assert await news == (b"chat news", "")
            hey = asyncio.ensure_future(a_chat.wait_for("hey", TIMEOUT))
            assert chat.send_to(a.id(), "hey", "you") is True
            assert await hey == (b"you", "")
            assert chat.send_to(old.id(), "hey") is False  # v1: in no namespace but ""
            direct = asyncio.ensure_future(b_chat.wait_for("dm", TIMEOUT))
            a_chat.send("dm", b"ns direct", dst=b.id())
            assert await direct == (b"ns direct", a.id())
            # the v1 client in the default lobby heard nothing of chat's
            assert heard == [("old", b"default only"), ("a", b"in chat")]

            # disconnecting from the namespace closes its rooms, and only those
            closed: list[str] = []
            b_chat_lobby.on("close", lambda: closed.append("lobby"))
            b_chat.on("close", lambda: closed.append("root"))
            gone = asyncio.ensure_future(a_lobby.wait_for("member_left", TIMEOUT))
            await b_chat.disconnect()
            assert await gone == (b.id(),)
            assert sorted(closed) == ["lobby", "root"]
            assert not b_chat_lobby.open() and b_lobby.open()
            assert chat.members("lobby") == [a.id()]
            with pytest.raises(roomer.ClientError) as info:
                await b_chat.ask("where")
            assert info.value.code == "not_connected"
            assert await b.namespace("chat") is not b_chat  # connected again: a new root
        finally:
            for client in (a, b, old):
                await client.close()


async def test_namespace_connects_are_refused_with_their_code() -> None:
    async with serving(_chat_app) as server:
        outsider = await roomer.connect(url(server), protocol="v2")
        member = await roomer.connect(url(server), protocol="v2",
                                      extra_headers={"X-Pass": "gold"})
        try:
            with pytest.raises(roomer.ClientError) as info:
                await outsider.namespace("vip")
            assert (info.value.code, info.value.server_message) == ("namespace_denied",
                                                                    "members only")
            with pytest.raises(roomer.ClientError) as info:
                await outsider.namespace("nope")
            assert info.value.code == "no_such_namespace"
            assert outsider.open()  # a refusal leaves the connection as it was
            vip = await member.namespace("vip")  # picows' extra_headers go with v2's
            with pytest.raises(roomer.ClientError) as info:
                await vip.join("secret")
            assert info.value.code == "join_denied"
            assert (await vip.join("lounge")).members() == [member.id()]
            assert server.namespace("vip").members("lounge") == [member.id()]
        finally:
            await outsider.close()
            await member.close()


def _recording_app(seen: list[str]) -> Callable[[roomer.Server], None]:
    def setup(server: roomer.Server) -> None:
        game = server.namespace("game")

        def record(name: str) -> Any:
            def hook(view: Any, *args: Any) -> None:
                assert isinstance(view, roomer.NamespaceConnection)
                assert view.namespace == "game"
                seen.append(f"{name}:{args[0]}" if args else name)
                if name == "connected":  # sent with the connect's reply
                    view.send("hello", "from on_connected")
                elif name == "joined":
                    view.send("welcome", args[0], room=args[0])
            return hook

        for name in ("connect", "connected", "join", "joined", "leave", "left",
                     "disconnect"):
            getattr(game, f"on_{name}")(record(name))

    return setup


async def test_namespace_hooks_fire_once_each_in_order() -> None:
    seen: list[str] = []
    async with serving(_recording_app(seen)) as server:
        client = await roomer.connect(url(server), protocol="v2")
        try:
            got: list[tuple[str, bytes]] = []
            game = client.namespace("game")
            game.on("hello", lambda payload, src: got.append(("hello", payload)))
            await game
            r = game.join("r")
            r.on("welcome", lambda payload, src: got.append(("welcome", payload)))
            await r
            await r.leave()
            s = game.join("s")
            s.on("welcome", lambda payload, src: got.append(("welcome", payload)))
            await s
            await game.disconnect()
            assert seen == ["connect", "connected", "join:r", "joined:r", "leave:r", "left:r",
                            "join:s", "joined:s", "leave:root", "left:root", "leave:s",
                            "left:s", "disconnect"]
            # What a hook sent right after the answer reached the handlers registered
            # before awaiting it.
            assert got == [("hello", b"from on_connected"), ("welcome", b"r"),
                           ("welcome", b"s")]
            assert not s.open() and not game.open()

            seen.clear()
            game = await client.namespace("game")
            await game.join("t")
            assert seen == ["connect", "connected", "join:t", "joined:t"]
        finally:
            await client.close()  # the socket goes: every room left, then disconnect
        await eventually(lambda: "disconnect" in seen, "on_disconnect ran")
        assert seen == ["connect", "connected", "join:t", "joined:t", "leave:root",
                        "left:root", "leave:t", "left:t", "disconnect"]


# asks, client to server -------------------------------------------------------------------


def _ask_app(server: roomer.Server) -> None:
    class OutOfStock(roomer.RoomerError):
        code = "out_of_stock"

    @server.on("roll")
    def roll(conn: roomer.Connection, msg: roomer.Message) -> Any:
        return {"bytes": b"\x01\x02", "text": "six", "json": {"n": 6}, "none": None}[
            msg.payload.decode()]

    @server.on("slow")
    async def slow(conn: roomer.Connection, msg: roomer.Message) -> str:
        await waiting.suspend()
        return f"done in {msg.room}"

    @server.on("refuse")
    def refuse(conn: roomer.Connection, msg: roomer.Message) -> None:
        raise roomer.Deny("not your turn")

    @server.on("buy")
    def buy(conn: roomer.Connection, msg: roomer.Message) -> None:
        raise OutOfStock("none left")

    @server.on("crash")
    def crash(conn: roomer.Connection, msg: roomer.Message) -> None:
        raise ZeroDivisionError


async def test_the_client_asks_the_server() -> None:
    async with serving(_ask_app) as server:
        root = await roomer.connect(url(server), protocol="v2")
        try:
            assert await root.ask("roll", "bytes") == b"\x01\x02"
            assert await root.ask("roll", b"text") == b"six"
            assert json.loads(await root.ask("roll", "json")) == {"n": 6}
            assert await root.ask("roll", "none") == b""
            lobby = await root.join("lobby")
            assert await lobby.ask("slow") == b"done in lobby"
            for event, code, message in (("refuse", "denied", "not your turn"),
                                         ("buy", "out_of_stock", "none left"),
                                         ("crash", "handler_error", "internal error"),
                                         ("unhandled", "no_handler", "nothing answers "
                                                                     "'unhandled'"),
                                         ("join_ack", "reserved_event", "'join_ack' is "
                                                                        "reserved")):
                with pytest.raises(roomer.ClientError) as info:
                    await root.ask(event)
                assert (info.value.code, info.value.server_message, info.value.event) == (
                    code, message, event)
            for own in ("join", "leave", "connect", "disconnect"):
                with pytest.raises(ValueError, match="method of that name"):
                    await root.ask(own)
            assert root.pending_asks() == 0
        finally:
            await root.close()


async def test_asks_that_time_out_leave_no_waiter() -> None:
    release = asyncio.Event()
    handled: list[int] = []

    def setup(server: roomer.Server) -> None:
        @server.on("stall")
        async def stall(conn: roomer.Connection, msg: roomer.Message) -> bytes:
            await release.wait()
            handled.append(1)
            return msg.payload

    async with serving(setup, rate_limit=None, byte_limit=None) as server:
        root = await roomer.connect(url(server), protocol="v2")
        try:
            results = await asyncio.gather(
                *(root.ask("stall", b"%d" % i, timeout=0.05) for i in range(300)),
                return_exceptions=True)
            assert all(isinstance(r, roomer.AskTimeout) for r in results), results[:3]
            assert isinstance(results[0], TimeoutError)  # AskTimeout is a TimeoutError
            assert root.pending_asks() == 0 and root._client.asks == {}
            # A caller that stops waiting (cancelled) leaves no waiter either.
            waiting = asyncio.ensure_future(root.ask("stall", timeout=None))
            await eventually(lambda: root.pending_asks() == 1, "the ask is out")
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert root.pending_asks() == 0
            # Answered late, every reply finds no waiter: counted, ignored.
            release.set()
            await eventually(lambda: root.unknown_replies() == 301, "late replies counted")
            assert len(handled) == 301
            assert await root.ask("stall", b"now") == b"now"  # and the connection is fine
        finally:
            await root.close()


async def test_ask_ids_wrap_and_skip_ids_in_use() -> None:
    release = asyncio.Event()

    def setup(server: roomer.Server) -> None:
        @server.on("held")
        async def held(conn: roomer.Connection, msg: roomer.Message) -> bytes:
            await release.wait()
            return msg.payload

    async with serving(setup) as server:
        root = await roomer.connect(url(server), protocol="v2")
        client = root._client
        try:
            first = asyncio.ensure_future(root.ask("held", b"first"))
            await eventually(lambda: set(client.asks) == {1}, "ask 1 out")
            client.next_ask_id = 0xFFFFFFFF
            last = asyncio.ensure_future(root.ask("held", b"last"))
            wrapped = asyncio.ensure_future(root.ask("held", b"wrapped"))
            await eventually(lambda: len(client.asks) == 3, "three asks out")
            assert set(client.asks) == {1, 0xFFFFFFFF, 2}  # 0 is never an id; 1 is taken
            release.set()
            assert await asyncio.gather(first, last, wrapped) == [b"first", b"last",
                                                                  b"wrapped"]
            assert client.asks == {} and root.unknown_replies() == 0
        finally:
            await root.close()


async def test_an_ask_fails_when_the_connection_closes(make_server: Any) -> None:
    server = await make_server()
    never = asyncio.Event()

    @server.on("forever")
    async def forever(conn: roomer.Connection, msg: roomer.Message) -> None:
        await never.wait()

    root = await roomer.connect(url(server), protocol="v2")
    pending = asyncio.ensure_future(root.ask("forever", timeout=30))
    await eventually(lambda: root.pending_asks() == 1, "the ask is out")
    server.kick(root.id())
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(pending, TIMEOUT)
    assert root.pending_asks() == 0
    with pytest.raises(ConnectionError):
        await root.ask("forever")


# asks, server to client -------------------------------------------------------------------


async def test_the_server_asks_the_client(make_server: Any) -> None:
    server = await make_server()
    root = await roomer.connect(url(server), protocol="v2")
    try:
        conn = server.connection(root.id())
        assert conn is not None

        class Busy(roomer.RoomerError):
            code = "busy"

        answers: dict[bytes, Any] = {b"bytes": b"\x00\xff", b"text": "é", b"none": None,
                                     b"json": {"a": [1, 2]}, b"bytearray": bytearray(b"ba")}

        def answer(payload: bytes, sender: str) -> Any:
            assert sender == ""  # the server asks
            if payload == b"deny":
                raise roomer.Deny("not now")
            if payload == b"busy":
                raise Busy("try later")
            if payload == b"crash":
                raise KeyError("boom")
            if payload == b"set":
                return {1}  # not JSON-able
            return answers[payload]

        async def later(payload: bytes, sender: str) -> str:
            await waiting.suspend()
            if payload == b"fail":
                raise roomer.Deny("async no")
            return payload.decode().upper()

        root.on("q", answer)
        root.on("q", lambda payload, sender: b"never called")  # the first handler answers
        root.on("later", later)
        assert await conn.ask("q", b"bytes") == b"\x00\xff"
        assert await conn.ask("q", b"text") == "é".encode()
        assert await conn.ask("q", b"none") == b""
        assert json.loads(await conn.ask("q", b"json")) == {"a": [1, 2]}
        assert await conn.ask("q", b"bytearray") == b"ba"
        assert await conn.ask("later", b"async") == b"ASYNC"
        for event, payload, code, message in (
                ("q", b"deny", "denied", "not now"), ("q", b"busy", "busy", "try later"),
                ("q", b"crash", "handler_error", "internal error"),
                ("q", b"set", "handler_error", "internal error"),
                ("later", b"fail", "denied", "async no"),
                ("nobody", b"", "no_handler", "nothing answers 'nobody'")):
            with pytest.raises(roomer.ClientError) as info:
                await conn.ask(event, payload)
            assert (info.value.code, info.value.server_message) == (code, message), event

        # in a room, and in a namespace: the handler of that room answers
        lobby = await root.join("lobby")
        lobby.on("where", lambda payload, sender: "lobby")
        assert await conn.ask("where", room="lobby") == b"lobby"
        with pytest.raises(roomer.ClientError) as info:
            await conn.ask("where")  # root has no handler of it
        assert info.value.code == "no_handler"
        assert len(conn.asks) == 0
        assert server.counters["unknown_replies"] == 0
    finally:
        await root.close()


async def test_the_server_asks_in_a_namespace() -> None:
    async with serving(lambda server: server.namespace("game")) as server:
        root = await roomer.connect(url(server), protocol="v2")
        try:
            game = await root.namespace("game")
            arena = await game.join("arena")
            game.on("where", lambda payload, sender: "game root")
            arena.on("where", lambda payload, sender: "game arena")
            root.on("where", lambda payload, sender: "default root")
            view = server.namespace("game").connections()[0]
            assert isinstance(view, roomer.NamespaceConnection)
            assert await view.ask("where") == b"game root"
            assert await view.ask("where", room="arena") == b"game arena"
            conn = server.connection(root.id())
            assert conn is not None and await conn.ask("where") == b"default root"
        finally:
            await root.close()


async def test_a_slow_client_answer_times_out_on_the_server(make_server: Any) -> None:
    server = await make_server()
    root = await roomer.connect(url(server), protocol="v2")
    try:
        conn = server.connection(root.id())
        assert conn is not None

        async def slow(payload: bytes, sender: str) -> bytes:
            await waiting.stall(0.3)  # answers long after the asks' timeout
            return b"too late"

        root.on("slow", slow)
        results = await asyncio.gather(*(conn.ask("slow", timeout=0.05) for _ in range(50)),
                                       return_exceptions=True)
        assert all(isinstance(r, roomer.AskTimeout) for r in results)
        assert len(conn.asks) == 0
        await eventually(lambda: server.counters["unknown_replies"] == 50,
                         "the client's late answers counted")
    finally:
        await root.close()


async def test_a_thousand_asks_in_flight_both_ways() -> None:
    # Both directions at once on one connection, each side holding every answer until
    # the other has all its 1,000 asks out: 2,000 waiters at the peak, each answer to
    # its own ask.
    server_gate, client_gate = asyncio.Event(), asyncio.Event()

    def setup(server: roomer.Server) -> None:
        @server.on("echo")
        async def echo(conn: roomer.Connection, msg: roomer.Message) -> bytes:
            await server_gate.wait()
            return b"s" + msg.payload

    async with serving(setup, rate_limit=None, byte_limit=None, max_pending_asks=1000) as server:
        root = await roomer.connect(url(server), protocol="v2")
        try:
            conn = server.connection(root.id())
            assert conn is not None

            async def echo_back(payload: bytes, sender: str) -> bytes:
                await client_gate.wait()
                return b"c" + payload

            root.on("echo", echo_back)
            n = 1000
            from_client = asyncio.gather(*(root.ask("echo", b"%d" % i, timeout=60)
                                           for i in range(n)))
            from_server = asyncio.gather(*(conn.ask("echo", b"%d" % i, timeout=60)
                                           for i in range(n)))
            await eventually(lambda: root.pending_asks() == n and len(conn.asks) == n,
                             "1,000 asks out each way")
            assert len(set(root._client.asks)) == n  # ids unique among those waiting
            server_gate.set()
            client_gate.set()
            assert await from_client == [b"s%d" % i for i in range(n)]
            assert await from_server == [b"c%d" % i for i in range(n)]
            assert root.pending_asks() == 0 and len(conn.asks) == 0
            assert root.unknown_replies() == 0 and server.counters["unknown_replies"] == 0
        finally:
            await root.close()


async def test_the_readme_v2_example_runs() -> None:
    # README "Protocol v2: namespaces and asks", server and client as written there
    # (a second client watches the table; the eight-seat limit is checked with a ninth).
    import random

    def setup(server: roomer.Server) -> None:
        game = server.namespace("game")

        @game.on_connect
        def table_not_full(conn: roomer.NamespaceConnection) -> None:
            if game.connection_count >= 8:
                raise roomer.Deny("the table is full")

        @game.on("roll")
        def roll(conn: roomer.NamespaceConnection, msg: roomer.Message) -> dict[str, int]:
            return {"die": random.randint(1, 6)}

        @game.on_joined
        async def greet(conn: roomer.NamespaceConnection, room: str) -> None:
            name = await conn.ask("name?", timeout=5)
            conn.send_to_room(room, "hello", name)

    async with serving(setup) as server:
        watcher = await roomer.connect(url(server), protocol="v2")
        watching = watcher.namespace("game")
        watching.on("name?", lambda payload, sender: "Bob")
        await watching
        watched = await watching.join("table-1")
        hello = asyncio.ensure_future(watched.wait_for("hello", TIMEOUT))

        root = await roomer.connect(url(server), protocol="v2")
        game = root.namespace("game")
        game.on("name?", lambda payload, sender: "Ada")
        await game
        table = await game.join("table-1")
        die = json.loads(await table.ask("roll"))
        assert set(die) == {"die"} and 1 <= die["die"] <= 6
        assert await hello == (b"Ada", root.id())

        others = [await roomer.connect(url(server), protocol="v2") for _ in range(7)]
        for other in others[:6]:
            await other.namespace("game")
        with pytest.raises(roomer.ClientError) as info:
            await others[6].namespace("game")
        assert (info.value.code, info.value.server_message) == ("namespace_denied",
                                                                "the table is full")
        for client in (watcher, root, *others):
            await client.close()


async def test_joins_and_namespace_connects_are_bounded_by_the_connect_timeout() -> None:
    def setup(server: roomer.Server) -> None:
        server.namespace("slow")

        @server.on_join
        async def slow_join(conn: roomer.Connection, room: str) -> None:
            if room == "slow":
                await waiting.stall(0.5)  # past the client's connect timeout

        @server.namespace("slow").on_connect
        async def slow_connect(view: roomer.NamespaceConnection) -> None:
            await waiting.stall(0.5)

    async with serving(setup) as server:
        root = await roomer.connect(url(server), protocol="v2", timeout=0.2)
        try:
            with pytest.raises(roomer.AskTimeout):
                await root.join("slow")
            assert "slow" not in root._client.rooms and root.pending_asks() == 0
            with pytest.raises(roomer.AskTimeout):
                await root.namespace("slow")
            assert root.pending_asks() == 0
            # the server's late answers find no waiter
            await eventually(lambda: root.unknown_replies() == 2, "late answers counted")
            # connected after all, server side: leave() on its root disconnects
            again = await root.namespace("slow")
            assert again.open()
            await again.leave()
            assert not again.open() and server.namespace("slow").connection_count == 0
        finally:
            await root.close()


async def test_the_new_hooks_run_in_the_default_namespace_for_v1_and_v2() -> None:
    seen: list[tuple[str, str, str, str]] = []  # (hook, version, room or event, id)

    def setup(server: roomer.Server) -> None:
        def record(name: str) -> Any:
            def hook(conn: roomer.Connection, *args: Any) -> None:
                assert isinstance(conn, roomer.Connection)
                what = args[0] if args and isinstance(args[0], str) else ""
                if args and isinstance(args[0], roomer.Message):
                    what = args[0].event
                seen.append((name, "v2" if conn.v2 else "v1", what, conn.id))
            return hook

        for name in ("connected", "joined", "left", "event"):
            getattr(server, f"on_{name}")(record(name))

    async def check(server: roomer.Server, protocol: str) -> None:
        client = await roomer.connect(url(server), protocol=protocol)
        other = await roomer.connect(url(server))
        me = client.id()
        lobby = await client.join("lobby")
        heard: list[bytes] = []
        other_lobby = await other.join("lobby")
        other_lobby.on("chat", lambda payload, src: heard.append(payload))
        gone = asyncio.ensure_future(other_lobby.wait_for("member_left", TIMEOUT))
        lobby.send("chat", "caught, not relayed")
        await lobby.leave()
        await gone  # sent to the other member after the chat would have been
        assert heard == []
        await client.close()
        expected = [("connected", protocol, "", me), ("joined", protocol, "lobby", me),
                    ("event", protocol, "chat", me), ("left", protocol, "lobby", me),
                    ("left", protocol, "root", me)]  # the socket gone: root left too

        def mine() -> list[tuple[str, str, str, str]]:
            return [entry for entry in seen if entry[3] == me]

        await eventually(lambda: len(mine()) == len(expected), f"{protocol}: hooks")
        assert mine() == expected
        await other.close()

    async with serving(setup) as server:
        await check(server, "v1")
        await check(server, "v2")
