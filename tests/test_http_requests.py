"""What every kind of plain HTTP request gets on the roomer port, byte for byte over bare
sockets: HEAD (health checks), OPTIONS, HTTP/1.0, other methods, heads roomer does not read
(never echoed), oversized heads, and upgrades that still reach picows."""

from __future__ import annotations

import asyncio
import base64
import os
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from rawhttp import exchange, get, open_socket, parse, read_to_end
from rawsocket import RawSocket, _masked_frame, _msg

EVIL = b"<script>evil</script>"
ALLOW = "GET, HEAD, OPTIONS"


def _upgrade_head(*extra: bytes, path: bytes = b"/ws", version: bytes = b"HTTP/1.1") -> bytes:
    key = base64.b64encode(os.urandom(16))
    lines = [b"GET " + path + b" " + version, b"Host: x", b"Upgrade: websocket",
             b"Connection: Upgrade", b"Sec-WebSocket-Key: " + key,
             b"Sec-WebSocket-Version: 13", *extra]
    return b"\r\n".join(lines) + b"\r\n\r\n"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "page.html").write_bytes(b"<h1>page</h1>")
    return tmp_path


# HEAD ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/hello.txt", "/roomer.js", "/page.html",
                                  "/missing", "/metrics"])
async def test_head_gets_the_get_headers_and_no_body(make_server: Any, site: Path,
                                                     path: str) -> None:
    server = await make_server(static_dir=site, routes={"/hello.txt": ("text/plain", b"hi")})
    port = server.address[1]
    full = await exchange(port, get(path))
    head = await exchange(port, get(path, "HEAD"))
    assert head.status == full.status
    assert head.body == b""  # nothing after the blank line, and the connection closed
    if path == "/metrics":  # its numbers move between the two requests
        assert head.headers["content-type"] == full.headers["content-type"]
        assert int(head.headers["content-length"]) > 0
        return
    assert head.headers["content-length"] == str(len(full.body))
    assert {k: v for k, v in head.headers.items() if k != "date"} == \
        {k: v for k, v in full.headers.items() if k != "date"}


async def test_head_health_checks_of_real_clients(make_server: Any) -> None:
    server = await make_server()
    host, port = server.address
    async with aiohttp.ClientSession() as session, \
            session.head(f"http://{host}:{port}/healthz") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "3"

    def urllib_head() -> int:
        request = urllib.request.Request(f"http://{host}:{port}/healthz", method="HEAD")
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status

    assert await asyncio.wait_for(asyncio.to_thread(urllib_head), 10) == 200


# OPTIONS and other methods -----------------------------------------------------------------


@pytest.mark.parametrize("target", ["/", "*", "/healthz"])
async def test_options_gets_204_with_allow(make_server: Any, target: str) -> None:
    server = await make_server()
    reply = await exchange(server.address[1], get(target, "OPTIONS"))
    assert reply.status == 204
    assert reply.headers["allow"] == ALLOW
    assert reply.body == b"" and "content-length" not in reply.headers


@pytest.mark.parametrize("request_bytes", [
    get("/healthz", "POST"),
    get("/", "PUT"),
    get("/page.html", "DELETE"),
    get("/", "PATCH"),
    get("/" + EVIL.decode(), "TRACE"),
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n",
], ids=["POST", "PUT", "DELETE", "PATCH", "TRACE", "CONNECT", "POST-with-body", "BREW"])
async def test_other_methods_get_405_with_allow(make_server: Any,
                                                request_bytes: bytes) -> None:
    server = await make_server()
    reply = await exchange(server.address[1], request_bytes)
    assert reply.status == 405
    assert reply.headers["allow"] == ALLOW
    assert reply.body == b"method not allowed\n"
    assert EVIL not in reply.raw


