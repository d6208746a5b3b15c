"""The demo lobby (``roomer serve`` with no app) as people use it: three players, one
on a phone-sized screen; names, live room counts, chat, and pointer dots on the shared
field. Screenshots are saved (to ``ROOMER_SCREENSHOTS`` if set, else the test's tmp)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from browserkit import Pages, until

# The server is a roomer serve process (uvloop): one loop here is enough.
pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.server_process]

PHONE = {"width": 390, "height": 844, "mobile": True}


def count_of(room: str) -> str:
    return (f"document.querySelector(\"#rooms button[data-room='{room}'] .count\")"
            "?.textContent")


async def enter_lobby(page: Any, name: str) -> None:
    await page.fill("#name", name)
    await page.click("#name-form button")
    await page.wait_for_selector("#rooms button[data-room='lobby']")
    await until(page, "document.getElementById('status').textContent === 'online'")


async def join(page: Any, room: str) -> None:
    await page.click(f"#rooms button[data-room='{room}']")
    await page.wait_for_selector("#room:not([hidden])")


async def members(page: Any) -> list[str]:
    return await page.evaluate(  # type: ignore[no-any-return]
        "[...document.querySelectorAll('#members li')].map((li) => li.textContent)")


async def point(page: Any, x: float, y: float) -> None:
    """Move the pointer to (x, y), fractions of the shared field."""
    box = await page.locator("#field").bounding_box()
    await page.mouse.move(box["x"] + box["width"] * x - 20, box["y"] + box["height"] * y)
    await page.mouse.move(box["x"] + box["width"] * x, box["y"] + box["height"] * y, steps=4)


def near(page_id: str, x: float, y: float) -> str:
    return (f"(() => {{ const d = roomerDemo.dots.get({page_id!r}); return !!d && "
            f"Math.abs(d.x - {x}) < 0.02 && Math.abs(d.y - {y}) < 0.02; }})()")


async def test_demo_lobby(pages: Pages, serve: Any, tmp_path: Path) -> None:
    server = serve()  # no app: the demo
    alice = await pages.open(server.http + "/", width=1100, height=800)
    bob = await pages.open(server.http + "/", **PHONE)
    carol = await pages.open(server.http + "/")
    for page, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        await enter_lobby(page, name)
    assert await carol.evaluate(count_of("lobby")) == "0 here"

    # Carol stays in the lobby view: its room list follows the joins live.
    await join(alice, "lobby")
    await until(carol, f"{count_of('lobby')} === '1 here'")
    await join(bob, "lobby")
    await until(carol, f"{count_of('lobby')} === '2 here'")
    # Names, not ids, in both member lists; each marks itself.
    await until(alice, "document.querySelectorAll('#members li').length === 2")
    await until(bob, "document.querySelectorAll('#members li').length === 2")
    assert await members(alice) == ["alice(you)", "bob"]
    assert await members(bob) == ["alice", "bob(you)"]

    # A room the server's join hook refuses.
    await carol.fill("#room-name", "staff-room")
    await carol.click("#new-room button")
    await until(carol, "document.getElementById('lobby-error').textContent.includes('refused')")
    assert await carol.is_visible("#lobby")

    # Chat, both ways.
    await alice.fill("#say", "hi bob, ready?")
    await alice.click("#chat-form button")
    await until(bob, "document.getElementById('log').textContent.includes('alice: hi bob, ready?')")
    await bob.fill("#say", "ready when you are")
    await bob.click("#chat-form button")
    await until(alice, "document.getElementById('log').textContent.includes("
                       "'bob: ready when you are')")

    # Dots: each pointer reaches the other page.
    ids = {name: await page.evaluate("roomerDemo.room.id()")
           for name, page in (("alice", alice), ("bob", bob))}
    await point(alice, 0.3, 0.45)
    await point(bob, 0.7, 0.6)
    await until(bob, near(ids["alice"], 0.3, 0.45))
    await until(alice, near(ids["bob"], 0.7, 0.6))

    # A burst of pointer moves is sent at most every 50 ms, and its last position
    # always arrives: 200 moves in one task give at most one send at once (none if the
    # last send was under 50 ms ago) and one trailing send.
    await alice.evaluate("""() => {
        window.moves = 0;
        roomerDemo.room.on('move', () => { window.moves += 1; });
    }""")
    await bob.evaluate("""() => {
        const field = document.getElementById('field'), box = field.getBoundingClientRect();
        for (let i = 0; i <= 200; i++) {
            field.dispatchEvent(new PointerEvent('pointermove', {bubbles: true,
                clientX: box.left + box.width * (0.2 + 0.6 * i / 200),
                clientY: box.top + box.height * 0.35}));
        }
    }""")
    await until(alice, near(ids["bob"], 0.8, 0.35))
    assert await alice.evaluate("window.moves") in (1, 2)

    # The phone-sized page fits its screen: nothing runs off to the side.
    layout = await bob.evaluate("""() => {
        const width = document.documentElement.clientWidth;
        const right = (id) => document.getElementById(id).getBoundingClientRect().right;
        return {scroll: document.documentElement.scrollWidth, width,
                parts: ['field', 'members', 'say', 'leave'].map(right)};
    }""")
    assert layout["scroll"] <= layout["width"], layout
    assert all(0 < r <= layout["width"] for r in layout["parts"]), layout

    await join(carol, "lobby")
    await until(alice, "document.querySelectorAll('#members li').length === 3")
    await point(carol, 0.55, 0.25)
    await until(alice, near(await carol.evaluate("roomerDemo.room.id()"), 0.55, 0.25))
    await carol.fill("#say", "room for one more?")
    await carol.click("#chat-form button")
    await until(alice, "document.getElementById('log').textContent.includes('room for one')")
    await point(bob, 0.72, 0.62)
    await until(alice, near(ids["bob"], 0.72, 0.62))
    await point(alice, 0.3, 0.45)

    # The room list stays live beside the room.
    await until(alice, "document.querySelector(\"#side-rooms button[data-room='lobby'] "
                       ".count\").textContent === '3 here'")

    folder = Path(os.environ.get("ROOMER_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    for page in (alice, bob):  # the last dots are painted on the next animation frame
        await page.evaluate("new Promise((done) => requestAnimationFrame(() => "
                            "requestAnimationFrame(done)))")
    await alice.screenshot(path=str(folder / "demo-lobby.png"), full_page=True)
    await bob.screenshot(path=str(folder / "demo-phone.png"), full_page=True)
    for name in ("demo-lobby.png", "demo-phone.png"):
        assert (folder / name).stat().st_size > 10_000

    # Switching rooms from the side list leaves the last one; leaving goes back to the
    # lobby. The others' lists and the counts follow.
    await bob.click("#side-rooms button[data-room='arena']")
    await until(bob, "document.getElementById('room-title').textContent === 'arena'")
    await until(alice, "document.querySelectorAll('#members li').length === 2")
    await until(alice, "document.getElementById('log').textContent.includes('bob left')")
    await until(alice, "document.querySelector(\"#side-rooms button[data-room='arena'] "
                       ".count\").textContent === '1 here'")
    assert await members(bob) == ["bob(you)"]
    await bob.click("#leave")
    await bob.wait_for_selector("#lobby:not([hidden])")
    await until(bob, f"{count_of('lobby')} === '2 here' && {count_of('arena')} === '0 here'")
