"""One connection's inbound side, with no I/O: what the client sent that roomer has not
finished with, and the bounds it is held to.

An `Inbound` holds a connection's lifecycle state, its rate-limit bucket, its
error window, the pieces of a fragmented message, the order of its messages (one at a
time; later ones wait in a backlog while one does async work or the turn budget holds
the connection), how much of the current loop turn it used, and whether it has been
heard from. It is the only thing that changes that state: the router
(roomer/routing.py) owns one per connection and asks it for decisions; the socket side
(roomer/server.py) tells it what it reads. It is told the time and returns what to do,
so it is tested with no socket and no clock (tests/test_inbound.py); docs/design.md
("Bounds") says why each bound exists.
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum

from .fanout import InboundCore

__all__ = ["BACKLOG_HARD", "BACKLOG_HARD_BYTES", "BACKLOG_PAUSE", "BACKLOG_PAUSE_BYTES",
           "CLOSING", "CONNECTING", "GONE", "OPEN", "Admission", "Inbound", "Liveness"]

# A connection's life: on_connect runs, accepted, closing (nothing more of it is
# handled), disconnected (out of every room).
CONNECTING, OPEN, CLOSING, GONE = range(4)

# Messages (or bytes) a connection may queue while it is busy or held; past this its
# reads are paused, so a client cannot grow server memory without bound.
BACKLOG_PAUSE = 64
BACKLOG_PAUSE_BYTES = 1 << 20
# While the server waits for the client's answer to an ask, or once reading has been
# paused too long to tell a dead peer from a busy one, the client is read on (its
# answer, its pong, its close must come through) up to this much more; past it reading
# pauses again whatever the reason.
BACKLOG_HARD = 16 * BACKLOG_PAUSE
BACKLOG_HARD_BYTES = 16 * BACKLOG_PAUSE_BYTES


class Admission(IntEnum):
    """What to do with a frame, by the connection's rate limit."""

    TAKE = 0  # within the limit
    DROP = 1  # over it: dropped, already answered in this window
    REFUSE = 2  # over it, the first of its window: dropped with one rate_limited error
    ABUSE = 3  # over it by as much again in one window: close the connection (1008)


class Liveness(IntEnum):
    """What the ping round should do with a connection."""

    HEARD = 0  # heard from (or not read by roomer itself) this period: nothing
    QUIET = 1  # quiet a whole period: give back the buffers a burst grew
    PING = 2  # quiet for ping_interval: ping it
    DEAD = 3  # pinged and silent for ping_timeout: cut it


_VERDICTS = tuple(Admission)


