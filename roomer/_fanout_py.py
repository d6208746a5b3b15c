"""Pure-Python fan-out engine: the fallback and test oracle of roomer._fanout.

Same API and the same semantics as the compiled module: corked per-connection
outboxes written once per loop turn, bounded in async mode, never dropping in sync mode.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import monotonic
from typing import Any

from picows import WSListener

__all__ = ["Fanout", "Peer"]


def _report_write_error(loop: Any, peer: Peer, exc: Exception) -> None:
    handler = getattr(loop, "call_exception_handler", None)
    if handler is not None:
        handler(
            {
                "message": "roomer: a receiver's transport refused a write; "
                "its outbox was discarded and it takes no more frames",
                "exception": exc,
                "protocol": peer,
            }
        )


class Fanout:
    """The server-wide fan-out state: outbox limits, flush scheduling and counters."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        outbox_limit: int = 1 << 20,
        flush_threshold: int = 64 * 1024,
        sync: bool = False,
        disconnect_slow: bool = False,
        on_overflow: Callable[[Any], Any] | None = None,
    ) -> None:
        if outbox_limit <= 0 or flush_threshold <= 0:
            raise ValueError("outbox_limit and flush_threshold must be positive")
        self._loop = loop
        self._dirty: list[Peer] = []
        self._overflowed: list[Peer] = []
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._scheduled = False
        self._on_overflow = on_overflow
        self.outbox_limit = outbox_limit
        self.flush_threshold = flush_threshold
        self.sync = sync
        self.disconnect_slow = disconnect_slow
        self.deliveries = 0
        self.dropped = 0
        self.writes = 0
        self.bytes_out = 0
        # Bytes queued since the last flush: what the server caps a loop turn with.
        self.turn_bytes = 0

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            try:
                self._loop.call_soon(self.flush)
            except RuntimeError:  # loop closed: outboxes are dropped with it
                self._scheduled = False

    def _drained(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def broadcast(self, members: dict[Any, Peer], frame: bytes, exclude: object = None) -> int:
        """Queue ``frame`` to every peer in ``members`` (a dict's values) but ``exclude``."""
        if not isinstance(frame, bytes):
            raise TypeError("frame must be bytes")
        sent = 0
        for peer in members.values():
            if peer is exclude:
                continue
            if not isinstance(peer, Peer):
                raise TypeError("room members must be roomer Peer objects")
            sent += peer._enqueue(frame)
        return sent

    def over_limit(self, members: dict[Any, Peer], exclude: object = None) -> Peer | None:
        """The first member (but ``exclude``) whose outbox is past the limit, or None."""
        limit = self.outbox_limit
        for peer in members.values():
            if peer is exclude:
                continue
            if not isinstance(peer, Peer):
                raise TypeError("room members must be roomer Peer objects")
            if len(peer._buf) > limit:
                return peer
        return None

    @property
    def turn_receivers(self) -> int:
        """Receivers given something since the last flush (at least 1)."""
        return len(self._dirty) or 1

    def wait_drain(self) -> asyncio.Future[None]:
        """A future resolved the next time any outbox falls back under the limit."""
        fut: asyncio.Future[None] = self._loop.create_future()
        self._drain_waiters.append(fut)
        return fut

    def flush(self) -> None:
        """Write every outbox that has data (normally called once per loop turn)."""
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        self.turn_bytes = 0
        for peer in dirty:
            peer._dirty = False
            peer._flush()
        if self._overflowed:
            overflowed, self._overflowed = self._overflowed, []
            for peer in overflowed:
                peer._overflowing = False
                if self._on_overflow is not None:
                    self._on_overflow(peer)

    @property
    def stats(self) -> dict[str, int]:
        return {
            "deliveries": self.deliveries,
            "dropped": self.dropped,
            "writes": self.writes,
            "bytes_out": self.bytes_out,
        }


class Peer(WSListener):
    """One receiver's outbox; also the picows listener of its connection."""

    def __init__(self, engine: Fanout) -> None:
        if engine is None:
            raise TypeError("engine must be a Fanout")
        self.engine = engine
        self.transport: Any = None
        self._write: Callable[[bytes], Any] | None = None
        self._buf = bytearray()
        self._paused = False
        self._dirty = False
        self._overflowing = False
        self.dropped = 0
        self.over_since = 0.0
        self.closing = False

    def attach(self, transport: Any) -> None:
        """Bind the outbox to a transport whose ``underlying_transport.write`` takes bytes."""
        self.transport = transport
        self._write = transport.underlying_transport.write
        if self._buf:
            self._flush()

    def _enqueue(self, frame: bytes) -> int:
        if self.closing:
            return 0
        engine = self.engine
        new_size = len(self._buf) + len(frame)
        # An empty outbox takes any one message, so a message larger than the limit
        # is still delivered to a receiver that keeps up.
        if new_size > engine.outbox_limit and self._buf and not engine.sync:
            self.dropped += 1
            engine.dropped += 1
            if engine.disconnect_slow and not self._overflowing:
                self._overflowing = True
                engine._overflowed.append(self)
                engine._schedule()
            return 0
        self._buf += frame
        engine.deliveries += 1
        engine.turn_bytes += len(frame)
        if engine.sync and new_size > engine.outbox_limit and self.over_since == 0:
            self.over_since = monotonic()
        if not self._dirty:
            self._dirty = True
            engine._dirty.append(self)
            engine._schedule()
        if new_size >= engine.flush_threshold and not self._paused:
            self._flush()
        return 1

    def _flush(self) -> None:
        buf = self._buf
        if not buf or self._paused or self.transport is None:
            return
        tr = self.transport
        engine = self.engine
        if not (getattr(tr, "is_disconnected", False) or getattr(tr, "is_close_frame_sent", False)):
            assert self._write is not None
            try:
                self._write(bytes(buf))
            except Exception as exc:
                # A transport closed under us: this receiver takes no more frames, and the
                # error must not stall the other receivers of this broadcast or flush.
                self.closing = True
                _report_write_error(engine._loop, self, exc)
        engine.writes += 1
        engine.bytes_out += len(buf)
        # A fresh bytearray rather than clear(): clear() keeps a burst's capacity.
        self._buf = bytearray()
        if self.over_since != 0:
            self.over_since = 0.0
            engine._drained()

    def send_frame(self, frame: bytes) -> bool:
        """Queue one pre-framed message to this receiver. False if it was dropped."""
        if not isinstance(frame, bytes):
            raise TypeError("frame must be bytes")
        return self._enqueue(frame) == 1

    def flush(self) -> None:
        """Write what is queued now, without waiting for the end of the turn."""
        self._flush()

    def close_outbox(self) -> None:
        """Hand what is queued to the transport, even while its writing is paused, and
        refuse anything after: the connection is closing."""
        self._paused = False
        self._flush()
        self.closing = True
        self.over_since = 0.0
        self.engine._drained()

    @property
    def pending(self) -> int:
        """Bytes queued in roomer's outbox, not yet handed to the transport."""
        return len(self._buf)

    @property
    def writing_paused(self) -> bool:
        return self._paused

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._buf:
            self._flush()
