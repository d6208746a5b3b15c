"""A page with roomer.js: the server serves the page (``static_dir``) and the browser
client (``/roomer.js``, built in) on the port of the WebSocket.

    python examples/page/app.py          # then open http://127.0.0.1:8080/ in two tabs

The page chats (relayed by the server, no handler) and shares a click counter per room:
``click`` is a v2 ask, whose reply is the new count; the others get a ``count`` event.
"""

# --8<-- [start:app]
from pathlib import Path

import roomer

server = roomer.Server(static_dir=Path(__file__).with_name("static"))  # / is index.html
clicks: dict[str, int] = {}  # room -> clicks so far


@server.on("click")
def click(conn: roomer.Connection, msg: roomer.Message) -> int:
    clicks[msg.room] = clicks.get(msg.room, 0) + 1
    server.broadcast(msg.room, "count", str(clicks[msg.room]), exclude=conn)  # others
    return clicks[msg.room]  # the asker's reply (JSON)


@server.on_joined
def tell_the_count(conn: roomer.Connection, room: str) -> None:
    conn.send("count", str(clicks.get(room, 0)), room)


if __name__ == "__main__":
    server.run("127.0.0.1", 8080,
               on_started=lambda s: print("page on http://{}:{}/".format(*s.address)))
# --8<-- [end:app]
