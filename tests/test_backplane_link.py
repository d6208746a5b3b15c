"""The link to the broker, against a real redis-server and nats-server of the test's own:
a stalled broker (SIGSTOP) is noticed within the probe's deadline, the link state says so
(up, degraded, down), the cluster tells the server when it goes down and when it is back
(messages may have been lost), reconnect attempts come at least every second, and the
outage is counted; and one sender's share of the outgoing buffer keeps the others' frames
flowing while it floods."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
import uuid
from typing import Any

import pytest
from clusterkit import eventually, join, nodes, pause
from rawclient import RawClient, connect, encode
from services import Broker
from waiting import pace

import roomer
from roomer.backplane import create

FAST = {"heartbeat_interval": 0.2, "node_timeout": 1.0}


@pytest.fixture(params=["redis", "nats"])
def broker(request: pytest.FixtureRequest) -> Broker:
    found: Broker = request.getfixturevalue(f"private_{request.param}")
    return found


async def test_a_stalled_broker_is_noticed_and_the_server_told(broker: Broker,
                                                               prefix: str) -> None:
    """SIGSTOP of the broker: the TCP connections stay up and nothing answers. Each node's
    probe finds it within its deadline (1.5 s; it took 5 s, with /healthz saying
    "connected"), the link goes degraded then down, link_down fires, and what is
    published meanwhile is dropped and counted. SIGCONT: the nodes reconnect, link_up
    fires with how long it was down, and frames cross again."""
    async with nodes(broker.url, prefix, 2, **FAST) as [(a, ra), (b, rb)]:
        await join(a, "r", "a1")
        await join(b, "r", "b1")
        a.publish_room("r", b"before")
        await eventually(lambda: ("r", b"before", None) in rb.frames)
        assert a.state()["link"] == "up" and a.state()["outages"] == 0
        assert broker.proc is not None
        stopped = time.monotonic()
        await pause(broker.proc.pid)
        try:
            seen: list[str] = []

            def link_of_a() -> bool:
                state = a.state()["link"]
                if not seen or seen[-1] != state:
                    seen.append(state)
                return state == "down"

            await eventually(link_of_a, timeout=5, what="a's link down")
            noticed = time.monotonic() - stopped
            await eventually(lambda: b.state()["link"] == "down", timeout=5)
            assert ra.links == [("down", 0.0)] and rb.links == [("down", 0.0)]
            assert "degraded" in seen and seen[-1] == "down", seen
            dropped = a.state()["dropped_down"]
            assert not a.publish_room("r", b"lost")
            assert a.state()["dropped_down"] == dropped + 1
            await pace(0.5)  # the link stays down while the broker is stopped
            assert a.state()["link"] == "down"
        finally:
            os.kill(broker.proc.pid, signal.SIGCONT)
        resumed = time.monotonic()
        await eventually(lambda: ra.links[-1][0] == "up" and rb.links[-1][0] == "up",
                         timeout=5, what="link_up on both nodes")
        back = time.monotonic() - resumed
        assert ra.links[-1][1] >= 0.5  # how long it was down
        a.publish_room("r", b"after")
        await eventually(lambda: ("r", b"after", None) in rb.frames, what="frames cross")
        assert ("r", b"lost", None) not in rb.frames
        state = a.state()
        assert state["link"] == "up" and state["outages"] == 1
        assert state["down_seconds"] >= round(ra.links[-1][1], 3) - 0.001
        print(f"\n[{broker.kind}] stalled broker: link down {noticed:.2f} s after SIGSTOP "
              f"(seen: {' -> '.join(seen)}); link_up {back:.2f} s after SIGCONT")


async def test_reconnect_attempts_come_at_least_every_second(broker: Broker,
                                                             prefix: str) -> None:
    """A broker down 5 s: the transport retries at least every second (its backoff is
    capped at reconnect_max, 1 s), so it is back within a second or so of the broker
    (NATS' backoff made a 5 s outage a 10 s blackout)."""
    transport = create(broker.url, timeout=2.0)
    states: list[tuple[bool, float]] = []
    await transport.connect(lambda up: states.append((up, time.monotonic())))
    try:
        broker.stop()
        await eventually(lambda: not transport.connected, what="outage seen")
        await pace(5)  # the outage under test
        broker.start()
        started = time.monotonic()
        await eventually(lambda: transport.connected, timeout=5, what="reconnected")
        took = time.monotonic() - started
        print(f"\n[{broker.kind}] back {took:.2f} s after the broker (down 5 s)")
        assert [up for up, _ in states] == [False, True]
        assert transport.reconnect_max == 1.0
        assert transport.state()["outages"] == 1
        assert transport.state()["down_seconds"] >= 5
    finally:
        await transport.close()


async def test_one_senders_flood_does_not_take_the_others_frames(
        request: pytest.FixtureRequest, prefix: str, url: str) -> None:
    """A client relaying 1 MiB frames far faster than the broker takes them, and an
    innocent pair (a1 on node A, b1 on node B) exchanging ticks: the flood's excess is
    dropped and counted as the flooder's (publish_room says False), the pair loses
    nothing (regression: the shared 16 MiB buffer filled and the pair lost ticks)."""
    # Both nodes share this loop, which the flood keeps busy: no heartbeats mid-test (a
    # stall past node_timeout would make the nodes start over, dropping what waits).
    quiet = {"heartbeat_interval": 30.0, "node_timeout": 90.0}
    async with nodes(url, prefix, 2, **quiet) as [(a, _), (b, rb)]:
        await join(a, "flood", "heavy")
        await join(b, "flood", "sink")
        await join(a, "calm", "a1")
        await join(b, "calm", "b1")
        big = b"x" * (1 << 20)
        taken = refused = 0
        ticks = 100
        for turn in range(ticks):
            for _ in range(24):  # 24 MiB a turn, past the node's 16 MiB buffer
                if a.publish_room("flood", big, sender="heavy"):
                    taken += 1
                else:
                    refused += 1
            # The innocent's tick comes after the flood in the same turn.
            assert a.publish_room("calm", b"tick %d" % turn, sender="a1")
            await pace(0.005)  # one turn of the flood after another
        await eventually(lambda: len([f for r, f, _ in rb.frames if r == "calm"]) == ticks,
                         timeout=30, what="every tick")
        got = [f for r, f, _ in rb.frames if r == "calm"]
        assert got == [b"tick %d" % i for i in range(ticks)]
        state = a.state()
        print(f"\n[{url.partition(':')[0]}] flood: {taken} MiB taken, {refused} refused "
              f"(dropped_share {state['dropped_share']}); {len(got)}/{ticks} ticks arrived")
        assert refused > 0 and state["dropped_share"] == refused
        assert taken > 0  # the flooder still gets its share through


async def test_a_nats_connection_lost_inside_nats_pys_close_is_taken_as_lost_at_once(
        private_nats: Broker, caplog: pytest.LogCaptureFixture) -> None:
    """The broker goes while data waits in nats-py's buffer and uvloop has already closed
    the socket: nats-py's close writes that data anyway, the RuntimeError stops it before
    its closed callback, and its read loop logs the error with a traceback (a CI run of
    the broker-restart test saw it). The transport takes that as the loss at once, logs
    the loss itself, reconnects, and frames cross again. The probe is made too slow to be
    what notices; the fault is made exact: data put in nats-py's buffer, the socket
    aborted under it. That broken-off close also left the subscriptions' tasks waiting:
    they are ended, not collected pending (asyncio logs each of those as an error)."""
    slow_probe = {"probe_interval": 60.0, "probe_timeout": 120.0}
    a = create(private_nats.url, timeout=2.0, **slow_probe)
    b = create(private_nats.url, timeout=2.0, **slow_probe)
    states: list[bool] = []
    got: list[bytes] = []
    await a.connect(states.append)
    await b.connect(lambda up: None)
    try:
        await b.subscribe("c", got.append)
        await a.subscribe("d", got.append)
        nc = a._nc
        nc._pending.append(b"PING\r\n")
        nc._pending_data_size += 6
        nc._transport._io_writer.transport.abort()
        del nc
        await eventually(lambda: states == [False], timeout=5, what="the loss seen")
        await eventually(lambda: a.connected, timeout=10, what="reconnected")
        assert states == [False, True] and a.state()["outages"] == 1
        a.publish("c", b"after")
        await eventually(lambda: got == [b"after"], what="frames cross")
    finally:
        await a.close()
        await b.close()
    # The broken-off client, and any task of its still pending: a pending task collected
    # is logged as an error there and then.
    gc.collect()
    lost = [r.getMessage() for r in caplog.records if "lost the broker" in r.getMessage()]
    assert len(lost) == 1 and "ConnectionError: connection to NATS lost" in lost[0], lost
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]


