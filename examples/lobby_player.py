"""A player for the lobby of ``examples/lobby.py``: looks at the table list, sits at the
first table with a free seat, steers, and prints what it sees for a number of ticks.

    python examples/lobby_player.py [URL] [--ticks N]
"""

# --8<-- [start:player]
import argparse
import asyncio
import json

import roomer


async def play(url: str, ticks: int) -> None:
    root = await roomer.connect(url)
    lobby = root.join("lobby")  # handlers first, then wait: the list comes right behind
    lists: asyncio.Queue[list[dict]] = asyncio.Queue()
    lobby.on("tables", lambda payload, sender: lists.put_nowait(json.loads(payload)))
    await lobby
    for entry in await asyncio.wait_for(lists.get(), timeout=5):
        if entry["taken"] < entry["seats"]:
            try:
                table = await root.join(entry["table"])
                break
            except roomer.ClientError as refused:  # taken meanwhile: try the next one
                print(f"{entry['table']}: {refused.code} ({refused.server_message})")
    else:
        raise SystemExit("every table is full")
    print(f"seated at {table.name} with {len(table.members()) - 1} others", flush=True)

    states: asyncio.Queue[dict] = asyncio.Queue()
    table.on("state", lambda payload, sender: states.put_nowait(json.loads(payload)))
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
    parser.add_argument("--ticks", type=int, default=40, help="states to print")
    args = parser.parse_args()
    asyncio.run(play(args.url, args.ticks))
# --8<-- [end:player]
