"""Game rooms against the hand-rolled lobby (the tutorial's chapter 2), same load, one run.

Both servers hold ``--rooms`` tables of 4 players. Each table sends its players its state
(about 100 bytes, with the server's send time) ``--rate`` times a second, and each player
sends an input (``steer``) as often, which the server hands to the table's code:

- ``game``: a ``roomer.GameRoom`` with ``tick_rate`` and an ``on_message`` handler;
- ``plain``: plain rooms, a server handler, and one asyncio loop that broadcasts every
  table's state (examples/lobby.py's design).

Each server runs in its own process (uvloop); the players are roomer's Python client in
this one. Reported per variant: deliveries of state a second, the server's CPU seconds per
1,000 deliveries (from /proc), and the latency from the server's send to the player's
read (p50, p99), then the game/plain ratios. Inputs are counted as handled by the server.

    python bench/game_rooms.py --rooms 100 --rate 20 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import roomer

SEATS = 4


# the two servers -------------------------------------------------------------------------


def game_server(rate: int) -> roomer.Server:
    class Table(roomer.GameRoom):
        max_clients = SEATS
        tick_rate = rate

        def on_create(self, options: dict[str, Any]) -> None:
            self.steer: dict[str, Any] = {}

        @roomer.on_message("steer")
        def steering(self, player: roomer.Player, msg: roomer.Message) -> None:
            self.steer[player.id] = msg.payload

        def on_tick(self, dt: float) -> None:
            self.broadcast("state", json.dumps({"t": time.time(), "n": self.ticks,
                                                "pad": "x" * 60}))

    server = roomer.Server(rate_limit=None)
    server.define("table", Table)
    return server


def plain_server(rate: int) -> roomer.Server:
    server = roomer.Server(rate_limit=None)
    steer: dict[str, bytes] = {}
    ticking: list[asyncio.Task[None]] = []

    @server.on("steer")
    def steering(conn: roomer.Connection, msg: roomer.Message) -> None:
        steer[conn.id] = msg.payload

    async def tick() -> None:
        loop = asyncio.get_running_loop()
        n, next_at = 0, loop.time()
        while True:
            n += 1
            for room in server.rooms():
                if room != "root":
                    server.broadcast(room, "state", json.dumps(
                        {"t": time.time(), "n": n, "pad": "x" * 60}))
            next_at += 1 / rate
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    @server.on_started
    def start(_: roomer.Server) -> None:
        ticking.append(asyncio.get_running_loop().create_task(tick()))

    return server


def serve(variant: str, rate: int) -> None:
    server = game_server(rate) if variant == "game" else plain_server(rate)
    server.run("127.0.0.1", 0, on_started=lambda s: print(s.address[1], flush=True))


# the players -----------------------------------------------------------------------------


def metrics_of(port: int) -> dict[str, float]:
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    out = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            out[name] = float(value)
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(variant: str, rooms: int, rate: int, seconds: float) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", variant, "--rate",
                             str(rate)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    url = f"ws://127.0.0.1:{port}/ws"
    clients: list[roomer.Room] = []
    tables: list[roomer.Room] = []
    latencies: list[float] = []
    counting = [False]
    received = [0]

    def on_state(payload: bytes, sender: str) -> None:
        if counting[0]:
            received[0] += 1
            latencies.append(time.time() - json.loads(payload)["t"])

    try:
        for r in range(rooms):
            for _ in range(SEATS):
                root = await roomer.connect(url, protocol="v2")
                clients.append(root)
                if variant == "game":
                    table = root.join_or_create("table")
                else:
                    table = root.join(f"table-{r}")
                table.on("state", on_state)
                await table
                tables.append(table)
        assert variant != "game" or len({t.name for t in tables}) == rooms

        async def inputs() -> None:
            loop = asyncio.get_running_loop()
            next_at = loop.time()
            while True:
                for table in tables:
                    table.send("steer", b"\x01\x00")
                next_at += 1 / rate
                await asyncio.sleep(max(0.0, next_at - loop.time()))

        sender = asyncio.create_task(inputs())
        await asyncio.sleep(1.0)  # warm up: every table ticks, every player steers
        before = metrics_of(port)
        counting[0] = True
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        counting[0] = False
        metrics = metrics_of(port)
        sender.cancel()
        for root in clients:
            await root.close()
    finally:
        proc.terminate()
        proc.wait(10)
    latencies.sort()
    elapsed = t1 - t0

    def grew(name: str) -> float:
        return metrics.get(name, 0) - before.get(name, 0)

    handled = grew("roomer_game_messages_total") + grew("roomer_handled_total")
    return {
        "inputs_per_s": handled / elapsed,
        "cpu_s_per_1000_work": 1000 * (cpu1 - cpu0) / max(1, received[0] + handled),
        "variant": variant,
        "deliveries_per_s": received[0] / elapsed,
        "expected_per_s": rooms * SEATS * rate,
        "cpu_s_per_1000": 1000 * (cpu1 - cpu0) / max(1, received[0]),
        "server_cpu_share": (cpu1 - cpu0) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else
        float("nan"),
        "ticks": grew("roomer_game_ticks_total"),
        "skipped": grew("roomer_game_ticks_skipped_total"),
        "stalls": grew("roomer_stalls_total"),
        "rooms": metrics.get("roomer_game_rooms", 0),
        "created": metrics.get("roomer_game_rooms_created_total", 0),
        "conns": metrics.get("roomer_connections", 0),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--rate", type=int, default=20, help="ticks and inputs a second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--serve", choices=("game", "plain"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.rate)
        return 0
    results = [asyncio.run(run(variant, args.rooms, args.rate, args.seconds))
               for variant in ("plain", "game", "plain", "game")]
    for res in results:
        print(f"{res['variant']:5}  {res['deliveries_per_s']:8.0f} deliveries/s "
              f"(of {res['expected_per_s']})  {res['inputs_per_s']:6.0f} inputs/s  "
              f"{res['cpu_s_per_1000']:.4f} CPU-s/1000 deliveries  "
              f"{res['cpu_s_per_1000_work']:.4f} CPU-s/1000 (deliveries + inputs)  "
              f"server CPU {100 * res['server_cpu_share']:.0f}%  "
              f"p50 {res['p50_ms']:.2f} ms  p99 {res['p99_ms']:.2f} ms  "
              f"ticks {res['ticks']:.0f} skipped {res['skipped']:.0f} "
              f"stalls {res['stalls']:.0f} rooms {res['rooms']:.0f}/{res['created']:.0f} "
              f"conns {res['conns']:.0f}")
    game = [r for r in results if r["variant"] == "game"]
    plain = [r for r in results if r["variant"] == "plain"]
    cpu = statistics.mean(g["cpu_s_per_1000"] for g in game) / statistics.mean(
        p["cpu_s_per_1000"] for p in plain)
    work = statistics.mean(g["cpu_s_per_1000_work"] for g in game) / statistics.mean(
        p["cpu_s_per_1000_work"] for p in plain)
    share = statistics.mean(g["server_cpu_share"] for g in game) / statistics.mean(
        p["server_cpu_share"] for p in plain)
    print(f"game/plain: CPU per delivery {cpu:.2f}, per delivery + input {work:.2f}, "
          f"server CPU at this offered load {share:.2f}")
    psi = Path("/proc/pressure/cpu")
    if psi.exists():
        print("CPU pressure:", psi.read_text().splitlines()[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
