"""Backplane failures against real brokers: a node killed with SIGKILL (its members leave
the others' lists within the default bound), the broker restarted mid-run (traffic and
member lists heal by themselves, drops counted, nothing queued), and one node cut off its
broker for longer than node_timeout (dropped by the others, then heard again)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from clusterkit import Proxy, Recorder, eventually, join, nodes, pause, proxied
from services import Broker
from waiting import TIMEOUT, pace, pace_blocking, scaled

import roomer
from roomer.backplane import Cluster, create
from roomer.backplane import cluster as cluster_module

NODE = Path(__file__).with_name("backplane_node.py")
FAST = {"heartbeat_interval": 0.2, "node_timeout": 1.0}


@pytest.mark.server_process  # the killed node is a child process: one loop here is enough
@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_sigkilled_node_leaves_within_ten_seconds(
        kind: str, request: pytest.FixtureRequest, prefix: str) -> None:
    url = str(request.getfixturevalue(f"{kind}_url"))
    env = {**os.environ, "PYTHONPATH": str(Path(roomer.__file__).parent.parent)}
    async with nodes(url, prefix, 1) as [(a, ra)]:  # default heartbeat and node_timeout
        await join(a, "r", "a1")
        proc = subprocess.Popen([sys.executable, str(NODE), url, prefix, "victim", "r",
                                 "k1", "k2"], stdout=subprocess.PIPE, env=env)
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline), scaled(20))
            assert line == b"ready\n"
            await eventually(lambda: sorted(a.remote_members("r")) == ["k1", "k2"])
            assert ra.joined == [("r", "k1"), ("r", "k2")]
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=scaled(10))
        took = await eventually(lambda: {("r", "k1"), ("r", "k2")} <= set(ra.left),
                                timeout=12, what="the killed node's members left")
        print(f"{kind}: SIGKILLed node's members reported left after {took:.2f} s")
        assert took < 10
        assert a.remote_members("r") == [] and a.state()["nodes"] == []
        assert a.state()["nodes_lost"] == 1


@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_broker_restart_heals_traffic_and_lists(
        kind: str, request: pytest.FixtureRequest, prefix: str,
        caplog: pytest.LogCaptureFixture) -> None:
    broker: Broker = request.getfixturevalue(f"private_{kind}")
    caplog.set_level(logging.WARNING, logger="roomer.backplane")
    async with nodes(broker.url, prefix, 2, **FAST) as [(a, ra), (b, rb)]:
        await join(a, "r", "a1")
        await join(a, "r2", "a2")
        await join(b, "r", "b1")
        await join(b, "r2", "b2")
        await eventually(lambda: b.remote_members("r2") == ["a2"] and
                         a.remote_members("r") == ["b1"])
        broker.stop()
        await eventually(lambda: not a.transport.connected and not b.transport.connected)
        # Life goes on locally while the broker is away...
        a.local_left("r2", "a2")  # a's last member there: b must not keep a ghost
        await join(a, "r", "a3")  # ready at once: nobody to ask
        b.local_left("r", "b1")
        await join(b, "r", "b3")
        for _ in range(10_000):
            a.publish_room("r", b"lost" * 16)
        assert a.state()["dropped"] >= 10_000 and a.state()["buffered"] == 0
        await pace(1.5)  # the outage lasts past node_timeout: still nobody declared dead
        broker.start()
        await eventually(lambda: a.transport.connected and b.transport.connected, timeout=10,
                         what="both reconnected")
        await eventually(lambda: sorted(b.remote_members("r")) == ["a1", "a3"]
                         and b.remote_members("r2") == [] and a.remote_members("r") == ["b3"],
                         what="lists healed")
        assert ("r2", "a2") in rb.left and ("r", "a3") in rb.joined
        assert ("r", "b1") in ra.left and ("r", "b3") in ra.joined
        assert a.state()["nodes_lost"] == 0 and b.state()["nodes_lost"] == 0
        a.publish_room("r", b"after")
        await eventually(lambda: ("r", b"after", None) in rb.frames, what="traffic resumed")
        assert all(frame != b"lost" * 16 for _, frame, _ in rb.frames)
        assert a.state()["reconnects"] == 1 and b.state()["reconnects"] == 1
    lost = [r for r in caplog.records if "lost the broker" in r.getMessage()]
    assert len(lost) == 2  # once per node, not per message or attempt
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_too_many_rooms_left_while_away_starts_a_new_incarnation(
        private_redis: Broker, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the bound on rooms left while the broker was away, a node does not list them
    on reconnect: it says goodbye under its old key and comes back under a new one, so the
    others drop all its old members (no ghost either way) and hear its current ones."""
    monkeypatch.setattr(cluster_module, "_MAX_UNCERTAIN", 3)
    async with nodes(private_redis.url, prefix, 2, **FAST) as [(a, _), (b, rb)]:
        for i in range(5):
            await join(a, f"r{i}", f"a{i}")
            await join(b, f"r{i}", f"b{i}")
        await join(a, "kept", "k1")
        await join(b, "kept", "bk")
        await eventually(lambda: all(b.remote_members(f"r{i}") == [f"a{i}"] for i in range(5)))
        old_key = a.key
        private_redis.stop()
        await eventually(lambda: not a.transport.connected and not b.transport.connected)
        for i in range(5):
            a.local_left(f"r{i}", f"a{i}")
        private_redis.start()
        await eventually(lambda: a.transport.connected and b.transport.connected, timeout=10)
        await eventually(lambda: all(b.remote_members(f"r{i}") == [] for i in range(5))
                         and b.remote_members("kept") == ["k1"], what="b's lists healed")
        assert a.key != old_key and a.key.startswith("n0:")
        assert b.state()["nodes"] == ["n0"]
        assert ("kept", "k1") in rb.left and rb.joined[-1] == ("kept", "k1")


