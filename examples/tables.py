"""The game lobby of chapter 2 on game rooms (the tutorial's third chapter): tables of 4
seats, a live table list and a 20 Hz game tick, each table's state and tick owned by its
room, on one node or many.

- a table is a ``Table``, a ``roomer.GameRoom``: ``join_or_create("table")`` seats a
  player at a table with a free seat, or opens one; a full table locks itself;
- clients watch the list of tables (``watch_rooms("table")``): seats taken, locked;
- at a table, ``steer`` (JSON ``[dx, dy]``, each -1, 0 or 1) sets a player's direction,
  and every tick (20 a second, on the table's node only) the table moves everyone and
  sends its members ``state``: ``{"tick": n, "players": {id: [x, y]}}``;
- a table refuses a name that is taken there.

Run it with ``python examples/tables.py`` (or ``roomer serve tables:setup`` from this
folder; ``roomer serve tables:setup --workers 2 --backplane redis://127.0.0.1:6379/0`` for
two nodes) and play with ``python examples/table_player.py``.
"""

# --8<-- [start:table]
import json

import roomer

SIZE = 100  # the field is SIZE x SIZE


class Table(roomer.GameRoom):
    max_clients = 4  # a full table locks itself, and unlocks when a seat frees
    tick_rate = 20  # on_tick 20 times a second, on this table's node only

    def on_create(self, options):
        self.positions = {}  # player id -> [x, y, dx, dy]: the game's state
# --8<-- [end:table]

    # --8<-- [start:seats]
    def on_join(self, player):
        name = str(player.options.get("name", ""))
        taken = [p.options.get("name") for p in self.players.values()]
        if name and name in taken:
            raise roomer.Deny(f"someone at this table is called {name} already")

    def on_joined(self, player):
        self.positions[player.id] = [SIZE // 2, SIZE // 2, 0, 0]

    def on_left(self, player, consented):
        del self.positions[player.id]  # also when the player's connection dropped
    # --8<-- [end:seats]

    # --8<-- [start:steer]
    @roomer.on_message("steer")
    def steer(self, player, msg):
        try:
            dx, dy = json.loads(msg.payload)
            assert dx in (-1, 0, 1) and dy in (-1, 0, 1)
        except (ValueError, TypeError, AssertionError):
            raise roomer.Deny("steer takes [dx, dy], each -1, 0 or 1") from None
        self.positions[player.id][2:] = [dx, dy]
    # --8<-- [end:steer]

    # --8<-- [start:tick]
    def on_tick(self, dt):
        for p in self.positions.values():
            p[0] = min(SIZE, max(0, p[0] + p[2]))
            p[1] = min(SIZE, max(0, p[1] + p[3]))
        state = {"tick": self.ticks,
                 "players": {pid: p[:2] for pid, p in self.positions.items()}}
        self.broadcast("state", json.dumps(state))  # one encode per node, every member
    # --8<-- [end:tick]


# --8<-- [start:server]
def setup(server):
    """The app for ``roomer serve tables:setup`` (its flags build the server)."""
    server.define("table", Table)


server = roomer.Server()  # for ``python tables.py`` and ``roomer serve tables:server``
setup(server)

if __name__ == "__main__":
    server.run("127.0.0.1", 8080,
               on_started=lambda s: print("tables on ws://{}:{}/ws".format(*s.address)))
# --8<-- [end:server]
