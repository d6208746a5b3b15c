"""A server app for the multi-process scale-out tests (tests/test_scaleout_procs.py): handlers
that let a client make the server call its API, so a test over real sockets can drive
``broadcast``, ``broadcast_all``, ``send_to`` and ``members`` on any node.

Every handler takes a JSON object as its payload and answers the sender with an event of the
same name (room ``root`` unless said otherwise):

- ``api_broadcast`` ``{"room", "event", "payload", "exclude"?}``: ``server.broadcast``;
  answers the local receiver count.
- ``api_broadcast_all`` ``{"event", "payload"}``: ``server.broadcast_all``; the local count.
- ``api_send_to`` ``{"id", "event", "payload"}``: ``server.send_to``; ``true``/``false``.
- ``api_members`` ``{"room"}``: the JSON list ``server.members(room)``.
- ``api_burst`` ``{"room", "event", "count"}``: ``count`` broadcasts in one call, payloads
  ``0``, ``1``, ... (one publisher's order across nodes).
- ``api_pid``: this process's pid (which ``--workers`` worker holds the client).
- ``api_nodes``: how many other nodes this node knows alive.
- ``api_kick`` ``{"id"}``: ``server.kick(id)``; ``true``/``false``.
- ``api_rooms``: the JSON list ``server.rooms()``.

And an ``on_join`` hook: joining a room named ``hooked-...`` first sends the joiner
``on_join`` with this process's pid (which node ran the hook).
"""

from __future__ import annotations

import json
import os
from typing import Any

import roomer


def _args(msg: roomer.Message) -> dict[str, Any]:
    args = json.loads(msg.payload or b"{}")
    assert isinstance(args, dict)
    return args


def setup(server: roomer.Server) -> None:
    @server.on("api_broadcast")
    def broadcast(conn: roomer.Connection, msg: roomer.Message) -> None:
        args = _args(msg)
        sent = server.broadcast(args["room"], args["event"], args["payload"],
                                exclude=args.get("exclude"))
        conn.send("api_broadcast", str(sent.result()))

    @server.on("api_broadcast_all")
    def broadcast_all(conn: roomer.Connection, msg: roomer.Message) -> None:
        args = _args(msg)
        sent = server.broadcast_all(args["event"], args["payload"])
        conn.send("api_broadcast_all", str(sent.result()))

    @server.on("api_send_to")
    def send_to(conn: roomer.Connection, msg: roomer.Message) -> None:
        args = _args(msg)
        ok = server.send_to(args["id"], args["event"], args["payload"])
        conn.send("api_send_to", json.dumps(ok))

    @server.on("api_members")
    def members(conn: roomer.Connection, msg: roomer.Message) -> None:
        room = _args(msg)["room"]
        conn.send("api_members", json.dumps(server.members(room)), room)

    @server.on("api_burst")
    def burst(conn: roomer.Connection, msg: roomer.Message) -> None:
        args = _args(msg)
        for i in range(int(args["count"])):
            server.broadcast(args["room"], args["event"], str(i))
        conn.send("api_burst", str(args["count"]))

    @server.on("api_pid")
    def pid(conn: roomer.Connection, msg: roomer.Message) -> None:
        conn.send("api_pid", str(os.getpid()))

    @server.on("api_nodes")
    def nodes(conn: roomer.Connection, msg: roomer.Message) -> None:
        conn.send("api_nodes", str(len(server.stats()["backplane"]["nodes"])))

    @server.on("api_kick")
    def kick(conn: roomer.Connection, msg: roomer.Message) -> None:
        conn.send("api_kick", json.dumps(server.kick(_args(msg)["id"])))

    @server.on("api_rooms")
    def rooms(conn: roomer.Connection, msg: roomer.Message) -> None:
        conn.send("api_rooms", json.dumps(sorted(server.rooms())))

    @server.on_join
    def hooked(conn: roomer.Connection, room: str) -> None:
        if room.startswith("hooked-"):
            conn.send("on_join", str(os.getpid()), room)
