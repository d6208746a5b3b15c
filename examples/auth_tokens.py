"""Authentication with signed tokens: ``authorize`` checks a token at the upgrade and its
claims follow the connection; hooks decide with them.

- a token is ``user.role.expiry.signature`` (HMAC-SHA256 with a server secret); clients send
  it as ``Authorization: Bearer <token>`` or, from a browser (which cannot set headers on a
  WebSocket), as ``?token=<token>`` in the URL;
- no token, a bad one or an expired one: HTTP 401, nothing else said;
- ``on_connect`` (async: it may query a database) refuses banned users: close 1008;
- rooms ``admin-*`` are for the ``admin`` role; ``whoami`` tells a client its claims.

    ROOMER_SECRET=... python examples/auth_tokens.py              # the server, on :8080
    ROOMER_SECRET=... python examples/auth_tokens.py token ada admin   # prints a token
"""

# --8<-- [start:tokens]
import asyncio
import hashlib
import hmac
import json
import os
import sys
import time
from urllib.parse import parse_qs, urlsplit

import roomer

SECRET = os.environ.get("ROOMER_SECRET", "change me").encode()
BANNED = {"mallory"}


def make_token(user: str, role: str, ttl: float = 3600) -> str:
    body = f"{user}.{role}.{int(time.time() + ttl)}"
    signature = hmac.new(SECRET, body.encode(), hashlib.sha256).hexdigest()
    return f"{body}.{signature}"


def read_token(token: str) -> dict[str, str]:
    """The claims of a valid token; ValueError for anything else."""
    body, _, signature = token.rpartition(".")
    expected = hmac.new(SECRET, body.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise ValueError("bad signature")
    user, role, expiry = body.split(".")
    if int(expiry) < time.time():
        raise ValueError("expired")
    return {"user": user, "role": role}
# --8<-- [end:tokens]


# --8<-- [start:authorize]
def authorize(request) -> dict[str, str]:
    """Called at the upgrade, synchronously, with the HTTP request (its ``path`` and
    ``headers``): what it returns becomes ``conn.claims``."""
    header = request.headers.get("Authorization", "")
    query = parse_qs(urlsplit(request.path.decode("latin-1")).query)
    token = header.removeprefix("Bearer ") if header else query.get("token", [""])[0]
    try:
        return read_token(token)
    except ValueError:
        raise roomer.Deny("invalid token") from None  # HTTP 401; the text is not sent


server = roomer.Server(authorize=authorize)


@server.on_connect
async def not_banned(conn: roomer.Connection) -> None:
    await asyncio.sleep(0)  # stands for a database query: async checks belong here
    if conn.claims["user"] in BANNED:
        raise roomer.Deny("banned")  # closes the connection with 1008 "banned"


@server.on_join
def admins_only(conn: roomer.Connection, room: str) -> None:
    if room.startswith("admin-") and conn.claims["role"] != "admin":
        raise roomer.Deny("admins only")  # the client gets error join_denied


@server.on("whoami")
def whoami(conn: roomer.Connection, msg: roomer.Message) -> None:
    conn.send("whoami", json.dumps(conn.claims), msg.room)
# --8<-- [end:authorize]


if __name__ == "__main__":
    if sys.argv[1:2] == ["token"]:
        print(make_token(*sys.argv[2:4]))
    else:
        server.run("127.0.0.1", 8080,
                   on_started=lambda s: print("auth on ws://{}:{}/ws".format(*s.address)))
