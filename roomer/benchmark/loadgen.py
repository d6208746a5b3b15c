"""Load generator processes, built on picows on uvloop.

Run as ``python -m roomer.benchmark.loadgen ROLE ...``; the harness drives each process with one
JSON command per line on stdin and reads one JSON reply per line on stdout.

Roles:

- ``sub``: K subscriber connections that join the lobby. In ``frames`` mode every frame reaches
  ``on_ws_frame`` and relayed ones are recognised by their size. In ``bytes`` mode each
  connection, once its lobby ``join_ack`` arrived, hands its socket to a raw byte counter: a
  Python load generator that sees every frame saturates near 4M frames/s here, below what a
  corked server delivers, while counting bytes costs one callback per read.
- ``pub``: the publisher plus one probe subscriber that parses every frame. The probe's receipt
  of message ``seq`` acknowledges everything up to ``seq``, which bounds the messages in flight,
  and the send time stamped in the payload gives the latency. ``--probe-url`` puts the probe on
  another server than the publisher (cross-node runs).
- ``idle``: K connections that only take their ``root`` ``join_ack`` (memory per connection).

The socketio peer has its own protocol; ``--socketio`` makes ``sub`` and ``pub`` use
python-socketio AsyncClients instead (frame counting only, it is slow anyway).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from array import array
from collections.abc import Awaitable, Callable
from typing import Any

import picows

from roomer.benchmark import wire
from roomer.benchmark.procs import die_with_parent, raise_nofile

__all__ = ["Probe", "Publisher", "Subscriber", "main"]

BINARY = picows.WSMsgType.BINARY
CONNECT_CONCURRENCY = 64
SETUP_TIMEOUT = 120.0  # bound on connecting and joining every connection of one process
monotonic = time.monotonic


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Counters:
    """Received traffic of one process since the last reset."""

    __slots__ = ("bytes", "closed", "frames", "good", "last_rx")

    def __init__(self) -> None:
        self.bytes = 0
        self.frames = 0  # frames seen by on_ws_frame (frames mode, or before the switch)
        self.good = 0  # of those, relayed chat messages (recognised by their exact size)
        self.last_rx = 0.0  # CLOCK_MONOTONIC: comparable across processes on Linux
        self.closed = 0  # connections the server closed

    def reset(self) -> None:
        self.bytes = self.frames = self.good = 0
        self.last_rx = 0.0

    def snapshot(self) -> dict[str, Any]:
        return {
            "bytes": self.bytes,
            "frames": self.frames,
            "good": self.good,
            "last_rx": self.last_rx,
            "closed": self.closed,
            "cpu": _cpu_seconds(),
            "now": monotonic(),
        }


# Every raw counter reads into this one scratch buffer: the bytes are never looked at, and a
# process runs one callback at a time, so sharing it costs no allocation per read.
_SCRATCH = bytearray(256 * 1024)
_SCRATCH_VIEW = memoryview(_SCRATCH)


class RawByteCounter(asyncio.BufferedProtocol):
    """Replaces picows on a socket after the joins: adds up received bytes, nothing else."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters

    def get_buffer(self, sizehint: int) -> memoryview:
        return _SCRATCH_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        c = self.counters
        c.bytes += nbytes
        c.last_rx = monotonic()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.counters.closed += 1


class Subscriber(picows.WSListener):
    """Joins the lobby, then counts: frames (frames mode) or raw bytes (bytes mode)."""

    def __init__(
        self,
        counters: Counters,
        body_size: int,
        raw_bytes: bool,
        joined: asyncio.Future[str],
        join: bool = True,
    ) -> None:
        self.counters = counters
        self.body_size = body_size
        self.raw_bytes = raw_bytes
        self.joined: asyncio.Future[str] | None = joined
        self.join = join
        self.cid = ""

    def on_ws_connected(self, transport: picows.WSTransport) -> None:
        if self.join:
            transport.send(BINARY, wire.JOIN_LOBBY)

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        size = frame.payload_size
        c = self.counters
        c.frames += 1
        c.bytes += size + (2 if size < 126 else 4 if size < 65536 else 10)
        c.last_rx = monotonic()
        if size == self.body_size:
            c.good += 1
        if self.joined is not None:
            self._setup_frame(transport, frame)

    def _setup_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if frame.msg_type != BINARY:
            return
        room, event, _, src, _ = wire.decode(frame.get_payload_as_bytes())
        if event != "join_ack":
            return
        if room == "root":
            self.cid = src
        if (room == wire.LOBBY or not self.join) and self.joined is not None:
            if self.raw_bytes:
                # Frames picows already buffered still come here; later reads go to the counter.
                transport.underlying_transport.set_protocol(RawByteCounter(self.counters))
            if not self.joined.done():
                self.joined.set_result(self.cid)
            self.joined = None

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        self.counters.closed += 1


