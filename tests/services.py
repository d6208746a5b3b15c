"""Brokers for the backplane tests, real ones only.

``redis_url`` / ``nats_url``: the machine's Redis on 127.0.0.1:6379 and NATS on
127.0.0.1:4222. ``private_redis`` / ``private_nats``: a redis-server / nats-server this
test starts on a free port, for tests that stop and restart their broker. A missing
service or binary skips the test with a printed reason, and fails it under ``CI=true``.
``prefix`` gives each test its own channel prefix, so parallel runs and leftovers of
earlier runs never cross.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from waiting import eventually_blocking, scaled

__all__ = [
    "Broker", "all_threads_stopped", "find_binary", "free_port", "nats_url", "need", "prefix",
    "private_nats", "private_redis", "reachable", "redis_url",
]

IN_CI = os.environ.get("CI") == "true"
REDIS = ("127.0.0.1", 6379)
NATS = ("127.0.0.1", 4222)


def need(ok: bool, reason: str) -> None:
    """Skip (print why) unless ``ok``; under CI=true a missing service is a failure."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the service is required)")
    print(f"SKIP: {reason}")
    pytest.skip(reason)


def reachable(address: tuple[str, int], timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A port nothing listens on now, for a server a test starts in another process.

    Taken below the kernel's ephemeral range where there is one: bind(0) hands out an
    ephemeral port, which any client socket of a test running in parallel may take before
    the server gets to bind it."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    for _ in range(100 if low > 20000 else 0):
        port = random.randrange(10000, low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def redis_url() -> str:
    need(reachable(REDIS), "no Redis on 127.0.0.1:6379")
    return "redis://127.0.0.1:6379/0"


@pytest.fixture
def nats_url() -> str:
    need(reachable(NATS), "no NATS on 127.0.0.1:4222")
    return "nats://127.0.0.1:4222"


@pytest.fixture(params=["memory", "redis", "nats"])
def backplane_url(request: pytest.FixtureRequest) -> str:
    """Each backplane in turn: in-process, the Redis, the NATS."""
    kind = request.param
    if kind == "memory":
        return f"memory://{uuid.uuid4().hex}"
    return str(request.getfixturevalue(f"{kind}_url"))


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


class Broker:
    """A broker process of our own on a free port, stopped and started at will (same port)."""

    def __init__(self, kind: str, workdir: Path, extra: list[str] | None = None) -> None:
        self.kind = kind
        self.port = free_port()
        self.workdir = workdir
        self.extra = list(extra or ())
        self.proc: subprocess.Popen[bytes] | None = None
        scheme = "redis" if kind == "redis" else "nats"
        self.url = f"{scheme}://127.0.0.1:{self.port}" + ("/0" if kind == "redis" else "")

    def _argv(self) -> list[str]:
        if self.kind == "redis":
            return [find_binary("redis-server") or "redis-server", "--port", str(self.port),
                    "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")]
        return [find_binary("nats-server") or "nats-server", "-a", "127.0.0.1",
                "-p", str(self.port), "-l", str(self.workdir / "nats.log")]

    def start(self) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen(self._argv() + self.extra, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        proc = self.proc

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.kind} on port {self.port} exited at start")
            return reachable(("127.0.0.1", self.port), timeout=0.2)

        eventually_blocking(up, timeout=10, what=f"{self.kind} on port {self.port} up")

    def stop(self) -> None:
        """Kill the broker (every client connection drops at once)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=scaled(10))
            self.proc = None


def all_threads_stopped(pid: int) -> bool:
    """Every thread of ``pid`` is stopped (after SIGSTOP): state T in /proc."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] not in ("T", "t"):
                return False
    return True


def find_binary(name: str) -> str | None:
    """``name`` on PATH, or in /usr/sbin or /usr/bin (nats-server is in sbin on Debian)."""
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _private(kind: str, binary: str, tmp_path: Path) -> Iterator[Broker]:
    need(find_binary(binary) is not None, f"{binary} is not installed")
    broker = Broker(kind, tmp_path / kind)
    broker.workdir.mkdir(exist_ok=True)
    broker.start()
    try:
        yield broker
    finally:
        with contextlib.suppress(Exception):
            broker.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Broker]:
    yield from _private("redis", "redis-server", tmp_path)


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[Broker]:
    yield from _private("nats", "nats-server", tmp_path)