async def test_many_rooms_left_while_connected_keep_the_incarnation(
        private_redis: Broker, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the same bound, but left while the broker heard every leave: a reconnect then
    has nothing uncertain to heal and keeps the node's key (regression: a new incarnation,
    every member reported left and joined again on every other node)."""
    monkeypatch.setattr(cluster_module, "_MAX_UNCERTAIN", 3)
    async with nodes(private_redis.url, prefix, 2, **FAST) as [(a, _), (b, rb)]:
        for i in range(5):
            await join(a, f"r{i}", f"a{i}")
        await join(a, "kept", "k1")
        await join(b, "kept", "bk")
        for i in range(5):
            a.local_left(f"r{i}", f"a{i}")
        await a.transport.flush()
        # Heartbeat rounds prune what the broker confirmed.
        await eventually(lambda: not a._uncertain, what="the leaves confirmed and pruned")
        old_key = a.key
        private_redis.stop()
        await eventually(lambda: not a.transport.connected and not b.transport.connected)
        private_redis.start()
        await eventually(lambda: a.transport.connected and b.transport.connected, timeout=10)
        # The anchor: a frame a publishes after its reconnect reaches b after whatever a
        # announced at the reconnect (a new incarnation's goodbye, leaves).
        a.publish_room("kept", b"after")
        await eventually(lambda: ("kept", b"after", None) in rb.frames, what="the anchor")
        assert a.key == old_key
        assert b.remote_members("kept") == ["k1"] and ("kept", "k1") not in rb.left


@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_node_cut_off_is_dropped_then_heard_again(
        kind: str, request: pytest.FixtureRequest, prefix: str) -> None:
    url = str(request.getfixturevalue(f"{kind}_url"))
    proxy, via_proxy = await proxied(url)
    async with nodes([url, via_proxy], prefix, 2, **FAST) as [(a, ra), (b, rb)]:
        await join(a, "r", "a1")
        await join(b, "r", "b1")
        await eventually(lambda: a.remote_members("r") == ["b1"])
        start = time.monotonic()
        await proxy.cut()
        await eventually(lambda: ("r", "b1") in ra.left, timeout=5, what="b dropped by a")
        print(f"{kind}: node cut off dropped after {time.monotonic() - start:.2f} s")
        assert b.remote_members("r") == ["a1"]  # b, cut off, declares nobody dead
        await join(b, "r", "b2")
        await join(a, "r", "a2")
        await proxy.restore()
        await eventually(lambda: sorted(a.remote_members("r")) == ["b1", "b2"]
                         and sorted(b.remote_members("r")) == ["a1", "a2"], timeout=10,
                         what="heard again, lists healed")
        assert ("r", "b1") in ra.joined[1:] and ("r", "b2") in ra.joined
        assert ("r", "a2") in rb.joined
        b.publish_room("r", b"back")
        await eventually(lambda: ("r", b"back", None) in ra.frames)
        # a had declared b dead: b heard it, and came back under a new key.
        assert b.state()["incarnations"] == 1 and a.state()["stale_dropped"] >= 1
    await proxy.cut()


@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_a_node_back_before_another_keeps_that_ones_members(
        kind: str, request: pytest.FixtureRequest, prefix: str) -> None:
    """After a broker restart, a node that reconnects first asks the others for their
    lists; one still reconnecting cannot answer, and its silence is not its members
    leaving (regression: they were reported left and then joined again when it came
    back). Only node_timeout takes a silent node's members away."""
    broker: Broker = request.getfixturevalue(f"private_{kind}")
    proxy = Proxy(broker.port)
    await proxy.start()
    via_proxy = broker.url.replace(f":{broker.port}", f":{proxy.port}")
    async with nodes([broker.url, via_proxy], prefix, 2, heartbeat_interval=0.2,
                     node_timeout=4.0) as [(a, ra), (b, rb)]:
        await join(a, "r", "a1")
        await join(b, "r", "b1")
        await eventually(lambda: a.remote_members("r") == ["b1"]
                         and b.remote_members("r") == ["a1"])
        await proxy.cut()  # b stays away after the broker is back
        broker.stop()
        await eventually(lambda: not a.transport.connected and not b.transport.connected)
        broker.start()
        await eventually(lambda: a.transport.connected, timeout=10, what="a reconnected")
        # a asked the others for their lists at the reconnect: ready once b's silence
        # was waited out (sync_timeout).
        await asyncio.wait_for(a.room_ready("r"), TIMEOUT)
        assert ra.left == [] and a.remote_members("r") == ["b1"]
        await proxy.restore()
        await eventually(lambda: b.transport.connected, timeout=10, what="b reconnected")
        b.publish_room("r", b"back")
        await eventually(lambda: ("r", b"back", None) in ra.frames, what="traffic resumed")
        assert ra.left == [] and ra.joined == [("r", "b1")]
        assert rb.left == [] and rb.joined == []  # a1 was in b1's join list
        assert b.remote_members("r") == ["a1"]
        assert a.state()["nodes_lost"] == 0
    await proxy.cut()


