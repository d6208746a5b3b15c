"""The demo lobby that ``roomer serve`` runs when no app is named.

It shows the pieces an app uses: a handler that answers, a join hook that refuses,
and a broadcast from outside any handler (a timer). Open http://127.0.0.1:8080/.
"""

from __future__ import annotations

import asyncio
import json
import time
from importlib import resources

from .errors import Deny
from .message import Message
from .server import Connection, Server

__all__ = ["setup"]

CLOCK_PERIOD = 10.0


def setup(server: Server) -> None:
    """Register the demo's page, handlers and hooks on ``server``."""
    page = resources.files("roomer").joinpath("static/demo.html").read_bytes()
    server.routes["/"] = ("text/html; charset=utf-8", page)

    @server.on("who")
    def who(conn: Connection, msg: Message) -> None:
        members = server.members(msg.room)
        conn.send("who", json.dumps({"room": msg.room, "members": members}), msg.room)

    @server.on_join
    def guard(conn: Connection, room: str) -> None:
        if room.startswith("staff-"):
            raise Deny("staff rooms are closed in the demo")

    clock: list[asyncio.Task[None]] = []

    @server.on_connect
    def start_clock(conn: Connection) -> None:
        if not clock:
            clock.append(asyncio.get_running_loop().create_task(_clock(server)))


async def _clock(server: Server) -> None:
    while True:
        await asyncio.sleep(CLOCK_PERIOD)
        server.broadcast("lobby", "clock", time.strftime("%H:%M:%S"))
