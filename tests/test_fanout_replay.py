"""The fan-out's part in resumable sessions, on both twins with recording transports:
``replay`` keeps every byte written, ``replay_full`` is called past ``replay_limit``, a
detached receiver's outbox waits within the usual limits, ``queued`` copies it out,
``prepend`` puts frames back in front of it, and ``replay_count`` turns counts of messages
into bytes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_fanout import FakeTransport, end_turn, frame, make_peers


async def test_replay_keeps_what_was_written_and_says_when_it_is_full(
        fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop(), replay_limit=1000)
    full: list[int] = []

    class Owner(fanout_impl.Peer):  # type: ignore[name-defined,misc]
        def replay_full(self) -> None:
            full.append(len(self.replay))
            del self.replay[:500]

    peer = Owner(engine)
    transport = FakeTransport()
    peer.attach(transport)
    peer.replay = bytearray()
    frames = [frame(i, 100) for i in range(8)]
    for f in frames[:3]:
        assert peer.send_frame(f)
    await end_turn()
    assert bytes(peer.replay) == b"".join(frames[:3]) == transport.writes[0]
    for f in frames[3:]:
        peer.send_frame(f)
        await end_turn()
    assert full and all(size > 1000 for size in full)
    written = b"".join(transport.writes)
    assert written.endswith(bytes(peer.replay)) and len(peer.replay) <= 1000


async def test_without_a_replay_nothing_is_kept(fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop())
    members, transports = make_peers(fanout_impl, engine, 1)
    engine.broadcast(members, frame(0))
    await end_turn()
    assert members["c0"].replay is None and transports[0].writes == [frame(0)]


async def test_a_detached_receiver_gathers_frames_until_attached(fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop(), outbox_limit=300)
    members, transports = make_peers(fanout_impl, engine, 1)
    peer = members["c0"]
    peer.detach()
    assert peer.transport is None and not peer.closing
    sent = [engine.broadcast(members, frame(i, 100)) for i in range(4)]
    await end_turn()
    assert transports[0].writes == []
    # The usual bound: the third frame would pass outbox_limit, so it and the fourth drop.
    assert sent == [1, 1, 0, 0] and peer.dropped == 2 and peer.pending == 2 * len(frame(0, 100))
    # What it holds can be copied out (a session handed over to another node) as is.
    assert peer.queued() == frame(0, 100) + frame(1, 100)
    peer.prepend(frame(9))
    assert peer.queued() == frame(9) + frame(0, 100) + frame(1, 100)
    again = FakeTransport()
    peer.attach(again)
    assert again.writes == [frame(9) + frame(0, 100) + frame(1, 100)]
    assert peer.queued() == b""


async def test_prepend_on_an_attached_receiver_is_written_first(fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop())
    members, transports = make_peers(fanout_impl, engine, 1)
    peer = members["c0"]
    peer.send_frame(frame(1))
    peer.prepend(frame(0))
    peer.prepend(b"")
    await end_turn()
    assert transports[0].writes == [frame(0) + frame(1)]
    with pytest.raises(TypeError):
        peer.prepend(bytearray(frame(2)))


async def test_replay_count_walks_frames_and_skips_control_frames(fanout_impl: Any) -> None:
    peer = fanout_impl.Peer(fanout_impl.Fanout(asyncio.get_running_loop()))
    assert peer.replay_count(5) == (0, 0)  # no replay kept
    pong = b"\x8a\x02hi"
    big = frame(0, 70_000)  # a 64-bit length
    mid = frame(1, 300)  # a 16-bit length
    small = frame(2)
    peer.replay = bytearray(pong + big + mid + pong + small)
    end = len(peer.replay)
    assert peer.replay_count(0) == (0, 0)
    assert peer.replay_count(1) == (len(pong + big), 1)
    assert peer.replay_count(3) == (end, 3)
    assert peer.replay_count(9) == (end, 3)
    # By bytes: whole frames up to at least the offset asked.
    assert peer.replay_count(0, len(pong) + 1) == (len(pong + big), 1)
    # A frame cut short (never written so, but never read past either) ends the walk.
    peer.replay = bytearray(small + mid[:-1])
    assert peer.replay_count(5) == (len(small), 1)
    peer.replay = bytearray(small + mid[:3])
    assert peer.replay_count(5) == (len(small), 1)
