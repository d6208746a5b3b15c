"""roomer.js speaking protocol v2 in a real browser against ``roomer serve
browser_v2_app:setup``: beside v1 pages, namespaces (and refused ones), asks both ways,
and reconnection that connects the namespaces and joins their rooms again."""

from __future__ import annotations

import json
from typing import Any

import pytest
from browserkit import HARNESS, Pages, harness, joined, until
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve

# The server is a roomer serve process (uvloop): one loop here is enough.
pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.server_process]

V2 = "{protocol: 'v2'}"
FAST_V2 = "{protocol: 'v2', reconnect: {initialDelay: 100, maxDelay: 300, jitter: 0}}"


def v2_args(*extra: str) -> tuple[str, ...]:
    return ("browser_v2_app:setup", "--static", str(HARNESS), *extra)


async def test_a_v2_page_and_a_v1_page_share_a_room(pages: Pages, serve: Any) -> None:
    server = serve(*v2_args())
    old, new = await harness(pages, server), await harness(pages, server)
    old_id = await joined(old, "match")
    new_id = await joined(new, "match", options=V2)
    assert await new.evaluate("room.members()") == [old_id, new_id]
    await until(old, f"seen('match', 'new_member', ([id]) => id === {new_id!r}).length === 1")
    assert await new.evaluate("[room.namespaceName, root.namespaceName]") == ["", ""]

    await old.evaluate("room.send('chat', 'from v1 ☃')")
    await new.evaluate("room.send('bin', new Uint8Array([0, 255]))")
    await until(new, "seen('match', 'chat').length === 1")
    await until(old, "seen('match', 'bin').length === 1")
    assert await new.evaluate("seen('match', 'chat')[0].args") == [
        {"bytes": list("from v1 ☃".encode()), "text": "from v1 ☃"}, old_id]
    assert await old.evaluate("seen('match', 'bin')[0].args") == [
        {"bytes": [0, 255], "text": "\x00\ufffd"}, new_id]
    # direct messages both ways
    await old.evaluate("record(root, 'secret')")
    await new.evaluate("record(root, 'secret')")
    await new.evaluate(f"root.send('secret', 'to v1', {old_id!r})")
    await old.evaluate(f"root.send('secret', 'to v2', {new_id!r})")
    await until(old, "seen('root', 'secret').length === 1")
    await until(new, "seen('root', 'secret').length === 1")
    assert await old.evaluate("seen('root', 'secret')[0].args[0].text") == "to v1"
    assert await new.evaluate("seen('root', 'secret')[0].args[0].text") == "to v2"

    # the v2 page asks; the v1 page cannot
    assert await new.evaluate("room.ask('where').then(text)") == "/match"
    assert "protocol v2" in await old.evaluate(
        "(() => { try { room.ask('where'); } catch (e) { return e.message; } })()")
    assert "protocol v2" in await old.evaluate(
        "(() => { try { root.namespace('chat'); } catch (e) { return e.message; } })()")
    # leaving, by ask: the v1 page hears it as presence
    await new.evaluate("room.leave()")
    await until(new, "seen('match', 'close').length === 1")
    await until(old, f"seen('match', 'member_left', ([id]) => id === {new_id!r}).length")
    assert await old.evaluate("room.members()") == [old_id]
    assert await new.evaluate("Object.keys(root.rooms())") == ["root"]


