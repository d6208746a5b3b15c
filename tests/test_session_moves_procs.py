"""A rolling restart of ``roomer serve --workers 2`` (each worker stopped with SIGTERM in
turn, its supervisor starting it again) under a client with a session, while another node
streams into its room over a real Redis: the client resumes on the other worker each
time (one secret for the group) and gets every message once, in order."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from clusterkit import eventually
from serverproc import _spawn
from services import free_port
from test_session_moves import _gaps, _read_until_closed, _stream
from test_sessions import SessionClient
from test_workers_supervision import group_args, started
from waiting import TIMEOUT

import roomer

pytestmark = pytest.mark.server_process  # the group's workers are child processes

COUNT = 3000  # messages streamed, 500 a second


async def _pid(client: SessionClient, seen: dict[str, list[int]]) -> int:
    """The pid of the worker holding ``client`` (its stream is read meanwhile)."""
    await client.send("root", "api_pid")
    while True:
        msg = await client.recv()
        if msg.event == "api_pid":
            return int(msg.payload)
        if msg.event in seen:
            seen[msg.event].append(int(msg.payload))


async def _read_some(client: SessionClient, seen: dict[str, list[int]], more: int) -> None:
    until = len(seen["tick"]) + more
    while len(seen["tick"]) < until:
        msg = await client.recv()
        if msg.event in seen:
            seen[msg.event].append(int(msg.payload))
        if client.count % 64 == 0:
            await client.ack()


async def test_a_rolling_restart_of_workers_loses_no_message(redis_url: str,
                                                             prefix: str) -> None:
    port = free_port()
    group = await _spawn(group_args(port, redis_url, prefix, "--resume-window", "20"),
                         "workers")
    streamer = roomer.Server(backplane=redis_url, backplane_prefix=prefix)
    await streamer.start("127.0.0.1", 0)
    try:
        await started(group)
        client = await SessionClient.open(port)
        await client.join("game")
        await eventually(lambda: streamer.registry.cluster is not None
                         and len(streamer.registry.cluster.node_keys()) == 2, 15,
                         "the streamer meets both workers")
        seen: dict[str, list[int]] = {"tick": []}
        stream = asyncio.ensure_future(_stream(streamer, "game", "tick", COUNT, 500))
        for restarted in (1, 2):  # each worker in turn: the client is on the other after
            await _read_some(client, seen, 200)
            pid = await _pid(client, seen)
            os.kill(pid, signal.SIGTERM)
            assert await _read_until_closed(client, seen) == 1012
            client = await client.resume()
            assert client.verdict is not None and client.verdict.event == "session.resumed", \
                (client.verdict, group.stderr_tail())
            await eventually(lambda n=restarted: group.stderr_text().count("is back") >= n,
                             20, "the stopped worker is back")
            await eventually(lambda: len(streamer.registry.cluster.node_keys()) == 2, 15,
                             "the streamer meets the new worker")
        while not seen["tick"] or seen["tick"][-1] < COUNT - 1:
            await _read_some(client, seen, 1)
        await asyncio.wait_for(stream, TIMEOUT)
        assert seen["tick"] == list(range(COUNT)), _gaps(seen["tick"])
        assert "Traceback" not in group.stderr_text(), group.stderr_tail()
        os.kill(group.pid, signal.SIGTERM)
        began = time.monotonic()
        assert await asyncio.wait_for(group.proc.wait(), 30) == 0, group.stderr_tail()
        assert time.monotonic() - began < 15  # the whole group stops without a taker
    finally:
        await streamer.shutdown(timeout=2)
        await group.kill()
