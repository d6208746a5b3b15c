"""The app the batch-frame browser tests run under ``roomer serve browser_batch_app:setup``:
browser_v2_app's handlers (asks, ``drop-me``...), plus ``burst``: a member's message
``burst`` with payload n makes the server relay n numbered ``seq`` messages from that
member to the room's others, in one synchronous loop, so each receiver's outbox gets them
in one turn and writes them in one flush (docs/protocol.md §13: as one batch to a client
that negotiated them)."""

from __future__ import annotations

from typing import Any

from browser_v2_app import setup as setup_v2

import roomer

__all__ = ["setup"]


def setup(server: roomer.Server) -> None:
    setup_v2(server)

    @server.on("burst")
    def burst(conn: Any, msg: roomer.Message) -> None:
        for i in range(int(msg.payload)):
            conn.send_to_room(msg.room, "seq", str(i))
