"""A bot in Python: joins a chat room and answers commands, for as long as it runs.

    python examples/bot.py [URL] [ROOM]

It talks to the chat server of ``examples/chat.py``: ``!roll`` gets a die roll, ``!count``
how many are in the room; it greets whoever joins. Ctrl-C stops it. When its connection
drops (a network blip), the client resumes its session by itself: the same id, still in the
room, every message it missed. When the server goes away, it connects again as a new
client.
"""

# --8<-- [start:bot]
import asyncio
import contextlib
import random
import sys

import roomer


def answer(room: roomer.Room, payload: bytes, sender: str) -> None:
    command = payload.decode(errors="replace").strip()
    if command == "!roll":
        room.send("chat", f"{sender[:8]} rolled {random.randint(1, 6)}")
    elif command == "!count":
        room.send("chat", f"{len(room.members())} here, me included")


async def run(url: str, room_name: str) -> None:
    root = await roomer.connect(f"{url}?nick=bot", resume=True)
    room = root.join(room_name)
    room.on("chat", lambda payload, sender: answer(room, payload, sender))
    room.on("new_member", lambda member: room.send("chat", f"welcome, {member[:8]}"))
    await room  # joined: handlers were in place before anything could arrive
    root.on("resumed", lambda *_: print(f"bot back in {room_name} as {root.id()}", flush=True))
    closed = asyncio.Event()
    root.on("close", closed.set)  # the connection is gone for good
    print(f"bot in {room_name} as {root.id()}", flush=True)
    await closed.wait()


async def main(url: str, room_name: str) -> None:
    while True:
        try:
            await run(url, room_name)
        except (OSError, roomer.RoomerError) as exc:  # refused, lost, timed out
            print(f"connection failed: {exc!r}", flush=True)
        await asyncio.sleep(1)  # then connect again


if __name__ == "__main__":
    defaults = ["ws://127.0.0.1:8080/ws", "lobby"]
    given = sys.argv[1:3]
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C
        asyncio.run(main(*given, *defaults[len(given):]))
# --8<-- [end:bot]
