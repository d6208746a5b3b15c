"""The game-lobby and many-connections modes of ``roomer bench``, at a tiny size.

Real server and load generator processes on loopback: every peer present on this machine
relays a few rooms' inputs and every delivery must be accounted for at its receiver; the
sweep walks its rates and reports each step; the connections mode binds its clients to
other loopback addresses and reports the limits that would stop a larger run.
"""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pytest

from roomer.benchmark import connections, game, gameload, peers

ALL_PEERS = ["roomer", "picows", "websockets", "aiohttp", "socketio"]
PRESENT = [p for p in ALL_PEERS if peers.missing(p) is None]
CLIENTS = 24
ROOM = 4


def test_every_peer_present_relays_and_accounts_every_delivery(tmp_path: Path) -> None:
    out = tmp_path / "game.json"
    rc = game.main([
        "--clients", str(CLIENTS), "--room-size", str(ROOM), "--rate", "10",
        "--duration", "1.5", "--warmup", "0.5", "--procs", "2", "--peers", ",".join(PRESENT),
        "--write-delay", "2", "--poll-interval", "1", "--no-progress", "--setup-timeout", "60",
        "--json", str(out),
    ])
    assert rc == 0
    doc = json.loads(out.read_text())
    rows = {row["server"]: row for row in doc["game"]}
    assert set(rows) == set(PRESENT)
    # --write-delay reaches roomer where it has the option, and the run says when it has not.
    if peers.roomer_supports("write_delay"):
        assert rows["roomer"]["write_delay_ms"] == 2
    else:
        assert rows["roomer"]["write_delay_ms"] is None
        assert any("no write_delay option" in note for note in doc["notes"])
    assert all(row["write_delay_ms"] is None for name, row in rows.items() if name != "roomer")
    assert rows["roomer"]["poll_interval_ms"] == (
        1 if peers.roomer_supports("poll_interval") else None)
    assert all(row["poll_interval_ms"] is None for name, row in rows.items() if name != "roomer")
    for name, row in rows.items():
        assert row["error"] == "", name
        # Each input owes one delivery to every other member of its room, and each
        # receiver got exactly what it was owed, counted on its own connection.
        assert row["sent"] > 0
        assert row["expected"] == row["sent"] * (ROOM - 1), name
        assert row["delivered"] == row["expected"], name
        assert (row["lost"], row["short_receivers"], row["extra"]) == (0, 0, 0), name
        assert row["remainder_receivers"] == 0, name
        assert row["drained"], name
        assert row["offered_per_s"] == CLIENTS * 10 * (ROOM - 1)
        assert row["latency_samples"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"], name
        assert row["cpu_user_s"] + row["cpu_sys_s"] > 0, name
        assert row["cpu_us_per_delivery"] > 0, name
        assert len(row["loadgen_cpu_pct"]) == 2, name
        assert 0 < row["machine_busy_pct"] <= 100.5, name


def test_sweep_steps_up_then_offers_past_the_highest_rate_held(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    # 2..8 Hz on 8 clients is far below saturation: every doubling holds up to the top,
    # then the overload rows offer 1.5x to 4x the highest.
    rc = game.main([
        "--sweep", "--clients", "8", "--room-size", str(ROOM), "--peers", "roomer",
        "--sweep-start", "2", "--sweep-max", "8", "--sweep-duration", "1", "--warmup", "0.2",
        "--procs", "1", "--bound-ms", "1000", "--no-progress", "--setup-timeout", "60",
        "--json", str(out),
    ])
    assert rc == 0
    (sweep,) = json.loads(out.read_text())["sweeps"]
    rates = [step["rate_hz"] for step in sweep["steps"]]
    # Usually 2, 4 and 8 all hold; on a loaded machine any step can miss the offered rate
    # (CI runs delivered 87% at 8 Hz, and once 87% at 2 Hz, after which the sweep halved
    # and refined below 2): the steps are checked against the rate held, whatever it was.
    held = sweep["held_hz"]
    assert held is not None and 0 < held <= 8 and held in rates and 2 in rates
    assert rates[-4:] == [held * k for k in (1.5, 2, 3, 4)]  # the overload rows
    assert max(rates[:-4]) <= 8
    for step in sweep["steps"]:
        assert step["error"] == ""
        assert step["delivered"] + step["lost"] == step["expected"] > 0
        if step["rate_hz"] <= held:
            assert step["lost"] == 0
        if step["rate_hz"] == held:
            assert step["held"]


def test_sweep_halves_down_when_the_first_rate_fails(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    # A bound no latency meets: 2 Hz fails, then 1 and 0.5 (the floor); nothing held, so
    # no overload rows, and the lowest failed rate is reported.
    rc = game.main([
        "--sweep", "--clients", "8", "--room-size", str(ROOM), "--peers", "roomer",
        "--sweep-start", "2", "--sweep-min", "0.5", "--sweep-duration", "1", "--warmup", "0.2",
        "--procs", "1", "--bound-ms", "0.001", "--no-progress", "--setup-timeout", "60",
        "--json", str(out),
    ])
    assert rc == 0
    (sweep,) = json.loads(out.read_text())["sweeps"]
    assert [step["rate_hz"] for step in sweep["steps"]] == [0.5, 1, 2]
    assert sweep["held_hz"] is None and sweep["first_failed_hz"] == 0.5
    assert sweep["why_failed"].startswith("p99")
    assert all(step["lost"] == 0 and step["delivered"] > 0 for step in sweep["steps"])


def test_held_needs_every_delivery_and_p99_under_the_bound() -> None:
    ok = game.GameResult(server="x", clients=8, room_size=4, payload=48, rate_hz=10,
                         offered_per_s=240, delivered=480, expected=480, drained=True,
                         deliveries_per_s=240, p99_ms=20, latency_samples=50)
    assert game.held(ok, 100)
    for change in ({"p99_ms": 100}, {"lost": 1}, {"drained": False},
                   {"deliveries_per_s": 200}, {"latency_samples": 0}, {"error": "x"}):
        res = game.GameResult(**{**ok.__dict__, **change})
        assert not game.held(res, 100), change


def test_percentiles_of_merged_histograms_are_within_a_percent() -> None:
    from array import array

    a = gameload.histogram(array("q", [1_000_000] * 98))  # 1 ms
    b = gameload.histogram(array("q", [50_000_000, 80_000_000]))  # 50 ms, 80 ms
    p50, p99, top = game.percentiles(game._merge([a, b]), (0.5, 0.99, 1.0))
    assert p50 == pytest.approx(1.0, rel=0.01)
    assert p99 == pytest.approx(50.0, rel=0.01)
    assert top == pytest.approx(80.0, rel=0.01)


def test_connections_mode_binds_other_loopback_addresses(tmp_path: Path) -> None:
    out = tmp_path / "conns.json"
    rc = connections.main([
        "--connections", "48", "--room-size", "8", "--interval", "0.5", "--duration", "1.5",
        "--idle", "0.2", "--procs", "2", "--first-source", "7", "--setup-timeout", "60",
        "--json", str(out),
    ])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["limits"]["problems"] == []
    assert [res["server"] for res in doc["results"]] == ["roomer", "picows"]
    for res in doc["results"]:
        assert res["error"] == ""
        assert res["connections"] == 48 and res["procs"] == 2
        assert res["connect_s"] > 0 and res["rss_mib"] > res["rss_before_mib"] > 0
        # One sender per room of 8: each message owes 7 deliveries, all made.
        assert res["expected"] == res["sent"] * 7 > 0
        assert res["delivered"] == res["expected"] and res["lost"] == 0
        assert res["latency_samples"] == res["delivered"]  # every receiver times them
        # Then every client left: the run waited for the server to close their sockets
        # (an error otherwise) and read what memory they left behind.
        assert res["kib_per_connection_idle"] > 0
        assert math.isfinite(res["kib_left_per_connection"])


def test_bound_socket_uses_the_given_source_address() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sock = gameload._bound_socket("127.0.0.9")(None)
        with sock:
            sock.connect(listener.getsockname())
            assert sock.getsockname()[0] == "127.0.0.9"


def test_connections_limits_say_what_stops_a_run_too_big_for_them() -> None:
    limits = connections.check_limits(connections.ConnectionsConfig(connections=10**9))
    text = " ".join(limits.problems)
    assert "open files" in text and "--connections" in text
    assert limits.procs >= 10**9 // max(limits.nofile_hard, limits.ports)
