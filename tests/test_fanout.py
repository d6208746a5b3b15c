"""The fan-out engine (docs/design.md): corked outboxes, bounds, sync mode, both twins.

``fanout_impl`` (tests/conftest.py) runs a test against roomer._fanout_py and
roomer._fanout. Peers are attached to fake transports that record every write, so
"one write per receiver per loop turn" can be counted exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib
import os
import pickle
import random
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from waiting import scaled, suspend

from roomer import _codec_py

PURE_ONLY = os.environ.get("ROOMER_NO_EXTENSIONS") == "1"
needs_compiled = pytest.mark.skipif(PURE_ONLY, reason="ROOMER_NO_EXTENSIONS=1 forces pure")


class FakeTransport:
    """Stands in for a picows WSTransport: ``underlying_transport.write`` records bytes."""

    def __init__(self, on_write: Any = None) -> None:
        self.writes: list[bytes] = []
        self.underlying_transport = self
        self.on_write = on_write
        self.fail = False  # True: write raises, as a transport closed under us does

    def write(self, data: bytes) -> None:
        assert isinstance(data, bytes)
        if self.fail:
            raise RuntimeError("unable to perform operation; the handler is closed")
        self.writes.append(data)
        if self.on_write is not None:
            self.on_write(data)

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)


def frame(i: int, size: int = 0) -> bytes:
    """A distinct, real server frame (docs/protocol.md §2 body behind a binary frame header)."""
    return _codec_py.encode_frame("room", "ev", "", f"src{i:06d}", b"p" * size)


def make_peers(impl: Any, engine: Any, n: int) -> tuple[dict[str, Any], list[FakeTransport]]:
    members: dict[str, Any] = {}
    transports = []
    for i in range(n):
        peer = impl.Peer(engine)
        tr = FakeTransport()
        peer.attach(tr)
        members[f"c{i}"] = peer
        transports.append(tr)
    return members, transports


async def end_turn() -> None:
    """Let the loop run the flush scheduled with call_soon during this turn."""
    await suspend()


# --------------------------------------------------------------------------- basics


async def test_encode_once_every_receiver_gets_identical_bytes(fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop())
    members, transports = make_peers(fanout_impl, engine, 5)
    data = frame(1, 100)
    assert engine.broadcast(members, data) == 5
    assert all(tr.writes == [] for tr in transports)  # corked until the end of the turn
    await end_turn()
    for tr in transports:
        assert tr.writes == [data]
    assert engine.stats == {"deliveries": 5, "dropped": 0, "writes": 5, "bytes_out": 5 * len(data),
                            "batches_out": 0, "read_buffer_trims": 0}


async def test_exclude(fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop())
    members, transports = make_peers(fanout_impl, engine, 4)
    sender = members["c2"]
    assert engine.broadcast(members, frame(1), sender) == 3
    assert engine.broadcast(members, frame(2), exclude=sender) == 3
    assert engine.broadcast(members, frame(3), object()) == 4  # not a member: nobody excluded
    await end_turn()
    for i, tr in enumerate(transports):
        expected = [frame(3)] if i == 2 else [frame(1) + frame(2) + frame(3)]
        assert tr.writes == expected


async def test_empty_members_and_frame(fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop())
    assert engine.broadcast({}, frame(1)) == 0
    members, transports = make_peers(fanout_impl, engine, 2)
    assert engine.broadcast(members, b"") == 2
    await end_turn()
    assert engine.stats["deliveries"] == 2
    assert all(tr.data == b"" for tr in transports)


async def test_type_checks(fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop())
    members, _ = make_peers(fanout_impl, engine, 1)
    for bad in (bytearray(b"x"), memoryview(b"x"), "x", None):
        with pytest.raises(TypeError):
            engine.broadcast(members, bad)
        with pytest.raises(TypeError):
            members["c0"].send_frame(bad)
    with pytest.raises(TypeError):
        fanout_impl.Peer(None)
    for kwargs in ({"outbox_limit": 0}, {"flush_threshold": 0}, {"outbox_limit": -1}):
        with pytest.raises(ValueError):
            fanout_impl.Fanout(asyncio.get_running_loop(), **kwargs)


async def test_send_frame_to_one_peer(fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop())
    members, transports = make_peers(fanout_impl, engine, 2)
    assert members["c0"].send_frame(frame(1)) is True
    assert members["c0"].send_frame(frame(2)) is True
    assert members["c0"].pending == len(frame(1)) + len(frame(2))
    await end_turn()
    assert transports[0].writes == [frame(1) + frame(2)]
    assert transports[1].writes == []
    assert members["c0"].pending == 0


async def test_unattached_peer_queues_until_attach(fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop())
    peer = fanout_impl.Peer(engine)
    assert peer.transport is None
    assert engine.broadcast({"a": peer}, frame(1)) == 1
    await end_turn()
    assert peer.pending == len(frame(1))  # nowhere to write yet
    tr = FakeTransport()
    peer.attach(tr)
    assert tr.writes == [frame(1)]  # attach hands over what was queued
    assert peer.transport is tr
    peer.send_frame(frame(2))
    await end_turn()
    assert tr.writes == [frame(1), frame(2)]


# --------------------------------------------------------------------------- corking


async def test_corking_one_write_per_receiver_per_turn(fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop())
    members, transports = make_peers(fanout_impl, engine, 10)
    frames = [frame(i, i % 7) for i in range(200)]
    for f in frames:
        assert engine.broadcast(members, f) == 10
    assert all(tr.writes == [] for tr in transports)
    assert members["c0"].pending == sum(map(len, frames))
    await end_turn()
    expected = b"".join(frames)  # order preserved
    for tr in transports:
        assert tr.writes == [expected]
    assert engine.stats["writes"] == 10
    assert engine.stats["deliveries"] == 2000
    assert engine.stats["bytes_out"] == 10 * len(expected)
    # the next turn is corked separately
    engine.broadcast(members, frames[0])
    engine.broadcast(members, frames[1])
    await end_turn()
    for tr in transports:
        assert tr.writes == [expected, frames[0] + frames[1]]
    # a turn with nothing queued writes nothing
    await end_turn()
    assert engine.stats["writes"] == 20


async def test_explicit_flushes(fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop())
    members, transports = make_peers(fanout_impl, engine, 3)
    engine.broadcast(members, frame(1))
    members["c0"].flush()
    assert transports[0].writes == [frame(1)]
    assert transports[1].writes == []
    engine.flush()
    assert all(tr.writes == [frame(1)] for tr in transports)
    await end_turn()  # the scheduled flush finds nothing left
    assert all(tr.writes == [frame(1)] for tr in transports)
    assert engine.stats["writes"] == 3


async def test_flush_threshold_forces_an_earlier_write(fanout_impl: Any) -> None:
    f = frame(0, 20)
    engine = fanout_impl.Fanout(asyncio.get_running_loop(), flush_threshold=3 * len(f))
    members, transports = make_peers(fanout_impl, engine, 2)
    engine.broadcast(members, f)
    engine.broadcast(members, f)
    assert transports[0].writes == []
    engine.broadcast(members, f)  # reaches the threshold: written at once
    assert transports[0].writes == [f * 3]
    assert members["c0"].pending == 0
    engine.broadcast(members, f)
    assert transports[0].writes == [f * 3]
    await end_turn()
    for tr in transports:
        assert tr.writes == [f * 3, f]


async def test_big_frames_and_buffer_reuse(fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop(), outbox_limit=1 << 22)
    members, transports = make_peers(fanout_impl, engine, 3)
    big = frame(1, 200_000)  # past the default 64 KiB threshold: written at once
    engine.broadcast(members, big)
    assert all(tr.writes == [big] for tr in transports)
    rng = random.Random(7)
    small = [frame(i, rng.randrange(0, 300)) for i in range(300)]
    for f in small:
        engine.broadcast(members, f)
    await end_turn()
    for tr in transports:
        assert tr.data == big + b"".join(small)


# --------------------------------------------------------------------------- async bounds


async def test_async_outbox_is_bounded_and_drops_are_counted(fanout_impl: Any) -> None:
    frames = [frame(i, 70) for i in range(10, 38)]  # all the same size
    f = frames[0]
    limit = 10 * len(f)
    # healthy receivers are written every 4 frames, so only the paused one fills up
    engine = fanout_impl.Fanout(
        asyncio.get_running_loop(), outbox_limit=limit, flush_threshold=4 * len(f)
    )
    members, transports = make_peers(fanout_impl, engine, 3)
    slow = members["c1"]
    slow.pause_writing()
    assert slow.writing_paused
    sent = [engine.broadcast(members, x) for x in frames[:25]]
    assert sent == [3] * 10 + [2] * 15
    assert slow.pending == limit  # never past the limit
    assert slow.dropped == 15
    assert members["c0"].dropped == 0
    assert engine.stats["dropped"] == 15
    assert engine.stats["deliveries"] == 25 + 25 + 10
    await end_turn()
    assert transports[1].writes == []  # transport "full": nothing written
    assert slow.pending <= limit
    for i in (0, 2):
        assert transports[i].data == b"".join(frames[:25])
        assert len(transports[i].writes) == 7  # 6 threshold writes + the end of the turn
    # more turns while paused: still bounded
    for x in frames[25:28]:
        engine.broadcast(members, x)
        await end_turn()
    assert slow.pending <= limit
    assert slow.dropped == 18
    assert engine.stats["dropped"] == 18
    slow.resume_writing()  # flushes at once
    assert not slow.writing_paused
    assert transports[1].writes == [b"".join(frames[:10])]
    assert slow.pending == 0
    assert engine.broadcast(members, f) == 3
    await end_turn()
    assert transports[1].writes[-1] == f
    assert engine.stats["dropped"] == 18


async def test_async_limit_below_threshold_drops_within_one_turn(fanout_impl: Any) -> None:
    """Documented consequence of corking: with outbox_limit below flush_threshold, one
    turn's burst can overflow even a healthy receiver (the server keeps limit >> threshold)."""
    f = frame(0, 70)
    engine = fanout_impl.Fanout(
        asyncio.get_running_loop(), outbox_limit=5 * len(f), flush_threshold=64 * 1024
    )
    members, transports = make_peers(fanout_impl, engine, 1)
    assert [engine.broadcast(members, f) for _ in range(7)] == [1] * 5 + [0, 0]
    await end_turn()
    assert transports[0].writes == [f * 5]
    assert members["c0"].dropped == 2


