"""Scale-out over real processes and real brokers: ``roomer serve`` nodes on
different ports sharing rooms through Redis and through NATS, clients spread over them;
a node killed with SIGKILL; the broker restarted under running nodes; ``--workers 2`` on
one port (its supervision: tests/test_workers_supervision.py). tests/test_scaleout.py covers
the same semantics with Servers in this process.

The servers run tests/scaleout_app.py: handlers that let a client make its node call
``broadcast``, ``broadcast_all``, ``send_to`` and ``members``. Timings that the docs state
(the SIGKILL announcement, the broker restart) are printed: ``pytest -s`` shows them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from rawclient import Msg, RawClient, connect, encode
from serverproc import ServerProcess, _spawn
from services import Broker, free_port
from waiting import eventually, pace_until, scaled

pytestmark = pytest.mark.server_process  # every server here is a child process

APP = ("scaleout_app:setup",)
Start = Callable[..., Awaitable[ServerProcess]]
KILL_BOUND = 10.0  # members of a SIGKILLed node announced left within 10 s
FORM_TIMEOUT = 15.0


@pytest.fixture(params=["redis", "nats"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def broker_url(broker_kind: str, request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{broker_kind}_url"))


@pytest.fixture
def private_broker(broker_kind: str, request: pytest.FixtureRequest) -> Broker:
    broker: Broker = request.getfixturevalue(f"private_{broker_kind}")
    return broker


# helpers ------------------------------------------------------------------------------


def node_options(url: str, prefix: str, node_id: str, **extra: Any) -> dict[str, Any]:
    return {"backplane": url, "backplane_prefix": prefix, "node_id": node_id, **extra}


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Poll ``check`` until it is true; the seconds it took (AssertionError after timeout,
    in seconds before scaling)."""
    return await eventually(check, timeout, what)


async def formed(servers: list[ServerProcess], timeout: float = FORM_TIMEOUT) -> None:
    """Every node is connected and knows every other one alive (nodes started together may
    miss each other's hello and meet at the next heartbeat)."""
    async def check() -> bool:
        for server in servers:
            metrics = await server.metrics()
            if (metrics.get("roomer_backplane_connected") != 1
                    or metrics.get("roomer_backplane_nodes") != len(servers) - 1):
                return False
        return True

    await until(check, timeout, "every node knows the others")


async def start_nodes(server_process: Start, url: str, prefix: str, count: int,
                      **extra: Any) -> list[ServerProcess]:
    servers = await asyncio.gather(*(
        server_process(node_options(url, prefix, f"n{i}", **extra), APP)
        for i in range(count)))
    await formed(list(servers))
    return list(servers)


async def call(client: RawClient, handler: str, **args: Any) -> Msg:
    """Make the client's node run one of scaleout_app's handlers; its answer."""
    await client.send("root", handler, payload=json.dumps(args))
    return await client.expect(handler)


async def members(client: RawClient, room: str) -> list[str]:
    """``server.members(room)`` on the client's node."""
    reply = await call(client, "api_members", room=room)
    assert reply.room == room
    listed = reply.json()
    assert isinstance(listed, list)
    return listed


async def events(client: RawClient, wanted: set[tuple[str, str, str]],
                 timeout: float = 10.0) -> list[Msg]:
    """Read until every (event, room, payload text) in ``wanted`` has arrived; what arrived
    in order. Anything else in between is an error."""
    missing = set(wanted)
    got: list[Msg] = []
    deadline = time.monotonic() + timeout
    while missing:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"still missing {missing}; got {got}")
        msg = await client.recv(left)
        key = (msg.event, msg.room, msg.payload.decode(errors="replace"))
        assert key in missing, f"unexpected {msg} while waiting for {missing}"
        missing.discard(key)
        got.append(msg)
    return got


async def numbered(client: RawClient, event: str, room: str, count: int,
                   timeout: float = 15.0) -> dict[str, list[int]]:
    """Read ``count`` messages of ``event``; their payloads (numbers) by sender, in
    arrival order."""
    by_src: dict[str, list[int]] = {}
    deadline = time.monotonic() + timeout
    for _ in range(count):
        msg = await client.recv(max(0.01, deadline - time.monotonic()))
        assert (msg.event, msg.room) == (event, room), msg
        by_src.setdefault(msg.src, []).append(int(msg.payload))
    return by_src


