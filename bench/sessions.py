"""What resumable sessions cost, measured against the same server without them, in one run.

The server runs in its own process (uvloop, ``resume_window`` 60 s); the clients are bare
sockets in this one, speaking docs/protocol.md §11 by hand, so what is timed is the
server's side. Three parts:

- ``memory``: the server's RSS growth per connection for N clients in rooms of 8 that
  asked for a session, then once every socket is reset (held sessions), then after 16 KiB
  was sent to each held session: the cost of a held session, and of a buffered KiB.
- ``latency``: a client reading a room streamed at 1,000 messages/s is reset and resumes at
  once: the time from its new connection's first byte to the first message the server sent
  after that instant (every missed one before it), against a new client's connect, join
  and first message in the same run.
- ``throughput``: a room of 20 clients streamed at a fixed rate, with one of them reset
  and resumed over and over, against the same room with no one resuming: messages the
  clients read a second and the server's CPU per delivery.
- ``across_nodes`` (with ``--backplane URL``): two server processes on that broker; a
  client reading a room streamed at 1,000 messages/s from the first is reset over and
  over and resumes on the other node, then on the same one, by turns: the time to its
  verdict and to its first live message when its session moves, against a resume on the
  node holding it.

    python bench/sessions.py --sessions 2000
    python bench/sessions.py --backplane redis://127.0.0.1:6379/0 --only across
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ctypes
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import roomer
from roomer import codec

PAGE = os.sysconf("SC_PAGE_SIZE")


# the server ----------------------------------------------------------------------------


def serve(backplane: str | None) -> None:
    server = roomer.Server(resume_window=60.0, rate_limit=None, byte_limit=None,
                           max_held_sessions=100_000, ping_interval=None,
                           backplane=backplane, backplane_prefix=f"bench{os.getppid()}")
    streams: dict[str, asyncio.Task[None]] = {}

    async def stream(room: str, rate: float) -> None:
        # Batches every 5 ms; each message says its number and when it was sent.
        n, start, step = 0, time.monotonic(), 0.005
        while True:
            due = int((time.monotonic() - start) * rate)
            while n < due:
                server.broadcast(room, "tick", f"{n} {time.monotonic()}")
                n += 1
            await asyncio.sleep(step)

    @server.on("stream")
    def start_stream(conn: roomer.Connection, msg: roomer.Message) -> None:
        room, rate = msg.payload.decode().split()
        if room in streams:
            streams.pop(room).cancel()
        if float(rate) > 0:
            streams[room] = asyncio.get_running_loop().create_task(
                stream(room, float(rate)))

    @server.on("burst")
    def burst(conn: roomer.Connection, msg: roomer.Message) -> None:
        count, size = map(int, msg.payload.decode().split())
        body = b"x" * size
        for room in list(server.rooms()):
            if room != "root":
                for _ in range(count):
                    server.broadcast(room, "burst", body)

    @server.on("trim")
    def trim(conn: roomer.Connection, msg: roomer.Message) -> None:
        # Freed memory goes back to the system before RSS is read: what stays is in use.
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        conn.send("trimmed")

    def started(srv: roomer.Server) -> None:
        print(srv.address[1], flush=True)

    server.run("127.0.0.1", 0, on_started=started)


# a bare session client -------------------------------------------------------------------


def _frame(body: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(body)
    head = bytes([0x82, 0x80 | n]) if n < 126 else bytes([0x82, 0xFE]) + struct.pack(">H", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(body))
    return head + mask + masked


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.token = ""
        self.count = 0

    @classmethod
    async def open(cls, port: int, query: str = "session=new") -> tuple[Client, Any]:
        """A connection, and the verdict of a resume (None for a new session)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /ws?{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        await reader.readuntil(b"\r\n\r\n")
        client = cls(reader, writer)
        if query == "session=new":
            await client.recv()  # the root join_ack
            client.token = json.loads((await client.recv())[4])["token"]
            return client, None
        if "session=" not in query:
            await client.recv()  # no session: the root join_ack alone
            return client, None
        verdict = await client.recv(counted=False)
        return client, verdict

    async def recv(self, counted: bool = True) -> tuple[str, str, str, str, bytes]:
        while True:
            head = await self.reader.readexactly(2)
            size = head[1] & 0x7F
            if size == 126:
                size = struct.unpack(">H", await self.reader.readexactly(2))[0]
            elif size == 127:
                size = struct.unpack(">Q", await self.reader.readexactly(8))[0]
            body = await self.reader.readexactly(size)
            if head[0] & 0x08:
                continue  # control frames are not messages
            self.count += counted
            return codec.decode(body)

    def send(self, room: str, event: str, payload: bytes = b"") -> None:
        self.writer.write(_frame(codec.encode(room, event, "", "", payload)))

    async def join(self, room: str) -> None:
        self.send(room, "join")
        while (await self.recv())[1] != "join_ack":
            pass

    def ack(self) -> None:
        self.send("root", "session.ack", str(self.count).encode())

    def reset(self) -> None:
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def resume(self, port: int) -> tuple[Client, Any]:
        again, verdict = await Client.open(
            port, f"session={self.token}&received={self.count}")
        if verdict[1] == "session.resumed":
            again.token = json.loads(verdict[4])["token"]
            again.count = self.count
        return again, verdict


# the parts ------------------------------------------------------------------------------


def rss_kib(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / 1024


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def held_count(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    text = (await reader.read()).decode()
    writer.close()
    for line in text.splitlines():
        if line.startswith("roomer_sessions_held "):
            return int(float(line.split()[1]))
    raise RuntimeError("no roomer_sessions_held in /metrics")


async def until(check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.05)


async def trimmed_rss(port: int, pid: int) -> float:
    control, _ = await Client.open(port, "")
    control.send("root", "trim")
    await control.recv()
    control.writer.close()
    return rss_kib(pid)


async def memory(port: int, pid: int, sessions: int) -> dict[str, float]:
    before = await trimmed_rss(port, pid)
    clients = []
    for i in range(sessions):
        client, _ = await Client.open(port)
        await client.join(f"m{i // 8}")
        clients.append(client)
    connected = await trimmed_rss(port, pid)
    for client in clients:
        client.reset()
    await until(lambda: _equal(held_count(port), sessions))
    held = await trimmed_rss(port, pid)
    control, _ = await Client.open(port, "")
    control.send("root", "burst", b"16 1024")  # 16 KiB to each held session
    control.send("root", "trim")
    await control.recv()  # the burst is done: handled in order before the trim
    buffered = rss_kib(pid)
    control.writer.close()
    return {"connected_kib": (connected - before) / sessions,
            "held_kib": (held - before) / sessions,
            "per_buffered_kib": (buffered - held) / (sessions * 16)}


async def _equal(value: Any, wanted: int) -> bool:
    return await value == wanted


async def first_message_after(client: Client, since: float) -> float:
    while True:
        _, event, _, _, payload = await client.recv()
        if event == "tick" and float(payload.split()[1]) >= since:
            return time.monotonic()


async def latency(port: int, rounds: int) -> dict[str, float]:
    control, _ = await Client.open(port)
    control.send("root", "stream", b"stream 1000")
    resumes, fresh = [], []
    client, _ = await Client.open(port)
    await client.join("stream")
    for _ in range(rounds):
        for _ in range(300):  # 0.3 s of the stream, acknowledged as it goes
            await client.recv()
            if client.count % 256 == 0:
                client.ack()
        client.reset()
        start = time.monotonic()
        client, verdict = await client.resume(port)
        assert verdict[1] == "session.resumed", verdict
        resumes.append(await first_message_after(client, start) - start)
        start = time.monotonic()
        other, _ = await Client.open(port)
        await other.join("stream")
        fresh.append(await first_message_after(other, start) - start)
        other.writer.close()
    control.send("root", "stream", b"stream 0")
    client.writer.close()
    return {"resume_ms": statistics.median(resumes) * 1000,
            "new_client_ms": statistics.median(fresh) * 1000}


async def across_nodes(ports: list[int], rounds: int) -> dict[str, float]:
    control, _ = await Client.open(ports[0])
    control.send("root", "stream", b"stream 1000")
    client, _ = await Client.open(ports[0])
    await client.join("stream")
    here = 0
    same: list[float] = []
    moved: list[float] = []
    verdicts: tuple[list[float], list[float]] = ([], [])  # same node, other node
    for turn in range(2 * rounds):
        for _ in range(300):  # 0.3 s of the stream, acknowledged as it goes
            await client.recv()
            if client.count % 256 == 0:
                client.ack()
        client.reset()
        there = 1 - here if turn % 2 == 0 else here
        start = time.monotonic()
        client, verdict = await client.resume(ports[there])
        assert verdict[1] == "session.resumed", verdict
        verdicts[there != here].append(time.monotonic() - start)
        (moved if there != here else same).append(
            await first_message_after(client, start) - start)
        here = there
    control.send("root", "stream", b"stream 0")
    client.writer.close()
    # The stream's batches are 5 ms apart: the first live message also waits for one.
    return {"verdict_other_node_ms": statistics.median(verdicts[1]) * 1000,
            "verdict_same_node_ms": statistics.median(verdicts[0]) * 1000,
            "first_live_other_node_ms": statistics.median(moved) * 1000,
            "first_live_same_node_ms": statistics.median(same) * 1000}


async def throughput(port: int, pid: int, members: int, rate: float, seconds: float,
                     churn: bool, sessions: bool = True) -> dict[str, float]:
    room = f"flood{int(churn)}{int(sessions)}"
    clients = []
    for _ in range(members):
        client, _ = await Client.open(port, "session=new" if sessions else "")
        await client.join(room)
        clients.append(client)
    read = 0
    stop = time.monotonic() + seconds

    async def reader(index: int) -> None:
        nonlocal read
        client = clients[index]
        while time.monotonic() < stop:
            await client.recv()
            read += 1
            if sessions and client.count % 256 == 0:
                client.ack()
            if churn and index == 0 and client.count % 200 == 0:
                client.reset()
                client, verdict = await client.resume(port)
                assert verdict[1] == "session.resumed", verdict
                clients[0] = client

    control, _ = await Client.open(port)
    control.send("root", "stream", f"{room} {rate}".encode())
    cpu = cpu_seconds(pid)
    await asyncio.gather(*(reader(i) for i in range(members)))
    cpu = cpu_seconds(pid) - cpu
    control.send("root", "stream", f"{room} 0".encode())
    for client in clients:
        client.writer.close()
    return {"read_per_s": read / seconds, "cpu_us_per_read": cpu / max(read, 1) * 1e6}


def _server(backplane: str | None) -> tuple[subprocess.Popen[str], int]:
    extra = ["--backplane", backplane] if backplane else []
    env = dict(os.environ, ROOMER_RESUME_SECRET="the bench's shared secret")
    proc = subprocess.Popen([sys.executable, __file__, "--serve", *extra],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    if args.only == "across":
        procs = [_server(args.backplane) for _ in range(2)]
        try:
            await asyncio.sleep(1.0)  # the nodes meet on the broker
            return {"across_nodes": await across_nodes([port for _, port in procs],
                                                       args.rounds)}
        finally:
            for proc, _ in procs:
                proc.terminate()
                proc.wait()
    proc, port = _server(None)
    try:
        out: dict[str, Any] = {}
        out["latency"] = await latency(port, args.rounds)
        bare = await throughput(port, proc.pid, 20, args.rate, args.seconds, False, False)
        plain = await throughput(port, proc.pid, 20, args.rate, args.seconds, False)
        churn = await throughput(port, proc.pid, 20, args.rate, args.seconds, True)
        out["throughput"] = {
            "no_sessions": bare, "sessions": plain, "sessions_one_resuming": churn,
            "cpu_sessions_over_none": plain["cpu_us_per_read"] / bare["cpu_us_per_read"],
            "read_resuming_over_steady": churn["read_per_s"] / plain["read_per_s"],
            "cpu_resuming_over_steady": churn["cpu_us_per_read"] / plain["cpu_us_per_read"]}
        out["memory"] = await memory(port, proc.pid, args.sessions)
        return out
    finally:
        proc.terminate()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--rate", type=float, default=2000.0,
                        help="messages a second streamed to the throughput room")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--backplane", help="a broker URL for the across-nodes part")
    parser.add_argument("--only", choices=["across"],
                        help="run one part alone (across: needs --backplane)")
    args = parser.parse_args()
    if args.serve:
        serve(args.backplane)
        return 0
    if args.only == "across" and not args.backplane:
        parser.error("--only across needs --backplane URL")
    print(json.dumps(asyncio.run(main_async(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
