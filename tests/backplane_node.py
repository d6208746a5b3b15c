"""One backplane node in a process of its own, for the tests that SIGKILL a node:
``python backplane_node.py URL PREFIX NODE_ID ROOM MEMBER...``. It joins the members to the
room, prints ``ready`` once the room is synced, then serves until killed."""

from __future__ import annotations

import asyncio
import sys

from roomer.backplane import Cluster, create


class Quiet:
    """Takes what other nodes send and does nothing with it."""

    def remote_frame(self, room: str, frame: bytes, exclude: str | None) -> None: ...
    def remote_frame_all(self, frame: bytes, exclude: str | None) -> None: ...
    def remote_direct(self, member: str, frame: bytes) -> bool:
        return True
    def remote_joined(self, room: str, member: str) -> None: ...
    def remote_left(self, room: str, member: str) -> None: ...
    def link_down(self) -> None: ...
    def link_up(self, down_for: float) -> None: ...


async def main(url: str, prefix: str, node_id: str, room: str, members: list[str]) -> None:
    cluster = Cluster(create(url), node_id=node_id, prefix=prefix)
    await cluster.start(Quiet())
    for member in members:
        cluster.local_connected(member)
        cluster.local_joined(room, member)
    await cluster.room_ready(room)
    await cluster.transport.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]))
