"""Node identity against real Redis and real NATS: a node paused past node_timeout
(SIGSTOP, then SIGCONT) comes back as a new incarnation and nothing of its dead one
reaches the others' clients; node ids used twice are refused at start, or, found later,
logged, counted and resolved; the default id is unique per process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest
from clusterkit import Recorder, eventually, join, nodes, proxied
from rawclient import Msg, RawClient, connect, decode, encode
from serverproc import ChildError, ServerProcess
from test_scaleout_procs import formed
from waiting import pace

from roomer.backplane import Cluster, NodeIdInUse, create

APP = ("scaleout_app:setup",)
Start = Callable[..., Awaitable[ServerProcess]]
NODE_TIMEOUT = 1.5
QUIET = {"heartbeat_interval": 30.0, "node_timeout": 90.0}  # no heartbeats mid-test


@pytest.fixture(params=["redis", "nats"])
def broker_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


async def until(check: Callable[[], Awaitable[bool] | bool], timeout: float, what: str) -> float:
    return await eventually(check, timeout, what)


class Log:
    """Everything one client receives, stamped with the time it arrived."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.got: list[tuple[float, Msg]] = []
        self.closed = False
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                data = await self.client.ws.recv()
                self.got.append((time.monotonic(), decode(data)))  # type: ignore[arg-type]
        except Exception:
            self.closed = True

    def count(self, event: str, src: str | None = None) -> int:
        return sum(1 for _, m in self.got if m.event == event and src in (None, m.src))

    def presence(self, member: str) -> list[tuple[int, str]]:
        """(index, event) of every new_member/member_left about ``member``."""
        return [(i, m.event) for i, (_, m) in enumerate(self.got)
                if m.event in ("new_member", "member_left") and m.text == member]

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.wait([self.task], timeout=5)


async def sender(client: RawClient, room: str, tag: str, every: float,
                 sent: list[tuple[float, int]]) -> None:
    """Relays ``tag:0``, ``tag:1``... into ``room`` every ``every`` seconds."""
    i = 0
    while True:
        await client.ws.send(encode(room, "chat", payload=f"{tag}:{i}"))
        sent.append((time.monotonic(), i))
        i += 1
        await pace(every)  # a client sending at its rate