@pytest.fixture(params=["redis", "nats"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


async def test_the_memory_transport_has_no_probe(prefix: str) -> None:
    transport = create(f"memory://{uuid.uuid4().hex}")
    await transport.connect(lambda up: None)
    assert transport._probe() is None and transport.state()["link"] == "up"
    await transport.close()


@pytest.mark.server_process
@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_an_innocent_pair_loses_nothing_while_one_client_floods(
        kind: str, request: pytest.FixtureRequest, server_process: Any, prefix: str) -> None:
    """Two ``roomer serve`` nodes. A client on node A writes 200 relays of 1 MiB back to
    back into a room whose other member is on node B (which does not read: its outbox
    drops them); meanwhile a1 (node A) and b1 (node B) send each other a numbered tick
    every 20 ms. Every tick arrives, in order; the flood's excess is dropped and counted
    as the flooder's (regression: the flood filled the node's shared buffer, 619 frames
    dropped and the pair lost ticks)."""
    url = str(request.getfixturevalue(f"{kind}_url"))
    options = {"backplane": url, "backplane_prefix": prefix, "rate_limit": None,
               "error_limit": None}
    node_a, node_b = await asyncio.gather(
        server_process({**options, "node_id": "a"}, ("scaleout_app:setup",)),
        server_process({**options, "node_id": "b"}, ("scaleout_app:setup",)))
    # No client keepalive: this process is busy writing the flood.
    heavy, sink, a1, b1 = [await connect(node.url, ping_interval=None, max_size=None)
                           for node in (node_a, node_b, node_a, node_b)]
    async def met() -> bool:  # the nodes meet at their hellos
        return (await node_a.metrics()).get("roomer_backplane_nodes") == 1

    await eventually(met, 10, what="the nodes met")
    for room, first, second in (("flood", heavy, sink), ("calm", a1, b1)):
        await first.join(room)
        await second.join(room)
        assert (await first.expect("new_member", room)).text == second.id
    big = encode("flood", "big", payload=b"x" * ((1 << 20) - 64))
    ticks = 100

    async def flood() -> int:
        for _ in range(200):
            await heavy.ws.send(big)
        return 200

    async def tick(client: RawClient) -> None:
        for i in range(ticks):
            await client.ws.send(encode("calm", "tick", payload=str(i)))
            await pace(0.02)  # a client ticking at 50 Hz

    async def heard(client: RawClient, sender: RawClient) -> list[int]:
        got: list[int] = []
        while len(got) < ticks:
            msg = await client.recv(timeout=15)
            if msg.event == "tick" and msg.src == sender.id:
                got.append(int(msg.payload))
        return got

    flooding = asyncio.get_running_loop().create_task(flood())
    try:
        got = await asyncio.gather(heard(b1, a1), heard(a1, b1), tick(a1), tick(b1))
    finally:
        sent = await asyncio.wait_for(flooding, 60)
    metrics = await node_a.metrics()
    print(f"\n[{kind}] flood: {sent} MiB sent by one client; node A dropped "
          f"{metrics['roomer_backplane_dropped_total']:.0f} frames, "
          f"{metrics.get('roomer_backplane_dropped_share_total', 0):.0f} past its share; "
          f"ticks a1->b1 {len(got[0])}/{ticks}, b1->a1 {len(got[1])}/{ticks}")
    assert got[0] == list(range(ticks)) and got[1] == list(range(ticks))
    for client in (heavy, sink, a1, b1):
        with contextlib.suppress(Exception):
            await client.close()


def test_the_link_and_buffer_options_are_validated() -> None:
    for options, error, text in (
            ({"backplane_buffer": 1 << 20}, ValueError, "at least twice max_message_size"),
            ({"backplane_buffer": 1000}, ValueError, "at least 65536"),
            ({"backplane_buffer": "16M"}, TypeError, "must be an int"),
            ({"backplane_sender_share": 0}, ValueError, "positive"),
            ({"backplane_sender_share": 1.5}, ValueError, "at most 1"),
            ({"backplane_probe_timeout": 0.05}, ValueError, "at least 0.1"),
            ({"backplane_probe_timeout": "1"}, TypeError, "must be a number")):
        with pytest.raises(error, match=text):
            roomer.Server(backplane="memory://x", **options)
    # Without a backplane the buffer is not tied to max_message_size.
    roomer.Server(backplane_buffer=1 << 20)


async def test_a_server_builds_its_transport_from_the_options(prefix: str) -> None:
    server = roomer.Server(backplane=f"memory://{uuid.uuid4().hex}", backplane_prefix=prefix,
                           backplane_buffer=4 << 20, backplane_sender_share=0.25,
                           backplane_probe_timeout=0.9)
    await server.start("127.0.0.1", 0)
    try:
        cluster = server.registry.cluster
        assert cluster is not None
        transport = cluster.transport
        assert (transport.max_buffer, transport.sender_share) == (4 << 20, 0.25)
        assert (transport.probe_interval, transport.probe_timeout) == (0.3, 0.9)
        assert cluster.max_payload == 2 << 20
        state = server.stats()["backplane"]
        assert state["link"] == "up" and state["outages"] == 0
    finally:
        await server.shutdown(timeout=2.0)


@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_v2_clients_and_healthz_hear_of_an_outage(kind: str,
                                                       request: pytest.FixtureRequest) -> None:
    # The server side of the link events: a v2 client is told `cluster.down`, then
    # `cluster.up` with how long the link was down; /healthz says degraded meanwhile; a
    # v1 client is told nothing (its next message is what it is sent next).
    from rawclient import http_get
    from v2client import connect2

    broker: Broker = request.getfixturevalue(f"private_{kind}")
    server = roomer.Server(backplane=broker.url, backplane_prefix=f"t{uuid.uuid4().hex[:8]}")
    await server.start("127.0.0.1", 0)
    try:
        v2 = await connect2(server)
        v1 = await connect(server)
        assert (await http_get(server, "/healthz"))[2] == b"ok\n"
        broker.stop()
        down = await v2.expect("cluster.down", "root", timeout=10)
        assert down.src == "" and "dropped" in down.json()["message"]
        assert (await http_get(server, "/healthz"))[2] == b"degraded\n"
        broker.start()
        up = await v2.expect("cluster.up", "root", timeout=15)
        assert up.json()["down_for"] > 0 and "lost" in up.json()["message"]
        await eventually(lambda: server.registry.cluster is not None
                         and server.registry.cluster.state()["link"] == "up", 5)
        assert (await http_get(server, "/healthz"))[2] == b"ok\n"
        server.send_to(v1.id, "marker", b"after")
        assert (await v1.recv()).event == "marker"  # no link event before it
        await v2.close()
        await v1.close()
    finally:
        await server.shutdown(timeout=2)
