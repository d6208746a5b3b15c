"""roomer.js and game rooms in a real browser against ``roomer serve
browser_games_app:setup``: create, join by id with options, join-or-create, refusals that
carry the hooks' reasons, a room closed under its members, the tick, and a live room
list. tests/test_demo_game.py runs the demo's game on two nodes."""

from __future__ import annotations

from typing import Any

import pytest
from browserkit import HARNESS, Pages, harness, until

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.server_process]

V2 = "{protocol: 'v2'}"


def game_args(*extra: str) -> tuple[str, ...]:
    return ("browser_games_app:setup", "--static", str(HARNESS), *extra)


async def connected(page: Any) -> str:
    return await page.evaluate(f"""async () => {{
        window.root = record(roomer('/ws', {V2}), 'open', 'error');
        await root.ready();
        return root.id();
    }}""")


async def test_create_join_and_refusals_carry_the_hooks_reasons(pages: Pages,
                                                                 serve: Any) -> None:
    server = serve(*game_args())
    ada, bob = await harness(pages, server), await harness(pages, server)
    ada_id, bob_id = await connected(ada), await connected(bob)
    room = await ada.evaluate("""async () => {
        window.table = await root.create('table', {name: 'ada'});
        record(table, 'welcome', 'new_member', 'room.closed', 'close');
        return table.name;
    }""")
    assert room.startswith("table:")
    await until(ada, f"seen({room!r}, 'welcome').length === 1")
    assert await ada.evaluate(f"seen({room!r}, 'welcome')[0].args[0].text") == "ada"
    refusal = await bob.evaluate(f"""async () => {{
        try {{ await root.joined({room!r}, {{name: 'bad'}}); }}
        catch (e) {{ return [e instanceof RoomerError, e.code, e.serverMessage]; }}
    }}""")
    assert refusal == [True, "join_denied", "no bad names"]
    refusal = await bob.evaluate("""async () => {
        try { await root.create('table', {deny: true}); }
        catch (e) { return [e.code, e.serverMessage]; }
    }""")
    assert refusal == ["create_denied", "no such game"]
    members = await bob.evaluate(f"""async () => {{
        window.mine = record(await root.joined({room!r}, {{name: 'bob'}}), 'welcome',
                             'room.closed', 'close');
        return mine.members();
    }}""")
    assert members == [ada_id, bob_id]
    await until(ada, f"seen({room!r}, 'new_member').length === 1")
    assert await bob.evaluate("mine.ask('roll').then(text)") == '{"rolled": 4}'
    # the room ends under its members: both hear why, then the room closes
    await bob.evaluate("mine.send('end')")
    for page in (ada, bob):
        await until(page, f"seen({room!r}, 'close').length === 1")
        assert await page.evaluate(f"seen({room!r}, 'room.closed')[0].args[0]") == {
            "code": "closed", "message": "game over"}
    assert "room.create" in await bob.evaluate(
        "(() => { try { root.send('room.create'); } catch (e) { return e.message; } })()")


async def test_join_or_create_fills_a_table_then_opens_another(pages: Pages,
                                                               serve: Any) -> None:
    server = serve(*game_args())
    players = [await harness(pages, server) for _ in range(5)]
    tables = []
    for page in players:
        await connected(page)
        tables.append(await page.evaluate(
            "root.joinOrCreate('table', {mode: 'duel'}).then((t) => (window.t = t).name)"))
    assert tables[:4] == [tables[0]] * 4 and tables[4] != tables[0]
    assert await players[3].evaluate("t.members().length") == 4


async def test_a_room_list_and_a_tick(pages: Pages, serve: Any) -> None:
    server = serve(*game_args())
    watcher, player = await harness(pages, server), await harness(pages, server)
    await connected(watcher)
    await connected(player)
    await watcher.evaluate("""async () => {
        window.list = await root.watchRooms('table', {filter: {mode: 'duel'}});
        window.changes = 0;
        list.on('change', () => { window.changes += 1; });
    }""")
    assert await watcher.evaluate("list.rooms()") == []
    room = await player.evaluate(
        "root.joinOrCreate('table', {mode: 'duel'}).then((t) => (window.t = t).name)")
    await until(watcher, f"list.room({room!r}) && list.room({room!r}).clients === 1")
    assert await watcher.evaluate(f"list.room({room!r})") == {
        "id": room, "type": "table", "clients": 1, "max_clients": 4, "locked": False,
        "metadata": {"mode": "duel"}}
    await player.evaluate("t.leave()")
    await until(watcher, "list.rooms().length === 0")
    ticks = await player.evaluate("""async () => {
        const ticker = await root.joinOrCreate('ticker');
        const got = [];
        await new Promise((done) => ticker.onText('tick', (n) => {
            got.push(Number(n)); if (got.length === 5) done(); }));
        return got;
    }""")
    assert ticks == list(range(ticks[0], ticks[0] + 5))