async def test_async_paused_peer_is_not_flushed_by_threshold(fanout_impl: Any) -> None:
    f = frame(0, 50)
    engine = fanout_impl.Fanout(
        asyncio.get_running_loop(), outbox_limit=100 * len(f), flush_threshold=2 * len(f)
    )
    members, transports = make_peers(fanout_impl, engine, 1)
    peer = members["c0"]
    peer.pause_writing()
    for _ in range(5):
        engine.broadcast(members, f)
    assert transports[0].writes == []
    assert peer.pending == 5 * len(f)
    peer.resume_writing()
    assert transports[0].writes == [f * 5]


async def test_frame_larger_than_limit_goes_only_into_an_empty_outbox(fanout_impl: Any) -> None:
    """An empty outbox takes any one message; past the limit behind others it is dropped."""
    big = frame(1, 120)  # over the 100-byte limit, under the 200-byte hard limit with another
    engine = fanout_impl.Fanout(asyncio.get_running_loop(), outbox_limit=100)
    members, transports = make_peers(fanout_impl, engine, 2)
    members["c1"].send_frame(frame(0))
    assert engine.broadcast(members, big) == 1
    assert members["c0"].pending == len(big)  # over the limit, but it was empty
    assert members["c1"].dropped == 1
    assert engine.broadcast(members, frame(2)) == 1  # now c0 is the one over
    assert members["c0"].dropped == 1
    assert engine.stats["dropped"] == 2
    await end_turn()
    assert transports[0].writes == [big]
    assert transports[1].writes == [frame(0) + frame(2)]


