"""The demo (``roomer serve`` with no app), a small game on game rooms, as people play it:
six pages on two nodes sharing a Redis backplane, one on a phone-sized screen. Quick play
seats them at 4-seat tables wherever they are connected, the live table list shows the
seats, the tables' 20 Hz state moves the dots where their players steer, chat crosses
nodes, a name taken at a table is refused, and a node that stops ends its tables for the
players on the other node. Screenshots are saved (to ``ROOMER_SCREENSHOTS`` if set, else
the test's tmp)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from browserkit import Pages, until
from clusterkit import Proxy

# The servers are roomer serve processes (uvloop): one loop here is enough.
pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.server_process]

PHONE = {"width": 390, "height": 844, "mobile": True}


async def enter_lobby(page: Any, name: str) -> None:
    await page.fill("#name", name)
    await page.click("#name-form button")
    await page.wait_for_selector("#lobby:not([hidden])")
    await until(page, "document.getElementById('status').textContent === 'online'")
    await until(page, "window.roomerDemo.watch !== null")


async def quick_play(page: Any) -> str:
    await page.click("#quick-play")
    await page.wait_for_selector("#room:not([hidden])")
    return await page.evaluate("roomerDemo.table.name")  # type: ignore[no-any-return]


async def seated(page: Any) -> list[str]:
    return await page.evaluate(  # type: ignore[no-any-return]
        "[...document.querySelectorAll('#members li')].map((li) => li.textContent)")


def listed(table: str, clients: int) -> str:
    return (f"document.querySelector(\"#tables button[data-room='{table}']\")"
            f"?.dataset.clients === '{clients}'")


async def steer(page: Any, x: float, y: float) -> None:
    """Point at (x, y), fractions of the field: where the page's dot should go."""
    box = await page.locator("#field").bounding_box()
    await page.mouse.move(box["x"] + box["width"] * x - 20, box["y"] + box["height"] * y)
    await page.mouse.move(box["x"] + box["width"] * x, box["y"] + box["height"] * y, steps=4)


def at(player_id: str, x: float, y: float) -> str:
    """The table's state has put ``player_id``'s dot at (x, y)."""
    return (f"(() => {{ const p = roomerDemo.positions.get({player_id!r}); return !!p && "
            f"Math.abs(p.x - {x}) < 0.02 && Math.abs(p.y - {y}) < 0.02; }})()")


