"""``roomer serve --workers N``: N server processes on one port (SO_REUSEPORT), sharing
rooms through the backplane, under a supervisor (this process) that keeps the port served.

Each worker is ``roomer serve`` again with the same arguments, ``--workers 1`` and
``--reuse-port``: the kernel spreads new connections over the workers' sockets, and the
backplane makes them one server to the clients (a worker's node id is host-pid, or
``NAME-<n>`` for ``--node-id NAME``).

The supervisor:

- starts the workers and waits until each listens (a worker says so through a pipe). One
  that exits before it ever listened means the group cannot start (the app does not import,
  the broker is unreachable, the address is taken): the others are stopped and the
  supervisor exits 1 without retrying; retries at that level are a service manager's job.
- restarts a worker that ends while the group runs, after a backoff: BACKOFF_FIRST (0.5 s),
  doubled after each crash up to BACKOFF_CAP (30 s), back to 0.5 s once a worker stayed up
  STABLE_AFTER (60 s). The other workers keep serving meanwhile: the kernel hands new
  connections to the sockets still listening. Each exit (with its status) and each return
  is one line on stderr. A worker that crashed CRASH_LOOP (10) times in a row, each within
  60 s of its start, is a crash loop and is not started again; the others keep serving, and
  the supervisor exits 1 once none is left.
- holds a lock on host:port for its group (``flock`` on a file in ``$XDG_RUNTIME_DIR/roomer``
  or ``/tmp/roomer-<uid>``, holding its pid), and so do its workers (they inherit it): a
  second group on the same host:port is refused while any process of the first lives, and
  the lock of a group that is gone is taken over. ``--reuse-port`` starts a group beside a
  running one on purpose (a handover); it takes the lock once the other group is gone.
- on SIGINT or SIGTERM sends SIGTERM to every worker (each closes its clients with 1001) and
  waits STOP_TIMEOUT (15 s) at most, then SIGKILLs what is left; a second signal SIGKILLs at
  once. It exits 0 when every worker stopped cleanly.

Workers end with their supervisor: on Linux each asks the kernel for a SIGTERM when it dies
(``PR_SET_PDEATHSIG``), and each also watches a pipe that only the supervisor holds open,
which closes however the supervisor ends (SIGKILL included): the worker then shuts down as
on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import re
import secrets
import selectors
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, TextIO

from .config import RESUME_SECRET_ENV

__all__ = [
    "BACKOFF_CAP", "BACKOFF_FIRST", "CRASH_LOOP", "STABLE_AFTER", "STOP_TIMEOUT",
    "GroupError", "GroupLock", "SupervisorLink", "resolve_workers", "run_workers",
    "say_line", "worker_argv",
]

STOP_TIMEOUT = 15.0  # a worker's shutdown has its own 5 s deadline; this bounds the rest
#: Seconds before the first restart of a crashed worker; doubled after each further crash.
BACKOFF_FIRST = 0.5
#: The longest wait before a restart.
BACKOFF_CAP = 30.0
#: A worker up this many seconds has proved itself: its next crash waits BACKOFF_FIRST.
STABLE_AFTER = 60.0
#: Crashes in a row, each within STABLE_AFTER of the start, after which a worker is not
#: started again.
CRASH_LOOP = 10

#: How a worker finds its supervisor: "pid,life fd,ready fd,lock fd" (fds it inherited).
SUPERVISOR_ENV = "ROOMER_SUPERVISOR"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
TICK = 0.2  # the supervisor looks at its workers this often at least


def resolve_workers(value: str) -> int:
    """``--workers``: a count, or ``auto`` for the number of cores.

    Raises:
        ValueError: neither a count of at least 1 nor ``auto``.
    """
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


# the lock of a host:port -------------------------------------------------------------------


class GroupError(RuntimeError):
    """The group cannot start: another one serves its host:port, or the lock that would say
    so cannot be opened."""


def runtime_dir() -> str:
    """This user's folder for roomer's lock files: ``$XDG_RUNTIME_DIR/roomer``, else
    ``<tmp>/roomer-<uid>`` (mode 0700, refused unless it is this user's own folder).

    Raises:
        OSError: it cannot be made, or is not this user's folder.
    """
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        path = os.path.join(base, "roomer")
    else:
        path = os.path.join(tempfile.gettempdir(), f"roomer-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise OSError(f"{path} is not a folder of this user's")
    return path


class GroupLock:
    """The lock file of one host:port. ``take()`` locks it (``flock``, so the lock of a
    process that died is free again) and writes this pid in it; the lock lasts while this
    process or a child that inherited :attr:`fd` lives.

    Args:
        host: the address as given to ``--host``.
        port: the port.

    Raises:
        OSError: the runtime folder or the file cannot be opened.
    """

    def __init__(self, host: str, port: int) -> None:
        name = re.sub(r"[^A-Za-z0-9.-]", "_", host) or "_"
        self.path = os.path.join(runtime_dir(), f"serve-{name}-{port}.lock")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                          0o600)
        self.held = False

    def take(self) -> bool:
        """Lock it if no live process holds it; whether this process holds it now."""
        if not self.held:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
            self.held = True
        return True

    def holder(self) -> str:
        """The pid written by the process that took it (``?`` if none was)."""
        return os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"

    def close(self) -> None:
        """Let go of it (held on by children that inherited it, until they end)."""
        os.close(self.fd)
        self.held = False


# the worker's side ------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Ask Linux for SIGTERM when the parent dies (a no-op elsewhere: the pipe remains)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


class SupervisorLink:
    """A worker's ties to its supervisor: it tells it when it listens, and learns when it
    is gone. From the main thread, before and while the server runs.

    Args:
        pid: the supervisor's pid.
        life_fd: the read end of a pipe only the supervisor can write: EOF means it is gone.
        ready_fd: the write end of the pipe the worker announces itself on.
        lock_fd: the group's lock, held by every process of the group.
    """

    def __init__(self, pid: int, life_fd: int, ready_fd: int, lock_fd: int) -> None:
        self.pid = pid
        self.life_fd = life_fd
        self.ready_fd = ready_fd
        self.lock_fd = lock_fd
        self._stopping: Any = None  # the shutdown task once the supervisor is gone

    @classmethod
    def from_env(cls) -> SupervisorLink | None:
        """The link described by ROOMER_SUPERVISOR (taken out of the environment, so what
        the app starts does not inherit it), or None outside a ``--workers`` group."""
        value = os.environ.pop(SUPERVISOR_ENV, None)
        if not value:
            return None
        pid, life, ready, lock = (int(part) for part in value.split(","))
        return cls(pid, life, ready, lock)

    def attach(self) -> bool:
        """Tie this process's life to the supervisor's; False if it is already gone."""
        for fd in (self.life_fd, self.ready_fd, self.lock_fd):
            os.set_inheritable(fd, False)  # the app's own children are not the group
        _die_with_parent()
        # The supervisor may have died before prctl: then this process has a new parent.
        return os.getppid() == self.pid

    def listening(self, on_orphaned: Callable[[], Any]) -> None:
        """Tell the supervisor this worker listens, and call ``on_orphaned()`` (on the
        running loop) once the supervisor is gone."""
        loop = asyncio.get_running_loop()
        os.write(self.ready_fd, f"{os.getpid()}\n".encode())
        os.close(self.ready_fd)

        def gone() -> None:
            if os.read(self.life_fd, 1):
                return  # the supervisor writes nothing; defensive only
            loop.remove_reader(self.life_fd)
            self._stopping = on_orphaned()

        loop.add_reader(self.life_fd, gone)


# the supervisor ---------------------------------------------------------------------------


def describe_exit(code: int) -> str:
    """A worker's exit status in words: ``exited with status 1``, ``was killed by SIGKILL``."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with status {code}"


def backoff(crashes: int) -> float:
    """Seconds before restarting a worker that crashed ``crashes`` times in a row (1, 2...)."""
    return min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (crashes - 1))


