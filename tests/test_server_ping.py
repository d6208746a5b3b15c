"""Auto ping: a client that answers stays, one that does not is disconnected."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from rawsocket import RawSocket
from waiting import TIMEOUT, eventually, scaled


async def _read(client: RawSocket, answer_pings: bool,
                enough: Callable[[int], bool] = lambda pings: False) -> str:
    """Read until the server closes the connection ("disconnected", "close frame"), or
    until ``enough(pings seen)`` after a ping ("open")."""
    pings = 0

    async def read() -> str:
        nonlocal pings
        while True:
            try:
                opcode, body = await client.recv_frame()
            except ConnectionError:
                return "disconnected"
            if opcode == 0x9:
                pings += 1
                if answer_pings:
                    await client.pong(body)
                if enough(pings):
                    return "open"
            elif opcode == 0x8:
                return "close frame"

    return await asyncio.wait_for(read(), TIMEOUT)


async def test_silent_client_is_dropped_answering_client_stays(make_server: Any) -> None:
    server = await make_server(ping_interval=scaled(0.2), ping_timeout=scaled(0.2))
    port = server.address[1]
    silent = await RawSocket.open(port)
    polite = await RawSocket.open(port)
    try:
        await silent.recv()
        await polite.recv()
        # The silent one is closed; the polite one, pinged twice more after that, stays.
        silent_gone = asyncio.ensure_future(_read(silent, answer_pings=False))
        since: list[int] = []

        def twice_after_the_close(pings: int) -> bool:
            if silent_gone.done() and not since:
                since.append(pings)
            return bool(since) and pings >= since[0] + 2

        assert await _read(polite, True, twice_after_the_close) == "open"
        assert await silent_gone in ("disconnected", "close frame")
        assert server.connection_count == 1
        assert server.counters["ping_timeouts"] == 1  # every disconnect has its counter
    finally:
        silent.close()
        polite.close()


async def test_a_quiet_connection_gives_its_outbox_buffer_back(make_server: Any) -> None:
    """A 10 KB broadcast leaves a kept outbox buffer behind (kept for the next burst);
    the ping scan gives it back once the connection is quiet (README, Memory)."""
    import roomer

    server = await make_server(ping_interval=scaled(0.2), ping_timeout=scaled(5))
    root = await roomer.connect(f"ws://127.0.0.1:{server.address[1]}/ws")
    try:
        lobby = await root.join("lobby")
        got = asyncio.ensure_future(lobby.wait_for("burst", TIMEOUT))
        server.broadcast("lobby", "burst", b"b" * 10_000)
        assert (await got)[0] == b"b" * 10_000
        (conn,) = server.registry.conns.values()
        await eventually(lambda: conn.outbox_capacity == 0, what="the outbox buffer given back")
    finally:
        await root.close()


async def test_the_ping_round_spreads_over_loop_turns(make_server: Any) -> None:
    # 1,200 quiet connections: the round pings them at most SCAN_SLICE per loop turn (in
    # one turn, tens of thousands of pings held everyone's messages for over a second),
    # and every one of them is pinged.
    from roomer.server import SCAN_SLICE

    server = await make_server(ping_interval=0.5, ping_timeout=30)
    port = server.address[1]
    clients = [await RawSocket.open(port) for _ in range(1200)]
    for client in clients:
        await client.recv()  # root join_ack
    steps: list[float] = []
    step = server._scan_step

    def counted(now: float, stalled: bool) -> None:
        steps.append(now)
        step(now, stalled)

    server._scan_step = counted  # type: ignore[method-assign]
    pinged = await asyncio.gather(*(client.recv_frame() for client in clients))
    assert all(opcode == 0x9 for opcode, _ in pinged)
    # The first round's scan took at least this many turns (each a separate call).
    first = [now for now in steps if now == steps[0]]
    assert len(first) >= len(clients) // SCAN_SLICE + 1
    for client in clients:
        client.close()
