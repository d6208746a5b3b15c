"""Servers the harness measures: roomer itself and the peers it is compared with.

Each runs in its own process (``python -m roomer.benchmark.peers NAME --port P``) so the harness
can read that process's CPU time and peak RSS. Every peer speaks the same minimal protocol as
roomer — a ``root`` ``join_ack`` carrying the client's id at connect, ``join`` answered by a
``join_ack``, any other event relayed to the room's other members with src set to the sender's
id — so one load generator serves them all and the relayed frame is byte-identical. Each relay is
written the idiomatic fast way for its library. Peers send no presence (``new_member``): setup
traffic is not measured, and roomer's presence is let settle before counting starts.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import signal
import sys
import uuid
from collections.abc import Callable
from typing import Any

from roomer.benchmark import wire
from roomer.benchmark.procs import die_with_parent, raise_nofile

__all__ = ["NEEDS", "PEERS", "main", "missing", "roomer_supports", "runnable"]

HOST = "127.0.0.1"
MAX_MESSAGE = 1 << 20

# Name -> (description, needs optional dependency). Frame-level peers share the wire format;
# socketio speaks its own protocol and is measured with socketio clients.
PEERS: dict[str, str] = {
    "roomer": "roomer Server (async broadcaster)",
    "roomer-sync": "roomer Server(sync_broadcast=True)",
    "roomer-limits": "roomer Server with its default rate, byte and error limits kept",
    "picows": "raw picows, transport.send per receiver",
    "picows-rb2k": "raw picows, read_buffer_init_size=2048 (its minimum)",
    "websockets": "websockets asyncio server, websockets.broadcast",
    "aiohttp": "aiohttp WebSocketResponse, send_bytes per receiver",
    "socketio": "python-socketio on aiohttp, emit(to=room, skip_sid=)",
}

# What a peer imports beyond roomer's own dependencies, and the extra that installs it.
NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "websockets": (("websockets",), "bench"),
    "aiohttp": (("aiohttp",), "bench"),
    "socketio": (("socketio", "aiohttp"), "bench-socketio"),
}


def missing(name: str) -> str | None:
    """Why peer ``name`` cannot run here (a module it needs is not installed, and the
    command that installs it), or None when it can."""
    modules, extra = NEEDS.get(name, ((), ""))
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if not absent:
        return None
    return f"{', '.join(absent)} not installed: pip install 'roomer[{extra}]'"


def runnable(names: list[str]) -> tuple[list[str], list[str]]:
    """The peers among ``names`` whose libraries are installed, and a line for each one
    skipped saying which extra installs it (``pip install .`` has roomer's dependencies
    only, not the peers')."""
    ok, notes = [], []
    for name in names:
        why = missing(name)
        if why is None:
            ok.append(name)
        else:
            notes.append(f"skipped {name}: {why}")
    return ok, notes


def _join_ack(room: str, cid: str) -> bytes:
    # The payload lists only the joiner: the member list is setup traffic, not measured.
    return wire.encode(room, "join_ack", "", cid, json.dumps([cid]).encode())


def _root_ack(cid: str) -> bytes:
    return _join_ack("root", cid)


# --------------------------------------------------------------------------- raw picows


def _serve_picows(port: int, read_buffer: int | None) -> None:
    import picows

    binary = picows.WSMsgType.BINARY
    rooms: dict[str, dict[str, picows.WSTransport]] = {}

    class Relay(picows.WSListener):
        def __init__(self) -> None:
            self.cid = str(uuid.uuid4())
            self.rooms: list[str] = []

        def on_ws_connected(self, transport: picows.WSTransport) -> None:
            transport.send(binary, _root_ack(self.cid))

        def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
            if frame.msg_type == picows.WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()
                return
            if frame.msg_type not in (binary, picows.WSMsgType.TEXT):
                return
            try:
                room, event, _, _, payload = wire.decode(frame.get_payload_as_bytes())
            except ValueError:
                return
            if event == "join":
                rooms.setdefault(room, {})[self.cid] = transport
                self.rooms.append(room)
                transport.send(binary, _join_ack(room, self.cid))
                return
            members = rooms.get(room)
            if not members or self.cid not in members:
                return
            # Encode once; one send (one write syscall when nothing is queued) per receiver.
            out = wire.encode(room, event, "", self.cid, payload)
            for other in members.values():
                if other is not transport:
                    other.send(binary, out)

        def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
            for room in self.rooms:
                members = rooms.get(room)
                if members is not None:
                    members.pop(self.cid, None)

    async def main() -> None:
        kwargs: dict[str, Any] = {"max_frame_size": MAX_MESSAGE}
        if read_buffer is not None:
            kwargs["read_buffer_init_size"] = read_buffer
        server = await picows.ws_create_server(lambda _req: Relay(), HOST, port, **kwargs)
        await _serve_until_signal(server.close)

    _run(main())


# --------------------------------------------------------------------------- websockets


def _serve_websockets(port: int) -> None:
    import websockets
    from websockets.asyncio.server import ServerConnection, serve

    rooms: dict[str, dict[str, ServerConnection]] = {}

    async def handler(ws: ServerConnection) -> None:
        cid = str(uuid.uuid4())
        joined: list[str] = []
        await ws.send(_root_ack(cid))
        try:
            async for body in ws:
                if isinstance(body, str):
                    body = body.encode()
                try:
                    room, event, _, _, payload = wire.decode(body)
                except ValueError:
                    continue
                if event == "join":
                    rooms.setdefault(room, {})[cid] = ws
                    joined.append(room)
                    await ws.send(_join_ack(room, cid))
                    continue
                members = rooms.get(room)
                if members and cid in members:
                    out = wire.encode(room, event, "", cid, payload)
                    websockets.broadcast((c for c in members.values() if c is not ws), out)
        finally:
            for room in joined:
                rooms.get(room, {}).pop(cid, None)

    async def main() -> None:
        # No keepalive pings: a ping would add bytes the byte-counting load generator can't tell
        # from deliveries. No compression: no other peer compresses.
        async with serve(
            handler, HOST, port, ping_interval=None, compression=None, max_size=MAX_MESSAGE
        ) as server:
            await _serve_until_signal(server.close)

    _run(main())


# --------------------------------------------------------------------------- aiohttp


def _serve_aiohttp(port: int) -> None:
    from aiohttp import WSMsgType, web

    rooms: dict[str, dict[str, web.WebSocketResponse]] = {}

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, heartbeat=None, max_msg_size=MAX_MESSAGE)
        await ws.prepare(request)
        cid = str(uuid.uuid4())
        joined: list[str] = []
        await ws.send_bytes(_root_ack(cid))
        try:
            async for msg in ws:
                if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                    continue
                body = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
                try:
                    room, event, _, _, payload = wire.decode(body)
                except ValueError:
                    continue
                if event == "join":
                    rooms.setdefault(room, {})[cid] = ws
                    joined.append(room)
                    await ws.send_bytes(_join_ack(room, cid))
                    continue
                members = rooms.get(room)
                if members and cid in members:
                    out = wire.encode(room, event, "", cid, payload)
                    # Uncompressed send_bytes writes synchronously and only suspends when the
                    # receiver's transport is paused: the cheapest per-receiver path aiohttp has.
                    for other in list(members.values()):
                        if other is not ws:
                            await other.send_bytes(out)
        finally:
            for room in joined:
                rooms.get(room, {}).pop(cid, None)
        return ws

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/ws", ws_handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, HOST, port)
        await site.start()
        await _serve_until_signal(lambda: None)
        await runner.cleanup()

    _run(main())


