"""`roomer serve` as a user runs it: a real process, real signals, real HTTP."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from services import free_port
from waiting import scaled

from roomer import Server


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
    port = free_port()
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
    proc = _spawn("serve", "no_such_module_xyz:app", "--port", str(free_port()))
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
        args += ["--port", str(free_port())]
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
        proc = _spawn("serve", "--workers", "auto", "--port", str(free_port()))
        _, err = proc.communicate(timeout=scaled(30))
        assert proc.returncode != 0 and f"--workers {os.cpu_count()} needs" in err, err


def test_an_unreachable_broker_is_a_clear_error_at_start() -> None:
    proc = _spawn("serve", "--port", str(free_port()), "--backplane", "redis://127.0.0.1:1/0")
    out, err = proc.communicate(timeout=scaled(60))
    assert proc.returncode != 0
    assert "cannot reach the broker" in err and "redis://127.0.0.1:1/0" in err, err
    assert "Traceback" not in err and "listening on" not in out


def test_a_signal_while_workers_start_stops_them_all(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    # SIGTERM lands while the second worker is being started: no third one starts, and
    # the second is signalled too (not SIGKILLed at the stop deadline).
    from roomer import workers

    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen(command: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        if len(started) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # run_workers' handler runs here
        # A worker that runs until it is signalled.
        child = real_popen([sys.executable, "-c", "import signal; signal.pause()"])
        started.append(child)
        return child

    monkeypatch.setattr(workers.subprocess, "Popen", popen)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    t0 = time.monotonic()
    try:
        workers.run_workers(3, ["serve"], "127.0.0.1", free_port())
    finally:
        for child in started:
            child.kill()
            child.wait()
    assert time.monotonic() - t0 < workers.STOP_TIMEOUT / 2
    assert len(started) == 2
    assert [child.returncode for child in started] == [-signal.SIGTERM] * 2


# the command line as a new user meets it --------------------------------------------------


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("roomer: error: "), err
    return lines[0]


def test_abbreviated_flags_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from roomer.cli import main

    # "--node-i web" once passed for --node-id: every worker got the same node id.
    assert main(["serve", "--node-i", "web", "--workers", "3"]) == 2
    assert "unrecognized arguments: --node-i" in _one_line_error(capsys.readouterr().err)
    assert main(["serve", "--work", "2"]) == 2
    assert "unrecognized arguments: --work" in _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize(("flags", "says"), [
    (["--port", "70000"], "argument --port: '70000' is not a port (0-65535"),
    (["--host", "999.1.1.1"], "argument --host: cannot resolve '999.1.1.1'"),
    (["--rate-limit", "0/1"], "argument --rate-limit: count must be a positive finite number"),
    (["--rate-limit", "ten"], "argument --rate-limit: invalid COUNT/SECONDS value: 'ten'"),
    (["--max-rooms", "-1"], "argument --max-rooms: must be at least 1"),
    (["--backplane", "foo://x"], "argument --backplane: use redis://"),
    (["--static", "/nonexistent"], "argument --static: '/nonexistent' is not a folder"),
    (["--metrics-path", "metrics"], "argument --metrics-path: must be a path starting with "
                                    "'/', or none"),
    (["--keyfile", "key.pem"], "--keyfile needs --certfile"),
    (["--app-dir", "/nonexistent"], "argument --app-dir: '/nonexistent' is not a folder"),
    (["no_colon"], "app must be module:attr"),
])
def test_a_bad_flag_is_one_line_and_a_usage_status(flags: list[str], says: str) -> None:
    proc = _spawn("serve", *flags)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, err
    assert says in _one_line_error(err), err
    assert "listening" not in out


def test_an_address_in_use_is_one_line_and_status_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _spawn("serve", "--port", str(port))
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert (f"roomer: error: cannot listen on 127.0.0.1:{port}: the address is in use"
            in _one_line_error(err))
    assert "listening on" not in out


def test_an_address_not_of_this_machine_is_one_line_and_status_1() -> None:
    proc = _spawn("serve", "--host", "192.0.2.1", "--port", str(free_port()))  # TEST-NET-1
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert "cannot listen on 192.0.2.1:" in _one_line_error(err)


def _help_blocks(text: str) -> dict[str, str]:
    """Each option of an argparse help text: its help, on one line."""
    blocks: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("  -"):
            current = line.split()[0]
            blocks[current] = line
        elif current and line.startswith("      "):
            blocks[current] += " " + line.strip()
    return blocks


def test_help_speaks_the_command_lines_terms() -> None:
    proc = subprocess.run([sys.executable, "-m", "roomer", "serve", "--help"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    blocks = _help_blocks(proc.stdout)
    for text in blocks.values():
        assert text.count("default") <= 1, text  # one default per flag
        assert "None" not in text and "'none' for" not in text, text
        assert not re.search(r"\(\d+, [\d.]+\)", text), text  # no Python tuples
    assert "(default 200/1; none: unlimited)" in blocks["--rate-limit"]
    assert "(default 100/10; none: unlimited)" in blocks["--error-limit"]
    assert "(default 20; none: no pings, no idle close)" in blocks["--ping-interval"]
    assert "(default host-pid-random)" in blocks["--node-id"]
    assert "(default: none, this process alone)" in blocks["--backplane"]
    assert "(default 10)" in blocks["--write-timeout"]
    assert "--app-dir" in blocks


# the app, where the user has it ------------------------------------------------------------

CHAT = """\
import roomer

