"""Write coalescing (``write_delay``): a receiver's outbox gathers frames for up to that long
before one write. Both fan-out twins with recording transports, then a real server over
real sockets: every frame still arrives, in order, and a close or a game room's tick does
not wait for the delay."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import game_app
import pytest
from rawsocket import joined
from test_fanout import frame, make_peers
from v2client import REPLY, connect2
from waiting import eventually, scaled, suspend

import roomer
from roomer.cli import UsageError, _parser, server_options

LONG = 1.0  # the longest delay Config takes: nothing in these tests waits that long by chance
# Over sockets every frame waits this long, join acks too: long enough to hold a test's
# handful of messages, short enough not to slow the suite.
WINDOW = 0.5


async def moves(client: Any, count: int) -> list[bytes]:
    """The payloads of the next ``count`` relayed moves (presence skipped)."""
    got: list[bytes] = []
    while len(got) < count:
        msg = await asyncio.wait_for(client.recv(), scaled(10))
        if msg[1] == "move":
            got.append(msg[4])
    return got


async def turns(n: int) -> None:
    for _ in range(n):
        await suspend()


async def test_frames_of_many_turns_go_in_one_write_after_the_delay(fanout_impl: Any) -> None:
    loop = asyncio.get_running_loop()
    written = asyncio.Event()
    engine = fanout_impl.Fanout(loop, write_delay=LONG)
    members, transports = make_peers(fanout_impl, engine, 3)
    transports[0].on_write = lambda data: written.set()
    frames = [frame(i) for i in range(5)]
    for f in frames:
        engine.broadcast(members, f)
        await turns(2)
    assert [tr.writes for tr in transports] == [[], [], []]  # five turns later: still held
    await asyncio.wait_for(written.wait(), scaled(5))
    for tr in transports:
        assert tr.writes == [b"".join(frames)]
    assert engine.stats["writes"] == 3 and engine.stats["deliveries"] == 15


async def test_an_outbox_past_flush_threshold_does_not_wait(fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop(), write_delay=LONG,
                                flush_threshold=1000)
    members, transports = make_peers(fanout_impl, engine, 2)
    engine.broadcast(members, frame(0, 600))
    assert [len(tr.writes) for tr in transports] == [0, 0]
    engine.broadcast(members, frame(1, 600))
    assert [len(tr.writes) for tr in transports] == [1, 1]


async def test_flush_peers_writes_only_those_members(fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop(), write_delay=LONG)
    members, transports = make_peers(fanout_impl, engine, 4)
    engine.broadcast(members, frame(0))
    some = {k: members[k] for k in ("c0", "c2")}
    engine.flush_peers(some)
    assert [len(tr.writes) for tr in transports] == [1, 0, 1, 0]
    engine.broadcast(members, frame(1))
    engine.flush()
    assert [tr.data for tr in transports] == [frame(0) + frame(1)] * 4
    with pytest.raises(TypeError):
        engine.flush_peers([members["c0"]])


async def test_a_turns_work_is_counted_per_turn_while_outboxes_wait(fanout_impl: Any) -> None:
    # The server caps one turn by bytes queued per receiver touched in that turn; with a
    # delay, a flush spans many turns and must not carry one turn's work into the next.
    engine = fanout_impl.Fanout(asyncio.get_running_loop(), write_delay=LONG)
    members, _ = make_peers(fanout_impl, engine, 4)
    engine.broadcast(members, frame(0, 100))
    first = engine.turn_bytes
    assert first > 0 and engine.turn_receivers == 4
    await turns(1)
    assert engine.turn_bytes == 0 and engine.turn_receivers == 1
    engine.broadcast({"c1": members["c1"]}, frame(1, 100))
    assert engine.turn_bytes == first // 4 and engine.turn_receivers == 1
    assert members["c0"].pending > 0  # still waiting for the delay


@pytest.mark.parametrize("delay", [-0.001, 1.5, float("nan")])
def test_a_delay_out_of_range_is_refused(fanout_impl: Any, delay: float) -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="write_delay"):
            fanout_impl.Fanout(loop, write_delay=delay)
    finally:
        loop.close()


def test_config_and_flag() -> None:
    assert roomer.Config().write_delay == 0
    assert roomer.Config(write_delay=0.02).write_delay == 0.02
    for bad, error in ((-1, ValueError), (2, ValueError), ("5", TypeError), (True, TypeError)):
        with pytest.raises(error, match="write_delay"):
            roomer.Config(write_delay=bad)
    args = _parser().parse_args(["serve", "--write-delay", "20"])
    assert server_options(args) == {"write_delay": 0.02}  # the flag is in milliseconds
    args = _parser().parse_args(["serve", "--write-delay", "5000"])
    with pytest.raises(UsageError, match="--write-delay"):
        server_options(args)


# --------------------------------------------------------------------------- over sockets


async def test_relays_arrive_whole_and_in_order_in_fewer_writes(make_server: Any) -> None:
    server = await make_server(write_delay=WINDOW)
    port = server.address[1]
    receiver, _ = await joined(port, "r")
    sender, _ = await joined(port, "r")
    engine = server._core.engine
    writes = engine.stats["writes"]
    for i in range(10):
        await sender.send("r", "move", b"%d" % i)
        await eventually(lambda i=i: engine.stats["deliveries"] >= 2 + i + 1 or None)
    assert await moves(receiver, 10) == [b"%d" % i for i in range(10)]
    # Ten messages, each handled in its own turn, reached the receiver in a few writes
    # (the windows they spanned), not ten.
    assert engine.stats["writes"] - writes <= 4
    for client in (sender, receiver):
        client.close()


async def test_a_close_writes_what_waits_before_the_close_frame(make_server: Any) -> None:
    server = await make_server(write_delay=WINDOW)
    port = server.address[1]
    receiver, receiver_id = await joined(port, "r")
    sender, _ = await joined(port, "r")
    for i in range(3):
        await sender.send("r", "move", b"%d" % i)
    conn = server.connection(receiver_id)
    assert conn is not None
    await eventually(lambda: conn.pending >= 3 * 20 or None)
    conn.close(4000, "bye")
    assert await moves(receiver, 3) == [b"0", b"1", b"2"]
    code, reason = await receiver.close_frame()
    assert (code, reason) == (4000, b"bye")
    for client in (sender, receiver):
        client.close()


async def test_shutdown_writes_what_waits_before_closing() -> None:
    server = roomer.Server(write_delay=WINDOW)
    await server.start("127.0.0.1", 0)
    port = server.address[1]
    receiver, receiver_id = await joined(port, "r")
    server.broadcast("r", "news", b"last words")
    conn = server.connection(receiver_id)
    assert conn is not None and conn.pending > 0
    await server.shutdown(timeout=scaled(5))
    msg = await asyncio.wait_for(receiver.recv(), scaled(10))
    assert (msg[1], msg[4]) == ("news", b"last words")
    code, _ = await receiver.close_frame()
    assert code == 1001
    receiver.close()


async def test_a_game_rooms_tick_is_written_with_the_tick() -> None:
    server = roomer.Server(write_delay=LONG)
    game_app.setup(server)
    await server.start("127.0.0.1", 0)
    try:
        ada = await connect2(server)
        answer = await ada.ask("", "ticker", "room.create", b"{}")
        assert answer.kind == REPLY, answer
        room = json.loads(answer.payload)["room"]
        await ada.expect("tick", room)
        engine = server._core.engine
        writes = engine.stats["writes"]
        for _ in range(3):
            await ada.expect("tick", room)
        # Each tick (20 Hz) was its own write; held for the delay, the three would have
        # come in one write a second later.
        assert engine.stats["writes"] - writes >= 3
    finally:
        await server.shutdown(timeout=scaled(5))

