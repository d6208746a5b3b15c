"""End-to-end lobby fan-out benchmark: roomer against peer servers, in one run.

One server process holds one room ("lobby") of N subscribers; one publisher sends chat messages
with a bounded number in flight; the server relays each to the N receivers. Load generator
processes (picows on uvloop) count what arrives. Every figure is taken from the same run on the
same machine, and speeds are reported as ratios roomer/peer: absolute numbers on a shared 2-core
box mean little.

Entry points: ``roomer bench``, ``python -m roomer.benchmark``, ``python bench/lobby.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from roomer.benchmark import wire
from roomer.benchmark.peers import PEERS
from roomer.benchmark.procs import (
    Child,
    ChildError,
    cpu_times,
    free_port,
    kill_all,
    memory_kib,
    wait_listening,
)

__all__ = ["Config", "FanoutResult", "MemoryResult", "main", "run", "run_fanout", "run_memory"]

LOADGEN = "roomer.benchmark.loadgen"
SERVER = "roomer.benchmark.peers"
SATURATED_CPU = 90.0  # % of one core: above it the load generator, not the server, may bound
DEFAULT_PEERS = "roomer,roomer-sync,picows,websockets,aiohttp"
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


class Session:
    """One server process plus its load generators; everything is killed on close()."""

    def __init__(self, server: str, cfg: Config) -> None:
        self.server_name = server
        self.cfg = cfg
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.children: list[Child] = []
        self.server = self._spawn(SERVER, [server, "--port", str(self.port)], server)
        wait_listening(self.server, self.port)
        self.subs: list[Child] = []
        self.pub: Child | None = None

    @property
    def socketio(self) -> bool:
        return self.server_name == "socketio"

    def _spawn(self, module: str, args: list[str], label: str) -> Child:
        child = Child(module, args, label)
        self.children.append(child)
        return child

    def close(self) -> None:
        kill_all(self.children)

    def start_clients(self, role: str, count: int, payload: int, mode: str) -> None:
        """Spread `count` connections over the load generator processes; wait until joined."""
        procs = max(1, min(self.cfg.procs, count))
        extra = ["--socketio"] if self.socketio else []
        for i in range(procs):
            share = count // procs + (1 if i < count % procs else 0)
            args = [
                role,
                "--url",
                self.url,
                "--count",
                str(share),
                "--payload",
                str(payload),
                "--mode",
                mode,
                *extra,
            ]
            self.subs.append(self._spawn(LOADGEN, args, f"loadgen-{role}-{i}"))
        for child in self.subs:
            child.read_reply(self.cfg.setup_timeout)

    def start_publisher(self, payload: int) -> int:
        extra = ["--socketio"] if self.socketio else []
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
    before = session.sub_stats("reset")
    cpu0 = cpu_times(session.server.pid)
    reply = session.pub.request(
        {"cmd": "run", "duration": duration, "rate": rate, "inflight": cfg.inflight},
        timeout=duration + 30.0,
    )
    receivers = res.n - 1
    target = None if res.mode == "frames" else reply["sent"] * receivers * frame_bytes
    session.wait_quiet(quiet_for=0.3, timeout=10.0, target_bytes=target)
    after = session.sub_stats()
    cpu1 = cpu_times(session.server.pid)
    reply["server_cpu"] = (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1])
    reply["subs_before"], reply["subs_after"] = before, after
    return reply


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


def run_fanout(server: str, n: int, payload: int, cfg: Config) -> FanoutResult:
    """Throughput (and optionally latency) of one server at one (N, payload)."""
    mode = "frames" if server == "socketio" else cfg.mode
    res = FanoutResult(server=server, n=n, payload=payload, mode=mode)
    session: Session | None = None
    try:
        session = Session(server, cfg)
        # N receivers: N-1 counting subscribers plus the publisher's probe, which joins last.
        if n > 1:
            session.start_clients("sub", n - 1, payload, mode)
        id_len = session.start_publisher(payload)
        res.frame_bytes = wire.relayed_frame_size(payload, id_len)
        # Presence traffic of the joins (O(N^2) for roomer) must settle before counting.
        session.wait_quiet(quiet_for=0.5, timeout=cfg.setup_timeout)
        reply = _measure(session, res, res.frame_bytes, 0.0, cfg.duration)
        _fill_throughput(res, reply, res.frame_bytes)
        res.peak_rss_mib = memory_kib(session.server.pid).get("VmHWM", 0) / 1024
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
    versions = {}
    for mod in ("picows", "uvloop", "websockets", "aiohttp", "socketio"):
        with contextlib.suppress(ImportError):
            versions[mod] = getattr(__import__(mod), "__version__", "?")
    return {
        "argv": argv,
        "config": asdict(cfg),
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
    parser.add_argument("--setup-timeout", type=float, default=120.0)
    parser.add_argument("--json", dest="json_path", default=None, help="write results here")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    quick = args.quick
    peers = [p.strip() for p in (args.peers or DEFAULT_PEERS).split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise SystemExit(f"unknown peer(s): {', '.join(unknown)}; known: {', '.join(PEERS)}")
    payloads = args.payload or ([64] if quick else [64, 1024])
    if min(payloads) < wire.STAMP.size:
        raise SystemExit(f"payloads must be >= {wire.STAMP.size} bytes (sequence + timestamp)")
    return Config(
        ns=args.n or ([100, 1000] if quick else [100, 1000, 5000]),
        payloads=payloads,
        peers=peers,
        duration=args.duration or (1.5 if quick else 3.0),
        inflight=args.inflight,
        mode=args.mode,
        procs=args.procs,
        latency=args.latency,
        latency_rate=args.latency_rate,
        latency_load=args.latency_load,
        memory=(not quick) if args.memory is None else args.memory,
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = config_from_args(build_parser().parse_args(argv))
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
    failed = [r for r in fanout if r.error] + [r for r in memory if r.error]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