async def burst(client: RawClient, room: str, event: str, count: int) -> None:
    """``count`` numbered relays written back to back (the server reads them in batches)."""
    for i in range(count):
        await client.ws.send(_relay(room, event, str(i)))


def _relay(room: str, event: str, payload: str) -> bytes:
    return encode(room, event, payload=payload)


async def close_all(*clients: RawClient) -> None:
    for client in clients:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.ws.close(), scaled(2))


# two nodes -----------------------------------------------------------------------------


async def test_two_nodes_share_rooms_relays_direct_messages_and_api(
        server_process: Start, broker_url: str, prefix: str) -> None:
    node_a, node_b = await start_nodes(server_process, broker_url, prefix, 2)
    a1, a2 = await connect(node_a.url), await connect(node_a.url)
    b1, b2 = await connect(node_b.url), await connect(node_b.url)

    # Member lists and presence span the nodes.
    assert await a1.join("lobby") == [a1.id]
    assert await b1.join("lobby") == [b1.id, a1.id]
    assert (await a1.expect("new_member", "lobby")).text == b1.id
    assert await a2.join("lobby") == [a1.id, a2.id, b1.id]
    assert (await a1.expect("new_member", "lobby")).text == a2.id
    assert (await b1.expect("new_member", "lobby")).text == a2.id
    for client in (a1, b1):
        assert sorted(await members(client, "lobby")) == sorted([a1.id, a2.id, b1.id])
    # members() of a room without local members is empty: a node follows only its rooms.
    assert await a1.join("side") == [a1.id]
    assert await members(b1, "side") == []
    await a1.leave("side")

    # Relays cross in both directions, the sender excluded everywhere.
    await a1.send("lobby", "chat", payload=b"from a1")
    for client in (a2, b1):
        got = await client.expect("chat", "lobby")
        assert (got.src, got.dst, got.payload) == (a1.id, "", b"from a1")
    await b1.send("lobby", "chat", payload=b"from b1")
    for client in (a1, a2):
        got = await client.expect("chat", "lobby")
        assert (got.src, got.payload) == (b1.id, b"from b1")
    await a1.expect_nothing()
    await b1.expect_nothing()
    await b2.expect_nothing()  # not in the room, not a receiver

    # Direct messages: to an id on the other node, and to an id no node holds.
    await a1.send("root", "psst", dst=b2.id, payload=b"secret")
    got = await b2.expect("psst", "root")
    assert (got.src, got.dst, got.payload) == (a1.id, b2.id, b"secret")
    await b2.send("lobby", "psst", dst=a2.id, payload=b"back")
    got = await a2.expect("psst", "lobby")
    assert (got.src, got.dst, got.payload) == (b2.id, a2.id, b"back")
    await a1.send("root", "psst", dst=str(uuid.uuid4()), payload=b"lost")
    await a1.expect_error("no_such_client", "root", "psst")

    # The server API on one node reaches the other node's clients.
    reply = await call(b2, "api_broadcast", room="lobby", event="tick", payload="t1",
                       exclude=a2.id)
    assert reply.payload == b"1"  # the local receiver count: b1 (b2 is not a member)
    for client in (a1, b1):
        got = await client.expect("tick", "lobby")
        assert (got.src, got.payload) == ("", b"t1")
    await a2.expect_nothing()  # excluded on another node than the caller's
    # a2 is on the calling node and a member: it gets the tick before the handler's answer.
    await a2.send("root", "api_broadcast", payload=json.dumps(
        {"room": "lobby", "event": "tick", "payload": "t2"}))
    assert (await a2.expect("tick", "lobby")).payload == b"t2"
    assert (await a2.expect("api_broadcast")).payload == b"2"
    for client in (a1, b1):
        assert (await client.expect("tick", "lobby")).payload == b"t2"
    await a1.send("root", "api_broadcast_all", payload=json.dumps(
        {"event": "news", "payload": "all"}))
    assert (await a1.expect("news", "root")).payload == b"all"
    assert (await a1.expect("api_broadcast_all")).payload == b"2"  # a1 and a2
    for client in (a2, b1, b2):
        got = await client.expect("news", "root")
        assert (got.src, got.payload) == ("", b"all")
    reply = await call(a2, "api_send_to", id=b2.id, event="hey", payload="you")
    assert reply.json() is True
    got = await b2.expect("hey", "root")
    assert (got.src, got.dst, got.payload) == ("", "", b"you")
    # An id no node holds: True (handed to the other nodes), and nothing arrives anywhere.
    assert (await call(a2, "api_send_to", id=str(uuid.uuid4()), event="hey",
                       payload="x")).json() is True

    # Hooks run on the node that holds the client.
    for client, node in ((b1, node_b), (a1, node_a)):
        await client.send("hooked-r", "join")
        hook = await client.expect("on_join", "hooked-r")
        assert int(hook.payload) == node.pid
        await client.expect("join_ack", "hooked-r")
    assert (await b1.expect("new_member", "hooked-r")).text == a1.id
    # rooms(), kick() and root's members are this node's; root presence stays quiet.
    assert "hooked-r" in (await call(b2, "api_rooms")).json()
    assert "lobby" in (await call(b2, "api_rooms")).json()
    assert (await call(a1, "api_kick", id=b2.id)).json() is False
    assert sorted(await members(a1, "root")) == sorted([a1.id, a2.id])
    assert sorted(await members(b2, "root")) == sorted([b1.id, b2.id])

    # Leaves and disconnects are presence on the other node.
    await b2.join("lobby")
    for client in (a1, a2, b1):
        assert (await client.expect("new_member", "lobby")).text == b2.id
    await b1.leave("lobby")
    for client in (a1, a2, b2):
        assert (await client.expect("member_left", "lobby")).text == b1.id
    await a2.close()
    for client in (a1, b2):
        assert (await client.expect("member_left", "lobby")).text == a2.id
    assert sorted(await members(a1, "lobby")) == sorted(await members(b2, "lobby")) == sorted(
        [a1.id, b2.id])
    assert "side" not in (await call(b2, "api_rooms")).json()  # only A ever had it
    for client in (a1, b1, b2):
        await client.expect_nothing()
    await close_all(a1, b1, b2)


