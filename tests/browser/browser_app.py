"""The app the browser-client tests run under ``roomer serve browser_app:setup``."""

from __future__ import annotations

import roomer

__all__ = ["setup"]


def setup(server: roomer.Server) -> None:
    @server.on_join
    def refuse_closed(conn: roomer.Connection, room: str) -> None:
        if room.startswith("closed-"):
            raise roomer.Deny("this room is closed")

    @server.on("ping")
    def ping(conn: roomer.Connection, msg: roomer.Message) -> None:
        conn.send("pong", b"", msg.room)

    @server.on("drop-me")
    def drop_me(conn: roomer.Connection, msg: roomer.Message) -> None:
        # The connection ends as a network failure would end it (1011, not a policy
        # close), so the client reconnects.
        conn.abort(1011, "dropped on request")

    @server.on("kick-me")
    def kick_me(conn: roomer.Connection, msg: roomer.Message) -> None:
        conn.close(1008, "kicked on request")
