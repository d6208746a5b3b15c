"""Broker faults with real clients on two nodes, against a redis-server and a nats-server of
the test's own: the broker killed for 5 s, and paused (SIGSTOP) for 4 s (twice the 2 s a
node may take to notice, so a loaded machine still sees it). For each: what every client
received against what was sent (exactly: which numbers are missing), what the nodes told
the server (link_down, then link_up with how long), and how long until messages crossed
again (printed, not asserted). scripts/faults.py runs the long versions.

What holds, checked here: a client on the same node loses nothing; across nodes nothing
arrives twice or out of order, and what is missing is one run of numbers sent while the
link was down (or the broker stalled); everything sent once both links are up again
arrives; nobody is reported left (both nodes lost the broker: neither declares the other
dead); and both nodes told the server the link went down and came back.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from clusterkit import pause
from faultkit import Run, link_events, run_fault
from services import Broker
from waiting import pace


@pytest.fixture(params=["redis", "nats"])
def broker(request: pytest.FixtureRequest) -> Broker:
    found: Broker = request.getfixturevalue(f"private_{request.param}")
    return found


def check(run: Run, label: str) -> None:
    print(f"\n[{label}] fault {run.fault_end - run.fault_start:.1f} s")
    for key, flow in run.flows.items():
        recovered = run.recovered_after(key)
        print(f"  {key}: {flow.describe()}; first after the fault "
              f"{'-' if recovered is None else f'{recovered:.2f} s'} after it ended")
    for at, node, what, down_for in run.links:
        print(f"  node {node} told the server: link {what}"
              + (f" (down {down_for:.2f} s)" if what == "up" else "")
              + f" at {at - run.fault_start:+.2f} s")
    # Same node: nothing lost.
    assert run.flows["a1>a2"].missing() == []
    for key in ("a1>b1", "b1>a1", "b1>a2"):
        flow = run.flows[key]
        numbers = flow.numbers
        assert numbers == sorted(set(numbers)), f"{key}: duplicated or out of order"
        gaps = flow.gaps()
        assert len(gaps) <= 1, f"{key}: more than one run lost: {gaps}"
        if gaps:
            first, last = gaps[0]
            sent_at = dict((n, at) for at, n in flow.sent)
            # Lost only what was sent around the fault: not before it began (less what
            # was in flight), not after both links were up again.
            assert sent_at[first] > run.fault_start - 1.0, (key, gaps)
            links_up = max(at for at, _, what, _ in run.links if what == "up")
            assert sent_at[last] < links_up, (key, gaps)
        assert run.recovered_after(key) is not None, f"{key}: nothing after the fault"
    # Both nodes lost the broker: nobody is declared dead, nobody reported left.
    for name, events in run.presence.items():
        assert events == [], f"{name} got presence events: {events}"
    for node in ("A", "B"):
        assert run.told(node) == ["down", "up"], (node, run.links)
    assert all(down_for > 0 for _, _, what, down_for in run.links if what == "up")
    for node, state in run.states.items():
        assert state["outages"] == 1 and state["link"] == "up", (node, state)
        assert state["nodes_lost"] == 0 and state["incarnations"] == 0, (node, state)


async def test_broker_killed_for_5_seconds(broker: Broker, prefix: str) -> None:
    async def kill(run: Run) -> None:
        run.fault_start = time.monotonic()
        broker.stop()
        await pace(5)  # the outage under test
        broker.start()
        run.fault_end = time.monotonic()

    with link_events():
        run = await run_fault(broker.url, prefix, kill)
    check(run, f"{broker.kind} killed 5 s")


async def test_broker_paused_for_4_seconds(broker: Broker, prefix: str) -> None:
    assert broker.proc is not None
    pid = broker.proc.pid

    async def stall(run: Run) -> None:
        run.fault_start = time.monotonic()
        await pause(pid)
        try:
            await pace(4)  # the stall under test
        finally:
            os.kill(pid, signal.SIGCONT)
        run.fault_end = time.monotonic()

    with link_events():
        run = await run_fault(broker.url, prefix, stall)
    check(run, f"{broker.kind} paused 4 s")