async def test_namespaces_connect_isolate_and_refuse(pages: Pages, serve: Any) -> None:
    server = serve(*v2_args())
    a, b = await harness(pages, server), await harness(pages, server)
    a_id = await joined(a, "lobby", options=V2)  # the default namespace's lobby
    b_id = await joined(b, "match", options=V2)
    result = await a.evaluate("""async () => {
        window.chat = record(await root.namespace('chat'), 'welcome', 'error');
        window.chatLobby = record(await chat.joined('lobby'), 'chat', 'new_member',
                                  'member_left', 'close');
        return [chat.name, chat.namespaceName, chat.open(), chatLobby.namespaceName,
                chatLobby.members(), Object.keys(chat.rooms()).sort(),
                Object.keys(root.rooms()).sort(), root.namespace('chat') instanceof Promise];
    }""")
    assert result == ["root", "chat", True, "chat", [a_id], ["lobby", "root"],
                      ["lobby", "root"], True]
    # What on_connected sent right after the connect's reply reached the handler the page
    # registered once the promise resolved.
    await until(a, "seen('chat/root', 'welcome').length === 1")
    assert await a.evaluate("seen('chat/root', 'welcome')[0].args[0].text") == "in chat"
    assert await a.evaluate("async () => (await root.namespace('chat')) === chat") is True

    await b.evaluate("""async () => {
        window.chat = await root.namespace('chat');
        window.chatLobby = record(await chat.joined('lobby'), 'chat');
    }""")
    await until(a, f"seen('chat/lobby', 'new_member', ([id]) => id === {b_id!r}).length")
    assert await a.evaluate("[chatLobby.members(), room.members()]") == [[a_id, b_id], [a_id]]
    # "lobby" of chat is not "lobby" of the default namespace
    await b.evaluate("chatLobby.send('chat', 'in chat')")
    await until(a, "seen('chat/lobby', 'chat').length === 1")
    assert await a.evaluate("[seen('chat/lobby', 'chat')[0].args[0].text, "
                            "seen('lobby', 'chat').length]") == ["in chat", 0]
    assert await a.evaluate("chatLobby.ask('where').then(text)") == "chat/lobby"
    assert await a.evaluate("room.ask('where').then(text)") == "/lobby"

    # the server recorded chat's hooks for A, once each, in order
    async def hooks(page: Any, who: str) -> list[str]:
        return json.loads(await page.evaluate(f"root.ask('seen', {who!r}).then(text)"))

    assert await hooks(a, a_id) == ["connect", "connected", "join:lobby", "joined:lobby"]
    await a.evaluate("chatLobby.leave()")
    await until(a, "seen('chat/lobby', 'close').length === 1")
    await a.evaluate("chat.joined('second')")
    await a.evaluate("chat.disconnect()")
    assert await hooks(a, a_id) == [
        "connect", "connected", "join:lobby", "joined:lobby", "leave:lobby", "left:lobby",
        "join:second", "joined:second", "leave:root", "left:root", "leave:second",
        "left:second", "disconnect"]
    assert await a.evaluate("""async () => [chat.open(), Object.keys(root.rooms()).sort(),
        await chat.ask('where').catch((e) => e.code),
        await chat.ready().catch((e) => e.code)]""") == [False, ["lobby", "root"], "closed",
                                                         "closed"]
    await until(b, f"chatLobby.members().join() === {b_id!r}")  # A's rooms there left

    # refusals reject with the server's code; the connection stays as it was
    refused = await a.evaluate("""async () => {
        const why = (e) => [e.code, e.serverMessage, e instanceof RoomerError];
        return [await root.namespace('vip').then(() => 'in', why),
                await root.namespace('nope').then(() => 'in', why), root.open()];
    }""")
    assert refused == [["namespace_denied", "members only", True],
                       ["no_such_namespace", "no such namespace", True], True]
    member = await harness(pages, server)
    assert await member.evaluate("""async () => {
        window.root = roomer('/ws?pass=gold', {protocol: 'v2'});
        const vip = await root.namespace('vip');
        return [vip.open(), vip.namespaceName];
    }""") == [True, "vip"]


