"""Redis pub/sub transport (``redis://host:port/db``, ``rediss://`` for TLS), on redis-py's
asyncio connections (hiredis parses replies when it is installed).

Two connections: one subscribed (SUBSCRIBE/UNSUBSCRIBE, messages, and the link's probe: a
PING every ``probe_interval``), one that publishes. Each batch of publishes is one
pipeline: every PUBLISH of a loop turn packed into one write, then the replies read back,
and the next batch waits for them, so publishes leave in call order on one connection.
PUBLISH answers how many subscribers got the message, which tells a direct publish whether
any node holds the client. redis-py's own retries are off: this transport reconnects both
connections itself (see :class:`Transport`).

Redis pub/sub ignores the database number (a channel is heard from every db), so clusters
sharing one Redis are told apart by their channel prefix. The largest message is the
server's proto-max-bulk-len (512 MiB unless configured lower; read with CONFIG GET when
the server allows it): far past any frame roomer relays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from .errors import MissingExtra
from .transport import Transport, _Pub

try:
    from redis.asyncio import ConnectionPool
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ResponseError
    from redis.utils import HIREDIS_AVAILABLE
except ImportError:  # pragma: no cover - exercised by the missing-extra test in a subprocess
    _INSTALLED = False
else:
    _INSTALLED = True

__all__ = ["RedisTransport"]

log = logging.getLogger("roomer.backplane")

# Channels per SUBSCRIBE command when subscribing again after a reconnect.
_SUBSCRIBE_CHUNK = 512
# Redis' default proto-max-bulk-len: the largest bulk string (a PUBLISH payload).
_BULK_LIMIT = 512 << 20

# Compare-and-set and compare-and-delete of one key, atomic in Redis (a script runs alone).
_SWAP = ("if redis.call('GET', KEYS[1]) == ARGV[1] then "
         "redis.call('SET', KEYS[1], ARGV[2]) return 1 else return 0 end")
_RELEASE = ("if redis.call('GET', KEYS[1]) == ARGV[1] then "
            "return redis.call('DEL', KEYS[1]) else return 0 end")


class RedisTransport(Transport):
    def __init__(self, url: str, **options: Any) -> None:
        if not _INSTALLED:
            raise MissingExtra("redis", "redis-py (the redis package)")
        super().__init__(url, **options)
        self._pool = ConnectionPool.from_url(
            url,
            socket_connect_timeout=self.timeout,
            socket_timeout=None,  # reads carry their own timeouts below
            socket_keepalive=True,
            health_check_interval=0,
            retry=Retry(NoBackoff(), 0),
            protocol=2,
            client_name="roomer-backplane",
        )
        self._pub: Any = None
        self._sub: Any = None
        self._kv: Any = None  # claims: a client of its own, never in the publish pipeline
        self._reader_task: asyncio.Task[None] | None = None
        self._active: set[str] = set()
        self._awaiting: dict[str, int] = {}
        self._error_logged = False
        self._pong: asyncio.Future[None] | None = None

    def state(self) -> dict[str, Any]:
        out = super().state()
        out["parser"] = "hiredis" if HIREDIS_AVAILABLE else "python"
        return out

    async def _open(self) -> set[str]:
        pub = self._pool.make_connection()
        sub = self._pool.make_connection()
        self._pub, self._sub = pub, sub
        await asyncio.wait_for(pub.connect(), self.timeout)
        await asyncio.wait_for(sub.connect(), self.timeout)
        self.max_payload = min(self._payload_cap, await self._bulk_limit(pub))
        channels = list(self._handlers)
        self._active = set(channels)
        self._awaiting = {}
        for start in range(0, len(channels), _SUBSCRIBE_CHUNK):
            await sub.send_command("SUBSCRIBE", *channels[start:start + _SUBSCRIBE_CHUNK],
                                   check_health=False)
        left = len(channels)
        while left:
            reply = await sub.read_response(timeout=self.timeout)
            if reply is None:
                raise TimeoutError("no SUBSCRIBE confirmation")
            if reply[0] == b"subscribe":
                left -= 1
            elif reply[0] == b"message":
                self._dispatch(reply[1].decode(), reply[2])
        self._reader_task = asyncio.get_running_loop().create_task(self._reader(sub))
        return set(channels)

    async def _bulk_limit(self, pub: Any) -> int:
        """The server's proto-max-bulk-len, or its default where CONFIG is refused."""
        try:
            await pub.send_command("CONFIG", "GET", "proto-max-bulk-len", check_health=False)
            reply = await pub.read_response(timeout=self.timeout)
            return int(reply[1])
        except ResponseError:
            return _BULK_LIMIT

    def _probe(self) -> asyncio.Future[None] | None:
        assert self._loop is not None
        pong = self._pong = self._loop.create_future()
        sub = self._sub

        async def ping() -> None:
            with contextlib.suppress(Exception):  # a broken connection: the reader says so
                await sub.send_command("PING", check_health=False)

        self._loop.create_task(ping())
        return pong

    async def _reader(self, sub: Any) -> None:
        dispatch = self._dispatch
        try:
            while True:
                # No timeout here: the probe tells a silent broker from a quiet one.
                reply = await sub.read_response(timeout=None)
                if reply is None:
                    continue
                kind = reply[0]
                if kind == b"message":
                    dispatch(reply[1].decode(), reply[2])
                elif kind == b"pong":
                    pong, self._pong = self._pong, None
                    if pong is not None and not pong.done():
                        pong.set_result(None)
                elif kind == b"subscribe":
                    channel = reply[1].decode()
                    left = self._awaiting.get(channel, 0) - 1
                    if left > 0:
                        self._awaiting[channel] = left
                    else:
                        self._awaiting.pop(channel, None)
                        self._confirm(channel)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(exc)

    async def _write(self, subs: list[tuple[bool, str]], batch: list[_Pub]) -> int:
        if subs:
            await self._apply(subs)
        if not batch:
            return 0
        refused = 0
        pub = self._pub
        await pub.send_packed_command(
            pub.pack_commands([("PUBLISH", channel, data) for channel, data, _ in batch]),
            check_health=False)
        for _, _, fut in batch:
            try:
                receivers = await pub.read_response(timeout=self.timeout)
            except ResponseError as exc:  # refused by the server (ACL, ...): this one is lost
                self.dropped += 1
                refused += 1
                if not self._error_logged:
                    self._error_logged = True
                    log.warning("backplane %s: PUBLISH refused: %s", self.url, exc)
                if fut is not None and not fut.done():
                    fut.cancel()  # not known whether a node holds the client
                continue
            if receivers is None:
                raise TimeoutError(f"no PUBLISH reply in {self.timeout} s")
            if fut is not None and not fut.done():
                fut.set_result(receivers > 0)
        return refused

    async def _apply(self, subs: list[tuple[bool, str]]) -> None:
        add, remove, kept = self._reconcile(subs, self._active.__contains__)
        for channel in add:
            self._active.add(channel)
            self._awaiting[channel] = self._awaiting.get(channel, 0) + 1
        for channel in kept:
            if channel not in self._awaiting:  # else its SUBSCRIBE's reply confirms it
                self._confirm(channel)
        self._active.difference_update(remove)
        if add:
            await self._sub.send_command("SUBSCRIBE", *add, check_health=False)
        if remove:
            await self._sub.send_command("UNSUBSCRIBE", *remove, check_health=False)

    async def claim(self, key: str, value: str, replace: str | None = None) -> str | None:
        kv = self._claims_client()
        try:
            if replace is None:
                done = await kv.set(key, value, nx=True)
            else:
                done = await kv.eval(_SWAP, 1, key, replace, value)
            if done:
                return None
            held = await kv.get(key)
        except Exception as exc:
            raise ConnectionError(f"backplane {self.url}: claim failed: {exc}") from exc
        return held.decode() if held is not None else ""

    async def release(self, key: str, value: str) -> None:
        try:
            await self._claims_client().eval(_RELEASE, 1, key, value)
        except Exception as exc:
            log.warning("backplane %s: releasing %s failed: %s", self.url, key, exc)

    def _claims_client(self) -> Any:
        if self._kv is None:
            from redis.asyncio import Redis
            self._kv = Redis(connection_pool=self._pool)
        return self._kv

    async def _shutdown(self) -> None:
        task, self._reader_task = self._reader_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait([task], timeout=self.timeout)
        for conn in (self._pub, self._sub):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
        self._pub = self._sub = None
        if self._kv is not None:  # the claims client's pooled connections
            with contextlib.suppress(Exception):
                await self._pool.disconnect()
