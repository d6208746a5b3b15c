"""Lifecycle hooks (on_connect, on_disconnect, on_join, on_leave): sync or async, run in
registration order; the first that raises stops the rest."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

__all__ = ["Hook", "Hooks"]

Hook = Callable[..., Any]


class Hooks:
    """The hook lists of one server."""

    __slots__ = ("connect", "disconnect", "join", "leave")

    def __init__(self) -> None:
        self.connect: list[Hook] = []
        self.disconnect: list[Hook] = []
        self.join: list[Hook] = []
        self.leave: list[Hook] = []

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
