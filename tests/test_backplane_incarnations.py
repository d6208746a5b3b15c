"""Node identity against real Redis and real NATS: a node paused past node_timeout
(SIGSTOP, then SIGCONT) comes back as a new incarnation and nothing of its dead one
reaches the others' clients; node ids used twice are refused at start, or, found later,
logged, counted and resolved; the default id is unique per process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable

import pytest
from rawclient import Msg, RawClient, connect, encode
from serverproc import ServerProcess

APP = ("scaleout_app:setup",)
Start = Callable[..., Awaitable[ServerProcess]]
NODE_TIMEOUT = 1.5


@pytest.fixture(params=["redis", "nats"])
def broker_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


async def until(check: Callable[[], Awaitable[bool] | bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not reached within {timeout} s")
        await asyncio.sleep(0.02)


async def formed(servers: list[ServerProcess], timeout: float = 15.0) -> None:
    async def check() -> bool:
        for server in servers:
            metrics = await server.metrics()
            if (metrics.get("roomer_backplane_connected") != 1
                    or metrics.get("roomer_backplane_nodes") != len(servers) - 1):
                return False
        return True

    await until(check, timeout, "every node knows the others")


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
                self.got.append((time.monotonic(), await self.client.recv(3600)))
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
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def sender(client: RawClient, room: str, tag: str, every: float,
                 sent: list[tuple[float, int]]) -> None:
    """Relays ``tag:0``, ``tag:1``... into ``room`` every ``every`` seconds."""
    i = 0
    while True:
        await client.ws.send(encode(room, "chat", payload=f"{tag}:{i}"))
        sent.append((time.monotonic(), i))
        i += 1
        await asyncio.sleep(every)


@pytest.mark.server_process
async def test_a_paused_node_comes_back_as_a_new_incarnation(
        server_process: Start, broker_url: str, prefix: str) -> None:
    """Node P is stopped (SIGSTOP) three times node_timeout while its client keeps
    sending; node Q announces P's member left. When P resumes, nothing of its dead
    incarnation reaches Q's client: no message from the member between its member_left
    and its new_member (regression: 185-200 such messages after a 30 s pause), then its
    messages flow again; P's client stays in its room and hears Q's client again."""
    options = {"backplane": broker_url, "backplane_prefix": prefix,
               "node_timeout": NODE_TIMEOUT, "rate_limit": None}
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
            await asyncio.sleep(max(0.0, 3 * NODE_TIMEOUT - left_after))  # a long pause
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
