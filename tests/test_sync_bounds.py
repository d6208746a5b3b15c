"""Sync mode's promises under back-pressure, for every kind of send: a receiver's
outbox stays bounded (direct messages, handler sends, acks too, not only relays), and
a client's messages are handled strictly one after another, in order."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from rawsocket import RawSocket, joined
from waiting import eventually, pace, scaled, stall

import roomer


def _body(room: bytes, event: bytes, dst: bytes = b"", payload: bytes = b"") -> bytes:
    return b"".join(struct.pack(">I", len(f)) + f for f in (room, event, dst, b"", payload))


def _small_send_buffer(conn: roomer.Connection) -> None:
    conn.transport.underlying_transport.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


def _held(server: roomer.Server, receiver: roomer.Connection) -> bool:
    """A sender is held: a turn budget hold happened, or the receiver is over its limit
    (sync mode then waits for it)."""
    return bool(server.counters["turn_holds"] or receiver.over_since)


async def _peak_while_held(value: Callable[[], int], seconds: float = 1.0) -> int:
    """The largest ``value()`` over ``seconds`` (scaled) while a client keeps pushing into
    a hold: the bound must hold for as long as the push lasts, so the window is the test."""
    peak = value()
    end = time.monotonic() + scaled(seconds)
    while time.monotonic() < end:
        await pace(0.02)
        peak = max(peak, value())
    return peak


async def test_direct_messages_to_a_stuck_receiver_hold_the_sender(make_server: Any) -> None:
    limit = 64 * 1024
    server = await make_server(sync_broadcast=True, outbox_limit=limit, write_timeout=30,
                               rate_limit=None, byte_limit=None, error_limit=None)
    port = server.address[1]
    stuck, stuck_id = await joined(port, "r", rcvbuf=4096)
    target = server.connection(stuck_id)
    assert target is not None
    _small_send_buffer(target)
    sender, _ = await joined(port, "r")
    big = b"d" * (100 * 1024)
    # 15 MB the server will not all read while the target is stuck: sent in the background
    sending = asyncio.ensure_future(
        sender.send_bodies([_body(b"root", b"dm", stuck_id.encode(), big)] * 150))
    # The anchor: the sender is held (by its turn budget, or by the target over its
    # limit), and stays so while it pushes: the window is watched from there.
    await eventually(lambda: _held(server, target), what="the sender held")
    peak = await _peak_while_held(lambda: target.pending)
    assert peak <= 2 * limit  # one DM past the limit at most: then the sender waits
    assert server.counters["direct"] <= 3
    assert server.connection_count == 2 and server.stats()["dropped"] == 0
    stuck.close()  # the target goes: the sender is read again and its DMs find nobody
    await eventually(lambda: server.errors["no_such_client"] >= 100,
                     what="the DMs find nobody")
    await asyncio.wait_for(sending, scaled(10))
    sender.close()


async def test_a_handler_flooding_a_stuck_receiver_cuts_it_off(make_server: Any) -> None:
    limit = 64 * 1024
    server = await make_server(sync_broadcast=True, outbox_limit=limit, write_timeout=30,
                               rate_limit=None, byte_limit=None)

    @server.on("flood")
    def flood(conn: roomer.Connection, msg: roomer.Message) -> None:
        for _ in range(150):
            conn.send_to_client(msg.payload.decode(), "big", b"h" * (100 * 1024))

    port = server.address[1]
    stuck, stuck_id = await joined(port, "r", rcvbuf=4096)
    target = server.connection(stuck_id)
    assert target is not None
    _small_send_buffer(target)
    sender, _ = await joined(port, "r")
    await sender.send("root", "flood", stuck_id.encode())
    await eventually(lambda: server.connection_count == 1, what="the stuck one cut off")
    assert server.connection(stuck_id) is None  # cut off at the hard limit, loudly
    assert server.counters["dropped_slow_disconnects"] == 1
    stuck.close()
    sender.close()


async def test_async_handlers_never_interleave_under_back_pressure(make_server: Any) -> None:
    """Relays that pass the turn budget and find a receiver over its limit, with async
    handlers between them: one message of a client at a time, in order."""
    server = await make_server(sync_broadcast=True, outbox_limit=16 * 1024, write_timeout=30,
                               turn_budget=2 * 1024, rate_limit=None, byte_limit=None)
    running: list[int] = []
    order: list[int] = []
    overlaps: list[tuple[int, list[int]]] = []

    @server.on("work")
    async def work(conn: roomer.Connection, msg: roomer.Message) -> None:
        n = int(msg.payload)
        if running:
            overlaps.append((n, list(running)))
        running.append(n)
        order.append(n)
        await stall(0.001)
        conn.send_to_room("r", "m", b"w%d" % n)
        running.remove(n)

    waits: list[int] = []
    wait_for = server._core.router._wait_for

    async def counted(conn: roomer.Connection, grown: list[Any]) -> None:
        waits.append(len(grown))
        await wait_for(conn, grown)

    server._core.router._wait_for = counted  # type: ignore[method-assign]
    port = server.address[1]
    slow, _ = await joined(port, "r", rcvbuf=4096)
    slow_conn = server.connections()[0]
    _small_send_buffer(slow_conn)
    sender, _ = await joined(port, "r")
    bodies = []
    expected = []
    for i in range(300):
        if i % 10 == 5:
            bodies.append(_body(b"r", b"work", b"", b"%d" % i))
            expected.append(b"w%d" % i)
        else:
            bodies.append(_body(b"r", b"m", b"", b"%d" % i + b"." * 900))
            expected.append(b"%d" % i + b"." * 900)
    await sender.send_bodies(bodies)

    async def read_slowly() -> list[bytes]:
        got: list[bytes] = []
        while len(got) < len(expected):
            msg = await slow.recv()
            if msg[1] == "m":
                got.append(msg[4])
            if len(got) % 20 == 0:
                await pace(0.01)  # a slow reader is the test
        return got

    # The reader starts once the sender has waited for it: with a reader that keeps up
    # there would be no back-pressure to test.
    await eventually(lambda: waits, what="the sender waited for the slow reader")
    got = await asyncio.wait_for(read_slowly(), scaled(60))
    assert waits and server.counters["turn_holds"]  # both kinds of hold happened
    assert overlaps == []
    assert order == [i for i in range(300) if i % 10 == 5]
    assert got == expected
    assert server.stats()["dropped"] == 0
    slow.close()
    sender.close()


async def test_acks_to_a_client_that_does_not_read_make_it_wait(make_server: Any) -> None:
    """Sync mode: a join spray from a client that never reads its join_acks stops being
    read once its own outbox is over the limit; it does not grow without bound."""
    limit = 16 * 1024
    server = await make_server(sync_broadcast=True, outbox_limit=limit, write_timeout=30,
                               rate_limit=None, byte_limit=None, error_limit=None)
    port = server.address[1]
    others = [(await joined(port, "busy"))[0] for _ in range(20)]
    sprayer = await RawSocket.open(port, rcvbuf=4096)
    await sprayer.recv()
    conn = next(c for c in server.connections() if "busy" not in c.rooms)
    _small_send_buffer(conn)
    await sprayer.send_bodies([_body(b"busy", b"join")] * 2000)
    await eventually(lambda: _held(server, conn), what="the sprayer held")
    peak = await _peak_while_held(lambda: conn.pending)
    assert 0 < peak <= 2 * limit
    assert server.counters["messages_in"] < 2000  # held: the rest is not read
    for client in [*others, sprayer]:
        client.close()
