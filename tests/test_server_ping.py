"""Auto ping: a client that answers stays, one that does not is disconnected."""

from __future__ import annotations

import asyncio
from typing import Any

from rawsocket import RawSocket


async def _read_until_closed(client: RawSocket, answer_pings: bool, seconds: float) -> str:
    """Read for up to ``seconds``: 'open' if still connected then, else how it ended."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        left = deadline - loop.time()
        if left <= 0:
            return "open"
        try:
            opcode, body = await asyncio.wait_for(client.recv_frame(), left)
        except TimeoutError:
            return "open"
        except ConnectionError:
            return "disconnected"
        if opcode == 0x9 and answer_pings:
            await client.pong(body)
        elif opcode == 0x8:
            return "close frame"


async def test_silent_client_is_dropped_answering_client_stays(make_server: Any) -> None:
    server = await make_server(ping_interval=0.2, ping_timeout=0.2)
    port = server.address[1]
    silent = await RawSocket.open(port)
    polite = await RawSocket.open(port)
    try:
        await silent.recv()
        await polite.recv()
        outcomes = await asyncio.gather(
            _read_until_closed(silent, answer_pings=False, seconds=3),
            _read_until_closed(polite, answer_pings=True, seconds=1.5),
        )
        assert outcomes[0] in ("disconnected", "close frame")
        assert outcomes[1] == "open"
        assert server.connection_count == 1
    finally:
        silent.close()
        polite.close()


async def test_a_quiet_connection_gives_its_outbox_buffer_back(make_server: Any) -> None:
    """A 10 KB broadcast leaves a kept outbox buffer behind (kept for the next burst);
    the ping scan gives it back once the connection is quiet (README, Memory)."""
    import roomer

    server = await make_server(ping_interval=0.2, ping_timeout=5)
    root = await roomer.connect(f"ws://127.0.0.1:{server.address[1]}/ws")
    try:
        lobby = await root.join("lobby")
        got = asyncio.ensure_future(lobby.wait_for("burst", 5))
        server.broadcast("lobby", "burst", b"b" * 10_000)
        assert (await got)[0] == b"b" * 10_000
        (conn,) = server.registry.conns.values()
        for _ in range(100):
            if conn.outbox_capacity == 0:
                break
            await asyncio.sleep(0.05)
        assert conn.outbox_capacity == 0
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
