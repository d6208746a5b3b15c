"""Many concurrent connections in one server process (``roomer bench --connections N``).

N clients connect to one server process, each joining a room (of ``--room-size``); one member
of each room sends a stamped message every ``--interval`` seconds and every member times it.
Reported: the time to connect them all, the server's RSS (before, after, per connection) and
CPU (while connecting, idle, and under the messages), p50/p99 latency and the accounting of
every delivery, the load generators' CPU and the machine's. ``--servers`` (roomer, then raw
picows by default) run one after the other, and each is given as a ratio to raw picows.

What bites first at this scale is the operating system, so the limits are checked before
anything starts and printed with the run:

- open files: the server process needs one descriptor per connection. Every process raises
  its soft limit to the hard one; a hard limit below N needs root (``ulimit -Hn``,
  ``LimitNOFILE=`` of a systemd unit, ``/etc/security/limits.conf``, ``prlimit``), capped
  by ``fs.nr_open``. The load generators are spread over enough processes to fit theirs.
- ephemeral ports: one source address gives ``net.ipv4.ip_local_port_range`` ports per
  server port (about 28,000 by default), so the generators bind their sockets to 127.0.0.2,
  127.0.0.3, ... (all of 127/8 is loopback on Linux), one address per process.
- ``net.core.somaxconn`` caps the server's accept queue (connect storms), and
  ``nf_conntrack_max`` (when connection tracking is loaded) caps the connections tracked.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field

from roomer.benchmark import peers
from roomer.benchmark.game import GameConfig, GameSession
from roomer.benchmark.harness import _error_summary, _fmt_rate, _meta_common
from roomer.benchmark.procs import ChildError, cpu_times, memory_kib, raise_nofile

__all__ = ["ConnectionsConfig", "ConnectionsResult", "Limits", "check_limits",
           "format_ratios", "main", "run_connections"]

REFERENCE = "picows"  # ratios are against raw picows in the same run
FD_MARGIN = 200  # descriptors a process needs besides its connections
PORT_MARGIN = 1000  # ephemeral ports left for everything else on the machine


@dataclass
class ConnectionsConfig:
    connections: int
    room_size: int = 8
    interval: float = 5.0
    duration: float = 30.0
    idle: float = 5.0
    payload: int = 48
    servers: list[str] = field(default_factory=lambda: ["roomer", "picows"])
    procs: int = 0  # 0: as few as the fd limit and the ports allow
    first_source: int = 2  # load generators bind to 127.0.0.<first_source + i>
    write_delay_ms: float | None = None
    setup_timeout: float = 900.0
    json_path: str | None = None


@dataclass
class Limits:
    nofile_soft: int
    nofile_hard: int
    nr_open: int | None
    file_max: int | None
    somaxconn: int | None
    port_range: tuple[int, int] | None
    conntrack_max: int | None
    conntrack_count: int | None
    procs: int = 0  # load generator processes the run needs
    per_proc: int = 0  # connections per load generator process
    problems: list[str] = field(default_factory=list)  # each stops the run
    notes: list[str] = field(default_factory=list)

    @property
    def ports(self) -> int:
        lo, hi = self.port_range or (32768, 60999)
        return hi - lo + 1


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _port_range() -> tuple[int, int] | None:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return None
    return lo, hi


def check_limits(cfg: ConnectionsConfig) -> Limits:
    """Raise this process's fd limits as far as allowed (the children inherit them) and
    say what stops a run of ``cfg.connections``, with what would fix it."""
    n = cfg.connections
    soft, hard = raise_nofile(n + FD_MARGIN)
    limits = Limits(
        nofile_soft=soft, nofile_hard=hard,
        nr_open=_read_int("/proc/sys/fs/nr_open"),
        file_max=_read_int("/proc/sys/fs/file-max"),
        somaxconn=_read_int("/proc/sys/net/core/somaxconn"),
        port_range=_port_range(),
        conntrack_max=_read_int("/proc/sys/net/netfilter/nf_conntrack_max"),
        conntrack_count=_read_int("/proc/sys/net/netfilter/nf_conntrack_count"),
    )
    need = n + FD_MARGIN
    if hard < need:
        cap = f" (fs.nr_open caps it at {limits.nr_open})" if limits.nr_open else ""
        limits.problems.append(
            f"open files: the server process needs {need} descriptors, the hard limit is "
            f"{hard} and this process may not raise it (that takes root with "
            f"CAP_SYS_RESOURCE). Raise it where the bench starts: `ulimit -Hn {need}` and "
            f"`ulimit -n {need}` in a root shell, LimitNOFILE={need} in a systemd unit, "
            f"'* hard nofile {need}' in /etc/security/limits.conf, or `prlimit --pid $$ "
            f"--nofile={need}:{need}`{cap}; or run fewer: --connections "
            f"{max(hard - FD_MARGIN, 0)} fits.")
    if limits.nr_open is not None and limits.nr_open < need:
        limits.problems.append(f"fs.nr_open is {limits.nr_open}: `sysctl -w "
                               f"fs.nr_open={need}` (as root) before raising the fd limit")
    if limits.file_max is not None and limits.file_max < 2 * need:
        limits.problems.append(f"fs.file-max is {limits.file_max}, below the {2 * need} "
                               f"descriptors both ends need: `sysctl -w fs.file-max={4 * need}`")
    per_proc = min(max(hard - FD_MARGIN, 1), max(limits.ports - PORT_MARGIN, 1))
    limits.procs = cfg.procs or max(1, math.ceil(n / per_proc))
    limits.per_proc = math.ceil(n / limits.procs)
    if limits.per_proc > per_proc:
        limits.problems.append(
            f"{limits.per_proc} connections per load generator process is more than its fd "
            f"limit or one source address's {limits.ports} ports allow ({per_proc}): "
            f"--procs {math.ceil(n / per_proc)} or more")
    if cfg.first_source + limits.procs - 1 > 254:
        limits.problems.append("more load generator processes than 127.0.0.x addresses")
    if limits.conntrack_max is not None and limits.conntrack_max < n + (
            limits.conntrack_count or 0):
        limits.problems.append(
            f"nf_conntrack_max is {limits.conntrack_max} with {limits.conntrack_count} in "
            f"use: `sysctl -w net.netfilter.nf_conntrack_max={2 * n}`, or exempt loopback "
            "(`iptables -t raw -A PREROUTING -i lo -j NOTRACK` and the same for OUTPUT)")
    if limits.somaxconn is not None and limits.somaxconn < 1024:
        limits.notes.append(f"net.core.somaxconn is {limits.somaxconn}: the accept queue "
                            "may overflow in the connect storm (connections then retry "
                            "after a second): `sysctl -w net.core.somaxconn=4096`")
    return limits


def format_limits(limits: Limits, cfg: ConnectionsConfig) -> str:
    lo_hi = f"{limits.port_range[0]}-{limits.port_range[1]}" if limits.port_range else "?"
    first = cfg.first_source
    last = first + limits.procs - 1
    lines = [
        f"limits: open files soft {limits.nofile_soft} / hard {limits.nofile_hard} (need "
        f"{cfg.connections + FD_MARGIN} in the server), fs.nr_open {limits.nr_open}, "
        f"fs.file-max {limits.file_max}, somaxconn {limits.somaxconn}, ephemeral ports "
        f"{lo_hi} ({limits.ports} per source address), nf_conntrack_max "
        f"{limits.conntrack_max if limits.conntrack_max is not None else '- (not loaded)'}",
        f"load: {limits.procs} generator process(es) of <= {limits.per_proc} connections, "
        f"bound to 127.0.0.{first}" + (f"..127.0.0.{last}" if last > first else ""),
    ]
    lines += [f"note: {note}" for note in limits.notes]
    lines += [f"STOPPED: {problem}" for problem in limits.problems]
    return "\n".join(lines)


@dataclass
class ConnectionsResult:
    server: str
    connections: int
    room_size: int
    interval_s: float
    idle_s: float = 0.0
    procs: int = 0
    connect_s: float = 0.0
    connects_per_s: float = 0.0
    connect_cpu_pct: float = 0.0  # the server while they connect, % of one core
    rss_before_mib: float = 0.0
    rss_mib: float = 0.0  # once all are connected and joined
    kib_per_connection: float = 0.0
    # Once idle for ``idle`` seconds (what the joins' bursts left may be given back by then).
    kib_per_connection_idle: float = 0.0
    # ``idle`` seconds after every client left at once: what they leave behind.
    kib_left_per_connection: float = 0.0
    peak_rss_mib: float = 0.0
    idle_cpu_pct: float = 0.0  # the server, all connected, no messages
    sent: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    deliveries_per_s: float = 0.0
    server_cpu_pct: float = 0.0  # under the messages
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    latency_samples: int = 0
    loadgen_cpu_pct: list[float] = field(default_factory=list)
    machine_busy_pct: float = 0.0
    cpu_pressure_pct: float | None = None  # see game.GameResult
    error: str = ""


def run_connections(cfg: ConnectionsConfig, limits: Limits, server: str) -> ConnectionsResult:
    """One server process holding ``cfg.connections`` clients (see the module docstring)."""
    res = ConnectionsResult(server=server, connections=cfg.connections,
                            room_size=cfg.room_size, interval_s=cfg.interval,
                            idle_s=cfg.idle, procs=limits.procs)
    game_cfg = GameConfig(clients=cfg.connections, room_sizes=[cfg.room_size],
                          rate=1.0 / cfg.interval, payloads=[cfg.payload],
                          duration=cfg.duration, warmup=0.0, peers=[server],
                          procs=limits.procs, mode="frames", senders=1,
                          drain_timeout=max(10.0, 2 * cfg.interval),
                          setup_timeout=cfg.setup_timeout)
    sources = [f"127.0.0.{cfg.first_source + i}" for i in range(limits.procs)]
    server_args: list[str] = []
    if (cfg.write_delay_ms is not None and server.startswith("roomer")
            and peers.roomer_supports("write_delay")):
        server_args = ["--write-delay", str(cfg.write_delay_ms)]
    session: GameSession | None = None
    try:
        session = GameSession(server, game_cfg, cfg.room_size, cfg.payload,
                              sources=sources, server_args=server_args)
        pid = session.server.pid
        res.connections = session.clients
        res.connect_s = session.connect_s
        res.connects_per_s = session.clients / max(session.connect_s, 1e-9)
        res.rss_before_mib = session.rss_before_kib / 1024
        connect_cpu = sum(cpu_times(pid)) - session.cpu_before
        res.connect_cpu_pct = round(100.0 * connect_cpu / max(session.connect_s, 1e-9), 1)
        session.settle(quiet_for=1.0)
        rss = memory_kib(pid)["VmRSS"]
        res.rss_mib = rss / 1024
        res.kib_per_connection = (rss - session.rss_before_kib) / max(session.clients, 1)
        cpu0 = sum(cpu_times(pid))
        time.sleep(cfg.idle)
        res.idle_cpu_pct = round(100.0 * (sum(cpu_times(pid)) - cpu0) / cfg.idle, 1)
        res.kib_per_connection_idle = ((memory_kib(pid)["VmRSS"] - session.rss_before_kib)
                                       / max(session.clients, 1))
        window = session.measure(1.0 / cfg.interval, cfg.duration)
        for name in ("sent", "expected", "delivered", "lost", "deliveries_per_s",
                     "server_cpu_pct", "p50_ms", "p99_ms", "max_ms", "latency_samples",
                     "loadgen_cpu_pct", "machine_busy_pct", "cpu_pressure_pct",
                     "peak_rss_mib"):
            setattr(res, name, getattr(window, name))
        session.drop_clients()
        time.sleep(cfg.idle)
        res.kib_left_per_connection = ((memory_kib(pid)["VmRSS"] - session.rss_before_kib)
                                       / max(session.clients, 1))
    except (ChildError, OSError, TimeoutError, KeyError, ValueError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    finally:
        if session is not None:
            session.close()
    return res


def format_result(res: ConnectionsResult) -> str:
    if res.error:
        return f"{res.server}: ERROR {_error_summary(res.error)}"
    return "\n".join([
        f"{res.server}: {res.connections} connections in rooms of {res.room_size}, one "
        f"message per room every {res.interval_s:g} s, {res.procs} load generator processes",
        f"  connect: all connected and joined in {res.connect_s:.1f} s "
        f"({res.connects_per_s:,.0f}/s), server CPU {res.connect_cpu_pct:.0f}% meanwhile",
        f"  memory: RSS {res.rss_before_mib:.1f} MiB before, {res.rss_mib:.1f} MiB connected "
        f"({res.kib_per_connection:.2f} KiB per connection, {res.kib_per_connection_idle:.2f}"
        f" after {res.idle_s:g} s idle), peak {res.peak_rss_mib:.1f} MiB; "
        f"{res.kib_left_per_connection:.2f} KiB per connection left {res.idle_s:g} s after "
        "all were gone",
        f"  CPU: server {res.idle_cpu_pct:.1f}% idle, {res.server_cpu_pct:.1f}% under the "
        f"messages; load generators "
        f"{'/'.join(f'{p:.0f}' for p in res.loadgen_cpu_pct)}%; box {res.machine_busy_pct:.0f}%"
        + ("" if res.cpu_pressure_pct is None
           else f", a task waiting for a CPU {res.cpu_pressure_pct:.0f}% of the time"),
        f"  messages: {res.sent} sent, {res.delivered} of {res.expected} deliveries "
        f"({_fmt_rate(res.deliveries_per_s)}/s), lost {res.lost}",
        f"  latency: p50 {res.p50_ms:.2f} ms, p99 {res.p99_ms:.2f} ms, max {res.max_ms:.1f} ms "
        f"({res.latency_samples} samples, every receiver)",
    ])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="roomer bench --connections N",
        description="N concurrent connections to one server process, in small rooms, with a "
                    "message to each room every few seconds.")
    p.add_argument("--connections", type=int, required=True, metavar="N")
    p.add_argument("--room-size", type=int, default=8, help="members per room (default 8)")
    p.add_argument("--interval", type=float, default=5.0,
                   help="seconds between two messages to a room (default 5)")
    p.add_argument("--duration", type=float, default=30.0,
                   help="seconds of messages (default 30)")
    p.add_argument("--idle", type=float, default=5.0,
                   help="seconds idle once all are connected (the server's CPU meanwhile, and "
                        "its memory at the end), and once all are gone (its memory then); "
                        "roomer returns freed memory at each ping round, every 10 s by default "
                        "(default 5)")
    p.add_argument("--payload", type=int, default=48, help="message payload bytes (48)")
    p.add_argument("--servers", default="roomer,picows",
                   help="servers measured one after the other, comma-separated (default "
                        "roomer,picows: raw picows is the reference for the ratios)")
    p.add_argument("--procs", type=int, default=0,
                   help="load generator processes (default: as few as the limits allow)")
    p.add_argument("--first-source", type=int, default=2,
                   help="generator i binds its sockets to 127.0.0.<this + i> (default 2)")
    p.add_argument("--write-delay", type=float, default=None, metavar="MS",
                   help="roomer's write_delay option in ms, where this roomer has it")
    p.add_argument("--setup-timeout", type=float, default=900.0)
    p.add_argument("--json", dest="json_path", default=None, help="write results here")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.connections < args.room_size or args.room_size < 2:
        raise SystemExit("--connections must hold at least one room of >= 2")
    if args.interval <= 0 or args.duration <= 0:
        raise SystemExit("--interval and --duration must be > 0")
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    unknown = [n for n in names if n not in peers.PEERS]
    if unknown or not names:
        raise SystemExit(f"unknown server(s): {', '.join(unknown)}; known: "
                         f"{', '.join(peers.PEERS)}")
    servers, notes = peers.runnable(names)
    cfg = ConnectionsConfig(
        connections=args.connections, room_size=args.room_size, interval=args.interval,
        duration=args.duration, idle=args.idle, payload=args.payload, servers=servers,
        procs=args.procs, first_source=args.first_source, write_delay_ms=args.write_delay,
        setup_timeout=args.setup_timeout, json_path=args.json_path)
    limits = check_limits(cfg)
    print(format_limits(limits, cfg), flush=True)
    for note in notes:
        print(note)
    if cfg.write_delay_ms is not None and not peers.roomer_supports("write_delay"):
        print(f"--write-delay {cfg.write_delay_ms:g}: this roomer has no write_delay option; "
              "it ran without it")
    results: list[ConnectionsResult] = []
    if not limits.problems:
        for server in servers:
            results.append(run_connections(cfg, limits, server))
            print(format_result(results[-1]), flush=True)
        print(format_ratios(results))
    if cfg.json_path:
        doc = {"meta": _meta_common(asdict(cfg), argv), "limits": asdict(limits),
               "results": [asdict(r) for r in results], "notes": notes}
        with open(cfg.json_path, "w") as f:
            json.dump(doc, f, indent=2)
    if limits.problems:
        return 2
    return 1 if not results or any(r.error for r in results) else 0


def format_ratios(results: list[ConnectionsResult]) -> str:
    """Each server against raw picows in the same run (lower: cheaper than raw picows)."""
    ref = next((r for r in results if r.server == REFERENCE and not r.error), None)
    lines = []
    for res in results:
        if ref is None or res is ref or res.error:
            continue
        lines.append(
            f"{res.server} / {REFERENCE}: connect time {_ratio(res.connect_s, ref.connect_s)}, "
            f"KiB per connection {_ratio(res.kib_per_connection, ref.kib_per_connection)}, "
            f"idle CPU {_ratio(res.idle_cpu_pct, ref.idle_cpu_pct)}, CPU under the "
            f"messages {_ratio(res.server_cpu_pct, ref.server_cpu_pct)}, p99 "
            f"{_ratio(res.p99_ms, ref.p99_ms)}")
    return "\n".join(lines)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if a > 0 and b > 0 else "-"
