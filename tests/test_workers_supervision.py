"""``roomer serve --workers N`` under its supervisor, over real processes and a real Redis:
a crashed worker comes back while the others keep the port served, workers end with a
SIGKILLed supervisor, a second group on the same port is refused (and a dead group's lock
taken over), a worker that cannot start stops the group, and a crash loop is given up.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from clusterkit import eventually
from rawclient import RawClient, connect
from serverproc import TESTS_DIR, _Process, _spawn, child_env
from services import free_port

from roomer import workers
from roomer.workers import GroupLock

pytestmark = pytest.mark.server_process  # every server here is a child process

START = 30.0  # seconds a group may take to start (two interpreters, a broker each)


def group_args(port: int, redis_url: str, prefix: str, *extra: str) -> list[str]:
    return ["-m", "roomer", "serve", "scaleout_app:setup", "--host", "127.0.0.1", "--port",
            str(port), "--workers", "2", "--backplane", redis_url, "--backplane-prefix",
            prefix, "--log-level", "warning", *extra]


async def started(group: _Process) -> list[int]:
    """Read the group's output until it says every worker listens; their pids."""
    deadline = time.monotonic() + START
    while True:
        line = await group.readline(max(0.1, deadline - time.monotonic()))
        if "workers started (pids " in line:
            return [int(p) for p in line.split("(pids ")[1].rstrip(")\n").split(", ")]


