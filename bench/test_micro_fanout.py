"""Fan-out micro-benchmarks: compiled (roomer._fanout) vs pure (roomer._fanout_py).

One benchmark call = one loop turn: ``broadcast`` of one pre-framed message to N
receivers, then the end-of-turn flush (one write per receiver). The transports only
count, so this is the engine's own cost: the kernel ``send()`` a real receiver costs
(~2 µs on loopback, see NOTES) is not in these numbers. The closing table reports ns
per delivery. Run:  python -m pytest bench/ --benchmark-enable
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from implementations import implementations

from roomer import _codec_py


class CountingTransport:
    """A counting-only stand-in for a picows transport (underlying_transport.write)."""

    __slots__ = ("bytes", "underlying_transport", "writes")

    def __init__(self) -> None:
        self.writes = 0
        self.bytes = 0
        self.underlying_transport = self

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.bytes += len(data)


class TurnLoop:
    """Just enough of an event loop: call_soon queues, turn() runs what was queued.

    The engine schedules its end-of-turn flush with call_soon exactly as on a real loop;
    running it here leaves out the loop's own per-turn overhead (the same for both twins).
    """

    def __init__(self) -> None:
        self.ready: list[Any] = []

    def call_soon(self, callback: Any, *args: Any) -> None:
        self.ready.append((callback, args))

    def create_future(self) -> Any:  # not used by these benchmarks
        raise NotImplementedError

    def turn(self) -> None:
        ready, self.ready = self.ready, []
        for callback, args in ready:
            callback(*args)


def make_frame(total: int) -> bytes:
    """A real server frame (header + docs/protocol.md §2 body) of exactly ``total`` bytes."""
    src = "c0ffee42"  # short, so that a 64-byte frame still carries a payload
    overhead = len(_codec_py.encode_frame("lobby", "chat", "", src, b""))
    header_growth = 2 if total - 2 >= 126 else 0
    payload = b"x" * (total - overhead - header_growth)
    frame = _codec_py.encode_frame("lobby", "chat", "", src, payload)
    assert len(frame) == total, len(frame)
    return frame


def setup_room(impl: str, n: int) -> tuple[Any, TurnLoop, dict[int, Any], list[CountingTransport]]:
    module = importlib.import_module(impl)
    loop = TurnLoop()
    engine = module.Fanout(loop)
    members: dict[int, Any] = {}
    transports = []
    for i in range(n):
        peer = module.Peer(engine)
        tr = CountingTransport()
        peer.attach(tr)
        members[i] = peer
        transports.append(tr)
    return engine, loop, members, transports


@pytest.mark.parametrize("frame_size", [64, 1024])
@pytest.mark.parametrize("receivers", [100, 1000])
@pytest.mark.parametrize("impl", implementations("fanout"))
def test_fanout_one_frame_per_turn(
    benchmark: Any, impl: str, receivers: int, frame_size: int
) -> None:
    engine, loop, members, transports = setup_room(impl, receivers)
    frame = make_frame(frame_size)

    def one_turn() -> None:
        engine.broadcast(members, frame)
        loop.turn()

    benchmark.group = f"fanout 1/turn {receivers} x {frame_size} B"
    benchmark.extra_info["items"] = receivers
    benchmark(one_turn)
    assert all(tr.writes == transports[0].writes > 0 for tr in transports)
    assert transports[0].bytes == transports[0].writes * frame_size
    assert engine.stats["dropped"] == 0


@pytest.mark.parametrize("batch", [False, True], ids=["frames", "batches"])
@pytest.mark.parametrize("impl", implementations("fanout"))
def test_fanout_corked_burst(benchmark: Any, impl: str, batch: bool) -> None:
    """20 broadcasts in one turn to 1000 receivers: 20 deliveries per write (corking);
    with ``batches`` each receiver negotiated batch frames, so each write is one batch
    (docs/protocol.md §13): the cost of the copy that makes it."""
    receivers, per_turn, frame_size = 1000, 20, 64
    engine, loop, members, transports = setup_room(impl, receivers)
    for peer in members.values():
        peer.v2 = peer.batch = batch
    frame = make_frame(frame_size)

    def one_turn() -> None:
        for _ in range(per_turn):
            engine.broadcast(members, frame)
        loop.turn()

    benchmark.group = f"fanout {per_turn}/turn {receivers} x {frame_size} B"
    benchmark.extra_info["items"] = receivers * per_turn
    benchmark(one_turn)
    # A batch: a 4-byte length instead of each 2-byte header, plus its own 4-byte header
    # and kind byte.
    per_write = per_turn * frame_size + (per_turn * 2 + 5 if batch else 0)
    assert transports[0].bytes == transports[0].writes * per_write
    assert engine.stats["batches_out"] == (transports[0].writes * receivers if batch else 0)
    assert engine.stats["dropped"] == 0