# three nodes ---------------------------------------------------------------------------


async def test_three_nodes_presence_and_one_publishers_order(
        server_process: Start, broker_url: str, prefix: str) -> None:
    # The bursts are far above the per-client rate limit: it is off for this test.
    servers = await start_nodes(server_process, broker_url, prefix, 3, rate_limit=None,
                                byte_limit=None)
    a, b, c = [await connect(server.url) for server in servers]
    assert await a.join("arena") == [a.id]
    assert sorted(await b.join("arena")) == sorted([a.id, b.id])
    assert (await a.expect("new_member", "arena")).text == b.id
    listed = await c.join("arena")
    assert listed[0] == c.id and sorted(listed) == sorted([a.id, b.id, c.id])
    for client in (a, b):
        assert (await client.expect("new_member", "arena")).text == c.id
    for client in (a, b, c):
        assert sorted(await members(client, "arena")) == sorted([a.id, b.id, c.id])

    # Order (roomer/backplane/cluster.py, "Order"): one node's frames into one room arrive
    # on every other node in that node's publish order.
    count = 500
    await burst(a, "arena", "n", count)
    for client in (b, c):
        assert await numbered(client, "n", "arena", count) == {a.id: list(range(count))}
    # Two publishers on two nodes at once: each one's order holds, interleaved anyhow.
    await asyncio.gather(burst(a, "arena", "n", count), burst(b, "arena", "n", count))
    got_c = await numbered(c, "n", "arena", 2 * count)
    assert got_c == {a.id: list(range(count)), b.id: list(range(count))}
    assert await numbered(a, "n", "arena", count) == {b.id: list(range(count))}
    assert await numbered(b, "n", "arena", count) == {a.id: list(range(count))}
    # A server-side burst (a handler calling broadcast 500 times) keeps its order too.
    await c.send("root", "api_burst", payload=json.dumps(
        {"room": "arena", "event": "n", "count": count}))
    assert await numbered(c, "n", "arena", count) == {"": list(range(count))}
    assert (await c.expect("api_burst")).payload == str(count).encode()
    for client in (a, b):
        assert await numbered(client, "n", "arena", count) == {"": list(range(count))}

    # Direct messages between any two of the three nodes; an unknown id is no_such_client.
    await a.send("arena", "psst", dst=c.id, payload=b"a to c")
    got = await c.expect("psst", "arena")
    assert (got.src, got.dst, got.payload) == (a.id, c.id, b"a to c")
    await c.send("root", "psst", dst=b.id, payload=b"c to b")
    assert (await b.expect("psst", "root")).src == c.id
    await b.send("root", "psst", dst=str(uuid.uuid4()))
    await b.expect_error("no_such_client", "root", "psst")

    # broadcast_all from the third node reaches the other two.
    await c.send("root", "api_broadcast_all", payload=json.dumps(
        {"event": "news", "payload": "n3"}))
    assert (await c.expect("news", "root")).payload == b"n3"
    assert (await c.expect("api_broadcast_all")).payload == b"1"
    for client in (a, b):
        assert (await client.expect("news", "root")).payload == b"n3"

    # A disconnect is member_left on both other nodes; the lists follow.
    await c.close()
    for client in (a, b):
        assert (await client.expect("member_left", "arena")).text == c.id
        assert sorted(await members(client, "arena")) == sorted([a.id, b.id])
    await close_all(a, b)


