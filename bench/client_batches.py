"""What the Python client's ``coalesce`` saves, measured against the same client without it,
in one run.

The server runs in its own process (uvloop, no rate limits). ``--bots`` bots in this
process, each in a room of its own with one reader, send ``--burst`` messages at once,
``--rounds`` times, the next burst once the reader has the last one; once with
``coalesce=False`` and once with ``coalesce=True``, by turns, ``--repeat`` times. Reported
per message: the server's CPU and this process's (the bots', the readers' and the loop's),
and the batch frames the server read.

    python bench/client_batches.py --bots 20 --burst 10 --rounds 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import roomer
from roomer.benchmark.procs import cpu_times, read_metrics


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def serve() -> None:
    import uvloop

    async def main() -> None:
        server = roomer.Server(rate_limit=None, byte_limit=None, error_limit=None)
        await server.start("127.0.0.1", 0)
        print(server.address[1], flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


async def batches_in(port: int) -> int:
    return int((await read_metrics(port))["roomer_batches_in_total"])


async def one_run(port: int, pid: int, args: argparse.Namespace,
                  coalesce: bool) -> dict[str, float]:
    url = f"ws://127.0.0.1:{port}/ws"
    pairs = []
    for n in range(args.bots):
        bot = await roomer.connect(url, protocol="v2", coalesce=coalesce)
        reader = await roomer.connect(url, protocol="v2")
        room = f"bench-{n}"
        pairs.append((await bot.join(room), await reader.join(room)))

    async def play(sent: roomer.Room, read: roomer.Room) -> None:
        got = 0
        burst_done = asyncio.Event()

        def on_m(payload: bytes, sender: str) -> None:
            nonlocal got
            got += 1
            if got % args.burst == 0:
                burst_done.set()

        read.on("m", on_m)
        payload = b"x" * args.size
        for _ in range(args.rounds):
            burst_done.clear()
            for _ in range(args.burst):
                sent.send("m", payload)
            await asyncio.wait_for(burst_done.wait(), 30)

    frames = await batches_in(port)
    server_cpu, own_cpu, started = cpu_seconds(pid), time.process_time(), time.monotonic()
    await asyncio.gather(*(play(sent, read) for sent, read in pairs))
    seconds = time.monotonic() - started
    server_cpu, own_cpu = cpu_seconds(pid) - server_cpu, time.process_time() - own_cpu
    frames = await batches_in(port) - frames
    for sent, read in pairs:
        await sent.namespace("").close()
        await read.namespace("").close()
    messages = args.bots * args.burst * args.rounds
    return {"server_us_per_message": server_cpu / messages * 1e6,
            "client_us_per_message": own_cpu / messages * 1e6,
            "messages_per_s": messages / seconds, "batches_in": frames}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "coalesce": []}
    try:
        for _ in range(args.repeat):
            runs["plain"].append(await one_run(port, proc.pid, args, False))
            runs["coalesce"].append(await one_run(port, proc.pid, args, True))
    finally:
        proc.terminate()
        proc.wait()
    out: dict[str, Any] = {"runs": runs}
    for key in ("server_us_per_message", "client_us_per_message"):
        # The median of each pair's ratio; None when a run was too short for the clock
        # (CPU time counts in ticks of 10 ms).
        ratios = [c[key] / p[key] for p, c in zip(runs["plain"], runs["coalesce"], strict=True)
                  if p[key] > 0]
        out[f"{key}_coalesce_over_plain"] = statistics.median(ratios) if ratios else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bots", type=int, default=20)
    parser.add_argument("--burst", type=int, default=10, help="messages sent at once")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--size", type=int, default=48, help="payload bytes")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, by turns")
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    import uvloop

    print(json.dumps(uvloop.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
