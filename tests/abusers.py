#!/usr/bin/env python3
"""Hostile (and crowd) clients for the abuse suite, each run in its own process.

``python abusers.py ROLE --port P [options]`` connects to a roomer server, prints one JSON
line when its setup is done (``{"ready": true, ...}``), abuses the server until it reads
``stop`` on stdin (or stdin closes), then prints one JSON report line and exits. Running
apart from the test keeps an abuser from starving the test's observers (or being starved
by them) on a shared event loop; it runs on uvloop to push as hard as it can.

Frames are built by hand from RFC 6455 and docs/protocol.md §2. Abuse frames carry the all-zero
masking key: legal (the client picks the key), and the body then needs no XOR.
A flooding abuser that the server disconnects reconnects and carries on, as a real one
would; its report lists each connection's life, close code and the replies it saw.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import struct
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import picows
import uvloop
from waiting import TIMEOUT, pace, pace_until, scaled

U32 = struct.Struct(">I")
SEQ = struct.Struct(">Q")
monotonic = time.monotonic
BATCH = 256  # messages per write of a flood
# The heavy client: as much as the default limits allow, with a margin for timer jitter:
# 190 messages a second (rate_limit 200/1 s) of 4,900 bytes (byte_limit 1 MiB/1 s), in
# writes of 10 every 10/190 s.
HEAVY_PAYLOAD = 4900
HEAVY_BATCH = 10
HEAVY_INTERVAL = HEAVY_BATCH / 190
# A room of the abuser's own, joined once the test says stop: the reply (join_ack, or an
# error naming the room) comes after the reply to every message sent before it.
ANCHOR_ROOM = "abuser-anchor"
# How long the replies still on their way after the stop are waited for (the kernel's
# share of the flood is handled first: seconds of it with the slower pure-Python twin).
DRAIN = scaled(60.0)


# wire -------------------------------------------------------------------------------------


def message(room: str | bytes, event: str | bytes, dst: str | bytes = b"",
            payload: bytes = b"") -> bytes:
    out = []
    for field in (room, event, dst, b""):
        raw = field.encode() if isinstance(field, str) else field
        out.append(U32.pack(len(raw)) + raw)
    return b"".join(out) + U32.pack(len(payload)) + payload


def frame(body: bytes, opcode: int = 0x2) -> bytes:
    """A masked client frame with the zero key."""
    size = len(body)
    if size < 126:
        head = struct.pack(">BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, size)
    return head + b"\0\0\0\0" + body


def decode(body: bytes) -> tuple[str, str, str, str, bytes]:
    fields = []
    pos = 0
    for _ in range(5):
        (size,) = U32.unpack_from(body, pos)
        fields.append(body[pos + 4:pos + 4 + size])
        pos += 4 + size
    room, event, dst, src = (f.decode(errors="replace") for f in fields[:4])
    return room, event, dst, src, fields[4]


def upgrade_request(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


class Closed(Exception):
    pass


class WS:
    """A client connection on a bare non-blocking socket: the abuser decides exactly what
    it writes and whether it reads."""

    def __init__(self, sock: socket.socket, rest: bytes) -> None:
        self.sock = sock
        self.buf = bytearray(rest)
        self.opened = monotonic()
        self.close_code: int | None = None
        self.closed_at = 0.0
        self.eof = False
        # The reader answers pings while the sender floods: two sock_sendall at once
        # interleave their bytes once the socket's buffer is full, and the server rightly
        # closes the garbled stream with 1002.
        self._writing = asyncio.Lock()
        self._torn = False  # a write was cancelled part-way: the stream ends there

    @classmethod
    async def open(cls, port: int, rcvbuf: int | None = None) -> WS:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), scaled(10))
            await loop.sock_sendall(sock, upgrade_request(port))
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65536), scaled(10))
                if not data:
                    raise Closed("closed during the upgrade")
                buf += data
        except BaseException:
            sock.close()
            raise
        head, rest = buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            sock.close()
            raise Closed(head.decode(errors="replace"))
        return cls(sock, rest)

    async def send(self, data: bytes) -> None:
        async with self._writing:
            if self._torn:
                return  # bytes after half a frame would be garbage (and a 1002) too
            try:
                await asyncio.get_running_loop().sock_sendall(self.sock, data)
            except asyncio.CancelledError:
                self._torn = True
                raise

    def frames(self) -> list[tuple[int, bytes]]:
        """Complete frames in the buffer (server frames are unmasked)."""
        out = []
        buf = self.buf
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            size, at = buf[pos + 1] & 0x7F, pos + 2
            if size == 126:
                if end - pos < 4:
                    break
                size, at = struct.unpack_from(">H", buf, pos + 2)[0], pos + 4
            elif size == 127:
                if end - pos < 10:
                    break
                size, at = struct.unpack_from(">Q", buf, pos + 2)[0], pos + 10
            if end < at + size:
                break
            out.append((buf[pos] & 0x0F, bytes(buf[at:at + size])))
            pos = at + size
        del buf[:pos]
        return out

    async def read_into(self, on_frame: Callable[[int, bytes], None]) -> None:
        """Read until the server closes; ``on_frame(opcode, body)`` for each frame."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await loop.sock_recv(self.sock, 262144)
                if not data:
                    break
                self.buf += data
                for opcode, body in self.frames():
                    if opcode == 0x8:
                        self._got_close(body)
                    elif opcode == 0x9:
                        await self.send(frame(body, 0xA))
                    else:
                        on_frame(opcode, body)
        except OSError:
            pass
        self.eof = True
        if not self.closed_at:
            self.closed_at = monotonic()

    async def expect(self, room: str, event: str) -> None:
        """Read until the server's ``event`` in ``room`` (what comes before is dropped)."""
        loop = asyncio.get_running_loop()
        while True:
            for opcode, body in self.frames():
                if opcode == 0x2 and decode(body)[:2] == (room, event):
                    return
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), TIMEOUT)
            if not data:
                raise Closed(f"closed before {event} in {room}")
            self.buf += data

    def drain_after_reset(self) -> None:
        """A write failed (the server closed): find its close frame in what is left."""
        try:
            while True:
                data = self.sock.recv(262144)
                if not data:
                    break
                self.buf += data
        except OSError:
            pass
        for opcode, body in self.frames():
            if opcode == 0x8:
                self._got_close(body)

    def _got_close(self, body: bytes) -> None:
        if self.close_code is None:
            self.close_code = U32.unpack(b"\0\0" + body[:2])[0] if len(body) >= 2 else 1005
            self.closed_at = monotonic()

    def close(self) -> None:
        self.sock.close()


