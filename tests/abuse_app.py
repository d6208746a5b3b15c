"""A server app for the abuse suite: the README's handler pattern, which sends from a
handler (``send_to_room`` to the others, ``send`` back to the sender)."""

from __future__ import annotations

import roomer


def setup(server: roomer.Server) -> None:
    @server.on("shout")
    def shout(conn: roomer.Connection, msg: roomer.Message) -> None:
        conn.send_to_room(msg.room, "shouted", msg.payload)
        conn.send("shouted", "you shouted", msg.room)
