"""Reading less often (``poll_interval``): after a loop turn with clients' messages, the
server sleeps out the rest of the interval, so its next poll of the sockets reads what many
clients sent. Both fan-out twins' pacing with a clock of the test's, then a real server
over real sockets: busy turns come at most once per interval, every message still arrives
in order, and turns without clients' messages never sleep."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from rawclient import TIMEOUT, url_of
from test_client_resume import Collector
from waiting import suspend

import roomer
from roomer.cli import UsageError, _parser, server_options


def relay_of(fanout_impl: Any, poll_interval: float) -> Any:
    return fanout_impl.Relay(
        None, rate=None, byte_rate=None, turn_messages=64, turn_budget=16384,
        allow_root=False, root="root", max_room=256, max_event=256, slow=frozenset(),
        stall_after=0.25, poll_interval=poll_interval)


def test_a_busy_turn_sleeps_out_the_rest_of_the_interval(fanout_impl: Any,
                                                         monkeypatch: Any) -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(fanout_impl, "monotonic", lambda: now[0])
    relay = relay_of(fanout_impl, 0.01)
    relay.sleep = sleep
    relay._tick()  # the first busy turn after a quiet spell: at once
    assert slept == []
    now[0] += 0.003
    relay._tick()  # 3 ms later: the other 7 are slept
    assert slept == [pytest.approx(0.007)]
    now[0] += 0.02
    relay._tick()  # a turn longer than the interval: no sleep
    assert len(slept) == 1
    now[0] += 0.004
    relay._tick()
    assert slept[1:] == [pytest.approx(0.006)]
    now[0] -= 5  # a clock that went back: never more than the interval
    relay._tick()
    assert slept[2:] == [pytest.approx(0.01)]
    assert relay.turn == 5
    now[0] += 0.001
    relay.accepted()  # a turn that accepted a connection: no pause after it
    relay._tick()
    assert len(slept) == 3
    now[0] += 0.004
    relay._tick()  # and the next one is paced from there
    assert slept[3:] == [pytest.approx(0.006)]
    assert relay.turn == 7

    quiet = relay_of(fanout_impl, 0.0)
    quiet.sleep = sleep
    for _ in range(3):
        quiet._tick()
    assert len(slept) == 4 and quiet.turn == 3


def test_config_and_flag() -> None:
    assert roomer.Config().poll_interval == 0
    assert roomer.Config(poll_interval=0.002).poll_interval == 0.002
    for bad, error in ((-0.001, ValueError), (0.051, ValueError), ("2", TypeError),
                       (True, TypeError)):
        with pytest.raises(error, match="poll_interval"):
            roomer.Config(poll_interval=bad)
    args = _parser().parse_args(["serve", "--poll-interval", "2"])
    assert server_options(args) == {"poll_interval": 0.002}  # the flag is in milliseconds
    args = _parser().parse_args(["serve", "--poll-interval", "100"])
    with pytest.raises(UsageError, match="--poll-interval"):
        server_options(args)


async def test_busy_turns_come_at_most_once_per_interval(make_server: Any) -> None:
    interval = 0.05
    server = await make_server(poll_interval=interval, rate_limit=None, byte_limit=None)
    relay = server._core.router.relay
    slept: list[float] = []
    real_sleep = relay.sleep

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        real_sleep(seconds)

    relay.sleep = sleep
    url = url_of(server)
    senders = [await (await roomer.connect(url)).join("r") for _ in range(4)]
    reader = await roomer.connect(url)
    seen = Collector(await reader.join("r"), "m")

    first_turn, started = relay.turn, time.monotonic()
    for n in range(30):
        for k, room in enumerate(senders):
            room.send("m", f"{k}:{n}")
        await suspend()  # the loop gets a turn between two rounds of sends
    got = await seen.reached(120, TIMEOUT)
    elapsed, turns = time.monotonic() - started, relay.turn - first_turn
    # Each busy turn but the first of a spell ends a full interval after the one before.
    assert turns <= elapsed / interval + 2, (turns, elapsed)
    assert slept and max(slept) <= interval
    for k in range(4):
        assert [text for text in got if text.startswith(f"{k}:")] == [
            f"{k}:{n}" for n in range(30)]

    # What the server sends by itself, and what clients read, makes no busy turn.
    sleeps, turn = len(slept), relay.turn
    server.broadcast("r", "m", b"from the server")
    assert (await seen.reached(121, TIMEOUT))[-1] == "from the server"
    assert len(slept) == sleeps and relay.turn == turn
    for room in [*senders, reader]:
        await room.close()


async def test_a_server_without_it_never_sleeps(make_server: Any) -> None:
    server = await make_server()
    relay = server._core.router.relay
    relay.sleep = pytest.fail  # any call fails the test
    root = await roomer.connect(url_of(server))
    room = await root.join("r")
    other = await roomer.connect(url_of(server))
    seen = Collector(await other.join("r"), "m")
    for n in range(20):
        room.send("m", str(n))
    assert await seen.reached(20, TIMEOUT) == [str(n) for n in range(20)]
    await asyncio.gather(root.close(), other.close())


async def test_a_turns_writes_go_out_before_its_sleep(make_server: Any) -> None:
    # Without a write delay, what a turn queued is written before the loop sleeps, not
    # an interval later, even when the turn's first message queued nothing (a relay to
    # a room with no one else: the turn's tick then comes before its flush).
    server = await make_server(poll_interval=0.02)

    @server.on("echo")
    def echo(conn: Any, msg: roomer.Message) -> None:
        conn.send("echoed", msg.payload, msg.room)

    relay = server._core.router.relay
    root = await roomer.connect(url_of(server), protocol="v2", coalesce=True)
    room = await root.join("r")
    alone = await root.join("alone")
    conn = server.connection(root.id())
    assert conn is not None
    queued_at_sleep: list[int] = []
    real_sleep = relay.sleep

    def sleep(seconds: float) -> None:
        queued_at_sleep.append(len(conn.queued()))
        real_sleep(seconds)

    relay.sleep = sleep
    for n in range(10):
        echoed = asyncio.ensure_future(room.wait_for("echoed", TIMEOUT))
        alone.send("nobody", "hears this")  # one batch with the next: one turn
        room.send("echo", str(n))
        assert await echoed == (str(n).encode(), "")
    assert queued_at_sleep and set(queued_at_sleep) == {0}
    await root.close()


async def test_connections_are_not_let_in_at_one_per_interval(make_server: Any) -> None:
    # The event loop accepts one connection per poll of the sockets (libuv does not
    # accept in a loop): were every busy turn followed by a pause, a crowd connecting
    # while others play would come in at one client per interval (600 clients took
    # 27 s at 50 ms). A turn that accepted a connection is not followed by one.
    interval = 0.05
    server = await make_server(poll_interval=interval, rate_limit=None, byte_limit=None)
    relay = server._core.router.relay
    pauses = [0]
    real_sleep = relay.sleep

    def sleep(seconds: float) -> None:
        pauses[0] += 1
        real_sleep(seconds)

    relay.sleep = sleep
    url = url_of(server)
    player = await (await roomer.connect(url)).join("game")
    playing = True

    async def play() -> None:  # every turn a busy one while the crowd connects
        while playing:
            player.send("input", "x")
            await suspend()

    playing_task = asyncio.ensure_future(play())
    crowd = 40
    try:
        before = pauses[0]
        roots = await asyncio.wait_for(
            asyncio.gather(*(roomer.connect(url) for _ in range(crowd))), TIMEOUT)
        rooms = await asyncio.wait_for(
            asyncio.gather(*(root.join(f"table-{k % 10}") for k, root in enumerate(roots))),
            TIMEOUT)
        # Paced, a crowd needs at least one pause per client; accepted at full speed, a
        # few pauses while the last handshakes and joins go through.
        assert pauses[0] - before < crowd / 2, (pauses[0] - before, crowd)
    finally:
        playing = False
        await playing_task
    for room in [*rooms, player]:
        await room.close()