@pytest.mark.server_process
async def test_a_paused_node_comes_back_as_a_new_incarnation(
        server_process: Start, broker_url: str, prefix: str) -> None:
    """Node P is stopped (SIGSTOP) three times node_timeout while its client keeps
    sending; node Q announces P's member left. When P resumes, nothing of its dead
    incarnation reaches Q's client: no message from the member between its member_left
    and its new_member (regression: 185-200 such messages after a 30 s pause), then its
    messages flow again; P's client stays in its room and hears Q's client again."""
    options = {"backplane": broker_url, "backplane_prefix": prefix,
               "node_timeout": NODE_TIMEOUT, "rate_limit": None, "byte_limit": None}
    node_p, node_q = await asyncio.gather(
        server_process({**options, "node_id": "p"}, APP),
        server_process({**options, "node_id": "q"}, APP))
    await formed([node_p, node_q])
    p1, q1 = await connect(node_p.url), await connect(node_q.url)
    await p1.join("r")
    await q1.join("r")
    assert (await p1.expect("new_member", "r")).text == q1.id
    logs = {"p1": Log(p1), "q1": Log(q1)}
    sent_p: list[tuple[float, int]] = []
    sent_q: list[tuple[float, int]] = []
    tasks = [asyncio.get_running_loop().create_task(sender(p1, "r", "p", 0.02, sent_p)),
             asyncio.get_running_loop().create_task(sender(q1, "r", "q", 0.05, sent_q))]
    try:
        await until(lambda: logs["q1"].count("chat", p1.id) >= 10, 10, "p1 heard by q1")
        paused_at = time.monotonic()
        os.kill(node_p.pid, signal.SIGSTOP)
        try:
            await until(lambda: [e for _, e in logs["q1"].presence(p1.id)] == ["member_left"],
                        3 * NODE_TIMEOUT, "q1 told p1 left")
            left_after = time.monotonic() - paused_at
            await pace(max(0.0, 3 * NODE_TIMEOUT - left_after))  # a long pause
        finally:
            os.kill(node_p.pid, signal.SIGCONT)
        resumed_at = time.monotonic()
        back = await until(
            lambda: any(e == "new_member" for _, e in logs["q1"].presence(p1.id)), 10,
            "q1 told p1 is back")
        await until(lambda: _chats_after_back(logs["q1"], p1.id) >= 10, 10,
                    "p1's messages flow to q1 again")
        q_sent = len(sent_q)
        await until(lambda: any(m.src == q1.id and int(m.text.split(":")[1]) >= q_sent
                                for _, m in logs["p1"].got if m.event == "chat"),
                    10, "p1 hears q1 again")
    finally:
        for task in tasks:
            task.cancel()
        for log in logs.values():
            await log.stop()
    q_log = logs["q1"]
    events = q_log.presence(p1.id)
    assert [e for _, e in events] == ["member_left", "new_member"], events
    left_at, back_at = events[0][0], events[1][0]
    zombies = [m for _, m in q_log.got[left_at:back_at] if m.event == "chat" and m.src == p1.id]
    print(f"\n[{broker_url.partition(':')[0]}] pause {resumed_at - paused_at:.1f} s "
          f"(member_left after {left_after:.2f} s); back {back:.2f} s after SIGCONT; "
          f"messages from the gone member before it was back: {len(zombies)}")
    assert zombies == []
    # Every p message q1 got, got in order and once; P's client was never cut off.
    numbers = [int(m.text.split(":")[1]) for _, m in q_log.got
               if m.event == "chat" and m.src == p1.id]
    assert numbers == sorted(set(numbers))
    assert not logs["p1"].closed and not q_log.closed
    metrics_p, metrics_q = await node_p.metrics(), await node_q.metrics()
    assert metrics_q["roomer_backplane_nodes_lost_total"] >= 1
    assert metrics_p["roomer_backplane_incarnations_total"] == 1
    assert metrics_p["roomer_backplane_nodes"] == 1 and metrics_q["roomer_backplane_nodes"] == 1
    for client in (p1, q1):
        with contextlib.suppress(Exception):
            await client.close()


def _chats_after_back(log: Log, member: str) -> int:
    events = log.presence(member)
    backs = [i for i, e in events if e == "new_member"]
    if not backs:
        return 0
    return sum(1 for _, m in log.got[backs[0]:] if m.event == "chat" and m.src == member)


# duplicate node ids ---------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis", "nats"])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return f"memory://{uuid.uuid4().hex}"
    return str(request.getfixturevalue(f"{request.param}_url"))


async def test_a_node_with_a_live_nodes_id_is_refused_at_start(url: str, prefix: str) -> None:
    """The later starter fails with a clear error, and the others never notice it: the
    live node's members are not reported left (regression: three nodes sharing an id saw
    2 of 3 members, with 'restarted' churn)."""
    async with nodes(url, prefix, 2, **QUIET) as [(a, _), (c, rc)]:
        await join(a, "r", "a1")
        await join(c, "r", "c1")
        twin = Cluster(create(url), node_id=a.node_id, prefix=prefix, **QUIET)
        with pytest.raises(NodeIdInUse, match=f"node id '{a.node_id}' is already used"):
            await twin.start(Recorder())
        assert not twin.transport.connected
        a.publish_room("r", b"still here")
        await eventually(lambda: ("r", b"still here", None) in rc.frames)
        assert rc.left == [] and c.remote_members("r") == ["a1"]
        assert c.state()["nodes"] == [a.node_id] and c.state()["nodes_lost"] == 0


