"""Broker pub/sub of opaque bytes on named channels: the interface every backplane
transport offers, the machinery they share, and :func:`create` (a transport from a URL).

What a transport promises:

- ``publish`` is a plain call that never blocks: what one event-loop turn publishes is
  written as one batch (one Redis pipeline, one NATS write + PING) when the loop gets to
  it, and the next batch is not written before the broker has confirmed the previous one,
  so everything goes out on one connection in call order, and a burst of 100 messages is
  one round trip (``round_trips`` counts them).
- While the broker is unreachable, publishes are dropped and counted (``dropped``, and
  ``dropped_down``), never queued; connected, at most ``max_buffer`` bytes wait for the
  broker (control messages excepted: they are small and few), past which frames are
  dropped and counted too. One sender (``sender=``, a client id) may hold at most
  ``sender_share`` of that buffer (one frame whatever its size when it holds nothing):
  past it, its frames are dropped (``dropped_share``), not everyone's.
- The link is probed: a round trip (Redis PING on the subscribed connection, NATS
  PING/PONG) every ``probe_interval`` (0.5 s); one unanswered for ``probe_interval`` makes
  the link ``degraded``, one unanswered for ``probe_timeout`` (1.5 s) makes it ``down``, as
  a broken connection does: a stalled broker (SIGSTOP, a frozen VM) is noticed within
  2 s, and what waits for it is dropped and counted rather than delivered late. The
  probe's clock does not count this loop's own stalls.
- An outage is logged once when it starts and once when it ends, and counted
  (``outages``, ``down_seconds``). The transport reconnects by itself, at least every
  ``reconnect_max`` (1 s) with jitter, subscribes again to every channel it had, and then
  calls ``on_state(True)`` so the layer above can announce itself again.
- ``max_payload`` is the largest message the broker takes (NATS: the server's
  max_payload from its INFO, 1 MiB by default; Redis: its proto-max-bulk-len, 512 MiB by
  default); a publish may be a list of pieces of one message, taken or dropped together.
- ``seq`` numbers what was queued for the broker so far (publishes, subscription changes)
  and ``confirmed`` is the highest number the broker has acknowledged: a publish numbered
  above ``confirmed`` when the connection drops may have been lost. ``flush()`` waits for
  ``confirmed`` to reach ``seq``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

__all__ = ["DEGRADED", "DOWN", "SCHEMES", "UP", "Handler", "Payload", "Transport",
           "backoff_delay", "create", "redact"]

#: The URL schemes :func:`create` knows.
SCHEMES = ("redis", "rediss", "nats", "tls", "memory")

log = logging.getLogger("roomer.backplane")

#: Called with the payload of each message on a subscribed channel. What it returns says
#: whether a direct message found its receiver (used for NATS request replies).
Handler = Callable[[bytes], object]

#: What ``publish`` takes: one message, or the pieces of one (taken or dropped together).
Payload = bytes | list[bytes]

#: ``state()["link"]``: the broker answers; a probe is late; unreachable or stalled.
UP, DEGRADED, DOWN = "up", "degraded", "down"

# How often the probe's wait looks at its clock; a longer gap is this loop's own stall.
_PROBE_STEP = 0.1
_STALL = 0.35
# Seconds a broken connection may take to close before reconnecting starts anyway.
_CLOSE_WAIT = 1.0

# A publish waiting for its batch: channel, payload, and the future of a direct publish.
_Pub = tuple[str, bytes, "asyncio.Future[bool] | None"]


def backoff_delay(attempt: int, low: float, high: float) -> float:
    """Capped exponential backoff with jitter: half the step fixed, half random, so a
    restarted broker is not hit by every node at the same instant."""
    step = min(high, low * (2 ** min(attempt, 30)))
    return step / 2 + random.uniform(0, step / 2)


def redact(url: str) -> str:
    """The URL without credentials (user, password, token) or query, for logs and /healthz."""
    out = []
    for part in url.split(","):
        split = urlsplit(part.strip())
        host = split.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{split.port}" if split.port else ""
        out.append(f"{split.scheme}://{host}{port}{split.path}")
    return ",".join(out)


class Transport:
    """Base of the transports. Subclasses implement ``_open``, ``_write`` and ``_shutdown``;
    everything else (batching, counters, the outage state machine) lives here. All methods
    run on the event loop's thread."""

    #: Batches go out from a writer task (network transports) rather than from ``_kick``.
    uses_writer = True

    def __init__(self, url: str, *, max_buffer: int = 16 << 20, timeout: float = 5.0,
                 reconnect_min: float = 0.05, reconnect_max: float = 1.0,
                 probe_interval: float = 0.5, probe_timeout: float = 1.5,
                 sender_share: float = 0.125, max_payload: int | None = None) -> None:
        if max_buffer < 1 or timeout <= 0:
            raise ValueError("max_buffer and timeout must be positive")
        if not 0 < reconnect_min <= reconnect_max:
            raise ValueError("need 0 < reconnect_min <= reconnect_max")
        if not 0 < probe_interval < probe_timeout:
            raise ValueError("need 0 < probe_interval < probe_timeout")
        if not 0 < sender_share <= 1:
            raise ValueError("sender_share is a fraction of max_buffer: 0 < share <= 1")
        if max_payload is not None and max_payload < 256:
            raise ValueError("max_payload: at least 256 bytes")
        self.raw_url = url
        self.url = redact(url)
        self.max_buffer = max_buffer
        self.timeout = timeout
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.sender_share = sender_share
        self._share = max(1, int(max_buffer * sender_share))
        # The broker's limit, set when connected (a subclass knows it); the option caps it.
        self._payload_cap = max_payload if max_payload is not None else sys.maxsize
        self.max_payload = self._payload_cap
        self.connected = False
        self.published = 0
        self.received = 0
        # Bytes the broker confirmed taking from us, and bytes it delivered to us.
        self.published_bytes = 0
        self.received_bytes = 0
        self.dropped = 0
        self.dropped_down = 0   # of which while the link was down
        self.dropped_share = 0  # of which past their sender's share of the buffer
        self.outages = 0
        self.last_outage = 0.0  # seconds the last outage lasted
        self.reconnects = 0
        self.round_trips = 0
        self.seq = 0
        self.confirmed = 0
        # Loop time of the broker's last answer (a batch confirmed, a probe answered): what
        # the layer above has heard up to then is all there was to hear.
        self.answered_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_state: Callable[[bool], None] | None = None
        self._handlers: dict[str, Handler] = {}
        self._sub_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._sub_ops: list[tuple[bool, str]] = []
        self._pending: list[_Pub] = []
        self._pending_bytes = 0
        self._inflight: list[_Pub] = []
        # The batch being written still waits for the broker: it counts against max_buffer.
        self._inflight_bytes = 0
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._scheduled = False
        self._wake: asyncio.Event | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._closing = False
        self._down_at = 0.0
        self._down_seconds = 0.0  # of past outages; the current one is added in state()
        self._dropped_at_down = 0
        self._full_logged = False
        self._share_logged = False
        # Bytes queued or in flight per sender; those of the batch being filled and of
        # the batch in flight, released when the broker confirms it.
        self._held: dict[str, int] = {}
        self._pending_senders: dict[str, int] = {}
        self._inflight_senders: dict[str, int] = {}
        self._prober_task: asyncio.Task[None] | None = None
        self._probe_since: float | None = None  # loop time of the probe being waited for

    # -- the interface ------------------------------------------------------------------

    async def connect(self, on_state: Callable[[bool], None]) -> None:
        """Connect to the broker; ``ConnectionError`` if it cannot be reached now.
        ``on_state(connected)`` is called when an outage starts and when it ends."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._on_state = on_state
        try:
            done = await self._open()
        except Exception as exc:
            await self._shutdown()
            raise ConnectionError(f"backplane {self.url}: cannot reach the broker: {exc}") from exc
        self._went_up(done)

    def subscribe(self, channel: str, handler: Handler) -> asyncio.Future[None]:
        """Receive ``channel``'s messages in ``handler`` from now on. The future resolves once
        the broker has confirmed the subscription on the current connection (a publish made
        after that, from any node, reaches it); it is cancelled if the connection drops first
        (the channel stays subscribed and is restored on reconnect, before ``on_state(True)``)
        and if ``unsubscribe(channel)`` comes first (nothing was subscribed)."""
        assert self._loop is not None, "connect() first"
        fut: asyncio.Future[None] = self._loop.create_future()
        self._handlers[channel] = handler
        if not self.connected:
            fut.cancel()
            return fut
        self._sub_waiters.setdefault(channel, []).append(fut)
        self._sub_ops.append((True, channel))
        self.seq += 1
        if not self._scheduled:
            self._schedule()
        return fut

    def unsubscribe(self, channel: str) -> None:
        if self._handlers.pop(channel, None) is None:
            return
        if self.connected:
            self._sub_ops.append((False, channel))
            self.seq += 1
            if not self._scheduled:
                self._schedule()

    def publish(self, channel: str, data: Payload, *, control: bool = False,
                sender: str | None = None) -> bool:
        """Queue ``data`` (a message, or a list of pieces of one) for ``channel`` in this
        turn's batch. Returns False if it was dropped and counted instead: the broker is
        away, or, unless ``control``, ``max_buffer`` is full or ``sender`` holds its share
        of it."""
        if isinstance(data, bytes):
            if not self._admit(len(data), control, sender):
                return False
            self._queue(channel, data, None, sender)
        else:
            if not self._admit(sum(map(len, data)), control, sender):
                return False
            for piece in data:
                self._queue(channel, piece, None, sender)
        return True

    def publish_direct(self, channel: str, data: Payload, *,
                       sender: str | None = None) -> asyncio.Future[bool]:
        """Publish to a channel that at most one node subscribes to (a list: pieces of one
        message, the last one carrying the question); the future says whether one did, and
        is cancelled when that cannot be known: dropped (broker away, buffer full, past the
        sender's share) or lost on the way. False means only "no node holds it"."""
        assert self._loop is not None, "connect() first"
        fut: asyncio.Future[bool] = self._loop.create_future()
        pieces = [data] if isinstance(data, bytes) else data
        if not self._admit(sum(map(len, pieces)), False, sender):
            fut.cancel()
            return fut
        for piece in pieces[:-1]:
            self._queue(channel, piece, None, sender)
        self._queue(channel, pieces[-1], fut, sender)
        return fut

    def _queue(self, channel: str, data: bytes, fut: asyncio.Future[bool] | None,
               sender: str | None) -> None:
        size = len(data)
        self.seq += 1
        self._pending.append((channel, data, fut))
        self._pending_bytes += size
        if sender is not None:
            self._held[sender] = self._held.get(sender, 0) + size
            self._pending_senders[sender] = self._pending_senders.get(sender, 0) + size
        if not self._scheduled:
            self._schedule()

    def _admit(self, size: int, control: bool, sender: str | None = None) -> bool:
        """Whether a publish of ``size`` bytes may be queued; counts it dropped if not."""
        if not self.connected:
            self.dropped += 1
            self.dropped_down += 1
            return False
        if control:
            return True
        waiting = self._pending_bytes + self._inflight_bytes
        if waiting + size > self.max_buffer:
            self.dropped += 1
            if not self._full_logged:
                self._full_logged = True
                log.warning("backplane %s: %d bytes wait for the broker; dropping frames "
                            "until it catches up", self.url, waiting)
            return False
        if sender is not None:
            held = self._held.get(sender)
            if held is not None and held + size > self._share:
                self.dropped += 1
                self.dropped_share += 1
                if not self._share_logged:
                    self._share_logged = True
                    log.warning("backplane %s: a sender holds %d bytes of the buffer to the "
                                "broker (its share: %d); its frames past that are dropped "
                                "and counted (logged once)", self.url, held, self._share)
                return False
        return True

    def _release(self, senders: dict[str, int]) -> None:
        """The broker confirmed (or lost) these senders' bytes: they hold them no more."""
        held = self._held
        for sender, size in senders.items():
            left = held[sender] - size
            if left:
                held[sender] = left
            else:
                del held[sender]

    def waiting(self) -> int:
        """How many publishes are queued and not yet written to the broker."""
        return len(self._pending)

    def discard_pending(self) -> None:
        """Drop what is queued and not yet written (counted in ``dropped``; direct
        publishes among it are cancelled). The batch the broker has already been sent
        is not recalled."""
        lost, self._pending = self._pending, []
        self._pending_bytes = 0
        self._release(self._pending_senders)
        self._pending_senders = {}
        self.dropped += len(lost)
        for _, _, fut in lost:
            if fut is not None and not fut.done():
                fut.cancel()

    async def flush(self) -> None:
        """Wait until the broker confirmed everything published so far (or the connection
        dropped, or ``timeout`` passed)."""
        if not self.connected or self.confirmed >= self.seq:
            return
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        self._flush_waiters.append((self.seq, fut))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, self.timeout)

    async def close(self) -> None:
        """Disconnect for good (flush first if what is queued matters)."""
        self._closing = True
        tasks = [self._reconnect_task, self._writer_task, self._prober_task]
        self._reconnect_task = self._writer_task = self._prober_task = None
        if self._wake is not None:
            self._wake.set()  # a writer whose cancellation a library swallowed sees it stop
        try:
            for task in tasks:
                if task is not None and task is not asyncio.current_task():
                    task.cancel()
                    await asyncio.wait([task], timeout=self.timeout)
        finally:
            # Even when our caller is cancelled while a task winds down: the connections
            # must not outlive close().
            self.connected = False
            self._fail_queued()
            await self._shutdown()

    @property
    def link(self) -> str:
        """``up``; ``degraded`` (connected, but a probe has waited past probe_interval);
        ``down`` (unreachable or stalled: publishes are dropped and counted)."""
        if not self.connected:
            return DOWN
        since = self._probe_since
        if since is not None and self._loop is not None and (
                self._loop.time() - since > self.probe_interval):
            return DEGRADED
        return UP

    @property
    def down_seconds(self) -> float:
        """Seconds the link has been down since connect, the current outage included."""
        if self.connected or self._closing or not self.outages:
            return self._down_seconds
        return self._down_seconds + time.monotonic() - self._down_at

    def state(self) -> dict[str, Any]:
        """What /healthz and /metrics show: the broker URL without credentials, the link
        state, the counters, and the bytes waiting for the broker (``buffered``)."""
        return {
            "url": self.url,
            "connected": self.connected,
            "link": self.link,
            "outages": self.outages,
            "down_seconds": round(self.down_seconds, 3),
            "dropped_down": self.dropped_down,
            "dropped_share": self.dropped_share,
            "max_payload": self.max_payload,
            "reconnects": self.reconnects,
            "published": self.published,
            "received": self.received,
            "published_bytes": self.published_bytes,
            "received_bytes": self.received_bytes,
            "dropped": self.dropped,
            "round_trips": self.round_trips,
            "buffered": self._pending_bytes + self._inflight_bytes,
        }

    # -- atomic claims (one owner of a name in the cluster: game room ids) ---------------

    async def claim(self, key: str, value: str, replace: str | None = None) -> str | None:
        """Set ``key`` to ``value`` if it is absent, or, with ``replace``, if it holds
        ``replace``: atomically on the broker, so of two nodes claiming a key at once one
        wins. None when it was set; else what it holds now (``""`` when it vanished
        between the attempt and the read: the caller may try again). ConnectionError when
        the broker cannot answer."""
        raise NotImplementedError

    async def release(self, key: str, value: str) -> None:
        """Delete ``key`` if it holds ``value`` (atomically: never another's claim)."""
        raise NotImplementedError

    # -- what subclasses implement --------------------------------------------------------

    async def _open(self) -> set[str]:
        """Connect and subscribe to every channel in ``self._handlers`` (confirmed); return
        the channels subscribed. Raise if the broker cannot be reached."""
        raise NotImplementedError

    async def _write(self, subs: list[tuple[bool, str]], batch: list[_Pub]) -> int:
        """Apply subscription changes, then write ``batch`` in order as one round trip and
        wait for the broker to confirm it, resolving direct publishes' futures; return how
        many of the batch the broker refused (counted in ``dropped`` by the subclass). Raise
        on a broker failure."""
        raise NotImplementedError

    async def _shutdown(self) -> None:
        """Drop the broker connections; never raises."""
        raise NotImplementedError

    def _probe(self) -> asyncio.Future[None] | None:
        """Start a round trip to the broker; the future resolves when it is answered.
        None: this transport has no broker to probe."""
        return None

    # -- shared machinery -----------------------------------------------------------------

    def _schedule(self) -> None:
        self._scheduled = True
        assert self._loop is not None
        self._loop.call_soon(self._kick)

    def _kick(self) -> None:
        self._scheduled = False
        assert self._wake is not None
        self._wake.set()

    def _dispatch(self, channel: str, data: bytes) -> object:
        self.received += 1
        self.received_bytes += len(data)
        handler = self._handlers.get(channel)
        if handler is None:  # unsubscribed while the message was on its way
            return None
        try:
            return handler(data)
        except Exception:
            log.exception("backplane %s: handler of %s raised", self.url, channel)
            return None

    def _reconcile(self, subs: list[tuple[bool, str]], is_active: Callable[[str], bool],
                   ) -> tuple[list[str], list[str], list[str]]:
        """The channels to subscribe to, to unsubscribe from, and those wanted and already
        subscribed (to confirm), for ``subs`` against what is wanted now: subscribe,
        unsubscribe, subscribe within one turn is one subscription or nothing. A channel
        unsubscribed before the broker saw it has its futures cancelled here."""
        wanted = self._handlers
        add: list[str] = []
        remove: list[str] = []
        kept: list[str] = []
        for channel in dict.fromkeys(channel for _, channel in subs):
            if channel in wanted:
                (kept if is_active(channel) else add).append(channel)
                continue
            for waiter in self._sub_waiters.pop(channel, ()):
                waiter.cancel()
            if is_active(channel):
                remove.append(channel)
        return add, remove, kept

    def _confirm(self, channel: str) -> None:
        """The broker confirmed ``channel``'s subscription."""
        for fut in self._sub_waiters.pop(channel, ()):
            if not fut.done():
                fut.set_result(None)

    def _went_up(self, subscribed: set[str]) -> None:
        self.connected = True
        self.answered_at = asyncio.get_running_loop().time()
        self._full_logged = False
        self._share_logged = False
        # Channels wanted or dropped while the connection was being opened.
        for channel in self._handlers:
            if channel not in subscribed:
                self._sub_ops.append((True, channel))
        for channel in subscribed:
            if channel not in self._handlers:
                self._sub_ops.append((False, channel))
        if self.uses_writer:
            loop = asyncio.get_running_loop()
            self._writer_task = loop.create_task(self._writer())
            self._prober_task = loop.create_task(self._prober())
        if self._sub_ops:
            self._schedule()

    async def _prober(self) -> None:
        """Probe the broker every probe_interval; one unanswered for probe_timeout (not
        counting this loop's own stalls) takes the link down."""
        me = asyncio.current_task()
        loop = asyncio.get_running_loop()
        while self._prober_task is me and self.connected:
            await asyncio.sleep(self.probe_interval)
            if self._prober_task is not me or not self.connected:
                return
            answered = self._probe()
            if answered is None:
                return
            start = last = self._probe_since = loop.time()
            try:
                while not answered.done():
                    await asyncio.wait([answered], timeout=_PROBE_STEP)
                    now = loop.time()
                    if now - last > _STALL:  # our stall: the answer may be waiting, unread
                        start += now - last - _PROBE_STEP
                    last = now
                    if not answered.done() and now - start > self.probe_timeout:
                        if self._prober_task is me:
                            self._prober_task = None
                            self._failed(TimeoutError(
                                f"no answer to a probe in {self.probe_timeout:g} s"))
                        return
            finally:
                self._probe_since = None
                if not answered.done():
                    answered.cancel()
            self.answered_at = loop.time()

    async def _writer(self) -> None:
        assert self._wake is not None
        me = asyncio.current_task()
        # Ends when it is no longer the writer: nats-py swallows a CancelledError that
        # lands inside its publish, so a cancel alone may not stop this loop.
        while self._writer_task is me:
            await self._wake.wait()
            if self._writer_task is not me:
                return
            self._wake.clear()
            subs, self._sub_ops = self._sub_ops, []
            batch, self._pending = self._pending, []
            if not subs and not batch:
                continue
            top = self.seq
            self._inflight_senders, self._pending_senders = self._pending_senders, {}
            self._inflight = batch
            self._inflight_bytes, self._pending_bytes = self._pending_bytes, 0
            try:
                refused = await self._write(subs, batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc)
                return
            size = self._inflight_bytes
            self._inflight = []
            self._inflight_bytes = 0
            self._release(self._inflight_senders)
            self._inflight_senders = {}
            self._batch_done(top, len(batch), refused, size)

    def _batch_done(self, top: int, count: int, refused: int = 0, size: int = 0) -> None:
        """The broker confirmed every publish up to number ``top`` (``count`` in the batch
        of ``size`` bytes, ``refused`` of which it did not take: those are dropped, not
        published)."""
        if count:
            self.published += count - refused
            self.published_bytes += size
            self.round_trips += 1
        self.confirmed = top
        assert self._loop is not None
        self.answered_at = self._loop.time()
        if self._full_logged and not self._pending:
            self._full_logged = False
        if self._flush_waiters:
            waiting = []
            for target, fut in self._flush_waiters:
                if target <= top:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    waiting.append((target, fut))
            self._flush_waiters = waiting

    def _fail_queued(self) -> None:
        """Everything queued or in flight is lost: count it, cancel direct publishes (not
        known whether they arrived)."""
        lost = self._inflight + self._pending
        self.dropped += len(lost)
        self.dropped_down += len(lost)
        for _, _, fut in lost:
            if fut is not None and not fut.done():
                fut.cancel()
        self._inflight = []
        self._inflight_bytes = 0
        self._pending = []
        self._pending_bytes = 0
        self._held = {}
        self._pending_senders = {}
        self._inflight_senders = {}
        self._sub_ops = []
        for futures in self._sub_waiters.values():
            for sub in futures:
                sub.cancel()
        self._sub_waiters = {}
        for _, flushed in self._flush_waiters:
            if not flushed.done():
                flushed.set_result(None)
        self._flush_waiters = []

    def _failed(self, exc: BaseException) -> None:
        """The broker connection broke: log it once, drop what is queued, reconnect."""
        if not self.connected or self._closing:
            return
        self.connected = False
        self.outages += 1
        self._down_at = time.monotonic()
        self._dropped_at_down = self.dropped
        log.warning("backplane %s: lost the broker (%s: %s); local rooms carry on, publishes "
                    "are dropped and counted until it is back", self.url,
                    type(exc).__name__, exc)
        self._fail_queued()
        current = asyncio.current_task()
        for task in (self._writer_task, self._prober_task):
            if task is not None and task is not current:
                task.cancel()
        self._writer_task = self._prober_task = None
        self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())
        self._notify(False)

    async def _reconnect(self) -> None:
        await self._shutdown()
        attempt = 0
        while not self._closing:
            await asyncio.sleep(backoff_delay(attempt, self.reconnect_min, self.reconnect_max))
            attempt += 1
            try:
                done = await self._open()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("backplane %s: reconnect attempt %d failed: %s", self.url, attempt, exc)
                await self._shutdown()
                continue
            if self._closing:  # closed while connecting (a swallowed cancel)
                await self._shutdown()
                return
            self.reconnects += 1
            down = self.last_outage = time.monotonic() - self._down_at
            self._down_seconds += down
            log.warning("backplane %s: broker back after %.1f s; %d publishes were dropped "
                        "meanwhile", self.url, down, self.dropped - self._dropped_at_down)
            self._went_up(done)
            self._notify(True)
            return

    def _notify(self, connected: bool) -> None:
        if self._on_state is None:
            return
        try:
            self._on_state(connected)
        except Exception:
            log.exception("backplane %s: state callback raised", self.url)


def create(url: str, **options: Any) -> Transport:
    """A transport for ``url``: ``redis://host:port/db`` or ``rediss://`` (redis-py),
    ``nats://host:port`` or ``tls://`` (nats-py; several servers comma-separated), or
    ``memory://name`` (in-process, no dependency). Options go to the transport
    (``max_buffer``, ``timeout``, ``reconnect_min``, ``reconnect_max``, ``probe_interval``,
    ``probe_timeout``, ``sender_share``, ``max_payload``).
    A broker whose client library is missing raises :class:`MissingExtra`."""
    if not isinstance(url, str):
        raise TypeError("backplane URL must be a str")
    scheme = url.partition("://")[0].lower()
    if scheme in ("redis", "rediss"):
        from .transport_redis import RedisTransport
        return RedisTransport(url, **options)
    if scheme in ("nats", "tls"):
        from .transport_nats import NatsTransport
        return NatsTransport(url, **options)
    if scheme == "memory":
        from .transport_memory import MemoryTransport
        return MemoryTransport(url, **options)
    raise ValueError(f"backplane URL {redact(url)!r}: use redis://host:port/db, "
                     "rediss://..., nats://host:port or memory://name")
