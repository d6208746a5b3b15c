"""Helpers of the backplane tests: a ClusterEvents that records what arrives, nodes started
together and closed after, waiting for a condition, and a TCP proxy that can cut one node
off its broker while the others keep theirs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from waiting import eventually

from roomer.backplane import Cluster, create

__all__ = ["Proxy", "Recorder", "eventually", "join", "nodes", "pause", "proxied"]


class Recorder:
    """Records every ClusterEvents call in arrival order (``log``), and by kind."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.frames: list[tuple[str, bytes, str | None]] = []
        self.all: list[tuple[bytes, str | None]] = []
        self.direct: list[tuple[str, bytes]] = []
        self.joined: list[tuple[str, str]] = []
        self.left: list[tuple[str, str]] = []
        self.holding: set[str] = set()  # ids remote_direct accepts
        self.links: list[tuple[str, float]] = []  # ("down", 0) / ("up", down_for)

    def remote_frame(self, room: str, frame: bytes, exclude: str | None) -> None:
        self.frames.append((room, frame, exclude))
        self.log.append(("frame", room, frame, exclude))

    def remote_frame_all(self, frame: bytes, exclude: str | None) -> None:
        self.all.append((frame, exclude))
        self.log.append(("all", frame, exclude))

    def remote_direct(self, member: str, frame: bytes) -> bool:
        self.direct.append((member, frame))
        self.log.append(("direct", member, frame))
        return member in self.holding

    def remote_joined(self, room: str, member: str) -> None:
        self.joined.append((room, member))
        self.log.append(("joined", room, member))

    def remote_left(self, room: str, member: str) -> None:
        self.left.append((room, member))
        self.log.append(("left", room, member))

    def link_down(self) -> None:
        self.links.append(("down", 0.0))
        self.log.append(("link_down",))

    def link_up(self, down_for: float) -> None:
        self.links.append(("up", down_for))
        self.log.append(("link_up", down_for))

    def present(self, room: str, start: set[str] | None = None) -> set[str]:
        """The remote members of ``room`` that the presence events add up to."""
        members = set(start or ())
        for entry in self.log:
            if entry[0] == "joined" and entry[1] == room:
                members.add(entry[2])
            elif entry[0] == "left" and entry[1] == room:
                members.discard(entry[2])
        return members


async def pause(pid: int, timeout: float = 5.0) -> None:
    """SIGSTOP ``pid`` and return once every thread of it is stopped (on a loaded machine
    one may still finish what it was doing: answer a PING, write a reply)."""
    os.kill(pid, signal.SIGSTOP)

    def stopped() -> bool:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                state = (task / "stat").read_text().rpartition(")")[2].split()[0]
            except (FileNotFoundError, IndexError):
                continue
            if state not in ("T", "t"):
                return False
        return True

    await eventually(stopped, timeout, what=f"process {pid} stopped")


@contextlib.asynccontextmanager
async def nodes(url: str | list[str], prefix: str, count: int,
                transport_options: dict[str, Any] | None = None, **options: Any,
                ) -> AsyncIterator[list[tuple[Cluster, Recorder]]]:
    """``count`` Clusters (node ids n0, n1, ...) started together, each with a Recorder;
    ``url`` may be one URL or one per node; ``transport_options`` go to each transport.
    Closed on exit."""
    urls = [url] * count if isinstance(url, str) else url
    # Nodes started together may miss each other's hello: the first waits sync_timeout.
    options.setdefault("sync_timeout", 0.25)
    transport = {"timeout": 2.0, "reconnect_max": 0.5, **(transport_options or {})}
    made = [(Cluster(create(urls[i], **transport), node_id=f"n{i}", prefix=prefix,
                     **options), Recorder()) for i in range(count)]
    await asyncio.gather(*(cluster.start(recorder) for cluster, recorder in made))
    try:
        yield made
    finally:
        for cluster, _ in made:
            await cluster.close()


async def join(cluster: Cluster, room: str, *members: str) -> None:
    """``members`` connect to ``cluster``'s node and join ``room``; back once it is ready."""
    for member in members:
        cluster.local_connected(member)
        cluster.local_joined(room, member)
    await cluster.room_ready(room)


async def proxied(url: str) -> tuple[Proxy, str]:
    """A started Proxy to the broker of ``url``, and the same URL through it."""
    scheme, _, rest = url.partition("://")
    host_port, _, path = rest.partition("/")
    proxy = Proxy(int(host_port.rsplit(":", 1)[1]))
    await proxy.start()
    return proxy, f"{scheme}://127.0.0.1:{proxy.port}" + (f"/{path}" if path else "")


class Proxy:
    """A TCP forwarder on a free port to ``target``; ``cut()`` drops its connections and
    stops listening, ``restore()`` listens again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._pipes.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._pipes.discard(writer)
        self._pipes.discard(up_writer)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for pipe in list(self._pipes):
            transport = pipe.transport
            transport.abort()
        self._pipes.clear()
        await self._server.wait_closed()
        self._server = None

    async def restore(self) -> None:
        await self.start()
