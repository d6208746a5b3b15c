"""The WebSocket edges a browser or a hostile client reaches first: the exact upgrade
requests of current browsers, the close handshake, reserved bits, bad upgrades (whose
answers echo nothing back), and wss:// with a self-signed certificate."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import ssl
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from rawsocket import RawSocket, joined
from waiting import scaled

import roomer


def _key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


# Upgrade requests as these browsers send them (header order and values as captured
# from their network inspectors; the key is fresh per request).
BROWSERS = {
    "firefox": [
        "Host: {host}",
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        "Accept: */*",
        "Accept-Language: en-US,en;q=0.5",
        "Accept-Encoding: gzip, deflate, br, zstd",
        "Sec-WebSocket-Version: 13",
        "Origin: http://{host}",
        "Sec-WebSocket-Extensions: permessage-deflate",
        "Sec-WebSocket-Key: {key}",
        "Connection: keep-alive, Upgrade",
        "Sec-Fetch-Dest: empty",
        "Sec-Fetch-Mode: websocket",
        "Sec-Fetch-Site: same-origin",
        "Pragma: no-cache",
        "Cache-Control: no-cache",
        "Upgrade: websocket",
    ],
    "chrome": [
        "Host: {host}",
        "Connection: Upgrade",
        "Pragma: no-cache",
        "Cache-Control: no-cache",
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36",
        "Upgrade: websocket",
        "Origin: http://{host}",
        "Sec-WebSocket-Version: 13",
        "Accept-Encoding: gzip, deflate, br, zstd",
        "Accept-Language: en-US,en;q=0.9",
        "Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
    ],
    "safari": [
        "Host: {host}",
        "Origin: http://{host}",
        "Pragma: no-cache",
        "Cache-Control: no-cache",
        "Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        "Upgrade: websocket",
        "Sec-WebSocket-Extensions: permessage-deflate",
        "Connection: Upgrade",
        "User-Agent: Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    ],
}


def _request(lines: list[str], host: str, path: str = "/ws") -> bytes:
    head = [f"GET {path} HTTP/1.1"] + [line.format(host=host, key=_key()) for line in lines]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


@pytest.mark.parametrize("browser", sorted(BROWSERS))
async def test_current_browsers_upgrade(make_server: Any, browser: str) -> None:
    server = await make_server()
    host, port = server.address
    client = await RawSocket.open_raw(port, request=_request(BROWSERS[browser],
                                                              f"{host}:{port}"))
    head = await client.http_response()
    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"sec-websocket-extensions" not in head.lower()  # no compression negotiated
    room, event, _, src, _ = await client.recv()
    assert (room, event) == ("root", "join_ack") and src
    await client.send("lobby", "join")
    assert (await client.recv())[1] == "join_ack"
    client.close()


async def test_connection_header_token_list_variants(make_server: Any) -> None:
    server = await make_server()
    host, port = server.address
    for value in ("upgrade", "Upgrade, keep-alive", "keep-alive,Upgrade", "UPGRADE"):
        lines = ["Host: {host}", "Upgrade: websocket", f"Connection: {value}",
                 "Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        client = await RawSocket.open_raw(port, request=_request(lines, f"{host}:{port}"))
        assert (await client.http_response()).startswith(b"HTTP/1.1 101"), value
        client.close()


@pytest.mark.parametrize("bad", ["version", "key", "upgrade"])
async def test_bad_upgrades_get_400_with_a_fixed_body(make_server: Any, bad: str) -> None:
    server = await make_server()
    host, port = server.address
    marker = "<script>evil</script>"
    lines = ["Host: {host}", "Connection: Upgrade",
             f"Upgrade: {'websocket' if bad != 'upgrade' else marker}",
             f"Sec-WebSocket-Key: {'{key}' if bad != 'key' else marker}",
             f"Sec-WebSocket-Version: {'13' if bad != 'version' else marker}"]
    client = await RawSocket.open_raw(port, request=_request(lines, f"{host}:{port}"))
    head = await client.http_response()
    assert head.startswith(b"HTTP/1.1 400"), head
    body = await _rest(client)
    assert b"evil" not in head + body
    assert server.connection_count == 0
    client.close()


async def _rest(client: RawSocket) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytes(client.buf)
    while True:
        chunk = await asyncio.wait_for(loop.sock_recv(client.sock, 4096), scaled(5))
        if not chunk:
            return data
        data += chunk


# close handshake and framing --------------------------------------------------------------


@pytest.mark.parametrize(("sent", "expected"), [
    (None, 1000),  # an empty close frame: no status received, answered normally
    (1000, 1000), (1001, 1001), (4000, 4000), (3000, 3000), (1011, 1011),
    (1006, 1002), (0, 1002), (5000, 1002), (65535, 1002), (1004, 1002), (2999, 1002),
])
async def test_close_replies_only_with_codes_valid_on_the_wire(
        make_server: Any, sent: int | None, expected: int) -> None:
    server = await make_server()
    client, _ = await joined(server.address[1], "r")
    await client.send_frame(0x8, b"" if sent is None else struct.pack(">H", sent) + b"bye")
    code, _ = await client.close_frame()
    assert code == expected
    client.close()


async def test_a_close_with_a_code_and_no_reason_is_echoed(make_server: Any,
                                                           caplog: Any) -> None:
    server = await make_server()
    client, _ = await joined(server.address[1], "r")
    await client.send_frame(0x8, struct.pack(">H", 4001))
    assert (await client.close_frame())[0] == 4001
    assert "Traceback" not in caplog.text
    client.close()


async def test_close_reason_that_is_not_utf8_is_answered_1007(make_server: Any) -> None:
    server = await make_server()
    client, _ = await joined(server.address[1], "r")
    await client.send_frame(0x8, struct.pack(">H", 1000) + b"\xff\xfe")
    assert (await client.close_frame())[0] == 1007
    client.close()


@pytest.mark.parametrize("rsv", [1, 2, 4])
async def test_reserved_bits_without_an_extension_fail_with_1002(make_server: Any,
                                                                 rsv: int) -> None:
    server = await make_server()
    client, _ = await joined(server.address[1], "r")
    body = b"".join(struct.pack(">I", len(f)) + f for f in (b"r", b"chat", b"", b"", b""))
    await client.send_frame(0x2, body, rsv=rsv)
    assert (await client.close_frame())[0] == 1002
    assert server.counters["relayed"] == 0
    client.close()


async def test_a_dropped_fragment_drops_its_whole_message(make_server: Any) -> None:
    """Rate limiting a piece of a fragmented message must not splice the rest into the
    next message."""
    server = await make_server(rate_limit=(3, 60.0))
    port = server.address[1]
    client, _ = await joined(port, "r")  # its join took one token
    body = b"".join(struct.pack(">I", len(f)) + f for f in (b"r", b"chat", b"", b"", b"x"))
    await client.send_frame(0x2, body[:10], fin=False)  # 2nd token
    await client.send_frame(0x0, body[10:20], fin=False)  # 3rd token
    await client.send_frame(0x0, body[20:], fin=True)  # dropped: the message is dropped
    _room, event, _, _, payload = await client.recv()
    assert event == "error" and b"rate_limited" in payload
    # The anchor: that error answers the last fragment, so every frame was handled.
    assert server.counters["messages_in"] == 1  # only the join
    client.close()


# TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: Any) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is needed to make the test certificate")
        pytest.skip("openssl not found: cannot make a self-signed certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=scaled(60))
    return cert, key


async def test_wss_with_a_self_signed_certificate(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    server = roomer.Server()
    await server.start("127.0.0.1", 0, ssl=server_ctx)
    try:
        client_ctx = ssl.create_default_context(cafile=str(cert))
        host, port = server.address
        root = await roomer.connect(f"wss://{host}:{port}/ws", ssl_context=client_ctx)
        other = await roomer.connect(f"wss://{host}:{port}/ws", ssl_context=client_ctx)
        lobby = await root.join("lobby")
        lobby_b = await other.join("lobby")
        got = asyncio.get_running_loop().create_future()
        lobby_b.on("chat", lambda payload, sender: got.set_result((payload, sender)))
        lobby.send("chat", "over tls")
        assert await asyncio.wait_for(got, scaled(5)) == (b"over tls", root.id())
        reader, writer = await asyncio.open_connection(host, port, ssl=client_ctx)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), scaled(5))).startswith(b"HTTP/1.1 200")
        writer.close()
        await root.close()
        await other.close()
    finally:
        await server.shutdown(timeout=1)


def test_serve_flags_for_tls(certificate: tuple[Path, Path]) -> None:
    from roomer.cli import _parser, tls_context

    cert, key = certificate
    args = _parser().parse_args(["serve", "--certfile", str(cert), "--keyfile", str(key)])
    assert isinstance(tls_context(args), ssl.SSLContext)
    args = _parser().parse_args(["serve", "--keyfile", str(key)])
    with pytest.raises(SystemExit, match="--certfile"):
        tls_context(args)
    assert tls_context(_parser().parse_args(["serve"])) is None
