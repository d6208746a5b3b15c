"""Lifecycle hooks of a namespace (docs/protocol.md §6: on_connect, on_connected,
on_disconnect, on_join, on_joined, on_leave, on_left, the on_event catch-all, and
on_moved_in/on_moved_out for sessions moving between nodes): sync or async, run in
registration order; the first that raises stops the rest."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

__all__ = ["Hook", "Hooks"]

Hook = Callable[..., Any]


class Hooks:
    """The hook lists of one namespace."""

    __slots__ = ("connect", "connected", "disconnect", "event", "join", "joined", "leave",
                 "left", "moved_in", "moved_out")

    def __init__(self) -> None:
        self.connect: list[Hook] = []
        self.connected: list[Hook] = []
        self.disconnect: list[Hook] = []
        self.join: list[Hook] = []
        self.joined: list[Hook] = []
        self.leave: list[Hook] = []
        self.left: list[Hook] = []
        self.event: list[Hook] = []
        self.moved_in: list[Hook] = []
        self.moved_out: list[Hook] = []

    @staticmethod
    def add(hooks: list[Hook], fn: Hook) -> Hook:
        if not callable(fn):
            raise TypeError("hook is not callable")
        hooks.append(fn)
        return fn

    @staticmethod
    def run(hooks: list[Hook], *args: Any) -> Coroutine[Any, Any, None] | None:
        """Run hooks in order; their exceptions propagate. None when all ran; a
        coroutine finishing the rest once one of them turned out async."""
        for i, hook in enumerate(hooks):
            result = hook(*args)
            if inspect.isawaitable(result):
                return _finish(result, hooks[i + 1:], args)
        return None


async def _finish(first: Awaitable[Any], rest: list[Hook], args: tuple[Any, ...]) -> None:
    await first
    for hook in rest:
        result = hook(*args)
        if inspect.isawaitable(result):
            await result
