"""A roomer server in its own process, run the way production runs it.

``roomer serve serverapp:setup --port 0`` (uvloop, SIGTERM for a graceful stop) with the
test's Server options and app modules; the test reads the port from the line the CLI
prints. Clients and abusers in other processes then cannot slow the server by sharing
its event loop, and the server cannot hide a stall by sharing theirs.

Also the helpers to run a child program that speaks line-JSON on stdin/stdout (the
abusers in abusers.py), and to read the server's /metrics, RSS and open fds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from rawclient import connect
from serverapp import ENV
from waiting import scaled

import roomer
from roomer.benchmark.procs import read_metrics

TESTS_DIR = Path(__file__).resolve().parent
# The directory holding the roomer package this test imported, so every child process
# runs the same roomer (a source checkout with its in-place build, or an installed wheel).
ROOMER_ROOT = Path(roomer.__file__).resolve().parents[1]
START_TIMEOUT = scaled(20.0)
STOP_TIMEOUT = scaled(10.0)

_LISTENING = re.compile(r"listening on ws://([\d.]+):(\d+)/ws")


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    parts = [str(ROOMER_ROOT), str(TESTS_DIR), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
    return env


class ChildError(AssertionError):
    pass


class _Process:
    """An asyncio child in its own session (so stopping it stops all it started), its
    stderr in a file so a failure can show it."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr: IO[bytes], label: str) -> None:
        self.proc = proc
        self.label = label
        self._stderr = stderr

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.returncode is None

    def stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def stderr_tail(self, limit: int = 3000) -> str:
        return self.stderr_text()[-limit:]

    async def readline(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise ChildError(f"{self.label}: no output within {timeout:.0f} s\n"
                             f"{self.stderr_tail()}") from None
        if not line:
            await self.proc.wait()
            raise ChildError(f"{self.label} exited with {self.proc.returncode}\n"
                             f"{self.stderr_tail()}")
        return line.decode()

    async def kill(self) -> None:
        """SIGKILL the whole session (the last resort of a teardown)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        self._stderr.close()


async def _spawn(args: list[str], label: str, env: dict[str, str] | None = None) -> _Process:
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by kill()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=stderr, env={**child_env(), **(env or {})}, cwd=TESTS_DIR,
        start_new_session=True)
    return _Process(proc, stderr, label)


class ServerProcess(_Process):
    """``roomer serve`` on a free port. ``stop()`` sends SIGTERM and requires a clean exit."""

    port = 0

    @classmethod
    async def start(cls, options: dict[str, Any] | None = None,
                    apps: tuple[str, ...] = ()) -> ServerProcess:
        spec = json.dumps({"options": options or {}, "apps": list(apps)})
        base = await _spawn(["-m", "roomer", "serve", "serverapp:setup", "--host", "127.0.0.1",
                             "--port", "0", "--log-level", "warning"], "server", {ENV: spec})
        self = cls(base.proc, base._stderr, "server")
        deadline = time.monotonic() + START_TIMEOUT
        while not self.port:
            match = _LISTENING.search(await self.readline(deadline - time.monotonic()))
            if match:
                self.port = int(match.group(2))
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    # what the server says about itself ------------------------------------------------

    async def metrics(self, timeout: float = 5.0) -> dict[str, float]:
        """GET /metrics: ``{"roomer_rooms": 3, "roomer_errors_total.malformed": 12, ...}``
        (``timeout`` in seconds before scaling)."""
        return await read_metrics(self.port, timeout=scaled(timeout))

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise ChildError("no VmRSS")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def cpu_ns(self) -> tuple[int, int]:
        """(nanoseconds on a CPU, nanoseconds runnable but waiting for one) of all the
        server's threads so far (/proc schedstat): how much the machine's load holds
        the server back, measured on the server itself."""
        running = waiting = 0
        for task in os.listdir(f"/proc/{self.pid}/task"):
            try:
                with open(f"/proc/{self.pid}/task/{task}/schedstat") as stat:
                    on_cpu, queued, _ = stat.read().split()
            except (OSError, ValueError):
                continue  # a thread that ended meanwhile
            running += int(on_cpu)
            waiting += int(queued)
        return running, waiting

    async def probe(self, timeout: float = 5.0) -> float:
        """Seconds for a fresh client to connect and get its root join_ack; inf if it
        did not within ``timeout`` scaled (or failed)."""
        t0 = time.monotonic()
        try:
            client = await asyncio.wait_for(connect(self.url), scaled(timeout))
        except Exception:
            return float("inf")
        elapsed = time.monotonic() - t0
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.ws.close(), scaled(1.0))
        return elapsed

    # the end ----------------------------------------------------------------------------

    async def stop(self) -> None:
        """Graceful stop: SIGTERM, then a clean exit (status 0, "roomer stopped") and no
        traceback in the server's log, or ChildError."""
        if not self.alive():
            raise ChildError(f"server died ({self.proc.returncode}):\n{self.stderr_tail()}")
        os.kill(self.pid, signal.SIGTERM)
        assert self.proc.stdout is not None
        try:
            rest = await asyncio.wait_for(self.proc.stdout.read(), STOP_TIMEOUT)
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            raise ChildError(f"server still running {STOP_TIMEOUT:.0f} s after SIGTERM\n"
                             f"{self.stderr_tail()}") from None
        if self.proc.returncode != 0 or b"roomer stopped" not in rest:
            raise ChildError(f"server exited with {self.proc.returncode}, output {rest!r}\n"
                             f"{self.stderr_tail()}")
        if "Traceback" in self.stderr_text():
            raise ChildError(f"the server logged an exception:\n{self.stderr_tail()}")


class ChildProgram(_Process):
    """``python tests/<script> args``: prints one JSON line when ready, then runs until it
    reads ``stop`` on stdin, prints one JSON report line, and exits (at the latest when
    its stdin closes)."""

    _report: dict[str, Any] | None = None

    @classmethod
    async def start(cls, script: str, args: list[str], label: str,
                    ready_timeout: float = scaled(60.0)) -> tuple[ChildProgram, dict[str, Any]]:
        base = await _spawn([str(TESTS_DIR / script), *args], label)
        self = cls(base.proc, base._stderr, label)
        try:
            ready = json.loads(await self.readline(ready_timeout))
        except BaseException:
            await self.kill()
            raise
        return self, ready

    async def report(self, timeout: float = 20.0) -> dict[str, Any]:
        """Tell it to stop; its report (``timeout`` in seconds before scaling)."""
        if self._report is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(b"stop\n")
                await self.proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass
            self._report = json.loads(await self.readline(scaled(timeout)))
        return self._report

    async def finish(self, timeout: float = 20.0) -> dict[str, Any]:
        """Its report (asked for if it was not yet), then its exit: stdin is closed."""
        report = await self.report(timeout)
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await asyncio.wait_for(self.proc.wait(), scaled(timeout))
        return report
