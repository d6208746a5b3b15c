"""End-to-end lobby fan-out benchmark: roomer against peer servers, in one run.

One server process holds one room ("lobby") of N subscribers; one publisher sends chat messages
with a bounded number in flight; the server relays each to the N receivers. Load generator
processes (picows on uvloop) count what arrives. Every figure is taken from the same run on the
same machine, and speeds are reported as ratios roomer/peer: absolute numbers on a shared 2-core
box mean little. ``--cross-node`` splits the lobby over two server processes sharing it
through a broker (:mod:`roomer.benchmark.crossnode`); ``--game`` runs many small rooms at a
tick rate (:mod:`roomer.benchmark.game`); ``--connections N`` holds N connections in one
server process (:mod:`roomer.benchmark.connections`). Peers whose library is not installed
are skipped, with the extra that installs them; no child process outlives the harness.

Entry points: ``roomer bench``, ``python -m roomer.benchmark``, ``python bench/lobby.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from roomer.benchmark import wire
from roomer.benchmark.peers import PEERS, runnable
from roomer.benchmark.procs import (
    Child,
    ChildError,
    cpu_times,
    free_port,
    kill_all,
    kill_everything,
    machine_cpu,
    memory_kib,
    read_metrics,
    wait_listening,
)

if TYPE_CHECKING:
    from roomer.benchmark.crossnode import CrossConfig

__all__ = [
    "ONE_NODE", "Config", "FanoutResult", "MemoryResult", "Nodes", "Session", "main", "run",
    "run_fanout", "run_memory",
]

LOADGEN = "roomer.benchmark.loadgen"
SERVER = "roomer.benchmark.peers"
SATURATED_CPU = 90.0  # % of one core: above it the load generator, not the server, may bound
DEFAULT_PEERS = "roomer,roomer-sync,picows,websockets,aiohttp"
BACKPLANE_FLOW = ("published", "received", "dropped")  # /metrics roomer_backplane_*_total
BACKPLANES = ("redis", "nats")
CROSS_PEERS = "roomer,socketio"  # what --cross-node compares
LATENCY_SAMPLES = 200  # the latency run lasts long enough to collect about this many...
MAX_LATENCY_RUN = 10.0  # ...but no longer than this (seconds)


@dataclass
class Config:
    ns: list[int]
    payloads: list[int]
    peers: list[str]
    duration: float
    inflight: int
    mode: str
    procs: int
    latency: bool
    latency_rate: float
    latency_load: float
    memory: bool
    memory_n: int
    setup_timeout: float
    json_path: str | None
    progress: bool


@dataclass
class FanoutResult:
    server: str
    n: int
    payload: int
    mode: str
    sent: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    elapsed_s: float = 0.0
    deliveries_per_s: float = 0.0
    messages_per_s: float = 0.0
    cpu_user_s: float = 0.0
    cpu_sys_s: float = 0.0
    deliveries_per_cpu_s: float = 0.0
    # Server CPU over the window, % of one core: with neither it nor the load generator near
    # 100%, the window (--inflight) and the round trip bound the rate, not a CPU.
    server_cpu_pct: float = 0.0
    nodes: int = 1  # server processes sharing the lobby (cross-node runs: 2)
    backplane: str = ""  # their broker: "redis", "nats" ("" for one node)
    node_cpu_pct: list[float] = field(default_factory=list)  # each server process's share
    # The broker process over the window (when it runs here; a shared broker serves others
    # too, so this bounds this run's share from above), and what crossed it: each roomer
    # node's published/received/dropped over the window.
    broker_cpu_pct: float | None = None
    backplane_flow: list[dict[str, float]] = field(default_factory=list)
    # Every core of the machine over the window (100 = all busy, whoever used them): near
    # 100, the machine bounds the run, not one process.
    machine_busy_pct: float = 0.0
    peak_rss_mib: float = 0.0
    frame_bytes: int = 0  # one relayed frame on the wire: WebSocket header + roomer body
    # The subscribers' deliveries counted both ways (frames mode counts both; in bytes mode
    # the frame count only holds frames picows had buffered at the switch, usually 0).
    sub_deliveries_by_bytes: int = 0
    sub_deliveries_by_frames: int = 0
    byte_remainder: int = 0  # received bytes that are not a whole number of frames
    stalls: int = 0
    loadgen_cpu_pct: list[float] = field(default_factory=list)
    loadgen_saturated: bool = False
    latency_rate: float = 0.0
    latency_p50_us: float = 0.0
    latency_p99_us: float = 0.0
    latency_samples: int = 0
    latency_capped: int = 0
    latency_overloaded: bool = False  # offered more than this server's measured peak
    error: str = ""


@dataclass
class MemoryResult:
    server: str
    connections: int
    rss_before_mib: float = 0.0
    rss_after_mib: float = 0.0
    kib_per_connection: float = 0.0
    error: str = ""


# --------------------------------------------------------------------------- progress


class Progress:
    """A plain-text progress bar on stderr (redrawn in place on a terminal)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()

    def step(self, label: str) -> None:
        if not self.enabled:
            return
        width = 30
        filled = width * self.done // self.total
        bar = "#" * filled + "." * (width - filled)
        elapsed = time.monotonic() - self.started
        text = f"[{bar}] {self.done}/{self.total} {elapsed:5.0f}s {label}"
        if self.tty:
            sys.stderr.write("\r\x1b[K" + text)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def advance(self) -> None:
        self.done += 1

    def finish(self) -> None:
        if self.enabled:
            self.step("done")
            if self.tty:
                sys.stderr.write("\n")