@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_close_cut_short_by_a_deadline_still_shuts_the_transport(
        kind: str, request: pytest.FixtureRequest, prefix: str) -> None:
    """A stalled broker (SIGSTOP: the connection stays up, nothing is answered) makes the
    goodbye's flush wait; the server's shutdown deadline cancels close() then, and the
    transport's tasks and connections must not be left running (regression)."""
    broker: Broker = request.getfixturevalue(f"private_{kind}")
    a = Cluster(create(broker.url, timeout=1.0), node_id="a", prefix=prefix, **FAST)
    await a.start(Recorder())
    await join(a, "r", "a1")
    assert broker.proc is not None
    me = asyncio.current_task()
    await pause(broker.proc.pid)
    try:
        a.publish_room("r", b"x")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(a.close(), scaled(0.3))
        transport: Any = a.transport
        assert not transport.connected
        assert transport._writer_task is None and transport._reconnect_task is None
        await eventually(lambda: asyncio.all_tasks() == {me}, timeout=3,
                         what="no transport task left behind")
        if kind == "redis":
            assert transport._pub is None and transport._reader_task is None
        else:
            assert transport._nc is None
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)


@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_nodes_stalled_while_the_broker_was_away_start_over_on_its_return(
        kind: str, request: pytest.FixtureRequest, prefix: str) -> None:
    """Both nodes' loop blocked past node_timeout while the broker is down: each starts
    over as a new incarnation, but only once the broker is back (its goodbye under the
    old key goes out first), so no member is ever counted twice, and every presence
    event adds up to the lists."""
    broker: Broker = request.getfixturevalue(f"private_{kind}")
    async with nodes(broker.url, prefix, 2, **FAST) as [(a, ra), (b, rb)]:
        await join(a, "r", "a1", "a2")
        await join(b, "r", "b1")
        await eventually(lambda: sorted(b.remote_members("r")) == ["a1", "a2"])
        keys = a.key, b.key
        broker.stop()
        await eventually(lambda: not a.transport.connected and not b.transport.connected)
        pace_blocking(2 * FAST["node_timeout"])  # this loop (both nodes) blocked
        a.publish_room("r", b"after the stall")  # dropped: the broker is away
        await pace(2 * FAST["heartbeat_interval"])  # heartbeats would go now: none can
        assert (a.key, b.key) == keys  # not while the goodbye would be lost
        broker.start()
        await eventually(lambda: a.key != keys[0] and b.key != keys[1], timeout=10,
                         what="new incarnations once the broker is back")
        await eventually(lambda: sorted(b.remote_members("r")) == ["a1", "a2"]
                         and a.remote_members("r") == ["b1"], what="lists healed")
        await pace(3 * FAST["heartbeat_interval"])  # and they stay so
        assert sorted(b.remote_members("r")) == ["a1", "a2"]
        assert a.remote_members("r") == ["b1"]
        assert rb.present("r") == {"a1", "a2"} and ra.present("r") == {"b1"}
        assert a.state()["incarnations"] == 1 and b.state()["incarnations"] == 1
