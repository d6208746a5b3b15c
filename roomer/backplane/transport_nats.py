"""NATS transport (``nats://host:port``, ``tls://`` for TLS, several servers comma-separated),
on nats-py.

One connection carries subscriptions and publishes (with ``no_echo``: the server does not
send a node its own messages back). A batch is one write of every PUB (and
SUB/UNSUB) of a loop turn followed by a PING; the next batch waits for the PONG, so what one
node sends stays in call order and a burst of 100 messages costs one round trip. A direct
publish is a request: the node holding the client answers ``1`` (delivered) or ``0`` (gone
meanwhile), and when no node subscribes the server answers "no responders" at once, so an
unknown id is known without a timeout. nats-py's own reconnect is off (its wait is fixed and
it would buffer publishes while away): this transport reconnects itself with backoff.

The link's probe is a PING/PONG (nats-py's flush) every ``probe_interval``. The largest
message is the server's max_payload, from the INFO it sends at connect (1 MiB by default,
and a message is a header plus the frame: the cluster sends larger ones in pieces).

nats-py runs each subscription's callback in its own task, so messages on *different*
subjects may be handled in another order than they arrived; order holds per subject. The
cluster protocol relies on nothing more. A subscription holds at most ``max_buffer`` bytes
not yet handled; past that messages are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from types import TracebackType
from typing import Any

from .errors import MissingExtra
from .transport import _CLOSE_WAIT, Transport, _Pub

try:
    from nats.aio.client import Client as NATS
    from nats.errors import MaxPayloadError, NoRespondersError, SlowConsumerError
except ImportError:  # pragma: no cover - exercised by the missing-extra test in a subprocess
    _INSTALLED = False
else:
    _INSTALLED = True

__all__ = ["NatsTransport"]

# The JetStream key-value bucket of claims (Transport.claim), shared by every prefix (keys
# carry the prefix).
_CLAIMS_BUCKET = "roomer_claims"

log = logging.getLogger("roomer.backplane")


def _closing_client(tb: TracebackType | None) -> Any:
    """The nats-py client whose close() the traceback passes through, if any."""
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "_close":
            client = frame.f_locals.get("self")
            if isinstance(client, NATS):
                return client
        tb = tb.tb_next
    return None


class _LostInClose(logging.Filter):
    """nats-py's close, when the broker went while data waited to be written, writes that
    data to the socket uvloop has already closed: the RuntimeError stops the close before
    its closed callback, and nats-py's read loop logs it at ERROR with a traceback. For a
    client of ours that record is the only word that the connection is lost (the probe
    would notice seconds later, as a timeout): take it as the loss, and drop the record,
    since the transport logs the loss itself. Anyone else's records pass untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, RuntimeError):
            return True
        client = _closing_client(exc.__traceback__)
        owner = _owners.get(client) if client is not None else None
        if owner is None or owner._nc is not client:
            return True
        owner._failed(ConnectionError(f"connection to NATS lost ({exc})"))
        return False


# Our live clients and the transport each belongs to, for _LostInClose.
_owners: weakref.WeakKeyDictionary[Any, NatsTransport] = weakref.WeakKeyDictionary()
if _INSTALLED:
    logging.getLogger("nats.aio.client").addFilter(_LostInClose())

# Messages one subscription may hold before its handler runs.
_PENDING_MSGS = 65_536


