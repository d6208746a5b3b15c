#!/usr/bin/env python3
"""Soak: many connections for minutes, with churn and steady broadcasts.

One ``roomer serve`` process (uvloop, default options) and load processes (picows on
uvloop) that together hold ``--connections`` connections:

- most are stable members of one of ``--rooms`` rooms, and read everything;
- each room has one publisher sending a stamped chat message ``--rate`` times a second,
  so every member measures its latency (CLOCK_MONOTONIC is shared by the processes)
  and counts the sequence numbers it missed;
- a ``--churn`` fraction cycles all the time: connect, join a room, stay about
  ``--stay`` seconds, leave (waiting for the leave_ack), disconnect, and again.

Every ``--sample`` seconds the harness reads the server's RSS and open fds from /proc
and its /metrics. At the end every client disconnects; the server's fds must return to
their level before the first connection. The verdict (printed, and the exit status):

- RSS: after ``--warmup`` seconds, the mean of the last window (a minute, or a third of
  what follows the warm-up on short runs) may exceed the mean of the first window by at
  most ``--rss-tolerance`` (5%): a leak of ~150 bytes per churned connection would
  show at 10,000 connections;
- fds back to the baseline once every client is gone;
- zero unexpected errors: client side (failed connects, join/leave timeouts, error
  frames, stable members disconnected, missed messages) and server side (every
  ``roomer_errors_total`` code, drops, slow-consumer disconnects).

``python bench/soak.py --connections 10000 --duration 300 --json soak.json``
(spread over ``--procs`` load processes; ulimit -n must cover the connections).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import resource
import signal
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

from roomer.benchmark.procs import read_metrics

BENCH_DIR = Path(__file__).resolve().parent
# Run from a source checkout without installing: the roomer next to this script (the
# server process is given the same one).
sys.path.insert(0, str(BENCH_DIR.parent))
STAMP = struct.Struct(">QQ")  # seq, send time in ns (CLOCK_MONOTONIC)
U32 = struct.Struct(">I")
ID_LEN = 36
CONNECT_CONCURRENCY = 64
REPLY_TIMEOUT = 10.0  # join_ack / leave_ack
# Latency histogram: bucket i holds latencies in [1.05**i, 1.05**(i+1)) microseconds.
BUCKET_BASE = math.log(1.05)
monotonic = time.monotonic


def room_name(index: int) -> str:
    return f"soak-{index:03d}"


def message(room: str, event: str, payload: bytes = b"") -> bytes:
    out = b"".join(U32.pack(len(f)) + f for f in (room.encode(), event.encode(), b"", b""))
    return out + U32.pack(len(payload)) + payload


def decode(body: bytes) -> tuple[str, str, str, bytes]:
    fields = []
    pos = 0
    for _ in range(5):
        (size,) = U32.unpack_from(body, pos)
        fields.append(body[pos + 4:pos + 4 + size])
        pos += 4 + size
    return fields[0].decode(), fields[1].decode(), fields[3].decode(), fields[4]


# The relayed chat message's size (src is the publisher's id) tells it apart without
# decoding; the stamp sits at its end.
CHAT_SIZE = len(message(room_name(0), "chat", bytes(STAMP.size))) + ID_LEN


def setup(server: Any) -> None:
    """``roomer serve soak:setup``: the default Server, nothing added."""


# ===================================================================== load process


class Stats:
    """One load process's counters (sent to the harness as JSON)."""

    def __init__(self) -> None:
        self.c: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()  # error frames by code
        self.hist: Counter[int] = Counter()

    def latency(self, ns: int) -> None:
        us = max(ns, 1000) / 1000.0
        self.hist[int(math.log(us) / BUCKET_BASE)] += 1

    def snapshot(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"counters": dict(self.c), "errors": dict(self.errors),
                "hist": {str(k): v for k, v in self.hist.items()},
                "cpu_s": usage.ru_utime + usage.ru_stime}


