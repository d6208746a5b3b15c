"""A player for the tables of ``examples/tables.py``: watches the table list, takes a seat
with one ask (join-or-create), steers, and prints what it sees for a number of ticks. When
its connection drops, or its server restarts beside another node of the cluster, it
resumes its session: the same seat, and every tick once.

    python examples/table_player.py [URL] [--name NAME] [--ticks N]
"""

# --8<-- [start:player]
import argparse
import asyncio
import json

import roomer


async def play(url: str, name: str, ticks: int) -> None:
    # Game rooms are found with asks (v2); a session survives drops and restarts.
    root = await roomer.connect(url, protocol="v2", resume=True)
    tables = await root.watch_rooms("table")
    print(f"{len(tables.rooms)} tables open", flush=True)

    table = root.join_or_create("table", {"name": name})  # the room at once...
    states: asyncio.Queue[dict] = asyncio.Queue()
    table.on("state", lambda payload, sender: states.put_nowait(json.loads(payload)))
    try:
        await table  # ...seated once the server answered
    except roomer.ClientError as refused:
        raise SystemExit(f"refused: {refused.code} ({refused.server_message})") from None
    print(f"seated at {table.name} with {len(table.members()) - 1} others", flush=True)
    root.on("resumed", lambda *_: print(f"back at {table.name}, still seated", flush=True))

    table.send("steer", json.dumps([1, -1]))  # towards the top right corner
    for _ in range(ticks):
        state = await asyncio.wait_for(states.get(), timeout=5)
        x, y = state["players"][root.id()]
        seated = len(state["players"])
        print(f"tick {state['tick']}: at ({x}, {y}), {seated} at the table", flush=True)
    await root.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:8080/ws")
    parser.add_argument("--name", default="", help="the name to sit with")
    parser.add_argument("--ticks", type=int, default=40, help="states to print")
    args = parser.parse_args()
    asyncio.run(play(args.url, args.name, args.ticks))
# --8<-- [end:player]
