"""The server's v1 relay path as a micro-benchmark: one client message through the
router (decode, docs/protocol.md §9 checks, encode once) and the fan-out to a room's members, then
the end-of-turn flush. Members are roomer Connections on counting transports, so the
kernel's send() is left out; both codec/fan-out twins, whichever roomer.codec picks
(ROOMER_NO_EXTENSIONS=1 for the pure ones).

scripts/bench_before_after.sh runs this file against an earlier commit and this tree,
alternately, and prints the ratio: how v1's path changed (v2 must not
slow it down).
"""

from __future__ import annotations

import struct
import threading
from typing import Any

import pytest
from test_micro_fanout import CountingTransport, TurnLoop

import roomer
from roomer import fanout


class _Request:
    """What a Connection keeps of its upgrade request (nothing reads it here)."""

    path = b"/ws"


def _body(room: str, event: str, payload: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(f)) + f
                    for f in (room.encode(), event.encode(), b"", b"", payload))


def _server_with_room(members: int) -> tuple[Any, Any, Any]:
    """A server wired to a TurnLoop (no sockets), one sender and ``members`` others in
    room "lobby"; returns (server, sender, loop)."""
    server = roomer.Server(rate_limit=None, byte_limit=None, error_limit=None)
    loop = TurnLoop()
    server._loop = loop
    server._loop_thread = threading.get_ident()
    server._engine_obj = fanout.Fanout(loop)
    server.registry.engine = server._engine_obj
    conns = []
    for _ in range(members + 1):
        conn = roomer.Connection(server, _Request(), None)
        conn.attach(CountingTransport())
        server._accept(conn)
        server.registry.add_member(conn, "lobby")
        conns.append(conn)
    loop.turn()
    return server, conns[0], loop


@pytest.mark.parametrize("members", [100, 1000])
@pytest.mark.parametrize("size", [64, 1024])
def test_v1_relay_path(benchmark: Any, members: int, size: int) -> None:
    server, sender, loop = _server_with_room(members)
    data = _body("lobby", "chat", b"x" * size)
    dispatch = server._router.dispatch
    impl = "compiled" if roomer.COMPILED else "pure"
    benchmark.group = f"relay v1 {members} x {size} B"
    benchmark.name = f"test_v1_relay_path[{impl}]"
    benchmark.extra_info["items"] = members

    def one_relay() -> None:
        dispatch(sender, data)
        loop.turn()

    benchmark(one_relay)
    assert server.counters["relayed"] >= 1
    assert server.stats()["deliveries"] >= members