# HTTP/1.0 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [b"", b"Connection: keep-alive\r\n", b"Host: x\r\n"])
async def test_http_1_0_is_answered_and_the_connection_closed(make_server: Any,
                                                              extra: bytes) -> None:
    server = await make_server(routes={"/hello.txt": ("text/plain", b"hi")})
    port = server.address[1]
    reply = await exchange(port, b"GET /healthz HTTP/1.0\r\n" + extra + b"\r\n")
    assert (reply.status, reply.body) == (200, b"ok\n")  # read to the end: it closed
    assert reply.headers["connection"] == "close"
    reply = await exchange(port, b"GET /hello.txt HTTP/1.0\r\n" + extra + b"\r\n")
    assert (reply.status, reply.body) == (200, b"hi")
    reply = await exchange(port, b"HEAD /healthz HTTP/1.0\r\n\r\n")
    assert (reply.status, reply.body, reply.headers["content-length"]) == (200, b"", "3")


async def test_a_websocket_upgrade_over_http_1_0_is_not_one(make_server: Any) -> None:
    server = await make_server()
    reply = await exchange(server.address[1], _upgrade_head(version=b"HTTP/1.0"))
    assert reply.status == 404  # a plain request of /ws: RFC 6455 upgrades HTTP/1.1 only
    assert server.connection_count == 0


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2"])
async def test_other_http_versions_get_505(make_server: Any, version: bytes) -> None:
    server = await make_server()
    reply = await exchange(server.address[1], b"GET / " + version + b"\r\nHost: x\r\n\r\n")
    assert reply.status == 505
    reply = await exchange(server.address[1], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert reply.status == 505  # an HTTP/2 client's preface


# heads roomer does not read: a fixed 400, never an echo ------------------------------------

UNREADABLE = {
    "four parts": b"GET /" + EVIL + b" HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    "two parts": b"GET /" + EVIL + b"\r\nHost: x\r\n\r\n",
    "method not a token": EVIL + b" / HTTP/1.1\r\nHost: x\r\n\r\n",
    "version garbage": b"GET / " + EVIL + b"\r\nHost: x\r\n\r\n",
    "lowercase version": b"GET /" + EVIL + b" http/1.1\r\nHost: x\r\n\r\n",
    "double space": b"GET  /" + EVIL + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "control in target": b"GET /\x01" + EVIL + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "target not a path": b"GET " + EVIL + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header name not a token": b"GET / HTTP/1.1\r\nBad" + EVIL + b": v\r\n\r\n",
    "header without colon": b"GET / HTTP/1.1\r\n" + EVIL + b"\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost : " + EVIL + b"\r\n\r\n",
    "folded header": b"GET / HTTP/1.1\r\nX-A: v\r\n " + EVIL + b"\r\n\r\n",
    "control in value": b"GET / HTTP/1.1\r\nX-A: \x01" + EVIL + b"\r\n\r\n",
    "bare LF in value": b"GET / HTTP/1.1\r\nX-A: a\nB" + EVIL + b"\r\n\r\n",
    "leading blank line": b"\r\nGET /" + EVIL + b" HTTP/1.1\r\n\r\n",
    "GET with a body": b"GET /" + EVIL + b" HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    "chunked GET": b"GET /" + EVIL + b" HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    # Upgrades: picows' own 400 page repeated each of these pieces back.
    "upgrade, bad header name": _upgrade_head(b"Bad" + EVIL + b": v"),
    "upgrade, content length": _upgrade_head(b"Content-Length: 1" + EVIL),
    "upgrade, two content lengths": _upgrade_head(b"Content-Length: 0",
                                                  b"Content-Length: 0" + EVIL),
    "upgrade, transfer encoding": _upgrade_head(b"Transfer-Encoding: " + EVIL),
    "upgrade, folded": _upgrade_head(b" " + EVIL),
    "upgrade, bad version": b"GET /" + EVIL + b" HTTP/1.1 x\r\nUpgrade: websocket\r\n"
                            b"Connection: Upgrade\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", list(UNREADABLE.values()), ids=list(UNREADABLE))
async def test_unreadable_heads_get_a_fixed_400(make_server: Any,
                                                request_bytes: bytes) -> None:
    server = await make_server()
    reply = await exchange(server.address[1], request_bytes)
    assert reply.status == 400, reply.raw
    assert reply.body in (b"bad request\n", b"request bodies are not read\n")
    assert b"evil" not in reply.raw.lower()
    assert server.connection_count == 0


async def test_a_bad_upgrade_key_is_refused_without_echo(make_server: Any) -> None:
    server = await make_server()
    head = _upgrade_head().replace(b"Sec-WebSocket-Key: ", b"Sec-WebSocket-Key: " + EVIL)
    reply = await exchange(server.address[1], head)
    assert reply.status == 400 and b"evil" not in reply.raw


# sizes -------------------------------------------------------------------------------------


async def test_oversized_heads_get_431_without_echo(make_server: Any) -> None:
    server = await make_server()
    port = server.address[1]
    long_header = b"GET / HTTP/1.1\r\nX-Long: " + b"y" * 20_000 + b"\r\n\r\n"
    reply = await exchange(port, long_header)
    assert (reply.status, reply.body) == (431, b"request head too large\n")
    assert b"yyyy" not in reply.raw
    many = b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(129))
    assert (await exchange(port, many + b"\r\n")).status == 431
    just = b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(128))
    assert (await exchange(port, just + b"\r\n")).status == 200
    # An upgrade just as large goes nowhere either (picows dropped it without a word).
    reply = await exchange(port, _upgrade_head(b"X-Long: " + b"y" * 20_000))
    assert reply.status == 431 and server.connection_count == 0


