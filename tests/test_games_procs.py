"""Game rooms over real processes and real brokers: ``roomer serve`` nodes running
tests/game_app.py on Redis and on NATS. An owner killed with SIGKILL: its room's members
on the other node are told (``room.closed``, ``owner_lost``) within the dead-node bound,
and the room is gone from the list; the seats of the dead node's players in a room owned
elsewhere are freed. The time it took is printed (``pytest -s``)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable

import pytest
from serverproc import ServerProcess
from test_games_cluster import next_of
from test_scaleout_procs import formed, node_options
from v2client import REPLY, connect2

pytestmark = pytest.mark.server_process

APP = ("game_app:setup",)
KILL_BOUND = 10.0  # the brief's bound: members elsewhere told within 10 s
Start = Callable[..., Awaitable[ServerProcess]]


@pytest.fixture(params=["redis", "nats"])
def broker_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


async def test_an_owner_killed_with_sigkill_ends_its_rooms_for_the_others(
        server_process: Start, broker_url: str, prefix: str) -> None:
    survivor = await server_process(node_options(broker_url, prefix, "survivor"), APP)
    victim = await ServerProcess.start(node_options(broker_url, prefix, "victim"), APP)
    try:
        await formed([survivor, victim])
        owner = await connect2(victim.url)
        doomed = json.loads((await owner.ask("", "ticker", "room.create")).payload)["room"]
        member = await connect2(survivor.url)
        assert (await member.ask("", doomed, "join")).kind == REPLY
        await next_of(member, "tick", doomed, 5)  # the tick crosses: the room is live
        # a room of the survivor's with a player of the victim's
        host = await connect2(survivor.url)
        kept = json.loads((await host.ask("", "table", "room.create")).payload)["room"]
        guest = await connect2(victim.url)
        assert (await guest.ask("", kept, "join")).kind == REPLY
        watcher = await connect2(survivor.url)
        listed = json.loads((await watcher.ask("", "ticker", "rooms.watch")).payload)
        assert [r["id"] for r in listed["rooms"]] == [doomed]

        killed_at = time.monotonic()
        os.killpg(victim.pid, signal.SIGKILL)
        closed = await next_of(member, "room.closed", doomed, KILL_BOUND + 5)
        took = time.monotonic() - killed_at
        print(f"\n[{broker_url.partition(':')[0]}] SIGKILL of an owner: its room closed for "
              f"a member elsewhere after {took:.2f} s (bound {KILL_BOUND:.0f} s)")
        assert took < KILL_BOUND
        assert json.loads(closed.payload)["code"] == "owner_lost"
        # (an update of the room may come first, coalesced from before the kill)
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            left = deadline - asyncio.get_running_loop().time()
            change = json.loads((await next_of(watcher, "rooms.changes", "ticker", left)).payload)
            if change["removed"]:
                break
        assert change["removed"] == [doomed]
        # the guest's seat in the survivor's room is free again
        state = json.loads((await host.ask("", kept, "state")).payload)
        assert state["players"] == [host.id] and state["clients"] == 1
        for client in (member, host, watcher, owner, guest):
            await client.close()  # the victim's two: their readers stop
    finally:
        await victim.kill()


async def test_an_owner_paused_past_node_timeout_ends_its_rooms_everywhere(
        server_process: Start, broker_url: str, prefix: str) -> None:
    """The owner process is stopped (SIGSTOP) longer than node_timeout: its room ends for
    the member on the other node; when it runs again it learns it was declared dead, ends
    the room for its own member too (the cluster forgot it), and a new room works across
    both nodes again."""
    options = {"node_timeout": 2.0}
    survivor = await server_process(node_options(broker_url, prefix, "survivor", **options),
                                    APP)
    owner_node = await server_process(node_options(broker_url, prefix, "paused", **options),
                                      APP)
    await formed([survivor, owner_node])
    ada = await connect2(owner_node.url)
    room = json.loads((await ada.ask("", "table", "room.create")).payload)["room"]
    bob = await connect2(survivor.url)
    assert (await bob.ask("", room, "join")).kind == REPLY
    os.killpg(owner_node.pid, signal.SIGSTOP)
    try:
        closed = await next_of(bob, "room.closed", room, KILL_BOUND)
        assert json.loads(closed.payload)["code"] == "owner_lost"
    finally:
        os.killpg(owner_node.pid, signal.SIGCONT)
    closed = await next_of(ada, "room.closed", room, 15)
    assert json.loads(closed.payload)["code"] == "owner_lost"
    await formed([survivor, owner_node])
    again = json.loads((await ada.ask("", "table", "room.create")).payload)["room"]
    assert (await bob.ask("", again, "join")).kind == REPLY
    for client in (ada, bob):
        await client.close()
