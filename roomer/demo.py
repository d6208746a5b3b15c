"""The demo that ``roomer serve`` runs when no app is named, a small game on game rooms:
open http://127.0.0.1:8080/ in two tabs (or on two nodes: ``roomer serve --workers 2
--backplane redis://...``).

It is also the example app, and shows the pieces a game uses:

- the page (``static/demo.html``) imports the browser client from ``/roomer.js`` and
  speaks protocol v2;
- "Quick play" is one ask, ``joinOrCreate("table", {name})``: a seat at a table with a
  free seat, or a new table; the player's name travels in the join's options, so the
  table knows it on whatever node the player is connected to;
- the lobby watches the live table list (``watchRooms("table")``): seats taken, full;
- a :class:`Table` is a :class:`roomer.GameRoom` of 4 seats ticking at 20 Hz on its
  node: players steer towards a point (``steer``), the server moves every dot and sends
  the table its ``state`` each tick (server-authoritative positions); ``chat`` is checked
  and broadcast by the room; a name taken at the table is refused by ``on_join``.

Protocol of the page (room: a table's id):

=====================  ====================  ===============================================
event                  direction             payload
=====================  ====================  ===============================================
``names``              table → members       JSON ``{id: name}`` of the seated players
``state``              table → members       JSON ``{"tick": n, "players": {id: [x, y]}}``,
                                             x and y in 0-1 (3 decimals), 20 a second
``steer``              client → table        x, y of the target: two uint16 big-endian
``names``              client → table        (empty) asks for ``names``, to this player only
``chat``               client → table        UTF-8 text (at most 200 characters)
``chat``               table → members       JSON ``{"id": sender, "text": text}``
=====================  ====================  ===============================================
"""

from __future__ import annotations

import json
import os
import random
import struct
import unicodedata
from importlib import resources
from typing import Any

from .errors import Deny
from .games import GameRoom, Player, on_message
from .message import Message
from .server import Server

__all__ = ["NAME_LIMIT", "SEATS", "TICK_RATE", "Table", "clean_name", "setup"]

#: Longest display name, in characters.
NAME_LIMIT = 24
#: Seats at a table.
SEATS = 4
#: Ticks a second.
TICK_RATE = 20
#: How far a dot moves in a second, in fields (the field is 1 x 1).
SPEED = 0.6
#: Longest chat line, in characters.
CHAT_LIMIT = 200

_TARGET = struct.Struct(">HH")


def clean_name(raw: str, conn_id: str) -> str:
    """A display name: control characters dropped, spaces collapsed, at most
    NAME_LIMIT characters; ``guest-xxxx`` when nothing is left."""
    kept = "".join(c for c in raw if not unicodedata.category(c).startswith("C"))
    name = " ".join(kept.split())[:NAME_LIMIT]
    return name or f"guest-{conn_id[:4]}"


class Table(GameRoom):
    """A table of the demo: 4 seats, dots steered towards targets, a 20 Hz state."""

    max_clients = SEATS
    tick_rate = TICK_RATE

    def on_create(self, options: dict[str, Any]) -> None:
        self.names: dict[str, str] = {}
        self.dots: dict[str, list[float]] = {}  # id -> [x, y, target x, target y]
        self.set_metadata(title=f"Table {self.id.partition(':')[2][:4]}")

    def on_join(self, player: Player) -> None:
        name = clean_name(str(player.options.get("name", "")), player.id)
        if name in self.names.values():
            raise Deny(f"someone at this table is called {name} already")
        player.data["name"] = name

    def on_joined(self, player: Player) -> None:
        x, y = random.uniform(0.15, 0.85), random.uniform(0.15, 0.85)
        self.dots[player.id] = [x, y, x, y]
        self.names[player.id] = player.data["name"]
        self.broadcast("names", json.dumps(self.names))

    def on_left(self, player: Player, consented: bool) -> None:
        self.dots.pop(player.id, None)
        self.names.pop(player.id, None)
        self.broadcast("names", json.dumps(self.names))

    @on_message("steer")
    def steer(self, player: Player, msg: Message) -> None:
        if len(msg.payload) != _TARGET.size:
            raise Deny("steer takes a target: two uint16")
        x, y = _TARGET.unpack(msg.payload)
        self.dots[player.id][2:] = [x / 65535, y / 65535]

    @on_message("names")
    def names_asked(self, player: Player, msg: Message) -> None:
        # A page that sat down again after a reload missed the last change of names.
        player.send("names", json.dumps(self.names))

    @on_message("chat")
    def chat(self, player: Player, msg: Message) -> None:
        text = " ".join(msg.payload.decode(errors="replace").split())[:CHAT_LIMIT]
        if text:
            self.broadcast("chat", json.dumps({"id": player.id, "text": text}))

    def on_tick(self, dt: float) -> None:
        step = SPEED * dt
        for dot in self.dots.values():
            dx, dy = dot[2] - dot[0], dot[3] - dot[1]
            far = (dx * dx + dy * dy) ** 0.5
            if far <= step:
                dot[0], dot[1] = dot[2], dot[3]
            else:
                dot[0] += dx / far * step
                dot[1] += dy / far * step
        state = {"tick": self.ticks,
                 "players": {pid: [round(d[0], 3), round(d[1], 3)]
                             for pid, d in self.dots.items()}}
        self.broadcast("state", json.dumps(state, separators=(",", ":")))


def setup(server: Server) -> None:
    """Define the demo's ``table`` room type on ``server`` and serve its page at ``/``,
    unless the server's ``static_dir`` (``--static DIR``) holds an ``index.html`` (looked
    for now, once): then the folder's page is the one at ``/``."""
    static = server.config.static_dir
    if static is None or not os.path.isfile(os.path.join(static, "index.html")):
        page = resources.files("roomer").joinpath("static/demo.html").read_bytes()
        server.routes["/"] = ("text/html; charset=utf-8", page)
    server.define("table", Table)
