"""Every program of examples/ runs here, so the site's code never rots.

Each example server runs as users run it, ``roomer serve MODULE:server`` in its own
process on a free port, and is driven over real sockets: by roomer's Python client, by
the example clients themselves (as subprocesses, through their stdin and stdout), and for
the page by Chromium (Playwright, as tests/browser does). The docs include these files
as they are (the snippets extension), so what the tutorial shows is what runs here.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from clusterkit import Proxy, eventually
from services import free_port

import roomer

# A server in its own process: one event loop here suffices (tests/conftest.py). These
# test the examples' behaviour, not the codec twins: the compiled pass covers them.
pytestmark = [pytest.mark.server_process, pytest.mark.compiled_pass_only]

TIMEOUT = 10.0  # the longest any one expected event is waited for
ROOMER_ROOT = Path(roomer.__file__).resolve().parents[1]


def repo_root(config: pytest.Config) -> Path:
    """The checkout: beside this file, or (scripts/test.sh runs a copy of tests/ from a
    temporary folder) where the pyproject.toml that pytest was given lives."""
    candidates = [Path(__file__).resolve().parents[1]]
    if config.inipath is not None:
        candidates.insert(0, Path(config.inipath).resolve().parent)
    for candidate in candidates:
        if (candidate / "examples" / "chat.py").is_file():
            return candidate
    pytest.fail(f"no examples/ folder in {candidates}")


@pytest.fixture(scope="module")
def examples(pytestconfig: pytest.Config) -> Path:
    return repo_root(pytestconfig) / "examples"


def child_env(folder: Path, **extra: str) -> dict[str, str]:
    """The environment of an example: the roomer this test imported (a checkout with its
    in-place build, or the installed wheel), and the example's folder, on the path."""
    env = dict(os.environ)
    parts = [str(ROOMER_ROOT), str(folder), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
    env.update(extra)
    return env


class Child:
    """A subprocess whose stdout is read line by line; stderr is kept for failures."""

    def __init__(self, proc: asyncio.subprocess.Process, label: str) -> None:
        self.proc = proc
        self.label = label
        self.lines: list[str] = []

    @classmethod
    async def start(cls, args: list[str], folder: Path, label: str, **env: str) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-u", *args, cwd=folder, env=child_env(folder, **env),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
        return cls(proc, label)

    async def stderr(self) -> str:
        assert self.proc.stderr is not None
        if self.proc.returncode is None:
            return "(still running)"
        return (await self.proc.stderr.read()).decode(errors="replace")

    async def expect(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        """The first line from now on that matches ``pattern``."""
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                raw = await asyncio.wait_for(self.proc.stdout.readline(),
                                             max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise AssertionError(f"{self.label}: no line matching {pattern!r} within "
                                     f"{timeout} s; it printed {self.lines}") from None
            if not raw:
                await self.proc.wait()
                raise AssertionError(f"{self.label} exited ({self.proc.returncode}) before "
                                     f"printing {pattern!r}; it printed {self.lines}\n"
                                     f"{await self.stderr()}")
            line = raw.decode().rstrip("\n")
            self.lines.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    async def write(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"{self.label} still running after {timeout} s") from None

    async def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            os.killpg(self.proc.pid, sig)

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


class ExampleServer:
    """``roomer serve MODULE:server`` from the example's folder (the documented command)."""

    def __init__(self, child: Child, port: int) -> None:
        self.child = child
        self.port = port

    @classmethod
    async def start(cls, folder: Path, app: str, port: int = 0, extra: tuple[str, ...] = (),
                    **env: str) -> ExampleServer:
        child = await Child.start(
            ["-m", "roomer", "serve", app, "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "warning", *extra], folder, f"roomer serve {app}", **env)
        try:
            match = await child.expect(r"listening on ws://127\.0\.0\.1:(\d+)/ws", 20.0)
        except BaseException:
            await child.kill()
            raise
        return cls(child, int(match.group(1)))

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def stop(self) -> None:
        """SIGTERM, then a clean exit: status 0, "roomer stopped", no traceback."""
        child = self.child
        await child.signal(signal.SIGTERM)
        assert child.proc.stdout is not None
        rest = (await asyncio.wait_for(child.proc.stdout.read(), TIMEOUT)).decode()
        status = await child.wait()
        errors = await child.stderr()
        assert status == 0 and "roomer stopped" in rest, (status, rest, errors)
        assert "Traceback" not in errors, errors


@pytest.fixture
async def serve(examples: Path) -> AsyncIterator[Callable[..., Awaitable[ExampleServer]]]:
    """``await serve("chat:server")``; every server is stopped (cleanly) after the test."""
    started: list[ExampleServer] = []

    async def start(app: str, folder: str = "", port: int = 0, extra: tuple[str, ...] = (),
                    **env: str) -> ExampleServer:
        server = await ExampleServer.start(examples / folder, app, port, extra, **env)
        started.append(server)
        return server

    yield start
    try:
        for server in started:
            if server.child.proc.returncode is None:
                await server.stop()
    finally:
        for server in started:
            await server.child.kill()


@pytest.fixture
async def programs(examples: Path) -> AsyncIterator[Callable[..., Awaitable[Child]]]:
    """``await run("bot.py", url)``: an example program; killed after the test if alive."""
    started: list[Child] = []

    async def start(script: str, *args: str, **env: str) -> Child:
        child = await Child.start([script, *args], examples, script, **env)
        started.append(child)
        return child

    yield start
    for child in started:
        await child.kill()


class Inbox:
    """What one room receives of some events, in order."""

    def __init__(self, room: roomer.Room, *events: str) -> None:
        self.queue: asyncio.Queue[tuple[str, tuple[Any, ...]]] = asyncio.Queue()
        for event in events:
            room.on(event, lambda *args, event=event: self.queue.put_nowait((event, args)))

    async def next(self, event: str, where: Callable[..., bool] = lambda *args: True,
                   timeout: float = TIMEOUT) -> tuple[Any, ...]:
        """The next ``event`` whose arguments satisfy ``where`` (others are skipped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen: list[Any] = []
        while True:
            try:
                name, args = await asyncio.wait_for(self.queue.get(),
                                                    max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise AssertionError(f"no {event} as expected within {timeout} s; "
                                     f"saw {seen[-10:]}") from None
            seen.append((name, args))
            if name == event and where(*args):
                return args


@contextlib.asynccontextmanager
async def connected(url: str, **options: Any) -> AsyncIterator[roomer.Room]:
    root = await roomer.connect(url, **options)
    try:
        yield root
    finally:
        await root.close()


# the chat ---------------------------------------------------------------------------------


async def test_chat_relays_names_and_refuses_staff_rooms(serve: Any) -> None:
    server = await serve("chat:server")
    async with connected(server.url + "?nick=ada") as ada, \
            connected(server.url + "?nick=bob") as bob:
        ada_lobby = await ada.join("lobby")
        ada_inbox = Inbox(ada_lobby, "chat", "who", "new_member")
        bob_lobby = await bob.join("lobby")
        assert await ada_inbox.next("new_member") == (bob.id(),)

        bob_lobby.send("chat", "hello ada")  # no handler: relayed, src = bob
        assert await ada_inbox.next("chat") == (b"hello ada", bob.id())

        ada_lobby.send("who")  # the handler answers the sender only
        payload, sender = await ada_inbox.next("who")
        assert sender == ""  # server-originated
        assert json.loads(payload) == {ada.id(): "ada", bob.id(): "bob"}

        with pytest.raises(roomer.ClientError) as refused:
            await bob.join("staff-room")
        assert refused.value.code == "join_denied"
        assert refused.value.server_message == "staff only"


async def test_chat_client_sends_what_is_typed_and_prints_what_comes(
        serve: Any, programs: Any) -> None:
    server = await serve("chat:server")
    async with connected(server.url + "?nick=ada") as ada:
        lobby = await ada.join("lobby")
        inbox = Inbox(lobby, "chat", "new_member", "member_left")
        client = await programs("chat_client.py", server.url, "lobby", "cleo")
        me = (await client.expect(r"in lobby as (\w{8});")).group(1)
        (cleo,) = await inbox.next("new_member")
        assert cleo.startswith(me)

        lobby.send("chat", "hi cleo")
        await client.expect(rf"^{ada.id()[:8]}: hi cleo$")
        await client.write("hello all")
        assert await inbox.next("chat") == (b"hello all", cleo)
        await client.write("/who")
        names = (await client.expect(r"^here: (.*)$")).group(1)
        assert sorted(names.split()) == ["ada", "cleo"]

        assert client.proc.stdin is not None
        client.proc.stdin.close()  # Ctrl-D: it leaves
        assert await client.wait() == 0
        assert await inbox.next("member_left") == (cleo,)


async def test_bot_answers_commands_and_comes_back_after_a_server_restart(
        serve: Any, programs: Any) -> None:
    port = free_port()
    server = await serve("chat:server", port=port)
    proxy = Proxy(port)  # the bot's network, which the test cuts
    await proxy.start()
    bot = await programs("bot.py", f"ws://127.0.0.1:{proxy.port}/ws", "lobby")
    bot_id = (await bot.expect(r"^bot in lobby as ([0-9a-f-]{36})$")).group(1)
    async with connected(server.url) as player:
        lobby = player.join("lobby")
        inbox = Inbox(lobby, "chat")  # before the join completes: the welcome is quick
        await lobby
        assert await inbox.next("chat") == (f"welcome, {player.id()[:8]}".encode(), bot_id)
        lobby.send("chat", "!roll")
        (text, sender) = await inbox.next("chat")
        assert sender == bot_id
        assert re.fullmatch(rf"{player.id()[:8]} rolled [1-6]", text.decode())
        lobby.send("chat", "!count")
        assert await inbox.next("chat") == (b"2 here, me included", bot_id)
        # A network blip: the bot resumes its session, the same id, still in the room,
        # and answers what was said while it was away.
        await proxy.cut()
        lobby.send("chat", "!count")
        await proxy.restore()
        assert (await bot.expect(r"^bot back in lobby as ([0-9a-f-]{36})$")).group(1) == bot_id
        assert await inbox.next("chat") == (b"2 here, me included", bot_id)

    await server.stop()  # the bot's connection closes; it tries again every second
    await serve("chat:server", port=port)
    again = (await bot.expect(r"^bot in lobby as ([0-9a-f-]{36})$", 20.0)).group(1)
    assert again != bot_id  # a new connection, a new id
    await bot.signal(signal.SIGINT)  # Ctrl-C
    assert await bot.wait() == 0


# the game lobby ---------------------------------------------------------------------------


def tables(payload: bytes) -> dict[str, int]:
    listed = json.loads(payload)
    assert all(entry["seats"] == 4 for entry in listed)
    return {entry["table"]: entry["taken"] for entry in listed}


async def test_lobby_seats_tables_lists_them_and_ticks(serve: Any) -> None:
    server = await serve("lobby:server")
    async with contextlib.AsyncExitStack() as stack:
        watcher = await stack.enter_async_context(connected(server.url))
        lobby = watcher.join("lobby")
        listing = Inbox(lobby, "tables")  # registered before the join completes
        await lobby
        (first, _) = await listing.next("tables")
        assert tables(first) == {f"table-{n}": 0 for n in range(1, 9)}

        players = [await stack.enter_async_context(connected(server.url)) for _ in range(5)]
        seats = [await player.join("table-1") for player in players[:4]]
        await listing.next("tables", lambda payload, _: tables(payload)["table-1"] == 4)

        with pytest.raises(roomer.ClientError) as full:
            await players[4].join("table-1")
        assert (full.value.code, full.value.server_message) == ("join_denied", "table full")
        with pytest.raises(roomer.ClientError) as twice:
            await players[0].join("table-2")
        assert twice.value.server_message == "already seated at table-1"
        with pytest.raises(roomer.ClientError) as unknown:
            await players[4].join("table-99")
        assert unknown.value.server_message == "no such table"

        # 20 Hz: states arrive with consecutive tick numbers; steering moves a player.
        mover, observer = players[0].id(), Inbox(seats[1], "state")
        seats[0].send("steer", json.dumps([1, 0]))
        (payload, _) = await observer.next(
            "state", lambda p, _: json.loads(p)["players"][mover][0] > 50)
        state = json.loads(payload)
        assert sorted(state["players"]) == sorted(p.id() for p in players[:4])
        (later, _) = await observer.next("state")
        assert json.loads(later)["tick"] == state["tick"] + 1
        assert json.loads(later)["players"][mover][0] == min(100, state["players"][mover][0] + 1)

        errors = Inbox(seats[0], "error")
        seats[0].send("steer", "[5, 0]")
        (error,) = await errors.next("error")
        assert error["code"] == "handler_error"
        assert error["message"] == "steer takes [dx, dy], each -1, 0 or 1"

        await seats[3].leave()  # the seat is free again, and the lobby is told
        await listing.next("tables", lambda payload, _: tables(payload)["table-1"] == 3)
        await players[4].join("table-1")
        await listing.next("tables", lambda payload, _: tables(payload)["table-1"] == 4)


async def test_lobby_player_sits_and_steers(serve: Any, programs: Any) -> None:
    server = await serve("lobby:server")
    async with connected(server.url) as someone:
        await someone.join("table-1")
        player = await programs("lobby_player.py", server.url, "--ticks", "5")
        await player.expect(r"^seated at table-1 with 1 others$")
        positions = []
        for _ in range(5):
            match = await player.expect(r"^tick \d+: at \((\d+), (\d+)\), 2 at the table$")
            positions.append((int(match.group(1)), int(match.group(2))))
        assert await player.wait() == 0
    xs, ys = zip(*positions, strict=True)
    assert xs[-1] > xs[0] and ys[-1] < ys[0], positions  # steering towards top right


# the tables on game rooms ----------------------------------------------------------------


async def test_tables_seat_players_list_refuse_and_tick(serve: Any) -> None:
    server = await serve("tables:server")
    async with contextlib.AsyncExitStack() as stack:
        watcher = await stack.enter_async_context(connected(server.url, protocol="v2"))
        listing = await watcher.watch_rooms("table")
        assert listing.rooms == {}
        players = [await stack.enter_async_context(connected(server.url, protocol="v2"))
                   for _ in range(6)]
        seats = [await player.join_or_create("table", {"name": f"p{n}"})
                 for n, player in enumerate(players[:5])]
        first = seats[0].name
        assert [seat.name for seat in seats[:4]] == [first] * 4  # four seats, then anew
        assert seats[4].name != first
        await eventually(lambda: {k: (v["clients"], v["locked"])
                                  for k, v in listing.rooms.items()} == {
            first: (4, True), seats[4].name: (1, False)})
        with pytest.raises(roomer.ClientError) as full:
            await players[5].join(first, {"name": "late"})
        assert full.value.code == "room_full"
        with pytest.raises(roomer.ClientError) as taken:
            await players[5].join(seats[4].name, {"name": "p4"})
        assert taken.value.server_message == "someone at this table is called p4 already"

        # 20 Hz: states with consecutive tick numbers; steering moves a player.
        mover, observer = players[0].id(), Inbox(seats[1], "state")
        seats[0].send("steer", json.dumps([1, 0]))
        (payload, _) = await observer.next(
            "state", lambda p, _: json.loads(p)["players"][mover][0] > 50)
        state = json.loads(payload)
        assert sorted(state["players"]) == sorted(p.id() for p in players[:4])
        (later, _) = await observer.next("state")
        assert json.loads(later)["tick"] == state["tick"] + 1
        assert json.loads(later)["players"][mover][0] == min(100, state["players"][mover][0] + 1)
        errors = Inbox(seats[0], "error")
        seats[0].send("steer", "[5, 0]")
        (error,) = await errors.next("error")
        assert error["message"] == "steer takes [dx, dy], each -1, 0 or 1"

        await seats[3].leave()  # the seat is free again, and the list says so
        await eventually(lambda: listing.rooms[first]["clients"] == 3)
        await players[5].join(first, {"name": "late"})


async def test_table_player_sits_and_steers(serve: Any, programs: Any) -> None:
    server = await serve("tables:server")
    async with connected(server.url, protocol="v2") as someone:
        table = await someone.join_or_create("table", {"name": "someone"})
        player = await programs("table_player.py", server.url, "--name", "ada",
                                "--ticks", "5")
        await player.expect(r"^\d+ tables open$")
        seated = await player.expect(r"^seated at (table:\w+) with 1 others$")
        assert seated.group(1) == table.name
        positions = []
        for _ in range(5):
            match = await player.expect(r"^tick \d+: at \((\d+), (\d+)\), 2 at the table$")
            positions.append((int(match.group(1)), int(match.group(2))))
        assert await player.wait() == 0
    xs, ys = zip(*positions, strict=True)
    assert xs[-1] > xs[0] and ys[-1] < ys[0], positions  # steering towards top right


async def test_a_table_player_keeps_its_seat_through_a_rolling_restart(
        serve: Any, programs: Any, redis_url: str, prefix: str) -> None:
    """The reconnect guide's rolling restart: the player's node is stopped with SIGTERM,
    its reconnect reaches the other node, and it keeps its seat and every tick."""
    cluster = ("--backplane", redis_url, "--backplane-prefix", prefix)
    secret = {"ROOMER_RESUME_SECRET": "examples-rolling-restart"}
    a = await serve("tables:setup", extra=(*cluster, "--node-id", "a"), **secret)
    b = await serve("tables:setup", extra=(*cluster, "--node-id", "b"), **secret)
    balancer = Proxy(a.port)  # the player's load balancer
    await balancer.start()
    try:
        async with connected(b.url, protocol="v2") as bob:
            table = await bob.join_or_create("table", {"name": "bob"})
            player = await programs("table_player.py", f"ws://127.0.0.1:{balancer.port}/ws",
                                    "--name", "ada", "--ticks", "80")
            seated = await player.expect(r"^seated at (table:\w+) with 1 others$")
            assert seated.group(1) == table.name
            tick = r"^tick (\d+): at \(\d+, \d+\), 2 at the table$"
            ticks = [int((await player.expect(tick)).group(1)) for _ in range(5)]
            balancer.target_port = b.port  # new connections reach b from now on
            await a.stop()  # SIGTERM: a hands the player's session over to b
            await player.expect(rf"^back at {table.name}, still seated$")
            while len(ticks) < 40:
                ticks.append(int((await player.expect(tick)).group(1)))
            assert ticks == list(range(ticks[0], ticks[0] + 40))  # none lost, none twice
    finally:
        await balancer.cut()


async def test_tables_on_two_nodes(serve: Any, redis_url: str, prefix: str) -> None:
    """The chapter's two-node run: a table's tick reaches its players on both nodes,
    each tick once, and its seats are counted once."""
    cluster = ("--backplane", redis_url, "--backplane-prefix", prefix)
    a = await serve("tables:setup", extra=(*cluster, "--node-id", "a"))
    b = await serve("tables:setup", extra=(*cluster, "--node-id", "b"))
    async with connected(a.url, protocol="v2") as ada, \
            connected(b.url, protocol="v2") as bob:
        listing = await bob.watch_rooms("table")
        here = await ada.join_or_create("table", {"name": "ada"})
        await eventually(lambda: here.name in listing.rooms)
        there = bob.join_or_create("table", {"name": "bob"})
        ticks = Inbox(there, "state")
        await there
        assert there.name == here.name  # node b seated bob at node a's table
        seen = []
        while len(seen) < 10:
            (payload, _) = await ticks.next("state")
            state = json.loads(payload)
            if len(state["players"]) == 2:
                seen.append(state["tick"])
        assert seen == list(range(seen[0], seen[0] + 10))


# tokens -----------------------------------------------------------------------------------

SECRET = "examples-test-secret"


def load_example(path: Path, **env: str) -> ModuleType:
    """Import an example file under a name of its own, with ``env`` set while it loads."""
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        spec.loader.exec_module(module)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return module


async def test_auth_tokens(serve: Any, programs: Any, examples: Path) -> None:
    from picows import WSError

    server = await serve("auth_tokens:server", ROOMER_SECRET=SECRET)
    tokens = load_example(examples / "auth_tokens.py", ROOMER_SECRET=SECRET)
    printer = await programs("auth_tokens.py", "token", "ada", "user", ROOMER_SECRET=SECRET)
    ada_token = (await printer.expect(r"^(\S+)$")).group(1)
    assert await printer.wait() == 0
    assert tokens.read_token(ada_token) == {"user": "ada", "role": "user"}

    forged = ada_token.replace(".user.", ".admin.")
    expired = tokens.make_token("ada", "user", ttl=-10)
    for headers in ({}, {"Authorization": f"Bearer {forged}"},
                    {"Authorization": f"Bearer {expired}"}, {"Authorization": "Bearer é.x"}):
        with pytest.raises(WSError, match="received 401"):
            await roomer.connect(server.url, extra_headers=headers)

    async with connected(server.url, extra_headers={"Authorization": f"Bearer {ada_token}"}) \
            as ada, connected(f"{server.url}?token={tokens.make_token('root', 'admin')}") \
            as admin:
        room = await ada.join("lobby")
        inbox = Inbox(room, "whoami")
        room.send("whoami")
        (claims, _) = await inbox.next("whoami")
        assert json.loads(claims) == {"user": "ada", "role": "user"}
        with pytest.raises(roomer.ClientError) as refused:
            await ada.join("admin-console")
        assert (refused.value.code, refused.value.server_message) == (
            "join_denied", "admins only")
        await admin.join("admin-console")

    with pytest.raises(ConnectionError):  # on_connect closes it (1008) before its id comes
        await roomer.connect(f"{server.url}?token={tokens.make_token('mallory', 'user')}")


# the page ---------------------------------------------------------------------------------


def browser_missing() -> str | None:
    sys.path.insert(0, str(Path(__file__).resolve().parent / "browser"))
    try:
        from browserkit import missing
    finally:
        sys.path.pop(0)
    return missing()


async def test_page_with_roomer_js(serve: Any) -> None:
    reason = browser_missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the page example cannot run under CI: {reason}")
        pytest.skip(reason)
    from browserkit import CHROMIUM, CHROMIUM_ARGS
    from playwright.async_api import async_playwright

    server = await serve("app:server", folder="page")
    page_url = f"http://127.0.0.1:{server.port}/?room=tests"
    errors: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pages = []
            for _ in range(2):
                page = await (await browser.new_context()).new_page()
                page.set_default_timeout(TIMEOUT * 1000)
                page.on("pageerror", lambda err: errors.append(str(err)))
                await page.goto(page_url)
                await page.wait_for_function(
                    "document.getElementById('status').textContent.startsWith('connected')")
                pages.append(page)
            first, second = pages
            assert await first.text_content("#room") == "tests"

            await first.click("#click")  # an ask: its reply and the others' event
            for page in pages:
                await page.wait_for_function(
                    "document.getElementById('count').textContent === '1'")

            await second.fill("#text", "hello from the second tab")
            await second.press("#text", "Enter")
            await first.wait_for_function(
                "[...document.querySelectorAll('#log li')].some("
                "li => li.textContent.endsWith(': hello from the second tab'))")

            # A newcomer is told the room's count as it joins (on_joined).
            third = await (await browser.new_context()).new_page()
            await third.goto(page_url)
            await third.wait_for_function(
                "document.getElementById('count').textContent === '1'")
        finally:
            await browser.close()
    assert not errors, errors


def test_every_example_is_run_here(examples: Path) -> None:
    """A new example file without a test here fails: name it in a test above."""
    source = Path(__file__).read_text()
    files = sorted(p.relative_to(examples).as_posix() for p in examples.rglob("*")
                   if p.is_file() and p.suffix in (".py", ".html") and "__pycache__" not in p.parts)
    started = {"chat.py": "chat:server", "lobby.py": "lobby:server",
               "tables.py": "tables:server",
               "auth_tokens.py": "auth_tokens:server", "page/app.py": "app:server",
               "page/static/index.html": "#click"}
    for name in files:
        marker = started.get(name, f'"{Path(name).name}"')
        assert marker in source, f"examples/{name} is not run by tests/test_examples.py"
