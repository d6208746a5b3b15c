"""The cluster protocol across nodes, each node a Cluster with a recording ClusterEvents,
over real Redis, real NATS and the in-process hub: room frames reach only the nodes with
members there, broadcasts to all, direct messages, member lists and presence, order per
publishing node, goodbye, restart with the same id, and churn without ghosts."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable

import pytest
from clusterkit import Recorder, eventually, join, nodes
from waiting import scaled, suspend

from roomer.backplane import Cluster, create
from roomer.backplane import envelope as env
from roomer.backplane.transport_memory import hub

BACKENDS = ["memory", "redis", "nats"]
# A room name with what NATS would take for separators and wildcards, and a space.
ODD_ROOM = "lobby.eu *>  #1 ü"
QUIET = {"heartbeat_interval": 30.0, "node_timeout": 90.0}  # no heartbeats mid-test


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return f"memory://{uuid.uuid4().hex}"
    return str(request.getfixturevalue(f"{request.param}_url"))


async def subscribers(url: str, channel: str) -> int:
    """How many connections the broker has subscribed to ``channel`` (Redis, memory)."""
    if url.startswith("memory"):
        return hub(url.partition("://")[2]).count(channel)
    import redis.asyncio as aioredis

    probe = aioredis.Redis.from_url(url)
    try:
        return int(dict(await probe.pubsub_numsub(channel))[channel.encode()])
    finally:
        await probe.aclose()


async def _is(count: Awaitable[int], expected: int) -> bool:
    return await count == expected


async def test_room_frames_reach_only_nodes_with_members(url: str, prefix: str) -> None:
    async with nodes(url, prefix, 3, **QUIET) as [(a, ra), (b, rb), (c, rc)]:
        await join(a, ODD_ROOM, "a1")
        await join(b, ODD_ROOM, "b1")
        await join(c, "elsewhere", "c1")
        a.publish_room(ODD_ROOM, b"frame-1")
        a.publish_room(ODD_ROOM, b"frame-2", exclude="b1")
        b.publish_room(ODD_ROOM, b"from-b")
        await eventually(lambda: len(rb.frames) == 2 and len(ra.frames) == 1)
        assert rb.frames == [(ODD_ROOM, b"frame-1", None), (ODD_ROOM, b"frame-2", "b1")]
        assert ra.frames == [(ODD_ROOM, b"from-b", None)]  # nobody gets its own back
        # The anchors: a and b each publish to all after their room frames; a publisher's
        # messages reach a node in order, so c has had every room frame it would get.
        a.publish_all(b"after a's frames")
        b.publish_all(b"after b's frames")
        await eventually(lambda: len(rc.all) == 2, what="both anchors at c")
        # No firehose: the node without members there got no room frame, and (Redis, the
        # hub) is not even subscribed. Its transport's count of messages is no witness:
        # its own join's echoes may still come in after the joins return.
        assert rc.frames == []
        if not url.startswith("nats"):
            assert await subscribers(url, a.names.room(ODD_ROOM)) == 2  # a and b, not c
        # Two room frames and the anchor each.
        assert a.state()["frames_out"] == 3 and b.state()["frames_in"] == 3


async def test_publish_all_reaches_every_other_node(url: str, prefix: str) -> None:
    async with nodes(url, prefix, 3, **QUIET) as [(a, ra), (b, rb), (_, rc)]:
        a.publish_all(b"to-all", exclude="x1")
        a.publish_all(b"to-all-2")
        await eventually(lambda: len(rb.all) == 2 and len(rc.all) == 2)
        assert rb.all == rc.all == [(b"to-all", "x1"), (b"to-all-2", None)]
        # The anchor: b publishes after a's messages reached it, so an echo of a's own
        # would reach a before b's.
        b.publish_all(b"from b")
        await eventually(lambda: ra.all == [(b"from b", None)], what="b's message at a")


async def test_direct_message_reaches_only_the_holder(url: str, prefix: str) -> None:
    async with nodes(url, prefix, 3, **QUIET) as [(a, _), (b, rb), (c, rc)]:
        b.local_connected("b1")
        rb.holding.add("b1")
        await b.transport.flush()
        assert await a.send_direct("b1", b"psst") is True
        # The broker answers a's publish once it handed the message to b's connection;
        # b's loop reads it a moment later.
        await eventually(lambda: rb.direct == [("b1", b"psst")])
        assert await a.send_direct("nobody", b"psst") is False
        # The anchor: a direct message from a to a client of c, sent after the others.
        c.local_connected("c1")
        rc.holding.add("c1")
        await c.transport.flush()
        assert await a.send_direct("c1", b"anchor") is True
        await eventually(lambda: rc.direct == [("c1", b"anchor")], what="the anchor at c")
        # c got nothing else on any client channel (heartbeats and other control traffic
        # may still reach it meanwhile; they are not direct messages)
        assert c.direct_in == 1
        b.local_disconnected("b1")
        await b.transport.flush()

        async def unknown() -> bool:  # the UNSUBSCRIBE reaches the broker: then unknown
            return await a.send_direct("b1", b"late") is False

        await eventually(unknown, what="a disconnected client unknown to direct messages")


async def test_member_lists_and_presence_span_nodes(url: str, prefix: str) -> None:
    async with nodes(url, prefix, 3, **QUIET) as [(a, ra), (b, rb), (c, rc)]:
        await join(a, ODD_ROOM, "a1", "a2")
        await join(b, ODD_ROOM, "b1")
        assert sorted(b.remote_members(ODD_ROOM)) == ["a1", "a2"]  # before its join_ack
        await eventually(lambda: ra.joined == [(ODD_ROOM, "b1")])
        assert a.remote_members(ODD_ROOM) == ["b1"]
        await join(c, ODD_ROOM, "c1")
        assert sorted(c.remote_members(ODD_ROOM)) == ["a1", "a2", "b1"]
        assert rc.joined == []  # the snapshot is the join_ack's list, not new_member events
        await eventually(lambda: (ODD_ROOM, "c1") in ra.joined and (ODD_ROOM, "c1") in rb.joined)
        b.local_left(ODD_ROOM, "b1")
        await eventually(lambda: (ODD_ROOM, "b1") in ra.left and (ODD_ROOM, "b1") in rc.left)
        assert sorted(c.remote_members(ODD_ROOM)) == ["a1", "a2"]
        assert sorted(a.remote_members(ODD_ROOM)) == ["c1"]
        assert b.remote_members(ODD_ROOM) == []  # no local member: not followed
        # Re-joining resyncs a fresh view.
        await join(b, ODD_ROOM, "b1")
        assert sorted(b.remote_members(ODD_ROOM)) == ["a1", "a2", "c1"]


async def test_last_leave_unsubscribes_after_the_linger(url: str, prefix: str) -> None:
    async with nodes(url, prefix, 2, linger=0.3, **QUIET) as [(a, ra), (b, _)]:
        await join(a, "r", "a1", "a2")
        await join(b, "r", "b1")
        channel = a.names.room("r")
        a.local_left("r", "a1")
        b.publish_room("r", b"still")
        await eventually(lambda: ra.frames == [("r", b"still", None)])
        a.local_left("r", "a2")
        await a.transport.flush()
        assert a.state()["rooms"] == 0 and a.state()["lingering"] == 1
        assert a.remote_members("r") == []  # followed a while longer, but no members here
        await eventually(lambda: a.state()["lingering"] == 0, what="the linger ends")
        await a.transport.flush()
        if not url.startswith("nats"):
            await eventually(lambda: _is(subscribers(url, channel), 1), what="one subscriber")
        received = a.transport.received
        b.publish_room("r", b"gone")
        b.publish_all(b"after gone")  # the anchor: it reaches a after "gone" would have
        await eventually(lambda: ra.all == [(b"after gone", None)], what="the anchor at a")
        assert ra.frames == [("r", b"still", None)] and a.transport.received == received + 1
        assert a.state()["rooms"] == 0


async def test_room_alone_on_one_node_costs_nothing(url: str, prefix: str) -> None:
    async with nodes(url, prefix, 2, **QUIET) as [(a, _), (b, rb)]:
        await join(a, "r", "a1", "a2")
        await a.transport.flush()
        published = a.transport.published
        for _ in range(50):
            a.publish_room("r", b"local only")
        await a.transport.flush()
        assert a.transport.published == published and a.state()["frames_local"] == 50
        await join(b, "r", "b1")
        a.publish_room("r", b"now shared")
        await eventually(lambda: rb.frames == [("r", b"now shared", None)])
        b.local_left("r", "b1")
        await eventually(lambda: a.remote_members("r") == [])
        a.publish_room("r", b"alone again")
        assert a.state()["frames_local"] == 51


async def test_every_frame_after_a_remote_join_is_delivered(url: str, prefix: str) -> None:
    """A publishes a numbered frame every loop turn while b's member joins and leaves:
    once b's room_ready returns, every frame a publishes reaches b (a learns of the member
    before its answer lets b go on, so it never skips publishing to it)."""
    async with nodes(url, prefix, 2, **QUIET) as [(a, _), (b, rb)]:
        await join(a, "r", "a1")
        sent = 0
        running = True

        async def publisher() -> None:
            nonlocal sent
            while running:
                sent += 1
                a.publish_room("r", b"%d" % sent)
                await suspend()  # one frame per loop turn

        task = asyncio.get_running_loop().create_task(publisher())
        try:
            for _ in range(5):
                rb.frames.clear()
                await join(b, "r", "b1")
                first = sent + 1  # published after b's room_ready returned
                await eventually(lambda lo=first: sent >= lo + 20, what="20 frames published")
                last = sent
                await eventually(lambda lo=first, hi=last: {f for _, f, _ in rb.frames}
                                 >= {b"%d" % n for n in range(lo, hi + 1)},
                                 what="every frame after the join")
                b.local_left("r", "b1")
                await eventually(lambda: a.remote_members("r") == [])
        finally:
            running = False
            await task
        assert a.state()["frames_local"] > 0  # between b's visits nothing was published


async def test_quiet_rooms_carry_frames_without_presence(url: str, prefix: str) -> None:
    async with nodes(url, prefix, 2, quiet_rooms={"root"}, **QUIET) as [(a, ra), (b, rb)]:
        await a.transport.flush()
        published = a.transport.published
        await join(a, "root", "a1", "a2")
        await join(b, "root", "b1")
        await a.transport.flush()
        assert a.transport.published == published  # no joins, no member-list requests
        # A quiet room has nothing to wait for at a join: have the broker confirm each
        # node's subscription (a publish behind it, flushed) before publishing into it.
        for node in (a, b):
            node.publish_room("warm-up", b"")
            await node.transport.flush()
        a.publish_room("root", b"to everyone in root")
        b.publish_room("root", b"back")
        await eventually(lambda: rb.frames == [("root", b"to everyone in root", None)]
                         and ra.frames == [("root", b"back", None)])
        assert a.remote_members("root") == [] and ra.joined == [] and rb.joined == []
        b.local_left("root", "b1")
        b.publish_all(b"after the leave")  # the anchor: a leave would reach a before it
        await eventually(lambda: ra.all == [(b"after the leave", None)], what="the anchor")
        assert ra.left == [] and b.state()["rooms"] == 0


async def test_a_burst_of_100_is_one_round_trip(url: str, prefix: str) -> None:
    async with nodes(url, prefix, 2, **QUIET) as [(a, _), (b, rb)]:
        await join(a, "r", "a1")
        await join(b, "r", "b1")
        await a.transport.flush()
        before = a.transport.round_trips
        for i in range(100):
            a.publish_room("r", b"%03d" % i)
        await a.transport.flush()
        assert a.transport.round_trips - before == 1
        await eventually(lambda: len(rb.frames) == 100)
        assert [f for _, f, _ in rb.frames] == [b"%03d" % i for i in range(100)]


async def test_order_per_room_per_publishing_node(url: str, prefix: str) -> None:
    """Frames and presence one node publishes into a room arrive at every other node in
    that node's publish order; two publishers interleave, each in its own order."""
    async with nodes(url, prefix, 3, **QUIET) as [(a, _), (b, _), (c, rc)]:
        await join(a, "r", "a0")
        await join(b, "r", "b0")
        await join(c, "r", "c0")
        for turn in range(10):
            for i in range(30):
                a.publish_room("r", b"a:%03d" % (turn * 30 + i))
                b.publish_room("r", b"b:%03d" % (turn * 30 + i))
            a.local_connected(f"a-new{turn}")
            a.local_joined("r", f"a-new{turn}")
            a.publish_room("r", b"a:after-join-%d" % turn)
            await suspend()  # the two publishers interleave
        await eventually(lambda: len(rc.frames) == 610, what="610 frames")
        from_a = [f for _, f, _ in rc.frames if f.startswith(b"a:")]
        from_b = [f for _, f, _ in rc.frames if f.startswith(b"b:")]
        expected_a = []
        for turn in range(10):
            expected_a += [b"a:%03d" % (turn * 30 + i) for i in range(30)]
            expected_a.append(b"a:after-join-%d" % turn)
        assert from_a == expected_a
        assert from_b == [b"b:%03d" % i for i in range(300)]
        # Each join reached c before the frame a published after it.
        for turn in range(10):
            joined_at = rc.log.index(("joined", "r", f"a-new{turn}"))
            frame_at = rc.log.index(("frame", "r", b"a:after-join-%d" % turn, None))
            assert joined_at < frame_at


