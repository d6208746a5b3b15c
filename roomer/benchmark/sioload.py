"""Load generator roles for the python-socketio peer, which speaks its own protocol.

Same roles and control protocol as :mod:`roomer.benchmark.loadgen`, with python-socketio
AsyncClients: subscribers count ``chat`` events (frame counting only: socket.io sends a binary
payload as two WebSocket frames, so byte counting has no single known size), the publisher emits
``chat`` with the same stamped payload and window, and the probe acknowledges and times them.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from array import array
from typing import Any
from urllib.parse import urlsplit

import socketio

from roomer.benchmark import wire
from roomer.benchmark.loadgen import (
    SETUP_TIMEOUT,
    Counters,
    _command_loop,
    _connect_all,
    _cpu_seconds,
    _emit,
    _percentile,
)

__all__ = ["run_publisher", "run_subscribers"]

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
