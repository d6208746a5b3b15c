"""What one client can make the backplane carry, against real Redis and real NATS (and the
in-process hub): a join/leave loop against a big room on another node costs a constant
number of broker bytes per cycle, not a member list; member-list answers are coalesced per
room; a sender's share of the outgoing buffer keeps an innocent pair whole while one
client floods; and messages as large as ``max_message_size`` cross NATS, whose payload
limit is lower than that once wrapped."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from clusterkit import eventually, nodes

from roomer.backplane import Cluster

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


async def join(cluster: Cluster, room: str, *members: str) -> None:
    for member in members:
        cluster.local_connected(member)
        cluster.local_joined(room, member)
    await cluster.room_ready(room)


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
            await asyncio.sleep(0)
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
