"""The demo lobby that ``roomer serve`` runs when no app is named: open
http://127.0.0.1:8080/ in two tabs.

It is also the example app, and shows the pieces an app uses:

- the page (``static/demo.html``) imports the browser client from ``/roomer.js``;
- a player's name comes with the connection (``/ws?name=...``), read in ``on_connect``:
  it survives reconnections, since the client reconnects to the same URL;
- a join hook refuses rooms (``staff-*``) and tells a joiner its room-mates' names;
- a task outside any handler publishes the room list, at most a few times a second
  however many joins and leaves happen (one broadcast per period, not one per change);
- chat (``chat``) and pointer dots (``move``, 4 bytes) have no handler: the server relays
  them to the room as they are, which is the fast path.

Protocol of the page (rooms other than root carry chat and dots):

=====================  ====================  ===============================================
event                  direction             payload
=====================  ====================  ===============================================
``rooms``              server → every client JSON ``[{"room": name, "members": n}, ...]``
``names``              server → a room       JSON ``{id: name}`` of members
``chat``               client ↔ room         UTF-8 text
``move``               client ↔ room         x, y: two uint16 big-endian, 0-65535 across
=====================  ====================  ===============================================
"""

from __future__ import annotations

import asyncio
import json
import os
import unicodedata
from collections.abc import Callable
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from .errors import Deny
from .server import Connection, Server

__all__ = ["NAME_LIMIT", "SUGGESTED_ROOMS", "clean_name", "setup"]

#: Rooms the list always shows, so a first visitor has somewhere to go.
SUGGESTED_ROOMS = ("lobby", "arena", "cafe")
#: Longest display name, in characters.
NAME_LIMIT = 24
#: Seconds between two room-list broadcasts at most (4 a second).
PUBLISH_PERIOD = 0.25
#: Rooms listed at most (the busiest).
LISTED_ROOMS = 30


def clean_name(raw: str, conn_id: str) -> str:
    """A display name: control characters dropped, spaces collapsed, at most
    NAME_LIMIT characters; ``guest-xxxx`` when nothing is left."""
    kept = "".join(c for c in raw if not unicodedata.category(c).startswith("C"))
    name = " ".join(kept.split())[:NAME_LIMIT]
    return name or f"guest-{conn_id[:4]}"


def setup(server: Server) -> None:
    """Register the demo's page, hooks and room-list publisher on ``server``. The page is
    served at ``/`` unless the server's ``static_dir`` (``--static DIR``) holds an
    ``index.html`` (looked for now, once): then the folder's page is the one at ``/``."""
    static = server.config.static_dir
    if static is None or not os.path.isfile(os.path.join(static, "index.html")):
        page = resources.files("roomer").joinpath("static/demo.html").read_bytes()
        server.routes["/"] = ("text/html; charset=utf-8", page)
    names: dict[str, str] = {}  # connection id -> display name
    changed = asyncio.Event()  # the room list has changed since the last broadcast
    publisher: list[asyncio.Task[None]] = []

    def room_list() -> str:
        counts = {room: len(server.members(room)) for room in server.rooms() if room != "root"}
        for room in SUGGESTED_ROOMS:
            counts.setdefault(room, 0)
        busiest = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:LISTED_ROOMS]
        return json.dumps([{"room": room, "members": n} for room, n in busiest])

    @server.on_connect
    def arrive(conn: Connection) -> None:
        query = parse_qs(urlsplit(conn.request.path.decode("latin-1")).query)
        names[conn.id] = clean_name(query.get("name", [""])[0], conn.id)
        conn.send("rooms", room_list())
        if not publisher:  # the first connection: the loop is running now
            publisher.append(asyncio.get_running_loop().create_task(
                _publish(server, changed, room_list)))

    @server.on_join
    def enter(conn: Connection, room: str) -> None:
        if room.startswith("staff-"):
            raise Deny("staff rooms are closed in the demo")
        # Runs before the join: the joiner learns the names of who is there, and they
        # learn the joiner's, before anyone's join_ack or new_member.
        present = {member: names.get(member, "?") for member in server.members(room)}
        present[conn.id] = names[conn.id]
        conn.send("names", json.dumps(present), room)
        server.broadcast(room, "names", json.dumps({conn.id: names[conn.id]}))
        changed.set()

    @server.on_leave
    def leave(conn: Connection, room: str) -> None:
        changed.set()

    @server.on_disconnect
    def depart(conn: Connection) -> None:
        names.pop(conn.id, None)


async def _publish(server: Server, changed: asyncio.Event,
                   room_list: Callable[[], str]) -> None:
    while True:
        await changed.wait()
        await asyncio.sleep(PUBLISH_PERIOD)  # joins and leaves meanwhile share one update
        changed.clear()
        server.broadcast_all("rooms", room_list())
