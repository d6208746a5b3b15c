"""The Python client (roomer.connect) and roomer.js in one room, both directions:
broadcasts, direct messages and presence."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from browserkit import Pages, harness, harness_args, joined, until
from waiting import scaled

import roomer

# The server is a roomer serve process (uvloop): one loop here is enough.
pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.server_process]


async def test_python_client_and_browser_share_a_room(pages: Pages, serve: Any) -> None:
    server = serve(*harness_args())
    page = await harness(pages, server)
    py_root = await roomer.connect(server.ws)
    try:
        py_room = await py_root.join("mix")
        got: asyncio.Queue[tuple[str, Any, str]] = asyncio.Queue()
        for event in ("chat", "bin"):
            py_room.on(event, lambda payload, sender, event=event: got.put_nowait(
                (event, payload, sender)))
        py_room.on("new_member", lambda member: got.put_nowait(("new_member", member, "")))
        direct: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue()
        py_root.on("dm", lambda payload, sender: direct.put_nowait((payload, sender)))

        page_id = await joined(page, "mix")
        assert await asyncio.wait_for(got.get(), scaled(5)) == ("new_member", page_id, "")
        assert await page.evaluate("room.members()") == [py_root.id(), page_id]

        # Browser -> Python: text, bytes, and a direct message to the Python client.
        await page.evaluate(f"""() => {{
            room.send('chat', 'from the browser ☃');
            room.send('bin', new Uint8Array([0, 128, 255]));
            root.send('dm', 'just you', {py_root.id()!r});
        }}""")
        assert await asyncio.wait_for(got.get(), scaled(5)) == (
            "chat", "from the browser ☃".encode(), page_id)
        assert await asyncio.wait_for(got.get(), scaled(5)) == ("bin", b"\x00\x80\xff", page_id)
        # A direct message sent from root names root, where the Python client hears it.
        assert await asyncio.wait_for(direct.get(), scaled(5)) == (b"just you", page_id)

        # Python -> browser: text, bytes, JSON, and a direct message.
        await page.evaluate("record(root, 'secret')")
        py_room.send("chat", "from python")
        py_room.send("bin", b"\x01\x02")
        py_room.send("seq", '{"n": 1}')
        py_root.send("secret", b"only the page", dst=page_id)
        await until(page, "seen('mix', 'seq').length === 1 && seen('root', 'secret').length")
        assert await page.evaluate("seen('mix', 'chat')[0].args.map((x) => x.text ?? x)") == [
            "from python", py_root.id()]
        assert await page.evaluate("seen('mix', 'bin')[0].args[0].bytes") == [1, 2]
        assert await page.evaluate("seen('root', 'secret')[0].args.map((x) => x.text ?? x)") \
            == ["only the page", py_root.id()]
        assert await page.evaluate("JSON.parse(seen('mix', 'seq')[0].args[0].text)") == {"n": 1}
    finally:
        await py_root.close()
    await until(page, f"seen('mix', 'member_left', ([id]) => id === {py_root.id()!r}).length")
    assert await page.evaluate("room.members()") == [page_id]
