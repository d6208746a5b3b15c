"""What one client can make the backplane carry, against real Redis and real NATS (and the
in-process hub): a join/leave loop against a big room on another node costs a constant
number of broker bytes per cycle, not a member list; member-list answers are coalesced per
room; a sender's share of the outgoing buffer keeps an innocent pair whole while one
client floods; and messages as large as ``max_message_size`` cross NATS, whose payload
limit is lower than that once wrapped."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from clusterkit import eventually, join, nodes
from rawclient import connect
from waiting import suspend

from roomer.backplane import Cluster, create

BACKENDS = ["memory", "redis", "nats"]
QUIET = {"heartbeat_interval": 30.0, "node_timeout": 90.0}  # no heartbeats mid-test
# Both nodes share this loop: B's setup (5,000 subscriptions and joins, their echoes) may
# hold it past the default wait for B's answer.
PATIENT = {**QUIET, "sync_timeout": 2.0}


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return f"memory://{uuid.uuid4().hex}"
    return str(request.getfixturevalue(f"{request.param}_url"))


def broker_bytes(*clusters: Cluster) -> int:
    """Bytes these nodes handed to the broker (the broker confirmed them)."""
    return sum(c.transport.published_bytes for c in clusters)


async def settle(*clusters: Cluster) -> None:
    for cluster in clusters:
        await cluster.transport.flush()


async def test_a_join_leave_loop_costs_constant_bytes_per_cycle(url: str, prefix: str) -> None:
    """One client on node A leaves and re-joins a room of 5,000 members on node B as fast
    as the join lets it (a join waits for the room to be ready, as the server's join_ack
    does). Each cycle used to make B publish its whole member list (5,000 UUIDs, 185 KB):
    now a cycle costs A's join and leave and nothing that grows with the room."""
    size = 5000
    big = [str(uuid.uuid4()) for _ in range(size)]
    list_bytes = sum(len(m) + 1 for m in big)
    async with nodes(url, prefix, 2, **PATIENT) as [(a, _), (b, _)]:
        await join(b, "big", *big)
        await settle(b)  # the big room is there, its joins long published
        a.local_connected("looper")
        await join(a, "big", "looper")  # the first visit learns the list: once
        assert len(a.remote_members("big")) == size
        a.local_left("big", "looper")
        await settle(a, b)
        before = broker_bytes(a, b)
        cycles = 60
        for _ in range(cycles):
            a.local_joined("big", "looper")
            await a.room_ready("big")
            assert len(a.remote_members("big")) == size
            a.local_left("big", "looper")
            await suspend()
        await settle(a, b)
        per_cycle = (broker_bytes(a, b) - before) / cycles
        print(f"{url.partition(':')[0]}: {per_cycle:.0f} broker bytes per join/leave cycle "
              f"against a room of {size} (its member list: {list_bytes} bytes)")
        assert per_cycle < 1024, per_cycle
        # The list stays right while A follows the room without members: B's changes reach
        # it, and A's next joiner lists them.
        b.local_left("big", big[0])
        b.local_joined("big", "newcomer")
        await settle(b)
        a.local_joined("big", "looper")
        await a.room_ready("big")
        await eventually(lambda: "newcomer" in a.remote_members("big"), what="B's join seen")
        assert big[0] not in a.remote_members("big")
        assert len(a.remote_members("big")) == size


async def test_member_list_answers_are_coalesced_per_room(url: str, prefix: str) -> None:
    """Several nodes that start following a big room at once each ask for B's list: B
    answers the first at once and the rest together, once, and every asker's list is
    whole when its join is ready."""
    size = 3000
    big = [str(uuid.uuid4()) for _ in range(size)]
    list_bytes = sum(len(m) + 1 for m in big)
    async with nodes(url, prefix, 5, **PATIENT) as [(b, _), *askers]:
        await join(b, "big", *big)
        await settle(b)
        before = broker_bytes(b)
        for i, (node, _) in enumerate(askers):
            node.local_connected(f"asker{i}")
            node.local_joined("big", f"asker{i}")
        await asyncio.gather(*(node.room_ready("big") for node, _ in askers))
        await settle(b)
        for i, (node, _) in enumerate(askers):
            others = {f"asker{j}" for j in range(len(askers)) if j != i}
            assert set(node.remote_members("big")) == set(big) | others
        answered = broker_bytes(b) - before
        print(f"{url.partition(':')[0]}: B published {answered / list_bytes:.2f} member "
              f"lists for {len(askers)} askers")
        assert answered < 2.5 * list_bytes


# messages as large as max_message_size ---------------------------------------------------


