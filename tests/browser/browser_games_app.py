"""The app of the game room browser tests (``roomer serve browser_games_app:setup``):
browser_app's handlers and the room types of a small table game.

- ``table``: 4 seats, ``filter_by=("mode",)``; ``on_create`` refuses ``{"deny": true}``
  with "no such game", ``on_join`` refuses the name ``"bad"`` with "no bad names";
  ``on_joined`` sends the player ``welcome`` with its options' name; handlers ``roll``
  (answers ``{"rolled": 4}``) and ``end`` (closes the room: "game over").
- ``ticker``: 20 ticks a second, each broadcast as ``tick`` with its number.
"""

from __future__ import annotations

import json
from typing import Any

from browser_app import setup as setup_v1

import roomer

__all__ = ["Table", "Ticker", "setup"]


class Table(roomer.GameRoom):
    max_clients = 4

    def on_create(self, options: dict[str, Any]) -> None:
        if options.get("deny"):
            raise roomer.Deny("no such game")

    def on_join(self, player: roomer.Player) -> None:
        if player.options.get("name") == "bad":
            raise roomer.Deny("no bad names")

    def on_joined(self, player: roomer.Player) -> None:
        player.send("welcome", str(player.options.get("name", "")))

    @roomer.on_message("roll")
    def roll(self, player: roomer.Player, msg: roomer.Message) -> dict[str, int]:
        return {"rolled": 4}

    @roomer.on_message("end")
    def end(self, player: roomer.Player, msg: roomer.Message) -> None:
        self.close("game over")


class Ticker(roomer.GameRoom):
    tick_rate = 20

    def on_tick(self, dt: float) -> None:
        self.broadcast("tick", json.dumps(self.ticks))


def setup(server: roomer.Server) -> None:
    setup_v1(server)
    server.define("table", Table, filter_by=("mode",))
    server.define("ticker", Ticker)