@dataclass
class _Worker:
    number: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    listening: bool = False
    starts: int = 0
    crashes: int = 0  # in a row, each within STABLE_AFTER of its start
    restart_at: float | None = None
    given_up: bool = False
    status: int = 0  # the last exit status
    terminated: bool = False  # this process was sent its SIGTERM


def say_line(line: str, file: TextIO | None = None) -> None:
    """Write ``line`` and its newline (to stdout by default) in one write. The supervisor
    and its workers share stdout and stderr, and ``print`` writes the newline apart when
    Python's output is unbuffered (PYTHONUNBUFFERED, usual in containers): two workers'
    lines would then run together."""
    out = sys.stdout if file is None else file
    out.write(line + "\n")
    out.flush()


def _say(text: str) -> None:
    say_line(f"roomer: {text}", sys.stderr)


class _Supervisor:
    def __init__(self, count: int, argv: Sequence[str], lock: GroupLock) -> None:
        self.count = count
        self.argv = list(argv)
        self.lock = lock
        self.workers = [_Worker(i + 1) for i in range(count)]
        self.life_r, self.life_w = os.pipe()
        self.ready_r, self.ready_w = os.pipe()
        os.set_blocking(self.ready_r, False)
        self.ready_buf = b""
        self.stopping = False
        self.killing = False
        self.up = False  # every worker listened once: from now on ends are crashes
        self.failed = False
        # One resume secret for the group (a worker restarted gets it too): a client
        # resumes on whichever worker its reconnect lands.
        self.secret = os.environ.get(RESUME_SECRET_ENV) or secrets.token_urlsafe(32)

    # signals ---------------------------------------------------------------------------

    def on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        if self.stopping:
            self.killing = True  # a second signal: no more waiting
            self.signal_all(signal.SIGKILL)
            return
        self.stopping = True
        self.signal_all(signal.SIGTERM)

    def signal_all(self, sig: int) -> None:
        for worker in self.workers:
            process = worker.process
            if process is None or process.poll() is not None:
                continue
            if sig == signal.SIGTERM:
                # One SIGTERM each: a second one that came after its loop closed (a quick
                # shutdown) would kill it by the default action, a clean stop reported as
                # a death.
                if worker.terminated:
                    continue
                worker.terminated = True
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)

    # workers ---------------------------------------------------------------------------

    def spawn(self, worker: _Worker) -> None:
        fds = (self.life_r, self.ready_w, self.lock.fd)
        env = dict(os.environ, ROOMER_WORKER=f"{worker.number}/{self.count}")
        env[RESUME_SECRET_ENV] = self.secret
        env[SUPERVISOR_ENV] = ",".join(str(n) for n in (os.getpid(), *fds))
        command = [sys.executable, "-m", "roomer", *worker_argv(self.argv, worker.number)]
        worker.process = subprocess.Popen(command, env=env, pass_fds=fds)
        worker.started = time.monotonic()
        worker.listening = False
        worker.starts += 1
        worker.restart_at = None
        worker.terminated = False
        if self.stopping:  # the signal came while it was being started
            self.signal_all(signal.SIGTERM)

    def read_ready(self, selector: selectors.BaseSelector, timeout: float) -> None:
        if selector.select(timeout):
            self.drain()

    def drain(self) -> None:
        """Read what workers announced (pids that listen) without waiting."""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.ready_r, 4096):
                self.ready_buf += chunk
        *lines, self.ready_buf = self.ready_buf.split(b"\n")
        for line in lines:
            pid = int(line)
            for worker in self.workers:
                if worker.process is not None and worker.process.pid == pid:
                    worker.listening = True
                    if self.up:
                        _say(f"worker {worker.number} is back (pid {pid})")

    def ended(self, worker: _Worker, now: float) -> None:
        assert worker.process is not None
        self.drain()  # it may have said it listened just before it ended
        pid, code = worker.process.pid, worker.process.returncode
        worker.status = code
        worker.process = None
        what = f"worker {worker.number} (pid {pid}) {describe_exit(code)}"
        if not worker.listening and worker.starts == 1:
            # It never got as far as listening: another try would fail the same way.
            _say(f"error: {what} before it listened; stopping the group")
            self.failed = True
            return
        lived = now - worker.started
        worker.crashes = 1 if lived >= STABLE_AFTER else worker.crashes + 1
        if worker.crashes >= CRASH_LOOP:
            worker.given_up = True
            left = sum(1 for w in self.workers if not w.given_up)
            _say(f"error: {what}: {worker.crashes} crashes in a row, each within "
                 f"{STABLE_AFTER:g} s of its start; not restarting it ({left} of "
                 f"{self.count} workers left)")
            return
        delay = backoff(worker.crashes)
        worker.restart_at = now + delay
        _say(f"{what} after {lived:.1f} s; restarting it in {delay:g} s")

    # the run ---------------------------------------------------------------------------

    def run(self) -> int:
        selector = selectors.DefaultSelector()
        selector.register(self.ready_r, selectors.EVENT_READ)
        try:
            try:
                for worker in self.workers:
                    if self.stopping:
                        break  # a signal while starting: start no more
                    self.spawn(worker)
                self.supervise(selector)
            except BaseException:
                self.failed = True
                self.stop()  # no worker outlives its supervisor's failure (Popen's, say)
                raise
            return self.stop()
        finally:
            selector.close()
            for fd in (self.life_r, self.life_w, self.ready_r, self.ready_w):
                os.close(fd)

    def supervise(self, selector: selectors.BaseSelector) -> None:
        while not self.stopping and not self.failed:
            now = time.monotonic()
            due = [w.restart_at for w in self.workers if w.restart_at is not None]
            self.read_ready(selector, max(0.0, min([TICK, *(t - now for t in due)])))
            if not self.lock.held:
                self.lock.take()  # --reuse-port beside a group: its lock, once it is gone
            now = time.monotonic()
            for worker in self.workers:
                if self.stopping or self.failed:
                    break
                if worker.process is not None and worker.process.poll() is not None:
                    self.ended(worker, now)
                if worker.restart_at is not None and now >= worker.restart_at:
                    self.spawn(worker)
                    assert worker.process is not None
                    _say(f"worker {worker.number} restarted (pid {worker.process.pid})")
            if not self.up and all(w.listening for w in self.workers):
                self.up = True
                pids = ", ".join(str(w.process.pid) for w in self.workers if w.process)
                say_line(f"roomer: {self.count} workers started (pids {pids})")
            if all(w.given_up for w in self.workers):
                _say("error: every worker is in a crash loop; stopping")
                self.failed = True

    def stop(self) -> int:
        """SIGTERM to every worker, SIGKILL past the deadline; the exit status."""
        self.stopping = True
        self.signal_all(signal.SIGKILL if self.killing else signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for worker in self.workers:
            process = worker.process
            if process is None:
                continue
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            worker.status = process.returncode
        if self.failed:
            return 1
        return max((abs(w.status) for w in self.workers if not w.given_up), default=0)


def run_workers(count: int, argv: Sequence[str], host: str, port: int, *,
                share: bool = False) -> int:
    """Run ``count`` workers of ``roomer serve argv`` on host:port under supervision until
    SIGINT or SIGTERM (or until the group fails); the exit status. Main thread only (it
    sets signal handlers).

    Args:
        count: how many workers.
        argv: the ``roomer serve`` arguments as given (``--workers`` included).
        host: the address the workers bind, for the lock.
        port: their port, for the lock.
        share: start beside a group that holds host:port (``--reuse-port``).

    Returns:
        0 after a clean stop; 1 when the group could not start or every worker crashed in
        a loop; otherwise the worst exit status of a worker at the stop.

    Raises:
        GroupError: another group serves host:port and ``share`` is false, or the lock
            file cannot be opened.
    """
    try:
        lock = GroupLock(host, port)
    except OSError as exc:
        raise GroupError(f"cannot lock {host}:{port} for the group: {exc}") from None
    try:
        if not lock.take():
            holder = lock.holder()
            if not share:
                raise GroupError(
                    f"a roomer --workers group already serves {host}:{port} (supervisor "
                    f"pid {holder}, lock {lock.path}): stop it first, or add --reuse-port "
                    "to start this one beside it on purpose")
            _say(f"starting beside the group of pid {holder} on {host}:{port} "
                 "(--reuse-port); this group takes the lock once that one is gone")
        supervisor = _Supervisor(count, argv, lock)
        previous = {sig: signal.signal(sig, supervisor.on_signal)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return supervisor.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        lock.close()
