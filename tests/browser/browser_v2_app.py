"""The app the protocol v2 browser tests run under ``roomer serve browser_v2_app:setup``:
browser_app's handlers, plus namespaces with recording hooks, handlers that answer asks,
and handlers that make the server ask the page. The tests read the server's side
through asks (``seen`` gives what the hooks recorded), as the server is another process.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from browser_app import setup as setup_v1

import roomer

__all__ = ["setup"]

HOOKS = ("connect", "connected", "join", "joined", "leave", "left", "disconnect")


def setup(server: roomer.Server) -> None:
    setup_v1(server)
    # What the hooks of namespace "chat" saw, by connection id: ["connect", "join:r"...].
    seen: dict[str, list[str]] = {}
    chat = server.namespace("chat")
    vip = server.namespace("vip")

    def record(name: str) -> Any:
        def hook(view: roomer.NamespaceConnection, *args: Any) -> None:
            seen.setdefault(view.id, []).append(f"{name}:{args[0]}" if args else name)
            if name == "connected":
                view.send("welcome", f"in {view.namespace}")
        return hook

    for name in HOOKS:
        getattr(chat, f"on_{name}")(record(name))

    # "flaky" lets clients in until someone sends "close-flaky" (then it refuses all).
    flaky = server.namespace("flaky")
    closed: list[bool] = []

    @flaky.on_connect
    def while_open(view: roomer.NamespaceConnection) -> None:
        if closed:
            raise roomer.Deny("flaky is closed now")

    @server.on("close-flaky")
    def close_flaky(conn: Any, msg: roomer.Message) -> None:
        closed.append(True)

    @vip.on_connect
    def members_only(view: roomer.NamespaceConnection) -> None:
        if b"pass=gold" not in view.request.path:
            raise roomer.Deny("members only")

    def seen_by(conn: Any, msg: roomer.Message) -> str:
        return json.dumps(seen.get(msg.payload.decode() or conn.id, []))

    def where(conn: Any, msg: roomer.Message) -> str:
        return f"{conn.namespace}/{msg.room}"

    class Sold(roomer.RoomerError):
        code = "sold_out"

    def refuse(conn: Any, msg: roomer.Message) -> None:
        raise Sold("none left")

    async def ask_me(conn: Any, msg: roomer.Message) -> str:
        # The server asks this page what the payload says ({"event", "payload",
        # "room", "timeout"}) and replies with what came back.
        spec = json.loads(msg.payload)
        try:
            answer = await conn.ask(spec["event"], spec.get("payload", ""),
                                    room=spec.get("room", "root"),
                                    timeout=spec.get("timeout", 5.0))
        except roomer.ClientError as exc:
            return json.dumps({"error": exc.code, "message": exc.server_message})
        except roomer.AskTimeout:
            return json.dumps({"error": "timeout"})
        return json.dumps({"answer": answer.decode()})

    async def ask_many(conn: Any, msg: roomer.Message) -> str:
        # The server asks the page n times at once; every answer must be its own.
        n = int(msg.payload)
        answers = await asyncio.gather(*(conn.ask("echo", str(i)) for i in range(n)))
        return json.dumps([a.decode() == str(i) for i, a in enumerate(answers)].count(True))

    # "hold" answers once another connection sent "release" with the same payload.
    gates: dict[bytes, asyncio.Event] = {}

    async def hold(conn: Any, msg: roomer.Message) -> bytes:
        await gates.setdefault(msg.payload, asyncio.Event()).wait()
        return b"released " + msg.payload

    def release(conn: Any, msg: roomer.Message) -> None:
        gates.setdefault(msg.payload, asyncio.Event()).set()

    server.on("hold")(hold)
    server.on("release")(release)

    for space in (server, chat):
        space.on("seen")(seen_by)
        space.on("where")(where)
        space.on("refuse")(refuse)
        space.on("ask-me")(ask_me)
        space.on("ask-many")(ask_many)
