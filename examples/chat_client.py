"""A terminal chat client: ``python examples/chat_client.py [URL] [ROOM] [NICK]``.

Lines you type go to the room; what the others say is printed. ``/who`` asks the server
who is in the room (the chat server's ``who`` handler). Ctrl-D or Ctrl-C leaves.
"""

# --8<-- [start:client]
import asyncio
import contextlib
import json
import sys
from urllib.parse import quote

import roomer


async def main(url: str, room_name: str, nick: str) -> None:
    root = await roomer.connect(f"{url}?nick={quote(nick)}")  # the server gives us an id
    room = root.join(room_name)  # handlers first, then wait for the server's join_ack
    room.on("chat", lambda payload, sender: print(f"{sender[:8]}: {payload.decode()}"))
    room.on("who", lambda payload, sender: print("here:", *json.loads(payload).values()))
    room.on("new_member", lambda member: print(f"{member[:8]} joined"))
    room.on("member_left", lambda member: print(f"{member[:8]} left"))
    await room  # raises roomer.ClientError if the server refuses the join
    print(f"in {room_name} as {root.id()[:8]}; type to chat, /who, Ctrl-D to leave")

    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):  # "" at Ctrl-D
        text = line.strip()
        if text == "/who":
            room.send("who")
        elif text:
            room.send("chat", text)  # relayed to everyone else in the room
    await root.close()


if __name__ == "__main__":
    defaults = ["ws://127.0.0.1:8080/ws", "lobby", "guest"]
    given = sys.argv[1:4]
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C
        asyncio.run(main(*given, *defaults[len(given):]))
# --8<-- [end:client]