async def test_disconnect_slow_calls_on_overflow_once_at_end_of_turn(fanout_impl: Any) -> None:
    calls: list[Any] = []
    f = frame(0, 40)
    engine = fanout_impl.Fanout(
        asyncio.get_running_loop(),
        outbox_limit=3 * len(f),
        flush_threshold=len(f),
        disconnect_slow=True,
        on_overflow=calls.append,
    )
    members, transports = make_peers(fanout_impl, engine, 3)
    slow_a, slow_b = members["c0"], members["c2"]
    slow_a.pause_writing()
    slow_b.pause_writing()
    for _ in range(10):
        engine.broadcast(members, f)
    assert calls == []  # never from inside broadcast
    assert slow_a.dropped == slow_b.dropped == 7
    assert slow_a.overflowed and not members["c1"].overflowed
    await end_turn()
    assert len(calls) == 2 and calls[0] is slow_a and calls[1] is slow_b
    # Once overflowed a receiver takes nothing more (what it misses is counted) and is
    # handed over only once: the server disconnects it once, and counts it once.
    engine.broadcast(members, f)
    await end_turn()
    assert len(calls) == 2
    assert slow_a.dropped == 8 and slow_a.pending == 3 * len(f)
    assert transports[1].data == f * 11


async def test_without_disconnect_slow_on_overflow_is_not_called(fanout_impl: Any) -> None:
    calls: list[Any] = []
    engine = fanout_impl.Fanout(
        asyncio.get_running_loop(), outbox_limit=100, on_overflow=calls.append
    )
    members, _ = make_peers(fanout_impl, engine, 1)
    members["c0"].pause_writing()
    for _ in range(10):
        engine.broadcast(members, frame(0, 30))
    await end_turn()
    assert calls == []
    assert members["c0"].dropped > 0


async def test_on_overflow_may_close_the_peer(fanout_impl: Any) -> None:
    """The server's on_overflow closes the connection: close_outbox from the callback."""
    engine_box: list[Any] = []

    def on_overflow(peer: Any) -> None:
        peer.close_outbox()
        del members[next(k for k, v in members.items() if v is peer)]

    engine = fanout_impl.Fanout(
        asyncio.get_running_loop(),
        outbox_limit=200,
        flush_threshold=100,
        disconnect_slow=True,
        on_overflow=on_overflow,
    )
    engine_box.append(engine)
    members, transports = make_peers(fanout_impl, engine, 2)
    members["c0"].pause_writing()
    for i in range(10):
        engine.broadcast(members, frame(i, 30))
    await end_turn()
    assert list(members) == ["c1"]
    written = transports[0].data
    assert written and len(written) <= 200  # what fitted was handed over at close
    assert engine.broadcast(members, frame(99)) == 1


# --------------------------------------------------------------------------- control frames


async def test_control_frames_pass_the_soft_limit_but_not_the_hard_one(fanout_impl: Any) -> None:
    """Acks, presence and errors are never dropped silently: past outbox_limit they are
    still queued, and a receiver that takes it past the hard limit (2x) is cut off."""
    f = frame(0, 70)
    calls: list[Any] = []
    engine = fanout_impl.Fanout(asyncio.get_running_loop(), outbox_limit=10 * len(f),
                                flush_threshold=len(f), on_overflow=calls.append)
    assert engine.hard_limit == 20 * len(f)
    members, transports = make_peers(fanout_impl, engine, 2)
    slow = members["c0"]
    slow.pause_writing()
    assert [engine.broadcast(members, f) for _ in range(11)] == [2] * 10 + [1]
    assert slow.dropped == 1  # a data frame past the soft limit
    assert [slow.send_control(f) for _ in range(10)] == [True] * 10
    assert engine.broadcast_control(members, f) == 1  # the 21st frame: past the hard limit
    assert slow.overflowed and slow.pending == 20 * len(f)
    assert slow.send_control(f) is False and slow.send_frame(f) is False
    assert slow.dropped == 4
    await end_turn()
    assert calls == [slow]  # once, at the end of the turn, whatever the mode or policy
    assert transports[1].data == f * 12