def gone(pid: int) -> bool:
    """The process has ended (a zombie waiting for its new parent to reap it counts)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def pid_of(url: str) -> tuple[RawClient, int]:
    client = await connect(url)
    await client.send("root", "api_pid")
    return client, int((await client.expect("api_pid")).payload)


async def served_by(url: str, pid: int, tries: int = 64) -> RawClient:
    """A client the kernel handed to worker ``pid`` (bounded retries)."""
    for _ in range(tries):
        client, got = await pid_of(url)
        if got == pid:
            return client
        await client.close()
    raise AssertionError(f"{tries} connections, none landed on pid {pid}")


async def test_a_killed_worker_comes_back_and_the_port_keeps_answering(
        redis_url: str, prefix: str) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws"
    group = await _spawn(group_args(port, redis_url, prefix), "workers")
    clients: list[RawClient] = []
    try:
        victim, survivor = await started(group)
        os.kill(victim, signal.SIGKILL)
        # The port answers during the restart window: a connection begun before the
        # replacement listens succeeds, on the surviving worker.
        deadline = time.monotonic() + 20
        while True:
            assert "is back" not in group.stderr_text(), "no connection in the window"
            assert time.monotonic() < deadline, "no connection after the kill"
            try:
                client, pid = await pid_of(url)
            except Exception:  # bounded: the replacement ends the window
                continue  # a connection queued on the dying socket is reset: retry
            clients.append(client)
            assert pid == survivor
            break
        await eventually(lambda: "is back" in group.stderr_text(), 20, "the worker is back")
        log = group.stderr_text()
        assert f"worker 1 (pid {victim}) was killed by SIGKILL" in log, log
        assert "restarting it in 0.5 s" in log, log
        match = re.search(r"worker 1 is back \(pid (\d+)\)", log)
        assert match is not None, log
        back = int(match.group(1))
        assert back not in (victim, survivor)
        # The new worker serves, and has joined the others on the backplane.
        fresh = await served_by(url, back)
        clients.append(fresh)

        async def knows_other() -> bool:
            await fresh.send("root", "api_nodes")
            return (await fresh.expect("api_nodes")).payload == b"1"

        await eventually(knows_other, 15, "the new worker meets the other")
        os.kill(group.pid, signal.SIGTERM)
        assert await asyncio.wait_for(group.proc.wait(), 20) == 0
        for pid in (survivor, back):
            assert gone(pid)
        assert "Traceback" not in group.stderr_text(), group.stderr_tail()
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.ws.close(), 2)
        await group.kill()


async def test_workers_end_with_a_sigkilled_supervisor(redis_url: str, prefix: str) -> None:
    port = free_port()
    group = await _spawn(group_args(port, redis_url, prefix), "workers")
    pids: list[int] = []
    try:
        pids = await started(group)
        os.kill(group.pid, signal.SIGKILL)  # no chance to stop its workers itself
        await eventually(lambda: all(gone(pid) for pid in pids), 15, "no orphan worker left")
        with pytest.raises(OSError):  # and nothing serves the port any more
            await asyncio.wait_for(connect(f"ws://127.0.0.1:{port}/ws"), 5)
    finally:
        await group.kill()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_a_second_group_on_the_port_is_refused_and_a_dead_ones_lock_taken_over(
        redis_url: str, prefix: str) -> None:
    port = free_port()
    first = await _spawn(group_args(port, redis_url, prefix), "first")
    second: _Process | None = None
    third: _Process | None = None
    try:
        pids = await started(first)
        second = await _spawn(group_args(port, redis_url, prefix), "second")
        assert await asyncio.wait_for(second.proc.wait(), START) == 1
        err = second.stderr_text()
        assert err.startswith("roomer: error: a roomer --workers group already serves "
                              f"127.0.0.1:{port} (supervisor pid {first.pid}"), err
        assert err.count("\n") == 1 and "Traceback" not in err
        # The first group dies whole (SIGKILL, no cleanup): its lock file stays behind,
        # unlocked, and the next group takes it over.
        await first.kill()
        await eventually(lambda: all(gone(pid) for pid in pids), 15, "the first group gone")
        third = await _spawn(group_args(port, redis_url, prefix), "third")
        await started(third)
        os.kill(third.pid, signal.SIGTERM)
        assert await asyncio.wait_for(third.proc.wait(), 20) == 0
    finally:
        for group in (first, second, third):
            if group is not None:
                await group.kill()


async def test_a_worker_that_cannot_start_stops_the_group() -> None:
    # Nothing is restarted: the broker is unreachable, so each try would fail the same way.
    group = await _spawn(["-m", "roomer", "serve", "--port", str(free_port()), "--workers",
                          "2", "--backplane", "redis://127.0.0.1:1/0"], "workers")
    try:
        assert await asyncio.wait_for(group.proc.wait(), START) == 1
        err = group.stderr_text()
        assert "before it listened; stopping the group" in err, err
        assert "cannot reach the broker" in err and "restarting" not in err, err
        assert "Traceback" not in err, err
    finally:
        await group.kill()


async def test_a_crash_loop_is_given_up() -> None:
    # run_workers itself (the CLI's checks are not needed for one worker with no backplane),
    # with a short backoff and a loop of 3 crashes, so the test takes seconds not minutes.
    port = free_port()
    code = ("import sys; from roomer import workers as w; w.BACKOFF_FIRST = 0.05; "
            "w.CRASH_LOOP = 3; sys.exit(w.run_workers(1, sys.argv[1:], '127.0.0.1', "
            f"{port}))")
    group = await _spawn(["-c", code, "serve", "--port", str(port), "--log-level", "warning"],
                         "supervisor")
    try:
        (pid,) = await started(group)
        for crash in range(1, 4):
            os.kill(pid, signal.SIGKILL)
            if crash == 3:
                break
            await eventually(lambda n=crash: group.stderr_text().count("is back") == n, 20,
                             f"restart {crash}")
            pid = int(re.findall(r"is back \(pid (\d+)\)", group.stderr_text())[-1])
        assert await asyncio.wait_for(group.proc.wait(), 20) == 1
        err = group.stderr_text()
        assert "restarting it in 0.05 s" in err and "restarting it in 0.1 s" in err, err
        assert "3 crashes in a row" in err and "not restarting it (0 of 1 workers left)" in err
        assert "every worker is in a crash loop; stopping" in err, err
    finally:
        await group.kill()


def test_a_worker_stops_when_its_supervisor_is_gone_without_a_signal(tmp_path: Path) -> None:
    # The fallback behind PR_SET_PDEATHSIG: this test is the worker's "supervisor" (the
    # worker's parent, so no death signal comes); closing the life pipe alone must stop it.
    life_r, life_w = os.pipe()
    ready_r, ready_w = os.pipe()
    lock_fd = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT)  # travels, never locked
    env = {**child_env(), "ROOMER_WORKER": "1/1",
           workers.SUPERVISOR_ENV: f"{os.getpid()},{life_r},{ready_w},{lock_fd}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "roomer", "serve", "--port", "0", "--log-level", "warning"],
        env=env, cwd=TESTS_DIR, pass_fds=(life_r, ready_w, lock_fd),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for fd in (life_r, ready_w, lock_fd):
            os.close(fd)
        with os.fdopen(ready_r, "rb") as ready:
            assert ready.readline() == f"{proc.pid}\n".encode()  # it says it listens
            os.close(life_w)
            out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "the supervisor" in err and "is gone; stopping" in err, err
        assert out.rstrip().endswith("roomer stopped"), out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_group_lock_is_one_holder_at_a_time(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    first = GroupLock("::", 8080)
    assert first.path == str(tmp_path / "roomer" / "serve-__-8080.lock")
    assert (tmp_path / "roomer").stat().st_mode & 0o777 == 0o700
    assert first.take() and first.holder() == str(os.getpid())
    second = GroupLock("::", 8080)
    assert not second.take()  # flock: a second open file is refused, even in one process
    other = GroupLock("127.0.0.1", 8080)
    assert other.take()  # another address is another group
    other.close()
    first.close()  # the holder is gone: its lock is free, though the file stays
    assert second.take()
    with open(second.path, "rb") as f, pytest.raises(BlockingIOError):
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    second.close()


def test_backoff_doubles_to_its_cap() -> None:
    assert [workers.backoff(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_a_line_is_one_write_even_when_output_is_unbuffered() -> None:
    # The supervisor and its workers share stdout and stderr. Under PYTHONUNBUFFERED (as
    # in most container images) print() writes a line's newline on its own, so two
    # workers' lines could run together; each line they say is written whole.
    class Recorder(io.RawIOBase):
        def __init__(self) -> None:
            self.writes: list[bytes] = []

        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            self.writes.append(bytes(data))
            return len(data)

    raw = Recorder()
    out = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)  # what -u gives
    print("worker 1/2: roomer listening", file=out, flush=True)
    assert raw.writes == [b"worker 1/2: roomer listening", b"\n"]  # the hazard
    raw.writes.clear()
    workers.say_line("worker 1/2: roomer listening", out)
    workers.say_line("worker 1/2: roomer stopped", out)
    assert raw.writes == [b"worker 1/2: roomer listening\n", b"worker 1/2: roomer stopped\n"]
