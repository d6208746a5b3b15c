"""The server is stopped and started again on the same port: pages reconnect by
themselves, get new ids, are members of their rooms again and talk as before."""

from __future__ import annotations

import signal
from typing import Any

import pytest
from browserkit import Pages, harness, harness_args, joined, until

# The server is a roomer serve process (uvloop): one loop here is enough.
pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.server_process]

FAST = "{reconnect: {initialDelay: 100, maxDelay: 400}}"
# FAST, and while the page's ``blocked`` is set its reconnect attempts go to a closed port:
# the test decides when it may be back.
GATED = ("{reconnect: {initialDelay: 100, maxDelay: 400}, WebSocket: function (url, p) {"
         " const to = window.blocked ? 'ws://127.0.0.1:9/ws' : url;"
         " return p ? new WebSocket(to, p) : new WebSocket(to); }}")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["graceful", "crash"])
async def test_pages_rejoin_after_a_server_restart(pages: Pages, serve: Any,
                                                   stop: signal.Signals) -> None:
    server = serve(*harness_args())
    a, b = await harness(pages, server), await harness(pages, server)
    old = [await joined(a, "match", options=FAST), await joined(b, "match", options=FAST)]
    await until(a, "room.members().length === 2")

    extra = await a.evaluate("""async () => {
        window.extra = record(await root.joined('extra'), 'reconnecting', 'error', 'close');
        return extra.open();
    }""")
    assert extra is True

    server.stop(stop)
    for page in (a, b):
        # Retrying with no server there: every room hears each attempt.
        await until(page, "seen('root', 'reconnecting').length >= 2 && "
                          "seen('match', 'reconnecting').length >= 2")
        assert await page.evaluate("[root.open(), room.open()]") == [False, False]
    server.args += ["--max-rooms", "1"]  # the restarted server refuses A's second room
    server.start()  # the same port

    for page in (a, b):
        await until(page, "seen('match', 'reconnected').length === 1")
    new = [await a.evaluate("root.id()"), await b.evaluate("root.id()")]
    assert len(set(old + new)) == 4  # every connection has a new id
    for page in (a, b):
        await until(page, f"room.members().length === 2 && "
                          f"{sorted(new)!r}.every((id) => room.members().includes(id))")
        assert await page.evaluate("[root.open(), room.open(), seen('match', 'open').length, "
                                   "seen('match', 'close').length]") == [True, True, 1, 0]

    # A's second room is refused on rejoin: error, then close, and it is gone.
    await until(a, "seen('extra', 'close').length === 1")
    assert await a.evaluate("[seen('extra', 'error')[0].args[0].code, extra.open(), "
                            "Object.keys(root.rooms()).sort().join()]") == [
        "too_many_rooms", False, "match,root"]

    await a.evaluate("room.send('chat', 'after the restart')")
    await b.evaluate("room.send('chat', 'me too')")
    await until(b, "seen('match', 'chat').length === 1")
    await until(a, "seen('match', 'chat').length === 1")
    assert await b.evaluate("seen('match', 'chat')[0].args.map((x) => x.text ?? x)") == [
        "after the restart", new[0]]
    assert await a.evaluate("seen('match', 'chat')[0].args.map((x) => x.text ?? x)") == [
        "me too", new[1]]


async def test_a_queue_flushed_after_a_restart_stays_within_the_rate_limit(
        pages: Pages, serve: Any) -> None:
    # 256 messages queued while the server is away (the default sendQueueLimit): flushed
    # at once they passed the server's default rate limit (200 frames/s) and about 60 of
    # them were lost; flushed at flushRate (100/s by default) every one arrives, in order.
    server = serve(*harness_args())
    a, b = await harness(pages, server), await harness(pages, server)
    await joined(a, "match", options=GATED)
    await joined(b, "match", options=FAST)
    await until(a, "room.members().length === 2")
    await a.evaluate("window.blocked = true")
    server.stop(signal.SIGTERM)
    await until(a, "seen('root', 'reconnecting').length >= 1")
    await a.evaluate("for (let i = 0; i < 256; i++) room.send('seq', String(i))")
    server.start()
    # B is back in the room before A may connect and flush: nothing is sent to a room
    # with nobody in it.
    await until(b, "seen('match', 'reconnected').length === 1")
    await a.evaluate("window.blocked = false")
    await until(a, "seen('root', 'reconnected').length === 1")
    # 256 at 100/s: under 3 s once connected again.
    await until(b, "seen('match', 'seq').length === 256")
    assert await b.evaluate("seen('match', 'seq').map((e) => e.args[0].text)") == [
        str(i) for i in range(256)]
    assert await a.evaluate("seen('root', 'error').length + seen('match', 'error').length") == 0
    assert await a.evaluate("seen('match', 'dropped').length") == 0