async def test_a_control_frame_goes_into_an_empty_outbox_whatever_its_size(
        fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop(), outbox_limit=100)
    members, _ = make_peers(fanout_impl, engine, 1)
    members["c0"].pause_writing()
    huge = frame(1, 1000)
    assert members["c0"].send_control(huge) is True
    assert members["c0"].send_control(frame(2)) is False  # behind it: past the hard limit
    assert members["c0"].overflowed


async def test_sync_hard_limit_cuts_off_instead_of_growing(fanout_impl: Any) -> None:
    f = frame(0, 70)
    calls: list[Any] = []
    engine = fanout_impl.Fanout(asyncio.get_running_loop(), outbox_limit=10 * len(f),
                                flush_threshold=len(f), sync=True, on_overflow=calls.append)
    members, _ = make_peers(fanout_impl, engine, 2)
    slow = members["c1"]
    slow.pause_writing()
    sent = [engine.broadcast(members, f) for _ in range(25)]
    assert sent == [2] * 20 + [1] * 5
    assert slow.pending == 20 * len(f) and slow.overflowed
    await end_turn()
    assert calls == [slow]


async def test_take_grown_names_each_peer_taken_past_the_limit_once(fanout_impl: Any) -> None:
    f = frame(0, 70)
    engine = fanout_impl.Fanout(asyncio.get_running_loop(), outbox_limit=3 * len(f),
                                flush_threshold=len(f), sync=True)
    members, _ = make_peers(fanout_impl, engine, 3)
    members["c0"].pause_writing()
    members["c2"].pause_writing()
    for _ in range(3):
        engine.broadcast(members, f)
    assert engine.take_grown() == []  # at the limit, not past it
    engine.broadcast(members, f)
    engine.broadcast(members, f)
    assert engine.take_grown() == [members["c0"], members["c2"]]
    assert engine.take_grown() == []
    members["c2"].send_control(f)
    assert engine.take_grown() == [members["c2"]]
    members["c2"].send_control(f)
    await end_turn()
    assert engine.take_grown() == []  # a flush forgets what nobody took
    async_engine = fanout_impl.Fanout(asyncio.get_running_loop(), outbox_limit=10)
    peers, _ = make_peers(fanout_impl, async_engine, 1)
    peers["c0"].send_control(frame(1, 50))
    peers["c0"].send_control(frame(1, 50))
    assert async_engine.take_grown() == []  # only sync mode waits


async def test_discard_outbox_drops_without_writing(fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop(), sync=True, outbox_limit=100)
    members, transports = make_peers(fanout_impl, engine, 1)
    peer = members["c0"]
    peer.pause_writing()
    peer.send_frame(frame(1, 100))
    peer.send_frame(frame(2, 10))
    assert peer.over_since > 0
    waiter = engine.wait_drain()
    peer.discard_outbox()
    assert waiter.done()  # a sync broadcaster waiting on it is released
    assert peer.pending == 0 and peer.closing and peer.over_since == 0
    assert peer.send_frame(frame(3)) is False and peer.send_control(frame(3)) is False
    peer.resume_writing()
    await end_turn()
    assert transports[0].writes == []


async def test_argument_contract_is_the_same_in_both_twins(fanout_impl: Any) -> None:
    """Exactly a dict and exactly bytes; the TypeError text is Cython's in both twins."""

    class Members(dict):  # type: ignore[type-arg]
        pass

    class Frame(bytes):
        pass

    engine = fanout_impl.Fanout(asyncio.get_running_loop())
    members, _ = make_peers(fanout_impl, engine, 1)
    peer = members["c0"]
    expect = "Argument 'members' has incorrect type (expected dict, got Members)"
    for call in (engine.broadcast, engine.broadcast_control, engine.over_limit):
        with pytest.raises(TypeError) as info:
            call(Members(members), frame(1)) if call is not engine.over_limit else call(
                Members(members))
        assert str(info.value) == expect
    for bad in (Frame(frame(1)), bytearray(frame(1)), memoryview(frame(1)), "x", None):
        for call in (peer.send_frame, peer.send_control,
                     lambda f: engine.broadcast(members, f),
                     lambda f: engine.broadcast_control(members, f)):
            with pytest.raises(TypeError) as info:
                call(bad)
            assert str(info.value) == ("Argument 'frame' has incorrect type (expected bytes, "
                                       f"got {type(bad).__name__})")
    for kwargs in ({"outbox_limit": 1e6}, {"flush_threshold": 2.5}, {"outbox_limit": "1"}):
        with pytest.raises(TypeError):
            fanout_impl.Fanout(asyncio.get_running_loop(), **kwargs)


async def test_broadcast_mixed_gives_each_peer_its_versions_frame(fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop())
    members, transports = make_peers(fanout_impl, engine, 4)
    members["c1"].v2 = True
    members["c3"].v2 = True
    one, two = frame(1), frame(2, 9)
    assert engine.broadcast_mixed(members, one, two, members["c0"]) == 3
    assert engine.broadcast_mixed(members, one, two, control=True) == 4
    await end_turn()
    assert [tr.data for tr in transports] == [one, two + two, one + one, two + two]
    with pytest.raises(TypeError) as info:
        engine.broadcast_mixed(members, one, bytearray(two))
    assert str(info.value) == ("Argument 'frame_v2' has incorrect type (expected bytes, "
                               "got bytearray)")


# --------------------------------------------------------------------------- sync mode