# --------------------------------------------------------------------------- python-socketio


def _serve_socketio(port: int, backplane: str | None, prefix: str) -> None:
    import socketio
    from aiohttp import web

    options: dict[str, Any] = {}
    if backplane is not None:
        # python-socketio's own scale-out: every emit is published on one Redis channel
        # that every server subscribes to, and each delivers to its local room members.
        options["client_manager"] = socketio.AsyncRedisManager(backplane, channel=prefix)
    sio = socketio.AsyncServer(
        async_mode="aiohttp", max_http_buffer_size=MAX_MESSAGE, ping_interval=60,
        ping_timeout=60, **options
    )

    room_of: dict[str, str] = {}  # each client's room: the lobby, or its game room

    @sio.on("join")
    async def join(sid: str, room: str) -> str:
        await sio.enter_room(sid, room)
        room_of[sid] = room
        return sid

    @sio.on("chat")
    async def chat(sid: str, data: bytes) -> None:
        room = room_of.get(sid)
        if room is not None:
            await sio.emit("chat", data, to=room, skip_sid=sid)

    @sio.on("disconnect")
    async def disconnect(sid: str, *_reason: Any) -> None:
        room_of.pop(sid, None)

    async def main() -> None:
        app = web.Application()
        sio.attach(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, HOST, port).start()
        await _serve_until_signal(lambda: None)
        await runner.cleanup()

    _run(main())


