"""`roomer serve` as a user runs it: a real process, real signals, real HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "roomer", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())


def _wait_listening(proc: subprocess.Popen[str]) -> list[str]:
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
        if line.startswith("extensions:"):
            return lines
    proc.kill()
    err = proc.stderr.read() if proc.stderr else ""
    raise AssertionError(f"server did not start: {lines} {err}")


Served = tuple[subprocess.Popen[str], int, list[str]]


@pytest.fixture
def served() -> Iterator[Served]:
    port = _free_port()
    proc = _spawn("serve", "--port", str(port))
    try:
        yield proc, port, _wait_listening(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def test_serve_prints_address_and_mode(served: Served) -> None:
    _, port, lines = served
    assert f"listening on ws://127.0.0.1:{port}/ws" in lines[0]
    expected = "pure Python" if os.environ.get("ROOMER_NO_EXTENSIONS") == "1" else "compiled"
    assert expected in lines[1]


def test_healthz_and_demo_page(served: Served) -> None:
    _, port, _ = served
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
        assert resp.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
        assert b"roomer demo lobby" in resp.read()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_on_signal(
    served: Served, sig: signal.Signals
) -> None:
    proc, _, _ = served
    proc.send_signal(sig)
    assert proc.wait(10) == 0
    assert proc.stdout is not None and "roomer stopped" in proc.stdout.read()


def test_bad_app_is_a_clear_error() -> None:
    proc = _spawn("serve", "no_such_module_xyz:app", "--port", str(_free_port()))
    _, err = proc.communicate(timeout=15)
    assert proc.returncode != 0
    assert "cannot import 'no_such_module_xyz'" in err


def test_flags_reach_the_server() -> None:
    from roomer.cli import _parser, build_server

    args = _parser().parse_args(["serve", "--sync-broadcast", "--max-message-size", "4096",
                                 "--root-presence", "--slow-consumer", "disconnect"])
    server = build_server(args)
    assert server.config.sync_broadcast is True
    assert server.config.max_message_size == 4096
    assert server.config.root_presence is True
    assert server.config.slow_consumer == "disconnect"
    assert "/" in server.routes


def test_bench_help_reaches_the_harness() -> None:
    proc = subprocess.run([sys.executable, "-m", "roomer", "bench", "--help"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    assert "usage: roomer bench" in proc.stdout and "--peers" in proc.stdout
