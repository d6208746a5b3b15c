"""A server app for the fault suite: a handler that blocks the server's loop (a badly
written handler, or one doing blocking I/O), as production sometimes has."""

from __future__ import annotations

from waiting import pace_blocking

import roomer


def setup(server: roomer.Server) -> None:
    @server.on("block")
    def block(conn: roomer.Connection, msg: roomer.Message) -> None:
        pace_blocking(float(msg.payload))  # blocks the whole server: the fault under test
        conn.send("blocked", msg.payload, msg.room)