# a node killed ---------------------------------------------------------------------------


async def test_a_node_killed_with_sigkill_has_its_members_announced_left(
        server_process: Start, broker_url: str, prefix: str, broker_kind: str) -> None:
    node_a, node_b = await asyncio.gather(*(
        server_process(node_options(broker_url, prefix, f"n{i}"), APP) for i in range(2)))
    # The victim is not the fixture's: the fixture requires a clean stop of its servers.
    victim = await ServerProcess.start(node_options(broker_url, prefix, "victim"), APP)
    try:
        await formed([node_a, node_b, victim])
        a, b = await connect(node_a.url), await connect(node_b.url)
        c1, c2 = await connect(victim.url), await connect(victim.url)
        await a.join("doomed")
        await b.join("doomed")
        await a.expect("new_member", "doomed")
        for i, client in enumerate((c1, c2)):
            await client.join("doomed")
            for other in (a, b, c1)[:2 + i]:
                assert (await other.expect("new_member", "doomed")).text == client.id
        assert sorted(await members(a, "doomed")) == sorted([a.id, b.id, c1.id, c2.id])

        killed_at = time.monotonic()
        os.killpg(victim.pid, signal.SIGKILL)
        gone = {("member_left", "doomed", c1.id), ("member_left", "doomed", c2.id)}

        async def announced(client: RawClient) -> float:
            await events(client, gone, timeout=KILL_BOUND + 5)
            return time.monotonic() - killed_at

        seen = await asyncio.gather(announced(a), announced(b))
        print(f"\n[{broker_kind}] SIGKILL: members announced left after "
              f"{', '.join(f'{s:.2f} s' for s in seen)} (node_timeout 6 s, bound "
              f"{KILL_BOUND:.0f} s)")
        assert max(seen) < KILL_BOUND
        for client in (a, b):
            assert sorted(await members(client, "doomed")) == sorted([a.id, b.id])
        late = await connect(node_a.url)
        assert sorted(await late.join("doomed")) == sorted([late.id, a.id, b.id])
        for client in (a, b):
            assert (await client.expect("new_member", "doomed")).text == late.id
        metrics = await node_a.metrics()
        assert metrics["roomer_backplane_nodes_lost_total"] == 1
        assert metrics["roomer_backplane_nodes"] == 1
        await close_all(a, b, late)
    finally:
        await victim.kill()


# the broker restarted --------------------------------------------------------------------


