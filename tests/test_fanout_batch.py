"""Batch frames in the fan-out engine (docs/protocol.md §13), both twins: a receiver that
negotiated them gets each run of two or more data frames of a flush as batch frames, with
control frames in their place, within the batch bounds, while its replay keeps one frame per
message.

``fanout_impl`` (tests/conftest.py) runs a test against roomer._fanout_py and
roomer._fanout. Peers write to fake transports that record every write.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fanout import FakeTransport, end_turn

from roomer import _codec_py
from roomer._fanout_py import batched

PING = b"\x89\x00"
PONG = b"\x8a\x03abc"


def v2(i: int, size: int = 0) -> bytes:
    return _codec_py.encode_frame_v2(0, 0, "", "room", "ev", "", f"s{i}", b"p" * size)


def frames_of(data: bytes) -> list[bytes]:
    """The whole frames in ``data``."""
    out, pos = [], 0
    while pos < len(data):
        size, head = data[pos + 1] & 0x7F, 2
        if size == 126:
            size, head = int.from_bytes(data[pos + 2:pos + 4], "big"), 4
        elif size == 127:
            size, head = int.from_bytes(data[pos + 2:pos + 10], "big"), 10
        out.append(data[pos:pos + head + size])
        pos += head + size
    assert pos == len(data)
    return out


def body(frame: bytes) -> bytes:
    return frame[2 if frame[1] < 126 else 4 if frame[1] == 126 else 10:]


def unbatched(data: bytes) -> list[bytes]:
    """What a client reads from ``data``: every batch split into framed messages."""
    out = []
    for frame in frames_of(data):
        if frame[0] & 0x08 or body(frame)[:1] != b"\x04":
            out.append(frame)
            continue
        out += [_codec_py.frame_header(len(b)) + b for b in _codec_py.split_batch(body(frame))]
    return out


def batch_sizes(data: bytes) -> list[int]:
    """For each frame written: how many messages its batch held (1: not a batch)."""
    return [len(_codec_py.split_batch(body(f))) if body(f)[:1] == b"\x04" and not f[0] & 0x08
            else 1 for f in frames_of(data)]


def engine_and_peer(impl: Any, **options: Any) -> tuple[Any, Any, FakeTransport]:
    engine = impl.Fanout(asyncio.get_running_loop(), flush_threshold=1 << 22,
                         outbox_limit=1 << 22, **options)
    peer = impl.Peer(engine)
    peer.v2 = peer.batch = True
    transport = FakeTransport()
    peer.attach(transport)
    return engine, peer, transport


async def test_a_turns_messages_go_out_as_one_batch(fanout_impl: Any) -> None:
    engine, peer, transport = engine_and_peer(fanout_impl)
    plain = fanout_impl.Peer(engine)
    plain.v2 = True
    plain_transport = FakeTransport()
    plain.attach(plain_transport)
    sent = [v2(i, 5) for i in range(3)]
    for frame in sent:
        engine.broadcast({"a": peer, "b": plain}, frame)
    await end_turn()
    assert len(transport.writes) == 1 and batch_sizes(transport.data) == [3]
    assert unbatched(transport.data) == sent
    assert plain_transport.data == b"".join(sent)  # no batches unless negotiated
    assert engine.stats["batches_out"] == 1
    assert engine.stats["bytes_out"] == len(transport.data) + len(plain_transport.data)


async def test_a_lone_message_is_a_plain_frame(fanout_impl: Any) -> None:
    engine, peer, transport = engine_and_peer(fanout_impl)
    peer.send_frame(v2(1))
    await end_turn()
    assert transport.data == v2(1)
    assert engine.stats["batches_out"] == 0


async def test_control_frames_keep_their_place_between_batches(fanout_impl: Any) -> None:
    engine, peer, transport = engine_and_peer(fanout_impl)
    for item in (v2(1), v2(2), PING, v2(3), PONG, v2(4), v2(5), v2(6)):
        if item[0] & 0x08:
            peer.send_control(item)
        else:
            peer.send_frame(item)
    await end_turn()
    assert batch_sizes(transport.data) == [2, 1, 1, 1, 3]
    assert unbatched(transport.data) == [v2(1), v2(2), PING, v2(3), PONG, v2(4), v2(5), v2(6)]
    assert engine.stats["batches_out"] == 2


async def test_batches_keep_to_256_messages_and_64_kib(fanout_impl: Any) -> None:
    _, peer, transport = engine_and_peer(fanout_impl)
    sent = [v2(i) for i in range(300)]
    sent += [v2(1000, 30_000), v2(1001, 30_000), v2(1002, 30_000)]
    sent += [v2(2000, 70_000), v2(2001), v2(2002)]
    for frame in sent:
        peer.send_frame(frame)
    await end_turn()
    # 300 small ones: 256, then the other 44 with two of 30 kB (62 kB of entries); a
    # third of 30 kB would pass 64 KiB: it starts the next batch, which the one over 64
    # KiB does not fit, so each goes alone; the small ones after them batch again.
    assert batch_sizes(transport.data) == [256, 46, 1, 1, 2]
    assert unbatched(transport.data) == sent
    for frame in frames_of(transport.data):
        if body(frame)[:1] == b"\x04":
            assert len(body(frame)) - 1 <= 64 * 1024


async def test_the_replay_keeps_one_frame_per_message(fanout_impl: Any) -> None:
    _, peer, transport = engine_and_peer(fanout_impl)
    peer.replay = bytearray()
    sent = [v2(i, 3) for i in range(5)]
    for frame in sent:
        peer.send_frame(frame)
    await end_turn()
    assert batch_sizes(transport.data) == [5]
    assert bytes(peer.replay) == b"".join(sent)
    assert peer.replay_count(3) == (sum(map(len, sent[:3])), 3)


async def test_what_waited_for_a_socket_is_batched_when_it_comes(fanout_impl: Any) -> None:
    engine = fanout_impl.Fanout(asyncio.get_running_loop())
    peer = fanout_impl.Peer(engine)
    peer.v2 = peer.batch = True
    sent = [v2(i) for i in range(4)]
    for frame in sent:
        peer.send_frame(frame)
    await end_turn()
    transport = FakeTransport()
    peer.attach(transport)
    assert batch_sizes(transport.data) == [4]
    assert unbatched(transport.data) == sent


ITEMS = st.lists(st.one_of(
    st.tuples(st.just("data"), st.sampled_from([0, 1, 90, 200, 20_000, 40_000, 70_000])),
    st.tuples(st.just("control"), st.sampled_from([0, 5, 125]))), max_size=40)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=ITEMS)
def test_any_mix_is_batched_as_the_oracle_does(fanout_impl: Any, items: list) -> None:
    async def run() -> None:
        engine, peer, transport = engine_and_peer(fanout_impl)
        sent = []
        for i, (kind, size) in enumerate(items):
            if kind == "data":
                sent.append(v2(i, size))
                peer.send_frame(sent[-1])
            else:
                sent.append(b"\x89" + bytes([size]) + b"x" * size)
                peer.send_control(sent[-1])
        await end_turn()
        expected, count = batched(b"".join(sent))
        assert transport.data == expected
        assert engine.stats["batches_out"] == count
        assert unbatched(transport.data) == sent

    asyncio.run(run())
