"""Outbox bounds and the sync broadcaster, with real sockets that read slowly or never."""

from __future__ import annotations

import asyncio
from typing import Any

from rawsocket import RawSocket, joined
from waiting import eventually, pace, scaled, stall, suspend

import roomer


async def _collect(client: RawSocket, count: int, event: str = "m") -> list[bytes]:
    got: list[bytes] = []
    while len(got) < count:
        msg = await client.recv()
        if msg[1] == event:
            got.append(msg[4])
    return got


async def test_sync_global_order_across_50_receivers(make_server: Any) -> None:
    server = await make_server(sync_broadcast=True)
    port = server.address[1]
    receivers = [(await joined(port, "arena"))[0] for _ in range(50)]
    senders = [(await joined(port, "arena"))[0] for _ in range(4)]
    per_sender, from_server = 60, 40

    async def send_all(i: int, sender: RawSocket) -> None:
        for n in range(per_sender):
            await sender.send("arena", "m", f"c{i}-{n}".encode())
            if n % 7 == 0:
                await suspend()  # the senders and the server interleave

    async def server_side() -> None:
        for n in range(from_server):
            await server.broadcast("arena", "m", f"s-{n}")
            await suspend()

    total = per_sender * len(senders) + from_server
    collecting = [asyncio.ensure_future(_collect(r, total)) for r in receivers]
    await asyncio.gather(server_side(), *(send_all(i, s) for i, s in enumerate(senders)))
    orders = await asyncio.wait_for(asyncio.gather(*collecting), scaled(30))
    first = orders[0]
    assert len(first) == total and len(set(first)) == total
    for order in orders[1:]:
        assert order == first
    for i in range(len(senders)):  # each sender's own order is kept inside the global one
        mine = [m for m in first if m.startswith(f"c{i}-".encode())]
        assert mine == [f"c{i}-{n}".encode() for n in range(per_sender)]
    assert server.stats()["dropped"] == 0
    for client in receivers + senders:
        client.close()


async def test_sync_slow_reader_gets_everything(make_server: Any) -> None:
    server = await make_server(sync_broadcast=True, outbox_limit=16 * 1024, write_timeout=30,
                               rate_limit=None, byte_limit=None)
    port = server.address[1]
    slow, _ = await joined(port, "r", rcvbuf=4096)
    fast, _ = await joined(port, "r")
    sender, _ = await joined(port, "r")
    count, payload = 1500, b"x" * 2000  # ~3 MB: far past the slow reader's buffers

    async def flood() -> None:
        for n in range(count):
            await sender.send("r", "m", payload + str(n).encode())

    async def read_slowly() -> list[bytes]:
        got: list[bytes] = []
        while len(got) < count:
            _, body = await slow.recv_frame(chunk=2048)
            msg = roomer.Message.decode(body)
            if msg.event == "m":
                got.append(msg.payload)
            if len(got) % 50 == 0:
                await pace(0.005)  # a slow reader is the test
        return got

    slow_task = asyncio.ensure_future(read_slowly())
    fast_task = asyncio.ensure_future(_collect(fast, count))
    await asyncio.wait_for(flood(), scaled(60))
    slow_got, fast_got = await asyncio.wait_for(asyncio.gather(slow_task, fast_task), scaled(60))
    expected = [payload + str(n).encode() for n in range(count)]
    assert slow_got == expected
    assert fast_got == expected
    assert server.stats()["dropped"] == 0
    for client in (slow, fast, sender):
        client.close()


async def test_sync_stuck_reader_is_disconnected_others_go_on(make_server: Any) -> None:
    server = await make_server(sync_broadcast=True, outbox_limit=16 * 1024,
                               write_timeout=scaled(0.5))
    port = server.address[1]
    stuck, stuck_id = await joined(port, "r", rcvbuf=4096)
    fast, _ = await joined(port, "r")
    payload = b"y" * 16384
    fast_task = asyncio.ensure_future(_collect(fast, 800))
    sent = 0
    for _ in range(800):  # ~13 MB: enough to fill the kernel buffers in front of `stuck`
        await server.broadcast("r", "m", payload)
        sent += 1
    got = await asyncio.wait_for(fast_task, scaled(60))
    assert len(got) == sent
    assert stuck_id not in server.members("r")
    assert server.counters["dropped_slow_disconnects"] == 1
    assert server.stats()["dropped"] == 0
    stuck.close()
    fast.close()