async def test_sync_mode_never_drops_and_reports_the_slow_peer(fanout_impl: Any) -> None:
    f = frame(0, 70)
    limit = 10 * len(f)
    engine = fanout_impl.Fanout(
        asyncio.get_running_loop(), outbox_limit=limit, flush_threshold=4 * len(f), sync=True
    )
    assert engine.sync is True
    members, transports = make_peers(fanout_impl, engine, 3)
    slow = members["c1"]
    slow.pause_writing()
    assert engine.over_limit(members) is None
    frames = [frame(i, 70) for i in range(18)]  # past the limit, under the hard limit
    assert [engine.broadcast(members, x) for x in frames] == [3] * 18
    assert engine.stats["dropped"] == 0
    assert slow.dropped == 0
    assert slow.pending == 18 * len(f)  # past the limit: sync mode waits, never drops
    assert engine.over_limit(members) is slow
    assert engine.over_limit(members, slow) is None
    assert engine.over_limit(members, exclude=members["c0"]) is slow
    assert slow.over_since > 0
    assert members["c0"].over_since == 0
    waiter = engine.wait_drain()
    await end_turn()
    assert not waiter.done()
    assert transports[1].writes == []
    slow.resume_writing()
    await asyncio.wait_for(waiter, scaled(1))
    assert slow.over_since == 0
    assert engine.over_limit(members) is None
    for tr in transports:
        assert tr.data == b"".join(frames)
    assert transports[1].writes == [b"".join(frames)]  # the paused one: a single write


async def test_sync_wait_drain_resolves_on_flush(fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop(), outbox_limit=300, sync=True)
    members, transports = make_peers(fanout_impl, engine, 2)
    # not paused, just more than the limit in one turn (below the flush threshold)
    for i in range(10):
        engine.broadcast(members, frame(i, 20))
    assert engine.over_limit(members) is members["c0"]
    waiters = [engine.wait_drain(), engine.wait_drain()]
    await asyncio.wait_for(asyncio.gather(*waiters), scaled(1))  # the end-of-turn flush drains
    assert engine.over_limit(members) is None
    assert transports[0].data == b"".join(frame(i, 20) for i in range(10))


async def test_sync_broadcast_loop_like_the_server(fanout_impl: Any) -> None:
    """The server's sync broadcast: wait while a member is over, then broadcast."""
    loop = asyncio.get_running_loop()
    engine = fanout_impl.Fanout(loop, outbox_limit=300, sync=True)
    members, transports = make_peers(fanout_impl, engine, 3)
    slow = members["c2"]
    slow.pause_writing()
    frames = [frame(i, 40) for i in range(30)]

    async def producer() -> None:
        for f in frames:
            while engine.over_limit(members) is not None:
                await engine.wait_drain()
            engine.broadcast(members, f)

    async def consumer() -> None:
        while (
            slow.pending
            or not transports[2].writes
            or len(transports[2].data) < sum(map(len, frames))
        ):
            await suspend()  # a slow transport: writable for one turn at a time
            slow.resume_writing()
            slow.pause_writing()

    await asyncio.wait_for(asyncio.gather(producer(), consumer()), scaled(5))
    await end_turn()
    for tr in transports:
        assert tr.data == b"".join(frames)
    assert engine.stats["dropped"] == 0


async def test_sync_close_outbox_wakes_waiters(fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop(), outbox_limit=50, sync=True)
    members, transports = make_peers(fanout_impl, engine, 1)
    peer = members["c0"]
    peer.pause_writing()
    engine.broadcast(members, frame(1, 100))
    assert peer.over_since > 0
    waiter = engine.wait_drain()
    peer.close_outbox()
    await asyncio.wait_for(waiter, scaled(1))
    assert peer.over_since == 0
    assert transports[0].writes == [frame(1, 100)]


# --------------------------------------------------------------------------- close_outbox


async def test_close_outbox_flushes_even_when_paused_and_refuses_later(fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop())
    members, transports = make_peers(fanout_impl, engine, 2)
    peer = members["c0"]
    peer.pause_writing()
    engine.broadcast(members, frame(1))
    engine.broadcast(members, frame(2))
    assert transports[0].writes == []
    peer.close_outbox()
    assert transports[0].writes == [frame(1) + frame(2)]
    assert peer.closing is True
    assert peer.pending == 0
    assert peer.send_frame(frame(3)) is False
    assert engine.broadcast(members, frame(4)) == 1  # the closing peer is not counted
    await end_turn()
    assert transports[0].writes == [frame(1) + frame(2)]
    assert transports[1].writes == [frame(1) + frame(2) + frame(4)]
    assert peer.dropped == 0  # refused, not dropped: the connection is going away
    peer.close_outbox()  # idempotent
    assert transports[0].writes == [frame(1) + frame(2)]


# --------------------------------------------------------------------------- membership


async def test_membership_changes_between_broadcasts(fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop())
    members, transports = make_peers(fanout_impl, engine, 3)
    engine.broadcast(members, frame(1))
    leaving = members.pop("c1")
    engine.broadcast(members, frame(2))
    newcomer = fanout_impl.Peer(engine)
    new_tr = FakeTransport()
    newcomer.attach(new_tr)
    members["new"] = newcomer
    engine.broadcast(members, frame(3))
    members["c1"] = leaving  # re-joins, now after "new" in dict order
    engine.broadcast(members, frame(4))
    closing = members["c2"]
    closing.close_outbox()  # mid-sequence, still in the dict
    assert engine.broadcast(members, frame(5)) == 3
    await end_turn()
    assert transports[0].writes == [b"".join(frame(i) for i in (1, 2, 3, 4, 5))]
    assert transports[1].writes == [frame(1) + frame(4) + frame(5)]
    assert transports[2].writes == [b"".join(frame(i) for i in (1, 2, 3, 4))]
    assert new_tr.writes == [frame(3) + frame(4) + frame(5)]


