"""Pure-Python fan-out engine: the fallback and test oracle of roomer._fanout.

Same API, the same argument contract (``members`` exactly a dict of Peers of this twin,
frames exactly bytes; anything else is the same TypeError) and the same semantics:
corked per-connection outboxes written once per loop turn, data frames dropped past the
limit in async mode, control frames never dropped, and every receiver cut off past the
hard limit. It cannot reach picows' read buffer, so it never trims one.
"""

from __future__ import annotations

import asyncio
import math
import operator
import sys
from collections import deque
from collections.abc import Callable
from time import monotonic, sleep
from typing import Any

from picows import WSListener

from . import _codec_py

__all__ = ["BUILT_FOR_PICOWS", "Fanout", "InboundCore", "Peer", "Relay"]

#: The compiled twin names the picows version it was built against; this one uses none.
BUILT_FOR_PICOWS: str | None = None
# A longer write delay is a misconfiguration (seconds typed as milliseconds), not a choice.
MAX_WRITE_DELAY = 1.0
# A batch frame (docs/protocol.md §13) holds at most this many messages and bytes of entries.
BATCH_MAX = _codec_py.BATCH_MAX
BATCH_BYTES = 64 * 1024


def _frame_at(buf: bytes | bytearray, pos: int) -> tuple[int, int]:
    """(header size, payload size) of the whole frame made here at ``pos``."""
    size = buf[pos + 1] & 0x7F
    if size < 126:
        return 2, size
    if size == 126:
        return 4, int.from_bytes(buf[pos + 2:pos + 4], "big")
    return 10, int.from_bytes(buf[pos + 2:pos + 10], "big")


def batched(buf: bytes | bytearray) -> tuple[bytes, int]:
    """The whole frames in ``buf`` with each run of two or more data frames written as
    batch frames (docs/protocol.md §13), and how many batches that made (0: ``buf`` as
    it was). Control frames stay where they were, between batches."""
    out = bytearray()
    batches = 0
    pos, end = 0, len(buf)
    while pos < end:
        head, size = _frame_at(buf, pos)
        if buf[pos] & 0x08:  # ping, pong, close
            out += buf[pos:pos + head + size]
            pos += head + size
            continue
        # The run of data frames from here that one batch takes.
        bodies: list[bytes | bytearray] = []
        total = 0
        while pos < end and len(bodies) < BATCH_MAX:
            head, size = _frame_at(buf, pos)
            if buf[pos] & 0x08 or (bodies and total + 4 + size > BATCH_BYTES):
                break
            bodies.append(buf[pos + head:pos + head + size])
            total += 4 + size
            pos += head + size
            if total > BATCH_BYTES:
                break  # larger than a batch takes: it goes alone
        if len(bodies) == 1:
            out += _codec_py.frame_header(len(bodies[0])) + bodies[0]
        else:
            out += _codec_py.frame_header(1 + total) + b"\x04"
            for body in bodies:
                out += len(body).to_bytes(4, "big") + body
            batches += 1
    return (bytes(out) if batches else bytes(buf)), batches


def _exact(value: object, kind: type, name: str) -> None:
    # The message Cython gives for a typed argument, so both twins fail alike.
    if type(value) is not kind:
        raise TypeError(f"Argument '{name}' has incorrect type "
                        f"(expected {kind.__name__}, got {type(value).__name__})")


