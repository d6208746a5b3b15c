"""Cross-node lobby fan-out (``roomer bench --cross-node``): one lobby of N receivers split
evenly over two server processes (nodes) sharing it through a broker, measured in the same
run as single-node roomer and as python-socketio's ``AsyncRedisManager`` on two processes.

For each (N, payload): roomer on one node; roomer on two nodes over each backplane (Redis,
then NATS); python-socketio on two nodes over the same Redis. The publisher is on node 1 and
the probe (flow control and latency) on node 2, so every acknowledged message has crossed the
broker. Reported: deliveries/s, the ratio to single-node roomer and to python-socketio's
Redis manager, p50/p99 at a fixed low rate beside single-node's, each server process's CPU,
the broker's CPU when it runs on this machine, and what crossed the broker (from /metrics).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from roomer.benchmark.harness import (
    Config,
    FanoutResult,
    Nodes,
    Progress,
    _error_summary,
    _fmt_rate,
    _ratio,
    _safe_div,
    run_fanout,
)

__all__ = ["CrossConfig", "broker_pid", "cross_ratios", "format_cross", "run_cross"]


@dataclass
class CrossConfig:
    backplanes: list[str]
    urls: dict[str, str]  # backplane -> broker URL
    socketio: bool  # also python-socketio with AsyncRedisManager on two nodes


def broker_pid(url: str) -> int | None:
    """The pid of the process listening on the broker URL's port, if it runs here (and
    this process may see it)."""
    try:
        import psutil
    except ImportError:
        return None
    port_text = url.split(",")[0].partition("://")[2].split("/")[0].rpartition(":")[2]
    if not port_text.isdigit():
        return None
    port = int(port_text)
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return int(conn.pid) if conn.pid else None
    except (psutil.Error, OSError):
        return None
    return None


def run_cross(cfg: Config, cross: CrossConfig) -> list[FanoutResult]:
    """Every (N, payload): single-node roomer, roomer on 2 nodes per backplane, and
    python-socketio on 2 nodes over Redis."""
    plan: list[tuple[int, int, str, str]] = []
    for n in cfg.ns:
        for payload in cfg.payloads:
            plan.append((n, payload, "roomer", ""))
            for backplane in cross.backplanes:
                plan.append((n, payload, "roomer", backplane))
            if cross.socketio:
                plan.append((n, payload, "socketio", "redis"))
    pids = {name: broker_pid(url) for name, url in cross.urls.items()}
    progress = Progress(len(plan), cfg.progress)
    results: list[FanoutResult] = []
    for n, payload, server, backplane in plan:
        label = server if not backplane else f"{server}x2-{backplane}"
        progress.step(f"{label} N={n} payload={payload}")
        if not backplane:
            results.append(run_fanout(server, n, payload, cfg))
        else:
            nodes = Nodes(2, cross.urls[backplane], f"bench{uuid.uuid4().hex[:10]}")
            res = run_fanout(server, n, payload, cfg, nodes, label, pids.get(backplane))
            res.backplane = backplane
            results.append(res)
        progress.advance()
    progress.finish()
    return results


def _same(rows: list[FanoutResult], res: FanoutResult, server: str) -> FanoutResult | None:
    for ref in rows:
        if ref.server == server and (ref.n, ref.payload) == (res.n, res.payload) and not ref.error:
            return ref
    return None


def cross_ratios(rows: list[FanoutResult]) -> list[dict[str, Any]]:
    """Each cross-node roomer row against single-node roomer and against python-socketio's
    Redis manager, same (N, payload), same run."""
    out = []
    for res in rows:
        if res.error or res.nodes < 2 or not res.server.startswith("roomer"):
            continue
        single = _same(rows, res, "roomer")
        sio = _same(rows, res, "socketiox2-redis")
        out.append({
            "n": res.n,
            "payload": res.payload,
            "server": res.server,
            "vs_single_node": _safe_div(res.deliveries_per_s, single.deliveries_per_s)
            if single else None,
            "vs_socketio_redis": _safe_div(res.deliveries_per_s, sio.deliveries_per_s)
            if sio else None,
            "latency_p50_us": res.latency_p50_us,
            "latency_p99_us": res.latency_p99_us,
            "single_node_p50_us": single.latency_p50_us if single else None,
            "single_node_p99_us": single.latency_p99_us if single else None,
        })
    return out


def format_cross(rows: list[FanoutResult]) -> str:
    head = (
        f"{'server':<18} {'N':>5} {'payload':>7} {'deliv/s':>8} {'lost':>7} "
        f"{'vs 1 node':>9} {'vs sio':>8} {'p50us':>7} {'p99us':>8} {'@msg/s':>7} "
        f"{'node cpu%':>11} {'broker%':>7} {'box%':>4} {'loadgen cpu%':>16}"
    )
    lines = [head, "-" * len(head)]
    for res in rows:
        if res.error:
            lines.append(f"{res.server:<18} {res.n:>5} {res.payload:>7}  ERROR "
                         f"{_error_summary(res.error)}")
            continue
        single = _same(rows, res, "roomer")
        sio = _same(rows, res, "socketiox2-redis")
        vs_single = _ratio(res.deliveries_per_s, single.deliveries_per_s) \
            if single and res is not single else ""
        vs_sio = _ratio(res.deliveries_per_s, sio.deliveries_per_s) \
            if sio and res is not sio and res.nodes > 1 else ""
        broker = f"{res.broker_cpu_pct:.0f}" if res.broker_cpu_pct is not None else "-"
        lines.append(
            f"{res.server:<18} {res.n:>5} {res.payload:>7} {_fmt_rate(res.deliveries_per_s):>8} "
            f"{res.lost:>7} {vs_single:>9} {vs_sio:>8} {res.latency_p50_us:>7.0f} "
            f"{res.latency_p99_us:>8.0f} "
            f"{_fmt_rate(res.latency_rate) + ('*' if res.latency_overloaded else ''):>7} "
            f"{'/'.join(f'{p:.0f}' for p in res.node_cpu_pct):>11} {broker:>7} "
            f"{res.machine_busy_pct:>4.0f} "
            f"{'/'.join(f'{p:.0f}' for p in res.loadgen_cpu_pct):>14}"
            f"{'!' if res.loadgen_saturated else ' ':>2}"
        )
    lines.append("vs 1 node / vs sio: this row's deliveries/s over single-node roomer's and over "
                 "python-socketio's AsyncRedisManager on 2 nodes (same N, payload, run).")
    lines.append("node cpu%: each server process over the throughput window (% of one core); "
                 "broker%: the broker process over it, if it runs here (a shared broker "
                 "serves others too); box%: every core of the machine, whoever used it.")
    lines.append("p50/p99: at the offered @msg/s; on 2 nodes the probe is on node 2, the "
                 "publisher on node 1: every sample crossed the broker.")
    return "\n".join(lines)
