"""The fan-out engine on real picows transports over loopback, both twins.

tests/test_fanout.py drives the engine with recording fakes; here every write goes the
production way (the compiled twin's cdef ``WSTransport._fast_write``, the pure twin's
``underlying_transport.write``) to real sockets, and what arrives is parsed by a real
picows client. The compiled twin's read-buffer trimming is checked here too.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import socket
import subprocess
import sys
from typing import Any

import picows
import pytest
from waiting import eventually, scaled, suspend

from roomer import _codec_py

PURE_ONLY = os.environ.get("ROOMER_NO_EXTENSIONS") == "1"
needs_compiled = pytest.mark.skipif(PURE_ONLY, reason="ROOMER_NO_EXTENSIONS=1 forces pure")


class Receiver(picows.WSListener):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.payloads: list[bytes] = []
        self.arrived = asyncio.Event()
        self.want = 0
        self.transport: Any = None

    def on_ws_connected(self, transport: Any) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        if frame.msg_type == picows.WSMsgType.BINARY:
            self.payloads.append(frame.get_payload_as_bytes())
            if len(self.payloads) >= self.want:
                self.arrived.set()


async def _setup(impl: Any, n: int, **engine_options: Any) -> tuple[Any, list[Any], list[Any],
                                                                   Any]:
    loop = asyncio.get_running_loop()
    engine = impl.Fanout(loop, **engine_options)
    peers: list[Any] = []

    class ServerPeer(impl.Peer):  # type: ignore[misc, name-defined]
        def on_ws_connected(self, transport: Any) -> None:
            self.attach(transport)
            peers.append(self)

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.last_in_buffer:
                self.read_done()

    server = await picows.ws_create_server(lambda _req: ServerPeer(engine), "127.0.0.1", 0,
                                           read_buffer_init_size=2048,
                                           max_frame_size=8 << 20)
    port = server.sockets[0].getsockname()[1]
    clients = []
    for _ in range(n):
        _, client = await picows.ws_connect(Receiver, f"ws://127.0.0.1:{port}/")
        clients.append(client)
    await eventually(lambda: len(peers) == n, what=f"{n} peers accepted")
    return engine, peers, clients, server


def _body(i: int, size: int) -> bytes:
    return _codec_py.encode("room", "ev", "", f"src{i:06d}", b"p" * size)


async def test_real_transports_get_every_frame_in_order(fanout_impl: Any) -> None:
    engine, peers, clients, server = await _setup(fanout_impl, 20)
    try:
        members = {str(i): p for i, p in enumerate(peers)}
        bodies = [_body(i, i % 300) for i in range(500)]
        for client in clients:
            client.want = len(bodies)
        for i in range(len(bodies)):
            assert engine.broadcast(members, _codec_py.encode_frame(
                "room", "ev", "", f"src{i:06d}", b"p" * (i % 300))) == 20
            if i % 50 == 49:
                await suspend()  # a few turns: corked writes in between
        await asyncio.wait_for(asyncio.gather(*(c.arrived.wait() for c in clients)), scaled(10))
        for client in clients:
            assert client.payloads == bodies
        stats = engine.stats
        assert stats["deliveries"] == 20 * 500 and stats["dropped"] == 0
        assert stats["writes"] < stats["deliveries"] / 10  # corked: many frames per write
    finally:
        server.close()
        for c in clients:
            c.transport.disconnect()


async def test_a_receiver_that_stops_reading_is_bounded_and_counted(fanout_impl: Any) -> None:
    limit = 64 * 1024
    engine, peers, clients, server = await _setup(fanout_impl, 2, outbox_limit=limit,
                                                  flush_threshold=16 * 1024)
    try:
        stuck, healthy = clients
        stuck.transport.underlying_transport.pause_reading()
        # Small kernel buffers on both sides, so the stuck socket fills within the test.
        stuck_sock = stuck.transport.underlying_transport.get_extra_info("socket")
        stuck_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        for peer in peers:
            peer.transport.underlying_transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        members = {"a": peers[0], "b": peers[1]}
        frame = _codec_py.encode_frame("room", "ev", "", "s", b"x" * 1000)
        healthy.want = 3000
        for i in range(3000):
            engine.broadcast(members, frame)
            if i % 20 == 0:
                await suspend()  # the healthy one's writes go out in between
        await asyncio.wait_for(healthy.arrived.wait(), scaled(20))
        assert len(healthy.payloads) == 3000
        stuck_peer = next(p for p in peers if p.dropped)
        assert stuck_peer.writing_paused  # picows told it the socket is full
        assert stuck_peer.pending <= limit
        assert engine.stats["dropped"] == stuck_peer.dropped > 0
    finally:
        server.close()
        for c in clients:
            c.transport.disconnect()


@needs_compiled
async def test_compiled_peer_writes_through_picows_fast_write() -> None:
    """The compiled twin holds the WSTransport itself (no Python write callable)."""
    compiled = importlib.import_module("roomer._fanout")
    _, peers, clients, server = await _setup(compiled, 1)
    try:
        assert peers[0].read_buffer_capacity >= 2048  # found picows' read buffer
        clients[0].want = 1
        peers[0].send_frame(_codec_py.encode_frame("r", "e", "", "", b"hi"))
        await asyncio.wait_for(clients[0].arrived.wait(), scaled(5))
        assert clients[0].payloads == [_codec_py.encode("r", "e", "", "", b"hi")]
    finally:
        server.close()
        clients[0].transport.disconnect()


@needs_compiled
@pytest.mark.parametrize("shape", ["one big frame", "a flood of small frames"])
async def test_compiled_peer_gives_back_a_grown_read_buffer(shape: str) -> None:
    compiled = importlib.import_module("roomer._fanout")
    engine, peers, clients, server = await _setup(compiled, 1)
    try:
        peer, client = peers[0], clients[0]
        base = peer.read_buffer_capacity
        if shape == "one big frame":
            client.transport.send(picows.WSMsgType.BINARY, b"x" * (2 << 20))
        else:
            for _ in range(4):
                client.transport.send(picows.WSMsgType.BINARY, b"y" * 100_000)
        await eventually(lambda: engine.stats["read_buffer_trims"]
                         and peer.read_buffer_capacity == base, what="the read buffer trimmed")
        assert engine.stats["read_buffer_trims"] >= 1
        assert peer.read_buffer_capacity == base
        # the connection still reads: the next message arrives whole
        peer.send_frame(_codec_py.encode_frame("r", "e", "", "", b"ok"))
        client.want = 1
        await asyncio.wait_for(client.arrived.wait(), scaled(5))
    finally:
        server.close()
        for c in clients:
            c.transport.disconnect()


@needs_compiled
def test_compiled_fanout_refuses_another_picows_version() -> None:
    code = ("import picows; picows.__version__ = '0.0.1'\n"
            "try:\n    import roomer._fanout\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=scaled(60), check=True).stdout
    assert out.startswith("ExtensionMismatch ")
    assert "compiled against picows 2.3.1" in out and "0.0.1 is installed" in out
    # and roomer.fanout does not hide it behind the pure twin
    code = code.replace("import roomer._fanout", "import roomer.fanout")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=scaled(60), check=True).stdout
    assert out.startswith("ExtensionMismatch ")