def _load_main(args: argparse.Namespace) -> None:
    import picows
    import uvloop

    binary = picows.WSMsgType.BINARY

    class Client(picows.WSListener):
        """A member of one room: counts what it gets, times the chats."""

        def __init__(self, stats: Stats, room: str, stable: bool) -> None:
            self.stats = stats
            self.room = room
            self.stable = stable
            self.last_seq = -1
            self.waiting: dict[str, asyncio.Future[None]] = {}
            self.closing = False
            self.transport: picows.WSTransport | None = None

        def expect(self, event: str) -> asyncio.Future[None]:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            # A disconnect fails what nobody awaits any more: not worth a warning.
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())
            self.waiting[event] = fut
            return fut

        def on_ws_connected(self, transport: picows.WSTransport) -> None:
            self.transport = transport

        def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
            if frame.msg_type != binary:
                return
            stats = self.stats
            stats.c["frames"] += 1
            size = frame.payload_size
            if size == CHAT_SIZE:
                now = time.monotonic_ns()
                seq, sent = STAMP.unpack_from(frame.get_payload_as_memoryview(),
                                              size - STAMP.size)
                stats.c["chats"] += 1
                stats.latency(now - sent)
                if self.last_seq >= 0 and seq != self.last_seq + 1:
                    if seq > self.last_seq:
                        stats.c["missed"] += seq - self.last_seq - 1
                    else:
                        stats.c["reordered"] += 1
                self.last_seq = seq
                return
            room, event, _src, payload = decode(frame.get_payload_as_bytes())
            if event in ("new_member", "member_left"):
                stats.c["presence"] += 1
                return
            if event == "error":
                stats.errors[json.loads(payload).get("code", "?")] += 1
                return
            if event in ("join_ack", "leave_ack") and (room == self.room or room == "root"):
                key = "root_ack" if room == "root" else event
                fut = self.waiting.pop(key, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)

        def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
            if not self.closing:
                self.stats.c["unexpected_disconnects" if self.stable
                             else "churn_dropped"] += 1
            for fut in self.waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("disconnected"))
            self.waiting.clear()

    stats = Stats()
    url = f"ws://127.0.0.1:{args.port}/ws"

    async def open_member(room: str, stable: bool) -> Client:
        holder: list[tuple[Client, asyncio.Future[None]]] = []

        def factory() -> Client:
            client = Client(stats, room, stable)
            holder.append((client, client.expect("root_ack")))
            return client

        await picows.ws_connect(factory, url)
        client, root_ack = holder[0]
        await asyncio.wait_for(root_ack, REPLY_TIMEOUT)
        ack = client.expect("join_ack")
        assert client.transport is not None
        client.transport.send(binary, message(room, "join"))
        await asyncio.wait_for(ack, REPLY_TIMEOUT)
        return client

    async def close_member(client: Client) -> None:
        client.closing = True
        tr = client.transport
        if tr is not None and not tr.is_disconnected:
            tr.send_close(picows.WSCloseCode.OK)
            tr.disconnect()
            await asyncio.wait_for(tr.wait_disconnected(), REPLY_TIMEOUT)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        my_rooms = [r for r in range(args.rooms) if r % args.procs == args.index]
        churners = round(args.count * args.churn)
        stable_n = max(0, args.count - churners - len(my_rooms))
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def guarded(room: str) -> Client:
            async with sem:
                return await open_member(room, True)

        rng = random.Random(args.index)
        stable = await asyncio.gather(
            *(guarded(room_name((k * args.procs + args.index) % args.rooms))
              for k in range(stable_n)))
        publishers = await asyncio.gather(*(guarded(room_name(r)) for r in my_rooms))
        _emit({"ready": True, "stable": len(stable), "publishers": len(publishers)})

        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        assert (await reader.readline()).strip() == b"go"
        running = True

        async def publish(client: Client) -> None:
            period = 1.0 / args.rate
            start = loop.time() + rng.random() * period
            seq = 0
            assert client.transport is not None
            while running:
                await asyncio.sleep(max(0.0, start + seq * period - loop.time()))
                if client.transport.is_disconnected:
                    return
                client.transport.send(binary, message(
                    client.room, "chat", STAMP.pack(seq, time.monotonic_ns())))
                stats.c["published"] += 1
                seq += 1

        async def churn() -> None:
            await asyncio.sleep(rng.random() * args.stay)  # spread the cycles out
            while running:
                room = room_name(rng.randrange(args.rooms))
                try:
                    async with sem:
                        client = await open_member(room, False)
                except (OSError, TimeoutError, ConnectionError) as exc:
                    stats.c[f"connect_or_join_failed:{type(exc).__name__}"] += 1
                    await asyncio.sleep(0.5)
                    continue
                stats.c["churn_joined"] += 1
                await asyncio.sleep(rng.uniform(0.2, 2 * args.stay))
                assert client.transport is not None
                if client.transport.is_disconnected:
                    continue
                ack = client.expect("leave_ack")
                client.transport.send(binary, message(room, "leave"))
                try:
                    await asyncio.wait_for(ack, REPLY_TIMEOUT)
                    await close_member(client)
                except (TimeoutError, ConnectionError) as exc:
                    stats.c[f"leave_failed:{type(exc).__name__}"] += 1
                    continue
                stats.c["churn_cycles"] += 1

        tasks = [loop.create_task(publish(p)) for p in publishers]
        tasks += [loop.create_task(churn()) for _ in range(churners)]
        while True:
            line = (await reader.readline()).strip()
            if line == b"snap":
                _emit(stats.snapshot())
            elif line in (b"stop", b""):
                break
        running = False
        await asyncio.sleep(1.0)  # in-flight messages and cycles end
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        final = stats.snapshot()
        results = await asyncio.gather(*(close_member(c) for c in [*stable, *publishers]),
                                       return_exceptions=True)
        final["close_failures"] = sum(isinstance(r, Exception) for r in results)
        _emit(final)

    uvloop.run(main())


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# ===================================================================== the harness


