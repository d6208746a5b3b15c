"""Plain HTTP/1.x by hand on a bare socket: the request bytes exactly as given, the answer
read to the end, so a test sees every byte the server sent (or that it sent nothing)."""

from __future__ import annotations

import asyncio
import socket
from typing import NamedTuple

TIMEOUT = 10.0


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]  # names lowercased; a repeated header keeps its last value
    body: bytes  # everything after the blank line, to the end of the connection
    raw: bytes  # every byte the server sent


def parse(raw: bytes) -> Reply:
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete head in {raw[:300]!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, status, _ = status_line.split(" ", 2)
    assert version == "HTTP/1.1", status_line
    headers = {}
    for line in lines:
        name, colon, value = line.partition(":")
        assert colon, line
        headers[name.strip().lower()] = value.strip()
    return Reply(int(status), headers, body, raw)


async def open_socket(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def read_to_end(sock: socket.socket, timeout: float = TIMEOUT) -> bytes:
    """Every byte until the server closes (a reset ends it too: what came is returned)."""
    loop = asyncio.get_running_loop()
    data = bytearray()
    while True:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), timeout)
        except ConnectionResetError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


async def exchange(port: int, request: bytes, timeout: float = TIMEOUT) -> Reply:
    """Send ``request`` verbatim and read the answer to the connection's end."""
    sock = await open_socket(port)
    try:
        await asyncio.get_running_loop().sock_sendall(sock, request)
        return parse(await read_to_end(sock, timeout))
    finally:
        sock.close()


def get(path: str, method: str = "GET", version: str = "HTTP/1.1", **headers: str) -> bytes:
    """A request head: ``Host: x`` and the given headers (``If_None_Match`` ->
    ``If-None-Match``)."""
    lines = [f"{method} {path} {version}", "Host: x"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