async def test_async_mode_memory_is_bounded_with_readers_that_never_read(
    make_server: Any,
) -> None:
    limit = 64 * 1024
    server = await make_server(outbox_limit=limit, rate_limit=None, byte_limit=None)
    port = server.address[1]
    idle = await asyncio.gather(*(RawSocket.open(port, rcvbuf=4096) for _ in range(1000)))
    await eventually(lambda: server.connection_count == 1000, what="1000 connections")
    # Joined by the server in one loop turn: one presence write per member, not 1000.
    server.do(lambda conn: conn.join("flood"))
    sender, _ = await joined(port, "flood")
    count, payload = 3000, b"z" * 1000  # 3 MB to each of 1000 receivers without drops
    await sender.send_many([("flood", "m", payload)] * count)
    # 3 million deliveries (drops, mostly): minutes for the pure-Python twin on a loaded
    # machine. The deadline only bounds the wait; the checks below are what is tested.
    await eventually(lambda: server.stats()["messages_in"] >= count + 1, timeout=120,
                     what="the flood handled")
    stats = server.stats()
    assert stats["dropped"] > 0
    for conn in server.connections():
        assert conn.pending <= limit
    assert sum(conn.dropped for conn in server.connections()) == stats["dropped"]
    for client in [*idle, sender]:
        client.close()


async def test_disconnect_policy_closes_the_slow_receiver(make_server: Any) -> None:
    # Four messages of room: a reader that keeps up is never that far behind, even on a
    # loaded machine, while the stuck one (10 MB, never read) passes it for sure.
    server = await make_server(outbox_limit=64 * 1024, slow_consumer="disconnect")
    port = server.address[1]
    stuck, stuck_id = await joined(port, "r", rcvbuf=4096)
    fast, _ = await joined(port, "r")
    fast_task = asyncio.ensure_future(_collect(fast, 600))
    for _ in range(600):  # ~10 MB, paced so that a reader that reads keeps up
        server.broadcast("r", "m", b"w" * 16384)
        await pace(0.001)
    await asyncio.wait_for(fast_task, scaled(60))
    await eventually(lambda: stuck_id not in server.members("r"), what="the stuck one cut")
    assert server.counters["dropped_slow_disconnects"] == 1
    stuck.close()
    fast.close()


async def test_turn_budget_caps_a_turn_without_losing_or_reordering(
    make_server: Any, monkeypatch: Any
) -> None:
    budget = 2 * 1024  # per receiver touched: 40 KiB a turn with 20 receivers
    server = await make_server(turn_budget=budget, rate_limit=None, byte_limit=None)
    held: list[tuple[str, int]] = []
    original = server._core.router._hold

    def spy(conn: roomer.Connection) -> None:
        engine = server._core.engine
        held.append((conn.id, engine.turn_bytes // engine.turn_receivers))
        original(conn)

    @server.on("slow")
    async def slow(conn: roomer.Connection, msg: roomer.Message) -> None:
        await stall(0.01)
        conn.send_to_room("r", "m", msg.payload)

    monkeypatch.setattr(server._core.router, "_hold", spy)
    port = server.address[1]
    receivers = [(await joined(port, "r"))[0] for _ in range(20)]
    sender, sender_id = await joined(port, "r")
    count = 400
    payloads = [b"%04d" % n + b"p" * 1000 for n in range(count)]
    # One write: the server reads many messages at once, so the budget must stop
    # within a read, not only between reads. An async handler sits in the middle.
    messages = [("r", "slow" if n == 150 else "m", p) for n, p in enumerate(payloads)]
    collecting = [asyncio.ensure_future(_collect(r, count)) for r in receivers]
    await sender.send_many(messages)
    orders = await asyncio.wait_for(asyncio.gather(*collecting), scaled(30))
    assert all(order == payloads for order in orders)
    assert held and {conn_id for conn_id, _ in held} == {sender_id}
    one_relay = len(payloads[0]) + 70  # per receiver, frame overhead included
    assert max(per_receiver for _, per_receiver in held) < budget + one_relay
    for client in [*receivers, sender]:
        client.close()