async def test_goodbye_drops_members_at_once(url: str, prefix: str) -> None:
    async with nodes(url, prefix, 2, **QUIET) as [(a, ra), (b, _)]:
        await join(a, "r", "a1")
        await join(b, "r", "b1", "b2")
        assert sorted(a.remote_members("r")) == ["b1", "b2"]
        start = time.monotonic()
        await b.close()
        await eventually(lambda: sorted(ra.left) == [("r", "b1"), ("r", "b2")], timeout=2)
        print(f"goodbye seen after {time.monotonic() - start:.3f} s")
        assert a.remote_members("r") == [] and a.state()["nodes"] == []


async def test_restart_with_same_node_id_drops_the_old_members(url: str, prefix: str) -> None:
    async with nodes(url, prefix, 2, **QUIET) as [(a, ra), (b, _)]:
        await join(a, "r", "a1")
        await join(b, "r", "b1")
        # b's process "dies" without a goodbye; it comes back with the same node id.
        await b.transport.close()
        again = Cluster(create(b.transport.raw_url), node_id=b.node_id, prefix=prefix, **QUIET)
        start = time.monotonic()
        await again.start(Recorder())
        try:
            await eventually(lambda: ("r", "b1") in ra.left, timeout=5, what="old b1 left")
            assert time.monotonic() - start < scaled(5)  # not the 90 s node_timeout
            await join(again, "r", "b9")
            await eventually(lambda: ("r", "b9") in ra.joined)
            assert a.remote_members("r") == ["b9"]
            assert again.remote_members("r") == ["a1"]
        finally:
            await again.close()


