"""Event-name rules and the module-level handler registry (roomer parity)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .connection import Connection
    from .message import Message

__all__ = ["RESERVED_EVENTS", "Handler", "register_handler"]

_C = TypeVar("_C")

#: ``fn(conn, msg)``, sync or async: a handler of one event. ``conn`` is a
#: `roomer.Connection` in the default namespace, a
#: `roomer.NamespaceConnection` in another (``Handler[Connection]``...).
Handler = Callable[[_C, "Message"], "Awaitable[Any] | Any"]

#: Event names a client may not send and no handler may take (the game rooms' are in
#: ``roomer.GAME_EVENTS``).
RESERVED_EVENTS = frozenset(
    {"join", "leave", "join_ack", "leave_ack", "new_member", "member_left", "error", "open",
     "close", "cluster.down", "cluster.up", "session", "session.ack", "session.resumed",
     "session.lost", "member_dropped", "member_back"}
)

_registry: dict[str, Handler[Connection]] = {}


def check_handler(event: str, fn: object, taken: dict[str, Any]) -> None:
    """Raise ValueError/TypeError for a registration roomer must refuse."""
    if not isinstance(event, str) or not event:
        raise ValueError("event name must be a non-empty str")
    if event in RESERVED_EVENTS:
        raise ValueError(f"event name {event!r} is reserved")
    if not callable(fn):
        raise TypeError(f"handler for {event!r} is not callable")
    if event in taken:
        raise ValueError(f"a handler for {event!r} is already registered")


def register_handler(event: str, fn: Handler[Connection]) -> Handler[Connection]:
    """Register ``fn(conn, msg)`` for ``event`` on every Server in this process (the
    default namespace). A handler registered on a Server itself (``@server.on``) takes
    precedence.

    Raises:
        ValueError: ``event`` is empty, reserved or already registered.
        TypeError: ``fn`` is not callable.
    """
    check_handler(event, fn, _registry)
    _registry[event] = fn
    return fn


def unregister_handler(event: str) -> None:
    """Remove a module-level handler (for tests and reloads); unknown names are ignored."""
    _registry.pop(event, None)


def registered() -> dict[str, Handler[Connection]]:
    return _registry
