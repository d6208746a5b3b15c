"""roomer.js resuming sessions (docs/protocol.md §11) in a real browser: a page whose
connection fails comes back with its id and rooms and gets what it missed once, in order;
a page reloaded meanwhile resumes from sessionStorage; and the client's side of the
protocol (the URL it asks with, its acks, the verdicts) against a scripted socket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from browserkit import Pages, harness, harness_args, until
from clusterkit import Proxy

# The server is a roomer serve process (uvloop): one loop here is enough.
pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.server_process]

FAST = "reconnect: {initialDelay: 100, maxDelay: 400}"
# The events these tests read, beside the messages: what the client emits of its own.
EVENTS = ("'open', 'close', 'error', 'reconnecting', 'reconnected', 'resumed', 'lost', "
          "'dropped', 'new_member', 'member_left', 'member_dropped', 'member_back', 'seq', "
          "'chat'")


async def connect(page: Any, room: str, url: str = "/ws", options: str = "",
                  wait: bool = True) -> str:
    """Connect the page to ``url`` and join ``room``, every event recorded from the start
    (a resume's come before the room is ready); the page's id once the room is open
    (``wait``), else at once ("")."""
    return await page.evaluate(f"""async () => {{
        window.root = record(roomer({url!r}, {{{options}}}), {EVENTS});
        window.room = record(root.join({room!r}), {EVENTS});
        if ({str(wait).lower()}) await room.ready();
        return root.id();
    }}""")


def texts(event: str, room: str = "match") -> str:
    """A page expression: the texts and senders of ``event`` in ``room``."""
    return f"seen({room!r}, {event!r}).map((e) => [e.args[0].text, e.args[1]])"


async def stream(sender: Any, receiver: Any) -> None:
    """``sender`` starts sending 300 numbered messages ('seq') to the room, 100 a second
    (the server's rate limit is 200); back once ``receiver`` has seen 60 of them."""
    await sender.evaluate("""() => {
        window.sent = 0;
        const timer = setInterval(() => {
            room.send('seq', String(sent));
            if (++sent === 300) clearInterval(timer);
        }, 10);
    }""")
    await until(receiver, "seen('match', 'seq').length >= 60")


async def test_a_dropped_page_resumes_its_id_rooms_and_stream(pages: Pages, serve: Any) -> None:
    # A's TCP connection goes through a proxy that the test cuts: no close frame either
    # way, as a failed network ends it. The server holds A's session while B streams into
    # the room; A comes back into it and misses nothing.
    server = serve(*harness_args())
    proxy = Proxy(server.port)
    await proxy.start()
    listening = True
    a, b = await harness(pages, server), await harness(pages, server)
    try:
        a_id = await connect(a, "match", f"ws://127.0.0.1:{proxy.port}/ws", FAST)
        b_id = await connect(b, "match", options="protocol: 'v2'")
        await until(a, "room.members().length === 2")
        await stream(b, a)
        # While away A sends 3 messages: they wait in its queue for the resume.
        await a.evaluate("""() => root.once('reconnecting', () => {
            window.away = [root.open(), room.open()];
            for (let i = 0; i < 3; i++) room.send('chat', `q${i}`);
        })""")
        await proxy.cut()
        listening = False
        got_at_cut = await a.evaluate("seen('match', 'seq').length")
        # Away long enough for B's stream to pile up in the held session (and for A to try
        # in vain: the proxy refuses meanwhile).
        await until(b, f"sent >= {got_at_cut} + 80")
        await until(a, "seen('root', 'reconnecting').length >= 2")
        await until(b, "seen('match', 'member_dropped').length === 1")
        await proxy.restore()
        listening = True

        await until(a, "seen('match', 'seq').length === 300")
        # Every message once, in order: those in flight at the cut and those sent while A
        # was away came with the resume, before the rest.
        assert await a.evaluate(texts("seq")) == [[str(i), b_id] for i in range(300)]
        assert await a.evaluate("away") == [False, False]
        assert await a.evaluate("root.id()") == a_id
        assert await a.evaluate("""[seen('root', 'resumed').map((e) => e.args),
            seen('match', 'resumed').map((e) => e.args)]""") == [[[a_id]], [[a_id]]]
        # Resumed, not reconnected: the same id, one open and no close (that no join is
        # sent again is checked message by message below).
        assert await a.evaluate("""['reconnected', 'lost', 'close', 'error', 'dropped'].flatMap(
            (name) => [...seen('root', name), ...seen('match', name)])""") == []
        assert await a.evaluate("[seen('root', 'open').length, seen('match', 'open').length,"
                                " root.open(), room.open()]") == [1, 1, True, True]
        assert sorted(await a.evaluate("room.members()")) == sorted([a_id, b_id])

        # B (v2) was told A dropped and came back, and no more: A never left the room.
        await until(b, "seen('match', 'member_back').length === 1")
        assert await b.evaluate("""['member_dropped', 'member_back', 'member_left',
            'new_member'].map((name) => seen('match', name).map((e) => e.args[0]))""") == [
            [a_id], [a_id], [], []]
        # What A queued while away reached B after the resume, in order, from the same id.
        await until(b, "seen('match', 'chat').length === 3")
        assert await b.evaluate(texts("chat")) == [["q0", a_id], ["q1", a_id], ["q2", a_id]]
    finally:
        if listening:
            await proxy.cut()


async def test_a_page_whose_server_restarts_resumes_on_the_other_node(
        pages: Pages, serve: Any, redis_url: str, prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Two nodes over Redis sharing a resume secret; A reaches the first through a proxy
    # (its load balancer). The first node is stopped with SIGTERM while B, on the second,
    # streams: A's page is closed with 1012, its reconnect reaches the second node, and the
    # session moves there with nothing lost and nobody seeing A leave.
    monkeypatch.setenv("ROOMER_RESUME_SECRET", "the browser test's shared secret")
    cluster = ("--backplane", redis_url, "--backplane-prefix", prefix)
    first, second = serve(*harness_args(*cluster)), serve(*harness_args(*cluster))
    proxy = Proxy(first.port)
    await proxy.start()
    a, b = await harness(pages, second), await harness(pages, second)
    try:
        a_id = await connect(a, "match", f"ws://127.0.0.1:{proxy.port}/ws", FAST)
        b_id = await connect(b, "match", options="protocol: 'v2'")
        await until(a, "room.members().length === 2")
        await stream(b, a)
        proxy.target_port = second.port  # what connects from now on reaches the second
        await asyncio.to_thread(first.stop)  # SIGTERM: it hands A's session over
        await until(a, "seen('match', 'seq').length === 300")
        assert await a.evaluate(texts("seq")) == [[str(i), b_id] for i in range(300)]
        assert await a.evaluate("root.id()") == a_id
        assert await a.evaluate("""[seen('root', 'resumed').length, seen('root', 'lost').length,
            seen('root', 'reconnected').length, seen('match', 'close').length]""") == [
            1, 0, 0, 0]
        closed = await a.evaluate("seen('root', 'reconnecting').map((e) => e.args[2].code)")
        assert closed[:1] == [1012], closed
        await until(b, "seen('match', 'member_back').length === 1")
        assert await b.evaluate("""['member_dropped', 'member_back', 'member_left',
            'new_member'].map((name) => seen('match', name).map((e) => e.args[0]))""") == [
            [a_id], [a_id], [], []]
    finally:
        await proxy.cut()


async def test_a_page_reloaded_while_dropped_resumes_from_session_storage(
        pages: Pages, serve: Any) -> None:
    # A's connection fails (the proxy cuts it), then the page is reloaded before it could
    # come back: the new page finds the session in sessionStorage and resumes it.
    server = serve(*harness_args())
    proxy = Proxy(server.port)
    await proxy.start()
    listening = True
    url = f"ws://127.0.0.1:{proxy.port}/ws"
    key = f"roomer.session {url}"
    a, b = await harness(pages, server), await harness(pages, server)
    try:
        a_id = await connect(a, "match", url, FAST)
        b_id = await connect(b, "match", options="protocol: 'v2'")
        await a.evaluate("() => { root.join('side'); }")
        await b.evaluate("() => { record(root.join('side'), " + EVENTS + "); }")
        await until(a, "root.rooms().side?.open() && root.rooms().side.members().length === 2")
        await b.evaluate("for (let i = 0; i < 5; i++) room.send('seq', String(i))")
        await until(a, "seen('match', 'seq').length === 5")

        await proxy.cut()
        listening = False
        await until(b, "seen('match', 'member_dropped').length === 1")
        await until(a, "seen('root', 'reconnecting').length >= 1")
        await b.evaluate("for (let i = 5; i < 10; i++) room.send('seq', String(i))")
        await a.reload()
        await a.wait_for_function("window.ready === true")
        # What the page before stored as it went: the session and its rooms.
        stored = json.loads(await a.evaluate(f"sessionStorage.getItem({key!r})"))
        assert (set(stored), stored["rooms"]) == (
            {"token", "received", "rooms"}, {"": ["match", "side"]})
        # The new page joins "match" again, not "side"; it connects once the network is back.
        await connect(a, "match", url, FAST, wait=False)
        await proxy.restore()
        listening = True

        await until(a, "room.open()")
        assert await a.evaluate("root.id()") == a_id
        assert await a.evaluate("""[seen('root', 'open').length, seen('root', 'resumed').length,
            seen('root', 'lost').length, seen('match', 'open').length,
            seen('root', 'reconnected').length]""") == [1, 1, 0, 1, 0]
        # The messages the page before had not received, once; none it had.
        await until(a, "seen('match', 'seq').length === 5")
        assert await a.evaluate(texts("seq")) == [[str(i), b_id] for i in range(5, 10)]
        assert sorted(await a.evaluate("room.members()")) == sorted([a_id, b_id])
        # B saw A drop and come back in "match"; "side", which the new page did not join
        # again, A left.
        await until(b, "seen('match', 'member_back').length === 1")
        await until(b, "seen('side', 'member_left').length === 1")
        assert await b.evaluate("""[seen('match', 'member_left').length,
            seen('match', 'new_member').length,
            seen('side', 'member_left').map((e) => e.args[0])]""") == [0, 0, [a_id]]

        # close() ends the session: nothing is kept, and the next page starts a new one.
        await a.evaluate("root.close()")
        assert await a.evaluate(f"sessionStorage.getItem({key!r})") is None
        await a.reload()
        await a.wait_for_function("window.ready === true")
        assert await connect(a, "match", url, FAST) != a_id
        assert await a.evaluate("seen('root', 'lost').length") == 0
    finally:
        if listening:
            await proxy.cut()


async def test_a_reloaded_page_keeps_its_id(pages: Pages, serve: Any) -> None:
    server = serve(*harness_args())
    a, b = await harness(pages, server), await harness(pages, server)
    a_id = await connect(a, "match", options=FAST)
    await connect(b, "match", options="protocol: 'v2'")
    key = f"roomer.session ws://127.0.0.1:{server.port}/ws"
    await until(a, f"sessionStorage.getItem({key!r}) !== null")
    await a.reload()
    await a.wait_for_function("window.ready === true")
    assert await connect(a, "match", options=FAST) == a_id
    assert await b.evaluate("seen('match', 'member_left').length") == 0


# A WebSocket the test plays the server of: it records what the client sends (v1 bodies,
# decoded) and delivers what the test says, so each rule of the client's side of §11 can
# be checked message by message.
SCRIPTED = """() => {
    const enc = new TextEncoder();
    const dec = new TextDecoder();
    function body(room, event, src, payload) {
        const fields = [room, event, '', src, payload].map((f) => enc.encode(f));
        const out = new Uint8Array(fields.reduce((n, f) => n + 4 + f.length, 0));
        const view = new DataView(out.buffer);
        let at = 0;
        for (const f of fields) {
            view.setUint32(at, f.length);
            out.set(f, at + 4);
            at += 4 + f.length;
        }
        return out.buffer;
    }
    function parse(bytes) {
        const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        const fields = [];
        for (let i = 0, at = 0; i < 5; i++) {
            const size = view.getUint32(at);
            fields.push(dec.decode(bytes.subarray(at + 4, at + 4 + size)));
            at += 4 + size;
        }
        return { room: fields[0], event: fields[1], payload: fields[4], at: performance.now() };
    }
    window.sockets = [];
    window.Scripted = class {
        constructor(url) {
            this.url = url;
            this.readyState = 0;
            this.protocol = '';
            this.sent = [];
            sockets.push(this);
            setTimeout(() => { this.readyState = 1; this.onopen({}); });
        }
        send(data) { this.sent.push(parse(data)); }
        close(code = 1005, reason = '') {
            if (this.readyState === 3) return;
            this.readyState = 3;
            setTimeout(() => this.onclose({ code, reason }));
        }
        deliver(room, event, src = '', payload = '') {
            this.onmessage({ data: body(room, event, src, payload) });
        }
        drop() {
            this.readyState = 3;
            this.onclose({ code: 1006, reason: '' });
        }
        acks() {
            return this.sent.filter((m) => m.event === 'session.ack').map((m) => m.payload);
        }
        others() {
            return this.sent.filter((m) => m.event !== 'session.ack')
                .map((m) => [m.room, m.event, m.payload]);
        }
    };
}"""
URL = "ws://127.0.0.1:9/ws?app=1"  # never dialled: the scripted socket plays the server
KEY = f"roomer.session {URL}"


async def test_the_client_side_of_a_session_message_by_message(pages: Pages,
                                                                serve: Any) -> None:
    page = await harness(pages, serve(*harness_args()))
    await page.evaluate(SCRIPTED)
    # Asking: session=new after the URL's own query.
    await page.evaluate(f"""() => {{
        window.root = record(roomer({URL!r}, {{WebSocket: Scripted,
            reconnect: {{initialDelay: 10, maxDelay: 10, jitter: 0}}}}), {EVENTS});
        window.room = record(root.join('match'), {EVENTS});
    }}""")
    await until(page, "sockets.length === 1 && sockets[0].readyState === 1")
    assert await page.evaluate("sockets[0].url") == URL + "&session=new"
    await page.evaluate("""() => {
        const s = sockets[0];
        s.deliver('root', 'join_ack', 'me', '["me"]');                        // message 1
        s.deliver('root', 'session', '', '{"token": "t/1+=", "window": 20}');  // 2
        s.deliver('match', 'join_ack', 'me', '["me", "peer"]');               // 3
        for (let i = 0; i < 300; i++) s.deliver('match', 'seq', 'peer', String(i));  // 303
    }""")
    # The 256th message is acknowledged at once, the rest within half a second.
    assert await page.evaluate("sockets[0].acks()") == ["256"]
    await until(page, "sockets[0].acks().length === 2")
    assert await page.evaluate("sockets[0].acks()") == ["256", "303"]
    assert await page.evaluate("sockets[0].sent.filter((m) => m.event === 'session.ack')"
                               ".map((m) => m.room)") == ["root", "root"]
    assert json.loads(await page.evaluate(f"sessionStorage.getItem({KEY!r})")) == {
        "token": "t/1+=", "received": 303, "rooms": {"": ["match"]}}
    # One timer, started by the first unacknowledged message: one arriving 400 ms later
    # does not put the ack off.
    first, second, acked = await page.evaluate("""() => new Promise((resolve) => {
        const s = sockets[0];
        const first = performance.now();
        s.deliver('match', 'seq', 'peer', '300');
        setTimeout(() => {
            const second = performance.now();
            s.deliver('match', 'seq', 'peer', '301');
            const poll = () => s.acks().length === 3
                ? resolve([first, second, s.sent.at(-1).at]) : setTimeout(poll, 5);
            poll();
        }, 400);
    })""")
    assert await page.evaluate("sockets[0].acks()") == ["256", "303", "305"]
    assert acked - first >= 490 and acked - second < 500, (first, second, acked)
    # The server's presence of a held session: a room event, the member stays.
    await page.evaluate("""() => {
        sockets[0].deliver('match', 'member_dropped', '', 'peer');
        sockets[0].deliver('match', 'member_back', '', 'peer');
    }""")                                                                  # 307
    assert await page.evaluate("""[seen('match', 'member_dropped').map((e) => e.args),
        seen('match', 'member_back').map((e) => e.args), room.members()]""") == [
        [["peer"]], [["peer"]], ["me", "peer"]]
    for name in ("member_back", "session.ack", "resumed", "lost"):
        assert "reserved" in await page.evaluate(
            f"(() => {{ try {{ room.send({name!r}); }} catch (e) {{ return e.message; }} }})()")

    # Dropped: the next socket resumes with the token (URL-encoded) and the count; what is
    # sent while away waits, and nothing is sent before the verdict.
    await page.evaluate("sockets[0].drop(); room.send('chat', 'q0'); room.send('chat', 'q1')")
    await until(page, "sockets.length === 2 && sockets[1].readyState === 1")
    assert await page.evaluate("sockets[1].url") == (
        URL + "&session=t%2F1%2B%3D&received=307")
    assert await page.evaluate("[sockets[1].sent.length, root.open(), room.open()]") == [
        0, False, False]
    await page.evaluate("""sockets[1].deliver('root', 'session.resumed', 'me',
        '{"id": "me", "token": "t2", "window": 20}')""")
    # Resumed: same id, the room open again without a join, the queue sent in order.
    assert await page.evaluate("""[root.id(), root.open(), room.open(), sockets[1].others(),
        seen('root', 'resumed').map((e) => e.args), seen('match', 'resumed').length,
        seen('root', 'reconnected').length + seen('match', 'reconnected').length]""") == [
        "me", True, True, [["match", "chat", "q0"], ["match", "chat", "q1"]], [["me"]], 1, 0]
    # The verdict was not counted: the next message is the 308th.
    await page.evaluate("sockets[1].deliver('match', 'seq', 'peer', 'after')")
    await until(page, "sockets[1].acks().length === 1")
    assert await page.evaluate("sockets[1].acks()") == ["308"]
    assert json.loads(await page.evaluate(f"sessionStorage.getItem({KEY!r})"))["token"] == "t2"

    # Dropped again, and the server cannot resume: lost, then a new session on that socket
    # whose root join_ack is message 1, and a reconnection as without sessions.
    await page.evaluate("sockets[1].drop()")
    await until(page, "sockets.length === 3 && sockets[2].readyState === 1")
    assert await page.evaluate("sockets[2].url") == URL + "&session=t2&received=308"
    await page.evaluate("""() => {
        const s = sockets[2];
        s.deliver('root', 'session.lost', '',
                  '{"code": "resume_failed", "message": "expired"}');
        s.deliver('root', 'join_ack', 'me2', '["me2"]');                       // 1
        s.deliver('root', 'session', '', '{"token": "t3", "window": 20}');     // 2
    }""")
    assert await page.evaluate("""[seen('root', 'lost').map((e) => e.args),
        seen('match', 'lost').length, seen('root', 'reconnected').map((e) => e.args),
        sockets[2].others()]""") == [
        [["resume_failed", "expired"]], 1, [["me2", "me"]], [["match", "join", ""]]]
    await page.evaluate("""() => {
        sockets[2].deliver('match', 'join_ack', 'me2', '["me2", "peer"]');     // 3
        for (let i = 0; i < 253; i++) sockets[2].deliver('match', 'seq', 'peer', 'x');  // 256
    }""")
    assert await page.evaluate("sockets[2].acks()") == ["256"]
    assert await page.evaluate("seen('match', 'reconnected').map((e) => e.args)") == [
        ["me2", "me"]]

    # close() ends the session: nothing stored for a reload.
    await page.evaluate("root.close()")
    assert await page.evaluate(f"sessionStorage.getItem({KEY!r})") is None
    # Off: the URL as given, no session asked (resume follows reconnect by default).
    await page.evaluate("""() => {
        roomer('ws://127.0.0.1:9/plain', {WebSocket: Scripted, resume: false});
        roomer('ws://127.0.0.1:9/plain', {WebSocket: Scripted, reconnect: false});
        roomer('ws://127.0.0.1:9/plain', {WebSocket: Scripted});
    }""")
    await until(page, "sockets.length === 6")
    assert await page.evaluate("sockets.slice(3).map((s) => s.url)") == [
        "ws://127.0.0.1:9/plain", "ws://127.0.0.1:9/plain",
        "ws://127.0.0.1:9/plain?session=new"]
