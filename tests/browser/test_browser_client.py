"""roomer.js in a real browser against ``roomer serve``: rooms, presence, payloads,
refusals, direct messages, the send queue and reconnection after a lost connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from browserkit import Pages, harness, harness_args, joined, until
from waiting import scaled

# The server is a roomer serve process (uvloop): one loop here is enough.
pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.server_process]


# A page that closes goes away (close code 1001): its session is held for the window, as
# for a reload, then it leaves its rooms. These tests watch it leave: a short window.
SHORT_WINDOW = ("--resume-window", "0.3")


async def test_two_pages_share_a_room(pages: Pages, serve: Any) -> None:
    server = serve(*harness_args(*SHORT_WINDOW))
    a, b = await harness(pages, server), await harness(pages, server)
    # The join is made before the socket is open: it is queued, then sent.
    a_id = await joined(a, "match")
    assert await a.evaluate("[seen('root', 'open').length, seen('match', 'open').length]") \
        == [1, 1]
    assert await a.evaluate("room.members()") == [a_id]
    assert await a.evaluate("[room.open(), root.open(), room.name, room.id() === root.id()]") \
        == [True, True, "match", True]

    b_id = await joined(b, "match", url=f"ws://127.0.0.1:{server.port}/ws")
    assert b_id != a_id
    assert await b.evaluate("room.members()") == [a_id, b_id]
    await until(a, f"seen('match', 'new_member', ([id]) => id === {b_id!r}).length === 1")
    assert await a.evaluate("room.members()") == [a_id, b_id]

    # Both ways, every payload kind.
    await a.evaluate("room.send('chat', 'héllo ☃')")
    await until(b, "seen('match', 'chat').length === 1")
    assert await b.evaluate("seen('match', 'chat')[0].args") == [
        {"bytes": list("héllo ☃".encode()), "text": "héllo ☃"}, a_id]
    await b.evaluate("""() => {
        room.send('bin', new Uint8Array([0, 1, 255]));
        room.send('bin', new Uint8Array([7, 8]).buffer);
        room.send('bin', new Uint16Array([258]));
        room.send('bin');
        room.send('bin', 42);
    }""")
    await until(a, "seen('match', 'bin').length === 5")
    got = await a.evaluate("seen('match', 'bin').map(e => [e.args[0].bytes, e.args[1]])")
    assert got == [[[0, 1, 255], b_id], [[7, 8], b_id], [[2, 1], b_id], [[], b_id],
                   [list(b"42"), b_id]]

    await a.evaluate("""() => {
        window.states = [];
        room.onJSON('state', (value, from) => states.push([value, from]));
        room.onText('chat', (t, from) => states.push([t, from]));
    }""")
    await b.evaluate("""() => {
        room.sendJSON('state', {x: 1, list: [1, 'two', null]});
        room.send('state', 'not json');
        room.send('chat', 'plain');
    }""")
    await until(a, "states.length === 2 && seen('match', 'error').length === 1")
    assert await a.evaluate("states") == [[{"x": 1, "list": [1, "two", None]}, b_id],
                                          ["plain", b_id]]
    assert await a.evaluate("seen('match', 'error')[0].args[0].code") == "invalid_json"

    # Leaving: the leaver's room closes (its handlers go), the other sees member_left.
    await b.evaluate("room.leave()")
    await until(b, "seen('match', 'close').length === 1")
    assert await b.evaluate("[room.open(), Object.keys(root.rooms()), room.listeners().length]") \
        == [False, ["root"], 0]
    await until(a, f"seen('match', 'member_left', ([id]) => id === {b_id!r}).length === 1")
    assert await a.evaluate("room.members()") == [a_id]

    # Joining again gives a new Room; a page that goes away leaves its rooms.
    assert await b.evaluate("""async () => {
        const again = await root.joined('match');
        return [again !== room, again.members().length];
    }""") == [True, 2]
    await until(a, "seen('match', 'new_member').length === 2")
    await pages.contexts[1].close()
    await until(a, f"seen('match', 'member_left', ([id]) => id === {b_id!r}).length === 2")
    assert await a.evaluate("room.members()") == [a_id]

    # The emitter methods, locally; purge() leaves every room but root.
    assert await a.evaluate("""async () => {
        const r = await root.joined('local'), got = [], f = (x) => got.push(['f', x]);
        r.on('t', f).once('t', (x) => got.push(['once', x]));
        r.emit('t', 1); r.emit('t', 2); r.off('t', f); r.emit('t', 3);
        r.addListener('u', f); r.on('keep', f);
        const before = r.listeners().length;
        r.clearListeners(['keep']); r.emit('u', 4); r.emit('keep', 5);
        r.removeAllListeners('keep'); r.emit('keep', 6);
        return [got, before, r.listeners().length];
    }""") == [[["f", 1], ["once", 1], ["f", 2], ["f", 5]], 2, 0]
    await a.evaluate("root.purge()")
    assert await a.evaluate("Object.keys(root.rooms()).join()") == "root"  # at once
    # A room closes when the server has answered its leave.
    await until(a, "seen('match', 'close').length === 1")
    assert await a.evaluate("root.open()") is True


async def test_code_written_for_the_original_client_runs(pages: Pages, serve: Any) -> None:
    # The JavaScript quick start of the original roomer client, as it was written
    # (its console.log calls collected into `out`).
    server = serve(*harness_args(*SHORT_WINDOW))
    page, other = await harness(pages, server), await harness(pages, server)
    await page.evaluate("""() => {
        window.out = [];
        const console = { log: (...args) => out.push(args.join(" ")) };
        const root = roomer(`ws://${location.host}/ws`);
        root.on("open", () => {
            console.log("Connected! My ID:", root.id());
            const lobby = root.join("lobby");
            lobby.on("open", () => {
                lobby.send("ping", new Uint8Array());
            });
            lobby.on("pong", (payload, senderId) => {
                console.log("Received pong from", senderId);
            });
            lobby.on("new_member", (id) => {
                console.log(`User joined: ${id}`);
            });
            lobby.on("member_left", (id) => {
                console.log(`User left: ${id}`);
            });
        });
    }""")
    await until(page, "out.length === 2")
    other_id = await joined(other, "lobby")
    await pages.contexts[1].close()
    await until(page, "out.length === 4")
    out = await page.evaluate("out")
    assert out[0].startswith("Connected! My ID: ") and len(out[0]) == len(
        "Connected! My ID: ") + 36
    assert out[1:] == ["Received pong from ", f"User joined: {other_id}",
                       f"User left: {other_id}"]


async def test_the_readme_snippet_runs(pages: Pages, serve: Any) -> None:
    # README "In the browser", as written there (console.log collected into `out`).
    server = serve(*harness_args())
    snippet, peer, late = [await harness(pages, server) for _ in range(3)]
    await joined(peer, "lobby")
    await snippet.evaluate("""async () => {
        window.out = [];
        const console = { log: (...args) => out.push(args) };
        const root = roomer();                        // ws(s)://<this host>/ws
        const lobby = root.join("lobby");             // fine before the socket is open
        lobby.onText("chat", (text, senderId) => console.log(senderId, text));
        lobby.on("move", (bytes, senderId) => console.log(senderId, bytes));
        lobby.on("new_member", (id) => lobby.sendJSON("welcome", { from: root.id() }, id));
        await lobby.ready();
        lobby.send("chat", "hello");                  // to everyone else in lobby
        lobby.send("move", new Uint8Array([1, 2]));
        window.root = root;
    }""")
    snippet_id = await snippet.evaluate("root.id()")
    await until(peer, "seen('lobby', 'chat').length === 1")
    assert await peer.evaluate("seen('lobby', 'chat')[0].args[0].text") == "hello"
    await peer.evaluate("room.send('chat', 'hi'); room.send('move', new Uint8Array([9]))")
    await until(snippet, "out.length === 2")
    assert await snippet.evaluate("out.map(([id, x]) => [id.length, x.length])") == [
        [36, 2], [36, 1]]
    await late.evaluate("window.root = roomer(); window.room = root.join('lobby'); "
                        "window.welcomes = []; "
                        "room.onJSON('welcome', (v, from) => welcomes.push([v, from]))")
    await until(late, "welcomes.length === 1")
    assert await late.evaluate("welcomes") == [[{"from": snippet_id}, snippet_id]]
    assert await peer.evaluate("seen('lobby', 'welcome').length") == 0  # direct: not to peer


async def test_refusals_reject_with_the_server_code(pages: Pages, serve: Any) -> None:
    server = serve(*harness_args("--max-rooms", "2"))
    page = await harness(pages, server)
    # Sent together: each answer (join_ack or error) must settle the right promise,
    # including invalid_name, whose error names root rather than the room.
    results = await page.evaluate("""async () => {
        const root = record(roomer('/ws'), 'error');
        window.root = root;
        const settled = await Promise.allSettled([
            root.joined('closed-vip'), root.joined('x'.repeat(129)), root.joined('one'),
            root.joined('two'), root.joined('three')]);
        return settled.map((r) => r.status === 'fulfilled' ? {ok: r.value.name}
            : {code: r.reason.code, room: r.reason.room, roomer: r.reason instanceof RoomerError,
               text: r.reason.serverMessage, event: r.reason.event});
    }""")
    assert results[0] == {"code": "join_denied", "room": "closed-vip", "roomer": True,
                          "text": "this room is closed", "event": "join"}
    assert results[1]["code"] == "invalid_name" and results[1]["room"] == "x" * 129
    assert results[2:4] == [{"ok": "one"}, {"ok": "two"}]
    assert results[4]["code"] == "too_many_rooms" and results[4]["room"] == "three"
    assert await page.evaluate("Object.keys(root.rooms()).sort()") == ["one", "root", "two"]

    # The server's error object reaches `error`; reserved names never leave the page.
    await page.evaluate("root.send('chat', 'into root'); root.send('dm', 'x', 'nobody')")
    await until(page, "seen('root', 'error').length === 2")
    errors = await page.evaluate("seen('root', 'error').map(e => e.args[0])")
    assert [(e["code"], e["event"]) for e in errors] == [("forbidden", "chat"),
                                                       ("no_such_client", "dm")]
    assert all(isinstance(e["message"], str) and e["message"] for e in errors)
    assert await page.evaluate("""() => ['join', 'leave_ack', 'error', 'reconnected', 'dropped',
        ''].map((name) => { try { root.send(name); return 'sent'; }
                            catch (e) { return e instanceof TypeError; } })""") == [True] * 6

    # Closed for good: promises reject with "closed", sends are dropped with an event.
    closed = await page.evaluate("""async () => {
        const one = root.rooms().one;
        record(one, 'close', 'dropped');
        root.close();
        one.send('late', 'x');
        const why = await one.ready().catch((e) => e.code);
        let join;
        try { root.join('after'); } catch (e) { join = e.message; }
        return [why, root.open(), join];
    }""")
    assert closed[:2] == ["closed", False] and "closed" in closed[2]
    assert await page.evaluate("seen('one', 'close').length") == 1
    assert await page.evaluate("seen('one', 'dropped')[0].args[0]") == {
        "room": "one", "event": "late", "dst": "", "reason": "closed",
        "payload": {"bytes": [120], "text": "x"}}


async def test_a_direct_message_reaches_only_its_target(pages: Pages, serve: Any) -> None:
    server = serve(*harness_args())
    a, b, c = [await harness(pages, server) for _ in range(3)]
    a_id = await joined(a, "match")
    b_id = await joined(b, "match")
    await joined(c, "match")
    await until(a, "room.members().length === 3")
    await a.evaluate(f"room.send('secret', 'for b', {b_id!r}); room.send('marker', 'all')")
    for page in (b, c):
        await until(page, "seen('match', 'marker').length === 1")
    assert await b.evaluate("seen('match', 'secret').map(e => [e.args[0].text, e.args[1]])") \
        == [["for b", a_id]]
    assert await c.evaluate("seen('match', 'secret').length") == 0
    assert await a.evaluate("seen('match', 'secret').length") == 0


async def test_lost_connection_queues_sends_and_rejoins(pages: Pages, serve: Any) -> None:
    server = serve(*harness_args())
    a, b = await harness(pages, server), await harness(pages, server)
    old_a = await joined(a, "match", options="""{sendQueueLimit: 3,
        reconnect: {initialDelay: 300, maxDelay: 300, jitter: 0}}""")
    b_id = await joined(b, "match")
    await until(a, "room.members().length === 2")
    # The server drops A (1011): while it is away A sends 5 messages; 3 fit the queue.
    await a.evaluate("""() => {
        root.once('reconnecting', () => {
            window.away = [root.open(), room.open()];
            for (let i = 0; i < 5; i++) room.send('seq', `q${i}`);
        });
        root.send('drop-me');
    }""")
    await until(a, "seen('match', 'reconnected').length === 1")
    new_a = await a.evaluate("root.id()")
    assert new_a != old_a
    assert await a.evaluate("away") == [False, False]
    assert await a.evaluate("seen('root', 'reconnected')[0].args") == [new_a, old_a]
    assert await a.evaluate("seen('root', 'reconnecting')[0].args") == [
        1, 300, {"code": 1011, "reason": "dropped on request"}]
    # A room's reconnected has the same (id, previousId) as root's (roomer.d.ts).
    assert await a.evaluate("seen('match', 'reconnected')[0].args") == [new_a, old_a]
    assert await a.evaluate("seen('match', 'dropped').map(e => [e.args[0].payload.text, "
                            "e.args[0].reason])") == [["q3", "queue_full"], ["q4", "queue_full"]]
    # Still one open, no close: code written for open/close sees one continuous room.
    assert await a.evaluate("[seen('root', 'open').length, seen('match', 'open').length, "
                            "seen('match', 'close').length, seen('root', 'close').length]") \
        == [1, 1, 0, 0]
    assert sorted(await a.evaluate("room.members()")) == sorted([b_id, new_a])
    assert await a.evaluate("room.open()") is True

    await until(b, "seen('match', 'seq').length === 3")
    assert await b.evaluate("seen('match', 'seq').map(e => [e.args[0].text, e.args[1]])") == [
        ["q0", new_a], ["q1", new_a], ["q2", new_a]]
    assert await b.evaluate("seen('match', 'member_left').map(e => e.args[0])") == [old_a]
    assert await b.evaluate("seen('match', 'new_member').map(e => e.args[0])") == [new_a]
    assert sorted(await b.evaluate("room.members()")) == sorted([b_id, new_a])


async def test_no_reconnection_when_kicked_or_disabled(pages: Pages, serve: Any) -> None:
    server = serve(*harness_args())
    kicked, plain, insists = [await harness(pages, server) for _ in range(3)]
    await joined(kicked, "match")
    await joined(plain, "match", options="{reconnect: false}")
    await joined(insists, "match", options="""{reconnect: {initialDelay: 50,
        shouldReconnect: (code, reason) => { window.asked = [code, reason]; return true; }}}""")
    for page, event in ((kicked, "kick-me"), (plain, "drop-me")):
        await page.evaluate(f"root.send({event!r})")
        await until(page, "seen('root', 'close').length === 1")
        assert await page.evaluate("""async () => [seen('match', 'close').length,
            seen('root', 'reconnecting').length, root.open(), room.open(),
            await root.ready().catch((e) => e.code)]""") == [1, 0, False, False, "closed"]
    # shouldReconnect decides: this one comes back after a kick.
    await insists.evaluate("root.send('kick-me')")
    await until(insists, "seen('match', 'reconnected').length === 1")
    assert await insists.evaluate("asked") == [1008, "kicked on request"]


async def test_a_silent_server_is_given_up_on(pages: Pages, serve: Any) -> None:
    # A server that accepts TCP and never answers: each attempt ends at connectTimeout,
    # and after maxAttempts the connection closes for good.
    server = serve(*harness_args())
    page = await harness(pages, server)
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    mute = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = mute.sockets[0].getsockname()[1]
    try:
        result = await page.evaluate(f"""async () => {{
            window.made = 0;
            class Counted extends WebSocket {{
                constructor(...args) {{ super(...args); window.made += 1; }}
            }}
            const root = record(roomer('ws://127.0.0.1:{port}/ws', {{
                connectTimeout: 300, WebSocket: Counted,
                reconnect: {{initialDelay: 50, maxAttempts: 2}}}}), 'reconnecting', 'close');
            const lobby = root.join('lobby');
            const why = await lobby.ready().catch((e) => [e.code, e.message]);
            return [why, made, seen('root', 'reconnecting').map((e) => e.args[2].code),
                    seen('root', 'close').length];
        }}""")
    finally:
        mute.close()
        for writer in accepted:
            writer.close()
    why, made, codes, closes = result
    assert why[0] == "closed" and "1006" in why[1]
    assert (made, codes, closes) == (3, [1006, 1006], 0)  # root never opened: no close
    assert len(accepted) == 3


async def test_a_slow_consumer_disconnect_is_retried(pages: Pages, serve: Any) -> None:
    # A page that stops reading (its main thread busy) while the room floods it falls
    # past its outbox limit: the server drops it as a slow consumer. The close frame
    # (1008 "slow consumer...") is stuck behind the unread data, so the page mostly sees
    # 1006; either way, unlike a kick, the close is retried.
    # The sender floods on purpose: no rate limits.
    server = serve(*harness_args("--outbox-limit", "4096", "--slow-consumer", "disconnect",
                                 "--rate-limit", "none", "--byte-limit", "none"))
    sender, receiver = await harness(pages, server), await harness(pages, server)
    await joined(sender, "match")
    # Without a session: what is tested is the cut and the retry as a new client (a
    # session would keep what it was sent for a resume; tests/browser/test_browser_resume.py).
    old = await joined(receiver, "match",
                       options="{reconnect: {initialDelay: 100}, resume: false}")
    await until(sender, "room.members().length === 2")
    # The receiver's main thread stays busy (it reads nothing) until the server says it
    # cut a slow consumer off: its /metrics, read with a synchronous request meanwhile.
    busy = asyncio.ensure_future(receiver.evaluate(f"""() => {{
        const end = Date.now() + {scaled(20.0) * 1000};
        while (Date.now() < end) {{
            const metrics = new XMLHttpRequest();
            metrics.open('GET', '/metrics', false);
            metrics.send();
            if (/^roomer_slow_disconnects_total [1-9]/m.test(metrics.responseText)) {{
                return true;
            }}
            const pause = Date.now() + 50;
            while (Date.now() < pause) {{}}
        }}
        return false;
    }}"""))
    await sender.evaluate("""() => {
        const big = 'x'.repeat(16384);
        for (let i = 0; i < 600; i++) room.send('flood', big);
    }""")
    assert await busy, "the server never cut the page that stopped reading"
    # The page reads the backlog it was sent before it sees the close; on a loaded CI run
    # that took longer than 10 s (and the cut itself once did).
    await receiver.wait_for_function("seen('match', 'reconnected').length === 1",
                                     timeout=scaled(30.0) * 1000)
    closed = await receiver.evaluate("seen('root', 'reconnecting')[0].args[2]")
    assert closed["code"] == 1006 or (
        closed["code"] == 1008 and closed["reason"].startswith("slow consumer")), closed
    assert await receiver.evaluate(f"[root.id() !== {old!r}, seen('match', 'close').length]") \
        == [True, 0]
    await sender.evaluate("room.send('chat', 'small')")
    await until(receiver, "seen('match', 'chat').length === 1")