async def test_broker_restart_traffic_resumes_lists_heal_memory_stays_bounded(
        server_process: Start, private_broker: Broker, prefix: str, broker_kind: str) -> None:
    options = {"rate_limit": None, "byte_limit": None, "error_limit": None}
    node_a, node_b = await asyncio.gather(*(
        server_process(node_options(private_broker.url, prefix, f"n{i}", **options), APP)
        for i in range(2)))
    await formed([node_a, node_b])
    a1, a2, a3 = [await connect(node_a.url) for _ in range(3)]
    b1 = await connect(node_b.url)
    # The flood room: a1 alone on node A, b1 on node B, so every relay is a publish.
    await a1.join("flood")
    await b1.join("flood")
    assert (await a1.expect("new_member", "flood")).text == b1.id
    await a1.join("lobby")
    await b1.join("lobby")
    assert (await a1.expect("new_member", "lobby")).text == b1.id
    for i, joiner in enumerate((a2, a3)):
        await joiner.join("lobby")
        for other in (a1, b1, a2)[:2 + i]:
            assert (await other.expect("new_member", "lobby")).text == joiner.id
    before = {s.port: await s.metrics() for s in (node_a, node_b)}
    rss_before = node_a.rss_kib()

    private_broker.stop()
    down_at = time.monotonic()

    async def link(server: ServerProcess, up: int) -> bool:
        return (await server.metrics()).get("roomer_backplane_connected") == up

    for server in (node_a, node_b):
        await until(lambda s=server: link(s, 0), 10, "the node sees the broker gone")

    # Local rooms carry on.
    await a1.send("lobby", "chat", payload=b"local")
    for client in (a2, a3):
        assert (await client.expect("chat", "lobby")).payload == b"local"
    # Publishing into a room with remote members while the broker is away: dropped and
    # counted, never queued (RSS stays flat while far more than it is sent).
    flood, size = 20_000, 16 * 1024
    body = _relay("flood", "flood", "x" * size)
    rss_peak = rss_before
    for i in range(flood):
        await a1.ws.send(body)
        if i % 1000 == 999:
            rss_peak = max(rss_peak, node_a.rss_kib())
    sent_mib = flood * size / 2**20
    await until(lambda: _metric_at_least(node_a, "roomer_messages_in_total",
                                         before[node_a.port]["roomer_messages_in_total"]
                                         + flood), 30, "node A read the flood")
    rss_peak = max(rss_peak, node_a.rss_kib())
    # Membership changes while apart: the lists must heal when the broker is back.
    b2 = await connect(node_b.url)
    assert sorted(await b2.join("lobby")) == sorted([b2.id, b1.id, a1.id, a2.id, a3.id])
    assert (await b1.expect("new_member", "lobby")).text == b2.id
    await a3.leave("lobby")
    for client in (a1, a2):
        assert (await client.expect("member_left", "lobby")).text == a3.id

    await pace_until(down_at + scaled(1.5))  # the broker stays down this long: the outage
    private_broker.start()
    restarted_at = time.monotonic()
    for server in (node_a, node_b):
        await until(lambda s=server: link(s, 1), 20, "the node reconnects")
    reconnected = time.monotonic() - restarted_at
    # Lists heal by themselves: each side hears what changed on the other.
    healed = []
    for client, change in ((a1, ("new_member", "lobby", b2.id)),
                           (a2, ("new_member", "lobby", b2.id)),
                           (b1, ("member_left", "lobby", a3.id)),
                           (b2, ("member_left", "lobby", a3.id))):
        await events(client, {change}, timeout=scaled(10))
        healed.append(time.monotonic() - restarted_at)
    for client in (a1, b1):
        assert sorted(await members(client, "lobby")) == sorted([a1.id, a2.id, b1.id, b2.id])
    # Traffic resumes: relays sent now cross in both directions.
    await b1.send("lobby", "chat", payload=b"after")
    for client in (a1, a2, b2):
        got = await client.expect("chat", "lobby")
        assert (got.src, got.payload) == (b1.id, b"after")
    await a1.send("flood", "flood", payload=b"after")
    assert (await b1.expect("flood", "flood")).payload == b"after"

    after_a, after_b = await node_a.metrics(), await node_b.metrics()
    dropped = (after_a["roomer_backplane_dropped_total"]
               - before[node_a.port]["roomer_backplane_dropped_total"])
    grown_mib = (rss_peak - rss_before) / 1024
    print(f"\n[{broker_kind}] broker restart: down {restarted_at - down_at:.1f} s; "
          f"both nodes reconnected {reconnected:.2f} s after it was back; "
          f"lists healed {max(healed):.2f} s after; node A dropped {dropped:.0f} publishes; "
          f"RSS +{grown_mib:.1f} MiB while {sent_mib:.0f} MiB were published into the "
          f"outage")
    assert dropped >= flood
    assert after_a["roomer_backplane_reconnects_total"] >= 1
    assert after_b["roomer_backplane_reconnects_total"] >= 1
    assert grown_mib < 64, f"RSS grew {grown_mib:.1f} MiB: the outage's publishes queued"
    for server in (node_a, node_b):
        log = server.stderr_text()
        assert "Traceback" not in log, log[-3000:]
        # Logged once when it starts (not per message), once when it ends.
        assert log.count("lost the broker") == 1, log[-3000:]
        assert log.count("broker back after") == 1, log[-3000:]
    for client in (a1, a2, a3, b1, b2):
        await client.expect_nothing()
    await close_all(a1, a2, a3, b1, b2)