# --------------------------------------------------------------------------- roomer


def roomer_supports(option: str) -> bool:
    """Whether this roomer's Server has ``option`` (the harness passes newer options only
    to a roomer that has them, and says so when it does not)."""
    import dataclasses

    from roomer.config import Config

    return option in {f.name for f in dataclasses.fields(Config)}


def _serve_roomer(port: int, sync: bool, read_buffer: int, backplane: str | None = None,
                  prefix: str = "roomer", node_id: str | None = None,
                  write_delay_ms: float | None = None, limits: bool = False,
                  poll_interval_ms: float | None = None) -> None:
    from roomer import Server

    # The publisher sends far past the per-client rate limit on purpose: this measures
    # fan-out, so the abuse limits are off (a real lobby keeps them: roomer-limits, for
    # loads within them such as the game lobby's).
    options: dict[str, Any] = {}
    if not limits:
        options.update(rate_limit=None, byte_limit=None, error_limit=None)
    if backplane is not None:
        options.update(backplane=backplane, backplane_prefix=prefix, node_id=node_id)
    if write_delay_ms is not None:
        if not roomer_supports("write_delay"):
            raise SystemExit("this roomer has no write_delay option")
        options["write_delay"] = write_delay_ms / 1000.0  # roomer's durations are seconds
    if poll_interval_ms is not None:
        if not roomer_supports("poll_interval"):
            raise SystemExit("this roomer has no poll_interval option")
        options["poll_interval"] = poll_interval_ms / 1000.0
    server = Server(sync_broadcast=sync, read_buffer_size=read_buffer, **options)
    server.run(host=HOST, port=port)


# --------------------------------------------------------------------------- plumbing


def _run(coro: Any) -> None:
    import uvloop

    uvloop.run(coro)


async def _serve_until_signal(close: Callable[[], Any]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    close()


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    raise_nofile()  # soft limit up to the hard one: a big lobby holds many sockets
    parser = argparse.ArgumentParser(prog="python -m roomer.benchmark.peers")
    parser.add_argument("name", choices=sorted(PEERS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--read-buffer",
        type=int,
        default=2048,
        help="roomer read_buffer_size (picows-rb2k always uses 2048, picows' minimum)",
    )
    parser.add_argument(
        "--backplane",
        default=None,
        metavar="URL",
        help="roomer: Server(backplane=URL); socketio: AsyncRedisManager(URL) (cross-node runs)",
    )
    parser.add_argument("--backplane-prefix", default="roomer", metavar="PREFIX",
                        help="roomer's backplane_prefix, socketio's Redis channel")
    parser.add_argument("--node-id", default=None, help="roomer's node_id")
    parser.add_argument("--write-delay", type=float, default=None, metavar="MS",
                        help="roomer's write_delay, in milliseconds (where it has one)")
    parser.add_argument("--poll-interval", type=float, default=None, metavar="MS",
                        help="roomer's poll_interval, in milliseconds (where it has one)")
    args = parser.parse_args(argv)
    name = args.name
    if args.backplane is not None and not name.startswith(("roomer", "socketio")):
        parser.error(f"{name} has no backplane")
    for option, value in (("write_delay", args.write_delay),
                          ("poll_interval", args.poll_interval)):
        if value is not None and not name.startswith("roomer"):
            parser.error(f"{name} has no {option}")
    if name.startswith("roomer"):
        _serve_roomer(args.port, name == "roomer-sync", args.read_buffer, args.backplane,
                      args.backplane_prefix, args.node_id, args.write_delay,
                      limits=name == "roomer-limits", poll_interval_ms=args.poll_interval)
    elif name == "picows":
        _serve_picows(args.port, None)
    elif name == "picows-rb2k":
        _serve_picows(args.port, 2048)
    elif name == "websockets":
        _serve_websockets(args.port)
    elif name == "aiohttp":
        _serve_aiohttp(args.port)
    elif name == "socketio":
        _serve_socketio(args.port, args.backplane, args.backplane_prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
