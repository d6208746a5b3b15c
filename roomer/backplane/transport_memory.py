"""The in-process transport: ``memory://name``. Every transport of one process and one event
loop with the same name shares a hub, so several nodes (Servers, Clusters) in one process
share rooms with no broker and no dependency. It is the reference the broker transports are
tested against: the same batching per loop turn, one delivery per subscribed node, the
subscriber count as the answer to a direct publish (as Redis' PUBLISH gives)."""

from __future__ import annotations

from typing import Any

from .transport import Transport, _Pub

__all__ = ["MemoryHub", "MemoryTransport", "hub"]

_HUBS: dict[str, MemoryHub] = {}


class MemoryHub:
    """Subscriptions of one ``memory://name``: channel -> the transports subscribed."""

    __slots__ = ("claims", "subscribers")

    def __init__(self) -> None:
        self.subscribers: dict[str, dict[MemoryTransport, None]] = {}
        self.claims: dict[str, str] = {}  # the broker's keys: Transport.claim

    def count(self, channel: str) -> int:
        """How many transports subscribe to ``channel`` (Redis' PUBSUB NUMSUB)."""
        return len(self.subscribers.get(channel, ()))

    def _add(self, channel: str, transport: MemoryTransport) -> None:
        self.subscribers.setdefault(channel, {})[transport] = None

    def _remove(self, channel: str, transport: MemoryTransport) -> None:
        subs = self.subscribers.get(channel)
        if subs is not None:
            subs.pop(transport, None)
            if not subs:
                del self.subscribers[channel]


def hub(name: str) -> MemoryHub:
    """The hub of ``memory://name`` (created on first use)."""
    found = _HUBS.get(name)
    if found is None:
        found = _HUBS[name] = MemoryHub()
    return found


class MemoryTransport(Transport):
    uses_writer = False

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        name = url.partition("://")[2]
        if not name:
            raise ValueError("memory backplane URL needs a name: memory://NAME")
        self.hub = hub(name)

    async def _open(self) -> set[str]:
        for channel in self._handlers:
            self.hub._add(channel, self)
        return set(self._handlers)

    def _kick(self) -> None:
        # One loop turn's publishes, delivered in order: the memory "round trip".
        self._scheduled = False
        if not self.connected:
            return
        subs, self._sub_ops = self._sub_ops, []
        add, remove, kept = self._reconcile(subs, self._subscribed)
        for channel in add:
            self.hub._add(channel, self)
        for channel in remove:
            self.hub._remove(channel, self)
        for channel in add + kept:
            self._confirm(channel)
        batch: list[_Pub]
        batch, self._pending = self._pending, []
        size, self._pending_bytes = self._pending_bytes, 0
        self._release(self._pending_senders)
        self._pending_senders = {}
        top = self.seq
        for channel, data, fut in batch:
            receivers = self.hub.subscribers.get(channel)
            count = 0
            if receivers:
                # A snapshot: a handler may subscribe or unsubscribe while we deliver.
                for transport in tuple(receivers):
                    if transport.connected:
                        transport._dispatch(channel, data)
                        count += 1
            if fut is not None and not fut.done():
                fut.set_result(count > 0)
        self._batch_done(top, len(batch), 0, size)

    async def claim(self, key: str, value: str, replace: str | None = None) -> str | None:
        if not self.connected:
            raise ConnectionError("memory backplane: not connected")
        held = self.hub.claims.get(key)
        if held is None if replace is None else held == replace:
            self.hub.claims[key] = value
            return None
        return held if held is not None else ""

    async def release(self, key: str, value: str) -> None:
        if self.hub.claims.get(key) == value:
            del self.hub.claims[key]

    def _subscribed(self, channel: str) -> bool:
        return self in self.hub.subscribers.get(channel, ())

    async def _write(self, subs: list[tuple[bool, str]], batch: list[_Pub]) -> int:
        raise AssertionError("the memory transport delivers from _kick")

    async def _shutdown(self) -> None:
        for channel in list(self.hub.subscribers):
            self.hub._remove(channel, self)
