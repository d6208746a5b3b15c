"""A chat server: rooms, nicknames, one handler and one join hook.

Run it with ``python examples/chat.py`` (or ``roomer serve chat:server`` from this folder)
and talk to it with ``python examples/chat_client.py``, the bot (``examples/bot.py``) or
the page of ``examples/page``. The tutorial's first chapter builds it step by step.
"""

# --8<-- [start:server]
# --8<-- [start:setup]
import json
from urllib.parse import parse_qs, urlsplit

import roomer

server = roomer.Server()
# --8<-- [end:setup]
# --8<-- [start:nicknames]
nicknames: dict[str, str] = {}  # connection id -> nickname


@server.on_connect  # a hook: runs as a client connects (raise roomer.Deny to refuse it)
def arrive(conn: roomer.Connection) -> None:
    path = conn.request.path.decode("latin-1")  # "/ws?nick=ada": bytes, as sent
    query = parse_qs(urlsplit(path).query)
    nicknames[conn.id] = query.get("nick", ["guest"])[0][:24]


@server.on_disconnect
def depart(conn: roomer.Connection) -> None:
    nicknames.pop(conn.id, None)
# --8<-- [end:nicknames]


# --8<-- [start:who]
@server.on("who")  # a handler: "who" is answered here, not relayed to the room
def who(conn: roomer.Connection, msg: roomer.Message) -> None:
    names = {member: nicknames.get(member, "?") for member in server.members(msg.room)}
    conn.send("who", json.dumps(names), msg.room)  # to the sender only
# --8<-- [end:who]


# --8<-- [start:staff]
@server.on_join  # a hook: runs before a join; raising roomer.Deny refuses it
def keep_out_of_staff_rooms(conn: roomer.Connection, room: str) -> None:
    if room.startswith("staff-"):
        raise roomer.Deny("staff only")
# --8<-- [end:staff]


# --8<-- [start:main]
# Every other event ("chat" in the tutorial) has no handler: the server relays it to the
# room's other members as it came, with the sender's id as src (the fast path).

if __name__ == "__main__":
    server.run("127.0.0.1", 8080,
               on_started=lambda s: print("chat on ws://{}:{}/ws".format(*s.address)))
# --8<-- [end:main]
# --8<-- [end:server]
