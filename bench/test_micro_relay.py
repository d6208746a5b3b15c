"""The router's v1 relay path as a micro-benchmark: one client message through the
router (decode, docs/protocol.md §9 checks, encode once) and the fan-out to a room's members, then
the end-of-turn flush. A relay read from a picows socket takes the compiled relay path
instead (docs/design.md §2) unless something holds its connection; `roomer bench --game`
measures that one end to end. Members are roomer Connections on counting transports, so the
kernel's send() is left out; both codec/fan-out twins, whichever roomer.codec picks
(ROOMER_NO_EXTENSIONS=1 for the pure ones).

scripts/bench_before_after.sh runs this file against an earlier commit and this tree,
alternately, and prints the ratio: how v1's path changed (v2 must not
slow it down).
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from test_micro_fanout import CountingTransport, TurnLoop

import roomer
from roomer import fanout
from roomer.config import Config
from roomer.connection import Connection
from roomer.core import Core


class _Member(Connection):
    """A connection with no socket behind it: what roomer asks of one is ignored."""

    def shut(self, code: int, reason: str, graceful: bool) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def ping(self) -> None:
        pass


def _body(room: str, event: str, payload: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(f)) + f
                    for f in (room.encode(), event.encode(), b"", b"", payload))


def _core_with_room(members: int) -> tuple[Core, Connection, TurnLoop]:
    """A server core wired to a TurnLoop (no sockets), one sender and ``members`` others
    in room "lobby"; returns (core, sender, loop)."""
    core = Core(Config(rate_limit=None, byte_limit=None, error_limit=None))
    loop = TurnLoop()
    core.start(loop, fanout.Fanout(loop))  # type: ignore[arg-type]
    conns = []
    for _ in range(members + 1):
        conn = _Member(core, None, None, False)
        conn.attach(CountingTransport())
        core.lifecycle.connected(conn)
        core.default.registry.add_member(conn, "lobby")
        conns.append(conn)
    loop.turn()
    return core, conns[0], loop


@pytest.mark.parametrize("members", [100, 1000])
@pytest.mark.parametrize("size", [64, 1024])
def test_v1_relay_path(benchmark: Any, members: int, size: int) -> None:
    core, sender, loop = _core_with_room(members)
    data = _body("lobby", "chat", b"x" * size)
    dispatch = core.router.dispatch
    impl = "compiled" if roomer.COMPILED else "pure"
    benchmark.group = f"relay v1 {members} x {size} B"
    benchmark.name = f"test_v1_relay_path[{impl}]"
    benchmark.extra_info["items"] = members

    def one_relay() -> None:
        dispatch(sender, data)
        loop.turn()

    benchmark(one_relay)
    assert core.metrics.counters["relayed"] >= 1
    assert core.engine.stats["deliveries"] >= members