async def test_asks_both_ways(pages: Pages, serve: Any) -> None:
    # 1,000 asks at once on purpose, both ways: no rate limits, and room for the server's.
    server = serve(*v2_args("--rate-limit", "none", "--byte-limit", "none",
                            "--max-pending-asks", "1000"))
    page = await harness(pages, server)
    await joined(page, "match", options=V2)
    # the page asks the server
    got = await page.evaluate("""async () => {
        const why = (e) => [e.code, e.serverMessage, e.event, e.room];
        return [await room.ask('where').then(text),
                await room.ask('refuse').then(text, why),
                await room.ask('nobody-answers').then(text, why),
                await room.ask('hold', 'x', {timeout: 50}).then(text, why)];
    }""")
    assert got == ["/match", ["sold_out", "none left", "refuse", "match"],
                   ["no_handler", "nothing answers 'nobody-answers'", "nobody-answers", "match"],
                   ["timeout", "no answer to 'hold' within 50 ms", "hold", "match"]]
    # many timeouts leave no waiter; the late answers are counted and ignored
    assert await page.evaluate("""async () => {
        const asks = [];
        for (let i = 0; i < 49; i++) asks.push(room.ask('hold', 'x', {timeout: 30}));
        const codes = await Promise.all(asks.map((p) => p.catch((e) => e.code)));
        const other = roomer('/ws', {protocol: 'v2'});
        await other.ask('release', 'x');
        other.close();
        return [codes.every((c) => c === 'timeout'), root.pendingAsks()];
    }""") == [True, 0]
    await until(page, "root.unknownReplies() === 50")
    assert await page.evaluate("""['join', 'leave', 'connect', 'disconnect', 'join_ack',
        'reconnected'].map((name) => { try { room.ask(name); return 'asked'; }
                                       catch (e) { return e instanceof TypeError; } })""") \
        == [True] * 6
    # 1,000 at once, each answered with its own reply
    assert await page.evaluate("""async () => {
        const asks = [];
        for (let i = 0; i < 1000; i++) asks.push(room.ask('hold', String(i), {timeout: 0}));
        const peak = root.pendingAsks();
        const other = await roomer('/ws', {protocol: 'v2'}).ready();
        for (let i = 0; i < 1000; i++) other.send('release', String(i));
        const answers = (await Promise.all(asks)).map(text);
        other.close();
        return [peak, answers.every((a, i) => a === `released ${i}`), root.pendingAsks()];
    }""") == [1000, True, 0]

    # the server asks the page (ask-me: the server asks, and replies with what it got)
    results = await page.evaluate("""async () => {
        root.onAsk('q', (payload, sender) => {
            const t = text(payload);
            if (t === 'bytes') return new Uint8Array([104, 105]);
            if (t === 'json') return {n: 6};
            if (t === 'none') return undefined;
            if (t === 'later') return new Promise((r) => setTimeout(() => r('done'), 20));
            if (t === 'busy') throw new RoomerError('busy', 'try later');
            if (t === 'reject') return Promise.reject(new RoomerError('no', 'async no'));
            if (t === 'crash') throw new Error('boom');
            if (t === 'never') return new Promise(() => {});
            return `${t.toUpperCase()} from ${JSON.stringify(sender)}`;
        });
        room.onAsk('q', () => 'in match');
        const ask = async (spec, where = root) =>
            JSON.parse(text(await where.ask('ask-me', JSON.stringify(spec))));
        const out = [];
        for (const p of ['hi', 'bytes', 'json', 'none', 'later', 'busy', 'reject', 'crash']) {
            out.push(await ask({event: 'q', payload: p}));
        }
        out.push(await ask({event: 'q', payload: 'never', timeout: 0.1}));
        out.push(await ask({event: 'unknown'}));
        out.push(await ask({event: 'q', room: 'match'}));
        root.offAsk('q');
        out.push(await ask({event: 'q'}));
        return out;
    }""")
    assert results == [
        {"answer": 'HI from ""'}, {"answer": "hi"}, {"answer": '{"n":6}'}, {"answer": ""},
        {"answer": "done"}, {"error": "busy", "message": "try later"},
        {"error": "no", "message": "async no"},
        {"error": "handler_error", "message": "internal error"}, {"error": "timeout"},
        {"error": "no_handler", "message": "nothing answers 'unknown'"},
        {"answer": "in match"}, {"error": "no_handler", "message": "nothing answers 'q'"}]
    # the server asks 1,000 times at once, in a namespace
    assert await page.evaluate("""async () => {
        const chat = await root.namespace('chat');
        chat.onAsk('echo', (payload) => text(payload));
        return JSON.parse(text(await chat.ask('ask-many', '1000', {timeout: 30000})));
    }""") == 1000


async def test_reconnection_restores_namespaces_and_rooms(pages: Pages, serve: Any) -> None:
    server = serve(*v2_args())
    a, b = await harness(pages, server), await harness(pages, server)
    old_a = await joined(a, "match", options=FAST_V2)
    await a.evaluate("""async () => {
        window.chat = record(await root.namespace('chat'), 'reconnecting', 'reconnected',
                             'welcome', 'close');
        window.chatLobby = record(await chat.joined('lobby'), 'chat', 'reconnected',
                                  'new_member', 'member_left', 'close');
        chatLobby.onAsk('q', () => 'still answering');
    }""")
    b_id = await joined(b, "match", options=V2)
    await b.evaluate("""async () => {
        window.chat = await root.namespace('chat');
        window.chatLobby = record(await chat.joined('lobby'), 'chat', 'new_member',
                                  'member_left');
    }""")
    await until(a, "chatLobby.members().length === 2")

    # Dropped (1011) with an ask in flight; while away it asks again (queued).
    lost = await a.evaluate("""async () => {
        chat.once('reconnecting', () => { window.queued = chat.ask('where'); });
        return await root.ask('drop-me').catch((e) => e.code);
    }""")
    assert lost == "disconnected"
    await until(a, "seen('chat/lobby', 'reconnected').length === 1 && "
                   "seen('match', 'reconnected').length === 1 && "
                   "seen('chat/root', 'reconnected').length === 1")
    new_a = await a.evaluate("root.id()")
    assert new_a != old_a
    assert await a.evaluate("queued.then(text)") == "chat/root"
    # one continuous room for code written against open/close; on_connected ran again
    assert await a.evaluate("""[chat.open(), chatLobby.open(), room.open(),
        seen('chat/lobby', 'close').length, seen('chat/root', 'close').length,
        seen('chat/root', 'welcome').length, seen('chat/root', 'reconnected')[0].args,
        root.pendingAsks()]""") == [True, True, True, 0, 0, 2, [new_a, old_a], 0]
    assert sorted(await a.evaluate("chatLobby.members()")) == sorted([new_a, b_id])
    # the server saw the new connection connect to chat and join its lobby again
    assert json.loads(await a.evaluate(f"root.ask('seen', {new_a!r}).then(text)")) == [
        "connect", "connected", "join:lobby", "joined:lobby"]
    await until(b, f"seen('chat/lobby', 'member_left', ([id]) => id === {old_a!r}).length "
                   f"&& seen('chat/lobby', 'new_member', ([id]) => id === {new_a!r}).length")

    # talking as before, and the onAsk handler still answers
    await b.evaluate("chatLobby.send('chat', 'after the drop')")
    await until(a, "seen('chat/lobby', 'chat').length === 1")
    await a.evaluate("chatLobby.send('chat', 'me too')")
    await until(b, "seen('chat/lobby', 'chat').length === 1")
    assert await b.evaluate("seen('chat/lobby', 'chat')[0].args.map((x) => x.text ?? x)") == [
        "me too", new_a]
    assert json.loads(await a.evaluate(
        "chat.ask('ask-me', JSON.stringify({event: 'q', room: 'lobby'})).then(text)")) == {
        "answer": "still answering"}


