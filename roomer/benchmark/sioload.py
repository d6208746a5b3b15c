"""Load generator roles for the python-socketio peer, which speaks its own protocol.

Same roles and control protocol as :mod:`roomer.benchmark.loadgen`, with python-socketio
AsyncClients: subscribers count ``chat`` events (frame counting only: socket.io sends a binary
payload as two WebSocket frames, so byte counting has no single known size), the publisher emits
``chat`` with the same stamped payload and window, and the probe acknowledges and times them.
:func:`run_game` is the game-lobby workload's generator (:mod:`roomer.benchmark.gameload`)
with python-socketio clients.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from array import array
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import socketio

from roomer.benchmark import wire
from roomer.benchmark.loadgen import (
    CONNECT_CONCURRENCY,
    SETUP_TIMEOUT,
    Counters,
    _command_loop,
    _connect_all,
    _cpu_seconds,
    _emit,
    _percentile,
)

__all__ = ["run_game", "run_publisher", "run_subscribers"]

monotonic = time.monotonic


def _http_url(ws_url: str) -> str:
    parts = urlsplit(ws_url)
    return f"http://{parts.hostname}:{parts.port}"


async def _client(url: str) -> tuple[socketio.AsyncClient, str]:
    """A connected client that joined the lobby, and its sid."""
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, transports=["websocket"])
    sid = await client.call("join", wire.LOBBY, timeout=SETUP_TIMEOUT)
    return client, str(sid)


async def run_subscribers(args: argparse.Namespace) -> None:
    counters = Counters()
    url = _http_url(args.url)
    clients: list[socketio.AsyncClient] = []

    def on_chat(data: bytes) -> None:
        counters.good += 1
        counters.bytes += len(data)  # only so the harness can see traffic settle
        counters.last_rx = monotonic()

    async def connect_one() -> None:
        client = socketio.AsyncClient(reconnection=False)
        client.on("chat", on_chat)
        await client.connect(url, transports=["websocket"])
        clients.append(client)
        if args.role == "sub":
            await client.call("join", wire.LOBBY, timeout=SETUP_TIMEOUT)

    await _connect_all(args.count, connect_one)
    _emit({"reply": "ready", "connected": len(clients)})

    async def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        if cmd["cmd"] == "reset":
            counters.reset()
        return counters.snapshot()

    try:
        await _command_loop(handle)
    finally:
        await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)


class _Window:
    def __init__(self, inflight: int) -> None:
        self.inflight = inflight
        self.sent = 0
        self.acked = 0
        self.progress = asyncio.Event()
        self.latencies_ns = array("q")
        self.last_progress = monotonic()


async def run_publisher(args: argparse.Namespace) -> None:
    url = _http_url(args.url)
    counters = Counters()
    pub, pub_id = await _client(url)
    probe = socketio.AsyncClient(reconnection=False)
    window: list[_Window] = []  # the current run's window, if any

    def on_chat(data: bytes) -> None:
        counters.good += 1
        counters.last_rx = monotonic()
        if not window:
            return
        w = window[0]
        seq, sent_ns = wire.STAMP.unpack_from(data, 0)
        w.latencies_ns.append(time.monotonic_ns() - sent_ns)
        if seq + 1 > w.acked:
            w.acked = seq + 1
            w.last_progress = monotonic()
            w.progress.set()

    probe.on("chat", on_chat)
    await probe.connect(_http_url(args.probe_url or args.url), transports=["websocket"])
    await probe.call("join", wire.LOBBY, timeout=SETUP_TIMEOUT)
    _emit({"reply": "ready", "id_len": len(pub_id)})

    async def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        if cmd["cmd"] != "run":
            return counters.snapshot()
        w = _Window(int(cmd.get("inflight", args.inflight)))
        window[:] = [w]
        try:
            return await _publish(pub, w, counters, args.payload, cmd)
        finally:
            window.clear()

    try:
        await _command_loop(handle)
    finally:
        await asyncio.gather(pub.disconnect(), probe.disconnect(), return_exceptions=True)


async def _publish(
    pub: socketio.AsyncClient, w: _Window, counters: Counters, payload: int, cmd: dict[str, Any]
) -> dict[str, Any]:
    counters.reset()
    rate = float(cmd.get("rate", 0.0))
    cpu0 = _cpu_seconds()
    t_first = monotonic()
    deadline = t_first + float(cmd["duration"])
    stalls = capped = 0
    t_last_send = t_first
    while (now := monotonic()) < deadline:
        if rate > 0 and w.sent >= int((now - t_first) * rate) + 1:
            await asyncio.sleep(0.001)
            continue
        if w.sent - w.acked >= w.inflight:
            capped += rate > 0
            w.progress.clear()
            try:
                await asyncio.wait_for(w.progress.wait(), 0.5)
            except TimeoutError:
                stalls += 1
                w.acked = w.sent  # presume the probe's copies were dropped
            continue
        await pub.emit("chat", wire.chat_payload(w.sent, time.monotonic_ns(), payload))
        w.sent += 1
        t_last_send = now
    drain_end = monotonic() + float(cmd.get("drain", 5.0))
    while w.acked < w.sent and monotonic() < drain_end:
        w.progress.clear()
        try:
            await asyncio.wait_for(w.progress.wait(), 1.0)
        except TimeoutError:
            break
    lat = sorted(w.latencies_ns)
    lat = lat[len(lat) // 20 :]
    return {
        "sent": w.sent,
        "acked": w.acked,
        "probe_good": counters.good,
        "probe_last_rx": counters.last_rx,
        "t_first": t_first,
        "t_last_send": t_last_send,
        "stalls": stalls,
        "capped": capped,
        "lat_n": len(lat),
        "lat_p50_us": _percentile(lat, 0.50),
        "lat_p99_us": _percentile(lat, 0.99),
        "lat_max_us": _percentile(lat, 1.0),
        "cpu": _cpu_seconds() - cpu0,
        "now": monotonic(),
    }


# --------------------------------------------------------------------------- game lobby


class _GameClient:
    """One python-socketio client of the game workload: counts its own deliveries; the
    probe (each room's last member) also times them."""

    def __init__(self, room: int, probe: bool, stamps: Any, timeout: float) -> None:
        self.room = room
        self.probe = probe
        self.stamps = stamps
        self.received = 0
        # request_timeout bounds the WebSocket connect too (5 s by default: too short for
        # a server busy accepting thousands on a loaded machine).
        self.client = socketio.AsyncClient(reconnection=False, request_timeout=timeout)
        self.client.on("chat", self.on_chat)

    def on_chat(self, data: bytes) -> None:
        self.received += 1
        stamps = self.stamps
        stamps.last_rx = monotonic()
        if self.probe:
            _seq, sent_ns = wire.STAMP.unpack_from(data, 0)
            if sent_ns >= stamps.measure_from_ns:
                stamps.latencies_ns.append(time.monotonic_ns() - sent_ns)


async def run_game(args: argparse.Namespace) -> None:
    """The game workload's load generator (:mod:`roomer.benchmark.gameload`) with
    python-socketio clients: same commands, same accounting, frames counted as events."""
    from roomer.benchmark import gameload

    url = _http_url(args.url)
    stamps = gameload.Stamps(args.payload)
    size = args.room_size
    rows = [[_GameClient(args.first_room + slot, index == size - 1, stamps, args.setup_timeout)
             for index in range(size)] for slot in range(args.rooms)]
    senders = min(args.senders or size, size)
    order = [(r, m) for r in range(args.rooms) for m in range(senders)]
    random.Random(args.first_room).shuffle(order)
    t0 = monotonic()

    async def join(member: _GameClient) -> None:
        # wait_timeout: the namespace's CONNECT answer may wait long on a busy server
        # (python-socketio's default is 1 s).
        await member.client.connect(url, transports=["websocket"],
                                    wait_timeout=args.setup_timeout)
        await member.client.call("join", gameload.room_name(member.room),
                                 timeout=args.setup_timeout)

    try:
        for phase in (range(size - 1), range(size - 1, size)):
            await asyncio.wait_for(_connect_all_of([row[i] for row in rows for i in phase],
                                                   join), args.setup_timeout)
        await _serve_game(args, rows, order, stamps, t0)
    finally:
        # Closes each client's aiohttp session (else each prints a warning at exit, and the
        # harness's view of this process's stderr is that noise, not the error).
        await asyncio.gather(*(m.client.disconnect() for row in rows for m in row),
                             return_exceptions=True)


async def _serve_game(args: argparse.Namespace, rows: list[list[_GameClient]],
                      order: list[tuple[int, int]], stamps: Any, t0: float) -> None:
    from roomer.benchmark import gameload

    size = args.room_size
    schedule: list[gameload.Schedule] = []
    _emit({"reply": "ready", "connected": args.rooms * size, "connect_s": monotonic() - t0,
           "frame_size": 0})

    def expected_by_room() -> list[list[int]]:
        return gameload.owed(len(rows), size, order, schedule[0] if schedule else None)

    def stats() -> dict[str, Any]:
        received = sum(m.received for row in rows for m in row)
        return {"received": received, "bytes": received,
                "expected": sum(map(sum, expected_by_room())), "last_rx": stamps.last_rx,
                "closed": sum(not m.client.connected for row in rows for m in row),
                "cpu": _cpu_seconds(), "now": monotonic()}

    async def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd["cmd"]
        if name == "reset":
            for row in rows:
                for m in row:
                    m.received = 0
            stamps.latencies_ns = array("q")
            stamps.last_rx = 0.0
            schedule.clear()
        elif name == "run":
            start = float(cmd["start_at"])
            stamps.measure_from_ns = int((start + float(cmd.get("warmup", 0.0))) * 1e9)
            sched = gameload.Schedule(len(order), float(cmd["rate"]), start,
                                      float(cmd["duration"]))
            schedule[:] = [sched]
            cpu0 = _cpu_seconds()
            pending: set[asyncio.Task[None]] = set()

            def send(k: int) -> None:
                slot, index = order[k % len(order)]
                data = wire.chat_payload(k // len(order), time.monotonic_ns(), args.payload)
                # emit() is a coroutine: started now, so its stamp is the send time.
                task = asyncio.ensure_future(rows[slot][index].client.emit("chat", data))
                pending.add(task)
                task.add_done_callback(pending.discard)

            await gameload.pace(sched, send)
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            return {"sent": sched.total, "cpu": _cpu_seconds() - cpu0, **sched.lag_summary()}
        elif name == "result":
            received = [[m.received for m in row] for row in rows]
            return {**stats(), **gameload.tally(received, expected_by_room()),
                    "remainder_receivers": 0, "lat_n": len(stamps.latencies_ns),
                    "hist": gameload.histogram(stamps.latencies_ns)}
        return stats()

    await _command_loop(handle)


async def _connect_all_of(members: list[_GameClient],
                          join: Callable[[_GameClient], Awaitable[None]]) -> None:
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def guarded(member: _GameClient) -> None:
        async with sem:
            await join(member)

    await asyncio.gather(*(guarded(m) for m in members))
