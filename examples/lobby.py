"""A game lobby: tables of 4 seats, a live table list and a 20 Hz game tick.

Built on plain rooms, hooks and handlers (the tutorial's second chapter):

- room ``lobby`` is where players see the tables: the server sends its members ``tables``,
  a JSON list of ``{"table": name, "taken": n, "seats": 4}``, when they join and whenever
  a seat is taken or freed (at most once per tick);
- joining room ``table-N`` takes a seat; a join hook refuses an unknown table, a full one,
  and a second seat;
- at a table, ``steer`` (JSON ``[dx, dy]``, each -1, 0 or 1) sets a player's direction, and
  every tick (20 a second) the server moves everyone and sends the table ``state``:
  ``{"tick": n, "players": {id: [x, y]}}``.

Run it with ``python examples/lobby.py`` (or ``roomer serve lobby:server`` from this
folder) and play with ``python examples/lobby_player.py``.
"""

# --8<-- [start:state]
import asyncio
import json

import roomer

TABLES = tuple(f"table-{n}" for n in range(1, 9))
SEATS = 4
TICK = 1 / 20  # seconds: 20 updates a second
SIZE = 100  # the field is SIZE x SIZE

server = roomer.Server()
seat_of: dict[str, str] = {}  # connection id -> its table
# table -> {connection id -> [x, y, dx, dy]} of the players seated there
positions: dict[str, dict[str, list[int]]] = {table: {} for table in TABLES}
changed = asyncio.Event()  # a seat was taken or freed since the last table list
# --8<-- [end:state]


# --8<-- [start:tables]
def table_list() -> str:
    return json.dumps([{"table": table, "taken": len(positions[table]), "seats": SEATS}
                       for table in TABLES])


@server.on_join
def take_a_seat(conn: roomer.Connection, room: str) -> None:
    if not room.startswith("table-"):
        return  # "lobby" and any other room: no seats involved
    if room not in positions:
        raise roomer.Deny("no such table")
    if conn.id in seat_of:
        raise roomer.Deny(f"already seated at {seat_of[conn.id]}")
    if len(server.members(room)) >= SEATS:
        raise roomer.Deny("table full")


@server.on_joined
def seated(conn: roomer.Connection, room: str) -> None:
    if room == "lobby":
        conn.send("tables", table_list(), "lobby")  # the newcomer gets the list at once
    elif room in positions:
        seat_of[conn.id] = room
        positions[room][conn.id] = [SIZE // 2, SIZE // 2, 0, 0]
        changed.set()


@server.on_left
def stood_up(conn: roomer.Connection, room: str) -> None:
    if seat_of.get(conn.id) == room:  # also runs when a seated player disconnects
        del seat_of[conn.id]
        del positions[room][conn.id]
        changed.set()
# --8<-- [end:tables]


# --8<-- [start:steer]
@server.on("steer")
def steer(conn: roomer.Connection, msg: roomer.Message) -> None:
    player = positions.get(msg.room, {}).get(conn.id)
    if player is None:
        raise roomer.Deny("sit at a table first")  # the client gets error handler_error
    try:
        dx, dy = json.loads(msg.payload)
        assert dx in (-1, 0, 1) and dy in (-1, 0, 1)
    except (ValueError, TypeError, AssertionError):
        raise roomer.Deny("steer takes [dx, dy], each -1, 0 or 1") from None
    player[2:] = [dx, dy]
# --8<-- [end:steer]


# --8<-- [start:tick]
async def tick() -> None:
    """The game loop: 20 times a second, move every seated player and send each
    table its state; send the lobby a new table list when seats changed."""
    loop = asyncio.get_running_loop()
    count, next_at = 0, loop.time()
    while True:
        count += 1
        for table, players in positions.items():
            if not players:
                continue
            for player in players.values():
                player[0] = min(SIZE, max(0, player[0] + player[2]))
                player[1] = min(SIZE, max(0, player[1] + player[3]))
            state = {"tick": count,
                     "players": {pid: p[:2] for pid, p in players.items()}}
            server.broadcast(table, "state", json.dumps(state))  # one encode per table
        if changed.is_set():
            changed.clear()
            server.broadcast("lobby", "tables", table_list())
        next_at += TICK  # a steady rate: a slow tick does not push the next ones back
        await asyncio.sleep(max(0.0, next_at - loop.time()))


ticker: list[asyncio.Task[None]] = []


@server.on_connect
def start_ticking(conn: roomer.Connection) -> None:
    if not ticker:  # the first connection: the server's loop is running now
        ticker.append(asyncio.get_running_loop().create_task(tick()))
# --8<-- [end:tick]


if __name__ == "__main__":
    server.run("127.0.0.1", 8080,
               on_started=lambda s: print("lobby on ws://{}:{}/ws".format(*s.address)))