async def _connect_all(count: int, connect_one: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Open `count` connections, at most CONNECT_CONCURRENCY handshakes at a time."""
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def guarded() -> Any:
        async with sem:
            return await connect_one()

    return await asyncio.wait_for(asyncio.gather(*(guarded() for _ in range(count))), SETUP_TIMEOUT)


async def _command_loop(
    handle: Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]],
) -> None:
    """Answer the harness's commands until `quit` or stdin closes (the harness died)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            return
        reply = await handle(cmd)
        if reply is not None:
            reply["reply"] = cmd["cmd"]
            _emit(reply)


# --------------------------------------------------------------------------- sub / idle


async def _run_subscribers(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    counters = Counters()
    body_size = wire.relayed_body_size(args.payload)
    raw = args.mode == "bytes"
    join = args.role == "sub"
    transports: list[picows.WSTransport] = []

    async def connect_one() -> None:
        joined: asyncio.Future[str] = loop.create_future()
        transport, _ = await picows.ws_connect(
            lambda: Subscriber(counters, body_size, raw, joined, join),
            args.url,
            read_buffer_init_size=args.read_buffer,
        )
        transports.append(transport)
        await joined

    await _connect_all(args.count, connect_one)
    _emit({"reply": "ready", "connected": len(transports)})

    async def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        if cmd["cmd"] == "reset":
            counters.reset()
        return counters.snapshot()

    await _command_loop(handle)


# --------------------------------------------------------------------------- publisher


class Publisher:
    """Sends chat messages with at most `inflight` not yet seen by the probe."""

    def __init__(self, transport: picows.WSTransport, payload_size: int, inflight: int) -> None:
        self.transport = transport
        self.inflight = inflight
        # Client-side body: room, event, empty dst, empty src (the server sets it), payload.
        self.prefix = wire.encode(wire.LOBBY, wire.CHAT, "", "", b"")[:-4] + payload_size.to_bytes(
            4, "big"
        )
        self.pad = bytes(payload_size - wire.STAMP.size)
        self.sent = 0
        self.acked = 0  # messages up to this count are acknowledged (or given up)
        self.deadline = 0.0
        self.t_first = 0.0
        self.t_last_send = 0.0
        self.paced = False
        self.done: asyncio.Future[None] | None = None
        self.stalls = 0
        self.last_progress = 0.0

    def send_one(self) -> None:
        body = self.prefix + wire.STAMP.pack(self.sent, time.monotonic_ns()) + self.pad
        self.transport.send(BINARY, body)
        self.sent += 1

    def fill(self) -> None:
        """Top the window up (throughput mode); called on every ack."""
        now = monotonic()
        if now >= self.deadline:
            return
        while self.sent - self.acked < self.inflight:
            self.send_one()
        self.t_last_send = now

    def on_ack(self, seq: int) -> None:
        if seq + 1 > self.acked:
            self.acked = seq + 1
            self.last_progress = monotonic()
        if not self.paced:
            self.fill()
        done = self.done
        if (
            done is not None
            and not done.done()
            and self.acked >= self.sent
            and monotonic() >= self.deadline
        ):
            done.set_result(None)


class Probe(Subscriber):
    """A subscriber that parses every relayed frame: flow control and latency."""

    def __init__(self, counters: Counters, payload_size: int, joined: asyncio.Future[str]) -> None:
        super().__init__(counters, wire.relayed_body_size(payload_size), False, joined)
        self.stamp_offset = self.body_size - payload_size
        self.publisher: Publisher | None = None
        self.latencies_ns = array("q")

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if self.joined is not None:
            self._setup_frame(transport, frame)
            return
        if frame.payload_size != self.body_size:
            return
        c = self.counters
        c.good += 1
        c.last_rx = monotonic()
        seq, sent_ns = wire.STAMP.unpack_from(frame.get_payload_as_memoryview(), self.stamp_offset)
        self.latencies_ns.append(time.monotonic_ns() - sent_ns)
        if self.publisher is not None:
            self.publisher.on_ack(seq)


def _percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return sorted_values[index] / 1000.0  # ns -> us


async def _watchdog(pub: Publisher, stall_after: float, drain_timeout: float) -> None:
    """Unblock a window whose acks were lost (a dropping server), and bound the drain."""
    assert pub.done is not None
    while True:
        await asyncio.sleep(0.05)
        if pub.done.done():
            return
        now = monotonic()
        if now < pub.deadline:
            if pub.sent > pub.acked and now - pub.last_progress > stall_after:
                pub.stalls += 1
                pub.acked = pub.sent  # presume the probe's copies were dropped
                pub.last_progress = now
                if not pub.paced:
                    pub.fill()
        elif now - max(pub.last_progress, pub.deadline) > drain_timeout or pub.acked >= pub.sent:
            pub.done.set_result(None)


async def _pace(pub: Publisher, rate: float) -> int:
    """Offer `rate` messages/s (bounded by the window); returns ticks the window capped."""
    capped = 0
    start = monotonic()
    while True:
        now = monotonic()
        if now >= pub.deadline:
            return capped
        target = int((now - start) * rate) + 1
        while pub.sent < target:
            if pub.sent - pub.acked >= pub.inflight:
                capped += 1
                break
            pub.send_one()
        pub.t_last_send = now
        await asyncio.sleep(0.001)


async def _run_publisher(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    counters = Counters()
    pub_joined: asyncio.Future[str] = loop.create_future()
    pub_transport, _ = await picows.ws_connect(
        lambda: Subscriber(Counters(), 0, False, pub_joined), args.url
    )
    pub_id = await asyncio.wait_for(pub_joined, SETUP_TIMEOUT)
    # The probe joins last, so a server that fans out in join order writes its copy last.
    probe_joined: asyncio.Future[str] = loop.create_future()
    probe = Probe(counters, args.payload, probe_joined)
    # Cross-node runs put the probe on another node than the publisher: its acks and
    # latencies then measure the path through the broker.
    await picows.ws_connect(lambda: probe, args.probe_url or args.url)
    await asyncio.wait_for(probe_joined, SETUP_TIMEOUT)
    _emit({"reply": "ready", "id_len": len(pub_id.encode())})

    async def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        if cmd["cmd"] != "run":
            return counters.snapshot()
        return await _publish(pub_transport, probe, counters, args, cmd)

    await _command_loop(handle)


async def _publish(
    transport: picows.WSTransport,
    probe: Probe,
    counters: Counters,
    args: argparse.Namespace,
    cmd: dict[str, Any],
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    pub = Publisher(transport, args.payload, int(cmd.get("inflight", args.inflight)))
    rate = float(cmd.get("rate", 0.0))
    counters.reset()
    probe.latencies_ns = array("q")
    probe.publisher = pub
    pub.done = loop.create_future()
    cpu0 = _cpu_seconds()
    pub.t_first = pub.last_progress = monotonic()
    pub.deadline = pub.t_first + float(cmd["duration"])
    pub.paced = rate > 0
    watchdog = asyncio.ensure_future(_watchdog(pub, 0.5, float(cmd.get("drain", 5.0))))
    capped = 0
    if pub.paced:
        capped = await _pace(pub, rate)
    else:
        pub.fill()
    await pub.done
    await watchdog
    probe.publisher = None
    lat = sorted(probe.latencies_ns)
    lat = lat[len(lat) // 20 :]  # the first 5% are warm-up
    return {
        "sent": pub.sent,
        "acked": pub.acked,
        "probe_good": counters.good,
        "probe_last_rx": counters.last_rx,
        "t_first": pub.t_first,
        "t_last_send": pub.t_last_send,
        "stalls": pub.stalls,
        "capped": capped,
        "lat_n": len(lat),
        "lat_p50_us": _percentile(lat, 0.50),
        "lat_p99_us": _percentile(lat, 0.99),
        "lat_max_us": _percentile(lat, 1.0),
        "cpu": _cpu_seconds() - cpu0,
        "now": monotonic(),
    }


# --------------------------------------------------------------------------- entry point


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m roomer.benchmark.loadgen")
    parser.add_argument("role", choices=["sub", "pub", "idle"])
    parser.add_argument("--url", required=True)
    parser.add_argument(
        "--probe-url", default=None, help="pub: where the probe connects (default --url)"
    )
    parser.add_argument("--count", type=int, default=1, help="connections (sub, idle)")
    parser.add_argument("--payload", type=int, default=64, help="chat payload bytes (>= 16)")
    parser.add_argument("--mode", choices=["bytes", "frames"], default="bytes")
    parser.add_argument("--inflight", type=int, default=100)
    parser.add_argument(
        "--read-buffer",
        type=int,
        default=64 * 1024,
        help="picows read buffer of each subscriber connection",
    )
    parser.add_argument(
        "--socketio", action="store_true", help="use python-socketio clients (the socketio peer)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    import uvloop

    die_with_parent()
    raise_nofile()
    args = _parser().parse_args(argv)
    if args.socketio:
        from roomer.benchmark import sioload

        runner = sioload.run_publisher if args.role == "pub" else sioload.run_subscribers
        uvloop.run(runner(args))
        return 0
    uvloop.run(_run_publisher(args) if args.role == "pub" else _run_subscribers(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