async def test_room_ready_is_bounded_by_sync_timeout(url: str, prefix: str) -> None:
    sync_timeout = scaled(0.3)
    async with nodes(url, prefix, 3, sync_timeout=sync_timeout, **QUIET) as [
            (a, _), (b, _), (c, _)]:
        await join(a, "r", "a1")
        await b.transport.close()  # alive for the others (no goodbye) but never answers
        start = time.monotonic()
        await join(c, "r", "c1")
        waited = time.monotonic() - start
        # sync_timeout, not node_timeout (90 s) or forever
        assert waited < sync_timeout + scaled(1.0), waited
        assert c.remote_members("r") == ["a1"]  # a answered; b's silence was waited out


async def test_churn_leaves_no_ghosts(url: str, prefix: str) -> None:
    """Members join and leave on two nodes while a third keeps leaving and re-joining the
    room (each time asking for the member lists afresh) and a fourth watches from the
    start: when it settles, every list is exactly the other nodes' local members, and the
    watcher's presence events add up to its list."""
    rng = random.Random(7)
    async with nodes(url, prefix, 4, **QUIET) as [(a, _), (b, _), (c, _), (d, rd)]:
        await join(d, "r", "d1")
        local: dict[Cluster, set[str]] = {a: set(), b: set()}
        for cluster in (a, b):
            for i in range(8):
                cluster.local_connected(f"{cluster.node_id}-{i}")
        c.local_connected("c1")
        for step in range(300):
            cluster = rng.choice((a, b))
            member = f"{cluster.node_id}-{rng.randrange(8)}"
            if member in local[cluster]:
                cluster.local_left("r", member)
                local[cluster].discard(member)
            else:
                cluster.local_joined("r", member)
                local[cluster].add(member)
            if step % 25 == 0:
                c.local_left("r", "c1")
                c.local_joined("r", "c1")
            if step % 3 == 0:
                await suspend()  # the nodes' messages interleave with the churn
        await c.room_ready("r")
        expect = {
            a: local[b] | {"c1", "d1"},
            b: local[a] | {"c1", "d1"},
            c: local[a] | local[b] | {"d1"},
            d: local[a] | local[b] | {"c1"},
        }
        for cluster, members in expect.items():
            if cluster in local and not local[cluster]:
                continue  # no local member left there: that node no longer follows the room
            await eventually(lambda cl=cluster, m=members: set(cl.remote_members("r")) == m,
                             what=f"{cluster.node_id}'s list")
        # And it stays so, no late ghost: each node publishes an anchor after all its
        # presence, and once every node has every other's, their lists are final.
        anchors = {cluster: cluster.transport.received for cluster in expect}
        for cluster in expect:
            cluster.publish_all(b"settled")
        await eventually(lambda: rd.all.count((b"settled", None)) == 3, what="anchors at d")
        for cluster in (a, b, c):
            await eventually(lambda cl=cluster: cl.transport.received >= anchors[cl] + 3,
                             what=f"anchors at {cluster.node_id}")
        for cluster, members in expect.items():
            if cluster not in local or local[cluster]:
                listed = cluster.remote_members("r")
                assert set(listed) == members and len(listed) == len(members)
        assert rd.present("r") == expect[d]