async def _metric_at_least(server: ServerProcess, name: str, value: float) -> bool:
    return (await server.metrics()).get(name, 0.0) >= value


# --workers 2 on one port -----------------------------------------------------------------


async def test_two_workers_on_one_port_share_a_room_and_stop_on_sigterm(
        broker_url: str, prefix: str) -> None:
    port = free_port()
    parent = await _spawn(
        ["-m", "roomer", "serve", "scaleout_app:setup", "--host", "127.0.0.1", "--port",
         str(port), "--workers", "2", "--backplane", broker_url, "--backplane-prefix", prefix,
         "--node-id", "w", "--log-level", "warning"], "workers",
        # Unbuffered output (as in most container images) writes a print's newline on its
        # own: the workers' lines must still come whole.
        {"PYTHONUNBUFFERED": "1"})
    clients: list[RawClient] = []
    try:
        lines: list[str] = []
        while sum(" as node " in line for line in lines) < 2:  # printed once listening
            lines.append(await parent.readline(30))
        # One --node-id, two nodes: each worker's is made unique.
        assert sorted(line.split(" as node ")[1].strip() for line in lines
                      if " as node " in line) == ["w-1", "w-2"]
        assert sum(f"listening on ws://127.0.0.1:{port}/ws" in line for line in lines) == 2, lines
        url = f"ws://127.0.0.1:{port}/ws"
        by_pid: dict[int, RawClient] = {}
        for _ in range(64):  # the kernel picks a worker per connection; bounded retries
            client = await connect(url)
            pid = int((await call(client, "api_pid")).payload)
            if pid in by_pid:
                await client.close()
                continue
            by_pid[pid] = client
            clients.append(client)
            if len(by_pid) == 2:
                break
        assert len(by_pid) == 2, "64 connections all landed on one worker"
        x, y = clients
        assert parent.pid not in by_pid  # the parent only runs the workers

        async def knows_other(client: RawClient) -> bool:
            return (await call(client, "api_nodes")).payload == b"1"

        for client in (x, y):
            await until(lambda c=client: knows_other(c), FORM_TIMEOUT, "the workers meet")
        assert await x.join("room") == [x.id]
        assert await y.join("room") == [y.id, x.id]
        assert (await x.expect("new_member", "room")).text == y.id
        await x.send("room", "chat", payload=b"hello y")
        got = await y.expect("chat", "room")
        assert (got.src, got.payload) == (x.id, b"hello y")
        await y.send("room", "chat", payload=b"hello x")
        assert (await x.expect("chat", "room")).payload == b"hello x"
        await y.leave("room")
        assert (await x.expect("member_left", "room")).text == y.id

        os.kill(parent.pid, signal.SIGTERM)
        for client in (x, y):
            code, reason = await client.closed(timeout=scaled(10))
            assert (code, reason) == (1001, "server shutdown")
        assert await asyncio.wait_for(parent.proc.wait(), scaled(20)) == 0
        assert parent.proc.stdout is not None
        rest = (await parent.proc.stdout.read()).decode()
        assert rest.count("roomer stopped") == 2, rest
        for pid in by_pid:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert "Traceback" not in parent.stderr_text(), parent.stderr_tail()
    finally:
        await close_all(*clients)
        await parent.kill()