class NatsTransport(Transport):
    def __init__(self, url: str, **options: Any) -> None:
        if not _INSTALLED:
            raise MissingExtra("nats", "nats-py")
        super().__init__(url, **options)
        self._servers = [part.strip() for part in url.split(",") if part.strip()]
        self._nc: Any = None
        self._subs: dict[str, Any] = {}
        self._requests: set[asyncio.Task[None]] = set()
        self._oversize_logged = False
        self._slow_logged = False
        self._kv: Any = None  # the claims bucket, on the current connection

    def state(self) -> dict[str, Any]:
        out = super().state()
        url = self._nc.connected_url if self._nc is not None else None
        out["server"] = f"{url.hostname}:{url.port}" if url is not None else None
        return out

    async def _open(self) -> set[str]:
        nc = NATS()

        async def closed() -> None:
            if self._nc is nc:  # not our own _shutdown
                self._failed(ConnectionError("connection to NATS closed"))

        async def error(exc: Exception) -> None:
            if isinstance(exc, SlowConsumerError):
                self.dropped += 1  # a subscription's buffer (see _subscribe) overflowed
                if not self._slow_logged:
                    self._slow_logged = True
                    log.warning("backplane %s: messages arrive faster than this node "
                                "handles them; dropping them (counted)", self.url)
                return
            log.debug("backplane %s: nats-py reports %r", self.url, exc)

        self._nc = nc
        _owners[nc] = self
        # nats-py annotates these seconds as int; it uses them as floats.
        seconds: Any = self.timeout
        await nc.connect(
            # One pass over the servers (nats-py counts attempts from 0): our loop retries.
            self._servers, allow_reconnect=False, max_reconnect_attempts=1,
            reconnect_time_wait=0, connect_timeout=seconds,
            # Our probe watches the link; nats-py's own pings are a backstop.
            ping_interval=max(1, round(4 * self.probe_timeout)), max_outstanding_pings=2,
            no_echo=True,  # a node drops its own messages anyway: do not send them back
            closed_cb=closed, error_cb=error, name="roomer-backplane")
        self.max_payload = min(self._payload_cap, nc.max_payload)
        self._subs = {}
        for channel in list(self._handlers):
            self._subs[channel] = await self._subscribe(nc, channel)
        await nc.flush(timeout=seconds)
        return set(self._subs)

    def _probe(self) -> asyncio.Future[None] | None:
        nc = self._nc
        if nc is None:
            return None
        assert self._loop is not None
        pong: asyncio.Future[None] = self._loop.create_future()

        async def ping() -> None:
            try:
                # Longer than the probe waits: the prober decides when it is too late.
                await nc.flush(timeout=4 * self.probe_timeout)
            except Exception:
                return
            if not pong.done():
                pong.set_result(None)

        task = self._loop.create_task(ping())
        pong.add_done_callback(lambda _: task.cancel() if not task.done() else None)
        return pong

    async def _subscribe(self, nc: Any, channel: str) -> Any:
        # nats-py lets each subscription hold 128 MiB not yet handled: a node slower than
        # its rooms' traffic would grow that far. Bound it by max_buffer, as what waits to
        # be sent is; past it nats-py drops, and the error callback counts it.
        return await nc.subscribe(channel, cb=self._on_msg,
                                  pending_bytes_limit=self.max_buffer,
                                  pending_msgs_limit=_PENDING_MSGS)

    async def _on_msg(self, msg: Any) -> None:
        delivered = self._dispatch(msg.subject, msg.data)
        if msg.reply:
            self.publish(msg.reply, b"1" if delivered else b"0", control=True)

    async def _write(self, subs: list[tuple[bool, str]], batch: list[_Pub]) -> int:
        nc = self._nc
        refused = 0
        seconds: Any = self.timeout
        add, remove, confirm = self._reconcile(subs, self._subs.__contains__)
        for channel in add:
            self._subs[channel] = await self._subscribe(nc, channel)
        for channel in remove:
            await self._subs.pop(channel).unsubscribe()
        confirm += add
        for channel, data, fut in batch:
            if fut is not None:
                task = asyncio.get_running_loop().create_task(self._request(nc, channel, data, fut))
                self._requests.add(task)
                task.add_done_callback(self._requests.discard)
                continue
            try:
                await nc.publish(channel, data)
            except MaxPayloadError:
                self.dropped += 1
                refused += 1
                if not self._oversize_logged:
                    self._oversize_logged = True
                    log.warning("backplane %s: a %d-byte message exceeds the server's "
                                "max_payload (%d); such messages are dropped", self.url,
                                len(data), nc.max_payload)
        # nats-py writes a flush's PING straight to the socket, ahead of what its flusher
        # task still holds: let the flusher write the batch first, so the PONG confirms it.
        for _ in range(100):
            if not nc.pending_data_size:
                break
            await asyncio.sleep(0)
        await nc.flush(timeout=seconds)
        # The PONG came after the server handled our SUBs: from now on a publish from any
        # connection to this server reaches them.
        for channel in confirm:
            self._confirm(channel)
        return refused

    async def _request(self, nc: Any, channel: str, data: bytes,
                       fut: asyncio.Future[bool]) -> None:
        # None: not known (the connection went, or the server refused the message): the
        # future is cancelled, never "no such client".
        result: bool | None = None
        try:
            reply = await nc.request(channel, data, timeout=self.timeout)
        except NoRespondersError:
            result = False
        except TimeoutError:
            # Someone subscribes (no "no responders") but did not answer in time: the
            # message was handed over; say delivered rather than "no such client".
            result = True
        except Exception:
            pass
        else:
            result = reply.data != b"0"
        finally:
            if not fut.done():
                if result is None:
                    fut.cancel()
                else:
                    fut.set_result(result)

    async def claim(self, key: str, value: str, replace: str | None = None) -> str | None:
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
        try:
            kv = await self._claims()
            if replace is None:
                try:
                    await kv.create(key, value.encode())
                    return None
                except KeyWrongLastSequenceError:
                    pass
            else:
                try:
                    entry = await kv.get(key)
                except KeyNotFoundError:
                    return ""
                if entry.value is not None and entry.value.decode() == replace:
                    try:
                        await kv.update(key, value.encode(), last=entry.revision)
                        return None
                    except KeyWrongLastSequenceError:
                        pass
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                return ""
            return entry.value.decode() if entry.value is not None else ""
        except ConnectionError:
            raise
        except Exception as exc:
            raise ConnectionError(f"backplane {self.url}: claim failed: {exc}") from exc

    async def release(self, key: str, value: str) -> None:
        from nats.js.errors import KeyNotFoundError
        try:
            kv = await self._claims()
            entry = await kv.get(key)
            if entry.value is not None and entry.value.decode() == value:
                await kv.delete(key, last=entry.revision)
        except KeyNotFoundError:
            pass
        except Exception as exc:
            log.warning("backplane %s: releasing %s failed: %s", self.url, key, exc)

    async def _claims(self) -> Any:
        nc = self._nc
        if nc is None or not self.connected:
            raise ConnectionError(f"backplane {self.url}: not connected")
        if self._kv is None or self._kv[0] is not nc:
            js = nc.jetstream(timeout=self.timeout)
            try:
                kv = await js.key_value(_CLAIMS_BUCKET)
            except Exception:
                kv = await js.create_key_value(bucket=_CLAIMS_BUCKET, history=1)
            self._kv = (nc, kv)
        return self._kv[1]

    async def _shutdown(self) -> None:
        nc, self._nc = self._nc, None
        self._subs = {}
        # nats-py's close() leaves a request waiting out its timeout: end them now.
        requests, self._requests = self._requests, set()
        for task in requests:
            task.cancel()
        if requests:
            await asyncio.wait(requests, timeout=self.timeout)
        if nc is not None:
            with contextlib.suppress(Exception):
                # A stalled server would hold nats-py's close (it flushes first).
                await asyncio.wait_for(nc.close(), min(self.timeout, _CLOSE_WAIT))
            # A close nats-py broke off (_LostInClose) left its subscriptions' tasks
            # waiting for messages: end them, or each is collected pending and asyncio
            # logs it as an error. For the others this does nothing.
            for sub in list(getattr(nc, "_subs", {}).values()):
                stop = getattr(sub, "_stop_processing", None)
                if stop is not None:
                    stop()
