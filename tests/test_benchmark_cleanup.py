"""No process the benchmark starts outlives it, however it ends.

``roomer bench`` runs in a subprocess; once its server and load generators are up (mid-run)
it gets SIGTERM, SIGINT (Ctrl-C) or SIGKILL, and every child it had must be gone within a
deadline: SIGTERM and SIGINT unwind through the harness's cleanup, SIGKILL runs none and
leaves it to the kernel (the children asked for PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from waiting import eventually_blocking

psutil = pytest.importorskip("psutil")

ROOT = Path(__file__).resolve().parents[1]
BENCH_CHILDREN = 3  # the server and two load generator processes


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    eventually_blocking(check, timeout, what)


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE  # dead, not reaped by its new parent
    except psutil.NoSuchProcess:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL],
                         ids=["SIGTERM", "SIGINT", "SIGKILL"])
def test_no_child_survives_the_bench(sig: signal.Signals) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    bench = subprocess.Popen(
        [sys.executable, "-m", "roomer.benchmark", "--game", "--clients", "16",
         "--room-size", "4", "--rate", "5", "--duration", "120", "--procs", "2",
         "--peers", "roomer", "--no-progress"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parent = psutil.Process(bench.pid)
    children: list[psutil.Process] = []
    try:
        def all_up() -> bool:
            children[:] = parent.children(recursive=True)
            # Each load generator reads its first command only once its clients joined:
            # with every child up and their sockets established, the run is under way.
            established = sum(
                1 for child in children for conn in _connections(child)
                if conn.status == psutil.CONN_ESTABLISHED)
            return len(children) >= BENCH_CHILDREN and established >= 32

        _until(all_up, 60.0, "the bench's server and load generators up")
        pids = sorted(child.pid for child in children)
        os.kill(bench.pid, sig)
        bench.wait(timeout=30)
        _until(lambda: all(_gone(child) for child in children), 15.0,
               f"every child of the bench ({pids}) gone after {sig.name}")
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        for child in children:
            if not _gone(child):
                child.kill()
        assert bench.stderr is not None
        bench.stderr.close()
    if sig == signal.SIGTERM:
        # It unwound (exit status 128 + 15 from its handler's exception) rather than being
        # killed by the signal: its finally blocks ran.
        assert bench.returncode == 128 + signal.SIGTERM, bench.returncode


def _connections(proc: psutil.Process) -> list:
    try:
        return proc.net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
