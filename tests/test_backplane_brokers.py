"""The backplane on broker setups beyond one server: a NATS cluster of two routed servers
(nodes on different servers share rooms; a node fails over to the other server), and a
broker that cuts off a node too slow to read (it reconnects and carries on)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from clusterkit import eventually, join, nodes
from services import Broker, find_binary, free_port, need
from waiting import pace_blocking, scaled

from roomer.backplane import create
from roomer.backplane import envelope as env

QUIET = {"heartbeat_interval": 30.0, "node_timeout": 90.0}


@pytest.fixture
def nats_pair(tmp_path: Path):  # type: ignore[no-untyped-def]
    need(find_binary("nats-server") is not None, "nats-server is not installed")
    routes = [free_port(), free_port()]
    servers = []
    for i in range(2):
        workdir = tmp_path / f"nats{i}"
        workdir.mkdir()
        servers.append(Broker("nats", workdir, [
            "--cluster_name", "roomer-test", "--cluster", f"nats://127.0.0.1:{routes[i]}",
            "--routes", f"nats://127.0.0.1:{routes[1 - i]}"]))
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


async def test_nats_cluster_shares_rooms_and_fails_over(nats_pair: list[Broker],
                                                        prefix: str) -> None:
    one, two = nats_pair
    both = f"{one.url},{two.url}"
    async with nodes([one.url, two.url, both], prefix, 3, **QUIET) as [
            (a, _), (b, rb), (c, rc)]:
        await eventually(lambda: all(len(n.state()["nodes"]) == 2 for n in (a, b, c)),
                         what="every node sees the two others across the route")
        await join(a, "r", "a1")
        await join(b, "r", "b1")
        rb.holding.add("b1")
        assert b.remote_members("r") == ["a1"]
        await join(c, "r", "c1")
        assert sorted(c.remote_members("r")) == ["a1", "b1"]
        a.publish_room("r", b"over-the-route")
        await eventually(lambda: ("r", b"over-the-route", None) in rb.frames)
        assert await a.send_direct("b1", b"psst") is True
        assert await a.send_direct("nobody", b"psst") is False  # no responders, cluster-wide
        # c's server dies: c moves to the other server and carries on.
        on = c.state()["server"]
        (one if on == f"127.0.0.1:{one.port}" else two).stop()
        await eventually(lambda: c.state()["connected"] and c.state()["reconnects"] == 1,
                         timeout=10, what="c failed over")
        assert c.state()["server"] != on
        survivor = b if on == f"127.0.0.1:{one.port}" else a
        survivor.publish_room("r", b"after-failover")
        await eventually(lambda: ("r", b"after-failover", None) in rc.frames)
        assert sorted(c.remote_members("r")) == ["a1", "b1"]


def _flood(url: str, channel: str, megabytes: int) -> None:
    """Publish ``megabytes`` of room frames from a thread with a loop of its own."""
    async def run() -> None:
        transport = create(url)
        await transport.connect(lambda up: None)
        frame = env.header(env.ROOM, b"flood:0") + b"\x00" + b"y" * 1024
        for _ in range(megabytes):
            for _ in range(1024):
                transport.publish(channel, frame)
            await transport.flush()
        await transport.close()

    asyncio.run(run())


@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_broker_cuts_off_a_stalled_node_which_comes_back(
        kind: str, tmp_path: Path, prefix: str) -> None:
    binary = "redis-server" if kind == "redis" else "nats-server"
    need(find_binary(binary) is not None, f"{binary} is not installed")
    if kind == "redis":
        extra = ["--client-output-buffer-limit", "pubsub 256kb 128kb 1"]
    else:
        config = tmp_path / "nats.conf"
        config.write_text("max_pending: 1048576\nwrite_deadline: \"1s\"\n")
        extra = ["-c", str(config)]
    broker = Broker(kind, tmp_path, extra)
    broker.start()
    try:
        async with nodes(broker.url, prefix, 2, **QUIET) as [(a, _), (b, rb)]:
            await join(a, "r", "a1")
            await join(b, "r", "b1")
            flood = threading.Thread(target=_flood, args=(broker.url, b.names.room("r"), 24))
            flood.start()
            # This loop (both nodes) reads nothing while the whole flood goes out, and a
            # while after: past the broker's limit for a client that does not read.
            flood.join(timeout=scaled(30))
            pace_blocking(1.5)  # the loop stalled on purpose: the broker cuts b off
            await eventually(lambda: b.state()["reconnects"] >= 1 and
                             a.state()["connected"] and b.state()["connected"],
                             timeout=15, what="b cut off and back")
            print(f"{kind}: {len(rb.frames)} of {24 * 1024} flood frames reached b")
            await eventually(lambda: a.remote_members("r") == ["b1"]
                             and b.remote_members("r") == ["a1"], what="lists intact")
            a.publish_room("r", b"after")
            await eventually(lambda: ("r", b"after", None) in rb.frames, what="traffic")
            assert len(rb.frames) < 24 * 1024 + 1  # the flood was cut short, not queued
    finally:
        broker.stop()