async def test_peer_removed_and_dropped_still_flushes_queued(fanout_impl: Any) -> None:
    """A peer taken out of the room keeps what was already queued to it this turn."""
    engine = fanout_impl.Fanout(asyncio.get_running_loop())
    members, transports = make_peers(fanout_impl, engine, 2)
    engine.broadcast(members, frame(1))
    peer = members.pop("c0")
    del peer  # only the engine's dirty list holds it now
    await end_turn()
    assert transports[0].writes == [frame(1)]


@pytest.mark.parametrize("position", ["first", "middle", "last"])
@pytest.mark.parametrize(
    "intruder", [None, "a string", 42, object(), b"bytes"], ids=["None", "str", "int", "obj", "b"]
)
async def test_non_peer_member_raises_type_error(
    fanout_impl: Any, position: str, intruder: Any
) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop(), sync=True)
    members, transports = make_peers(fanout_impl, engine, 2)
    items = list(members.items())
    index = {"first": 0, "middle": 1, "last": 2}[position]
    items.insert(index, ("bad", intruder))
    bad_members = dict(items)
    nobody = object()  # exclude=None would skip a None member (it *is* the excluded one)
    with pytest.raises(TypeError, match="Peer"):
        engine.broadcast(bad_members, frame(1), nobody)
    with pytest.raises(TypeError, match="Peer"):
        engine.over_limit(bad_members, nobody)
    if intruder is not None:
        with pytest.raises(TypeError, match="Peer"):
            engine.broadcast(bad_members, frame(1))
        with pytest.raises(TypeError, match="Peer"):
            engine.over_limit(bad_members)
    # excluding the intruder skips it
    assert engine.broadcast(bad_members, frame(2), intruder) == 2
    # the engine is unharmed
    assert engine.broadcast(members, frame(3)) == 2
    await end_turn()
    for tr in transports:
        assert tr.data.endswith(frame(2) + frame(3))
        assert tr.writes[-1].endswith(frame(2) + frame(3))


@needs_compiled
async def test_peer_of_the_other_implementation_is_rejected() -> None:
    loop = asyncio.get_running_loop()
    compiled = importlib.import_module("roomer._fanout")
    pure = importlib.import_module("roomer._fanout_py")
    c_engine, p_engine = compiled.Fanout(loop), pure.Fanout(loop)
    c_peer, p_peer = compiled.Peer(c_engine), pure.Peer(p_engine)
    for engine, foreign in ((c_engine, p_peer), (p_engine, c_peer)):
        with pytest.raises(TypeError):
            engine.broadcast({"x": foreign}, frame(1))
        with pytest.raises(TypeError):
            engine.over_limit({"x": foreign})
    with pytest.raises(TypeError):
        compiled.Peer(p_engine)


async def test_members_mutated_from_inside_a_write_does_not_crash(fanout_impl: Any) -> None:
    """A write callback (forced by flush_threshold) that changes the room mid-broadcast.

    The pure twin raises RuntimeError (dict changed size); the compiled loop walks the
    dict with PyDict_Next and must stay memory-safe. Either way the engine keeps working.
    """
    engine = fanout_impl.Fanout(asyncio.get_running_loop(), flush_threshold=1)
    members: dict[str, Any] = {}
    transports = []

    def churn(_: bytes) -> None:
        for key in list(members)[:2]:
            del members[key]
        for _i in range(3):
            p = fanout_impl.Peer(engine)
            p.attach(FakeTransport())
            members[f"n{len(transports)}-{random.random()}"] = p

    for i in range(20):
        peer = fanout_impl.Peer(engine)
        tr = FakeTransport(on_write=churn if i % 5 == 0 else None)
        peer.attach(tr)
        members[f"c{i}"] = peer
        transports.append(tr)
    for i in range(20):
        with contextlib.suppress(RuntimeError):  # the pure twin: dict changed size
            engine.broadcast(members, frame(i))
    await end_turn()
    members.clear()
    assert engine.broadcast({"only": fanout_impl.Peer(engine)}, frame(0)) == 1


# --------------------------------------------------------------------------- write errors


