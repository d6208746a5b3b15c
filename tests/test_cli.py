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
from waiting import scaled


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
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=scaled(5)) as resp:
        assert resp.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=scaled(5)) as resp:
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
    _, err = proc.communicate(timeout=scaled(15))
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
                          capture_output=True, text=True, timeout=scaled(30))
    assert proc.returncode == 0
    assert "usage: roomer bench" in proc.stdout and "--peers" in proc.stdout


@pytest.mark.parametrize(("flags", "why"), [
    (["--workers", "2"], "needs --backplane redis://... or nats://..."),
    (["--workers", "2", "--backplane", "memory://x"], "rooms would split silently"),
    (["--workers", "2", "--backplane", "redis://127.0.0.1:6379/0", "--port", "0"],
     "needs a fixed --port"),
    (["--workers", "2", "--backplane", "redis://127.0.0.1:6379/0", "--node-id", "n" * 63],
     "at most 64 characters"),
    (["--workers", "0"], "takes a count or 'auto'"),
])
def test_workers_are_refused_with_a_reason(flags: list[str], why: str) -> None:
    # Refused before anything listens or connects (no broker is needed to be refused).
    args = ["serve", *flags]
    if "--port" not in flags:
        args += ["--port", str(_free_port())]
    proc = _spawn(*args)
    _, err = proc.communicate(timeout=scaled(30))
    assert proc.returncode != 0
    assert why in err, err


def test_workers_auto_is_one_per_core_and_node_ids_stay_unique() -> None:
    from roomer.workers import resolve_workers, worker_argv

    assert resolve_workers("auto") == (os.cpu_count() or 1)
    assert resolve_workers("3") == 3
    argv = ["serve", "app:setup", "--workers", "2", "--node-id", "edge", "--port", "80"]
    assert worker_argv(argv, 2) == ["serve", "app:setup", "--node-id", "edge-2", "--port",
                                    "80", "--workers", "1", "--reuse-port"]
    assert worker_argv(["serve", "--workers=4", "--node-id=edge"], 1) == [
        "serve", "--node-id=edge-1", "--workers", "1", "--reuse-port"]
    if (os.cpu_count() or 1) > 1:  # auto means several workers: the backplane is required
        proc = _spawn("serve", "--workers", "auto", "--port", str(_free_port()))
        _, err = proc.communicate(timeout=scaled(30))
        assert proc.returncode != 0 and f"--workers {os.cpu_count()} needs" in err, err


def test_an_unreachable_broker_is_a_clear_error_at_start() -> None:
    proc = _spawn("serve", "--port", str(_free_port()), "--backplane", "redis://127.0.0.1:1/0")
    out, err = proc.communicate(timeout=scaled(60))
    assert proc.returncode != 0
    assert "cannot reach the broker" in err and "redis://127.0.0.1:1/0" in err, err
    assert "Traceback" not in err and "listening on" not in out


def test_a_signal_while_workers_start_stops_them_all(monkeypatch: pytest.MonkeyPatch) -> None:
    # SIGTERM lands while the second worker is being started: no third one starts, and
    # the second is signalled too (not SIGKILLed at the stop deadline).
    from roomer import workers

    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        if len(started) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # run_workers' handler runs here
        # A worker that runs until it is signalled.
        child = real_popen([sys.executable, "-c", "import signal; signal.pause()"])
        started.append(child)
        return child

    monkeypatch.setattr(workers.subprocess, "Popen", popen)
    t0 = time.monotonic()
    try:
        workers.run_workers(3, ["serve"])
    finally:
        for child in started:
            child.kill()
            child.wait()
    assert time.monotonic() - t0 < workers.STOP_TIMEOUT / 2
    assert len(started) == 2
    assert [child.returncode for child in started] == [-signal.SIGTERM] * 2