async def test_state_reports_nodes_and_counters(url: str, prefix: str) -> None:
    async with nodes(url, prefix, 2, **QUIET) as [(a, _), _]:
        state = a.state()
        for key in ("url", "connected", "reconnects", "published", "received", "dropped",
                    "round_trips", "buffered", "node_id", "node", "nodes", "rooms", "clients"):
            assert key in state, key
        assert state["connected"] is True and state["node_id"] == "n0"
        assert state["nodes"] == ["n1"] and state["node"].startswith("n0:")


async def test_unreachable_broker_at_start() -> None:
    cluster = Cluster(create("redis://127.0.0.1:1/0", timeout=1.0), node_id="x")
    with pytest.raises(ConnectionError):
        await cluster.start(Recorder())


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="node_id"):
        Cluster("memory://x", node_id="a.b")
    with pytest.raises(ValueError, match="prefix"):
        Cluster("memory://x", prefix="a.*")
    with pytest.raises(ValueError, match="twice"):
        Cluster("memory://x", heartbeat_interval=1, node_timeout=1.5)
    with pytest.raises(RuntimeError, match="start"):
        Cluster("memory://x").local_joined("r", "m")


class _RaisingRecorder(Recorder):
    def remote_left(self, room: str, member: str) -> None:
        super().remote_left(room, member)
        raise RuntimeError("a server callback failed")


