"""Child processes of the harness: launching, line-JSON control, /proc readings, cleanup.

No child outlives the harness, whatever ends it: each one is started in its own process
group and recorded (:func:`kill_all` / :func:`kill_everything` signal the group), each
asks the kernel to SIGKILL it when the harness dies (:func:`die_with_parent`, Linux's
``PR_SET_PDEATHSIG``: that covers a SIGKILL of the harness, which runs no cleanup), and
``harness.main`` turns SIGTERM into an exception so its ``finally`` blocks run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

__all__ = ["Child", "ChildError", "cpu_stall_us", "cpu_times", "die_with_parent", "free_port",
           "kill_all", "kill_everything", "live_children", "machine_cpu", "memory_kib",
           "raise_nofile", "read_metrics", "wait_listening"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
# The directory holding the roomer package, so children import the same roomer as the harness
# (a source checkout or an installed wheel alike).
_IMPORT_ROOT = str(Path(__file__).resolve().parents[2])
PARENT_ENV = "ROOMER_BENCH_PARENT"  # the harness's pid, for die_with_parent()
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Every child started and not yet killed, in start order (kill_everything's list).
_LIVE: list[Child] = []


class ChildError(RuntimeError):
    pass


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_IMPORT_ROOT, env.get("PYTHONPATH")) if p)
    env[PARENT_ENV] = str(os.getpid())
    return env


def die_with_parent() -> None:
    """Called first thing in every child: be SIGKILLed when the harness dies (Linux).

    The kernel sends the signal when the *thread* that started this process exits; the
    harness starts children from its main thread only. A harness that died between the
    fork and this call is caught by the parent check that follows it. Elsewhere than
    Linux this does nothing (the harness's finally blocks and group kills remain).
    """
    expected = os.environ.get(PARENT_ENV)
    if expected is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != int(expected):
        os._exit(1)  # the harness is already gone


def raise_nofile(want: int | None = None) -> tuple[int, int]:
    """Raise this process's soft fd limit to ``want`` (default: the hard limit), or as
    far as the hard limit allows; returns (soft, hard) afterwards. Raising the hard limit
    needs CAP_SYS_RESOURCE: it is tried when ``want`` is above it, and left as it is when
    refused (the caller compares and reports)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if want is None else want
    if target > hard and hard != resource.RLIM_INFINITY:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
            return resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class Child:
    """A `python -m module args` process in its own process group (so kill takes it all)."""

    def __init__(self, module: str, args: list[str], label: str) -> None:
        self.label = label
        # Kept open for the child's life (closed in kill()): its traceback, if it dies.
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            # -P: the working directory is not put first on the import path, so a child
            # run from inside another checkout still imports this roomer (_child_env).
            [sys.executable, "-P", "-m", module, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=_child_env(),
            start_new_session=True,
            text=True,
            bufsize=1,
        )
        _LIVE.append(self)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def stderr_tail(self, limit: int = 2000) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:]

    def read_reply(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise ChildError(
                f"{self.label}: no reply within {timeout:.0f} s\n{self.stderr_tail()}"
            ) from None
        if line is None:
            raise ChildError(f"{self.label} exited ({self.proc.poll()}):\n{self.stderr_tail()}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def send(self, cmd: dict[str, Any]) -> None:
        """Write one command without waiting for its reply (read it with read_reply)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise ChildError(f"{self.label} is gone:\n{self.stderr_tail()}") from exc

    def request(self, cmd: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        self.send(cmd)
        return self.read_reply(timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGTERM the group, then SIGKILL whatever is left after a short grace."""
        with contextlib.suppress(ValueError):
            _LIVE.remove(self)
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=2.0)
        _signal_group(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5.0)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        self._stderr.close()


def _signal_group(pid: int, sig: int) -> None:
    # The child leads its own session, so its process group id is its pid.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def kill_all(children: list[Child]) -> None:
    # Load generators first, so the server does not spend the teardown on their disconnects.
    for child in reversed(children):
        child.kill()
    children.clear()


def live_children() -> list[Child]:
    """Every child started and not killed yet (oldest first)."""
    return list(_LIVE)


def kill_everything() -> None:
    """Kill every child still alive, whoever started it (the harness's last finally)."""
    kill_all(live_children())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(child: Child, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise ChildError(f"{child.label} exited ({child.proc.poll()}):\n{child.stderr_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise ChildError(f"{child.label} did not listen on {port} within {timeout:.0f} s")


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process (10 ms resolution): psutil's reading where it
    is installed (the ``bench`` extra), else the same /proc fields read here."""
    try:
        import psutil
    except ImportError:
        return _proc_cpu_times(pid)
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess as exc:
        raise ProcessLookupError(pid) from exc
    return times.user, times.system


def _proc_cpu_times(pid: int) -> tuple[float, float]:
    with open(f"/proc/{pid}/stat") as f:
        # comm may contain spaces: the fields we need follow the last ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user time
    return (total - idle) / _CLK_TCK, total / _CLK_TCK


def cpu_stall_us() -> int | None:
    """Microseconds that some runnable task of the machine waited for a CPU, so far (Linux
    PSI, /proc/pressure/cpu "some total"); None where the kernel does not report it. Over
    a window, its growth over the wall time is the share of it the run queue was never
    empty: near 100%, every process waited its turn, whatever its own CPU figures say."""
    try:
        with open("/proc/pressure/cpu") as f:
            first = f.readline()
    except OSError:
        return None
    for part in first.split():
        if part.startswith("total="):
            return int(part[6:])
    return None


def open_fds(pid: int) -> int:
    """How many file descriptors process ``pid`` holds open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


_METRIC = re.compile(r'^(roomer_\w+)(?:\{code="(\w+)"\})? (\S+)$')


async def read_metrics(port: int, host: str = "127.0.0.1", path: str = "/metrics",
                       timeout: float = 10.0) -> dict[str, float]:
    """GET a roomer server's metrics page: ``{"roomer_rooms": 3.0,
    "roomer_errors_total.malformed": 12.0, ...}`` (a labelled sample as ``name.code``)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                     .encode())
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ChildError(f"GET {path}: {head[:80]!r}")
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        match = _METRIC.match(line)
        if match:
            name, code, value = match.groups()
            out[f"{name}.{code}" if code else name] = float(value)
    return out
