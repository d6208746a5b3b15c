"""The background tasks of one server, supervised in one place.

Two kinds, both started through a `Supervisor`:

- work: what clients cause and the server must see through (async handlers and hooks,
  joins waiting for the backplane). Shutdown lets it finish until its deadline, then
  cancels what is left.
- loops: the server's own periodic rounds (pings, the write-timeout watch). Cancelled as
  soon as shutdown starts; one failing round is logged and the loop goes on.

A task's unexpected exception is logged with its traceback when the task ends, never
left for the garbage collector to mention.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["Supervisor"]

log = logging.getLogger("roomer")


class Supervisor:
    """Starts, watches and stops the background tasks of one server (loop thread only)."""

    __slots__ = ("_loop", "_loops", "_work")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._work: set[asyncio.Task[Any]] = set()
        self._loops: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        """How many work tasks are running."""
        return len(self._work)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as work: shutdown waits for it until its deadline."""
        task = self._loop.create_task(coro)
        self._work.add(task)
        task.add_done_callback(self._ended)
        return task

    def every(self, period: float, step: Callable[[float], None]) -> None:
        """Call ``step(loop.time())`` every ``period`` seconds until shutdown."""
        task = self._loop.create_task(self._repeat(period, step))
        self._loops.add(task)
        task.add_done_callback(self._loops.discard)

    def stop_loops(self) -> None:
        for task in list(self._loops):
            task.cancel()

    async def drain(self, deadline: float, spare: set[asyncio.Task[Any]],
                    done: Callable[[], bool] = lambda: True) -> None:
        """Wait until every work task but those in ``spare`` (the tasks waiting for this
        shutdown to end) has ended and ``done()`` holds, or until the loop time
        ``deadline``."""
        loop = self._loop
        while loop.time() < deadline:
            pending = [task for task in self._work if task not in spare]
            if not pending and done():
                return
            # Wake at each task's end, and at least every 10 ms for done().
            waiters: list[asyncio.Future[Any]] = [*pending] or [loop.create_future()]
            await asyncio.wait(waiters, timeout=min(0.01, max(0.0, deadline - loop.time())),
                               return_when=asyncio.FIRST_COMPLETED)

    def cancel_work(self, spare: set[asyncio.Task[Any]]) -> None:
        """Cancel every work task but those in ``spare``."""
        for task in list(self._work):
            if task not in spare:
                task.cancel()

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._work.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("roomer background task %s failed", task.get_coro(), exc_info=exc)

    async def _repeat(self, period: float, step: Callable[[float], None]) -> None:
        loop = self._loop
        while True:
            await asyncio.sleep(period)
            try:
                step(loop.time())
            except Exception:
                # One bad round (a hook's side effect, a transport in a strange state)
                # must not end the pings or the watch for every connection.
                log.exception("roomer background round %s failed", step.__name__)