async def test_the_demo_game_on_two_nodes(pages: Pages, serve: Any, redis_url: str,
                                          prefix: str, tmp_path: Path) -> None:
    cluster = ("--backplane", redis_url, "--backplane-prefix", prefix)
    node_a = serve(*cluster, "--node-id", "a")  # no app: the demo
    node_b = serve(*cluster, "--node-id", "b")
    alice = await pages.open(node_a.http + "/", width=1100, height=800)
    bob = await pages.open(node_b.http + "/", **PHONE)
    carol = await pages.open(node_a.http + "/")
    dave = await pages.open(node_b.http + "/")
    erin = await pages.open(node_a.http + "/")
    frank = await pages.open(node_b.http + "/")
    for page, name in ((alice, "alice"), (bob, "bob"), (carol, "carol"), (dave, "dave"),
                       (erin, "erin"), (frank, "erin")):
        await enter_lobby(page, name)
    assert await carol.is_visible("#no-tables")

    # Quick play: alice opens a table on node a; bob, on node b, is seated at it.
    table = await quick_play(alice)
    await until(carol, listed(table, 1))  # the list follows, on both nodes
    await until(dave, listed(table, 1))
    assert await quick_play(bob) == table
    for page in (alice, bob):
        await until(page, "document.querySelectorAll('#members li').length === 2")
    assert await seated(alice) == ["alice(you)", "bob"]
    assert await seated(bob) == ["alice", "bob(you)"]
    await until(dave, listed(table, 2))
    assert await dave.evaluate(
        f"document.querySelector(\"#tables button[data-room='{table}'] .seats\")"
        ".textContent") == "●●○○"

    # Server-authoritative positions: each steers, the other page sees the dot arrive.
    ids = {name: await page.evaluate("roomerDemo.table.id()")
           for name, page in (("alice", alice), ("bob", bob))}
    await steer(alice, 0.2, 0.3)
    await steer(bob, 0.75, 0.65)
    await until(bob, at(ids["alice"], 0.2, 0.3))
    await until(alice, at(ids["bob"], 0.75, 0.65))
    ticks = await bob.evaluate("roomerDemo.tick")
    await until(bob, f"roomerDemo.tick >= {ticks + 10}")  # the tick runs on

    # Chat crosses nodes, through the table.
    await alice.fill("#say", "hi bob, ready?")
    await alice.click("#chat-form button")
    await until(bob, "document.getElementById('log').textContent.includes('alice: hi bob')")
    await bob.fill("#say", "ready")
    await bob.click("#chat-form button")
    await until(alice, "document.getElementById('log').textContent.includes('bob: ready')")

    # Two more fill the table; the fifth quick play opens a new one.
    assert await quick_play(carol) == table
    assert await quick_play(dave) == table
    await until(erin, listed(table, 4))
    assert "full" in await erin.evaluate(
        f"document.querySelector(\"#tables button[data-room='{table}']\").textContent")
    second = await quick_play(erin)
    assert second != table
    await until(frank, listed(second, 1))
    # A name taken at a table is refused there, with the table's reason.
    await frank.click(f"#tables button[data-room='{second}']")
    await until(frank, "document.getElementById('lobby-error').textContent.includes("
                       "'someone at this table is called erin already')")
    assert await frank.is_visible("#lobby")

    # The phone-sized page fits its screen.
    layout = await bob.evaluate("""() => {
        const width = document.documentElement.clientWidth;
        const right = (id) => document.getElementById(id).getBoundingClientRect().right;
        return {scroll: document.documentElement.scrollWidth, width,
                parts: ['field', 'members', 'say', 'leave'].map(right)};
    }""")
    assert layout["scroll"] <= layout["width"], layout
    assert all(0 < r <= layout["width"] for r in layout["parts"]), layout

    folder = Path(os.environ.get("ROOMER_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    for page in (alice, bob):  # the last dots are painted on the next animation frame
        await page.evaluate("new Promise((done) => requestAnimationFrame(() => "
                            "requestAnimationFrame(done)))")
    await alice.screenshot(path=str(folder / "demo-lobby.png"), full_page=True)
    await bob.screenshot(path=str(folder / "demo-phone.png"), full_page=True)
    for name in ("demo-lobby.png", "demo-phone.png"):
        assert (folder / name).stat().st_size > 10_000

    # Leaving frees the seat for everyone's list.
    await dave.click("#leave")
    await dave.wait_for_selector("#lobby:not([hidden])")
    await until(frank, listed(table, 3))
    await until(alice, "document.querySelectorAll('#members li').length === 3")

    # Node a stops: its tables end for the players on node b, back to the list.
    node_a.stop()
    await until(bob, "!document.getElementById('lobby').hidden")
    assert "the table closed" in await bob.evaluate(
        "document.getElementById('lobby-error').textContent")
    await until(frank, "document.querySelectorAll('#tables li').length === 0")


async def test_a_dropped_player_is_greyed_out_and_a_reload_keeps_the_seat(
        pages: Pages, serve: Any) -> None:
    server = serve()  # no app: the demo
    proxy = Proxy(server.port)  # alice's network, which the test cuts
    await proxy.start()
    alice = await pages.open(f"http://127.0.0.1:{proxy.port}/")
    bob = await pages.open(server.http + "/")
    for page, name in ((alice, "alice"), (bob, "bob")):
        await enter_lobby(page, name)
    table = await quick_play(alice)
    assert await quick_play(bob) == table
    await until(bob, "document.querySelectorAll('#members li').length === 2")
    alice_id = await alice.evaluate("roomerDemo.table.id()")
    log = "document.getElementById('log').textContent"
    seen = len(await bob.evaluate(log))

    # Alice's network drops: bob sees her greyed out, still seated, no "left" line.
    await proxy.cut()
    await until(bob, "document.querySelector('#members li.away')?.textContent === 'alice'")
    await proxy.restore()
    await until(bob, "document.querySelectorAll('#members li.away').length === 0")
    await until(alice, "roomerDemo.root.open()")
    assert await alice.evaluate("roomerDemo.table.id()") == alice_id

    # A reload: the same player at the same table, still seated for bob.
    await alice.reload()
    await alice.wait_for_selector("#room:not([hidden])")
    await until(alice, "roomerDemo.table?.open() && roomerDemo.names.size === 2")
    assert await alice.evaluate("[roomerDemo.table.id(), roomerDemo.table.name]") == [
        alice_id, table]
    assert await seated(alice) == ["alice(you)", "bob"]
    assert await seated(bob) == ["alice", "bob(you)"]
    assert "alice" not in (await bob.evaluate(log))[seen:]  # no "left", no "sat down"