class Tally:
    """What one connection saw: events by name, errors by code."""

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.anchored = asyncio.Event()
        self.error_times: list[float] = []  # rate_limited replies, seconds after open
        self.opened = monotonic()
        self.last_rx = 0.0
        self.bytes = 0

    def on_frame(self, opcode: int, body: bytes) -> None:
        self.last_rx = monotonic()
        self.bytes += len(body)
        room, event, _dst, _src, payload = decode(body)
        if room == ANCHOR_ROOM:
            self.anchored.set()
            return
        # The root join_ack every connection gets is told apart from the abuse's acks.
        self.events[f"{event}@root" if room == "root" and event == "join_ack" else event] += 1
        if event == "error":
            code = json.loads(payload)["code"]
            self.errors[code] += 1
            if code == "rate_limited":
                self.error_times.append(round(monotonic() - self.opened, 3))


# the control channel ----------------------------------------------------------------------


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def watch_stdin(stop: asyncio.Event, eof: asyncio.Event) -> None:
    """Set ``stop`` when the test writes ``stop``, and both when its end of stdin closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            stop.set()
            eof.set()
            return
        if line.strip() == b"stop":
            stop.set()


# floods -----------------------------------------------------------------------------------


class Flood:
    """Write batches as fast as the socket takes them, reconnecting when the server
    closes; optionally read (and tally) everything the server answers."""

    def __init__(self, args: argparse.Namespace, stop: asyncio.Event,
                 batches: Callable[[], bytes], per_batch: int, read: bool,
                 setup: list[bytes] | None = None, interval: float = 0.0) -> None:
        self.args = args
        self.interval = interval  # seconds between two batches (0: as fast as it can)
        self.stop = stop
        self.batches = batches
        self.per_batch = per_batch
        self.read = read
        self.setup = setup or []
        self.sent = 0
        self.connect_failures = 0
        self.lives: list[dict[str, Any]] = []

    async def run(self) -> None:
        while not self.stop.is_set():
            try:
                ws = await WS.open(self.args.port)
            except (OSError, Closed, TimeoutError):
                self.connect_failures += 1
                await pace(0.05)  # a reconnecting abuser's pace
                continue
            await self._one_life(ws)

    async def _one_life(self, ws: WS) -> None:
        tally = Tally()
        loop = asyncio.get_running_loop()
        reader = loop.create_task(ws.read_into(tally.on_frame)) if self.read else None
        progress = {"sent": 0}

        async def send_all() -> None:
            try:
                for data in self.setup:
                    await ws.send(frame(data))
                start = monotonic()
                while not ws.eof and not self.stop.is_set():
                    await ws.send(self.batches())
                    progress["sent"] += self.per_batch
                    if self.interval:
                        await pace_until(start + progress["sent"] // self.per_batch
                                         * self.interval)
            except OSError:
                if reader is None:
                    ws.drain_after_reset()

        sender = loop.create_task(send_all())
        stopped = loop.create_task(self.stop.wait())
        await asyncio.wait({sender, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        # Stopped by the test: the batch being written ends first, so the count of sent
        # messages is exact, unless the server does not read it within TIMEOUT (a server
        # that stopped reading this client must not hang the test).
        partial = False
        try:
            await asyncio.wait_for(sender, TIMEOUT)
        except TimeoutError:
            partial = True
        sent = progress["sent"]
        self.sent += sent
        if reader is not None:
            # Stopped by the test: the replies still on their way are read up to the
            # anchor's reply, or the server's close. A rate limit may drop the anchor:
            # it is sent again each half second (its bucket refills meanwhile).
            anchored = loop.create_task(tally.anchored.wait())
            deadline = monotonic() + DRAIN
            while not partial and not reader.done() and not anchored.done() \
                    and monotonic() < deadline:
                try:
                    await asyncio.wait_for(ws.send(frame(message(ANCHOR_ROOM, "join"))),
                                           TIMEOUT)
                except (OSError, TimeoutError):
                    break
                await asyncio.wait({reader, anchored}, timeout=scaled(0.5),
                                   return_when=asyncio.FIRST_COMPLETED)
            await asyncio.wait({reader, anchored}, timeout=max(0.0, deadline - monotonic()),
                               return_when=asyncio.FIRST_COMPLETED)
            anchored.cancel()
            reader.cancel()
        ws.close()
        # Ended before the test said stop, or the server's close was seen.
        server_closed = ws.eof or ws.closed_at > 0 or not self.stop.is_set()
        self.lives.append({
            "life": round((ws.closed_at or monotonic()) - ws.opened, 3),
            "closed_by_server": server_closed,
            "close_code": ws.close_code,
            "sent": sent,
            # A batch cut short: up to per_batch more messages may have reached the server.
            "partial_batch": partial,
            "per_batch": self.per_batch,
            "events": dict(tally.events),
            "errors": dict(tally.errors),
            "bytes_in": tally.bytes,
            "rate_limited_at": tally.error_times[:50],
        })

    def report(self) -> dict[str, Any]:
        return {"sent": self.sent, "connect_failures": self.connect_failures,
                "connections": len(self.lives), "lives": self.lives[:40],
                "closed_by_server": sum(life["closed_by_server"] for life in self.lives)}


def _cycle(batches: list[bytes]) -> Callable[[], bytes]:
    state = {"i": 0}

    def next_batch() -> bytes:
        state["i"] += 1
        return batches[state["i"] % len(batches)]

    return next_batch


def malformed_batch() -> bytes:
    """Bodies docs/protocol.md §2 calls malformed: too short, a length past the end (0xFFFFFFFF
    included), trailing bytes."""
    ok = message("obs", "x")
    bodies = [os.urandom(10), b"\xff\xff\xff\xff" + os.urandom(30), ok + b"trailing",
              U32.pack(40) + b"abc" + bytes(16), b"", ok[:-1]]
    return b"".join(frame(bodies[i % len(bodies)]) for i in range(BATCH))


def invalid_name_batch() -> bytes:
    """Well-formed messages whose names docs/protocol.md §9 refuses: bad UTF-8, overlong, empty."""
    bodies = [message(b"\xff\xfe\xfd", "chat"), message("r" * 200, "chat"),
              message("obs", "e" * 100), message("obs", b""), message("obs", b"\xc3\x28"),
              message(b"", "chat")]
    return b"".join(frame(bodies[i % len(bodies)]) for i in range(BATCH))


def dm_unknown_batches() -> list[bytes]:
    return [b"".join(frame(message("root", "psst", str(uuid.uuid4()), b"hi"))
                     for _ in range(BATCH)) for _ in range(8)]


async def run_flood(args: argparse.Namespace, stop: asyncio.Event) -> dict[str, Any]:
    role = args.role
    room = args.room
    setup: list[bytes] = []
    if role == "malformed":
        batches, per = _cycle([malformed_batch()]), BATCH
    elif role == "invalid_names":
        batches, per = _cycle([invalid_name_batch()]), BATCH
    elif role == "dm_unknown":
        batches, per = _cycle(dm_unknown_batches()), BATCH
    elif role == "rejoin":
        setup = [message(room, "join")]
        batches, per = _cycle([frame(message(room, "join")) * BATCH]), BATCH
    elif role == "presence":
        pair = frame(message(room, "join")) + frame(message(room, "leave"))
        batches, per = _cycle([pair * (BATCH // 2)]), BATCH
    elif role == "shout":
        setup = [message(room, "join")]
        batches, per = _cycle([frame(message(room, "shout", payload=b"!" * 32)) * BATCH]), BATCH
    elif role == "heavy":
        setup = [message(room, "join")]
        heavy = frame(message(room, "shout", payload=b"!" * HEAVY_PAYLOAD)) * HEAVY_BATCH
        flood = Flood(args, stop, _cycle([heavy]), HEAVY_BATCH, read=args.read, setup=setup,
                      interval=HEAVY_INTERVAL)
        emit({"ready": True})
        await flood.run()
        return flood.report()
    elif role == "join_distinct":
        counter = {"k": 0}

        def distinct() -> bytes:
            # Each batch: joins of fresh rooms (the room limit answers most), then
            # leaves of the same rooms (each deletes what the joins made).
            k = counter["k"]
            counter["k"] = k + BATCH // 2
            names = [f"spray-{i}" for i in range(k, k + BATCH // 2)]
            return (b"".join(frame(message(n, "join")) for n in names)
                    + b"".join(frame(message(n, "leave")) for n in names))

        batches, per = distinct, BATCH
    elif role == "dm_real":
        seq = {"n": 0}

        def to_target() -> bytes:
            n = seq["n"]
            seq["n"] = n + BATCH
            return b"".join(frame(message("root", "dm", args.target, SEQ.pack(i)))
                            for i in range(n, n + BATCH))

        batches, per = to_target, BATCH
    else:
        raise SystemExit(f"unknown flood {role}")
    flood = Flood(args, stop, batches, per, read=args.read, setup=setup)
    emit({"ready": True})
    await flood.run()
    report = flood.report()
    if role == "rejoin":
        report["room"] = room
    return report


# a receiver that never reads ----------------------------------------------------------------


async def run_nonreader(args: argparse.Namespace, stop: asyncio.Event) -> dict[str, Any]:
    """One client with a tiny receive buffer joins ``room`` and never reads again; a
    second floods the room with 1 KB relays."""
    sleeper = await WS.open(args.port, rcvbuf=2048)
    await sleeper.send(frame(message(args.room, "join")))
    flood = Flood(args, stop, _cycle([frame(message(args.room, "spam", payload=b"s" * 1000))
                                      * 64]), 64, read=False,
                  setup=[message(args.room, "join")])
    await sleeper.expect(args.room, "join_ack")  # the sleeper's join first; then no reads
    emit({"ready": True})
    await flood.run()
    # Still connected? A zero-length read would be EOF; EAGAIN means open and quiet.
    try:
        alive = sleeper.sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        alive = True
    except OSError:
        alive = False
    sleeper.close()
    return {**flood.report(), "sleeper_connected": alive}


# sockets that never finish the upgrade ------------------------------------------------------


class HalfOpen(asyncio.Protocol):
    def __init__(self, owner: Holder) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.opened = 0.0
        self.got: bytes = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.opened = monotonic()

    def writable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def data_received(self, data: bytes) -> None:
        self.got += data[:64]

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.lost(self)


class Holder:
    """Keeps ``count`` sockets open that never complete an HTTP upgrade: some send
    nothing, some a partial request, some trickle it one byte at a time (slowloris).
    A socket the server closes is replaced while the abuse lasts."""

    def __init__(self, args: argparse.Namespace, stop: asyncio.Event) -> None:
        self.args = args
        self.stop = stop
        self.open: set[HalfOpen] = set()
        self.lives: list[float] = []
        self.answered: Counter[str] = Counter()  # what the server wrote before closing
        self.connect_failures = 0
        self.opened_total = 0
        self.slowest_connect = 0.0

    def lost(self, conn: HalfOpen) -> None:
        self.open.discard(conn)
        if not self.stop.is_set():
            self.lives.append(monotonic() - conn.opened)
            self.answered[conn.got.split(b"\r\n", 1)[0].decode(errors="replace") or "-"] += 1

    async def open_one(self) -> HalfOpen | None:
        loop = asyncio.get_running_loop()
        t0 = monotonic()
        try:
            _, conn = await loop.create_connection(lambda: HalfOpen(self), "127.0.0.1",
                                                   self.args.port)
        except OSError:
            self.connect_failures += 1
            return None
        # Over 1 s: the server's listen queue was full and the SYN had to be sent again.
        self.slowest_connect = max(self.slowest_connect, monotonic() - t0)
        self.opened_total += 1
        self.open.add(conn)
        return conn

    async def run(self) -> dict[str, Any]:
        args = self.args
        request = upgrade_request(args.port)
        sem = asyncio.Semaphore(200)
        sent: dict[HalfOpen, int] = {}

        async def guarded() -> None:
            async with sem:
                conn = await self.open_one()
            if conn is not None:
                sent[conn] = 0

        t0 = monotonic()
        await asyncio.gather(*(guarded() for _ in range(args.count)))
        opening = monotonic() - t0
        for i, conn in enumerate(list(self.open)):
            if args.mode == "halfopen" and i % 2 and conn.writable():
                assert conn.transport is not None
                conn.transport.write(request[:len(request) // 2])  # partial, never ended
        emit({"ready": True, "open": len(self.open)})
        held: list[int] = []

        async def top_up() -> None:
            # Replace what the server closed.
            while not self.stop.is_set():
                await asyncio.gather(*(guarded() for _ in range(args.count - len(self.open))))
                await pace(args.interval)  # the abuser's pace

        async def trickle() -> None:
            # Slowloris: one more byte of the request on each socket per interval.
            while not self.stop.is_set():
                for conn in list(self.open):
                    at = sent.get(conn, 0)
                    if conn.writable() and at < len(request) - 1:
                        assert conn.transport is not None
                        conn.transport.write(request[at:at + 1])
                        sent[conn] = at + 1
                await pace(args.interval)  # the trickle's pace is the abuse

        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(top_up())]
        if args.mode == "slowloris":
            tasks.append(loop.create_task(trickle()))
        while not self.stop.is_set():
            held.append(len(self.open))
            await pace(0.1)  # how often the number held is sampled
        for task in tasks:
            task.cancel()
        for conn in list(self.open):
            if conn.transport is not None:
                conn.transport.close()
        lives = sorted(self.lives)
        return {
            "first_open_s": round(opening, 3),
            "slowest_connect_s": round(self.slowest_connect, 3),
            "held_mean": round(sum(held) / len(held)) if held else 0,
            "held_min": min(held, default=0),
            "opened": self.opened_total,
            "closed_by_server": len(lives),
            "connect_failures": self.connect_failures,
            "life_median": round(lives[len(lives) // 2], 3) if lives else None,
            "life_max": round(lives[-1], 3) if lives else None,
            "answered": dict(self.answered),
        }


# the crowd: readers that fill a room -------------------------------------------------------


DM_PREFIX = message("root", "dm")[:14]  # room "root", event "dm": a dm_real message


class Member(picows.WSListener):
    """Joins the room, then reads everything; checks the order of direct messages."""

    def __init__(self, room: str, joined: asyncio.Future[str], stats: Counter[str]) -> None:
        self.room = room
        self.joined: asyncio.Future[str] | None = joined
        self.stats = stats
        self.cid = ""
        self.last_dm = -1

    def on_ws_connected(self, transport: picows.WSTransport) -> None:
        transport.send(picows.WSMsgType.BINARY, message(self.room, "join"))

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if frame.msg_type != picows.WSMsgType.BINARY:
            if frame.msg_type == picows.WSMsgType.CLOSE:
                # Why the server closed it, when the close frame got through (a receiver
                # cut off as slow is aborted: its close frame is usually lost).
                code = frame.get_close_code()
                why = (frame.get_close_message() or b"").decode(errors="replace")
                self.stats[f"close {int(code)} {why}"] += 1
            return
        stats = self.stats
        stats["frames"] += 1
        if self.joined is None:
            # Only direct messages are looked at once joined (a flood's presence or
            # relays would cost the crowd more than the server).
            if frame.get_payload_as_memoryview()[:len(DM_PREFIX)] == DM_PREFIX:
                (seq,) = SEQ.unpack_from(frame.get_payload_as_memoryview(),
                                         frame.payload_size - SEQ.size)
                stats["dm"] += 1
                if seq <= self.last_dm:
                    stats["dm_out_of_order"] += 1
                self.last_dm = seq
            return
        room, event, _dst, src, _payload = decode(frame.get_payload_as_bytes())
        if event == "join_ack":
            if room == "root":
                self.cid = src
            elif room == self.room:
                self.joined.set_result(self.cid)
                self.joined = None

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        self.stats["disconnected"] += 1


async def run_crowd(args: argparse.Namespace, stop: asyncio.Event,
                    eof: asyncio.Event) -> None:
    """Report what the members saw so far on ``stop``; they stay connected, reading,
    until stdin closes (the test reads what the server counted meanwhile). What a
    member saw is no account of the server's: a crowd of 100 in one process reads a
    flood far slower than the server writes it, so it learns of a disconnect only
    after the megabytes before it, seconds later."""
    loop = asyncio.get_running_loop()
    stats: Counter[str] = Counter()
    transports = []
    ids = []
    for _ in range(args.count):
        joined: asyncio.Future[str] = loop.create_future()
        transport, _ = await picows.ws_connect(
            lambda j=joined: Member(args.room, j, stats), f"ws://127.0.0.1:{args.port}/ws")
        transports.append(transport)
        ids.append(await asyncio.wait_for(joined, TIMEOUT))
    emit({"ready": True, "ids": ids})
    await stop.wait()
    emit(dict(stats))
    await eof.wait()
    for transport in transports:
        transport.disconnect()
    await asyncio.wait_for(asyncio.gather(*(t.wait_disconnected() for t in transports)),
                           TIMEOUT)


# main ---------------------------------------------------------------------------------------

FLOODS = ("malformed", "invalid_names", "dm_unknown", "dm_real", "rejoin", "presence",
          "shout", "heavy", "join_distinct")


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    eof = asyncio.Event()
    watcher = asyncio.get_running_loop().create_task(watch_stdin(stop, eof))
    if args.role in FLOODS:
        report = await run_flood(args, stop)
    elif args.role == "nonreader":
        report = await run_nonreader(args, stop)
    elif args.role in ("halfopen", "slowloris"):
        args.mode = args.role
        report = await Holder(args, stop).run()
    elif args.role == "crowd":
        await run_crowd(args, stop, eof)
        return
    else:
        raise SystemExit(f"unknown role {args.role}")
    watcher.cancel()
    emit(report)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("role")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--room", default="crowd")
    parser.add_argument("--read", action="store_true", help="read and tally replies")
    parser.add_argument("--target", default="", help="dm_real: the id to message")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.05)
    return parser.parse_args(argv)


if __name__ == "__main__":
    uvloop.run(main(parse(sys.argv[1:])))
