"""What every part of one server shares, below the socket layer.

A `Core` holds one server's options, counters, namespaces, router, the fan-out
engine, its supervised background tasks, and the event loop it runs on, with the one rule
all of them follow: after ``start``, state belongs to the loop's thread. The
`roomer.Server` (roomer/server.py, the only module doing socket I/O) makes one and
starts it; the router, the registries, the namespaces and the connections reach each other
through it, never through the server. docs/design.md draws the parts.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .config import Config
from .errors import Deny
from .games import Games
from .hooks import Hook
from .lifecycle import Lifecycle
from .metrics import Metrics
from .namespaces import DefaultNamespace, Namespace
from .registry import Registry
from .routing import Router, name_ok
from .sessions import Sessions
from .tasks import Supervisor

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["Core"]

log = logging.getLogger("roomer")


class Core:
    """One server's shared state and services (see the module docstring)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.router = Router(self)
        self.lifecycle = Lifecycle(self)
        #: The default namespace.
        self.default: Namespace[Connection] = DefaultNamespace(
            self, "", Registry(config.root_presence))
        # The others are declared before start (Server.namespace).
        self.namespaces: dict[str, Namespace[Any]] = {"": self.default}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread: int | None = None
        self.tasks: Supervisor | None = None
        self.closing = False
        self._engine: Any = None
        self._sync_lock: asyncio.Lock | None = None
        #: The game rooms of every namespace (roomer/games/).
        self.games = Games(self)
        #: Resumable sessions (roomer/sessions.py).
        self.sessions = Sessions(self)

    def start(self, loop: asyncio.AbstractEventLoop, engine: Any) -> None:
        """The server starts on ``loop``, fanning out through ``engine``."""
        self.loop = loop
        self.loop_thread = threading.get_ident()
        self.tasks = Supervisor(loop)
        self._engine = engine
        self._sync_lock = asyncio.Lock()
        for ns in self.namespaces.values():
            ns.registry.engine = engine
        self.games.start(loop)

    def stopped(self) -> None:
        """Not started after all (a failed listen): start may be called again."""
        self.loop = self.loop_thread = self.tasks = self._engine = None

    @property
    def engine(self) -> Any:
        """The fan-out engine (roomer.fanout.Fanout); RuntimeError before start."""
        if self._engine is None:
            raise RuntimeError("the server is not started")
        return self._engine

    @property
    def started(self) -> bool:
        return self._engine is not None

    @property
    def sync_lock(self) -> asyncio.Lock:
        """Sync mode: one broadcast admitted at a time, in call order."""
        assert self._sync_lock is not None
        return self._sync_lock

    # threads -----------------------------------------------------------------------------

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self.loop_thread

    def loop_only(self, what: str) -> None:
        """RuntimeError unless on the server's loop thread (before start: anything goes,
        it is being set up)."""
        if self.loop_thread is not None and threading.get_ident() != self.loop_thread:
            raise RuntimeError(f"{what} from another thread: it must run on the server's "
                               "loop; use server.call_threadsafe(fn, ...)")

    def call_soon(self, fn: Callable[[], Any]) -> None:
        assert self.loop is not None
        self.loop.call_soon(fn)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run work a client caused as a supervised task (shutdown waits for it)."""
        assert self.tasks is not None
        return self.tasks.spawn(coro)

    # names and hooks -----------------------------------------------------------------------

    def check_room_name(self, room: str) -> None:
        """ValueError unless ``room`` is a valid room name for this server."""
        limit = self.config.max_room_name
        if not isinstance(room, str) or not name_ok(room, limit):
            raise ValueError(f"room names are 1-{limit} bytes of UTF-8")

    def after(self, hooks: list[Hook], *args: Any, what: str) -> asyncio.Task[Any] | None:
        """Run hooks that cannot refuse (joined, left, connected, disconnect...): every
        one of them, in order, whatever an earlier one raised (a cleanup hook must not be
        skipped); sync ones now, the rest in a task once one turns out async. What they
        raise is logged (a Deny is ignored: there is nothing to refuse). The task that
        runs the rest, if one had to be started."""
        for i, hook in enumerate(hooks):
            result = _call(hook, args, what)
            if result is not None:
                return self.spawn(_after_async(result, hooks[i + 1:], args, what))
        return None


def _call(hook: Hook, args: tuple[Any, ...], what: str) -> Awaitable[Any] | None:
    try:
        result = hook(*args)
    except Deny:
        return None
    except Exception:
        log.exception("%s hook raised", what)
        return None
    return result if inspect.isawaitable(result) else None


async def _after_async(first: Awaitable[Any], rest: list[Hook], args: tuple[Any, ...],
                       what: str) -> None:
    pending: Awaitable[Any] | None = first
    for hook in [None, *rest]:
        if hook is not None:
            pending = _call(hook, args, what)
        if pending is None:
            continue
        try:
            await pending
        except Deny:
            pass
        except Exception:
            log.exception("%s hook raised", what)