server = roomer.Server()
"""


def _console_script(tmp_path: Path) -> list[str]:
    """The ``roomer`` command as pip installs it: the real one beside this Python if there
    is one, else the same two lines in a script of their own (its folder, not the current
    one, heads sys.path, as for every console script)."""
    installed = Path(sys.executable).with_name("roomer")
    if installed.exists():
        return [str(installed)]
    script = tmp_path / "bin" / "roomer"
    script.parent.mkdir()
    script.write_text("import sys\nfrom roomer.cli import main\nsys.exit(main())\n")
    return [sys.executable, str(script)]


def _run_in(cwd: Path, command: list[str]) -> subprocess.Popen[str]:
    from serverproc import child_env

    return subprocess.Popen(command, cwd=cwd, env=child_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM, a clean exit; the rest of its output."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert proc.stdout is not None and proc.stderr is not None
    # read(), not communicate(): that reads the pipe itself, past what readline buffered.
    out, err = proc.stdout.read(), proc.stderr.read()
    assert "Traceback" not in err, err
    return out


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_console_script_finds_the_app_in_the_current_folder(tmp_path: Path) -> None:
    app = tmp_path / "project"
    app.mkdir()
    (app / "chatapp_cwd.py").write_text(CHAT)
    port = free_port()
    proc = _run_in(app, [*_console_script(tmp_path), "serve", "chatapp_cwd:server",
                         "--port", str(port)])
    try:
        assert f"listening on ws://127.0.0.1:{port}/ws" in _wait_listening(proc)[0]
        assert _get(port, "/healthz")[0] == 200
        _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_app_dir_names_the_folder_the_app_is_imported_from(tmp_path: Path) -> None:
    app = tmp_path / "project"
    app.mkdir()
    (app / "chatapp_dir.py").write_text(CHAT)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    command = [*_console_script(tmp_path), "serve", "chatapp_dir:server"]
    lost = _run_in(elsewhere, [*command, "--port", str(free_port())])
    _, err = lost.communicate(timeout=30)
    assert lost.returncode == 1 and "cannot import 'chatapp_dir'" in _one_line_error(err)
    port = free_port()
    proc = _run_in(elsewhere, [*command, "--app-dir", "../project", "--port", str(port)])
    try:
        _wait_listening(proc)
        assert _get(port, "/healthz")[0] == 200
        _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_static_applies_to_a_ready_server(tmp_path: Path) -> None:
    (tmp_path / "chatapp_static.py").write_text(CHAT)
    public = tmp_path / "public"
    public.mkdir()
    (public / "hello.txt").write_text("hello from public")
    port = free_port()
    proc = _run_in(tmp_path, [sys.executable, "-m", "roomer", "serve", "chatapp_static:server",
                              "--static", "public", "--port", str(port)])
    try:
        _wait_listening(proc)
        assert _get(port, "/hello.txt") == (200, b"hello from public")
        assert _get(port, "/missing.txt")[0] == 404
        _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Options fixed when the Server was built are refused by name, in one line.
    refused = _run_in(tmp_path, [sys.executable, "-m", "roomer", "serve",
                                 "chatapp_static:server", "--static", "public",
                                 "--max-rooms", "5", "--port", str(port)])
    _, err = refused.communicate(timeout=30)
    assert refused.returncode == 2
    line = _one_line_error(err)
    assert "is a ready Server" in line and "--max-rooms cannot change it" in line, line
    assert "--static" in line.split("cannot change it")[1]  # named among those that apply


@pytest.mark.parametrize("with_index", [True, False])
def test_static_index_replaces_the_demo_page(tmp_path: Path, with_index: bool) -> None:
    (tmp_path / "logo.txt").write_text("logo")
    if with_index:
        (tmp_path / "index.html").write_text("<h1>my own page</h1>")
    port = free_port()
    proc = _spawn("serve", "--static", str(tmp_path), "--port", str(port))
    try:
        lines = _wait_listening(proc)
        status, body = _get(port, "/")
        assert status == 200
        if with_index:
            assert body == b"<h1>my own page</h1>"
        else:
            assert b"roomer demo lobby" in body
        assert _get(port, "/logo.txt") == (200, b"logo")
        out = _stop(proc)
        said_demo = any("demo lobby:" in line for line in [*lines, *out.splitlines()])
        assert said_demo is not with_index
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_serve_static_is_checked_and_before_start_only(
        tmp_path: Path, make_server: Callable[..., Awaitable[Server]]) -> None:
    server = Server()
    with pytest.raises(ValueError, match="is not a folder"):
        server.serve_static(str(tmp_path / "missing"))
    assert server.config.static_dir is None  # a refused folder changes nothing
    server.serve_static(str(tmp_path))
    assert server.config.static_dir == str(tmp_path)
    started = await make_server()
    with pytest.raises(RuntimeError, match="before the server starts"):
        started.serve_static(str(tmp_path))