# --------------------------------------------------------------------------- one session


@dataclass(frozen=True)
class Nodes:
    """Where a run's server lives: one process (``count`` 1, no backplane), or ``count``
    processes sharing the lobby through ``backplane`` (a broker URL) under ``prefix``."""

    count: int = 1
    backplane: str | None = None
    prefix: str = "roomer"


ONE_NODE = Nodes()


class Session:
    """The server processes (one per node) plus their load generators; everything is killed
    on close(). With several nodes the receivers are split evenly over them, the publisher
    is on the first node and the probe on the last (its acks and latencies cross the
    broker)."""

    def __init__(self, server: str, cfg: Config, nodes: Nodes = ONE_NODE,
                 broker_pid: int | None = None) -> None:
        self.server_name = server
        self.cfg = cfg
        self.nodes = nodes
        self.broker_pid = broker_pid  # the broker's process, when it runs on this machine
        self.children: list[Child] = []
        self.ports = [free_port() for _ in range(nodes.count)]
        self.urls = [f"ws://127.0.0.1:{port}/ws" for port in self.ports]
        self.port, self.url = self.ports[0], self.urls[0]
        self.servers: list[Child] = []
        for i, port in enumerate(self.ports):
            args = [server, "--port", str(port)]
            if nodes.backplane is not None:
                args += ["--backplane", nodes.backplane, "--backplane-prefix", nodes.prefix,
                         "--node-id", f"bench{i}"]
            label = server if nodes.count == 1 else f"{server}-node{i}"
            self.servers.append(self._spawn(SERVER, args, label))
        try:
            for child, port in zip(self.servers, self.ports, strict=True):
                wait_listening(child, port)
        except BaseException:
            self.close()  # the caller never gets this session to close
            raise
        self.server = self.servers[0]
        self.subs: list[Child] = []
        self.pub: Child | None = None

    @property
    def socketio(self) -> bool:
        return self.server_name == "socketio"

    @property
    def server_pids(self) -> list[int]:
        return [child.pid for child in self.servers]

    def backplane_counters(self) -> list[dict[str, float]]:
        """Each roomer node's backplane counters (from /metrics); [] without a backplane."""
        if self.nodes.backplane is None or self.socketio:
            return []

        async def read() -> list[dict[str, float]]:
            out = []
            for port in self.ports:
                metrics = await read_metrics(port)
                out.append({key: metrics.get(f"roomer_backplane_{key}_total", 0.0)
                            for key in BACKPLANE_FLOW})
            return out

        return asyncio.run(read())

    def _spawn(self, module: str, args: list[str], label: str) -> Child:
        child = Child(module, args, label)
        self.children.append(child)
        return child

    def close(self) -> None:
        kill_all(self.children)

    def shares(self, receivers: int) -> list[int]:
        """Receivers per node, as even as can be (the first nodes take the remainder)."""
        count = self.nodes.count
        return [receivers // count + (1 if i < receivers % count else 0) for i in range(count)]

    def start_clients(self, role: str, count: int, payload: int, mode: str,
                      per_node: list[int] | None = None) -> None:
        """Spread `count` connections (`per_node[i]` of them on node i) over the load
        generator processes; wait until joined."""
        per_node = per_node if per_node is not None else self.shares(count)
        procs_per_node = max(1, self.cfg.procs // self.nodes.count)
        extra = ["--socketio"] if self.socketio else []
        started = []
        for node, node_count in enumerate(per_node):
            procs = max(1, min(procs_per_node, node_count)) if node_count else 0
            for i in range(procs):
                share = node_count // procs + (1 if i < node_count % procs else 0)
                args = [
                    role,
                    "--url",
                    self.urls[node],
                    "--count",
                    str(share),
                    "--payload",
                    str(payload),
                    "--mode",
                    mode,
                    *extra,
                ]
                label = f"loadgen-{role}-{len(self.subs)}"
                started.append(self._spawn(LOADGEN, args, label))
                self.subs.append(started[-1])
        for child in started:
            child.read_reply(self.cfg.setup_timeout)

    def start_publisher(self, payload: int) -> int:
        extra = ["--socketio"] if self.socketio else []
        if self.nodes.count > 1:
            extra += ["--probe-url", self.urls[-1]]
        self.pub = self._spawn(
            LOADGEN,
            [
                "pub",
                "--url",
                self.url,
                "--payload",
                str(payload),
                "--inflight",
                str(self.cfg.inflight),
                *extra,
            ],
            "loadgen-pub",
        )
        ready = self.pub.read_reply(self.cfg.setup_timeout)
        return int(ready.get("id_len", wire.ID_LEN))

    def wait_formed(self, timeout: float) -> None:
        """Until every roomer node knows every other one alive (from /metrics)."""
        want = self.nodes.count - 1

        async def known() -> list[float]:
            return [(await read_metrics(port)).get("roomer_backplane_nodes", -1.0)
                    for port in self.ports]

        deadline = time.monotonic() + timeout
        while not all(seen == want for seen in asyncio.run(known())):
            if time.monotonic() > deadline:
                raise ChildError(f"{self.nodes.count} nodes did not meet in {timeout:.0f} s")
            time.sleep(0.1)

    def sub_stats(self, cmd: str = "stats") -> list[dict[str, Any]]:
        return [child.request({"cmd": cmd}) for child in self.subs]

    def wait_quiet(self, quiet_for: float, timeout: float, target_bytes: int | None = None) -> None:
        """Wait until the subscribers' received bytes stop changing (or reach the target)."""
        deadline = time.monotonic() + timeout
        last = -1
        last_change = time.monotonic()
        while time.monotonic() < deadline:
            total = sum(s["bytes"] for s in self.sub_stats())
            if target_bytes is not None and total >= target_bytes:
                return
            now = time.monotonic()
            if total != last:
                last, last_change = total, now
            elif now - last_change >= quiet_for:
                return
            time.sleep(0.05)


def _measure(
    session: Session, res: FanoutResult, frame_bytes: int, rate: float, duration: float
) -> dict[str, Any]:
    """One publishing run: reset counters, publish, drain; returns the publisher's reply."""
    cfg = session.cfg
    assert session.pub is not None
    flow0 = session.backplane_counters()
    box0 = machine_cpu()
    before = session.sub_stats("reset")
    cpu0 = [cpu_times(pid) for pid in session.server_pids]
    broker0 = _cpu_or_none(session.broker_pid)
    reply = session.pub.request(
        {"cmd": "run", "duration": duration, "rate": rate, "inflight": cfg.inflight},
        timeout=duration + 30.0,
    )
    receivers = res.n - 1
    target = None if res.mode == "frames" else reply["sent"] * receivers * frame_bytes
    session.wait_quiet(quiet_for=0.3, timeout=10.0, target_bytes=target)
    after = session.sub_stats()
    cpu1 = [cpu_times(pid) for pid in session.server_pids]
    broker1 = _cpu_or_none(session.broker_pid)
    box1 = machine_cpu()
    reply["machine_busy"] = (box1[0] - box0[0]) / max(box1[1] - box0[1], 1e-9)
    per_node = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(cpu0, cpu1, strict=True)]
    reply["node_cpu"] = [user + system for user, system in per_node]
    reply["server_cpu"] = (sum(u for u, _ in per_node), sum(s for _, s in per_node))
    reply["broker_cpu"] = broker1 - broker0 if broker0 is not None and broker1 is not None \
        else None
    reply["flow"] = [{key: after[key] - before[key] for key in after}
                     for before, after in zip(flow0, session.backplane_counters(), strict=True)]
    reply["subs_before"], reply["subs_after"] = before, after
    return reply


def _cpu_or_none(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        user, system = cpu_times(pid)
    except OSError:
        return None
    return user + system


def _fill_throughput(res: FanoutResult, reply: dict[str, Any], frame_bytes: int) -> None:
    after, before = reply["subs_after"], reply["subs_before"]
    res.sub_deliveries_by_frames = sum(s["good"] for s in after)
    if res.server != "socketio":  # socket.io frames have no single known size
        res.sub_deliveries_by_bytes, res.byte_remainder = divmod(
            sum(s["bytes"] for s in after), frame_bytes
        )
    sub_delivered = (
        res.sub_deliveries_by_frames if res.mode == "frames" else res.sub_deliveries_by_bytes
    )
    res.sent = reply["sent"]
    res.delivered = sub_delivered + reply["probe_good"]
    res.expected = res.sent * res.n
    res.lost = res.expected - res.delivered
    last_rx = max([s["last_rx"] for s in after] + [reply["probe_last_rx"]])
    end = last_rx if last_rx > reply["t_first"] else reply["now"]
    res.elapsed_s = max(end - reply["t_first"], 1e-6)
    res.deliveries_per_s = res.delivered / res.elapsed_s
    res.messages_per_s = res.sent / res.elapsed_s
    res.cpu_user_s, res.cpu_sys_s = reply["server_cpu"]
    cpu = res.cpu_user_s + res.cpu_sys_s
    res.deliveries_per_cpu_s = res.delivered / cpu if cpu > 0 else 0.0
    res.server_cpu_pct = round(100.0 * cpu / res.elapsed_s, 1)
    res.node_cpu_pct = [round(100.0 * c / res.elapsed_s, 1) for c in reply["node_cpu"]]
    if reply["broker_cpu"] is not None:
        res.broker_cpu_pct = round(100.0 * reply["broker_cpu"] / res.elapsed_s, 1)
    res.backplane_flow = reply["flow"]
    res.machine_busy_pct = round(100.0 * reply["machine_busy"], 1)
    res.stalls = reply["stalls"]
    # Load generator CPU over the active window: near 100% means it, not the server, bounds.
    pcts = [
        100.0 * (a["cpu"] - b["cpu"]) / res.elapsed_s for a, b in zip(after, before, strict=True)
    ]
    pcts.append(100.0 * reply["cpu"] / res.elapsed_s)
    res.loadgen_cpu_pct = [round(p, 1) for p in pcts]
    res.loadgen_saturated = max(pcts) >= SATURATED_CPU


def latency_rate(cfg: Config, n: int) -> float:
    """Offered messages/s of the latency run: the same for every server, below saturation.

    Half of a server's own peak would not do: a corking server reaches its peak by batching
    ~inflight messages per write, and a smooth arrival at half that rate batches far less.
    """
    return cfg.latency_rate or cfg.latency_load / n


def latency_duration(cfg: Config, rate: float) -> float:
    # Enough samples for a p99 that means something, within a bounded time.
    return max(cfg.duration, min(MAX_LATENCY_RUN, LATENCY_SAMPLES / rate))


def run_fanout(server: str, n: int, payload: int, cfg: Config, nodes: Nodes = ONE_NODE,
               label: str | None = None, broker_pid: int | None = None) -> FanoutResult:
    """Throughput (and optionally latency) of one server at one (N, payload), on one node or
    on several sharing the lobby through a broker (``nodes``), under ``label``."""
    mode = "frames" if server == "socketio" else cfg.mode
    res = FanoutResult(server=label or server, n=n, payload=payload, mode=mode,
                       nodes=nodes.count)
    session: Session | None = None
    try:
        session = Session(server, cfg, nodes, broker_pid)
        if nodes.count > 1 and not session.socketio:
            # Join lists span the nodes only once they know each other.
            session.wait_formed(cfg.setup_timeout)
        # N receivers: N-1 counting subscribers plus the publisher's probe, which joins last
        # (on the last node).
        per_node = session.shares(n)
        per_node[-1] -= 1
        if n > 1:
            session.start_clients("sub", n - 1, payload, mode, per_node)
        id_len = session.start_publisher(payload)
        res.frame_bytes = wire.relayed_frame_size(payload, id_len)
        # Presence traffic of the joins (O(N^2) for roomer) must settle before counting.
        session.wait_quiet(quiet_for=0.5, timeout=cfg.setup_timeout)
        reply = _measure(session, res, res.frame_bytes, 0.0, cfg.duration)
        _fill_throughput(res, reply, res.frame_bytes)
        res.peak_rss_mib = sum(memory_kib(pid).get("VmHWM", 0) for pid in session.server_pids
                               ) / 1024
        if cfg.latency:
            rate = latency_rate(cfg, n)
            lat = _measure(session, res, res.frame_bytes, rate, latency_duration(cfg, rate))
            res.latency_rate = round(rate, 1)
            res.latency_p50_us = lat["lat_p50_us"]
            res.latency_p99_us = lat["lat_p99_us"]
            res.latency_samples = lat["lat_n"]
            res.latency_capped = lat["capped"]
            res.latency_overloaded = rate * n > res.deliveries_per_s
    except (ChildError, OSError, TimeoutError, KeyError, ValueError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    finally:
        if session is not None:
            session.close()
    return res


def run_memory(server: str, cfg: Config) -> MemoryResult:
    """Server RSS growth per idle connection (connected, root join_ack received, no room)."""
    res = MemoryResult(server=server, connections=cfg.memory_n)
    session: Session | None = None
    try:
        session = Session(server, cfg)
        time.sleep(0.5)
        before = memory_kib(session.server.pid)["VmRSS"]
        session.start_clients("idle", cfg.memory_n, 64, "frames")
        time.sleep(1.0)
        after = memory_kib(session.server.pid)["VmRSS"]
        res.rss_before_mib = before / 1024
        res.rss_after_mib = after / 1024
        res.kib_per_connection = (after - before) / cfg.memory_n
    except (ChildError, OSError, TimeoutError, KeyError, ValueError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    finally:
        if session is not None:
            session.close()
    return res


# --------------------------------------------------------------------------- report


def _fmt_rate(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def _error_summary(error: str) -> str:
    """First line (what failed) and last line (the child's exception) of an error."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if len(lines) <= 1:
        return error[:200]
    return f"{lines[0][:80]} ... {lines[-1][:120]}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if a > 0 and b > 0 else "-"


def format_fanout(results: list[FanoutResult]) -> str:
    head = (
        f"{'server':<12} {'N':>5} {'payload':>7} {'deliv/s':>8} {'lost':>8} "
        f"{'cpu u+s':>11} {'srv%':>4} {'deliv/cpu-s':>11} {'peakRSS':>8} {'p50us':>7} {'p99us':>8} "
        f"{'@msg/s':>7} {'loadgen cpu%':>16} {'vs roomer':>16}"
    )
    lines = [head, "-" * len(head)]
    for res in results:
        if res.error:
            lines.append(
                f"{res.server:<12} {res.n:>5} {res.payload:>7}  ERROR {_error_summary(res.error)}"
            )
            continue
        lines.append(
            f"{res.server:<12} {res.n:>5} {res.payload:>7} {_fmt_rate(res.deliveries_per_s):>8} "
            f"{res.lost:>8} {res.cpu_user_s:>5.2f}+{res.cpu_sys_s:<5.2f} "
            f"{res.server_cpu_pct:>4.0f} "
            f"{_fmt_rate(res.deliveries_per_cpu_s):>11} {res.peak_rss_mib:>6.1f}Mi "
            f"{res.latency_p50_us:>7.0f} {res.latency_p99_us:>8.0f} "
            f"{_fmt_rate(res.latency_rate) + ('*' if res.latency_overloaded else ''):>7} "
            f"{'/'.join(f'{p:.0f}' for p in res.loadgen_cpu_pct):>14}"
            f"{'!' if res.loadgen_saturated else ' ':>2} {_vs_roomer(res, results):>16}"
        )
    lines.append(
        "vs roomer: roomer's deliveries/s and deliveries per CPU-second divided by "
        "this row's (same N, payload, run)."
    )
    lines.append(
        "p50/p99: latency at the offered @msg/s (the same deliveries/s for every "
        "server); '*' = above that server's measured peak, so it queued."
    )
    lines.append(
        "'!' = a load generator process was above "
        f"{SATURATED_CPU:.0f}% of a core: the row may be bounded by the load generator."
    )
    return "\n".join(lines)


def _vs_roomer(res: FanoutResult, results: list[FanoutResult]) -> str:
    if res.server == "roomer":
        return ""
    for ref in results:
        if (
            ref.server == "roomer"
            and (ref.n, ref.payload) == (res.n, res.payload)
            and not ref.error
        ):
            return (
                f"{_ratio(ref.deliveries_per_s, res.deliveries_per_s)} "
                f"{_ratio(ref.deliveries_per_cpu_s, res.deliveries_per_cpu_s)}/cpu"
            )
    return ""


def ratios(results: list[FanoutResult]) -> list[dict[str, Any]]:
    out = []
    for ref in results:
        if ref.server != "roomer" or ref.error:
            continue
        for res in results:
            if res is ref or res.error or (res.n, res.payload) != (ref.n, ref.payload):
                continue
            out.append(
                {
                    "n": ref.n,
                    "payload": ref.payload,
                    "peer": res.server,
                    "deliveries_per_s": _safe_div(ref.deliveries_per_s, res.deliveries_per_s),
                    "deliveries_per_cpu_s": _safe_div(
                        ref.deliveries_per_cpu_s, res.deliveries_per_cpu_s
                    ),
                    "latency_p99": _safe_div(ref.latency_p99_us, res.latency_p99_us),
                }
            )
    return out


def _safe_div(a: float, b: float) -> float | None:
    return round(a / b, 3) if a > 0 and b > 0 else None


def format_memory(results: list[MemoryResult]) -> str:
    lines = [
        f"{'server':<12} {'connections':>11} {'RSS before':>11} {'RSS after':>10} {'KiB/conn':>9}"
    ]
    for res in results:
        if res.error:
            lines.append(f"{res.server:<12} ERROR {_error_summary(res.error)}")
            continue
        lines.append(
            f"{res.server:<12} {res.connections:>11} {res.rss_before_mib:>9.1f}Mi "
            f"{res.rss_after_mib:>8.1f}Mi {res.kib_per_connection:>9.2f}"
        )
    return "\n".join(lines)


def _meta(cfg: Config, argv: list[str]) -> dict[str, Any]:
    return _meta_common(asdict(cfg), argv)


def _meta_common(config: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    """What a JSON result records of its run: command, config, versions, machine, time."""
    versions = {}
    for mod in ("picows", "uvloop", "websockets", "aiohttp", "socketio"):
        with contextlib.suppress(ImportError):
            versions[mod] = getattr(__import__(mod), "__version__", "?")
    return {
        "argv": argv,
        "config": config,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": versions,
        "started": datetime.datetime.now(datetime.UTC).isoformat(),
    }


# --------------------------------------------------------------------------- CLI


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roomer bench",
        description="Lobby fan-out, end to end: roomer vs peer servers measured in the same run.",
    )
    parser.add_argument(
        "--n",
        type=_int_list,
        default=None,
        help="receivers in the lobby, comma-separated (default 100,1000,5000)",
    )
    parser.add_argument(
        "--payload",
        type=_int_list,
        default=None,
        help="chat payload sizes in bytes, >= 16 (default 64,1024)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of publishing per measurement (default 3)",
    )
    parser.add_argument(
        "--inflight",
        type=int,
        default=100,
        help="messages the publisher may have unacknowledged (default 100)",
    )
    parser.add_argument(
        "--peers",
        default=None,
        help=f"servers to run (default {DEFAULT_PEERS}); also: picows-rb2k, socketio (slow)",
    )
    parser.add_argument(
        "--mode",
        choices=["bytes", "frames"],
        default="bytes",
        help="subscribers count raw bytes (default) or parse every frame",
    )
    parser.add_argument(
        "--procs", type=int, default=2, help="subscriber load generator processes (default 2)"
    )
    parser.add_argument(
        "--latency",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure p50/p99 at a fixed offered load (default on)",
    )
    parser.add_argument(
        "--latency-load",
        type=float,
        default=50_000,
        help="offered deliveries/s of the latency run, the same for every "
        "server: messages/s = this / N (default 50000)",
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=0.0,
        help="offered messages/s of the latency run (overrides --latency-load)",
    )
    parser.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure RSS per idle connection (default on, off with --quick)",
    )
    parser.add_argument(
        "--memory-n", type=int, default=5000, help="idle connections for --memory (default 5000)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="about a minute: N=100,1000, payload 64, 1.5 s runs, no memory",
    )
    cross = parser.add_argument_group(
        "cross-node", "one lobby split over 2 server processes sharing it through a broker"
    )
    cross.add_argument(
        "--cross-node",
        action="store_true",
        help="run the cross-node mode: single-node roomer, roomer on 2 nodes per backplane, "
        "python-socketio's AsyncRedisManager on 2 nodes (--peers roomer drops it); "
        "default N 1000,5000, payload 64",
    )
    cross.add_argument(
        "--backplanes",
        default=",".join(BACKPLANES),
        help="brokers for the roomer cross-node rows, in order (default redis,nats)",
    )
    cross.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    cross.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    modes = parser.add_argument_group(
        "other modes", "each has its own flags: roomer bench --game --help, "
        "roomer bench --connections N --help")
    modes.add_argument("--game", action="store_true",
                       help="game lobby: many small rooms, inputs at a tick rate")
    modes.add_argument("--connections", type=int, metavar="N",
                       help="N concurrent connections to one server process, in small rooms")
    parser.add_argument("--setup-timeout", type=float, default=120.0)
    parser.add_argument("--json", dest="json_path", default=None, help="write results here")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    quick = args.quick
    cross = getattr(args, "cross_node", False)
    default_peers = CROSS_PEERS if cross else DEFAULT_PEERS
    peers = [p.strip() for p in (args.peers or default_peers).split(",") if p.strip()]
    if cross and not set(peers) <= set(CROSS_PEERS.split(",")):
        raise SystemExit(f"--cross-node runs {CROSS_PEERS} only")
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise SystemExit(f"unknown peer(s): {', '.join(unknown)}; known: {', '.join(PEERS)}")
    payloads = args.payload or ([64] if quick or cross else [64, 1024])
    if min(payloads) < wire.STAMP.size:
        raise SystemExit(f"payloads must be >= {wire.STAMP.size} bytes (sequence + timestamp)")
    return Config(
        ns=args.n or ([100, 1000] if quick else [1000, 5000] if cross else [100, 1000, 5000]),
        payloads=payloads,
        peers=peers,
        duration=args.duration or (1.5 if quick else 3.0),
        inflight=args.inflight,
        mode=args.mode,
        procs=args.procs,
        latency=args.latency,
        latency_rate=args.latency_rate,
        latency_load=args.latency_load,
        memory=(not quick and not cross) if args.memory is None else args.memory,
        memory_n=args.memory_n,
        setup_timeout=args.setup_timeout,
        json_path=args.json_path,
        progress=args.progress,
    )


def run(cfg: Config) -> tuple[list[FanoutResult], list[MemoryResult]]:
    memory_servers = [p for p in cfg.peers if p != "socketio"]
    if cfg.memory and "picows" in memory_servers and "picows-rb2k" not in memory_servers:
        memory_servers.append("picows-rb2k")
    runs = [(n, p, s) for n in cfg.ns for p in cfg.payloads for s in cfg.peers]
    progress = Progress(len(runs) + (len(memory_servers) if cfg.memory else 0), cfg.progress)
    fanout: list[FanoutResult] = []
    for n, payload, server in runs:
        progress.step(f"{server} N={n} payload={payload}")
        fanout.append(run_fanout(server, n, payload, cfg))
        progress.advance()
    memory: list[MemoryResult] = []
    if cfg.memory:
        for server in memory_servers:
            progress.step(f"{server} memory, {cfg.memory_n} idle connections")
            memory.append(run_memory(server, cfg))
            progress.advance()
    progress.finish()
    return fanout, memory


def cross_config(args: argparse.Namespace, cfg: Config) -> CrossConfig:
    from roomer.benchmark.crossnode import CrossConfig

    backplanes = [b.strip() for b in args.backplanes.split(",") if b.strip()]
    unknown = [b for b in backplanes if b not in BACKPLANES]
    if unknown:
        raise SystemExit(f"unknown backplane(s): {', '.join(unknown)}; known: redis, nats")
    if min(cfg.ns) < 4:
        raise SystemExit("--cross-node needs N >= 4 (receivers on both nodes)")
    return CrossConfig(backplanes=backplanes,
                       urls={"redis": args.redis_url, "nats": args.nats_url},
                       socketio="socketio" in cfg.peers)


def _main_cross(args: argparse.Namespace, cfg: Config, argv: list[str]) -> int:
    from roomer.benchmark.crossnode import cross_ratios, format_cross, run_cross

    cross = cross_config(args, cfg)
    results = run_cross(cfg, cross)
    print(format_cross(results))
    if cfg.json_path:
        meta = _meta(cfg, argv)
        meta["cross"] = asdict(cross)
        doc = {"meta": meta, "cross_node": [asdict(r) for r in results],
               "ratios": cross_ratios(results)}
        with open(cfg.json_path, "w") as f:
            json.dump(doc, f, indent=2)
    return 1 if any(r.error for r in results) else 0


class Terminated(SystemExit):
    """SIGTERM reached the harness: unwinds through every ``finally`` (children killed)."""


def _on_sigterm(signum: int, _frame: Any) -> None:
    raise Terminated(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """``roomer bench``: the lobby (default), ``--game``, ``--connections N`` or
    ``--cross-node`` mode. Every child process it starts ends with it, however it ends."""
    argv = list(sys.argv[1:] if argv is None else argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        return _dispatch(argv)
    finally:
        kill_everything()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _mode_flag(argv: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def _dispatch(argv: list[str]) -> int:
    if "--game" in argv:
        from roomer.benchmark.game import main as game_main

        return game_main([a for a in argv if a != "--game"])
    if _mode_flag(argv, "--connections"):
        from roomer.benchmark.connections import main as connections_main

        return connections_main(argv)
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    cfg.peers, skipped = runnable(cfg.peers)
    for note in skipped:
        print(note, file=sys.stderr)
    if args.cross_node:
        return _main_cross(args, cfg, argv)
    fanout, memory = run(cfg)
    print(format_fanout(fanout))
    if memory:
        print()
        print(format_memory(memory))
    if cfg.json_path:
        doc = {
            "meta": _meta(cfg, argv),
            "fanout": [asdict(r) for r in fanout],
            "ratios": ratios(fanout),
            "memory": [asdict(r) for r in memory],
        }
        with open(cfg.json_path, "w") as f:
            json.dump(doc, f, indent=2)
    for note in skipped:
        print(note)
    failed = [r for r in fanout if r.error] + [r for r in memory if r.error]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
