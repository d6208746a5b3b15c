"""``roomer serve --workers N``: N server processes on one port (SO_REUSEPORT), one per
core, sharing rooms through the backplane; this process only starts and stops them.

Each worker is ``roomer serve`` again with the same arguments, ``--workers 1`` and
``--reuse-port``: the kernel spreads new connections over the workers' sockets, and the
backplane makes them one server to the clients (a worker's node id is host-pid, or
``NAME-<n>`` for ``--node-id NAME``).
SIGINT and SIGTERM are passed on to every worker, each closing its clients with 1001; a
worker that dies stops the rest, and the exit status says so.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

__all__ = ["resolve_workers", "run_workers", "worker_argv"]

STOP_TIMEOUT = 15.0  # a worker's shutdown has its own 5 s deadline; this bounds the rest


def resolve_workers(value: str) -> int:
    """``--workers``: a count, or ``auto`` for the number of cores."""
    if value == "auto":
        return os.cpu_count() or 1
    count = int(value)
    if count < 1:
        raise ValueError("at least 1")
    return count


def worker_argv(argv: Sequence[str], worker: int) -> list[str]:
    """The ``roomer serve`` arguments of worker number ``worker`` (1, 2, ...): these,
    without ``--workers``, and a ``--node-id NAME`` made ``NAME-<worker>`` (node ids must
    be unique among the live nodes)."""
    out: list[str] = []
    skip = False
    rename = False
    for arg in argv:
        if skip:
            skip = False
        elif rename:
            rename = False
            out.append(f"{arg}-{worker}")
        elif arg == "--workers":
            skip = True
        elif arg == "--node-id":
            out.append(arg)
            rename = True
        elif arg.startswith("--node-id="):
            out.append(f"{arg}-{worker}")
        elif not arg.startswith("--workers="):
            out.append(arg)
    return [*out, "--workers", "1", "--reuse-port"]


def run_workers(count: int, argv: Sequence[str]) -> int:
    """Run ``count`` workers until a signal or one of them ends; their worst exit status."""
    children: list[subprocess.Popen[bytes]] = []
    signalled = 0  # children[:signalled] got their SIGTERM
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping, signalled
        stopping = True
        for child in children[signalled:]:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        signalled = len(children)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for i in range(count):
            if stopping:
                break  # a signal while starting: start no more
            env = dict(os.environ, ROOMER_WORKER=f"{i + 1}/{count}")
            command = [sys.executable, "-m", "roomer", *worker_argv(argv, i + 1)]
            children.append(subprocess.Popen(command, env=env))
        if stopping:
            # The signal may have come while one was being started, after the others
            # were signalled: it is signalled now rather than killed at the deadline.
            stop(signal.SIGTERM, None)
        else:
            print(f"roomer: {count} workers started (pids "
                  f"{', '.join(str(c.pid) for c in children)})", flush=True)
        while all(child.poll() is None for child in children) and not stopping:
            time.sleep(0.2)
        if not stopping:
            dead = next(child for child in children if child.poll() is not None)
            print(f"roomer: worker pid {dead.pid} exited with {dead.returncode}; "
                  "stopping the others", file=sys.stderr, flush=True)
            stop(signal.SIGTERM, None)
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    codes = [child.returncode for child in children]
    return max((abs(code) for code in codes), default=0)
