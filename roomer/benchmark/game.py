"""Game-lobby benchmark (``roomer bench --game``): many small rooms, inputs at a tick rate.

``--clients`` clients in rooms of ``--room-size``; every member sends a ``--payload``-byte
input ``--rate`` times a second and the server relays each to the other members of its room.
The same workload runs against roomer and its peers in one run (raw picows sending per
receiver, websockets, aiohttp and python-socketio with rooms), each server in its own process
and the clients spread over load generator processes (:mod:`roomer.benchmark.gameload`).

Per server: deliveries/s; every delivery accounted (each receiver's expected inputs against
what reached its connection); the server process's CPU (user+sys) per delivery; p50/p99
latency of the offered load (stamped at the send, read at each room's probe member); the load
generators' CPU and lag behind their schedule (a saturated generator shows); the machine's
CPU (box%). ``--sweep`` steps the rate up to the highest one held with p99 under
``--bound-ms`` and every input delivered, then offers up to 4x that rate: a p99 against
offered load table for overload work.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from roomer.benchmark import gameload, peers, wire
from roomer.benchmark.harness import Progress, _error_summary, _fmt_rate, _meta_common
from roomer.benchmark.procs import (
    Child,
    ChildError,
    cpu_stall_us,
    cpu_times,
    free_port,
    kill_all,
    machine_cpu,
    memory_kib,
    open_fds,
    wait_listening,
)

__all__ = ["GameConfig", "GameResult", "GameSession", "Sweep", "format_game", "format_sweep",
           "held", "main", "percentiles", "run_game", "run_sweep"]

GAMELOAD = "roomer.benchmark.gameload"
SERVER = "roomer.benchmark.peers"
DEFAULT_PEERS = "roomer,picows,websockets,aiohttp,socketio"
REFERENCE = "picows"  # ratios are against raw picows measured in the same run
SATURATED_CPU = 90.0  # % of one core: a load generator above it may bound the row
LAGGING_MS = 10.0  # a generator this late (p99) against its schedule bounds the row
OVERLOAD = (1.5, 2.0, 3.0, 4.0)  # the sweep's overload rows, times the highest held rate
REFINE = (1.25, 1.5, 1.75)  # between the last held doubling and the first failed one
MIN_RATE_SHARE = 0.95  # held: deliveries/s at least this share of the offered rate
# Nothing arriving for this long ends the drain: what is owed then is lost. Seconds, not
# less: a starved server on a busy machine can pause that long and then deliver.
QUIET_S = 3.0
BUSY_SHARE = 0.1  # ...unless the server used this share of a core meanwhile (still at work)


@dataclass
class GameConfig:
    clients: int = 2000
    room_sizes: list[int] = field(default_factory=lambda: [8])
    rate: float = 20.0
    payloads: list[int] = field(default_factory=lambda: [48])
    duration: float = 10.0
    warmup: float = 1.0
    write_delay_ms: float | None = None
    poll_interval_ms: float | None = None
    peers: list[str] = field(default_factory=lambda: DEFAULT_PEERS.split(","))
    procs: int = 3
    mode: str = "bytes"
    senders: int = 0  # members of a room that send (0: all)
    sweep: bool = False
    sweep_start: float = 1.25
    sweep_min: float = 0.3125
    sweep_max: float = 640.0
    sweep_duration: float = 5.0
    bound_ms: float = 100.0
    drain_timeout: float = 10.0
    setup_timeout: float = 180.0
    json_path: str | None = None
    progress: bool = True


@dataclass
class GameResult:
    server: str
    clients: int
    room_size: int
    payload: int
    rate_hz: float
    offered_per_s: float = 0.0  # deliveries/s the schedule offers
    sent: int = 0  # inputs sent in the window
    expected: int = 0  # deliveries they owe (each to every other member of its room)
    delivered: int = 0
    lost: int = 0
    short_receivers: int = 0  # receivers that got fewer than they were owed
    extra: int = 0  # deliveries past what was owed (a duplicating server)
    remainder_receivers: int = 0  # byte counts that are not a whole number of frames
    closed: int = 0  # client connections that ended during the session (the server closed)
    drained: bool = False  # every delivery arrived before the drain deadline
    drain: str = ""  # how the drain ended: "drained", "quiet" (the rest lost), "timeout"
    elapsed_s: float = 0.0
    deliveries_per_s: float = 0.0
    cpu_user_s: float = 0.0
    cpu_sys_s: float = 0.0
    cpu_us_per_delivery: float = 0.0
    server_cpu_pct: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    latency_samples: int = 0
    loadgen_cpu_pct: list[float] = field(default_factory=list)
    send_lag_p99_ms: float = 0.0
    loadgen_saturated: bool = False
    machine_busy_pct: float = 0.0
    # Share of the window some runnable task waited for a CPU (Linux PSI; None elsewhere):
    # near 100, the machine is oversubscribed and latencies include run-queue waits.
    cpu_pressure_pct: float | None = None
    rss_mib: float = 0.0
    peak_rss_mib: float = 0.0
    connect_s: float = 0.0
    write_delay_ms: float | None = None  # applied to this server (None: not applied)
    poll_interval_ms: float | None = None  # the same
    held: bool = False
    error: str = ""


def held(res: GameResult, bound_ms: float) -> bool:
    """Held: nothing lost, all drained, p99 under the bound and the offered rate delivered."""
    return (not res.error and res.drained and res.lost == 0 and res.latency_samples > 0
            and res.p99_ms < bound_ms
            and res.deliveries_per_s >= MIN_RATE_SHARE * res.offered_per_s)


def percentiles(hist: dict[str, int], qs: tuple[float, ...]) -> list[float]:
    """Percentiles in ms of a merged latency histogram (bucket midpoints: within 0.5%)."""
    buckets = sorted((int(k), v) for k, v in hist.items())
    total = sum(v for _, v in buckets)
    out = []
    for q in qs:
        if not total:
            out.append(0.0)
            continue
        rank = min(total, max(1, math.ceil(q * total)))
        seen = 0
        for bucket, count in buckets:
            seen += count
            if seen >= rank:
                out.append(gameload.HIST_BASE ** (bucket + 0.5) / 1000.0)
                break
    return out


def _merge(hists: list[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for hist in hists:
        for k, v in hist.items():
            merged[k] = merged.get(k, 0) + v
    return merged


# --------------------------------------------------------------------------- one session


class GameSession:
    """One server process plus the load generators holding its rooms; close() kills all."""

    def __init__(self, server: str, cfg: GameConfig, room_size: int, payload: int,
                 sources: list[str] | None = None,
                 server_args: list[str] | None = None) -> None:
        """``sources``: addresses the load generators bind to, one per process in turn;
        ``server_args``: flags for the server process."""
        self.server_name = server
        self.cfg = cfg
        self.room_size = room_size
        self.payload = payload
        self.rooms = cfg.clients // room_size
        self.clients = self.rooms * room_size
        self.mode = "frames" if server == "socketio" else cfg.mode
        self.children: list[Child] = []
        self.loadgens: list[Child] = []
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.connect_s = 0.0
        args = [server, "--port", str(self.port), *(server_args or [])]
        self.server = self._spawn(SERVER, args, server)
        try:
            wait_listening(self.server, self.port)
            # The server before any client: what connecting them costs is measured from here.
            self.rss_before_kib = memory_kib(self.server.pid)["VmRSS"]
            self.fds_before = open_fds(self.server.pid)
            self.cpu_before = sum(cpu_times(self.server.pid))
            self._start_loadgens(cfg.procs, sources or [])
        except BaseException:
            self.close()  # the caller never gets this session to close
            raise

    def _spawn(self, module: str, args: list[str], label: str) -> Child:
        child = Child(module, args, label)
        self.children.append(child)
        return child

    def _start_loadgens(self, procs: int, sources: list[str]) -> None:
        procs = max(1, min(procs, self.rooms))
        first = 0
        t0 = time.monotonic()
        for i in range(procs):
            rooms = self.rooms // procs + (1 if i < self.rooms % procs else 0)
            args = ["--url", self.url, "--first-room", str(first), "--rooms", str(rooms),
                    "--room-size", str(self.room_size), "--payload", str(self.payload),
                    "--mode", self.mode, "--setup-timeout", str(self.cfg.setup_timeout)]
            if self.cfg.senders:
                args += ["--senders", str(self.cfg.senders)]
            if sources:
                args += ["--source", sources[i % len(sources)]]
            if self.server_name == "socketio":
                args.append("--socketio")
            self.loadgens.append(self._spawn(GAMELOAD, args, f"gameload-{i}"))
            first += rooms
        for child in self.loadgens:
            child.read_reply(self.cfg.setup_timeout + 30.0)
        self.connect_s = time.monotonic() - t0

    def close(self) -> None:
        kill_all(self.children)

    def drop_clients(self, timeout: float = 60.0) -> None:
        """Every client gone at once (the load generators killed: the kernel closes their
        sockets); back once the server holds no more file descriptors than it did before
        the first one came."""
        kill_all(self.loadgens)
        deadline = time.monotonic() + timeout
        while open_fds(self.server.pid) > self.fds_before:
            if time.monotonic() > deadline:
                raise TimeoutError("the server still holds the clients' sockets")
            time.sleep(0.1)

    def stats(self) -> list[dict[str, Any]]:
        for child in self.loadgens:
            child.send({"cmd": "stats"})
        return [child.read_reply(30.0) for child in self.loadgens]

    def settle(self, quiet_for: float = 0.5) -> None:
        """Until nothing arrives for ``quiet_for`` s (roomer's join presence, say)."""
        deadline = time.monotonic() + self.cfg.setup_timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            total = sum(s["bytes"] for s in self.stats())
            now = time.monotonic()
            if total != last:
                last, since = total, now
            elif now - since >= quiet_for:
                return
            time.sleep(0.05)

    def offered_per_s(self, rate: float) -> float:
        senders = min(self.cfg.senders or self.room_size, self.room_size)
        return self.rooms * senders * rate * (self.room_size - 1)

    def measure(self, rate: float, duration: float) -> GameResult:
        """One window at ``rate`` Hz: reset, send, drain, account."""
        cfg = self.cfg
        res = GameResult(server=self.server_name, clients=self.clients,
                         room_size=self.room_size, payload=self.payload, rate_hz=rate,
                         offered_per_s=self.offered_per_s(rate), connect_s=self.connect_s)
        for child in self.loadgens:
            child.send({"cmd": "reset"})
        before = [child.read_reply(30.0) for child in self.loadgens]
        cpu0 = cpu_times(self.server.pid)
        box0 = machine_cpu()
        stall0, wall0 = cpu_stall_us(), time.monotonic()
        start_at = time.monotonic() + 0.2
        for child in self.loadgens:
            child.send({"cmd": "run", "start_at": start_at, "duration": duration,
                        "rate": rate, "warmup": min(cfg.warmup, duration / 2)})
        runs = [child.read_reply(duration + 60.0) for child in self.loadgens]
        res.drain = self._drain(cfg.drain_timeout)
        res.drained = res.drain == "drained"
        cpu1 = cpu_times(self.server.pid)
        box1 = machine_cpu()
        stall1 = cpu_stall_us()
        if stall0 is not None and stall1 is not None:
            res.cpu_pressure_pct = round(
                (stall1 - stall0) / 1e4 / max(time.monotonic() - wall0, 1e-9), 1)
        for child in self.loadgens:
            child.send({"cmd": "result"})
        results = [child.read_reply(60.0) for child in self.loadgens]
        res.sent = sum(r["sent"] for r in runs)
        res.expected = sum(r["expected"] for r in results)
        res.delivered = sum(r["received"] for r in results)
        res.lost = sum(r["lost"] for r in results)
        res.short_receivers = sum(r["short_receivers"] for r in results)
        res.extra = sum(r["extra"] for r in results)
        res.remainder_receivers = sum(r["remainder_receivers"] for r in results)
        res.closed = sum(r["closed"] for r in results)
        last_rx = max(r["last_rx"] for r in results)
        res.elapsed_s = max(duration, last_rx - start_at)
        res.deliveries_per_s = res.delivered / res.elapsed_s
        res.cpu_user_s, res.cpu_sys_s = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
        cpu = res.cpu_user_s + res.cpu_sys_s
        res.cpu_us_per_delivery = 1e6 * cpu / res.delivered if res.delivered else 0.0
        res.server_cpu_pct = round(100.0 * cpu / res.elapsed_s, 1)
        res.machine_busy_pct = round(100.0 * (box1[0] - box0[0]) / max(box1[1] - box0[1], 1e-9),
                                     1)
        hist = _merge([r["hist"] for r in results])
        res.p50_ms, res.p99_ms, res.max_ms = percentiles(hist, (0.50, 0.99, 1.0))
        res.latency_samples = sum(hist.values())
        pcts = [100.0 * (r["cpu"] - b["cpu"]) / res.elapsed_s
                for r, b in zip(results, before, strict=True)]
        res.loadgen_cpu_pct = [round(p, 1) for p in pcts]
        res.send_lag_p99_ms = max(r["lag_p99_ms"] for r in runs)
        res.loadgen_saturated = max(pcts) >= SATURATED_CPU or res.send_lag_p99_ms > LAGGING_MS
        mem = memory_kib(self.server.pid)
        res.rss_mib, res.peak_rss_mib = mem["VmRSS"] / 1024, mem["VmHWM"] / 1024
        res.held = held(res, cfg.bound_ms)
        return res

    def _drain(self, timeout: float) -> str:
        """Until every owed delivery arrived ("drained"), nothing more arrives for QUIET_S
        while the server idles ("quiet": the rest is lost for good), or ``timeout`` s pass
        ("timeout": the server still owes a backlog)."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        cpu_since = sum(cpu_times(self.server.pid))
        while True:
            stats = self.stats()
            received = sum(s["received"] for s in stats)
            if received >= sum(s["expected"] for s in stats):
                return "drained"
            now = time.monotonic()
            if received != last:
                last, since = received, now
                cpu_since = sum(cpu_times(self.server.pid))
            elif now - since >= QUIET_S:
                cpu = sum(cpu_times(self.server.pid))
                if cpu - cpu_since < BUSY_SHARE * (now - since):
                    return "quiet"
                # Still working on a backlog (one long turn, say): not lost yet.
                since, cpu_since = now, cpu
            if now > deadline:
                return "timeout"
            time.sleep(0.05)


# --------------------------------------------------------------------------- runs


def _server_args(server: str, cfg: GameConfig) -> tuple[list[str], dict[str, float | None]]:
    """The server's flags, and the roomer options applied to it in ms, for its result
    (None: not applied: another server, or a roomer without the option)."""
    args: list[str] = []
    applied: dict[str, float | None] = {"write_delay_ms": None, "poll_interval_ms": None}
    for option, flag in (("write_delay", "--write-delay"), ("poll_interval", "--poll-interval")):
        value = getattr(cfg, f"{option}_ms")
        if (value is not None and server.startswith("roomer")
                and peers.roomer_supports(option)):
            args += [flag, str(value)]
            applied[f"{option}_ms"] = value
    return args, applied


def _failed(server: str, cfg: GameConfig, room_size: int, payload: int, rate: float,
            exc: BaseException) -> GameResult:
    return GameResult(server=server, clients=cfg.clients // room_size * room_size,
                      room_size=room_size, payload=payload, rate_hz=rate,
                      error=f"{type(exc).__name__}: {exc}")


def run_game(server: str, cfg: GameConfig, room_size: int, payload: int) -> GameResult:
    """One server at the configured rate: a fixed offered load."""
    args, applied = _server_args(server, cfg)
    session: GameSession | None = None
    try:
        session = GameSession(server, cfg, room_size, payload, server_args=args)
        session.settle()
        res = session.measure(cfg.rate, cfg.duration)
        for option, value in applied.items():
            setattr(res, option, value)
        return res
    except (ChildError, OSError, TimeoutError, KeyError, ValueError) as exc:
        return _failed(server, cfg, room_size, payload, cfg.rate, exc)
    finally:
        if session is not None:
            session.close()


@dataclass
class Sweep:
    """One server's sweep: every step measured, and what it held."""

    server: str
    room_size: int
    payload: int
    held_hz: float | None = None  # the highest rate held (None: not even --sweep-min)
    first_failed_hz: float | None = None  # the lowest rate that failed
    why_failed: str = ""
    steps: list[GameResult] = field(default_factory=list)


def _why(res: GameResult, bound_ms: float) -> str:
    if res.error:
        return "error"
    reasons = []
    if not res.latency_samples:
        reasons.append("no timed input arrived")
    elif res.p99_ms >= bound_ms:
        reasons.append(f"p99 {res.p99_ms:.0f} ms")
    if res.lost:
        reasons.append(f"lost {res.lost}")
    if res.drain == "timeout":
        reasons.append("backlog")
    if res.deliveries_per_s < MIN_RATE_SHARE * res.offered_per_s:
        reasons.append(f"{res.deliveries_per_s / max(res.offered_per_s, 1):.0%} of offered")
    return ", ".join(reasons)


def run_sweep(server: str, cfg: GameConfig, room_size: int, payload: int,
              progress: Progress | None = None) -> Sweep:
    """Double the rate from ``sweep_start`` until a step is not held (or halve it down to
    ``sweep_min`` until one is), refine between the last held and the first failed rate,
    then offer 1.5x to 4x the highest held rate."""
    sweep = Sweep(server, room_size, payload)
    args, applied = _server_args(server, cfg)
    session: GameSession | None = None

    def step(rate: float) -> GameResult:
        nonlocal session
        if progress is not None:
            progress.step(f"sweep {server} rooms of {room_size}: {rate:g} Hz")
        try:
            if session is None:
                session = GameSession(server, cfg, room_size, payload, server_args=args)
                session.settle()
            res = session.measure(rate, cfg.sweep_duration)
            for option, value in applied.items():
                setattr(res, option, value)
        except (ChildError, OSError, TimeoutError, KeyError, ValueError) as exc:
            res = _failed(server, cfg, room_size, payload, rate, exc)
        if res.error or res.drain == "timeout":
            # A backlog still flowing would spill into the next step: start afresh.
            if session is not None:
                session.close()
            session = None
        sweep.steps.append(res)
        return res

    try:
        rate = cfg.sweep_start
        while rate <= cfg.sweep_max:
            res = step(rate)
            if not res.held:
                sweep.first_failed_hz, sweep.why_failed = rate, _why(res, cfg.bound_ms)
                break
            sweep.held_hz = rate
            rate *= 2
        rate = cfg.sweep_start / 2
        while sweep.held_hz is None and rate >= cfg.sweep_min:
            # Not even the first rate held: halve down to --sweep-min for one that does.
            res = step(rate)
            if res.held:
                sweep.held_hz = rate
            else:
                sweep.first_failed_hz, sweep.why_failed = rate, _why(res, cfg.bound_ms)
            rate /= 2
        if sweep.held_hz is not None and sweep.first_failed_hz is not None:
            for factor in REFINE:
                rate = sweep.held_hz * factor
                if rate >= sweep.first_failed_hz:
                    break
                res = step(rate)
                if not res.held:
                    sweep.first_failed_hz, sweep.why_failed = rate, _why(res, cfg.bound_ms)
                    break
                sweep.held_hz = rate
        if sweep.held_hz is not None:
            done = {round(r.rate_hz, 6) for r in sweep.steps}
            for factor in OVERLOAD:
                rate = sweep.held_hz * factor
                if round(rate, 6) not in done:
                    step(rate)
    finally:
        if session is not None:
            session.close()
    sweep.steps.sort(key=lambda r: r.rate_hz)
    return sweep


# --------------------------------------------------------------------------- report


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if a > 0 and b > 0 else "-"


def _psi(res: GameResult) -> str:
    return "-" if res.cpu_pressure_pct is None else f"{res.cpu_pressure_pct:.0f}"


def _lost(res: GameResult) -> str:
    # '+': deliveries were still arriving when the drain timed out (more would have come).
    return f"{res.lost}{'+' if res.drain == 'timeout' else ''}"


def _ms(value: float, res: GameResult, digits: int) -> str:
    # No sample: nothing sent after the warm-up arrived before the drain deadline.
    return f"{value:.{digits}f}" if res.latency_samples else "none"


def _reference(rows: list[GameResult], res: GameResult) -> GameResult | None:
    for ref in rows:
        if (ref.server == REFERENCE and not ref.error
                and (ref.room_size, ref.payload, ref.rate_hz) ==
                (res.room_size, res.payload, res.rate_hz)):
            return ref
    return None


def format_game(rows: list[GameResult]) -> str:
    head = (f"{'server':<11} {'clients':>7} {'room':>4} {'B':>4} {'Hz':>6} {'offered/s':>9} "
            f"{'deliv/s':>8} {'lost':>8} {'us/deliv':>8} {'srv%':>5} {'p50ms':>7} "
            f"{'p99ms':>7} {'loadgen%':>12} {'lag99':>6} {'box%':>4} {'psi%':>4} {'vs picows':>17}")
    lines = [head, "-" * len(head)]
    for res in rows:
        prefix = (f"{res.server:<11} {res.clients:>7} {res.room_size:>4} {res.payload:>4} "
                  f"{res.rate_hz:>6g}")
        if res.error:
            lines.append(f"{prefix}  ERROR {_error_summary(res.error)}")
            continue
        ref = _reference(rows, res)
        vs = ""
        if ref is not None and ref is not res:
            vs = (f"{_ratio(res.cpu_us_per_delivery, ref.cpu_us_per_delivery)}/d "
                  f"{_ratio(res.p99_ms, ref.p99_ms)}/p99")
        lines.append(
            f"{prefix} {_fmt_rate(res.offered_per_s):>9} {_fmt_rate(res.deliveries_per_s):>8} "
            f"{_lost(res):>8} {res.cpu_us_per_delivery:>8.2f} {res.server_cpu_pct:>5.0f} "
            f"{_ms(res.p50_ms, res, 2):>7} {_ms(res.p99_ms, res, 1):>7} "
            f"{'/'.join(f'{p:.0f}' for p in res.loadgen_cpu_pct):>11}"
            f"{'!' if res.loadgen_saturated else ' '} {res.send_lag_p99_ms:>6.1f} "
            f"{res.machine_busy_pct:>4.0f} {_psi(res):>4} {vs:>17}")
    lines += [
        "offered/s: deliveries/s the inputs owe (clients x Hz x (room-1)); deliv/s: "
        "delivered over the window (a server that keeps up delivers what is offered).",
        "lost: owed deliveries that never reached their receiver (each receiver's own "
        "count against the inputs of the others in its room); '+': still arriving when "
        "the drain timed out (--drain-timeout), so a backlog rather than drops.",
        "us/deliv: the server process's user+sys CPU over the window per delivery; srv%: "
        "that CPU in % of one core; box%: every core of the machine, whoever used it; "
        "psi%: share of the window some task waited for a CPU (near 100: oversubscribed).",
        "p50/p99: send to receipt at each room's probe member, in ms (the first second's "
        "inputs are not timed).",
        "loadgen%: each load generator process in % of one core; lag99: p99 ms the "
        f"generator was late on its schedule ('!' = above {SATURATED_CPU:.0f}% or "
        f"{LAGGING_MS:.0f} ms: the generator may bound the row).",
        "vs picows: this row's CPU per delivery and p99 over raw picows's in the same run "
        "(below 1: cheaper / faster than raw picows).",
    ]
    return "\n".join(lines)


def format_sweep(sweeps: list[Sweep], bound_ms: float, lowest: float) -> str:
    lines = [f"Highest rate held (p99 < {bound_ms:.0f} ms, nothing lost, offered rate "
             "delivered):"]
    head = (f"{'server':<11} {'room':>4} {'held Hz':>8} {'deliv/s':>8} {'p99ms':>7} "
            f"{'us/deliv':>8} {'failed at':>9}  why {'':>20} {'vs picows':>9}")
    lines += [head, "-" * len(head)]
    refs = {(s.room_size, s.payload): s for s in sweeps if s.server == REFERENCE}
    for s in sweeps:
        at = next((r for r in s.steps if s.held_hz is not None
                   and math.isclose(r.rate_hz, s.held_hz)), None)
        held_txt = f"{s.held_hz:g}" if s.held_hz is not None else f"<{lowest:g}"
        ref = refs.get((s.room_size, s.payload))
        vs = ""
        if ref is not None and ref is not s and ref.held_hz and s.held_hz:
            vs = _ratio(s.held_hz, ref.held_hz)
        failed = f"{s.first_failed_hz:g}" if s.first_failed_hz is not None else "-"
        lines.append(
            f"{s.server:<11} {s.room_size:>4} {held_txt:>8} "
            f"{_fmt_rate(at.deliveries_per_s) if at else '-':>8} "
            f"{f'{at.p99_ms:.1f}' if at else '-':>7} "
            f"{f'{at.cpu_us_per_delivery:.2f}' if at else '-':>8} {failed:>9}  "
            f"{s.why_failed[:24]:<24} {vs:>9}")
    lines.append("")
    lines.append("p99 against offered load (each step a window of the same clients; x held: "
                 "the offered rate over the highest held):")
    head = (f"{'server':<11} {'room':>4} {'Hz':>7} {'x held':>6} {'offered/s':>9} "
            f"{'deliv/s':>8} {'lost':>8} {'p50ms':>8} {'p99ms':>8} {'maxms':>8} {'srv%':>5} "
            f"{'loadgen%':>12} {'box%':>4} {'psi%':>4}")
    lines += [head, "-" * len(head)]
    for s in sweeps:
        for r in s.steps:
            times = f"{r.rate_hz / s.held_hz:.2f}" if s.held_hz else "-"
            prefix = f"{s.server:<11} {s.room_size:>4} {r.rate_hz:>7g} {times:>6}"
            if r.error:
                lines.append(f"{prefix}  ERROR {_error_summary(r.error)}")
                continue
            lines.append(
                f"{prefix} {_fmt_rate(r.offered_per_s):>9} {_fmt_rate(r.deliveries_per_s):>8} "
                f"{_lost(r):>8} {_ms(r.p50_ms, r, 1):>8} {_ms(r.p99_ms, r, 1):>8} "
                f"{_ms(r.max_ms, r, 0):>8} "
                f"{r.server_cpu_pct:>5.0f} "
                f"{'/'.join(f'{p:.0f}' for p in r.loadgen_cpu_pct):>11}"
                f"{'!' if r.loadgen_saturated else ' '} {r.machine_busy_pct:>4.0f} "
                f"{_psi(r):>4}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="roomer bench --game",
        description="Game lobby: many small rooms, every member sending inputs at a tick rate; "
                    "roomer and its peers in the same run.")
    p.add_argument("--clients", type=int, default=2000, help="clients in all (default 2000)")
    p.add_argument("--room-size", type=_int_list, default=[8],
                   help="members per room, comma-separated for several runs (default 8)")
    p.add_argument("--rate", type=float, default=20.0,
                   help="inputs per second from each client (Hz, default 20)")
    p.add_argument("--payload", type=_int_list, default=[48],
                   help="input payload bytes, >= 16 (default 48)")
    p.add_argument("--duration", type=float, default=10.0,
                   help="seconds of sending per measurement (default 10)")
    p.add_argument("--warmup", type=float, default=1.0,
                   help="inputs of the first seconds are not timed (default 1)")
    p.add_argument("--write-delay", type=float, default=None, metavar="MS",
                   help="roomer's write_delay option in ms, where this roomer has it")
    p.add_argument("--poll-interval", type=float, default=None, metavar="MS",
                   help="roomer's poll_interval option in ms, where this roomer has it")
    p.add_argument("--peers", default=DEFAULT_PEERS,
                   help=f"servers to run (default {DEFAULT_PEERS}; also roomer-sync, "
                        "roomer-limits: roomer keeping its default rate limits)")
    p.add_argument("--procs", type=int, default=3, help="load generator processes (default 3)")
    p.add_argument("--mode", choices=["bytes", "frames"], default="bytes",
                   help="receivers other than each room's probe count bytes (default) or "
                        "parse every frame")
    p.add_argument("--sweep", action="store_true",
                   help="find the highest rate held with p99 under --bound-ms, then offer up "
                        "to 4x it (replaces the fixed-rate run)")
    p.add_argument("--sweep-start", type=float, default=1.25, help="first rate (Hz, 1.25)")
    p.add_argument("--sweep-min", type=float, default=0.3125,
                   help="when --sweep-start fails, halve down to this rate (Hz, 0.3125)")
    p.add_argument("--sweep-max", type=float, default=640.0, help="highest rate tried (Hz)")
    p.add_argument("--sweep-duration", type=float, default=5.0,
                   help="seconds of sending per sweep step (default 5)")
    p.add_argument("--bound-ms", type=float, default=100.0, help="the p99 bound (default 100)")
    p.add_argument("--drain-timeout", type=float, default=10.0,
                   help="seconds after a window to wait for owed deliveries (default 10)")
    p.add_argument("--quick", action="store_true",
                   help="400 clients, 3 s windows: a check that everything runs")
    p.add_argument("--setup-timeout", type=float, default=180.0)
    p.add_argument("--json", dest="json_path", default=None, help="write results here")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def config_from_args(args: argparse.Namespace) -> GameConfig:
    names = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in names if p not in peers.PEERS]
    if unknown:
        raise SystemExit(f"unknown peer(s): {', '.join(unknown)}; known: "
                         f"{', '.join(peers.PEERS)}")
    if min(args.payload) < wire.STAMP.size:
        raise SystemExit(f"--payload must be >= {wire.STAMP.size} (sequence + timestamp)")
    if min(args.room_size) < 2:
        raise SystemExit("--room-size must be >= 2 (someone to relay to)")
    if args.rate <= 0 or args.duration <= 0:
        raise SystemExit("--rate and --duration must be > 0")
    if args.clients < max(args.room_size):
        raise SystemExit("--clients must hold at least one room")
    return GameConfig(
        clients=400 if args.quick else args.clients,
        room_sizes=args.room_size,
        rate=args.rate,
        payloads=args.payload,
        duration=3.0 if args.quick else args.duration,
        warmup=args.warmup,
        write_delay_ms=args.write_delay,
        poll_interval_ms=args.poll_interval,
        peers=names,
        procs=args.procs,
        mode=args.mode,
        sweep=args.sweep,
        sweep_start=args.sweep_start,
        sweep_min=args.sweep_min,
        sweep_max=args.sweep_max,
        sweep_duration=3.0 if args.quick else args.sweep_duration,
        bound_ms=args.bound_ms,
        drain_timeout=args.drain_timeout,
        setup_timeout=args.setup_timeout,
        json_path=args.json_path,
        progress=args.progress,
    )


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    runnable, notes = peers.runnable(cfg.peers)
    for option in ("write_delay", "poll_interval"):
        value = getattr(cfg, f"{option}_ms")
        if value is None:
            continue
        if peers.roomer_supports(option):
            notes.append(f"roomer ran with {option} = {value:g} ms")
        else:
            notes.append(f"--{option.replace('_', '-')} {value:g}: this roomer has no "
                         f"{option} option; roomer ran without it")
    for note in notes:
        print(note, file=sys.stderr)
    combos = [(size, payload) for size in cfg.room_sizes for payload in cfg.payloads]
    rows: list[GameResult] = []
    sweeps: list[Sweep] = []
    progress = Progress(len(combos) * len(runnable), cfg.progress)
    for size, payload in combos:
        for server in runnable:
            if cfg.sweep:
                sweeps.append(run_sweep(server, cfg, size, payload, progress))
            else:
                progress.step(f"{server} rooms of {size}, {payload} B at {cfg.rate:g} Hz")
                rows.append(run_game(server, cfg, size, payload))
            progress.advance()
    progress.finish()
    if cfg.sweep:
        print(format_sweep(sweeps, cfg.bound_ms, cfg.sweep_min))
    else:
        print(format_game(rows))
    for note in notes:
        print(note)
    if cfg.json_path:
        doc: dict[str, Any] = {"meta": _meta_common(asdict(cfg), ["--game", *argv]),
                               "notes": notes}
        if cfg.sweep:
            doc["sweeps"] = [asdict(s) for s in sweeps]
        else:
            doc["game"] = [asdict(r) for r in rows]
        with open(cfg.json_path, "w") as f:
            json.dump(doc, f, indent=2)
    errors = [r for r in rows if r.error] + [r for s in sweeps for r in s.steps if r.error]
    return 1 if errors else 0
