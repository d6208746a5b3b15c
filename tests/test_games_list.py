"""The live room list on one node (docs/protocol.md §10): a watch's first list, its
coalesced updates, what it never shows (private, unlisted, filtered out), its limit, and
that after a burst of creates, joins and leaves the list a watcher built from the updates
is the rooms' real state. tests/test_games_cluster.py checks it across nodes."""

from __future__ import annotations

import asyncio
import json
import math
import random
from typing import Any

from rawclient import eventually
from test_games import Start
from v2client import ERROR_REPLY, REPLY, Client2, connect2

import roomer


class Watcher:
    """A raw v2 client watching a type: ``rooms`` is what its updates add up to."""

    def __init__(self, client: Client2, type_name: str) -> None:
        self.client = client
        self.type = type_name
        self.rooms: dict[str, dict[str, Any]] = {}
        self.updates = 0
        self.times: list[float] = []
        self.reader: asyncio.Task[None] | None = None

    async def watch(self, wanted: dict[str, Any] | None = None) -> None:
        answer = await self.client.ask("", self.type, "rooms.watch",
                                       json.dumps(wanted or {}))
        assert answer.kind == REPLY, answer
        self.rooms = {entry["id"]: entry for entry in json.loads(answer.payload)["rooms"]}
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            msg = await self.client.inbox.get()
            if msg.event != "rooms.changes":
                continue
            assert msg.room == self.type, msg
            info = json.loads(msg.payload)
            self.updates += 1
            self.times.append(loop.time())
            for entry in info["changed"]:
                self.rooms[entry["id"]] = entry
            for room_id in info["removed"]:
                self.rooms.pop(room_id, None)

    def stop(self) -> None:
        if self.reader is not None:
            self.reader.cancel()


def listed(server: roomer.Server, type_name: str = "table") -> dict[str, dict[str, Any]]:
    """What a watch should show: the listed rooms of a type, as entries."""
    return {r.id: r.entry() for r in server.list_rooms(type_name)
            if not (r.private or r.unlisted)}


async def test_a_watch_gets_the_list_then_its_changes(game_servers: Start) -> None:
    server = await game_servers()
    ada, bob = await connect2(server), await connect2(server)
    first = json.loads((await ada.ask("", "table", "room.create")).payload)["room"]
    watcher = Watcher(await connect2(server), "table")
    await watcher.watch()
    assert list(watcher.rooms) == [first]
    assert watcher.rooms[first] == {"id": first, "type": "table", "clients": 1,
                                    "max_clients": 4, "locked": False, "metadata": {}}
    await bob.ask("", first, "join")
    await eventually(lambda: watcher.rooms[first]["clients"] == 2)
    await bob.ask("", first, "meta", json.dumps({"mode": "duel"}))
    await eventually(lambda: watcher.rooms[first]["metadata"] == {"mode": "duel"})
    await ada.ask("", first, "private", b"true")  # private: gone from the list
    await eventually(lambda: first not in watcher.rooms)
    await ada.ask("", first, "private", b"false")
    await eventually(lambda: first in watcher.rooms)
    await ada.close()
    await bob.close()  # the room empties and is disposed: removed
    await eventually(lambda: watcher.rooms == {})
    watcher.stop()


async def test_a_filtered_watch_shows_only_matching_rooms(game_servers: Start) -> None:
    server = await game_servers()
    duel, solo = await connect2(server), await connect2(server)
    await duel.ask("", "table", "room.join_or_create", json.dumps({"mode": "duel"}))
    await solo.ask("", "table", "room.join_or_create", json.dumps({"mode": "solo"}))
    watcher = Watcher(await connect2(server), "table")
    await watcher.watch({"mode": "duel"})
    assert [entry["metadata"] for entry in watcher.rooms.values()] == [{"mode": "duel"}]
    watcher.stop()


async def test_watches_are_bounded_per_connection_and_replaced_per_type(
        game_servers: Start) -> None:
    server = await game_servers(max_room_watches=1)
    client = await connect2(server)
    assert (await client.ask("", "table", "rooms.watch")).kind == REPLY
    assert (await client.ask("", "table", "rooms.watch", b'{"mode": "x"}')).kind == REPLY
    refused = await client.ask("", "ticker", "rooms.watch")
    assert refused.kind == ERROR_REPLY
    assert json.loads(refused.payload)["code"] == "too_many_watches"
    assert (await client.ask("", "table", "rooms.unwatch")).kind == REPLY
    assert (await client.ask("", "ticker", "rooms.watch")).kind == REPLY
    nosuch = await client.ask("", "nosuch", "rooms.watch")
    assert json.loads(nosuch.payload)["code"] == "no_such_room_type"
    assert server.stats()["game_watches"] == 1
    await client.close()
    await eventually(lambda: server.stats()["game_watches"] == 0)


async def test_a_watch_shows_at_most_max_listed_rooms_and_fills_freed_slots(
        game_servers: Start) -> None:
    server = await game_servers(max_listed_rooms=2)
    owners = [await connect2(server) for _ in range(3)]
    rooms = [json.loads((await c.ask("", "table", "room.create")).payload)["room"]
             for c in owners]
    watcher = Watcher(await connect2(server), "table")
    await watcher.watch()
    assert list(watcher.rooms) == rooms[:2]  # the oldest first
    await owners[0].close()
    await eventually(lambda: list(watcher.rooms) == rooms[1:])
    watcher.stop()


async def test_after_a_burst_the_watched_list_is_the_real_state_and_updates_coalesce(
        game_servers: Start) -> None:
    interval = 0.2
    server = await game_servers(room_list_interval=interval)
    watcher = Watcher(await connect2(server), "table")
    await watcher.watch()
    clients = [await connect2(server) for _ in range(24)]
    rng = random.Random(7)
    loop = asyncio.get_running_loop()
    began = loop.time()
    rooms: list[str] = []
    for step in range(120):
        client = rng.choice(clients)
        action = rng.random()
        if action < 0.25 or not rooms:
            answer = await client.ask("", "table", "room.join_or_create",
                                      json.dumps({"mode": rng.choice(["a", "b"])}))
            if answer.kind == REPLY:
                rooms.append(json.loads(answer.payload)["room"])
        elif action < 0.7:
            await client.ask("", rng.choice(rooms), "join")
        elif action < 0.9:
            await client.ask("", rng.choice(rooms), "leave")
        else:
            await client.ask("", rng.choice(rooms), "lock" if step % 2 else "unlock")
    ended = loop.time()
    await eventually(lambda: watcher.rooms == listed(server), timeout=5)
    # At most one update per interval, however many changes the burst made.
    during = [t for t in watcher.times if t <= ended + interval]
    assert len(during) <= math.ceil((ended - began) / interval) + 2, (
        len(during), ended - began)
    assert server.counters["game_rooms_created"] >= 2
    watcher.stop()


async def test_python_client_watch(game_servers: Start) -> None:
    server = await game_servers()
    url = f"ws://127.0.0.1:{server.address[1]}/ws"
    root = await roomer.connect(url, protocol="v2")
    watch = await root.watch_rooms("table")
    assert watch.rooms == {}
    changes: list[Any] = []
    watch.on_change(lambda changed, removed: changes.append((changed, removed)))
    other = await roomer.connect(url, protocol="v2")
    table = await other.join_or_create("table", {"mode": "duel"})
    await eventually(lambda: table.name in watch.rooms)
    assert watch.rooms[table.name]["metadata"] == {"mode": "duel"}
    await watch.close()
    await eventually(lambda: server.stats()["game_watches"] == 0)
    await other.close()
    await root.close()