async def test_a_long_path_under_the_limit_is_an_ordinary_request(make_server: Any) -> None:
    server = await make_server()
    reply = await exchange(server.address[1], get("/" + "p" * 15_000))
    assert (reply.status, reply.body) == (404, b"not found\n")
    assert b"pppp" not in reply.raw


async def test_an_unfinished_head_is_cut_at_the_handshake_timeout(make_server: Any) -> None:
    server = await make_server(handshake_timeout=0.5)
    sock = await open_socket(server.address[1])
    try:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never ends
        assert await read_to_end(sock, timeout=10) == b""  # closed by the server
    finally:
        sock.close()


# the request target --------------------------------------------------------------------------


async def test_absolute_form_targets_are_their_path(make_server: Any) -> None:
    server = await make_server()
    port = server.address[1]
    for target in ("http://example.com/healthz", "HTTP://EXAMPLE.COM:80/healthz?x=1"):
        reply = await exchange(port, get(target))
        assert (reply.status, reply.body) == (200, b"ok\n"), target


async def test_pipelined_requests_get_the_first_answer_whole(make_server: Any) -> None:
    big = os.urandom(3 << 20)
    server = await make_server(routes={"/big": ("application/octet-stream", big)})
    requests = get("/big") + get("/healthz") + b"x" * 200_000  # and then some noise
    reply = await exchange(server.address[1], requests)
    assert reply.status == 200 and reply.body == big  # one answer, then the close


# upgrades still reach picows ------------------------------------------------------------------


async def test_an_upgrade_with_frames_in_the_same_packet(make_server: Any) -> None:
    server = await make_server()
    frame = _masked_frame(_msg("lobby", "join"))
    client = await RawSocket.open_raw(server.address[1], request=_upgrade_head() + frame)
    try:
        assert (await client.http_response()).startswith(b"HTTP/1.1 101")
        assert (await client.recv())[1] == "join_ack"  # root
        room, event, *_ = await client.recv()
        assert (room, event) == ("lobby", "join_ack")
    finally:
        client.close()


async def test_an_upgrade_head_arriving_a_byte_at_a_time(make_server: Any) -> None:
    server = await make_server()
    sock = await open_socket(server.address[1])
    client = RawSocket(sock)
    try:
        loop = asyncio.get_running_loop()
        head = _upgrade_head(b"X-Pad: " + b"p" * 5000)  # past the first read buffer
        for i in range(len(head)):
            await loop.sock_sendall(sock, head[i:i + 1])
        assert (await client.http_response()).startswith(b"HTTP/1.1 101")
        assert (await client.recv())[1] == "join_ack"
    finally:
        client.close()


async def test_head_of_an_upgrade_is_a_plain_head(make_server: Any) -> None:
    server = await make_server()
    head = _upgrade_head().replace(b"GET ", b"HEAD ", 1)
    reply = await exchange(server.address[1], head)
    assert (reply.status, reply.body) == (404, b"")
    assert server.connection_count == 0


def test_parse_of_a_raw_answer() -> None:
    reply = parse(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody")
    assert (reply.status, reply.headers, reply.body) == (200, {"a": "b"}, b"body")
