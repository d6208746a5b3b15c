"""A fault run over two nodes and real clients, shared by tests/test_backplane_faults.py
(short faults) and scripts/faults.py (long ones): who received what of what was sent,
what the nodes told the server (ClusterEvents.link_down / link_up), and how long
recovery took.

Two ``roomer.Server`` nodes A and B in this process share a broker. Clients a1, a2 (node
A) and b1 (node B) are in room ``r``; a1 and b1 each send a numbered message every
``every`` seconds from before the fault to after recovery. The fault is a callable run
between the start and the end of the outage (the broker killed and restarted, or stopped
and continued). What a run records, per (sender, receiver): the numbers sent, the numbers
received in arrival order, and the presence events about the other node's client.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rawclient import RawClient, connect, decode, encode
from waiting import eventually, pace

import roomer
from roomer.registry import Nodes

__all__ = ["Flow", "Run", "link_events", "run_fault"]


@dataclass
class Flow:
    """One sender's numbered messages as one receiver got them."""

    sent: list[tuple[float, int]] = field(default_factory=list)
    got: list[tuple[float, int]] = field(default_factory=list)

    @property
    def numbers(self) -> list[int]:
        return [n for _, n in self.got]

    def missing(self) -> list[int]:
        got = set(self.numbers)
        return [n for _, n in self.sent if n not in got]

    def gaps(self) -> list[tuple[int, int]]:
        """The missing numbers as (first, last) ranges."""
        out: list[tuple[int, int]] = []
        for n in self.missing():
            if out and out[-1][1] == n - 1:
                out[-1] = (out[-1][0], n)
            else:
                out.append((n, n))
        return out

    def first_after(self, moment: float) -> float | None:
        """When the first message received after ``moment`` arrived."""
        for at, _ in self.got:
            if at > moment:
                return at
        return None

    def describe(self) -> str:
        gaps = ", ".join(f"{a}-{b}" for a, b in self.gaps()) or "none"
        return f"sent {len(self.sent)}, received {len(self.got)}, missing {gaps}"


@dataclass
class Run:
    flows: dict[str, Flow]
    presence: dict[str, list[tuple[float, str, str]]]  # receiver -> (at, event, member)
    links: list[tuple[float, str, str, float]]  # (at, node, "down"/"up", down_for)
    fault_start: float = 0.0
    fault_end: float = 0.0
    states: dict[str, dict[str, Any]] = field(default_factory=dict)

    def recovered_after(self, flow: str) -> float | None:
        """Seconds from the end of the fault to the first message of ``flow`` after it."""
        first = self.flows[flow].first_after(self.fault_end)
        return None if first is None else first - self.fault_end

    def told(self, node: str) -> list[str]:
        return [what for _, who, what, _ in self.links if who == node]


_LINKS: list[tuple[float, str, str, float]] = []
_NAMES: dict[int, str] = {}


def _link_down(self: Nodes) -> None:
    _LINKS.append((time.monotonic(), _NAMES.get(id(self), "?"), "down", 0.0))


def _link_up(self: Nodes, down_for: float) -> None:
    _LINKS.append((time.monotonic(), _NAMES.get(id(self), "?"), "up", down_for))


@contextlib.contextmanager
def link_events() -> Iterator[list[tuple[float, str, str, float]]]:
    """Record what every node tells its server about the link (Nodes' callbacks)."""
    saved = Nodes.link_down, Nodes.link_up
    Nodes.link_down, Nodes.link_up = _link_down, _link_up  # type: ignore[method-assign]
    _LINKS.clear()
    try:
        yield _LINKS
    finally:
        Nodes.link_down, Nodes.link_up = saved  # type: ignore[method-assign]


async def _reader(client: RawClient, name: str, flows: dict[str, Flow],
                  presence: dict[str, list[tuple[float, str, str]]],
                  ids: dict[str, str]) -> None:
    senders = {ids["a1"]: "a1", ids["b1"]: "b1"}
    with contextlib.suppress(Exception):
        while True:
            msg = decode(await client.ws.recv())  # type: ignore[arg-type]
            now = time.monotonic()
            if msg.event == "n" and msg.src in senders:
                flows[f"{senders[msg.src]}>{name}"].got.append((now, int(msg.payload)))
            elif msg.event in ("new_member", "member_left"):
                presence[name].append((now, msg.event, msg.text))


async def _sender(client: RawClient, name: str, flows: list[Flow], every: float,
                  stop: asyncio.Event) -> None:
    i = 0
    while not stop.is_set():
        await client.ws.send(encode("r", "n", payload=str(i)))
        now = time.monotonic()
        for flow in flows:
            flow.sent.append((now, i))
        i += 1
        await pace(every)  # a client sending at its rate


async def run_fault(url: str, prefix: str, fault: Callable[[Run], Awaitable[None]], *,
                    every: float = 0.02, settle: float = 2.0, after: float = 3.0,
                    node_timeout: float = 6.0, **options: Any) -> Run:
    """Start the two nodes and clients, send, run ``fault`` (it sets ``run.fault_start``
    and ``run.fault_end``), wait until both nodes' links are up again and ``after``
    seconds more, then stop and return what was recorded."""
    servers: list[roomer.Server] = []
    clients: list[RawClient] = []
    tasks: list[asyncio.Task[None]] = []
    stop = asyncio.Event()
    try:
        for name in ("A", "B"):
            server = roomer.Server(backplane=url, backplane_prefix=prefix, node_id=name,
                                   node_timeout=node_timeout, rate_limit=None,
                                   byte_limit=None, **options)
            await server.start("127.0.0.1", 0)
            servers.append(server)
            cluster = server.registry.cluster
            assert cluster is not None
            _NAMES[id(cluster._events)] = name
        a_node, b_node = servers
        await eventually(lambda: all(s.stats()["backplane"]["nodes"] for s in servers),
                         10, "the nodes met")
        a1, a2, b1 = [await connect(s, ping_interval=None) for s in (a_node, a_node, b_node)]
        clients += [a1, a2, b1]
        ids = {"a1": a1.id, "a2": a2.id, "b1": b1.id}
        for client in (a1, a2, b1):
            await client.join("r")
        for client, count in ((a1, 2), (a2, 1)):  # the joins after theirs
            for _ in range(count):
                await client.expect("new_member", "r")
        flows = {key: Flow() for key in ("a1>a2", "a1>b1", "b1>a1", "b1>a2")}
        presence: dict[str, list[tuple[float, str, str]]] = {"a1": [], "a2": [], "b1": []}
        run = Run(flows, presence, _LINKS)
        loop = asyncio.get_running_loop()
        for client, name in ((a1, "a1"), (a2, "a2"), (b1, "b1")):
            tasks.append(loop.create_task(_reader(client, name, flows, presence, ids)))
        tasks.append(loop.create_task(_sender(a1, "a1", [flows["a1>a2"], flows["a1>b1"]],
                                              every, stop)))
        tasks.append(loop.create_task(_sender(b1, "b1", [flows["b1>a1"], flows["b1>a2"]],
                                              every, stop)))
        await pace(settle)  # steady traffic before the fault
        await fault(run)
        await eventually(lambda: all(s.stats()["backplane"]["link"] == "up" for s in servers),
                         60, "the links came back")
        await pace(after)  # steady traffic after it
        stop.set()
        await pace(max(0.5, 10 * every))  # the last messages arrive
        run.states = {name: s.stats()["backplane"] for name, s in zip("AB", servers,
                                                                      strict=True)}
        return run
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for client in clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.ws.close(), 2)
        for server in servers:
            await server.shutdown(timeout=2.0)
