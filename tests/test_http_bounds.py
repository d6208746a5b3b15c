"""Plain-HTTP answers are bounded like WebSocket receivers: a client that does not read
holds a transport buffer's worth of its answer, not the answer (RSS measured in a real
server process), is cut at http_timeout, and only http_max_answers are written at once."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rawclient import connect, eventually
from rawhttp import exchange, get, open_socket, parse, read_to_end
from test_wire import certificate  # noqa: F401 (the fixture: a self-signed certificate)

import roomer
from roomer.benchmark.procs import read_metrics
from roomer.server import HTTP_HIGH_WATER, HTTP_PIECE

BIG = 20 << 20
CLIENTS = 40


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def _metric(port: int, name: str) -> float:
    return (await read_metrics(port)).get(name, -1.0)


@pytest.mark.server_process
async def test_clients_that_do_not_read_a_big_file_hold_little_memory(tmp_path: Path) -> None:
    data = os.urandom(BIG)
    (tmp_path / "big.bin").write_bytes(data)
    code = ("import roomer\n"
            f"server = roomer.Server(static_dir={str(tmp_path)!r})\n"
            "server.run('127.0.0.1', 0, on_started=lambda s: print(s.address[1], flush=True))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    socks = []
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        # One reader first: the file is served whole, and the server has run every path.
        reply = await exchange(port, get("/big.bin"), timeout=30)
        assert reply.status == 200 and hashlib.sha256(reply.body).digest() == \
            hashlib.sha256(data).digest()
        idle = _rss(proc.pid)
        loop = asyncio.get_running_loop()
        for _ in range(CLIENTS):
            sock = await open_socket(port, rcvbuf=4096)
            await loop.sock_sendall(sock, get("/big.bin"))
            socks.append(sock)
        for sock in socks:  # every answer has begun: its head arrived (then no more reads)
            head = b""
            while b"\r\n\r\n" not in head:
                head += await asyncio.wait_for(loop.sock_recv(sock, 1024), 30)
            assert head.startswith(b"HTTP/1.1 200 ")

        async def all_waiting() -> bool:
            return await _metric(port, "roomer_http_answers_waiting") == CLIENTS

        # Every answer has filled its transport to the mark and waits: as much as it gets.
        await eventually_async(all_waiting, 30, "every answer waiting for its client")
        stuck = _rss(proc.pid)
        bound = CLIENTS * (HTTP_HIGH_WATER + HTTP_PIECE) + (4 << 20)
        assert stuck - idle < bound, (
            f"RSS {idle / 2**20:.1f} MiB idle -> {stuck / 2**20:.1f} MiB with {CLIENTS} "
            f"clients not reading a {BIG >> 20} MiB file (bound +{bound / 2**20:.1f} MiB)")
        for sock in socks:
            sock.close()
        socks.clear()

        async def none_open() -> bool:
            return await _metric(port, "roomer_http_answers_open") == 0

        await eventually_async(none_open, 30, "every answer closed")
        after = _rss(proc.pid)
        print(f"RSS: {idle / 2**20:.1f} MiB idle, {stuck / 2**20:.1f} MiB with {CLIENTS} "
              f"non-readers of {BIG >> 20} MiB, {after / 2**20:.1f} MiB after they left")
        assert after - idle < (4 << 20), (
            f"RSS {idle / 2**20:.1f} MiB idle -> {after / 2**20:.1f} MiB after the clients left")
    finally:
        for sock in socks:
            sock.close()
        proc.terminate()
        proc.wait(10)


async def eventually_async(check: Any, timeout: float, what: str) -> None:
    await eventually(check, timeout, what)


async def test_a_client_that_does_not_read_is_cut_at_http_timeout(make_server: Any) -> None:
    big = os.urandom(8 << 20)
    server = await make_server(http_timeout=0.5, routes={"/big": ("text/plain", big)})
    sock = await open_socket(server.address[1], rcvbuf=4096)
    try:
        await asyncio.get_running_loop().sock_sendall(sock, get("/big"))
        await eventually(lambda: server.counters["http_timeouts"] == 1, timeout=10)
        await eventually(lambda: server.counters["http_open"] == 0)
        raw = await read_to_end(sock)  # what reached the socket, then the reset
        assert raw.startswith(b"HTTP/1.1 200 ")
        assert len(raw.partition(b"\r\n\r\n")[2]) < len(big)
        assert server.counters["http_waiting"] == 0
    finally:
        sock.close()


async def test_a_reader_gets_everything_within_http_timeout(make_server: Any) -> None:
    big = os.urandom(8 << 20)
    server = await make_server(http_timeout=30, routes={"/big": ("text/plain", big)})
    reply = await exchange(server.address[1], get("/big"), timeout=30)
    assert reply.body == big and server.counters["http_timeouts"] == 0


async def test_answers_past_http_max_answers_get_503(make_server: Any) -> None:
    big = os.urandom(8 << 20)
    server = await make_server(http_max_answers=2, routes={"/big": ("text/plain", big)})
    port = server.address[1]
    loop = asyncio.get_running_loop()
    stuck = []
    for _ in range(2):
        sock = await open_socket(port, rcvbuf=4096)
        await loop.sock_sendall(sock, get("/big"))
        stuck.append(sock)
    await eventually(lambda: server.counters["http_waiting"] == 2)
    try:
        busy = await exchange(port, get("/big"))
        assert (busy.status, busy.body) == (503, b"busy\n")
        assert busy.headers["retry-after"] == "1"
        assert server.counters["http_busy"] == 1
        # What a balancer and a scraper read is never refused; WebSockets are not counted.
        assert (await exchange(port, get("/healthz"))).status == 200
        assert (await exchange(port, get("/metrics"))).status == 200
        client = await connect(server)
        assert server.members("root") == [client.id]
    finally:
        for sock in stuck:
            sock.close()
    await eventually(lambda: server.counters["http_open"] == 0)
    assert (await exchange(port, get("/big"), timeout=30)).body == big


async def test_a_client_sending_on_and_on_after_its_request_is_cut(make_server: Any) -> None:
    big = os.urandom(8 << 20)
    server = await make_server(routes={"/big": ("text/plain", big)})
    sock = await open_socket(server.address[1], rcvbuf=4096)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(sock, get("/big"))
        with pytest.raises((ConnectionError, BrokenPipeError)):
            for _ in range(64):  # 64 MiB, far past what is read and dropped
                await asyncio.wait_for(loop.sock_sendall(sock, b"x" * (1 << 20)), 10)
        await eventually(lambda: server.counters["http_open"] == 0)
    finally:
        sock.close()


async def test_a_client_that_half_closes_after_its_request_gets_the_answer(
        make_server: Any) -> None:
    big = os.urandom(1 << 20)
    server = await make_server(routes={"/big": ("text/plain", big)})
    sock = await open_socket(server.address[1])
    try:
        await asyncio.get_running_loop().sock_sendall(sock, get("/big"))
        sock.shutdown(socket.SHUT_WR)  # as "nc -N" and some health checkers do
        reply = parse(await read_to_end(sock))
        assert (reply.status, reply.body) == (200, big)
    finally:
        sock.close()
    await eventually(lambda: server.counters["http_open"] == 0)


async def test_the_same_bounds_over_tls(certificate: tuple[Path, Path]) -> None:  # noqa: F811
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    big = os.urandom(8 << 20)
    server = roomer.Server(http_timeout=1.0, routes={"/big": ("text/plain", big)})
    await server.start("127.0.0.1", 0, ssl=server_ctx)
    try:
        host, port = server.address
        reader, writer = await asyncio.open_connection(host, port, ssl=client_ctx)
        writer.write(get("/big"))
        reply = parse(await asyncio.wait_for(reader.read(), 30))
        writer.close()
        assert (reply.status, reply.body) == (200, big)
        reader, writer = await asyncio.open_connection(host, port, ssl=client_ctx)
        writer.write(get("/healthz", "HEAD"))
        reply = parse(await asyncio.wait_for(reader.read(), 10))
        writer.close()
        assert (reply.status, reply.body, reply.headers["content-length"]) == (200, b"", "3")
        # One that stops reading waits under the mark, then is cut at the deadline.
        sock = await open_socket(port, rcvbuf=4096)
        # asyncio's stream stops reading the socket once its buffer is full.
        _, writer = await asyncio.open_connection(sock=sock, ssl=client_ctx,
                                                  server_hostname=host)
        try:
            writer.write(get("/big"))
            await eventually(lambda: server.counters["http_waiting"] == 1)
            await eventually(lambda: server.counters["http_timeouts"] == 1, timeout=10)
            await eventually(lambda: server.counters["http_open"] == 0)
        finally:
            writer.close()
    finally:
        await server.shutdown(timeout=1.0)


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_shutdown_cuts_the_plain_http_clients_still_connected(
        tls: bool, certificate: tuple[Path, Path]) -> None:  # noqa: F811
    # A client still sending its request head is cut at shutdown, not at its deadline.
    server_ctx = None
    if tls:
        cert, key = certificate
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert, key)
    server = roomer.Server(handshake_timeout=60.0)
    await server.start("127.0.0.1", 0, ssl=server_ctx)
    host, port = server.address
    if tls:
        client_ctx = ssl.create_default_context(cafile=str(certificate[0]))
        reader, writer = await asyncio.open_connection(host, port, ssl=client_ctx)
    else:
        reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # no blank line: a head unfinished
    await writer.drain()
    await server.shutdown(timeout=5.0)
    try:
        rest = await asyncio.wait_for(reader.read(), 5.0)
    except (ConnectionResetError, ssl.SSLError):
        rest = b""
    assert rest == b""
    writer.close()
