"""The server's asks of one client that wait for an answer (docs/protocol.md §7).

Each has an id unique among the client's waiting asks (a counter from 1 that wraps at
2**32 - 1, skipping ids in use), a future its asker awaits, and the namespace and room it
was asked in: when the client leaves that room (or the namespace, or disconnects) the
ask fails at once with ConnectionError instead of holding its memory until its timeout.
At most ``limit`` wait at a time per client (``max_pending_asks``), so an app that asks on
every join cannot be made to grow memory by a client that joins and leaves in a loop.
"""

from __future__ import annotations

import asyncio

__all__ = ["MAX_ASK_ID", "Asks"]

MAX_ASK_ID = 0xFFFFFFFF


class Asks:
    """The waiting asks of one client, by id."""

    __slots__ = ("_next", "_waiting")

    def __init__(self) -> None:
        self._next = 1
        self._waiting: dict[int, tuple[asyncio.Future[bytes], str, str]] | None = None

    def __len__(self) -> int:
        return len(self._waiting) if self._waiting else 0

    def open(self, loop: asyncio.AbstractEventLoop, namespace: str, room: str,
             limit: int) -> tuple[int, asyncio.Future[bytes]]:
        """A new ask's id and the future its answer completes.

        Raises:
            RuntimeError: ``limit`` asks of this client are waiting already.
        """
        waiting = self._waiting
        if waiting is None:
            waiting = self._waiting = {}
        elif len(waiting) >= limit:
            raise RuntimeError(f"{limit} asks of this client are waiting already "
                               "(max_pending_asks)")
        ask_id = self._next
        while ask_id in waiting:
            ask_id = ask_id % MAX_ASK_ID + 1
        self._next = ask_id % MAX_ASK_ID + 1
        future: asyncio.Future[bytes] = loop.create_future()
        waiting[ask_id] = (future, namespace, room)
        return ask_id, future

    def close(self, ask_id: int) -> None:
        """The asker is done with ``ask_id`` (answered, timed out or cancelled)."""
        waiting = self._waiting
        if waiting is not None:
            waiting.pop(ask_id, None)
            if not waiting:
                self._waiting = None  # an idle connection holds no dict

    def waiter(self, ask_id: int) -> asyncio.Future[bytes] | None:
        """The future still waiting for ``ask_id``'s answer, or None (unknown, late)."""
        entry = self._waiting.get(ask_id) if self._waiting else None
        if entry is None or entry[0].done():
            return None
        return entry[0]

    def fail(self, why: str, namespace: str | None = None, room: str | None = None) -> None:
        """Fail (ConnectionError ``why``) the asks waiting in ``room`` of ``namespace``,
        every ask of ``namespace`` when ``room`` is None, every ask when both are."""
        waiting = self._waiting
        if not waiting:
            return
        for ask_id, (future, ns, rm) in list(waiting.items()):
            if (namespace is None or ns == namespace) and (room is None or rm == room):
                del waiting[ask_id]
                if not future.done():
                    future.set_exception(ConnectionError(why))
        if not waiting:
            self._waiting = None