@pytest.mark.parametrize("where", ["turn", "threshold", "resume"])
async def test_a_failing_write_does_not_stall_the_others(fanout_impl: Any, where: str) -> None:
    """A transport that raises on write (closed under us) is reported to the loop's
    exception handler and stops taking frames; every other receiver is unaffected."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    f = frame(0, 30)
    threshold = 2 * len(f) if where == "threshold" else 64 * 1024
    engine = fanout_impl.Fanout(loop, flush_threshold=threshold)
    members, transports = make_peers(fanout_impl, engine, 4)
    broken = members["c1"]
    transports[1].fail = True
    if where == "resume":
        broken.pause_writing()
    try:
        for i in range(4):
            assert engine.broadcast(members, frame(i, 30)) == (
                3 if where == "threshold" and i >= 2 else 4
            )
        if where == "resume":
            broken.resume_writing()
        await end_turn()
        assert engine.broadcast(members, frame(9, 30)) == 3  # the broken one is closing now
        await end_turn()
    finally:
        loop.set_exception_handler(None)
    expected = b"".join(frame(i, 30) for i in (0, 1, 2, 3, 9))
    for i in (0, 2, 3):
        assert transports[i].data == expected
    assert transports[1].writes == []
    assert broken.closing is True
    assert broken.pending == 0
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], RuntimeError)
    assert errors[0]["protocol"] is broken


# --------------------------------------------------------------------------- parity


def run_scenario(
    impl: Any, ops: list[tuple], *, sync: bool, limit: int, threshold: int, disconnect_slow: bool
) -> dict[str, Any]:
    """Run a scripted scenario on a fresh loop; return everything observable."""
    loop = asyncio.new_event_loop()
    errors: list[str] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(names[id(context["protocol"])]))
    try:
        overflows: list[str] = []
        engine = impl.Fanout(
            loop,
            outbox_limit=limit,
            flush_threshold=threshold,
            sync=sync,
            disconnect_slow=disconnect_slow,
            on_overflow=lambda p: overflows.append(names[id(p)]),
        )
        peers: dict[str, Any] = {}
        transports: dict[str, FakeTransport] = {}
        names: dict[int, str] = {}
        members: dict[str, Any] = {}
        for i in range(6):
            name = f"p{i}"
            peer = impl.Peer(engine)
            if i != 5:  # p5 stays unattached until an "attach" op
                transports[name] = FakeTransport()
                peer.attach(transports[name])
            peers[name] = peer
            names[id(peer)] = name
            if i < 4:
                members[name] = peer
        results: list[Any] = []
        for op, *args in ops:
            if op == "broadcast":
                exclude = peers.get(args[1]) if args[1] else None
                results.append(engine.broadcast(members, frame(args[0], args[0] % 50), exclude))
            elif op == "burst":
                results.append(
                    [engine.broadcast(members, frame(args[0] + k, k % 40)) for k in range(12)]
                )
            elif op == "send":
                results.append(peers[args[0]].send_frame(frame(args[1], args[1] % 9)))
            elif op == "control":
                results.append(peers[args[0]].send_control(frame(args[1], args[1] % 60)))
            elif op == "cbroadcast":
                results.append(engine.broadcast_control(members, frame(args[0], args[0] % 50)))
            elif op == "grown":
                results.append(sorted(names[id(p)] for p in engine.take_grown()))
            elif op == "discard":
                peers[args[0]].discard_outbox()
            elif op == "pause":
                peers[args[0]].pause_writing()
            elif op == "resume":
                peers[args[0]].resume_writing()
            elif op == "close":
                peers[args[0]].close_outbox()
            elif op == "leave":
                members.pop(args[0], None)
            elif op == "join":
                members.setdefault(args[0], peers[args[0]])
            elif op == "attach":
                if args[0] not in transports:
                    transports[args[0]] = FakeTransport()
                    peers[args[0]].attach(transports[args[0]])
            elif op == "over":
                over = engine.over_limit(members)
                results.append(None if over is None else names[id(over)])
            elif op == "turn":
                loop.run_until_complete(suspend())
            elif op == "flush":
                peers[args[0]].flush()
            elif op == "break" and args[0] in transports:
                transports[args[0]].fail = True
            results.append({n: (p.pending, p.dropped, p.closing, p.overflowed, p.over_since > 0)
                            for n, p in peers.items()})
            results.append(getattr(engine, "turn_bytes", None))
        loop.run_until_complete(suspend())
        return {
            "writes": {n: tr.writes for n, tr in transports.items()},
            "stats": engine.stats,
            "results": results,
            "overflows": overflows,
            "errors": errors,
            "pending": {n: p.pending for n, p in peers.items()},
        }
    finally:
        loop.close()


PEER_NAMES = st.sampled_from([f"p{i}" for i in range(6)])
OPS = st.one_of(
    st.tuples(st.just("broadcast"), st.integers(0, 200), st.one_of(st.just(""), PEER_NAMES)),
    st.tuples(st.just("burst"), st.integers(0, 200)),
    st.tuples(st.sampled_from(["send", "control"]), PEER_NAMES, st.integers(0, 200)),
    st.tuples(st.just("cbroadcast"), st.integers(0, 200)),
    st.tuples(
        st.sampled_from(["pause", "resume", "close", "leave", "join", "attach", "flush",
                         "discard"]),
        PEER_NAMES,
    ),
    st.tuples(st.just("grown")),
    st.tuples(st.just("break"), PEER_NAMES),
    st.tuples(st.just("over")),
    st.tuples(st.just("turn")),
)


@needs_compiled
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(OPS, min_size=5, max_size=60),
    sync=st.booleans(),
    limit=st.sampled_from([60, 200, 1000, 1 << 20]),
    threshold=st.sampled_from([1, 150, 700, 64 * 1024]),
    disconnect_slow=st.booleans(),
)
def test_parity_random_scenarios(
    ops: list[tuple], sync: bool, limit: int, threshold: int, disconnect_slow: bool
) -> None:
    kwargs = {
        "sync": sync,
        "limit": limit,
        "threshold": threshold,
        "disconnect_slow": disconnect_slow,
    }
    expected = run_scenario(importlib.import_module("roomer._fanout_py"), ops, **kwargs)
    actual = run_scenario(importlib.import_module("roomer._fanout"), ops, **kwargs)
    assert actual == expected


FIXED_SCENARIO: list[tuple] = [
    ("break", "p4"),
    ("join", "p4"),
    ("broadcast", 1, ""),
    ("broadcast", 2, "p1"),
    ("turn",),
    ("pause", "p2"),
    *[("broadcast", i, "") for i in range(3, 40)],
    ("over",),
    ("turn",),
    ("leave", "p0"),
    ("broadcast", 40, ""),
    ("join", "p5"),
    ("broadcast", 41, "p3"),
    ("send", "p5", 7),
    ("control", "p2", 59),
    ("cbroadcast", 8),
    ("grown",),
    ("attach", "p5"),
    ("close", "p3"),
    ("broadcast", 42, ""),
    ("resume", "p2"),
    ("join", "p0"),
    ("broadcast", 43, ""),
    ("turn",),
    ("pause", "p1"),
    *[("broadcast", i, "") for i in range(44, 90)],
    ("over",),
    ("flush", "p0"),
    ("resume", "p1"),
    ("turn",),
]


@needs_compiled
@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize("disconnect_slow", [False, True], ids=["keep", "disconnect"])
def test_parity_fixed_scenario(sync: bool, disconnect_slow: bool) -> None:
    kwargs = {"sync": sync, "limit": 1500, "threshold": 4000, "disconnect_slow": disconnect_slow}
    expected = run_scenario(importlib.import_module("roomer._fanout_py"), FIXED_SCENARIO, **kwargs)
    actual = run_scenario(importlib.import_module("roomer._fanout"), FIXED_SCENARIO, **kwargs)
    assert actual["writes"] == expected["writes"]  # the byte streams, write by write
    assert actual == expected
    assert expected["stats"]["deliveries"] > 0
    if not sync:
        assert expected["stats"]["dropped"] > 0
        assert bool(expected["overflows"]) is disconnect_slow
    else:
        assert expected["stats"]["dropped"] == 0


# --------------------------------------------------------------------------- misuse


async def test_misuse_is_refused_not_crashed(fanout_impl: Any) -> None:
    """Pickling, copying or using a Peer whose __init__ never ran raises; in the compiled
    twin each of these once read through a NULL or dangling C pointer."""
    engine = fanout_impl.Fanout(asyncio.get_running_loop())
    members, _ = make_peers(fanout_impl, engine, 2)
    for dump in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError, match="cannot pickle or copy 'Peer' object"):
            dump(members["c0"])
    if fanout_impl.__name__ == "roomer._fanout":
        bare = fanout_impl.Peer.__new__(fanout_impl.Peer)
        expect = "this roomer Peer was never initialised (Peer.__init__ did not run)"
        for call in (lambda: bare.send_frame(frame(1)), lambda: bare.send_control(frame(1)),
                     bare.flush, bare.close_outbox, bare.discard_outbox, bare.trim_buffers,
                     bare.read_done,
                     lambda: engine.broadcast({**members, "bare": bare}, frame(1)),
                     lambda: engine.broadcast_mixed({"bare": bare}, frame(1), frame(2))):
            with pytest.raises(TypeError) as info:
                call()
            assert str(info.value) == expect


async def test_peer_takes_exactly_a_fanout_with_one_message(fanout_impl: Any) -> None:
    class Engine(fanout_impl.Fanout):  # type: ignore[name-defined,misc]
        pass

    for bad in (Engine(asyncio.get_running_loop()), None, object()):
        with pytest.raises(TypeError) as info:
            fanout_impl.Peer(bad)
        assert str(info.value) == ("Argument 'engine' has incorrect type "
                                   f"(expected Fanout, got {type(bad).__name__})")


async def test_outbox_limit_bounds_are_the_same_in_both_twins(fanout_impl: Any) -> None:
    loop = asyncio.get_running_loop()
    # Twice the limit is the hard limit: it must fit a Py_ssize_t.
    assert fanout_impl.Fanout(loop, outbox_limit=sys.maxsize // 2).hard_limit == (
        sys.maxsize // 2 * 2)
    with pytest.raises(ValueError) as too_big:
        fanout_impl.Fanout(loop, outbox_limit=sys.maxsize // 2 + 1)
    assert str(too_big.value) == ("outbox_limit must be at most sys.maxsize // 2 "
                                  "(twice it is the hard limit)")
    for huge in (1 << 64, -(1 << 64)):
        for kwargs in ({"outbox_limit": huge}, {"flush_threshold": huge}):
            with pytest.raises(OverflowError) as info:
                fanout_impl.Fanout(loop, **kwargs)
            assert str(info.value) == "Python int too large to convert to C ssize_t"


async def test_a_quiet_peer_gives_its_outbox_buffer_back(fanout_impl: Any) -> None:
    """A write between 1 KiB and 64 KiB keeps its buffer for the next burst; once the
    connection is quiet (the server's ping scan calls trim_buffers) it holds none."""
    engine = fanout_impl.Fanout(asyncio.get_running_loop())
    members, transports = make_peers(fanout_impl, engine, 3)
    engine.broadcast(members, frame(1, 10_000))
    await end_turn()
    for peer in members.values():
        peer.trim_buffers()
        assert peer.outbox_capacity == 0
    engine.broadcast(members, frame(2, 10))
    await end_turn()
    assert all(tr.data == frame(1, 10_000) + frame(2, 10) for tr in transports)
