#!/usr/bin/env python3
"""Long backplane faults, measured: the broker killed for 60 s, the broker paused (SIGSTOP)
for 20 s, and a node paused for 30 s, each on Redis and on NATS (a redis-server and a
nats-server of this script's own, on free ports). For each: what every client received
against what was sent, what the nodes told the server (or logged), and the recovery times.

    python scripts/faults.py                      # everything, both brokers (~6 minutes)
    python scripts/faults.py --broker redis --outage 10 --broker-pause 5 --node-pause 10

tests/test_backplane_faults.py runs the short versions as tests (the same harness,
tests/faultkit.py); this prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path[:0] = [str(TESTS.parent), str(TESTS)]

from faultkit import Flow, Run, link_events, run_fault  # noqa: E402
from rawclient import RawClient, connect, decode, encode  # noqa: E402
from serverproc import ServerProcess  # noqa: E402
from services import Broker, find_binary  # noqa: E402


def report(label: str, run: Run) -> None:
    print(f"\n== {label}: fault {run.fault_end - run.fault_start:.1f} s")
    for key, flow in run.flows.items():
        recovered = run.recovered_after(key)
        print(f"  {key}: {flow.describe()}; first message after the fault "
              f"{'never' if recovered is None else f'{recovered:.2f} s'} after it ended")
    for at, node, what, down_for in run.links:
        extra = f", down {down_for:.2f} s" if what == "up" else ""
        print(f"  node {node} told its server: link {what} at "
              f"{at - run.fault_start:+.2f} s{extra}")
    for name, events in run.presence.items():
        seen = [(e, round(at - run.fault_start, 2)) for at, e, _ in events]
        print(f"  {name}: presence events {seen or 'none'}")
    for node, state in run.states.items():
        print(f"  node {node}: outages {state['outages']}, down {state['down_seconds']:.2f} s, "
              f"dropped {state['dropped']} ({state['dropped_down']} while down), nodes lost "
              f"{state['nodes_lost']}, incarnations {state['incarnations']}")


async def broker_fault(broker: Broker, kind: str, seconds: float) -> None:
    assert broker.proc is not None or kind == "kill"

    async def fault(run: Run) -> None:
        run.fault_start = time.monotonic()
        if kind == "kill":
            broker.stop()
            await asyncio.sleep(seconds)
            broker.start()
        else:
            assert broker.proc is not None
            os.kill(broker.proc.pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(seconds)
            finally:
                os.kill(broker.proc.pid, signal.SIGCONT)
        run.fault_end = time.monotonic()

    with link_events():
        run = await run_fault(broker.url, f"f{uuid.uuid4().hex[:10]}", fault, every=0.05)
    what = "killed" if kind == "kill" else "paused (SIGSTOP)"
    report(f"{broker.kind}: broker {what} {seconds:g} s", run)


async def node_pause(broker: Broker, seconds: float) -> None:
    """Node P (its own process) stopped for ``seconds``; node Q and the clients go on."""
    prefix = f"f{uuid.uuid4().hex[:10]}"
    options = {"backplane": broker.url, "backplane_prefix": prefix, "rate_limit": None}
    apps = ("scaleout_app:setup",)
    node_p = await ServerProcess.start({**options, "node_id": "P"}, apps)
    node_q = await ServerProcess.start({**options, "node_id": "Q"}, apps)
    clients: list[RawClient] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for _ in range(100):
            if (await node_p.metrics()).get("roomer_backplane_nodes") == 1:
                break
            await asyncio.sleep(0.1)
        p1, p2, q1 = [await connect(n.url, ping_interval=None)
                      for n in (node_p, node_p, node_q)]
        clients += [p1, p2, q1]
        for client in (p1, p2, q1):
            await client.join("r")
        for client, count in ((p1, 2), (p2, 1)):
            for _ in range(count):
                await client.expect("new_member", "r")
        names = {p1.id: "p1", q1.id: "q1"}
        flows = {key: Flow() for key in ("p1>p2", "p1>q1", "q1>p1")}
        presence: dict[str, list[tuple[float, str, str]]] = {"p1": [], "p2": [], "q1": []}
        stop = asyncio.Event()

        async def read(client: RawClient, name: str) -> None:
            with contextlib.suppress(Exception):
                while True:
                    msg = decode(await client.ws.recv())  # type: ignore[arg-type]
                    now = time.monotonic()
                    key = f"{names.get(msg.src)}>{name}"
                    if msg.event == "n" and key in flows:
                        flows[key].got.append((now, int(msg.payload)))
                    elif msg.event in ("new_member", "member_left"):
                        presence[name].append((now, msg.event, msg.text))

        async def send(client: RawClient, keys: list[str]) -> None:
            i = 0
            while not stop.is_set():
                await client.ws.send(encode("r", "n", payload=str(i)))
                for key in keys:
                    flows[key].sent.append((time.monotonic(), i))
                i += 1
                await asyncio.sleep(0.05)

        loop = asyncio.get_running_loop()
        for client, name in ((p1, "p1"), (p2, "p2"), (q1, "q1")):
            tasks.append(loop.create_task(read(client, name)))
        tasks.append(loop.create_task(send(p1, ["p1>p2", "p1>q1"])))
        tasks.append(loop.create_task(send(q1, ["q1>p1"])))
        await asyncio.sleep(2)
        start = time.monotonic()
        os.kill(node_p.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            os.kill(node_p.pid, signal.SIGCONT)
        end = time.monotonic()
        back = None
        for _ in range(600):
            back = next((at for at, e, m in presence["q1"] if e == "new_member"
                         and m == p1.id and at > end), None)
            if back is not None:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(3)
        stop.set()
        await asyncio.sleep(1)
        print(f"\n== {broker.kind}: node P paused (SIGSTOP) {end - start:.1f} s "
              "(node_timeout 6 s)")
        for key, flow in flows.items():
            first = flow.first_after(end)
            print(f"  {key}: {flow.describe()}; first message after the pause "
                  f"{'never' if first is None else f'{first - end:.2f} s'} after it ended")
        for name, events in presence.items():
            seen = [(e, names.get(m, m[:8]), round(at - start, 2)) for at, e, m in events]
            print(f"  {name}: presence {seen or 'none'}")
        left = next((at for at, e, m in presence["q1"] if e == "member_left"), None)
        zombies = [n for at, n in flows["p1>q1"].got
                   if left is not None and left < at and (back is None or at < back)]
        told = "never" if left is None else f"{left - start:.2f} s"
        again = "never" if back is None else f"{back - end:.2f} s"
        print(f"  q1 was told p1 left {told} after the pause began; p1 back {again} after it "
              f"ended; messages from p1 in between: {len(zombies)}")
        for name, node in (("P", node_p), ("Q", node_q)):
            m = await node.metrics()
            counts = ", ".join(f"{label} {m.get(f'roomer_backplane_{key}_total', 0):.0f}"
                               for label, key in (("incarnations", "incarnations"),
                                                  ("nodes lost", "nodes_lost"),
                                                  ("stale dropped", "stale_dropped"),
                                                  ("outages", "outages")))
            print(f"  node {name}: {counts}")
        said = [line for line in node_p.stderr_text().splitlines() if "incarnation" in line]
        for line in said:
            print(f"  P logged: {line.split(': ', 1)[-1][:160]}")
    finally:
        for task in tasks:
            task.cancel()
        for client in clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.ws.close(), 2)
        for node in (node_p, node_q):
            with contextlib.suppress(Exception):
                await node.stop()
            await node.kill()


async def main(args: argparse.Namespace) -> None:
    kinds = ["redis", "nats"] if args.broker == "both" else [args.broker]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            binary = "redis-server" if kind == "redis" else "nats-server"
            if find_binary(binary) is None:
                print(f"{binary} is not installed: {kind} skipped")
                continue
            workdir = Path(tmp) / kind
            workdir.mkdir()
            broker = Broker(kind, workdir)
            broker.start()
            try:
                if args.outage:
                    await broker_fault(broker, "kill", args.outage)
                if args.broker_pause:
                    await broker_fault(broker, "pause", args.broker_pause)
                if args.node_pause:
                    await node_pause(broker, args.node_pause)
            finally:
                broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", choices=("redis", "nats", "both"), default="both")
    parser.add_argument("--outage", type=float, default=60.0, help="seconds (0: skip)")
    parser.add_argument("--broker-pause", type=float, default=20.0, help="seconds (0: skip)")
    parser.add_argument("--node-pause", type=float, default=30.0, help="seconds (0: skip)")
    asyncio.run(main(parser.parse_args()))
