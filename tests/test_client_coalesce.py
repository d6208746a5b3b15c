"""The Python client's ``coalesce`` (docs/guides/python-client.md, docs/protocol.md §13)
against a real in-process server over real sockets: what one turn of the client's loop
writes reaches the server as one batch frame, within a batch's bounds and in order with
the asks among it; close() writes it first; a drop queues its sends for the resume; a
server without batch frames (or whose messages must be smaller than a batch) gets each
message alone."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rawclient import TIMEOUT, url_of
from test_client_resume import Collector, next_event
from waiting import scaled

import roomer
from roomer.frames import BATCH_BYTES, BATCH_FRAME_MAX


async def pair(server: roomer.Server, room: str = "r", **options: Any
               ) -> tuple[roomer.Room, roomer.Room, Collector]:
    """A coalescing client in ``room`` and a plain one there, collecting ``m``."""
    root = await roomer.connect(url_of(server), protocol="v2", coalesce=True, **options)
    mine = await root.join(room)
    other = await roomer.connect(url_of(server), protocol="v2")
    return mine, other, Collector(await other.join(room), "m")


async def test_what_one_turn_sends_is_one_batch(make_server: Any) -> None:
    server = await make_server()
    mine, other, seen = await pair(server)
    before = dict(server.counters)
    for n in range(30):
        mine.send("m", str(n))
    assert await seen.reached(30, TIMEOUT) == [str(n) for n in range(30)]
    assert server.counters["batches_in"] - before["batches_in"] == 1
    assert server.counters["messages_in"] - before["messages_in"] == 30
    # One message in a turn goes as it is.
    mine.send("m", "alone")
    await seen.reached(31, TIMEOUT)
    assert server.counters["batches_in"] - before["batches_in"] == 1
    await other.close()
    await mine.close()


async def test_a_batch_keeps_within_its_bounds_and_the_order(make_server: Any) -> None:
    server = await make_server(rate_limit=None, byte_limit=None)  # 300 at once
    mine, other, seen = await pair(server)
    before, messages = server.counters["batches_in"], server.counters["messages_in"]
    for n in range(300):  # 256, then 44
        mine.send("m", str(n))
    await seen.reached(300, TIMEOUT)
    assert server.counters["batches_in"] - before == 2
    # A message larger than a batch may hold goes alone, between the batches around it.
    big = "x" * (BATCH_BYTES + 1)
    for text in ("a", "b", big, "c", "d"):
        mine.send("m", text)
    assert (await seen.reached(305, TIMEOUT))[300:] == ["a", "b", big, "c", "d"]
    assert server.counters["batches_in"] - before == 4
    # A message that would take the held bytes past 64 KiB starts the next batch: four
    # of these fit in one, so six make two.
    quarter = "y" * (BATCH_BYTES // 4 - 200)
    for _ in range(6):
        mine.send("m", quarter)
    await seen.reached(311, TIMEOUT)
    assert server.counters["batches_in"] - before == 6
    assert server.counters["messages_in"] - messages == 311
    await other.close()
    await mine.close()


async def test_asks_and_joins_keep_their_place(make_server: Any) -> None:
    server = await make_server()

    @server.on("echo")
    def echo(conn: Any, msg: roomer.Message) -> bytes:
        return msg.payload.upper()

    mine, other, _ = await pair(server)
    there = Collector(await other.join("s"), "m")
    root = mine.namespace("")
    before = server.counters["batches_in"]
    # The join comes before the send to s (sent first, it would be refused not_member),
    # and the ask's answer comes back.
    joined = root.join("s")
    joined.send("m", "in s")
    answer = asyncio.ensure_future(root.ask("echo", b"hi"))
    await joined
    assert await there.reached(1, TIMEOUT) == ["in s"]
    assert await asyncio.wait_for(answer, TIMEOUT) == b"HI"
    assert server.counters["batches_in"] - before == 1
    await other.close()
    await mine.close()


async def test_close_writes_what_is_held_first(make_server: Any) -> None:
    server = await make_server()
    mine, other, seen = await pair(server)
    for n in range(5):
        mine.send("m", str(n))
    await mine.namespace("").close()  # in the same turn as the sends
    assert await seen.reached(5, TIMEOUT) == [str(n) for n in range(5)]
    await other.close()


async def test_sends_held_at_a_drop_go_after_the_resume(make_server: Any) -> None:
    server = await make_server(resume_window=10.0)
    mine, other, seen = await pair(server, resume=True)
    root = mine.namespace("")
    resumed = next_event(root, "resumed")
    transport = root._client.transport
    assert transport is not None
    # The socket goes before the turn's batch is written: the drop is known first.
    transport.disconnect(False)
    for n in range(5):
        mine.send("m", str(n))
    assert await resumed == (root.id(),)
    mine.send("m", "after")
    assert await seen.reached(6, TIMEOUT) == [str(n) for n in range(5)] + ["after"]
    await other.close()
    await root.close()


async def test_without_batch_frames_each_message_goes_alone(make_server: Any) -> None:
    # A server whose messages must be smaller than a client's largest batch offers no
    # batches (test_batch_frames.py): the client then writes each message alone.
    server = await make_server(max_message_size=BATCH_FRAME_MAX - 1)
    mine, other, seen = await pair(server)
    assert not mine.namespace("")._client.batch
    for n in range(10):
        mine.send("m", str(n))
    assert await seen.reached(10, TIMEOUT) == [str(n) for n in range(10)]
    assert server.counters["batches_in"] == 0
    await other.close()
    await mine.close()


async def test_coalesce_needs_v2(make_server: Any) -> None:
    server = await make_server()
    with pytest.raises(ValueError, match="protocol='v2'"):
        await roomer.connect(url_of(server), coalesce=True)


def test_the_benchmark_runs_and_counts_the_batches() -> None:
    # bench/client_batches.py at a smoke test's size: each bot's burst of 5 is one batch.
    script = Path(__file__).resolve().parents[1] / "bench" / "client_batches.py"
    done = subprocess.run([sys.executable, str(script), "--bots", "2", "--burst", "5",
                           "--rounds", "20", "--repeat", "1"],
                          capture_output=True, text=True, timeout=scaled(60), check=True)
    out = json.loads(done.stdout)
    assert [run["batches_in"] for run in out["runs"]["plain"]] == [0]
    assert [run["batches_in"] for run in out["runs"]["coalesce"]] == [2 * 20]
    # (Its CPU figures need longer runs: the clock counts in ticks of 10 ms.)
    assert all(run["messages_per_s"] > 0 for runs in out["runs"].values() for run in runs)
