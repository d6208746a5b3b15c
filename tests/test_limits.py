"""Rate limit, error limit and room limit: they see every frame, answer abuse once per
window, end sustained abuse with a close, and are on by default."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from typing import Any

from rawsocket import RawSocket, joined
from waiting import TIMEOUT, pace, scaled

import roomer


def _body(room: bytes, event: bytes, payload: bytes = b"") -> bytes:
    return b"".join(struct.pack(">I", len(f)) + f for f in (room, event, b"", b"", payload))


async def _messages_until_close(client: RawSocket, timeout: float = 10) -> tuple[
        list[tuple[str, str, str, str, bytes]], int | None, bytes]:
    """Every roomer message before the server's close frame, and that close."""
    got: list[tuple[str, str, str, str, bytes]] = []

    async def read() -> tuple[int | None, bytes]:
        while True:
            opcode, body = await client.recv_frame()
            if opcode == 0x8:
                code = struct.unpack(">H", body[:2])[0] if len(body) >= 2 else None
                return code, body[2:]
            if opcode == 0x2:
                got.append(roomer.Message.decode(body))

    code, reason = await asyncio.wait_for(read(), scaled(timeout))
    return got, code, reason


def test_safe_defaults() -> None:
    config = roomer.Config()
    assert config.rate_limit == (200, 1.0)
    assert config.error_limit == (100, 10.0)
    assert config.max_rooms_per_connection == 100
    assert config.turn_messages == 64
    assert config.read_buffer_size == 2048


async def test_rate_limit_sees_malformed_and_invalid_frames(make_server: Any) -> None:
    """Frames are counted before decoding: a malformed flood is limited like any other,
    answered with ONE rate_limited error, and closed once it keeps going."""
    server = await make_server(rate_limit=(20, 30.0), error_limit=None)
    port = server.address[1]
    client = await RawSocket.open(port)
    await client.recv()
    bad = [b"\x00\x01\x02", _body(b"\xff", b"ev")] * 50
    await client.send_bodies(bad)
    got, code, reason = await _messages_until_close(client)
    errors = [json.loads(m[4])["code"] for m in got if m[1] == "error"]
    assert errors.count("malformed") + errors.count("invalid_name") == 20  # the allowance
    assert errors.count("rate_limited") == 1  # once per window, however many dropped
    assert (code, reason) == (1008, b"rate limit exceeded")  # 20 more dropped: closed
    assert server.errors["rate_limited"] == 1
    assert server.counters["abuse_closes"] == 1
    assert server.counters["messages_in"] == 20  # the dropped ones were never decoded
    client.close()


async def test_one_rate_limited_error_per_window_and_no_close_below_twice_the_rate(
        make_server: Any) -> None:
    window = scaled(0.5)
    server = await make_server(rate_limit=(10, window), error_limit=None)
    port = server.address[1]
    a, _ = await joined(port, "r")
    b, _ = await joined(port, "r")
    await a.recv()  # b's new_member
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < 4 * window:  # bursts of 15: 1.5x the bucket
        await b.send_many([("r", "chat", b"%d" % (sent + i)) for i in range(15)])
        sent += 15
        # The client's pace is the test (and the bucket refills): a window and a half
        # apart, so each burst's 5 drops stay in a window of their own even when the
        # server reads one burst late (one window apart, a late read put two bursts'
        # drops, twice the rate, in one window, and closed the client).
        await pace(0.75)
    # The anchors, sent after a full window: a last relay, and a re-join's join_ack.
    await b.send("r", "chat", b"end")
    await b.send("r", "join")
    relayed: list[bytes] = []
    limited = 0
    while (msg := await asyncio.wait_for(a.recv(), TIMEOUT))[4] != b"end":
        relayed.append(msg[4])
    while (msg := await asyncio.wait_for(b.recv(), TIMEOUT))[1] != "join_ack":
        if msg[1] == "error":
            assert json.loads(msg[4])["code"] == "rate_limited"
            assert (msg[0], json.loads(msg[4])["event"]) == ("r", "chat")  # it names them
            limited += 1
        else:
            raise AssertionError(f"unexpected {msg}")
    assert server.connection_count == 2  # not closed: below twice its rate
    assert 1 <= limited <= 5  # at most one per window (2 s of 0.5 s windows)
    assert relayed == sorted(relayed, key=int) and len(set(relayed)) == len(relayed)
    assert 0 < len(relayed) < sent
    for client in (a, b):
        client.close()


async def test_too_many_errors_close_the_connection(make_server: Any) -> None:
    server = await make_server(rate_limit=None, byte_limit=None, error_limit=(30, 60.0))
    port = server.address[1]
    client = await RawSocket.open(port)
    await client.recv()
    await client.send_bodies([_body(b"root", b"join_ack")] * 100)
    got, code, reason = await _messages_until_close(client)
    assert [json.loads(m[4])["code"] for m in got] == ["reserved_event"] * 31
    assert (code, reason) == (1008, b"too many errors")
    assert server.counters["abuse_closes"] == 1
    client.close()


async def test_a_client_cannot_create_rooms_without_bound_by_default(make_server: Any) -> None:
    server = await make_server(rate_limit=None, byte_limit=None)
    port = server.address[1]
    client, _ = await joined(port, "r0")
    await client.send_bodies([_body(f"r{i}".encode(), b"join") for i in range(1, 150)])
    got = []
    for _ in range(149):
        got.append(await client.recv())
    acks = [m for m in got if m[1] == "join_ack"]
    refused = [json.loads(m[4])["code"] for m in got if m[1] == "error"]
    assert len(acks) == 99 and set(refused) == {"too_many_rooms"} and len(refused) == 50
    assert len(server.rooms()) == 101  # root + 100
    client.close()


async def test_pings_count_against_the_rate_limit_and_are_answered(make_server: Any) -> None:
    server = await make_server(rate_limit=(5, 60.0))
    port = server.address[1]
    client = await RawSocket.open(port)
    await client.recv()
    for i in range(3):
        await client.send_frame(0x9, b"ping%d" % i)
    pongs = [await client.recv_frame() for _ in range(3)]
    assert pongs == [(0xA, b"ping0"), (0xA, b"ping1"), (0xA, b"ping2")]
    for _ in range(20):
        await client.send_frame(0x9, b"x")
    _got, code, _ = await _messages_until_close(client)
    assert code == 1008
    assert server.errors["rate_limited"] == 1
    client.close()
