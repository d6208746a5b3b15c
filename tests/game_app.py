"""Room types the game room tests define (tests/test_games*.py): what each hook saw is
recorded in ``hook_log`` (per process), so a test can check the order hooks ran in.

- ``table``: 4 seats, ``filter_by=("mode",)``; ``on_join`` refuses the name ``"bad"``
  with "no bad names"; ``on_joined`` sends the player ``welcome``; handlers ``roll`` (sync,
  answers ``{"rolled": 4}``), ``slow`` (async: answers after its payload's number of loop
  turns, so a player's later messages wait behind it), ``boom`` (raises), ``deny``
  (raises Deny), ``lock``, ``unlock``, ``private``, ``meta`` (set_metadata from a JSON
  object), ``end`` (close("game over")), ``kick`` (the sender leaves), ``reserve``
  (reserve the ids of a JSON list for 0.3 s: answers true/false).
- ``ticker``: ticks at 20 Hz, broadcasting ``tick`` with the tick number and dt.
- ``vip``: clients may not create it (``allow_create=False``); ``on_create`` refuses the
  option ``{"deny": true}``.

``setup(server)`` defines them (``roomer serve`` app hook), ``setup_ns(server, name)`` in a
namespace.
"""

from __future__ import annotations

import json
from typing import Any

from waiting import suspend

import roomer

hook_log: list[tuple[Any, ...]] = []


class Table(roomer.GameRoom):
    max_clients = 4

    def on_create(self, options: dict[str, Any]) -> None:
        hook_log.append(("create", self.id, options))
        if options.get("deny_create"):
            raise roomer.Deny("no such game")
        self.seen: list[tuple[str, str]] = []

    def on_join(self, player: roomer.Player) -> None:
        hook_log.append(("join", self.id, player.id))
        if player.options.get("name") == "bad":
            raise roomer.Deny("no bad names")

    def on_joined(self, player: roomer.Player) -> None:
        hook_log.append(("joined", self.id, player.id))
        player.send("welcome", json.dumps({"id": player.id, "room": self.id}))

    def on_left(self, player: roomer.Player, consented: bool) -> None:
        hook_log.append(("left", self.id, player.id, consented))

    def on_dispose(self) -> None:
        hook_log.append(("dispose", self.id))

    @roomer.on_message("roll")
    def roll(self, player: roomer.Player, msg: roomer.Message) -> dict[str, int]:
        self.seen.append((player.id, "roll"))
        return {"rolled": 4}

    @roomer.on_message("slow")
    async def slow(self, player: roomer.Player, msg: roomer.Message) -> str:
        for _ in range(int(msg.payload or b"1")):
            await suspend()
        self.seen.append((player.id, msg.payload.decode()))
        return msg.payload.decode()

    @roomer.on_message("note")
    def note(self, player: roomer.Player, msg: roomer.Message) -> None:
        self.seen.append((player.id, msg.payload.decode()))
        player.send("noted", msg.payload)

    @roomer.on_message("boom")
    def boom(self, player: roomer.Player, msg: roomer.Message) -> None:
        raise RuntimeError("kaboom")

    @roomer.on_message("deny")
    def deny(self, player: roomer.Player, msg: roomer.Message) -> None:
        raise roomer.Deny("not your turn")

    @roomer.on_message("lock")
    def lock_it(self, player: roomer.Player, msg: roomer.Message) -> None:
        self.lock()

    @roomer.on_message("unlock")
    def unlock_it(self, player: roomer.Player, msg: roomer.Message) -> None:
        self.unlock()

    @roomer.on_message("private")
    def make_private(self, player: roomer.Player, msg: roomer.Message) -> None:
        self.private = json.loads(msg.payload)

    @roomer.on_message("meta")
    def meta(self, player: roomer.Player, msg: roomer.Message) -> None:
        self.set_metadata(**json.loads(msg.payload))

    @roomer.on_message("end")
    def close_it(self, player: roomer.Player, msg: roomer.Message) -> None:
        self.close("game over")

    @roomer.on_message("kick")
    def kick(self, player: roomer.Player, msg: roomer.Message) -> None:
        player.leave()

    @roomer.on_message("reserve")
    def reserve_for(self, player: roomer.Player, msg: roomer.Message) -> bool:
        return self.reserve(json.loads(msg.payload), 0.3)

    @roomer.on_message("state")
    def state(self, player: roomer.Player, msg: roomer.Message) -> dict[str, Any]:
        return {"players": list(self.players), "clients": self.clients,
                "reserved": self.reserved, "locked": self.locked}


class Ticker(roomer.GameRoom):
    tick_rate = 20

    def on_create(self, options: dict[str, Any]) -> None:
        self.dts: list[float] = []

    def on_tick(self, dt: float) -> None:
        self.dts.append(dt)
        self.broadcast("tick", json.dumps([self.ticks, dt]))


class Vip(roomer.GameRoom):
    max_clients = 2

    def on_create(self, options: dict[str, Any]) -> None:
        if options.get("deny"):
            raise roomer.Deny("vip rooms need a sponsor")


def setup(server: Any) -> None:
    server.define("table", Table, filter_by=("mode",))
    server.define("ticker", Ticker)
    server.define("vip", Vip, allow_create=False)


def setup_ns(server: roomer.Server, name: str) -> None:
    setup(server.namespace(name))
