"""roomer's asyncio client against a real server: the JS client's API shape."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from waiting import scaled, suspend

import roomer


def url(server: roomer.Server) -> str:
    return f"ws://127.0.0.1:{server.address[1]}/ws"


async def test_connect_tells_id_and_root_is_open(make_server: Any) -> None:
    server = await make_server()
    root = await roomer.connect(url(server))
    try:
        assert root.open()
        assert root.id() in server.members("root")
        assert root.members() == [root.id()]
    finally:
        await root.close()
    assert not root.open()


async def test_join_send_and_presence(make_server: Any) -> None:
    server = await make_server()
    a = await roomer.connect(url(server))
    b = await roomer.connect(url(server))
    try:
        lobby_a = await a.join("lobby")
        joined = asyncio.ensure_future(lobby_a.wait_for("new_member", 5))
        lobby_b = await b.join("lobby")
        assert await joined == (b.id(),)
        assert lobby_b.members() == [a.id(), b.id()]
        assert lobby_a.members() == [a.id(), b.id()]

        chat = asyncio.ensure_future(lobby_a.wait_for("chat", 5))
        lobby_b.send("chat", "hello")
        assert await chat == (b"hello", b.id())

        direct = asyncio.ensure_future(a.wait_for("psst", 5))
        b.send("psst", b"\x00\x01", dst=a.id())
        assert await direct == (b"\x00\x01", b.id())

        left = asyncio.ensure_future(lobby_a.wait_for("member_left", 5))
        closed: list[bool] = []
        lobby_b.on("close", lambda: closed.append(True))
        await lobby_b.leave()
        assert await left == (b.id(),)
        assert closed == [True] and not lobby_b.open()
        assert lobby_a.members() == [a.id()]
    finally:
        await a.close()
        await b.close()


async def test_denied_join_raises_client_error(make_server: Any) -> None:
    server = await make_server()

    @server.on_join
    def deny(conn: roomer.Connection, room: str) -> None:
        raise roomer.Deny("no entry")

    root = await roomer.connect(url(server))
    try:
        with pytest.raises(roomer.ClientError) as info:
            await root.join("vault")
        assert info.value.code == "join_denied"
        assert "no entry" in str(info.value)
    finally:
        await root.close()


@pytest.mark.parametrize("protocol", ["v1", "v2"])
async def test_a_join_of_an_invalid_name_is_refused_not_left_waiting(
        make_server: Any, protocol: str) -> None:
    """v1 refuses it in room root (docs/protocol.md §9), which names no room: the client fails the
    join it was waiting for, and the joins around it still succeed."""
    server = await make_server()
    root = await roomer.connect(url(server), protocol=protocol)
    try:
        first = root.join("first")
        bad = root.join("x" * 200)
        last = root.join("last")
        with pytest.raises(roomer.ClientError) as info:
            await asyncio.wait_for(bad, scaled(5))
        assert info.value.code == "invalid_name" and info.value.event == "join"
        assert (await asyncio.wait_for(first, scaled(5))).open()
        assert (await asyncio.wait_for(last, scaled(5))).open()
        with pytest.raises(roomer.ClientError):
            await asyncio.wait_for(root.join(""), scaled(5))
        assert (await asyncio.wait_for(root.join("again"), scaled(5))).open()
        for name in ("again", "first", "last"):
            assert root.id() in server.members(name)
        assert sorted(root._client.rooms) == ["again", "first", "last", "root"]
    finally:
        await root.close()


@pytest.mark.parametrize("protocol", ["v1", "v2"])
async def test_a_denied_leave_raises_client_error(make_server: Any, protocol: str) -> None:
    server = await make_server()

    @server.on_leave
    def deny(conn: roomer.Connection, room: str) -> None:
        raise roomer.Deny("stay")

    root = await roomer.connect(url(server), protocol=protocol)
    try:
        lobby = await root.join("lobby")
        with pytest.raises(roomer.ClientError) as info:
            await asyncio.wait_for(lobby.leave(), scaled(5))
        assert info.value.code == "leave_denied"
        assert lobby.open()
    finally:
        await root.close()


async def test_error_event_reaches_the_room(make_server: Any) -> None:
    server = await make_server()
    root = await roomer.connect(url(server))
    try:
        lobby = await root.join("lobby")
        errors = asyncio.ensure_future(lobby.wait_for("error", 5))
        lobby.send("join_ack", b"")
        (info,) = await errors
        assert info == {"code": "reserved_event", "message": "'join_ack' is reserved",
                        "event": "join_ack"}
    finally:
        await root.close()


async def test_async_handler_on_the_client(make_server: Any) -> None:
    server = await make_server()

    @server.on("ping")
    def ping(conn: roomer.Connection, msg: roomer.Message) -> None:
        conn.send("pong", msg.payload, msg.room)

    root = await roomer.connect(url(server))
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def on_pong(payload: bytes, sender: str) -> None:
        await suspend()
        got.set_result(payload)

    try:
        root.on("pong", on_pong)
        root.send("ping", b"42")
        assert await asyncio.wait_for(got, scaled(5)) == b"42"
    finally:
        await root.close()


async def test_server_shutdown_closes_rooms(make_server: Any) -> None:
    server = await make_server()
    root = await roomer.connect(url(server))
    lobby = await root.join("lobby")
    closed = asyncio.ensure_future(lobby.wait_for("close", 5))
    await server.shutdown()
    await closed
    assert not lobby.open() and not root.open()


async def test_calls_from_another_thread_are_refused_or_handed_over(make_server: Any) -> None:
    # The client belongs to its loop's thread: the read-only methods answer from any
    # thread, the others raise RuntimeError there rather than race the loop.
    server = await make_server()
    root = await roomer.connect(url(server))
    other = await roomer.connect(url(server))
    try:
        room = await root.join("r")
        theirs = await other.join("r")
        loop = asyncio.get_running_loop()
        refused: list[str] = []

        def elsewhere() -> tuple[str, bool, list[str]]:
            calls = {"send": lambda: room.send("m", "x"), "join": lambda: room.join("s"),
                     "leave": room.leave, "on": lambda: room.on("m", print),
                     "off": lambda: room.off("m"),
                     "close": lambda: asyncio.run(room.close()),
                     "wait_for": lambda: asyncio.run(room.wait_for("m"))}
            for name, call in calls.items():
                with pytest.raises(RuntimeError, match=f"^{name} from another thread"):
                    call()
                refused.append(name)
            return room.id(), room.open(), room.members()

        assert await loop.run_in_executor(None, elsewhere) == (
            root.id(), True, [root.id(), other.id()])
        assert len(refused) == 7 and "s" not in root._client.rooms
        # Handed to the loop, the same call goes through.
        got = asyncio.ensure_future(theirs.wait_for("m", scaled(5)))
        await loop.run_in_executor(None, loop.call_soon_threadsafe, room.send, "m", "hi")
        assert await got == (b"hi", root.id())
    finally:
        await other.close()
        await root.close()