def _ssize(value: object) -> int:
    # What Cython does converting to Py_ssize_t, so both twins take and refuse alike.
    value = operator.index(value)  # type: ignore[arg-type]
    if not -sys.maxsize - 1 <= value <= sys.maxsize:
        raise OverflowError("Python int too large to convert to C ssize_t")
    return value


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
        write_delay: float = 0.0,
        replay_limit: int = 256 * 1024,
    ) -> None:
        outbox_limit = _ssize(outbox_limit)
        flush_threshold = _ssize(flush_threshold)
        replay_limit = _ssize(replay_limit)
        write_delay = float(write_delay)
        if outbox_limit <= 0 or flush_threshold <= 0 or replay_limit <= 0:
            raise ValueError("outbox_limit, flush_threshold and replay_limit must be positive")
        if not 0.0 <= write_delay <= MAX_WRITE_DELAY:
            raise ValueError(f"write_delay must be between 0 and {MAX_WRITE_DELAY} seconds")
        if outbox_limit > sys.maxsize // 2:
            raise ValueError("outbox_limit must be at most sys.maxsize // 2 "
                             "(twice it is the hard limit)")
        self._loop = loop
        self._dirty: list[Peer] = []
        self._overflowed: list[Peer] = []
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._grown: list[Peer] = []
        self._scheduled = False
        self._turn_scheduled = False
        self._on_overflow = on_overflow
        self.write_delay = write_delay
        self.replay_limit = replay_limit
        self.outbox_limit = outbox_limit
        self.hard_limit = 2 * outbox_limit
        self.flush_threshold = flush_threshold
        self.sync = bool(sync)
        self.disconnect_slow = bool(disconnect_slow)
        self.deliveries = 0
        self.dropped = 0
        self.writes = 0
        self.bytes_out = 0
        self.batches = 0
        self.read_buffer_trims = 0
        # Bytes queued in this loop turn, and to how many receivers: what the server caps
        # a turn with.
        self.turn_bytes = 0
        self._turn_receivers = 0
        self._turn = 1  # a new Peer has seen turn 0
        self.relay: Relay | None = None

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            try:
                if self.write_delay > 0:
                    self._loop.call_later(self.write_delay, self.flush)
                else:
                    self._loop.call_soon(self.flush)
            except RuntimeError:  # loop closed: outboxes are dropped with it
                self._scheduled = False

    def _schedule_turn_end(self) -> None:
        # Only with a write delay: then a flush spans many turns, and the turn's work
        # (what the server caps a sender with) must still be counted per turn.
        if not self._turn_scheduled:
            self._turn_scheduled = True
            try:
                self._loop.call_soon(self._end_turn)
            except RuntimeError:
                self._turn_scheduled = False

    def _end_turn(self) -> None:
        self._turn_scheduled = False
        self._turn += 1
        self._turn_receivers = 0
        self.turn_bytes = 0

    def _drained(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _broadcast(self, members: dict[Any, Peer], frame_v1: bytes, frame_v2: bytes,
                   exclude: object, control: bool) -> int:
        # Each peer takes its protocol version's frame (the same one when there is one).
        sent = 0
        for peer in members.values():
            if peer is exclude:
                continue
            if not isinstance(peer, Peer):
                raise TypeError("room members must be roomer Peer objects")
            sent += peer._enqueue(frame_v2 if peer.v2 else frame_v1, control)
        return sent

    def broadcast(self, members: dict[Any, Peer], frame: bytes, exclude: object = None) -> int:
        """Queue data ``frame`` to every peer in ``members`` (a dict's values) but
        ``exclude``. Returns how many receivers took it (dropped ones are not counted)."""
        _exact(members, dict, "members")
        _exact(frame, bytes, "frame")
        return self._broadcast(members, frame, frame, exclude, False)

    def broadcast_mixed(self, members: dict[Any, Peer], frame_v1: bytes, frame_v2: bytes,
                        exclude: object = None, control: bool = False) -> int:
        """One message framed once per protocol version: each peer gets ``frame_v2`` if
        its ``v2`` flag is set, else ``frame_v1`` (a control message with ``control``)."""
        _exact(members, dict, "members")
        _exact(frame_v1, bytes, "frame_v1")
        _exact(frame_v2, bytes, "frame_v2")
        return self._broadcast(members, frame_v1, frame_v2, exclude, bool(control))

    def broadcast_control(self, members: dict[Any, Peer], frame: bytes,
                          exclude: object = None) -> int:
        """Like ``broadcast`` for a control frame (presence): never dropped below the
        hard limit."""
        _exact(members, dict, "members")
        _exact(frame, bytes, "frame")
        return self._broadcast(members, frame, frame, exclude, True)

    def over_limit(self, members: dict[Any, Peer], exclude: object = None) -> Peer | None:
        """The first member (but ``exclude``) whose outbox is past the limit, or None."""
        _exact(members, dict, "members")
        limit = self.outbox_limit
        for peer in members.values():
            if peer is exclude:
                continue
            if not isinstance(peer, Peer):
                raise TypeError("room members must be roomer Peer objects")
            if len(peer._buf) > limit:
                return peer
        return None

    def take_grown(self) -> list[Peer]:
        """Sync mode: the peers that frames queued since the last call (or the last
        flush) took past the limit, each once; the caller waits for them to drain."""
        grown = self._grown
        if not grown:
            return grown
        self._grown = []
        for peer in grown:
            peer._grown = False
        return grown

    @property
    def turn_receivers(self) -> int:
        """Receivers given something in this loop turn (at least 1)."""
        return self._turn_receivers or 1

    def wait_drain(self) -> asyncio.Future[None]:
        """A future resolved the next time any outbox falls back under the limit."""
        fut: asyncio.Future[None] = self._loop.create_future()
        self._drain_waiters.append(fut)
        return fut

    def flush(self) -> None:
        """Write every outbox that has data (called once per loop turn, or once per
        ``write_delay`` when there is one)."""
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        if self.write_delay == 0:
            self._end_turn()
        for peer in dirty:
            peer._dirty = False
            peer._flush()
        if self._grown:
            for peer in self._grown:
                peer._grown = False
            self._grown = []
        if self._overflowed:
            overflowed, self._overflowed = self._overflowed, []
            for peer in overflowed:
                if self._on_overflow is not None:
                    self._on_overflow(peer)

    def flush_peers(self, members: dict[Any, Peer]) -> None:
        """Write the outboxes of ``members`` (a dict's values) now, without waiting for
        the flush: a room's frames go out with its tick, not a write delay later."""
        _exact(members, dict, "members")
        for peer in members.values():
            if isinstance(peer, Peer):
                peer._flush()

    @property
    def stats(self) -> dict[str, int]:
        return {
            "deliveries": self.deliveries,
            "dropped": self.dropped,
            "writes": self.writes,
            "bytes_out": self.bytes_out,
            "batches_out": self.batches,
            "read_buffer_trims": self.read_buffer_trims,
        }


class Peer(WSListener):
    """One receiver's outbox; also the picows listener of its connection."""

    def __init__(self, engine: Fanout) -> None:
        _exact(engine, Fanout, "engine")
        self.engine = engine
        self.v2 = False  # which frame of broadcast_mixed it takes
        # Its runs of data frames are written as batch frames (docs/protocol.md §13).
        self.batch = False
        # What was handed to the transport and not yet acknowledged (a resumable
        # session's; None: nothing is kept).
        self.replay: bytearray | None = None
        self.transport: Any = None
        self._write: Callable[[bytes], Any] | None = None
        self._buf = bytearray()
        self._paused = False
        self._dirty = False
        self._grown = False
        self._turn_seen = 0
        self.dropped = 0
        self.over_since = 0.0
        self.closing = False
        self.overflowed = False
        self.inbound: InboundCore | None = None

    def __reduce__(self) -> Any:
        # An outbox is a live connection's (and the compiled twin's holds a C buffer).
        raise TypeError(f"cannot pickle or copy {type(self).__name__!r} object")

    def attach(self, transport: Any) -> None:
        """Bind the outbox to a transport whose ``underlying_transport.write`` takes bytes."""
        self.transport = transport
        self._write = transport.underlying_transport.write
        if self._buf:
            self._flush()

    def _overflow(self) -> None:
        if not self.overflowed:
            self.overflowed = True
            self.engine._overflowed.append(self)
            self.engine._schedule()

    def _drop(self, size: int) -> None:
        # A dropped frame still costs its sender's turn: a flood into a room whose
        # receivers are all full must be held like any other.
        engine = self.engine
        self.dropped += 1
        engine.dropped += 1
        engine.turn_bytes += size
        if engine.write_delay > 0 and not engine._turn_scheduled:
            engine._schedule_turn_end()

    def _enqueue(self, frame: bytes, control: bool) -> int:
        if self.closing:
            return 0
        engine = self.engine
        if self.overflowed:  # being cut off: what it misses counts as dropped
            self._drop(len(frame))
            return 0
        size = len(self._buf)
        new_size = size + len(frame)
        # An empty outbox takes any one frame, so a frame larger than the limit is
        # still delivered to a receiver that keeps up.
        if size and new_size > engine.outbox_limit:
            if new_size > engine.hard_limit:
                self._drop(len(frame))
                self._overflow()
                return 0
            if not engine.sync and not control:
                self._drop(len(frame))
                if engine.disconnect_slow:
                    self._overflow()
                return 0
        self._buf += frame
        engine.deliveries += 1
        engine.turn_bytes += len(frame)
        if self._turn_seen != engine._turn:
            self._turn_seen = engine._turn
            engine._turn_receivers += 1
            if engine.write_delay > 0 and not engine._turn_scheduled:
                engine._schedule_turn_end()
        if engine.sync and new_size > engine.outbox_limit:
            if self.over_since == 0:
                self.over_since = monotonic()
            if not self._grown:
                self._grown = True
                engine._grown.append(self)
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
        replay = self.replay
        if replay is not None:
            # Kept until acknowledged: a dropped socket loses what the kernels held.
            replay += buf
            if len(replay) > engine.replay_limit:
                self.replay_full()
        data = bytes(buf)
        if self.batch:
            # Only the write is batched: the replay above keeps one frame per message,
            # which is what a session's acknowledgements count.
            data, batches = batched(data)
            engine.batches += batches
        if not (getattr(tr, "is_disconnected", False) or getattr(tr, "is_close_frame_sent", False)):
            assert self._write is not None
            try:
                self._write(data)
            except Exception as exc:
                # A transport closed under us: this receiver takes no more frames, and the
                # error must not stall the other receivers of this broadcast or flush.
                self.closing = True
                _report_write_error(engine._loop, self, exc)
        engine.writes += 1
        engine.bytes_out += len(data)
        # A fresh bytearray rather than clear(): clear() keeps a burst's capacity.
        self._buf = bytearray()
        if self.over_since != 0:
            self.over_since = 0.0
            engine._drained()

    def replay_full(self) -> None:
        """``replay`` grew past the engine's ``replay_limit``: the owner forgets its
        oldest frames (Peer itself keeps them: it cannot tell where a frame ends)."""

    def replay_count(self, wanted: int, upto: int = -1) -> tuple[int, int]:
        """Walk the whole frames at the start of ``replay`` until ``wanted`` messages
        (data frames: ping, pong and close are not messages) are passed, or, with
        ``upto`` >= 0, until at least ``upto`` bytes are: (bytes passed, messages passed)."""
        buf = self.replay
        if buf is None:
            return 0, 0
        pos, seen, end = 0, 0, len(buf)
        while pos + 2 <= end and (seen < wanted if upto < 0 else pos < upto):
            size, head = buf[pos + 1] & 0x7F, 2
            if size >= 126:
                head = 4 if size == 126 else 10
                if pos + head > end:
                    break
                size = int.from_bytes(buf[pos + 2:pos + head])
            if size > end - pos - head:
                break
            if not buf[pos] & 0x08:
                seen += 1
            pos += head + size
        return pos, seen

    def detach(self) -> None:
        """The socket is gone but the receiver is kept (a held session): what is sent
        to it waits in the outbox, within the usual limits, until `attach`."""
        self.transport = None
        self._write = None
        self._paused = False

    def prepend(self, data: bytes) -> None:
        """Put ``data`` (whole frames) before what the outbox holds, unbounded: frames
        that were sent once already and are sent again on a resume."""
        _exact(data, bytes, "data")
        if not data:
            return
        self._buf[:0] = data
        if not self._dirty:
            self._dirty = True
            self.engine._dirty.append(self)
            self.engine._schedule()

    def queued(self) -> bytes:
        """A copy of what the outbox holds (whole frames not written yet): what a held
        session hands over to another node."""
        return bytes(self._buf)

    def send_frame(self, frame: bytes) -> bool:
        """Queue one pre-framed data message to this receiver. False if it was dropped."""
        _exact(frame, bytes, "frame")
        return self._enqueue(frame, False) == 1

    def send_control(self, frame: bytes) -> bool:
        """Queue one pre-framed control message (an ack, an error): never dropped below
        the hard limit. False if the receiver overflowed or is closing."""
        _exact(frame, bytes, "frame")
        return self._enqueue(frame, True) == 1

    def trim_buffers(self) -> None:
        """The connection is quiet. This twin's outbox holds nothing once written (a
        fresh bytearray per flush), and picows' read buffer is out of its reach."""

    def read_done(self) -> None:
        """The last frame of a read was handled (the compiled twin trims picows' read
        buffer then; this one cannot reach it)."""

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        # A plain relay goes through the engine's relay path; every other frame, and
        # every frame while anything holds the connection, goes to on_frame.
        relay = self.engine.relay
        if relay is None or not relay.take(self, transport, frame):
            self.on_frame(transport, frame)

    def on_frame(self, transport: Any, frame: Any) -> None:
        """A frame the relay path did not take (the server's connection handles it)."""

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

    def discard_outbox(self) -> None:
        """Drop what is queued without writing it and refuse anything after: for a
        receiver that is being cut off because it stopped reading."""
        self._buf = bytearray()
        self.closing = True
        self.over_since = 0.0
        self.engine._drained()

    @property
    def pending(self) -> int:
        """Bytes queued in roomer's outbox, not yet handed to the transport."""
        return len(self._buf)

    @property
    def outbox_capacity(self) -> int:
        """Bytes allocated for the outbox (0 when it holds no buffer)."""
        return self._buf.__alloc__()

    @property
    def read_buffer_capacity(self) -> int:
        """Bytes of picows' read buffer for this connection (0 when unknown)."""
        return 0

    @property
    def writing_paused(self) -> bool:
        return self._paused

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._buf:
            self._flush()


# --------------------------------------------------------------------------- inbound


class InboundCore:
    """The part of a connection's inbound state (roomer.inbound.Inbound, which
    subclasses it) that the relay path reads and changes: its lifecycle state, whether
    anything holds its messages, its rate-limit buckets, whether it was heard from and
    its work in the current loop turn; with the decisions made on them."""

    __slots__ = ("_backlog", "_bytes", "_fragments", "_heard", "_limited", "_limited_since",
                 "_skipping", "_tokens", "_tokens_at", "_turn", "_turn_work", "busy", "held",
                 "state")

    def __init__(self) -> None:
        self.state = 0
        self.busy = self.held = self._skipping = self._heard = False
        self._backlog: deque[bytes] | None = None
        self._fragments: bytearray | None = None
        self._tokens = self._bytes = self._tokens_at = self._limited_since = 0.0
        self._limited = 0
        self._turn = 0
        self._turn_work = 0

    def admit(self, now: float, rate: tuple[float, float] | None, stall: float = 0.0,
              size: int = 0, byte_rate: tuple[float, float] | None = None) -> int:
        """Draw one frame of ``size`` payload bytes from the rate limits (frames, seconds)
        and (bytes, seconds), each None for none: an Admission value (0 take, 1 drop,
        2 refuse, 3 abuse). roomer.inbound.Inbound.admit says how."""
        elapsed = now - self._tokens_at
        self._tokens_at = now
        frames_ok = bytes_ok = True
        if rate is not None:
            count, per = rate
            self._tokens = min(count * (1.0 + stall / per),
                               self._tokens + elapsed * count / per)
            frames_ok = self._tokens >= 1.0
        if byte_rate is not None:
            volume, span = byte_rate
            cap = volume * (1.0 + stall / span)
            self._bytes = min(cap, self._bytes + elapsed * volume / span)
            bytes_ok = self._bytes >= min(size, volume)
        if frames_ok and bytes_ok:
            if rate is not None:
                self._tokens -= 1.0
            if byte_rate is not None:
                self._bytes -= size
            return 0
        if rate is not None:
            count, per = rate
        else:
            assert byte_rate is not None
            count, per = math.inf, byte_rate[1]
        if now - self._limited_since >= per:
            self._limited_since = now
            self._limited = 0
        self._limited += 1
        if self._limited == 1:
            return 2
        if self._limited >= count:
            return 3
        return 1

    def heard(self) -> None:
        """A frame came in."""
        self._heard = True

    def work(self, turn: int) -> int:
        """Count one message handled in loop turn ``turn``; how many it handled then."""
        if self._turn != turn:
            self._turn = turn
            self._turn_work = 0
        self._turn_work += 1
        return self._turn_work

    def handled(self) -> None:
        """A message was just handled; if it left the connection busy or held, the rest
        of this read waits like the reads after it."""
        if (self.busy or self.held) and self._backlog is None:
            self._backlog = deque()


# --------------------------------------------------------------------------- relay

_TEXT, _BINARY = 1, 2
_TAKEN, _REFUSED = 1, 2  # what Relay._take_one did with a message it took


class Relay:
    """The path of a plain relay or direct message (roomer._fanout.Relay says what it
    takes and why); the same decisions, in Python."""

    def __init__(self, router: Any, *,
                 rate: tuple[float, float] | None, byte_rate: tuple[float, float] | None,
                 turn_messages: int, turn_budget: int, allow_root: bool, root: str,
                 max_room: int, max_event: int, slow: frozenset[str],
                 stall_after: float, poll_interval: float = 0.0) -> None:
        _exact(slow, frozenset, "slow")
        self._router = router
        self.on_taken: Callable[[Any], Any] | None = None
        self._rate = rate
        self._byte_rate = byte_rate
        self._turn_messages = turn_messages
        self._turn_budget = turn_budget
        self._allow_root = allow_root
        self._root = root
        self._max_room = max_room
        self._max_event = max_event
        self._slow = slow
        self._stall_after = stall_after
        self._poll_interval = float(poll_interval)
        self._paced_at = 0.0
        self._accepted_turn = -1
        self.sleep: Callable[[float], Any] = sleep
        self.clock: Callable[[], float] = monotonic
        self.beat_at = self.stall = self.stall_until = 0.0
        self.turn = 0
        self.tick_pending = False
        self.taken = 0
        self._engine: Fanout | None = None

    def bind(self, engine: Fanout, call_soon: Callable[[Callable[[], Any]], Any],
             registry: Any, handlers: dict[str, Any], registered: dict[str, Any],
             catch_all: list[Any], games: Any, counters: dict[str, int]) -> None:
        """The server starts: relay through ``engine`` into ``registry`` (see the
        compiled twin)."""
        _exact(engine, Fanout, "engine")
        self._engine = engine
        self._call_soon = call_soon
        self._registry = registry
        self._handlers = handlers
        self._registered = registered
        self._catch_all = catch_all
        self._games = games
        self._counters = counters
        engine.relay = self

    def accepted(self) -> None:
        """A connection was accepted in this turn: no pause after it (see the compiled
        twin)."""
        self._accepted_turn = self.turn

    def _tick(self) -> None:
        accepting = self._accepted_turn == self.turn
        self.tick_pending = False
        self.turn += 1
        if self._poll_interval > 0:
            if accepting:
                self._paced_at = monotonic()
                return
            engine = self._engine
            if engine is not None and engine._scheduled and engine.write_delay == 0:
                engine.flush()  # the turn's writes go out before the sleep, not after
            now = monotonic()
            wait = min(self._paced_at + self._poll_interval - now, self._poll_interval)
            if wait > 0:
                self.sleep(wait)
                now += wait
            self._paced_at = now

    def worked(self, conn: Any) -> None:
        """``conn`` caused one unit of work this turn: held once it used its share."""
        engine = self._engine
        assert engine is not None
        if not self.tick_pending:
            self.tick_pending = True
            self._call_soon(self._tick)
        if (conn.inbound.work(self.turn) >= self._turn_messages
                or engine.turn_bytes >= self._turn_budget * (engine._turn_receivers or 1)):
            self._router._hold(conn)

    def _taken(self, conn: Any) -> None:
        self.taken += 1
        if self.on_taken is not None:
            self.on_taken(conn)

    def take(self, peer: Peer, transport: Any, frame: Any) -> bool:
        """Whether ``frame`` was a plain relay (or a batch that began with one), now done
        (see the compiled twin)."""
        engine = self._engine
        if (peer.inbound is None or engine is None or engine.sync
                or transport is not peer.transport or transport.is_close_frame_sent):
            return False
        if (frame.msg_type not in (_TEXT, _BINARY) or not frame.fin or frame.rsv1
                or frame.rsv2 or frame.rsv3):
            return False
        data = frame.get_payload_as_bytes()
        if peer.batch and data[:1] == b"\x04":
            try:
                bodies = _codec_py.split_batch(data)
            except Exception:  # the router answers what is wrong with it
                return False
            taken = done = 0
            for body in bodies:
                # The first draws the batch's bytes, and its refusal refuses the whole
                # batch, named by it, as the router refuses a frame (it is not counted
                # as a batch then: the router does not read a frame it refuses).
                first = taken == 0
                done = self._take_one(peer, body, data if first else body,
                                      len(data) if first else 0, False)
                if not done:
                    break
                taken += 1
                if done == _REFUSED and first:
                    break
            if not taken:
                return False
            if not (done == _REFUSED and taken == 1):
                self._counters["batches_in"] += 1
                if taken < len(bodies):  # the rest in order, by the router, each drawn there
                    self._router.entries(peer, bodies[taken:])
        elif not self._take_one(peer, data, data, len(data), False):
            return False
        if frame.last_in_buffer:
            peer.read_done()
        return True

    def take_admitted(self, conn: Any, data: bytes) -> bool:
        """Whether ``data``, a message of ``conn``'s that the rate limits took when it
        came and that waited, was a plain relay, now done (see the compiled twin)."""
        _exact(data, bytes, "data")
        engine = self._engine
        if engine is None or engine.relay is not self or engine.sync or not isinstance(
                conn, Peer):
            return False
        return self._take_one(conn, data, data, 0, True) != 0

    def _take_one(self, peer: Peer, data: bytes, named: bytes, draw: int,
                  admitted: bool) -> int:
        # One message: 0 when it is not a plain relay, else _TAKEN (done) or _REFUSED (by
        # the rate limits, answered as ``named`` is). ``draw``: the bytes it draws from
        # the byte limit (a batch's are drawn with its first message). ``admitted``: one
        # that came earlier, drawn then, and waited (its backlog, if any, starts with it).
        inbound = peer.inbound
        engine = self._engine
        assert engine is not None
        # 1: OPEN (roomer.inbound), accepted and not closing.
        if (inbound is None or inbound.state != 1 or inbound.busy or inbound.held
                or inbound._skipping or inbound._fragments is not None
                or (inbound._backlog is not None and not admitted)):
            return 0
        if peer.v2:
            if len(data) < 29 or data[0] != 0 or data[1:9] != bytes(8):
                return 0
            data = data[9:]
        try:
            room, event, dst, payload = _codec_py.decode_client(data)
        except Exception:  # the router answers what is wrong with it
            return 0
        if (not 0 < len(room.encode()) <= self._max_room
                or not 0 < len(event.encode()) <= self._max_event or event in self._slow):
            return 0
        sender = peer.id  # type: ignore[attr-defined]
        if dst:  # a direct message (handlers never see one) to a client connected here
            target = self._registry.conns.get(dst)
            if target is None:
                return 0
        else:
            if event in self._handlers or event in self._registered or self._catch_all:
                return 0
            if not self._allow_root and room == self._root:
                return 0
            if room.find(":") > 0 and self._games is not None and self._games.active:
                return 0
            members = self._registry.rooms.get(room)
            if members is None or members.get(sender) is not peer:
                return 0
        now = stall = 0.0
        limited = (self._rate is not None or self._byte_rate is not None) and not admitted
        if limited:
            now = self.clock()
            if now - self.beat_at > self._stall_after:
                return 0
            if now < self.stall_until:
                stall = self.stall
        inbound._heard = True
        if limited:
            verdict = inbound.admit(now, self._rate, stall, draw, self._byte_rate)
            if verdict != 0:
                self._router._refusal(peer, named, verdict)
                self._taken(peer)
                return _REFUSED
        counters = self._counters
        counters["messages_in"] += 1
        body = _codec_py.encode(room, event, dst, sender, payload)
        out = out_v2 = _codec_py.frame_header(len(body)) + body
        if dst:
            counters["direct"] += 1
            target.send_frame(_codec_py.frame_v2_from_v1_body(0, 0, "", body)
                              if target.v2 else out)
        else:
            counters["relayed"] += 1
            if room in self._registry._v2_members:
                out_v2 = _codec_py.frame_v2_from_v1_body(0, 0, "", body)
            engine.broadcast_mixed(members, out, out_v2, peer)
            if self._registry.cluster is not None:
                self._registry.publish_room(room, out, sender)
        self._taken(peer)
        self.worked(peer)
        inbound.handled()
        return _TAKEN
