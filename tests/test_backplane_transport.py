"""Backplane transports against real brokers (and the in-process hub): batching per loop
turn, order, subscriptions, direct publishes, the buffer bound, outages and reconnects."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import uuid

import pytest
from clusterkit import eventually, pause
from services import Broker
from waiting import scaled

from roomer.backplane import MissingExtra, create
from roomer.backplane.transport import Transport, backoff_delay, redact
from roomer.backplane.transport_memory import hub

BACKENDS = ["memory", "redis", "nats"]


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return f"memory://{uuid.uuid4().hex}"
    return str(request.getfixturevalue(f"{request.param}_url"))


async def pair(url: str, **options: object) -> tuple[Transport, Transport]:
    a, b = create(url, **options), create(url, **options)
    await a.connect(lambda up: None)
    await b.connect(lambda up: None)
    return a, b


async def test_a_burst_is_one_round_trip_in_order(url: str, prefix: str) -> None:
    a, b = await pair(url)
    got: list[bytes] = []
    await b.subscribe(f"{prefix}.x", got.append)
    before = a.round_trips
    for i in range(100):
        a.publish(f"{prefix}.x", b"%03d" % i)
    await a.flush()
    assert a.round_trips - before == 1
    await eventually(lambda: len(got) == 100, what="100 messages")
    assert got == [b"%03d" % i for i in range(100)]
    # The counter counts round trips: one per flushed publish when each waits for the last.
    before = a.round_trips
    for _ in range(20):
        a.publish(f"{prefix}.x", b"one")
        await a.flush()
    assert a.round_trips - before == 20
    assert a.state()["published"] == 120 and a.state()["dropped"] == 0
    await eventually(lambda: len(got) == 120, what="20 more")
    assert b.state()["received"] == 120
    await a.close()
    await b.close()


async def test_subscribe_unsubscribe_and_direct(url: str, prefix: str) -> None:
    a, b = await pair(url)
    got: list[bytes] = []

    def take(data: bytes) -> bool:
        got.append(data)
        return True

    channel = f"{prefix}.client.c1"
    await b.subscribe(channel, take)
    assert await a.publish_direct(channel, b"hi") is True
    assert await a.publish_direct(f"{prefix}.client.nobody", b"hi") is False
    assert got == [b"hi"]
    b.unsubscribe(channel)
    await b.flush()
    await eventually(lambda: not hub_has(url, channel) if url.startswith("memory") else True)
    assert await eventually_false(lambda: a.publish_direct(channel, b"again"))
    anchors: list[bytes] = []
    await b.subscribe(f"{prefix}.anchor", anchors.append)
    a.publish(channel, b"lost")
    a.publish(f"{prefix}.anchor", b"after")  # the anchor: "lost" would come before it
    await eventually(lambda: anchors == [b"after"], what="the anchor")
    assert got == [b"hi"]
    await a.close()
    await b.close()


def hub_has(url: str, channel: str) -> bool:
    return hub(url.partition("://")[2]).count(channel) > 0


async def eventually_false(send: object) -> bool:
    # An UNSUBSCRIBE takes effect when the broker gets it: retry until it did.
    async def refused() -> bool:
        return await send() is False  # type: ignore[operator,no-any-return]

    await eventually(refused, what="refused once unsubscribed")
    return True



async def test_buffer_bound_drops_frames_not_control(redis_url: str, prefix: str) -> None:
    a = create(redis_url, max_buffer=64 * 1024)
    await a.connect(lambda up: None)
    for _ in range(200):
        a.publish(f"{prefix}.big", b"x" * 1024)
    a.publish(f"{prefix}.big", b"control", control=True)
    state = a.state()
    assert state["dropped"] == 200 - 64 and state["buffered"] <= 64 * 1024 + 7
    await a.flush()
    assert a.state()["published"] == 65 and a.state()["buffered"] == 0
    await a.close()


async def test_redis_server_sees_one_pipeline(private_redis: Broker, prefix: str) -> None:
    """Measured by the broker: a burst of 100 publishes is one or two socket reads for
    Redis, 100 publishes waited for one by one are 100."""
    import redis.asyncio as aioredis

    probe = aioredis.Redis.from_url(private_redis.url)
    a = create(private_redis.url)
    await a.connect(lambda up: None)

    async def reads() -> int:
        return int((await probe.info("stats"))["total_reads_processed"])

    start = await reads()
    for i in range(100):
        a.publish(f"{prefix}.x", b"%03d" % i)
    await a.flush()
    burst = await reads() - start - 1  # minus the INFO command's own read
    start = await reads()
    for i in range(100):
        a.publish(f"{prefix}.x", b"%03d" % i)
        await a.flush()
    one_by_one = await reads() - start - 1
    print(f"redis reads: burst of 100 -> {burst}, 100 one by one -> {one_by_one}")
    assert burst <= 2 and one_by_one >= 100
    await a.close()
    await probe.aclose()


@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_outage_drops_counts_logs_once_and_recovers(
        kind: str, request: pytest.FixtureRequest, prefix: str,
        caplog: pytest.LogCaptureFixture) -> None:
    broker: Broker = request.getfixturevalue(f"private_{kind}")
    caplog.set_level(logging.DEBUG, logger="roomer.backplane")
    states: list[bool] = []
    a = create(broker.url, reconnect_max=0.3, timeout=1.0)
    b = create(broker.url, reconnect_max=0.3, timeout=1.0)
    await a.connect(states.append)
    await b.connect(lambda up: None)
    got: list[bytes] = []
    await b.subscribe(f"{prefix}.x", got.append)
    a.publish(f"{prefix}.x", b"before")
    await eventually(lambda: got == [b"before"])

    broker.stop()
    await eventually(lambda: not a.connected and not b.connected, what="outage seen")
    dropped = a.dropped
    for _ in range(1000):
        a.publish(f"{prefix}.x", b"x" * 100)
    # Not known whether a node holds the client: cancelled, never "no such client".
    assert a.publish_direct(f"{prefix}.x", b"d").cancelled()
    assert a.dropped == dropped + 1001 and a.state()["buffered"] == 0
    # Several failed reconnect attempts (logged at debug level): still logged once.
    await eventually(lambda: sum("reconnect attempt" in r.getMessage()
                                 for r in caplog.records) >= 4, what="failed reconnects")
    broker.start()
    await eventually(lambda: a.connected and b.connected, timeout=10, what="reconnected")
    assert states == [False, True]
    assert a.reconnects == 1 and b.reconnects == 1
    a.publish(f"{prefix}.x", b"after")  # b subscribed again by itself
    await eventually(lambda: got == [b"before", b"after"], what="traffic resumed")
    lost = [r for r in caplog.records if "lost the broker" in r.getMessage()]
    back = [r for r in caplog.records if "broker back" in r.getMessage()]
    assert len(lost) == 2 and len(back) == 2, [r.getMessage() for r in caplog.records]
    await a.close()
    await b.close()


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "nats://127.0.0.1:1"])
async def test_unreachable_broker_at_connect(url: str) -> None:
    transport = create(url, timeout=1.0)
    with pytest.raises(ConnectionError, match="cannot reach the broker"):
        await asyncio.wait_for(transport.connect(lambda up: None), scaled(5))


def test_create_and_redact() -> None:
    with pytest.raises(ValueError, match="use redis://"):
        create("amqp://127.0.0.1")
    with pytest.raises(ValueError, match="needs a name"):
        create("memory://")
    assert redact("redis://user:secret@127.0.0.1:6379/2?x=1") == "redis://127.0.0.1:6379/2"
    assert redact("nats://tok@a:4222,nats://u:p@b:4223") == "nats://a:4222,nats://b:4223"
    assert create("rediss://u:pw@127.0.0.1:6380/1").state()["url"] == "rediss://127.0.0.1:6380/1"


def test_backoff_is_capped_and_jittered() -> None:
    delays = [backoff_delay(n, 0.05, 5.0) for n in range(40)]
    assert all(0 < d <= 5.0 for d in delays)
    assert delays[0] <= 0.05 and min(delays[20:]) >= 2.5
    assert len({round(backoff_delay(30, 0.05, 5.0), 6) for _ in range(20)}) > 1


@pytest.mark.parametrize(("scheme", "module", "extra"), [
    ("redis://127.0.0.1:6379/0", "redis", "redis"),
    ("nats://127.0.0.1:4222", "nats", "nats"),
])
def test_missing_extra_names_the_pip_command(scheme: str, module: str, extra: str) -> None:
    # The library made unimportable, as if not installed.
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "from roomer.backplane import create, MissingExtra\n"
            f"try:\n    create({scheme!r})\nexcept MissingExtra as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert f"pip install 'roomer[{extra}]'" in out
    assert issubclass(MissingExtra, ImportError)


async def test_direct_publishes_respect_the_buffer_bound(url: str, prefix: str) -> None:
    a = create(url, max_buffer=64 * 1024)
    await a.connect(lambda up: None)
    for _ in range(64):
        a.publish(f"{prefix}.big", b"x" * 1024)
    refused = a.publish_direct(f"{prefix}.client.c1", b"x" * 1024)
    assert refused.cancelled()  # at once, not queued; not "no such client" either
    assert a.dropped == 1 and a.state()["buffered"] == 64 * 1024
    await a.flush()
    assert a.state()["buffered"] == 0
    await a.close()


@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_a_batch_in_flight_counts_against_the_buffer(
        kind: str, request: pytest.FixtureRequest, prefix: str) -> None:
    """While the broker sits on a batch, that batch still waits for it: another max_buffer
    must not pile up behind it, and ``buffered`` says so (regression)."""
    broker: Broker = request.getfixturevalue(f"private_{kind}")
    a = create(broker.url, max_buffer=64 * 1024, timeout=5.0)
    await a.connect(lambda up: None)
    assert broker.proc is not None
    await pause(broker.proc.pid)
    try:
        for _ in range(64):
            a.publish(f"{prefix}.big", b"x" * 1024)
        # The writer took the batch; the broker does not answer.
        await eventually(lambda: a._inflight_bytes == 64 * 1024, what="the batch in flight")
        assert a.state()["buffered"] == 64 * 1024
        for _ in range(10):
            a.publish(f"{prefix}.big", b"x" * 1024)
        assert a.dropped == 10
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)
    await a.flush()
    assert a.published == 64 and a.state()["buffered"] == 0
    await a.close()


async def test_nats_close_ends_direct_publishes_waiting_for_an_answer(
        private_nats: Broker, prefix: str) -> None:
    a = create(private_nats.url, timeout=3.0)
    await a.connect(lambda up: None)
    assert private_nats.proc is not None
    await pause(private_nats.proc.pid)  # no answer, no "no responders"
    try:
        waiting = a.publish_direct(f"{prefix}.client.c1", b"hi")
        await eventually(lambda: a._inflight_bytes > 0, what="the request is out")
        await asyncio.wait_for(a.close(), scaled(2.0))
        assert waiting.cancelled()  # not known whether it arrived
        assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    finally:
        os.kill(private_nats.proc.pid, signal.SIGCONT)


async def test_a_refused_redis_publish_counts_as_dropped_only(
        private_redis: Broker, prefix: str) -> None:
    import redis.asyncio as aioredis

    probe = aioredis.Redis.from_url(private_redis.url)
    await probe.acl_setuser("limited", enabled=True, passwords=["+pw"], commands=["+@all"],
                            channels=[f"{prefix}.ok*"], keys=[])
    await probe.aclose()
    a = create(private_redis.url.replace("redis://", "redis://limited:pw@"))
    await a.connect(lambda up: None)
    a.publish(f"{prefix}.ok", b"taken")
    a.publish(f"{prefix}.no", b"refused by the ACL")
    await a.flush()
    assert (a.published, a.dropped) == (1, 1)
    await a.close()


async def test_an_oversize_nats_publish_counts_as_dropped_only(
        nats_url: str, prefix: str) -> None:
    a = create(nats_url)
    await a.connect(lambda up: None)
    a.publish(f"{prefix}.x", b"small")
    a.publish(f"{prefix}.x", b"x" * (2 << 20))  # past the server's 1 MiB max_payload
    await a.flush()
    assert (a.published, a.dropped) == (1, 1)
    await a.close()


async def test_nats_subscriptions_are_bounded_too(
        nats_url: str, prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    """A subscription holds at most max_buffer bytes its handler has not taken (nats-py's
    default is 128 MiB each); past that messages are dropped, counted and logged once."""
    caplog.set_level(logging.WARNING, logger="roomer.backplane")
    a = create(nats_url)
    b = create(nats_url, max_buffer=4096)
    await a.connect(lambda up: None)
    await b.connect(lambda up: None)
    got: list[bytes] = []
    await b.subscribe(f"{prefix}.x", got.append)
    for _ in range(500):  # one write: b reads far more than 4 KiB before handling any
        a.publish(f"{prefix}.x", b"x" * 1024)
    await a.flush()
    await eventually(lambda: len(got) + b.dropped == 500, what="every message counted")
    assert b.dropped > 0
    slow = [r for r in caplog.records if "faster than this node" in r.getMessage()]
    assert len(slow) == 1
    await a.close()
    await b.close()


async def test_unsubscribed_in_the_same_turn_cancels_the_future(url: str, prefix: str) -> None:
    a = create(url)
    await a.connect(lambda up: None)
    confirmed = a.subscribe(f"{prefix}.x", lambda data: None)
    a.unsubscribe(f"{prefix}.x")
    a.publish(f"{prefix}.y", b"after")  # flush waits for this turn's batch
    await a.flush()
    await eventually(lambda: confirmed.cancelled() and not a._sub_waiters, every_turn=True,
                     what="the confirmation cancelled")
    await a.close()