class Inbound(InboundCore):
    """One connection's inbound state (see the module docstring). ``rate`` is the
    connection's rate limit as (frames, seconds), or None for none; ``byte_rate`` its
    limit in bytes, as (bytes, seconds), or None.

    Its base (roomer.fanout.InboundCore, compiled unless the extensions are off) holds
    what the relay path reads and changes, with `admit`, `heard`, `work` and `handled`."""

    __slots__ = ("_backlog_bytes", "_backlog_held", "_errors", "_errors_since", "_held_at",
                 "_lifted", "_pinged_at", "_quiet_since", "_read_holds")

    def __init__(self, rate: tuple[float, float] | None, now: float,
                 byte_rate: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.state = CONNECTING
        # Async work of one of its messages runs: the next ones wait in the backlog.
        self.busy = False
        # The turn budget holds it: read again once this turn's writes are out.
        self.held = False
        self._backlog: deque[bytes] | None = None
        self._backlog_bytes = 0
        self._backlog_held = False  # its fullness paused reading
        self._held_at = 0.0  # since when
        self._lifted = False  # read on anyway: held too long to tell a dead peer
        self._read_holds = 0
        self._turn = -1
        self._turn_work = 0
        self._fragments: bytearray | None = None
        self._skipping = False  # dropping the rest of a fragmented message
        self._tokens = float(rate[0]) if rate is not None else 0.0
        self._bytes = float(byte_rate[0]) if byte_rate is not None else 0.0
        self._tokens_at = now
        self._limited = 0
        self._limited_since = 0.0
        self._errors = 0
        self._errors_since = 0.0
        self._heard = True
        self._quiet_since = 0.0
        self._pinged_at = 0.0

    # lifecycle ---------------------------------------------------------------------

    def accept(self) -> None:
        self.state = OPEN

    def close(self) -> None:
        """Closing: nothing more of it is handled; what it had queued is dropped."""
        if self.state < CLOSING:
            self.state = CLOSING
        self._drop_backlog()

    def gone(self) -> None:
        self.state = GONE
        self._drop_backlog()

    def _drop_backlog(self) -> None:
        self._backlog = None
        self._backlog_bytes = 0
        self._fragments = None

    @property
    def open(self) -> bool:
        return self.state == OPEN

    # admission -----------------------------------------------------------------------

    def admit(self, now: float, rate: tuple[float, float] | None, stall: float = 0.0,
              size: int = 0, byte_rate: tuple[float, float] | None = None) -> Admission:
        """Draw one frame of ``size`` payload bytes from the rate limits: ``rate``
        (frames, seconds) and ``byte_rate`` (bytes, seconds), each None for none.

        ``stall`` is how long the server itself was not reading lately (a blocked loop,
        a pause of the process): frames that waited in the kernel meanwhile arrive in
        one burst, and the buckets hold that much more for them, so a server's pause is
        never charged to its clients as a burst of theirs. A frame larger than the whole
        byte bucket passes when the bucket is full and leaves it in debt. Refused: one
        REFUSE per window, then DROP, and ABUSE once as many frames again as the frame
        limit were refused in one window (never for the byte limit alone).
        """
        return _VERDICTS[super().admit(now, rate, stall, size, byte_rate)]

    def refund(self, rate: tuple[float, float] | None) -> None:
        """Give one frame back to the bucket (an answer to the server's own ask)."""
        if rate is not None:
            self._tokens = max(self._tokens, min(rate[0], self._tokens + 1.0))

    def count_error(self, now: float, limit: tuple[float, float] | None) -> bool:
        """Count one error reply against ``limit`` (errors, seconds); True: past it."""
        if limit is None:
            return False
        count, per = limit
        if now - self._errors_since >= per:
            self._errors_since = now
            self._errors = 0
        self._errors += 1
        return self._errors > count

    # message assembly ------------------------------------------------------------------

    def dropped(self, fin: bool) -> None:
        """A data frame was refused: a dropped piece of a fragmented message drops all
        of it."""
        self._fragments = None
        self._skipping = not fin

    def start(self, fin: bool, payload: bytes | memoryview) -> bytes | str | None:
        """The first frame of a message (text or binary). The whole message when
        ``fin``; None while it waits for its continuations; a ``str`` when the client
        broke the protocol (the reason to close with 1002)."""
        if self._fragments is not None or self._skipping:
            return "new message inside a fragmented one"
        if fin:
            return payload if isinstance(payload, bytes) else bytes(payload)
        self._fragments = bytearray(payload)
        return None

    def more(self, fin: bool, payload: bytes | memoryview, limit: int) -> bytes | str | None:
        """A continuation frame; as `start`, and ``""`` when the message grew past
        ``limit`` bytes (the reason to close with 1009)."""
        if self._skipping:
            self._skipping = not fin
            return None
        parts = self._fragments
        if parts is None:
            return "continuation without a message"
        parts += payload
        if len(parts) > limit:
            self._fragments = None
            return ""
        if not fin:
            return None
        self._fragments = None
        return bytes(parts)

    # order ---------------------------------------------------------------------------

    def accepting(self) -> bool:
        """Whether a whole message from the client is to be handled or queued: it is
        open, or still connecting with its messages waiting for on_connect."""
        return self.state == OPEN or (self.state == CONNECTING and self._backlog is not None)

    def defer(self) -> None:
        """Work of the connection's own is in progress (on_connect, the joins of its
        acceptance): the messages that come meanwhile wait behind it."""
        if self._backlog is None:
            self._backlog = deque()

    def waiting(self) -> bool:
        """Whether a new message must queue behind others (a backlog exists)."""
        return self._backlog is not None

    def queue(self, data: bytes) -> None:
        """Queue a message behind the others (then ask `pace`)."""
        assert self._backlog is not None
        self._backlog.append(data)
        self._backlog_bytes += len(data)

    @property
    def overfull(self) -> bool:
        """The backlog is past the hard bound: nothing lets reading go on."""
        return len(self._backlog or ()) >= BACKLOG_HARD or (
            self._backlog_bytes >= BACKLOG_HARD_BYTES)

    def pace(self, now: float, asking: bool) -> int:
        """Whether the backlog's fullness should pause reading now: 1 (pause it now), -1
        (resume it now) or 0 (as it is). ``asking``: the server waits for an answer of
        this client, which must not wait unread behind its other messages."""
        full = len(self._backlog or ()) >= BACKLOG_PAUSE or (
            self._backlog_bytes >= BACKLOG_PAUSE_BYTES)
        want = self.overfull or (full and not asking and not self._lifted)
        if want == self._backlog_held:
            return 0
        self._backlog_held = want
        if want:
            self._held_at = now
            return 1
        return -1

    def lift(self, now: float, after: float) -> int:
        """Reading has been paused by the backlog for ``after`` seconds: read on (as
        `pace` says), so that a peer that died meanwhile is noticed and one that
        lives can still answer pings."""
        if not self._backlog_held or now - self._held_at < after:
            return 0
        self._lifted = True
        return self.pace(now, False)

    def next(self) -> bytes | None:
        """The next queued message to handle now, or None: none, or it must wait (busy,
        held, not open)."""
        backlog = self._backlog
        if not backlog or self.state != OPEN or self.busy or self.held:
            return None
        data = backlog.popleft()
        self._backlog_bytes -= len(data)
        return data

    def settle(self) -> bool:
        """After draining: drop an empty backlog once nothing holds the connection.
        True when the backlog's pause of reading is to be released."""
        if self._backlog is None or (self._backlog and self.state == OPEN):
            return False
        if self.busy or self.held:
            return False
        self._backlog = None
        self._backlog_bytes = 0
        self._lifted = False
        if self._backlog_held:
            self._backlog_held = False
            return True
        return False

    @property
    def backlog(self) -> int:
        """Messages waiting."""
        return len(self._backlog) if self._backlog is not None else 0

    # read pauses (nested: the backlog, the turn budget and a sync-mode wait) -----------

    def hold_reading(self) -> bool:
        """One more reason not to read; True for the first (pause the socket now)."""
        self._read_holds += 1
        return self._read_holds == 1

    def release_reading(self) -> bool:
        """One reason fewer; True for the last (resume the socket now)."""
        self._read_holds -= 1
        return self._read_holds == 0

    @property
    def reading(self) -> bool:
        return self._read_holds == 0

    # liveness --------------------------------------------------------------------------

    def liveness(self, now: float, interval: float, timeout: float) -> Liveness:
        """The ping round's verdict at ``now``; it pinged when it was told PING."""
        if self._heard or self._read_holds:
            # A connection roomer itself is not reading cannot be heard: that is not
            # silence (and a backlog's pause is lifted after interval + timeout, so the
            # silence of a dead peer does come to be heard).
            self._heard = False
            self._quiet_since = now
            self._pinged_at = 0.0
            return Liveness.HEARD
        if self._pinged_at:
            return Liveness.DEAD if now - self._pinged_at >= timeout else Liveness.QUIET
        if now - self._quiet_since >= interval:
            self._pinged_at = now
            return Liveness.PING
        return Liveness.QUIET