async def test_heartbeats_outlive_a_failing_callback(prefix: str) -> None:
    """A remote_left raising while the heartbeat round drops a silent node must not end
    the heartbeats: the others would declare this node gone too."""
    url = f"memory://{uuid.uuid4().hex}"
    options = {"heartbeat_interval": scaled(0.05), "node_timeout": scaled(0.3),
               "sync_timeout": scaled(0.1)}
    a = Cluster(create(url), node_id="a", prefix=prefix, **options)
    b = Cluster(create(url), node_id="b", prefix=prefix, **options)
    c = Cluster(create(url), node_id="c", prefix=prefix, **options)
    ra = _RaisingRecorder()
    await a.start(ra)
    await b.start(Recorder())
    await c.start(Recorder())
    try:
        await join(a, "r", "a1")
        await join(b, "r", "b1")
        await eventually(lambda: a.remote_members("r") == ["b1"])
        assert b._ticker is not None
        b._ticker.cancel()  # b goes silent without a goodbye
        await eventually(lambda: ("r", "b1") in ra.left, what="b declared gone")
        # a must still be heard by c: c keeps getting a's heartbeats (b is silent) for
        # over three node_timeouts after the failing round.
        heard = c.transport.received
        await eventually(lambda: c.transport.received >= heard + 20, what="a heard by c")
        assert a._ticker is not None and not a._ticker.done()
        assert "a" in c.state()["nodes"]
    finally:
        for node in (a, b, c):
            await node.close()


async def test_no_member_list_request_for_a_room_left_meanwhile(prefix: str) -> None:
    url = f"memory://{uuid.uuid4().hex}"
    async with nodes(url, prefix, 2, **QUIET) as [(a, _), (b, _)]:
        heard: list[bytes] = []
        spy = create(url)
        await spy.connect(lambda up: None)
        await spy.subscribe(a.names.room("r"), heard.append)
        await join(b, "r", "b1")
        a.local_connected("a1")
        a.local_joined("r", "a1")
        # The request is queued for the next turn: the leave must come within this one.
        await eventually(lambda: a._rooms["r"].subscribed, every_turn=True, what="subscribed")
        a.local_left("r", "a1")
        # The anchor: a's LEFT, which comes after a request it would have sent.
        await eventually(lambda: any(data[0] == env.LEFT for data in heard), what="a's LEFT")
        assert [data[0] for data in heard if data[2:].startswith(a.key.encode())] == [
            env.JOINED, env.LEFT]  # no member-list request
        await spy.close()



async def test_cancelling_start_is_a_cancel_not_a_connection_error(prefix: str) -> None:
    cluster = Cluster(create(f"memory://{uuid.uuid4().hex}"), node_id="a", prefix=prefix)
    starting = asyncio.get_running_loop().create_task(cluster.start(Recorder()))
    await suspend()  # the start runs up to its first wait
    assert cluster.transport.connected and not cluster._started  # awaiting subscriptions
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert not cluster.transport.connected
