"""A connection's life at its edges: ghosts, closed clients' leftovers, shutdown's one
deadline, other threads, pings while roomer itself holds the read, and the counters
and background rounds that must survive them."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import struct
import threading
import time
from typing import Any

import pytest
from rawclient import TIMEOUT, connect, eventually, http_get
from rawsocket import RawSocket, joined
from waiting import scaled, stall, suspend

import roomer


def _body(room: bytes, event: bytes, payload: bytes = b"") -> bytes:
    return b"".join(struct.pack(">I", len(f)) + f for f in (room, event, b"", b"", payload))


# freed --------------------------------------------------------------------------------------


async def test_a_closed_connection_is_freed_without_a_garbage_collection(
        make_server: Any) -> None:
    """picows' protocol holds each connection as its listener: a closed connection must
    not hold the protocol back, or the two are a cycle that only a full garbage collection
    frees, which an idle server may not run for hours (10,000 clients gone left 7.8 KiB
    each behind). With the collector off, every closed connection is freed all the same:
    ones that joined a room, closed with a close frame, reset, or cut by the server."""
    server = await make_server()
    clients = [(await joined(server.address[1], "lobby"))[0] for _ in range(6)]

    def server_closes_two() -> None:  # (its own frame: the test keeps no reference)
        for conn in list(server.registry.conns.values())[:2]:
            conn.close(1000, "bye")

    gc.collect()
    gc.disable()
    try:
        await clients[0].send_frame(0x8, struct.pack(">H", 1000))
        await clients[0].close_frame()
        clients[1].sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                   struct.pack("ii", 1, 0))  # closed with a reset
        server_closes_two()
        for client in clients:
            client.close()
        await eventually(lambda: not server.registry.conns, what="every client gone")
        await eventually(
            lambda: not [o for o in gc.get_objects() if isinstance(o, roomer.Connection)],
            what="every closed connection freed with the collector off")
    finally:
        gc.enable()


# ghosts -----------------------------------------------------------------------------------


async def test_on_connect_that_joins_then_denies_leaves_no_ghost(make_server: Any) -> None:
    server = await make_server()

    @server.on_connect
    def join_then_deny(conn: roomer.Connection) -> None:
        conn.join("lobby")
        if conn.request.path.startswith(b"/deny"):
            raise roomer.Deny("not today")

    denied = await RawSocket.open_path(server.address[1], "/deny")
    assert await denied.close_frame() == (1008, b"not today")
    assert "lobby" not in server.rooms()
    a = await connect(server)  # an accepted one: root first, then the hook's join
    assert (await a.expect("join_ack", "lobby")).json() == [a.id]
    assert server.members("lobby") == [a.id]
    denied.close()


async def test_on_connect_join_comes_after_the_root_join_ack(make_server: Any) -> None:
    server = await make_server()

    @server.on_connect
    async def auto_join(conn: roomer.Connection) -> None:
        await suspend()  # the hook really is async: the join comes after a suspension
        conn.join("lobby")

    a = await connect(server)  # connect() asserts the first message is root's join_ack
    assert (await a.expect("join_ack", "lobby")).json() == [a.id]


async def test_an_async_handler_joining_after_its_client_left_leaves_no_ghost(
        make_server: Any) -> None:
    server = await make_server()
    release = asyncio.Event()
    results: list[bool] = []

    @server.on("later")
    async def later(conn: roomer.Connection, msg: roomer.Message) -> None:
        await release.wait()
        results.append(conn.join("haunted"))

    a = await connect(server)
    await a.send("root", "later")
    await eventually(lambda: server.counters["handled"] == 1)
    await a.close()
    await eventually(lambda: server.connection_count == 0)
    release.set()
    await eventually(lambda: results == [False])
    assert "haunted" not in server.rooms()
    b = await connect(server)
    assert await b.join("haunted") == [b.id]


async def test_an_async_join_hook_finishing_after_the_client_left(make_server: Any) -> None:
    server = await make_server()
    release = asyncio.Event()
    entered = asyncio.Event()
    finished: list[str] = []

    @server.on_join
    async def slow_gate(conn: roomer.Connection, room: str) -> None:
        entered.set()
        await release.wait()
        finished.append(conn.id)

    a = await connect(server)
    await a.send("haunted", "join")
    await asyncio.wait_for(entered.wait(), TIMEOUT)  # the join is in the hook
    await a.close()
    await eventually(lambda: server.connection_count == 0)
    release.set()
    await eventually(lambda: finished == [a.id], what="a's join hook returned")
    assert "haunted" not in server.rooms()
    # A later join through the same hook lists no ghost of a.
    b = await connect(server)
    assert await b.join("haunted") == [b.id]


# closed clients ---------------------------------------------------------------------------


async def test_a_closed_clients_queued_messages_are_not_relayed(make_server: Any) -> None:
    server = await make_server(rate_limit=None, byte_limit=None)

    @server.on("bye")
    def bye(conn: roomer.Connection, msg: roomer.Message) -> None:
        conn.close(4000, "bye")

    port = server.address[1]
    listener, _ = await joined(port, "r")
    talker, _ = await joined(port, "r")
    await listener.recv()  # new_member
    await talker.send_bodies([_body(b"r", b"bye")] + [_body(b"r", b"chat")] * 50)
    assert await talker.close_frame() == (4000, b"bye")
    await talker.send_frame(0x8, struct.pack(">H", 4000))
    while True:
        _room, event, *_ = await asyncio.wait_for(listener.recv(), scaled(5))
        assert event != "chat"
        if event == "member_left":
            break
    assert server.counters["relayed"] == 0
    listener.close()
    talker.close()


async def test_kick_stops_what_the_kicked_client_sent_after(make_server: Any) -> None:
    server = await make_server(rate_limit=None, byte_limit=None)

    @server.on("kickme")
    def kickme(conn: roomer.Connection, msg: roomer.Message) -> None:
        server.kick(conn.id, "out")

    port = server.address[1]
    listener, _ = await joined(port, "r")
    talker, _ = await joined(port, "r")
    await listener.recv()
    await talker.send_bodies([_body(b"r", b"chat", b"before"), _body(b"r", b"kickme")]
                             + [_body(b"r", b"chat", b"after")] * 30)
    assert await talker.close_frame() == (1008, b"out")
    assert (await listener.recv())[4] == b"before"
    # The anchor: the talker's disconnect, read by the server after every frame it sent.
    talker.close()
    while True:
        _room, event, _dst, _src, payload = await asyncio.wait_for(listener.recv(), TIMEOUT)
        assert payload != b"after"
        if event == "member_left":
            break
    assert server.counters["relayed"] == 1
    listener.close()
    talker.close()


# shutdown ---------------------------------------------------------------------------------


async def test_shutdown_lets_the_disconnect_hooks_it_starts_finish(make_server: Any) -> None:
    server = await make_server()
    done: list[str] = []

    @server.on_leave
    async def left(conn: roomer.Connection, room: str) -> None:
        await stall(0.2)
        done.append(f"leave {room}")

    @server.on_disconnect
    async def gone(conn: roomer.Connection) -> None:
        await stall(0.3)
        done.append("disconnect")

    port = server.address[1]
    clients = [(await joined(port, "r"))[0] for _ in range(5)]
    await asyncio.wait_for(server.shutdown(timeout=scaled(3)), scaled(5))
    assert sorted(done) == sorted(["disconnect"] * 5 + ["leave root"] * 5 + ["leave r"] * 5)
    for client in clients:
        client.close()


async def test_shutdown_has_one_deadline_for_every_transport(make_server: Any) -> None:
    """Half-open sockets, a slowloris upgrade, an HTTP reader that never reads a large
    page and a WebSocket client that never reads: all cut at the deadline."""
    big = b"x" * (8 << 20)
    server = await make_server(handshake_timeout=60, routes={"/big": ("text/plain", big)})
    host, port = server.address
    loop = asyncio.get_running_loop()
    socks = []
    for _ in range(20):  # connected, no request at all
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))
        socks.append(sock)
    slow = socket.socket()
    slow.setblocking(False)
    await loop.sock_connect(slow, (host, port))
    await loop.sock_sendall(slow, b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # never finished
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.setblocking(False)
    await loop.sock_connect(reader, (host, port))
    await loop.sock_sendall(reader, b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # never read
    stuck = await RawSocket.open(port, rcvbuf=4096)  # a WebSocket client that never reads
    # Every transport is there before the shutdown: the page is being written to the
    # reader, and the WebSocket client was accepted (after the sockets connected first).
    await eventually(lambda: _waiting_bytes(reader) > 0, what="the big page on its way")
    await eventually(lambda: server.connection_count == 1, what="the WebSocket accepted")
    started = time.monotonic()
    await asyncio.wait_for(server.shutdown(timeout=scaled(1.0)), scaled(10))
    took = time.monotonic() - started
    # A bound on a deadline (one for all, not one each), not a speed measurement.
    assert took < scaled(3.0), f"shutdown took {took:.1f}s"
    assert server.connection_count == 0
    for sock in [*socks, slow, reader]:
        sock.close()
    stuck.close()


def _waiting_bytes(sock: socket.socket) -> int:
    try:
        return len(sock.recv(1024, socket.MSG_PEEK))
    except BlockingIOError:
        return 0


# threads ----------------------------------------------------------------------------------


async def test_loop_only_methods_refuse_other_threads_and_leave_no_zombie(
        make_server: Any) -> None:
    server = await make_server()
    a = await connect(server)
    await a.join("r")
    conn = server.connection(a.id)
    assert conn is not None
    calls = {
        "kick": lambda: server.kick(a.id),
        "do": lambda: server.do(lambda c: c.close()),
        "send_to": lambda: server.send_to(a.id, "x"),
        "conn.send": lambda: conn.send("x"),
        "conn.close": lambda: conn.close(),
        "conn.join": lambda: conn.join("other"),
        "conn.leave": lambda: conn.leave("r"),
        "conn.send_to_room": lambda: conn.send_to_room("r", "x"),
        "on": lambda: server.on("late")(lambda c, m: None),
    }
    errors: dict[str, str] = {}

    def run_all() -> None:
        for name, call in calls.items():
            try:
                call()
            except RuntimeError as exc:
                errors[name] = str(exc)

    thread = threading.Thread(target=run_all)
    thread.start()
    await asyncio.to_thread(thread.join)
    assert set(errors) == set(calls)
    assert all("another thread" in text and "call_threadsafe" in text
               for text in errors.values())
    # untouched: still registered, still in its rooms, still served
    assert server.members("r") == [a.id] and server.connection_count == 1
    await a.send("root", "dm", dst=a.id, payload=b"me")
    assert (await a.expect("dm")).payload == b"me"
    # the thread-safe ways work
    await asyncio.to_thread(server.call_threadsafe, server.kick, a.id, "from a thread")
    assert await a.closed() == (1008, "from a thread")
    fut = await asyncio.to_thread(server.broadcast, "r", "x")
    assert await asyncio.wait_for(asyncio.wrap_future(fut), scaled(5)) == 0


# pings ------------------------------------------------------------------------------------


async def test_a_client_roomer_stopped_reading_is_not_closed_for_silence(
        make_server: Any) -> None:
    """An async handler runs for longer than the ping timeout while 64+ messages queue
    behind it, so roomer pauses reading: the pongs it cannot read are not silence."""
    server = await make_server(ping_interval=scaled(0.2), ping_timeout=scaled(0.2),
                               rate_limit=None, byte_limit=None)
    release = asyncio.Event()

    @server.on("slow")
    async def slow(conn: roomer.Connection, msg: roomer.Message) -> None:
        await release.wait()

    port = server.address[1]
    client, _ = await joined(port, "r")
    await client.send_bodies([_body(b"r", b"slow")] + [_body(b"r", b"ping")] * 200)
    # The anchor: a silent client beside it, joined after, is pinged and closed for
    # silence, so ping rounds ran past the timeout while roomer held the read.
    silent, _ = await joined(port, "r")
    pongs = {"n": 0}

    async def answer_pings() -> None:
        while True:
            opcode, body = await client.recv_frame()
            if opcode == 0x9:
                await client.pong(body)
                pongs["n"] += 1

    answering = asyncio.ensure_future(answer_pings())
    assert await silent.close_frame() == (1011, b"ping timeout")
    assert server.connection_count == 1
    release.set()
    # Read again, quiet, pinged, answering: still there two pings later.
    await eventually(lambda: pongs["n"] >= 2, what="two pings answered after the release")
    assert server.connection_count == 1
    answering.cancel()
    client.close()
    silent.close()


async def test_a_background_round_that_fails_does_not_end_the_pings(
        make_server: Any, caplog: Any) -> None:
    server = await make_server(ping_interval=0.1, ping_timeout=0.3)
    port = server.address[1]
    quiet, _ = await joined(port, "r")
    calls = {"n": 0}
    original = server._ping_idle

    def flaky(now: float) -> None:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise RuntimeError("a bad round")
        original(now)

    server._ping_idle = flaky  # type: ignore[method-assign]
    # the task captured the bound method at start: restart the loops with the flaky one
    tasks = server._core.tasks
    tasks.stop_loops()
    tasks.every(0.05, server._ping_idle)
    # the silent client is pinged and closed once the rounds work again
    assert await quiet.close_frame() == (1011, b"ping timeout")
    assert calls["n"] > 2
    assert "background round" in caplog.text
    quiet.close()


# counters ---------------------------------------------------------------------------------


async def test_slow_disconnects_are_counted_once_each(make_server: Any) -> None:
    server = await make_server(outbox_limit=8 * 1024, slow_consumer="disconnect",
                               rate_limit=None, byte_limit=None)
    port = server.address[1]
    stuck = [(await joined(port, "r", rcvbuf=4096))[0] for _ in range(3)]
    for conn in server.connections():
        conn.transport.underlying_transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sender, _ = await joined(port, "r")

    async def flood_until_cut() -> bool:
        await sender.send_many([("r", "m", b"z" * 1000)] * 50)
        return server.connection_count == 1

    await eventually(flood_until_cut, what="the three stuck receivers cut off")
    # Each was counted before it was cut, and a gone connection is in nothing a later
    # round looks at: the count is final once they are gone.
    assert server.counters["dropped_slow_disconnects"] == 3
    for client in [*stuck, sender]:
        client.close()


async def test_metrics_show_the_new_counters(make_server: Any) -> None:
    server = await make_server()
    _, _, body = await http_get(server, "/metrics")
    text = body.decode()
    for name in ("roomer_abuse_closes_total", "roomer_turn_holds_total",
                 "roomer_read_buffer_trims_total"):
        assert f"\n{name} " in text


async def test_metrics_path_can_move_or_go(make_server: Any) -> None:
    moved = await make_server(metrics_path="/internal/metrics")
    status, _, body = await http_get(moved, "/internal/metrics")
    assert status == 200 and b"roomer_connections" in body
    status, _, body = await http_get(moved, "/metrics")
    assert status == 404 and body == b"not found\n"
    off = await make_server(metrics_path=None)
    status, _, _ = await http_get(off, "/metrics")
    assert status == 404


def test_options_are_validated_once_and_alike() -> None:
    bad: list[tuple[dict[str, Any], type[Exception]]] = [
        ({"outbox_limit": 1e6}, TypeError),
        ({"turn_budget": -1}, ValueError),
        ({"turn_messages": 0}, ValueError),
        ({"ping_timeout": 0}, ValueError),
        ({"ping_interval": float("inf")}, ValueError),
        ({"max_message_size": True}, TypeError),
        ({"rate_limit": (10,)}, TypeError),
        ({"error_limit": (0, 1)}, ValueError),
        ({"read_buffer_size": 1024}, ValueError),
        ({"slow_consumer": "ignore"}, ValueError),
        ({"allowed_origins": "https://a.example"}, TypeError),
        ({"metrics_path": "metrics"}, ValueError),
        # A bucket that never holds a whole token would refuse every frame.
        ({"rate_limit": (0.5, 1)}, ValueError),
        ({"error_limit": (0.9, 10)}, ValueError),
        ({"max_pending_asks": 0}, ValueError),
        # Pages are checked where they are written, not answered with an error later.
        ({"routes": {"nope": ("text/plain", b"x")}}, ValueError),
        ({"routes": {"/a": ("text/plain", "not bytes")}}, TypeError),
        ({"routes": {"/a": b"no content type"}}, TypeError),
        ({"routes": {"/a": ("text/plain\r\nX-Evil: 1", b"x")}}, ValueError),
    ]
    for options, error in bad:
        with pytest.raises(error):
            roomer.Server(**options)
    assert json.dumps(roomer.Config().rate_limit) == "[200, 1.0]"
    server = roomer.Server(routes={"/a": ("text/plain", bytearray(b"x"))})
    assert server.routes["/a"] == ("text/plain", b"x")
    with pytest.raises(TypeError):
        server.routes["/b"] = ("text/html", "<p>str, not bytes</p>")  # type: ignore[assignment]
    with pytest.raises(ValueError):
        server.routes.update({"b": ("text/html", b"")})
    assert set(server.routes) == {"/a"}
