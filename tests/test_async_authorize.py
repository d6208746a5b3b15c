"""An async ``authorize`` (a token checked against a database or an identity service): the
upgrade is accepted, the connection's messages wait, and the verdict comes within
``handshake_timeout``: claims for the connection, or a close with 1008 (Deny) or 1011 (an
error, the timeout) before the client learns its id. Real sockets, a real server."""

from __future__ import annotations

import asyncio
from typing import Any

from rawclient import connect, connect_ws, encode
from waiting import suspend

import roomer


async def test_an_async_authorize_gives_the_connection_its_claims(make_server: Any) -> None:
    checked = asyncio.Event()

    async def authorize(request: Any) -> dict[str, str]:
        await suspend()  # an await, as a database lookup would
        checked.set()
        token = request.path.decode().partition("token=")[2]
        if token != "good":
            raise roomer.Deny("bad token")
        return {"user": "ada"}

    server = await make_server(authorize=authorize)
    seen: list[Any] = []

    @server.on("whoami")
    def whoami(conn: roomer.Connection, msg: roomer.Message) -> None:
        seen.append(conn.claims)
        conn.send("you", conn.claims["user"])

    client = await connect(f"ws://127.0.0.1:{server.address[1]}/ws?token=good")
    await client.send("root", "whoami")
    assert (await client.expect("you")).text == "ada"
    assert seen == [{"user": "ada"}] and checked.is_set()
    await client.close()


async def test_a_message_sent_while_authorize_waits_is_handled_after_it(
        make_server: Any) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def authorize(request: Any) -> str:
        started.set()
        await release.wait()
        return "ok"

    server = await make_server(authorize=authorize)
    server.on("echo")(lambda conn, msg: conn.send("echo", msg.payload))
    ws = await connect_ws(server)
    await asyncio.wait_for(started.wait(), 5)
    await ws.send(encode("root", "echo", payload=b"early"))  # authorize still waits
    release.set()
    first = await asyncio.wait_for(ws.recv(), 5)
    second = await asyncio.wait_for(ws.recv(), 5)
    assert b"join_ack" in first  # its id first, then the answer to what it sent early
    assert b"early" in second
    await ws.close()


async def test_a_refusing_async_authorize_closes_with_1008(make_server: Any) -> None:
    async def authorize(request: Any) -> str:
        raise roomer.Deny("no")

    server = await make_server(authorize=authorize)
    ws = await connect_ws(server)
    await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == 1008 and ws.close_reason == "unauthorized"
    assert server.connection_count == 0


async def test_a_failing_or_slow_async_authorize_closes_with_1011(make_server: Any,
                                                                   caplog: Any) -> None:
    async def broken(request: Any) -> str:
        raise RuntimeError("database down")

    server = await make_server(authorize=broken)
    ws = await connect_ws(server)
    await asyncio.wait_for(ws.wait_closed(), 5)
    assert (ws.close_code, ws.close_reason) == (1011, "internal error")
    assert "database down" in caplog.text

    async def stuck(request: Any) -> str:
        await asyncio.Event().wait()
        return "never"

    server = await make_server(authorize=stuck, handshake_timeout=0.2)
    ws = await connect_ws(server)
    await asyncio.wait_for(ws.wait_closed(), 5)
    assert (ws.close_code, ws.close_reason) == (1011, "authorization timed out")


async def test_a_sync_authorize_returning_a_coroutine_is_awaited(make_server: Any) -> None:
    async def later() -> str:
        return "claims"

    server = await make_server(authorize=lambda request: later())
    client = await connect(server)
    assert server.connection(client.id).claims == "claims"
    await client.close()