async def test_before_the_connection_is_up_and_refused_after_a_reconnection(
        pages: Pages, serve: Any) -> None:
    server = serve(*v2_args())
    page = await harness(pages, server)
    # Asks and namespaces made before the socket is open wait for it (asks in the send
    # queue: past its limit they are refused at once).
    early = await page.evaluate("""async () => {
        window.root = record(roomer('/ws', {protocol: 'v2', sendQueueLimit: 1,
            reconnect: {initialDelay: 100, jitter: 0}}), 'error');
        const first = root.ask('where');
        const second = root.ask('where').catch((e) => e.code);
        const flaky = record(await root.namespace('flaky'), 'error', 'close', 'reconnected');
        window.flakyRoom = record(await flaky.joined('r'), 'close', 'error');
        window.match = record(await root.joined('match'), 'reconnected');
        return [text(await first), await second, flaky.open(), flakyRoom.open()];
    }""")
    assert early == ["/root", "queue_full", True, True]
    # The server now refuses "flaky": after a reconnection its root fires error and it
    # closes with its rooms; the default namespace's rooms come back.
    await page.evaluate("root.send('close-flaky'); root.send('drop-me')")
    await until(page, "seen('flaky/root', 'close').length === 1 && "
                      "seen('match', 'reconnected').length === 1")
    assert await page.evaluate("""async () => [
        seen('flaky/root', 'error').map((e) => [e.args[0].code, e.args[0].event]),
        seen('flaky/root', 'reconnected').length, seen('flaky/r', 'close').length,
        flakyRoom.open(), match.open(), seen('root', 'error').length,
        await root.namespace('flaky').catch((e) => [e.code, e.serverMessage])]""") == [
        [["namespace_denied", "connect"]], 0, 1, False, True, 0,
        ["namespace_denied", "flaky is closed now"]]


async def test_a_server_without_v2_is_not_spoken_to(pages: Pages, serve: Any) -> None:
    server = serve(*v2_args())
    page = await harness(pages, server)

    # A plain WebSocket server: its 101 names no subprotocol, so the browser fails the
    # handshake (as for a v1-only server); without reconnection the rooms close.
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with ws_serve(handler, "127.0.0.1", 0) as plain:
        port = plain.sockets[0].getsockname()[1]
        why = await page.evaluate(f"""async () => {{
            const r = roomer('ws://127.0.0.1:{port}/', {{protocol: 'v2', reconnect: false}});
            return await r.ready().catch((e) => [e.code, e.message]);
        }}""")
    assert why[0] == "closed" and "1006" in why[1]
    # A WebSocket that lets a handshake through with another subprotocol: refused here.
    why = await page.evaluate("""async () => {
        class Other extends WebSocket { get protocol() { return 'roomer.v1'; } }
        const r = record(roomer('/ws', {protocol: 'v2', WebSocket: Other}), 'close');
        return await r.ready().catch((e) => [e.code, e.message]);
    }""")
    assert why[0] == "unsupported_protocol" and "v1 only" in why[1]