async def test_a_frame_past_the_brokers_payload_limit_crosses_in_pieces(
        url: str, prefix: str) -> None:
    """NATS refuses a message past its max_payload (1 MiB by default, from the INFO the
    client got): a 1 MiB frame, once enveloped, is past it. Room frames, frames to all and
    direct messages cross in pieces and arrive whole (regression: dropped silently, and a
    direct message answered 'no such client')."""
    async with nodes(url, prefix, 2, **QUIET) as [(a, _), (b, rb)]:
        await join(a, "r", "a1")
        await join(b, "r", "b1")
        rb.holding.add("b1")
        if url.startswith("nats"):
            assert a.transport.max_payload == 1 << 20  # the server's, from its INFO
        elif url.startswith("redis"):
            assert a.transport.max_payload == 512 << 20  # proto-max-bulk-len
        big = bytes(range(256)) * 4096  # 1 MiB
        assert len(big) == 1 << 20
        for frame in (big, big + b"!", b"small"):
            assert a.publish_room("r", frame, exclude="a9")
        a.publish_all(big)
        delivered = a.send_direct("b1", big)
        assert await delivered is True
        await eventually(lambda: len(rb.frames) == 3 and len(rb.all) == 1 and rb.direct,
                         what="all arrived")
        assert rb.frames == [("r", big, "a9"), ("r", big + b"!", "a9"), ("r", b"small", "a9")]
        assert rb.all == [(big, None)] and rb.direct == [("b1", big)]
        assert a.state()["dropped"] == 0
        # An id nobody holds is still "no such client", however large the message.
        assert await a.send_direct("nobody", big) is False


async def test_pieces_respect_a_small_payload_limit(prefix: str) -> None:
    """The same over the in-process hub with a 4 KiB limit: many pieces per message,
    interleaved with small ones, each arriving whole and in publish order."""
    url = f"memory://{uuid.uuid4().hex}"
    async with nodes(url, prefix, 2, transport_options={"max_payload": 4096},
                     **QUIET) as [(a, _), (b, rb)]:
        assert a.transport.max_payload == 4096
        await join(a, "r", "a1")
        await join(b, "r", "b1")
        spy = create(url)
        await spy.connect(lambda up: None)
        raw: list[bytes] = []
        await spy.subscribe(a.names.room("r"), raw.append)
        frames = [bytes([i]) * (i * 1500) for i in range(1, 20)]
        for frame in frames:
            a.publish_room("r", frame)
            a.publish_room("r", b"tiny")
        await eventually(lambda: len(rb.frames) == 2 * len(frames))
        expected = [f for frame in frames for f in (frame, b"tiny")]
        assert [f for _, f, _ in rb.frames] == expected
        assert max(len(data) for data in raw) <= 4096 and len(raw) > 4 * len(frames)
        await spy.close()


@pytest.mark.server_process
async def test_messages_of_max_message_size_cross_nats_between_servers(
        server_process: Any, nats_url: str, prefix: str) -> None:
    """Two ``roomer serve`` nodes on NATS (max_payload 1 MiB) with the default
    max_message_size (1 MiB): a relay of the largest message a client may send reaches
    the room's member on the other node, and a direct message that large reaches its
    client (regression: the relay vanished, the direct message was answered
    no_such_client although the client exists)."""
    options = {"backplane": nats_url, "backplane_prefix": prefix, "rate_limit": None,
               "byte_limit": None}
    node_a, node_b = await asyncio.gather(
        server_process({**options, "node_id": "a"}, ("scaleout_app:setup",)),
        server_process({**options, "node_id": "b"}, ("scaleout_app:setup",)))
    a1 = await connect(node_a.url)
    b1 = await connect(node_b.url, max_size=None)  # what it gets carries a src too
    async def met() -> bool:  # the nodes meet at their hellos
        return (await node_a.metrics()).get("roomer_backplane_nodes") == 1

    await eventually(met, 10, what="the nodes met")
    await a1.join("r")
    await b1.join("r")
    assert (await a1.expect("new_member", "r")).text == b1.id
    room, event = "r", "big"
    overhead = 20 + len(room) + len(event)  # five length fields, the names
    payload = bytes(range(256)) * ((1 << 20) // 256)
    payload = payload[:(1 << 20) - overhead]  # the whole message is exactly 1 MiB
    await a1.send(room, event, payload=payload)
    got = await b1.expect(event, room, timeout=10)
    assert (got.src, got.payload) == (a1.id, payload)
    await a1.send(room, event, dst=b1.id, payload=payload[:-len(b1.id)])
    got = await b1.expect(event, room, timeout=10)
    assert (got.src, got.dst, got.payload) == (a1.id, b1.id, payload[:-len(b1.id)])
    await a1.expect_nothing()  # no error: no_such_client would be a lie
    metrics = await node_a.metrics()
    assert metrics["roomer_backplane_dropped_total"] == 0
    for client in (a1, b1):
        await client.close()
