"""Load generator of the game-lobby workload: many small rooms, inputs at a tick rate.

Run as ``python -m roomer.benchmark.gameload --url URL --first-room A --rooms K ...``; the
harness drives it with one JSON command per line on stdin, one JSON reply per line on stdout
(the protocol of :mod:`roomer.benchmark.loadgen`).

The process holds ``--rooms`` whole rooms of ``--room-size`` members each, so every
delivery can be accounted here: a receiver expects every input the other senders of its
room sent in the window, and what it received is counted on its own connection. Members
``0 .. senders-1`` of a room send (all of them by default); the last member of each room
joins last and is its *probe*: it parses every frame and times the input stamped in it
(seq, CLOCK_MONOTONIC ns at the send, shared by every process of the machine). The others
count bytes (``--mode bytes``, one callback per read, as the lobby benchmark does) or parse
every frame too (``--mode frames``: every receiver is a probe, and pings are answered).

Sends are spread evenly over the tick period in an order shuffled once (independent phases,
as unsynchronised game clients have), all processes starting at the same instant (the
``start_at`` of the ``run`` command). A sender's stamp is its actual send time; how late the
generator was against its schedule is reported (``lag``), so a starved generator shows.

Commands: ``reset`` (zero every counter), ``run`` (send for a window; reply when the window
ends), ``stats`` (cheap totals, polled while the server drains), ``result`` (the window's
accounting and latency histogram), ``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import socket
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable
from typing import Any

import picows

from roomer.benchmark import wire
from roomer.benchmark.loadgen import (
    CONNECT_CONCURRENCY,
    _command_loop,
    _cpu_seconds,
    _emit,
)
from roomer.benchmark.procs import die_with_parent, raise_nofile

__all__ = ["HIST_BASE", "Schedule", "Stamps", "histogram", "main", "owed", "pace", "room_name",
           "tally"]

BINARY = picows.WSMsgType.BINARY
EVENT = wire.CHAT
HIST_BASE = 1.01  # latency histogram: bucket i holds [1.01**i, 1.01**(i+1)) microseconds
_LOG_BASE = math.log(HIST_BASE)
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
monotonic = time.monotonic
monotonic_ns = time.monotonic_ns


def room_name(index: int) -> str:
    """Every room name has the same length, so every relayed frame has the same size."""
    return f"g{index:07d}"


def histogram(latencies_ns: array[int]) -> dict[str, int]:
    """Log-bucketed latencies (1% wide): mergeable across processes by adding counts."""
    counts: Counter[int] = Counter()
    for ns in latencies_ns:
        counts[int(math.log(max(ns, 1000) / 1000.0) / _LOG_BASE)] += 1
    return {str(k): v for k, v in counts.items()}


def owed(rooms: int, size: int, order: list[tuple[int, int]],
         schedule: Schedule | None) -> list[list[int]]:
    """Per room, per member: the inputs it is owed in the window (every other sender's)."""
    sent = [[0] * size for _ in range(rooms)]
    if schedule is not None:
        for slot_in_order, (slot, index) in enumerate(order):
            sent[slot][index] = schedule.sent_by(slot_in_order)
    return [[sum(row) - own for own in row] for row in sent]


def tally(received: list[list[int]], expected: list[list[int]]) -> dict[str, int]:
    """Each receiver's count against what it was owed: totals, lost, short receivers."""
    short = extra = lost = 0
    for got_row, want_row in zip(received, expected, strict=True):
        for got, want in zip(got_row, want_row, strict=True):
            if got < want:
                short += 1
                lost += want - got
            elif got > want:
                extra += got - want
    return {"received": sum(map(sum, received)), "expected": sum(map(sum, expected)),
            "lost": lost, "short_receivers": short, "extra": extra}


class Schedule:
    """Send ``k`` of a window goes at ``start + k / (senders * rate)`` from sender
    ``order[k % senders]``, as its input number ``k // senders``: every sender sends at
    ``rate``, and the process's sends are spread evenly over each tick period."""

    def __init__(self, senders: int, rate: float, start: float, duration: float) -> None:
        self.senders = senders
        self.per_s = senders * rate
        self.start = start
        self.total = int(duration * self.per_s + 0.5)
        self.next = 0  # sends done
        self.lags_ms = array("d")  # at each wake with sends due: how late the oldest was

    def due(self, now: float) -> int:
        """Sends due by ``now`` (recording how late the first of them is)."""
        due = min(self.total, int((now - self.start) * self.per_s) + 1) if now >= self.start \
            else 0
        if due > self.next:
            self.lags_ms.append(1000.0 * (now - self.start - self.next / self.per_s))
        return due

    def sent_by(self, slot: int) -> int:
        """Inputs the sender in ``slot`` of the order sent in the window."""
        return self.total // self.senders + (1 if slot < self.total % self.senders else 0)

    def lag_summary(self) -> dict[str, float]:
        lags = sorted(self.lags_ms)
        if not lags:
            return {"lag_p99_ms": 0.0, "lag_max_ms": 0.0}
        return {"lag_p99_ms": round(lags[min(len(lags) - 1, int(0.99 * len(lags)))], 3),
                "lag_max_ms": round(lags[-1], 3)}


async def pace(schedule: Schedule, send: Callable[[int], None]) -> None:
    """Run the schedule: wake every millisecond, make the sends that are due."""
    await asyncio.sleep(max(0.0, schedule.start - monotonic()))
    while schedule.next < schedule.total:
        due = schedule.due(monotonic())
        k = schedule.next
        while k < due:
            send(k)
            k += 1
        schedule.next = k
        if k < schedule.total:
            await asyncio.sleep(0.001)


# --------------------------------------------------------------------------- members


class Member(picows.WSListener):
    """One client: joins its room; then counts what it receives on its own connection."""

    def __init__(self, room: int, body_size: int, probe: bool, raw_bytes: bool,
                 joined: asyncio.Future[None], stamps: Stamps) -> None:
        super().__init__()
        self.room = room
        self.room_name = room_name(room)
        self.body_size = body_size
        self.stamp_offset = body_size - stamps.payload
        self.probe = probe
        self.raw_bytes = raw_bytes and not probe
        self.joined: asyncio.Future[None] | None = joined
        self.stamps = stamps
        self.transport: picows.WSTransport | None = None
        self.rx_bytes = 0  # every byte after the join (bytes mode)
        self.rx_frames = 0  # relayed inputs recognised by their size (probes)
        self.closed = False

    def reset(self) -> None:
        self.rx_bytes = self.rx_frames = 0

    def on_ws_connected(self, transport: picows.WSTransport) -> None:
        self.transport = transport
        transport.send(BINARY, wire.encode(self.room_name, "join", "", "", b""))

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if self.joined is not None:
            self._setup_frame(transport, frame)
            return
        size = frame.payload_size
        self.rx_bytes += size + wire.ws_header_size(size)
        if size != self.body_size or frame.msg_type != BINARY:
            return
        self.rx_frames += 1
        stamps = self.stamps
        stamps.last_rx = monotonic()
        _seq, sent_ns = wire.STAMP.unpack_from(frame.get_payload_as_memoryview(),
                                               self.stamp_offset)
        if sent_ns >= stamps.measure_from_ns:
            stamps.latencies_ns.append(monotonic_ns() - sent_ns)

    def _setup_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if frame.msg_type != BINARY:
            return
        room, event, _, _, _ = wire.decode(frame.get_payload_as_bytes())
        if event != "join_ack" or room != self.room_name or self.joined is None:
            return
        if self.raw_bytes:
            # Frames picows already buffered still come here; later reads go to the counter.
            transport.underlying_transport.set_protocol(RawCounter(self))
        if not self.joined.done():
            self.joined.set_result(None)
        self.joined = None

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        self.closed = True


class RawCounter(asyncio.BufferedProtocol):
    """Replaces picows on a member's socket after its join: adds up received bytes."""

    __slots__ = ("member", "stamps")

    def __init__(self, member: Member) -> None:
        self.member = member
        self.stamps = member.stamps

    def get_buffer(self, sizehint: int) -> memoryview:
        return _SCRATCH_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        self.member.rx_bytes += nbytes
        self.stamps.last_rx = monotonic()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.member.closed = True


# Read into one scratch buffer: the bytes are never looked at (see loadgen.RawByteCounter).
_SCRATCH_VIEW = memoryview(bytearray(256 * 1024))


class Stamps:
    """The process's latency samples and last receipt."""

    def __init__(self, payload: int) -> None:
        self.payload = payload
        self.latencies_ns = array("q")
        self.measure_from_ns = 0  # inputs sent before this are not timed (warm-up)
        self.last_rx = 0.0


# --------------------------------------------------------------------------- the process


class Rooms:
    """This process's rooms: members in room order, senders in shuffled send order."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.first = args.first_room
        self.count = args.rooms
        self.size = args.room_size
        self.senders_per_room = min(args.senders or args.room_size, args.room_size)
        self.body_size = wire.relayed_body_size(args.payload, room=room_name(0), event=EVENT,
                                                id_len=wire.ID_LEN)
        self.frame_size = self.body_size + wire.ws_header_size(self.body_size)
        self.stamps = Stamps(args.payload)
        self.members: list[list[Member]] = []  # [room][member]
        # (room slot, member index) of each sender, in send order.
        order = [(r, m) for r in range(self.count) for m in range(self.senders_per_room)]
        random.Random(self.first).shuffle(order)
        self.order = order
        self.schedule: Schedule | None = None

    async def connect(self) -> None:
        """Every member connects and joins; each room's probe (its last member) after the
        others, so a server that writes in join order writes its copy last."""
        loop = asyncio.get_running_loop()
        args = self.args
        sources = [s for s in (args.source or "").split(",") if s]
        self.members = [
            [Member(self.first + slot, self.body_size,
                    index == self.size - 1 or args.mode == "frames", args.mode == "bytes",
                    loop.create_future(), self.stamps) for index in range(self.size)]
            for slot in range(self.count)
        ]
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
        opened = 0

        async def one(member: Member) -> None:
            nonlocal opened
            kwargs: dict[str, Any] = {}
            if sources:
                kwargs["socket_factory"] = _bound_socket(sources[opened % len(sources)])
            opened += 1
            joined = member.joined
            assert joined is not None
            async with sem:
                # A handshake may wait long for a server busy accepting thousands.
                await picows.ws_connect(lambda: member, args.url,
                                        read_buffer_init_size=args.read_buffer,
                                        websocket_handshake_timeout=args.setup_timeout,
                                        **kwargs)
                await joined

        for phase in (range(self.size - 1), range(self.size - 1, self.size)):
            await asyncio.wait_for(
                asyncio.gather(*(one(row[i]) for row in self.members for i in phase)),
                args.setup_timeout)

    def reset(self) -> None:
        for row in self.members:
            for member in row:
                member.reset()
        self.stamps.latencies_ns = array("q")
        self.stamps.last_rx = 0.0
        self.schedule = None

    async def run(self, cmd: dict[str, Any]) -> dict[str, Any]:
        start = float(cmd["start_at"])
        duration = float(cmd["duration"])
        rate = float(cmd["rate"])
        self.stamps.measure_from_ns = int((start + float(cmd.get("warmup", 0.0))) * 1e9)
        schedule = Schedule(len(self.order), rate, start, duration)
        self.schedule = schedule
        payload = self.args.payload
        pad = bytes(payload - wire.STAMP.size)
        # Client-side body: room, event, empty dst, empty src (the server sets it), payload.
        prefixes = []
        transports = []
        for slot, index in self.order:
            member = self.members[slot][index]
            prefixes.append(wire.encode(member.room_name, EVENT, "", "", b"")[:-4]
                            + payload.to_bytes(4, "big"))
            assert member.transport is not None
            transports.append(member.transport)
        senders = len(self.order)
        pack = wire.STAMP.pack

        def send(k: int) -> None:
            i = k % senders
            transports[i].send(BINARY, prefixes[i] + pack(k // senders, monotonic_ns()) + pad)

        cpu0 = _cpu_seconds()
        await pace(schedule, send)
        return {"sent": schedule.total, "cpu": _cpu_seconds() - cpu0, **schedule.lag_summary()}

    def _received(self, member: Member) -> int:
        if member.probe:
            return member.rx_frames
        return member.rx_bytes // self.frame_size

    def stats(self) -> dict[str, Any]:
        received = sum(self._received(m) for row in self.members for m in row)
        expected = owed(self.count, self.size, self.order, self.schedule)
        return {"received": received, "expected": sum(map(sum, expected)),
                "last_rx": self.stamps.last_rx,
                "bytes": sum(m.rx_bytes for row in self.members for m in row),
                "closed": sum(m.closed for row in self.members for m in row),
                "cpu": _cpu_seconds(), "now": monotonic()}

    def result(self) -> dict[str, Any]:
        """Every receiver's account: expected against received on its own connection."""
        received = [[self._received(m) for m in row] for row in self.members]
        remainders = sum(1 for row in self.members for m in row
                         if not m.probe and m.rx_bytes % self.frame_size)
        return {
            **self.stats(),
            **tally(received, owed(self.count, self.size, self.order, self.schedule)),
            "remainder_receivers": remainders,
            "lat_n": len(self.stamps.latencies_ns),
            "hist": histogram(self.stamps.latencies_ns),
        }


def _bound_socket(source: str) -> Callable[[Any], socket.socket]:
    """A socket factory binding to ``source`` (another 127.0.0.x: each source address has
    its own ephemeral ports). IP_BIND_ADDRESS_NO_PORT leaves the port to connect(), so
    ports are shared across destinations as they are without a bind."""

    def factory(_url: Any) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
        except OSError:
            sock.close()
            raise
        return sock

    return factory


async def _main(args: argparse.Namespace) -> None:
    rooms = Rooms(args)
    t0 = monotonic()
    await rooms.connect()
    _emit({"reply": "ready", "connected": args.rooms * args.room_size,
           "connect_s": monotonic() - t0, "frame_size": rooms.frame_size})

    async def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd["cmd"]
        if name == "reset":
            rooms.reset()
        elif name == "run":
            return await rooms.run(cmd)
        elif name == "result":
            return rooms.result()
        return rooms.stats()

    await _command_loop(handle)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m roomer.benchmark.gameload")
    p.add_argument("--url", required=True)
    p.add_argument("--first-room", type=int, default=0, help="index of this process's first room")
    p.add_argument("--rooms", type=int, required=True, help="rooms held by this process")
    p.add_argument("--room-size", type=int, default=8)
    p.add_argument("--senders", type=int, default=0,
                   help="members of each room that send (default: all)")
    p.add_argument("--payload", type=int, default=48, help="input payload bytes (>= 16)")
    p.add_argument("--mode", choices=["bytes", "frames"], default="bytes")
    p.add_argument("--source", default="", help="comma-separated source addresses to bind")
    p.add_argument("--read-buffer", type=int, default=2048,
                   help="picows read buffer of each connection (2048: its minimum)")
    p.add_argument("--setup-timeout", type=float, default=120.0)
    p.add_argument("--socketio", action="store_true", help="python-socketio clients")
    return p


def main(argv: list[str] | None = None) -> int:
    import uvloop

    die_with_parent()
    raise_nofile()
    args = parser().parse_args(argv)
    if args.socketio:
        from roomer.benchmark import sioload

        uvloop.run(sioload.run_game(args))
    else:
        uvloop.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
