"""Smoke test of the end-to-end benchmark harness (roomer bench) at a tiny size.

Runs real server and load generator processes on 127.0.0.1 for about a second each; checks that
deliveries are counted, that nothing is lost, and that byte counting is exact (it agrees with
frame counting), for roomer and raw picows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from roomer.benchmark import harness, wire

N = 20
PAYLOAD = 64


def _config(mode: str, peers: list[str], inflight: int) -> harness.Config:
    args = harness.build_parser().parse_args(
        [
            "--inflight",
            str(inflight),
            "--n",
            str(N),
            "--payload",
            str(PAYLOAD),
            "--duration",
            "0.7",
            "--mode",
            mode,
            "--peers",
            ",".join(peers),
            "--no-memory",
            "--no-progress",
            "--setup-timeout",
            "30",
        ]
    )
    return harness.config_from_args(args)


@pytest.mark.parametrize("server", ["roomer", "picows"])
def test_frame_counting_agrees_with_byte_counting(server: str) -> None:
    # In frames mode the subscribers count both: every relayed frame seen, and its bytes.
    # One message in flight: the window only paces the probe, and a frame-parsing load
    # generator that fell behind it would make roomer's bounded outboxes drop (real loss,
    # but not what this test checks).
    res = harness.run_fanout(server, N, PAYLOAD, _config("frames", [server], inflight=1))
    assert res.error == ""
    assert res.frame_bytes == wire.relayed_frame_size(PAYLOAD)
    assert res.sent > 0
    assert res.sub_deliveries_by_frames > 0
    assert res.sub_deliveries_by_bytes == res.sub_deliveries_by_frames
    assert res.byte_remainder == 0
    assert res.lost == 0
    assert res.delivered == res.sent * N


def test_bytes_mode_run_and_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    rc = harness.main(
        [
            "--n",
            str(N),
            "--payload",
            str(PAYLOAD),
            "--duration",
            "0.7",
            "--peers",
            "roomer,picows",
            "--mode",
            "bytes",
            "--no-memory",
            "--no-progress",
            "--setup-timeout",
            "30",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    doc = json.loads(out.read_text())
    assert set(doc) >= {"meta", "fanout", "ratios", "memory"}
    rows = {row["server"]: row for row in doc["fanout"]}
    assert set(rows) == {"roomer", "picows"}
    for row in rows.values():
        assert row["error"] == ""
        assert row["mode"] == "bytes"
        # Byte counting is exact: a whole number of frames, every expected delivery counted.
        assert row["byte_remainder"] == 0
        assert row["delivered"] == row["expected"] == row["sent"] * N > 0
        assert row["lost"] == 0
        assert row["deliveries_per_s"] > 0
        assert row["cpu_user_s"] + row["cpu_sys_s"] > 0
        assert row["peak_rss_mib"] > 0
        assert row["latency_samples"] > 0 and 0 < row["latency_p50_us"] <= row["latency_p99_us"]
        assert len(row["loadgen_cpu_pct"]) == 3  # two subscriber processes + the publisher
    ratio = doc["ratios"][0]
    assert ratio["peer"] == "picows" and ratio["deliveries_per_s"] > 0


def _cross_args(tmp_path: Path, peers: str, backplanes: str, redis_url: str,
                nats_url: str = "nats://127.0.0.1:4222") -> list[str]:
    return [
        "--cross-node", "--n", str(N), "--payload", str(PAYLOAD), "--duration", "0.7",
        "--peers", peers, "--backplanes", backplanes, "--redis-url", redis_url,
        "--nats-url", nats_url, "--no-progress", "--setup-timeout", "30",
        "--json", str(tmp_path / "cross.json"),
    ]


def test_cross_node_mode_on_redis(tmp_path: Path, redis_url: str) -> None:
    # The lobby split over two roomer processes on a real Redis, beside single-node roomer:
    # every delivery counted exactly (byte counting), on both nodes, and each message
    # crossed the broker once (one publish, not one per member).
    rc = harness.main(_cross_args(tmp_path, "roomer", "redis", redis_url))
    assert rc == 0
    doc = json.loads((tmp_path / "cross.json").read_text())
    rows = {row["server"]: row for row in doc["cross_node"]}
    assert set(rows) == {"roomer", "roomerx2-redis"}
    single, cross = rows["roomer"], rows["roomerx2-redis"]
    assert (single["nodes"], cross["nodes"], cross["backplane"]) == (1, 2, "redis")
    for row in (single, cross):
        assert row["error"] == ""
        assert row["byte_remainder"] == 0
        assert row["delivered"] == row["expected"] == row["sent"] * N > 0
        assert row["latency_samples"] > 0 and 0 < row["latency_p50_us"] <= row["latency_p99_us"]
    assert len(cross["node_cpu_pct"]) == 2 and min(cross["node_cpu_pct"]) > 0
    # The publisher's node published each relay once; the other node received each.
    first, second = cross["backplane_flow"]
    heartbeats = 10  # ctl traffic of the window (one heartbeat per node per second)
    assert cross["sent"] <= first["published"] <= cross["sent"] + heartbeats
    assert second["received"] >= cross["sent"]
    assert first["dropped"] == second["dropped"] == 0
    (ratio,) = doc["ratios"]
    assert ratio["server"] == "roomerx2-redis" and ratio["vs_single_node"] > 0
    assert ratio["single_node_p99_us"] == single["latency_p99_us"]


def test_cross_node_mode_nats_and_socketio_peer(tmp_path: Path, redis_url: str,
                                                nats_url: str) -> None:
    pytest.importorskip("socketio", reason="the python-socketio peer is an optional extra")
    rc = harness.main(_cross_args(tmp_path, "roomer,socketio", "nats", redis_url, nats_url))
    assert rc == 0
    doc = json.loads((tmp_path / "cross.json").read_text())
    rows = {row["server"]: row for row in doc["cross_node"]}
    assert set(rows) == {"roomer", "roomerx2-nats", "socketiox2-redis"}
    for row in rows.values():
        assert row["error"] == "" and row["delivered"] > 0
    sio = rows["socketiox2-redis"]
    assert sio["mode"] == "frames" and sio["nodes"] == 2 and sio["backplane_flow"] == []
    nats = rows["roomerx2-nats"]
    assert nats["delivered"] == nats["expected"]
    (ratio,) = doc["ratios"]
    assert ratio["vs_socketio_redis"] > 0


def test_missing_peers_are_skipped_with_the_extra_that_installs_them() -> None:
    # As in a venv with `pip install .` only: websockets and aiohttp cannot be imported
    # (a None in sys.modules makes both import and find_spec fail for that name).
    code = (
        "import sys; sys.modules['websockets'] = None; sys.modules['aiohttp'] = None; "
        "from roomer.benchmark.harness import main; "
        "sys.exit(main(['--quick', '--n', '8', '--duration', '0.5', '--no-latency', "
        "'--no-progress', '--setup-timeout', '30']))"
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=str(root)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    for peer in ("websockets", "aiohttp"):
        assert (f"skipped {peer}: {peer} not installed: pip install 'roomer[bench]'"
                in proc.stdout)
    rows = [line.split()[0] for line in proc.stdout.splitlines() if line[:1].isalpha()]
    assert {"roomer", "roomer-sync", "picows"} <= set(rows)
    assert "ERROR" not in proc.stdout