def _env() -> dict[str, str]:
    import roomer

    root = str(Path(roomer.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, str(BENCH_DIR),
                                                    env.get("PYTHONPATH", "")) if p)
    return env


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process, stderr: IO[bytes], label: str) -> None:
        self.proc = proc
        self.stderr = stderr
        self.label = label

    @classmethod
    async def spawn(cls, args: list[str], label: str) -> Proc:
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by kill()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=stderr, env=_env(), cwd=BENCH_DIR,
            start_new_session=True, limit=1 << 24)
        return cls(proc, stderr, label)

    def tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-3000:]

    async def line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        try:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise RuntimeError(f"{self.label}: nothing within {timeout:.0f} s\n"
                               f"{self.tail()}") from None
        if not raw:
            await self.proc.wait()
            raise RuntimeError(f"{self.label} exited ({self.proc.returncode})\n{self.tail()}")
        return raw.decode()

    async def ask(self, cmd: str, timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        await self.proc.stdin.drain()
        return json.loads(await self.line(timeout))  # type: ignore[no-any-return]

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        self.stderr.close()


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _proc_status(pid: int) -> tuple[int, int]:
    """(RSS KiB, open fds) of a process."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


async def _metrics(port: int, timeout: float = 10.0) -> dict[str, float]:
    return await read_metrics(port, timeout=timeout)


def _percentile(hist: Counter[int], q: float) -> float | None:
    """The q-quantile in ms (upper edge of its bucket)."""
    total = sum(hist.values())
    if not total:
        return None
    need = q * total
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= need:
            return round(math.exp((bucket + 1) * BUCKET_BASE) / 1000.0, 2)
    return None


def _windows(duration: float, warmup: float) -> float:
    return min(60.0, (duration - warmup) / 3)


def _rss_verdict(samples: list[dict[str, Any]], duration: float, warmup: float,
                 tolerance: float) -> dict[str, Any]:
    window = _windows(duration, warmup)
    first = [s["rss_kib"] for s in samples if warmup <= s["t"] < warmup + window]
    last = [s["rss_kib"] for s in samples if s["t"] >= duration - window]
    if not first or not last:
        return {"ok": False, "why": "not enough samples after the warm-up"}
    ref, end = sum(first) / len(first), sum(last) / len(last)
    return {
        "ok": end <= ref * (1 + tolerance),
        "window_s": round(window, 1),
        "first_window_mean_kib": round(ref),
        "last_window_mean_kib": round(end),
        "growth_pct": round(100 * (end - ref) / ref, 2),
        "tolerance_pct": round(100 * tolerance, 2),
        "rule": f"mean RSS of the last {window:.0f} s <= mean of [{warmup:.0f}, "
                f"{warmup + window:.0f}) s x (1 + {tolerance})",
    }


class Observer:
    """Two clients in a room of their own, in the harness: one relays a stamped message
    every 50 ms to the other. The load processes' latency includes their own backlog
    when the machine is short of CPU; this one isolates the server's."""

    ROOM = "soak-observer"

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.sent = 0
        self.running = True

    async def run(self, port: int) -> None:
        from websockets.asyncio.client import connect

        url = f"ws://127.0.0.1:{port}/ws"
        async with connect(url) as a, connect(url) as b:
            for ws in (a, b):
                await ws.recv()  # root join_ack
                await ws.send(message(self.ROOM, "join"))
                await ws.recv()  # join_ack
            await a.recv()  # new_member (b)
            receiver = asyncio.get_running_loop().create_task(self._receive(b))
            period = 0.05
            start = monotonic()
            while self.running:
                await asyncio.sleep(max(0.0, start + self.sent * period - monotonic()))
                await a.send(message(self.ROOM, "tick", STAMP.pack(self.sent,
                                                                   time.monotonic_ns())))
                self.sent += 1
            deadline = monotonic() + 3.0
            while len(self.latencies) < self.sent and monotonic() < deadline:
                await asyncio.sleep(0.05)
            receiver.cancel()

    async def _receive(self, ws: Any) -> None:
        while True:
            body = await ws.recv()
            if len(body) >= STAMP.size and decode(body)[1] == "tick":
                _, sent = STAMP.unpack_from(body, len(body) - STAMP.size)
                self.latencies.append((time.monotonic_ns() - sent) / 1e6)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def q(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None

        return {"sent": self.sent, "received": len(lat), "p50": q(0.5), "p99": q(0.99),
                "max": round(lat[-1], 2) if lat else None}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    children: list[Proc] = []
    try:
        return await _run(args, children)
    finally:
        for child in reversed(children):
            await child.kill()


async def _run(args: argparse.Namespace, children: list[Proc]) -> dict[str, Any]:
    server = await Proc.spawn(["-m", "roomer", "serve", "soak:setup", "--host", "127.0.0.1",
                               "--port", "0", "--log-level", "warning"], "server")
    children.append(server)
    port = 0
    while not port:
        match = re.search(r"listening on ws://[\d.]+:(\d+)/ws", await server.line(30))
        if match:
            port = int(match.group(1))
    rss0, fds0 = _proc_status(server.proc.pid)
    procs = args.procs or max(2, math.ceil(args.connections / 2500))
    shares = [args.connections // procs + (i < args.connections % procs) for i in range(procs)]
    loads = []
    for i, share in enumerate(shares):
        load = await Proc.spawn([str(Path(__file__).resolve()), "_load", "--port", str(port),
                                 "--index", str(i), "--procs", str(procs), "--count", str(share),
                                 "--rooms", str(args.rooms), "--rate", str(args.rate),
                                 "--churn", str(args.churn), "--stay", str(args.stay)],
                                f"load {i}")
        children.append(load)
        loads.append(load)
    t_ramp = monotonic()
    for load in loads:
        json.loads(await load.line(300))
    ramp = monotonic() - t_ramp
    for load in loads:
        assert load.proc.stdin is not None
        load.proc.stdin.write(b"go\n")
    observer = Observer()
    observing = asyncio.get_running_loop().create_task(observer.run(port))
    _log(args, f"{args.connections} connections up in {ramp:.1f} s over {procs} load "
               f"processes; server RSS {rss0 / 1024:.1f} MiB and {fds0} fds before them")
    _log(args, "     t  conns  RSS MiB    fds  chats/s  churn/s  server CPU%  load CPU%"
               "  client errors  server errors")
    samples: list[dict[str, Any]] = []
    t0 = monotonic()
    load_avg = [os.getloadavg()[0]]
    cpu0 = _cpu_s(server.proc.pid)
    prev = {"t": 0.0, "chats": 0, "cycles": 0, "cpu": cpu0, "load_cpu": 0.0}
    while True:
        t = monotonic() - t0
        if t >= args.duration:
            break
        await asyncio.sleep(min(args.sample, args.duration - t))
        t = monotonic() - t0
        rss, fds = _proc_status(server.proc.pid)
        metrics = await _metrics(port)
        snaps = [await load.ask("snap") for load in loads]
        cpu = _cpu_s(server.proc.pid)
        load_cpu = sum(snap["cpu_s"] for snap in snaps)
        load_avg.append(os.getloadavg()[0])
        counters: Counter[str] = Counter()
        for snap in snaps:
            counters.update(snap["counters"])
            counters.update({f"error:{k}": v for k, v in snap["errors"].items()})
        sample = {"t": round(t, 1), "rss_kib": rss, "fds": fds,
                  "connections": metrics.get("roomer_connections", 0),
                  "rooms": metrics.get("roomer_rooms", 0),
                  "chats": counters["chats"], "churn_cycles": counters["churn_cycles"],
                  "server_cpu_s": round(cpu - cpu0, 2), "load_cpu_s": round(load_cpu, 2),
                  "client_errors": _client_errors(counters),
                  "server_errors": _server_errors(metrics)}
        samples.append(sample)
        dt = t - prev["t"]
        _log(args, f"{t:6.0f} {sample['connections']:6.0f} {rss / 1024:8.1f} {fds:6d} "
                   f"{(sample['chats'] - prev['chats']) / dt:8.0f} "
                   f"{(sample['churn_cycles'] - prev['cycles']) / dt:8.1f} "
                   f"{100 * (cpu - prev['cpu']) / dt:12.0f} "
                   f"{100 * (load_cpu - prev['load_cpu']) / dt:10.0f} "
                   f"{sum(sample['client_errors'].values()):14d} "
                   f"{sum(sample['server_errors'].values()):14.0f}")
        prev = {"t": t, "chats": sample["chats"], "cycles": sample["churn_cycles"], "cpu": cpu,
                "load_cpu": load_cpu}

    observer.running = False
    await asyncio.wait_for(observing, 30)
    finals = [await load.ask("stop", timeout=120) for load in loads]
    for load in loads:
        await asyncio.wait_for(load.proc.wait(), 60)
    counters = Counter()
    hist: Counter[int] = Counter()
    close_failures = 0
    for final in finals:
        counters.update(final["counters"])
        counters.update({f"error:{k}": v for k, v in final["errors"].items()})
        hist.update({int(k): v for k, v in final["hist"].items()})
        close_failures += final["close_failures"]
    # Every client is gone: the server's connections and fds go back to where they were.
    deadline = monotonic() + 30
    while True:
        # Read before asking /metrics: the server holds that request's socket until it
        # sees the client's close, which is not an fd of the soak's clients.
        rss_end, fds_end = _proc_status(server.proc.pid)
        metrics = await _metrics(port)
        if (fds_end <= fds0 and metrics.get("roomer_connections", 1) == 0) or \
                monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    server_cpu = _cpu_s(server.proc.pid) - cpu0
    server_errors = _server_errors(metrics)
    client_errors = _client_errors(counters)
    if close_failures:
        client_errors["close_failures"] = close_failures
    server.proc.send_signal(signal.SIGTERM)
    out = await asyncio.wait_for(server.proc.stdout.read(), 30)  # type: ignore[union-attr]
    await asyncio.wait_for(server.proc.wait(), 30)
    stopped = server.proc.returncode == 0 and b"roomer stopped" in out

    rss = _rss_verdict(samples, args.duration, args.warmup, args.rss_tolerance)
    result = {
        "config": {k: v for k, v in vars(args).items() if k != "json"} | {"procs": procs},
        "ramp_s": round(ramp, 1),
        # The machine's 1-minute load average while it ran (other work shares the cores).
        "load_average": {"start": load_avg[0], "max": max(load_avg), "cores": os.cpu_count()},
        "cpu_s": {"server": round(server_cpu, 1),
                  "load_processes": round(sum(f["cpu_s"] for f in finals), 1)},
        "baseline": {"rss_kib": rss0, "fds": fds0},
        "samples": samples,
        "end": {"rss_kib": rss_end, "fds": fds_end,
                "connections": metrics.get("roomer_connections")},
        "peak_connections": max((s["connections"] for s in samples), default=0),
        "traffic": {"chats_received": counters["chats"], "published": counters["published"],
                    "presence_received": counters["presence"], "frames": counters["frames"],
                    "churn_joined": counters["churn_joined"],
                    "churn_cycles": counters["churn_cycles"],
                    "server_messages_in": metrics.get("roomer_messages_in_total"),
                    "server_deliveries": metrics.get("roomer_deliveries_total"),
                    "server_connections_total": metrics.get("roomer_connections_opened_total")},
        "latency_ms": {"p50": _percentile(hist, 0.50), "p99": _percentile(hist, 0.99),
                       "p999": _percentile(hist, 0.999), "max_bucket": _percentile(hist, 1.0)},
        "observer_latency_ms": observer.summary(),
        "client_errors": client_errors,
        "server_errors": server_errors,
        "server_stopped_cleanly": stopped,
        "verdict": {
            "rss": rss,
            "fds_back_to_baseline": fds_end <= fds0,
            "no_errors": not client_errors and not server_errors,
            "server_stopped_cleanly": stopped,
        },
    }
    verdict = result["verdict"]
    result["ok"] = bool(rss["ok"] and verdict["fds_back_to_baseline"] and verdict["no_errors"]
                        and stopped)
    return result


# Counters of a load process that are not errors.
_TRAFFIC = {"frames", "chats", "presence", "published", "churn_joined", "churn_cycles"}


def _client_errors(counters: Counter[str]) -> dict[str, int]:
    return {k: v for k, v in counters.items() if k not in _TRAFFIC and v}


def _server_errors(metrics: dict[str, float]) -> dict[str, float]:
    keys = [k for k in metrics if k.startswith("roomer_errors_total.")]
    keys += ["roomer_dropped_total", "roomer_slow_disconnects_total"]
    return {k: metrics[k] for k in keys if metrics.get(k)}


def _log(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, flush=True)


def _report(args: argparse.Namespace, res: dict[str, Any]) -> None:
    v = res["verdict"]
    rss = v["rss"]
    lat = res["latency_ms"]
    obs = res["observer_latency_ms"]
    lines = [
        "",
        f"peak connections {res['peak_connections']:.0f}; "
        f"chats received {res['traffic']['chats_received']}, "
        f"churn cycles {res['traffic']['churn_cycles']}",
        f"latency ms (every member, in the load processes): p50 {lat['p50']}, "
        f"p99 {lat['p99']}, p99.9 {lat['p999']}",
        f"latency ms (observer pair in the harness): p50 {obs['p50']}, p99 {obs['p99']}, "
        f"max {obs['max']} ({obs['received']} of {obs['sent']} received)",
        f"CPU seconds: server {res['cpu_s']['server']}, load processes "
        f"{res['cpu_s']['load_processes']}; machine load average "
        f"{res['load_average']['start']:.1f} at the start, up to "
        f"{res['load_average']['max']:.1f} ({res['load_average']['cores']} cores)",
        f"RSS: {rss.get('rule', '')}: {rss.get('first_window_mean_kib')} -> "
        f"{rss.get('last_window_mean_kib')} KiB ({rss.get('growth_pct')}%): "
        f"{'ok' if rss['ok'] else 'GROWTH'}",
        f"fds: {res['baseline']['fds']} before, {res['end']['fds']} after every client left: "
        f"{'ok' if v['fds_back_to_baseline'] else 'LEAK'}",
        f"errors: client {res['client_errors'] or 'none'}, "
        f"server {res['server_errors'] or 'none'}",
        f"server stopped cleanly: {res['server_stopped_cleanly']}",
        f"verdict: {'PASS' if res['ok'] else 'FAIL'}",
    ]
    print("\n".join(lines), flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=300.0,
                        help="seconds after every connection is up (default 300)")
    parser.add_argument("--json", help="write the samples and the verdict here")
    parser.add_argument("--procs", type=int, default=0,
                        help="load processes (default: one per 2,500 connections, at least 2)")
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--rate", type=float, default=5.0,
                        help="chat messages per second per room (default 5)")
    parser.add_argument("--churn", type=float, default=0.02,
                        help="fraction of the connections that cycle (default 0.02)")
    parser.add_argument("--stay", type=float, default=1.5,
                        help="mean seconds a cycling connection stays (default 1.5)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds ignored by the RSS verdict (default: 60, or a fifth "
                             "of a run shorter than 5 minutes)")
    parser.add_argument("--sample", type=float, default=None,
                        help="seconds between samples (default 5, 2 on short runs)")
    parser.add_argument("--rss-tolerance", type=float, default=0.05)
    parser.add_argument("--quiet", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_load"]:
        load = argparse.ArgumentParser()
        for name, kind in (("port", int), ("index", int), ("procs", int), ("count", int),
                           ("rooms", int), ("rate", float), ("churn", float),
                           ("stay", float)):
            load.add_argument(f"--{name}", type=kind, required=True)
        _load_main(load.parse_args(argv[1:]))
        return 0
    args = build_parser().parse_args(argv)
    if args.warmup is None:
        args.warmup = 60.0 if args.duration >= 300 else args.duration / 5
    if args.sample is None:
        args.sample = 5.0 if args.duration >= 120 else 2.0
    res = asyncio.run(run(args))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    _report(args, res)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