async def test_a_node_restarted_with_its_id_takes_it_back(url: str, prefix: str) -> None:
    """The previous incarnation is dead (it does not answer the probe): the id is free."""
    async with nodes(url, prefix, 2, **QUIET) as [(a, _), (c, rc)]:
        await join(a, "r", "a1")
        await join(c, "r", "c1")
        await a.transport.close()  # dies without a goodbye
        again = Cluster(create(url), node_id=a.node_id, prefix=prefix, **QUIET)
        await again.start(Recorder())
        try:
            await eventually(lambda: ("r", "a1") in rc.left, what="the old a1 left")
            await join(again, "r", "a9")
            await eventually(lambda: c.remote_members("r") == ["a9"])
        finally:
            await again.close()


def test_the_default_node_id_is_unique_even_as_pid_1_on_a_shared_hostname(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "app")
    monkeypatch.setattr(os, "getpid", lambda: 1)
    ids = {Cluster(f"memory://{uuid.uuid4().hex}").node_id for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"app-1-[0-9a-f]{6}", node_id) for node_id in ids), ids


@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_a_collision_found_later_is_logged_counted_and_resolved(
        kind: str, request: pytest.FixtureRequest, prefix: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """Node x1 is cut off its broker when x2 starts with the same id (so nobody answers
    x2's probe with that id); when x1 is back, two live nodes share the id. It is logged
    as an error and counted, the newer takes a fresh id, and a third node ends up listing
    both nodes' members."""
    caplog.set_level(logging.WARNING, logger="roomer.backplane")
    url = str(request.getfixturevalue(f"{kind}_url"))
    proxy, via_proxy = await proxied(url)
    options = {"heartbeat_interval": 0.2, "node_timeout": 3.0, "sync_timeout": 0.25}
    x1 = Cluster(create(via_proxy, timeout=2.0, reconnect_max=0.3), node_id="dup",
                 prefix=prefix, **options)
    c = Cluster(create(url, timeout=2.0), node_id="c", prefix=prefix, **options)
    x2 = Cluster(create(url, timeout=2.0), node_id="dup", prefix=prefix, **options)
    rc = Recorder()
    await x1.start(Recorder())
    await c.start(rc)
    try:
        await join(x1, "r", "x1m")
        await join(c, "r", "c1")
        await eventually(lambda: c.remote_members("r") == ["x1m"])
        await proxy.cut()
        await x2.start(Recorder())  # x1 cannot answer: x2 takes the id
        await join(x2, "r", "x2m")
        await proxy.restore()
        await eventually(lambda: x1.node_id != x2.node_id and sorted(c.remote_members("r"))
                         == ["x1m", "x2m"] and sorted(c.state()["nodes"]) ==
                         sorted([x1.node_id, x2.node_id]), timeout=15,
                         what="two nodes, two ids, both members listed")
        await eventually(lambda: sorted(x1.remote_members("r")) == ["c1", "x2m"]
                         and sorted(x2.remote_members("r")) == ["c1", "x1m"])
        assert x1.state()["id_collisions"] + x2.state()["id_collisions"] >= 1
        errors = [r for r in caplog.records if r.levelno == logging.ERROR
                  and "is used by two live nodes" in r.getMessage()]
        assert errors
        renamed = x1 if x1.node_id != "dup" else x2
        assert re.fullmatch(r"dup-[0-9a-f]{6}", renamed.node_id)
    finally:
        for node in (x1, x2, c):
            await node.close()
        await proxy.cut()


@pytest.mark.server_process
async def test_roomer_serve_with_a_live_nodes_id_exits_with_a_clear_error(
        server_process: Start, broker_url: str, prefix: str) -> None:
    options = {"backplane": broker_url, "backplane_prefix": prefix, "node_id": "dup"}
    first = await server_process(options, APP)
    with pytest.raises(ChildError) as refused:
        second = await ServerProcess.start(options, APP)
        await second.kill()  # not reached unless the id was taken twice
    text = str(refused.value)
    assert "exited with 1" in text
    assert "roomer: error: node id 'dup' is already used by a live node of this cluster" in text
    assert "Traceback" not in text
    assert (await first.metrics())["roomer_backplane_nodes"] == 0  # it never joined
