"""Faults of the server itself, over real processes: a pause of the server (SIGSTOP, a
handler that blocks its loop) must cost no well-behaved client its connection or a
message. Clients in this process send at half their rate limit through the pause; every
receiver must get every message of every sender, exactly once and in order, and no error.

This is the short version that CI runs; ``python tests/test_faults.py --long`` runs the
long one (a 10 s SIGSTOP and a 5 s blocking handler) and prints the same figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from rawclient import RawClient, connect
from serverproc import ServerProcess

pytestmark = pytest.mark.server_process

RATE = 200.0  # the default rate_limit, frames per second
SENDERS = 4
PAUSE = float(os.environ.get("ROOMER_FAULT_PAUSE", "3"))  # seconds; --long: 10 and 5


async def _at(loop: asyncio.AbstractEventLoop, when: float) -> None:
    """Wait until loop time ``when``: how a client paces its sends at a rate."""
    if when > loop.time():
        done = loop.create_future()
        loop.call_at(when, done.set_result, None)
        await done


async def _send_at_half_rate(client: RawClient, stop: asyncio.Event, sent: list[int]) -> None:
    loop = asyncio.get_running_loop()
    period = 2.0 / RATE  # half the rate limit
    start = loop.time()
    n = 0
    while not stop.is_set():
        await client.send("r", "chat", payload=b"%d" % n)
        sent.append(n)
        n += 1
        await _at(loop, start + n * period)


async def _receive(client: RawClient, expected: Callable[[], int],
                   got: dict[str, list[int]], errors: list[Any]) -> None:
    while sum(len(v) for v in got.values()) < expected():
        msg = await client.recv(timeout=60)
        if msg.event == "chat":
            got.setdefault(msg.src, []).append(int(msg.payload))
        elif msg.event == "error":
            errors.append(msg.json())


async def _through_a_pause(server: ServerProcess,
                           pause: Callable[[list[RawClient]], Awaitable[None]]) -> dict[str, Any]:
    clients = [await connect(server.url) for _ in range(SENDERS)]
    for client in clients:
        await client.join("r")
    for i, client in enumerate(clients):
        for _ in range(SENDERS - 1 - i):  # the later joiners' new_member
            await client.expect("new_member", "r")
    stop = asyncio.Event()
    sent: dict[str, list[int]] = {c.id: [] for c in clients}
    senders = [asyncio.ensure_future(_send_at_half_rate(c, stop, sent[c.id]))
               for c in clients]
    loop = asyncio.get_running_loop()
    await _at(loop, loop.time() + 0.5)  # steady traffic before the pause
    t0 = time.monotonic()
    await pause(clients)
    paused = time.monotonic() - t0
    await _at(loop, loop.time() + 1.0)  # and after it
    stop.set()
    await asyncio.gather(*senders)
    got: dict[str, dict[str, list[int]]] = {c.id: {} for c in clients}
    errors: list[Any] = []

    def expected_for(receiver: RawClient) -> Callable[[], int]:
        return lambda: sum(len(v) for k, v in sent.items() if k != receiver.id)

    t1 = time.monotonic()
    await asyncio.gather(*(_receive(c, expected_for(c), got[c.id], errors) for c in clients))
    caught_up = time.monotonic() - t1
    for receiver in clients:
        for sender in clients:
            if sender is not receiver:
                assert got[receiver.id].get(sender.id) == sent[sender.id], (
                    "every message exactly once, in order")
    assert errors == []
    for client in clients:  # nobody was closed: each still relays
        await client.send("r", "still", payload=b"here")
    for client in clients:
        seen = 0
        while seen < SENDERS - 1:
            if (await client.recv()).event == "still":
                seen += 1
    metrics = await server.metrics()
    assert metrics.get("roomer_abuse_closes_total", 0) == 0
    for client in clients:
        await client.close()
    return {"paused_s": round(paused, 2), "caught_up_s": round(caught_up, 2),
            "sent": sum(len(v) for v in sent.values()),
            "stalls": metrics.get("roomer_stalls_total", 0)}


async def test_a_stopped_server_charges_no_client(server_process: Any) -> None:
    server = await server_process()

    async def sigstop(_clients: list[RawClient]) -> None:
        os.kill(server.pid, signal.SIGSTOP)
        loop = asyncio.get_running_loop()
        await _at(loop, loop.time() + PAUSE)  # the pause under test
        os.kill(server.pid, signal.SIGCONT)

    report = await _through_a_pause(server, sigstop)
    print(f"\nSIGSTOP {PAUSE:.0f} s:", json.dumps(report))
    assert report["stalls"] >= 1


async def test_a_blocking_handler_charges_no_client(server_process: Any) -> None:
    server = await server_process(apps=("fault_app:setup",))

    async def block(clients: list[RawClient]) -> None:
        blocker = await connect(server.url)
        await blocker.send("root", "block", payload=b"%f" % PAUSE)
        await blocker.expect("blocked", "root", timeout=PAUSE + 30)
        await blocker.close()

    report = await _through_a_pause(server, block)
    print(f"\nhandler blocking {PAUSE:.0f} s:", json.dumps(report))
    assert report["stalls"] >= 1


if __name__ == "__main__":
    # The long version: python tests/test_faults.py --long
    if "--long" in sys.argv:
        os.environ["ROOMER_FAULT_PAUSE"] = "10"
    sys.exit(pytest.main([__file__, "-s", "-q", "-p", "no:cacheprovider"]))
