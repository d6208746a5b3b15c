"""roomer.js with batch frames (docs/protocol.md §13) in a real browser against ``roomer
serve browser_batch_app:setup``: a v2 page negotiates ``roomer.v2.batch`` and gets what
one flush of the server brings in one ``message`` event, each entry handled and counted
as a message; with ``coalesce`` it writes what it sends once a frame, asks and sessions
working as before; against a server that names only ``roomer.v2`` nothing changes. Then
the client's side frame by frame, against a scripted socket."""

from __future__ import annotations

from typing import Any

import pytest
from browserkit import HARNESS, Pages, RoomerServe, harness, joined, until
from clusterkit import Proxy

from roomer.benchmark.procs import read_metrics

# The server is a roomer serve process (uvloop): one loop here is enough.
pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.server_process]

V2 = "{protocol: 'v2'}"
COALESCE = "{protocol: 'v2', coalesce: true}"
FAST_COALESCE = ("{protocol: 'v2', coalesce: true, "
                 "reconnect: {initialDelay: 100, maxDelay: 400}}")

# The v2 bytes, in the page: a frame's messages (a batch's entries, decoded each), and v2
# bodies and batches built for the scripted socket below.
CODEC = """() => {
    const enc = new TextEncoder();
    const dec = new TextDecoder();
    function decode(bytes) {
        const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        const fields = [];
        for (let i = 0, at = 5; i < 6; i++) {
            const size = view.getUint32(at);
            fields.push(dec.decode(bytes.subarray(at + 4, at + 4 + size)));
            at += 4 + size;
        }
        return { kind: bytes[0], id: view.getUint32(1), room: fields[1], event: fields[2],
                 src: fields[4], payload: fields[5] };
    }
    /** A frame as {batch, messages}: a batch's entries, or the one message it is. */
    window.frameOf = (data, batches) => {
        const bytes = new Uint8Array(data);
        if (!batches || bytes[0] !== 4) return { batch: false, messages: [decode(bytes)] };
        const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        const messages = [];
        for (let at = 1; at < bytes.length;) {
            const size = view.getUint32(at);
            messages.push(decode(bytes.subarray(at + 4, at + 4 + size)));
            at += 4 + size;
        }
        return { batch: true, messages };
    };
    /** A v2 body (default namespace, no dst). */
    window.body = (kind, id, room, event, src = '', payload = '') => {
        const fields = ['', room, event, '', src, payload].map((f) => enc.encode(f));
        const out = new Uint8Array(5 + fields.reduce((n, f) => n + 4 + f.length, 0));
        const view = new DataView(out.buffer);
        view.setUint8(0, kind);
        view.setUint32(1, id);
        let at = 5;
        for (const f of fields) {
            view.setUint32(at, f.length);
            out.set(f, at + 4);
            at += 4 + f.length;
        }
        return out;
    };
    /** A batch of bodies; ``sizes`` overrides the lengths written (to break it). */
    window.batchOf = (bodies, sizes = []) => {
        const out = new Uint8Array(1 + bodies.reduce((n, b) => n + 4 + b.length, 0));
        const view = new DataView(out.buffer);
        out[0] = 4;
        let at = 1;
        bodies.forEach((b, i) => {
            view.setUint32(at, sizes[i] ?? b.length);
            out.set(b, at + 4);
            at += 4 + b.length;
        });
        return out;
    };
    window.event = (room, event, src = '', payload = '') => body(0, 0, room, event, src,
                                                                 payload);
}"""

# The page's WebSocket wrapped before roomer() makes its socket (it takes
# globalThis.WebSocket then): each socket's log holds what it offered, the subprotocol
# its 101 named, and every frame it received and sent, decoded (see frameOf).
WIRE = """() => {
    window.wires = [];
    const Base = window.WebSocket;
    window.WebSocket = class extends Base {
        constructor(url, protocols) {
            super(url, protocols);
            const log = { offered: protocols, protocol: null, received: [], sent: [] };
            this.log = log;
            wires.push(log);
            this.addEventListener('open', () => { log.protocol = this.protocol; });
            this.addEventListener('message', (e) => {
                log.received.push(frameOf(e.data, this.protocol === 'roomer.v2.batch'));
            });
        }
        send(data) {
            this.log.sent.push(frameOf(data, this.protocol === 'roomer.v2.batch'));
            super.send(data);
        }
    };
    /** Messages of a log's frames (received or sent), with their event. */
    window.of = (frames, event) => frames.flatMap((f) => f.messages)
        .filter((m) => m.event === event);
    /** The socket acknowledged every message it received (docs/protocol.md §11). */
    window.allAcked = (log) => of(log.sent, 'session.ack').at(-1)?.payload ===
        String(log.received.flatMap((f) => f.messages).length);
}"""


def batch_args(*extra: str) -> tuple[str, ...]:
    return ("browser_batch_app:setup", "--static", str(HARNESS), *extra)


async def wired(pages: Pages, server: RoomerServe) -> Any:
    """A harness page whose WebSockets are logged (WIRE)."""
    page = await harness(pages, server)
    await page.evaluate(CODEC)
    await page.evaluate(WIRE)
    return page


def texts(event: str, room: str = "match") -> str:
    """A page expression: the texts and senders of ``event`` in ``room``."""
    return f"seen({room!r}, {event!r}).map((e) => [e.args[0].text, e.args[1]])"


async def counters(server: RoomerServe) -> tuple[float, float, float]:
    """The server's (batches_in, batches_out, messages_in) so far."""
    metrics = await read_metrics(server.port)
    return (metrics["roomer_batches_in_total"], metrics["roomer_batches_out_total"],
            metrics["roomer_messages_in_total"])


async def test_a_burst_arrives_in_fewer_frames_than_messages(pages: Pages,
                                                             serve: Any) -> None:
    server = serve(*batch_args())
    page, sender, old = (await wired(pages, server), await harness(pages, server),
                         await harness(pages, server))
    await joined(page, "match", options=V2)
    sender_id = await joined(sender, "match", options=V2)
    await joined(old, "match")  # v1: never batched
    await until(page, "room.members().length === 3")
    await until(sender, "room.members().length === 3")
    assert await page.evaluate("[wires.length, wires[0].offered, wires[0].protocol]") == [
        1, ["roomer.v2.batch", "roomer.v2"], "roomer.v2.batch"]
    before = await page.evaluate("wires[0].received.length")
    _, out_before, _ = await counters(server)

    # 50 messages relayed to the room in one turn of the server: one flush to the page.
    await sender.evaluate("room.send('burst', '50')")
    await until(page, "seen('match', 'seq').length === 50")
    await until(old, "seen('match', 'seq').length === 50")
    expected = [[str(i), sender_id] for i in range(50)]
    assert await page.evaluate(texts("seq")) == expected
    assert await old.evaluate(texts("seq")) == expected
    frames = await page.evaluate(f"""wires[0].received.slice({before})
        .map((f) => [f.batch, f.messages.filter((m) => m.event === 'seq').length])""")
    assert sum(n for _, n in frames) == 50
    assert len(frames) < 50 and any(batch and n > 1 for batch, n in frames), frames
    _, out_after, _ = await counters(server)
    assert out_after > out_before
    # Counted as messages, not frames: the page's ack names every message it received.
    await until(page, "allAcked(wires[0])")


async def test_coalesced_sends_leave_once_a_frame(pages: Pages, serve: Any) -> None:
    # 300 messages in one go on purpose: no rate limits.
    server = serve(*batch_args("--rate-limit", "none", "--byte-limit", "none"))
    a, b = await wired(pages, server), await harness(pages, server)
    a_id = await joined(a, "match", options=COALESCE)
    await joined(b, "match", options=V2)
    await until(a, "room.members().length === 2")
    # Nothing comes to A from here on: once its ack is out, it writes only what it sends.
    await until(a, "allAcked(wires[0])")
    in_before, _, messages_before = await counters(server)

    # 30 sends in one block: nothing written before the block ends, then one batch.
    assert await a.evaluate("""() => {
        window.mark = wires[0].sent.length;
        for (let i = 0; i < 30; i++) room.send('seq', String(i));
        return wires[0].sent.length - mark;
    }""") == 0
    await until(b, "seen('match', 'seq').length === 30")
    assert await b.evaluate(texts("seq")) == [[str(i), a_id] for i in range(30)]
    assert await a.evaluate(
        "wires[0].sent.slice(mark).map((f) => [f.batch, f.messages.length])") == [[True, 30]]
    in_after, _, messages_after = await counters(server)
    assert in_after - in_before == 1
    assert messages_after - messages_before >= 30  # and acks of B's

    # 300: a full batch of 256 at once, the other 44 at the next frame.
    assert await a.evaluate("""() => {
        window.mark = wires[0].sent.length;
        for (let i = 30; i < 330; i++) room.send('seq', String(i));
        return wires[0].sent.slice(mark).map((f) => f.messages.length);
    }""") == [256]
    await until(b, "seen('match', 'seq').length === 330")
    assert await b.evaluate(texts("seq")) == [[str(i), a_id] for i in range(330)]
    assert await a.evaluate("wires[0].sent.slice(mark).map((f) => f.messages.length)") == [
        256, 44]

    # 64 KiB of entries: two messages of 30,000 bytes go as soon as a third would pass
    # it; the third, alone at the next frame, goes as a plain message.
    assert await a.evaluate("""() => {
        window.mark = wires[0].sent.length;
        for (let i = 0; i < 3; i++) room.send('bin', 'x'.repeat(30000));
        return wires[0].sent.slice(mark).map((f) => [f.batch, f.messages.length]);
    }""") == [[True, 2]]
    await until(b, "seen('match', 'bin').length === 3")
    assert await a.evaluate(
        "wires[0].sent.slice(mark).map((f) => [f.batch, f.messages.length])") == [
        [True, 2], [False, 1]]
    # One send alone: a plain message.
    await a.evaluate("window.mark = wires[0].sent.length; room.send('chat', 'solo')")
    await until(b, "seen('match', 'chat').length === 1")
    assert await a.evaluate(
        "wires[0].sent.slice(mark).map((f) => [f.batch, f.messages.length])") == [[False, 1]]

    # close() writes what is held before its close frame.
    await a.evaluate("""() => {
        room.send('chat', 'last 1');
        room.send('chat', 'last 2');
        root.close();
    }""")
    await until(b, "seen('match', 'chat').length === 3")
    assert await b.evaluate(texts("chat")) == [
        ["solo", a_id], ["last 1", a_id], ["last 2", a_id]]
    assert await a.evaluate("wires[0].sent.at(-1).messages.map((m) => m.payload)") == [
        "last 1", "last 2"]


async def test_asks_and_a_resume_with_batches(pages: Pages, serve: Any) -> None:
    # A's TCP connection goes through a proxy that the test cuts (no close frame: the
    # server holds A's session) while B streams into the room in batches; A comes back
    # and gets every message once, in order: a batch of n counted n on both sides.
    server = serve(*batch_args())
    proxy = Proxy(server.port)
    await proxy.start()
    listening = True
    a, b = await wired(pages, server), await harness(pages, server)
    try:
        a_id = await joined(a, "match", f"ws://127.0.0.1:{proxy.port}/ws", FAST_COALESCE)
        b_id = await joined(b, "match", options=COALESCE)
        await a.evaluate("""() => {
            record(root, 'resumed', 'lost');
            record(room, 'resumed', 'lost');
        }""")
        await b.evaluate("record(room, 'member_dropped', 'member_back')")
        await until(a, "room.members().length === 2")

        # Asks made in one block leave in one batch and are answered each.
        assert await a.evaluate("""async () => {
            const mark = wires[0].sent.length;
            const asks = [0, 1, 2, 3, 4].map(() => room.ask('where'));
            const answers = (await Promise.all(asks)).map(text);
            return [answers, wires[0].sent.slice(mark).map((f) =>
                f.messages.filter((m) => m.kind === 1).length).filter((n) => n),
                root.pendingAsks()];
        }""") == [["/match"] * 5, [5], 0]

        # B streams 300 numbered messages, 4 per write (one batch each).
        await b.evaluate("""() => {
            window.sent = 0;
            const timer = setInterval(() => {
                for (let k = 0; k < 4; k++) room.send('seq', String(sent++));
                if (sent === 300) clearInterval(timer);
            }, 40);
        }""")
        await until(a, "seen('match', 'seq').length >= 60")
        # While away A sends 3 messages: they wait in its queue for the resume.
        await a.evaluate("""() => root.once('reconnecting', () => {
            for (let i = 0; i < 3; i++) room.send('chat', `q${i}`);
        })""")
        await proxy.cut()
        listening = False
        got_at_cut = await a.evaluate("seen('match', 'seq').length")
        await until(b, f"sent >= {got_at_cut} + 40")
        await until(b, "seen('match', 'member_dropped').length === 1")
        await proxy.restore()
        listening = True

        await until(a, "seen('match', 'seq').length === 300")
        assert await a.evaluate(texts("seq")) == [[str(i), b_id] for i in range(300)]
        assert await a.evaluate("""[root.id(), seen('root', 'resumed').length,
            seen('root', 'lost').length, seen('match', 'reconnected').length]""") == [
            a_id, 1, 0, 0]
        # Before the cut the stream came in batches, so the resume's count was of messages.
        assert await a.evaluate("""wires[0].received.some((f) =>
            f.batch && of([f], 'seq').length > 1)""")
        assert await a.evaluate("wires.at(-1).protocol") == "roomer.v2.batch"
        await until(b, "seen('match', 'chat').length === 3")
        assert await b.evaluate(texts("chat")) == [["q0", a_id], ["q1", a_id], ["q2", a_id]]
        await until(b, "seen('match', 'member_back').length === 1")
        # And once resumed, asks are answered as before.
        assert await a.evaluate("room.ask('where').then(text)") == "/match"
    finally:
        if listening:
            await proxy.cut()


async def test_coalesce_against_a_server_that_names_only_v2(pages: Pages,
                                                            serve: Any) -> None:
    # The server has no switch for batch frames: the page offers only roomer.v2, so the
    # 101 names that, as an older server's would. coalesce then changes nothing.
    server = serve(*batch_args())
    a, b = await wired(pages, server), await harness(pages, server)
    await a.evaluate("""() => {
        const Wired = window.WebSocket;
        window.WebSocket = class extends Wired {
            constructor(url, protocols) {
                super(url, protocols.filter((p) => p !== 'roomer.v2.batch'));
            }
        };
    }""")
    a_id = await joined(a, "match", options=COALESCE)
    b_id = await joined(b, "match", options=V2)
    await until(a, "room.members().length === 2")
    assert await a.evaluate("[wires[0].offered, wires[0].protocol]") == [
        ["roomer.v2"], "roomer.v2"]
    in_before, _, _ = await counters(server)
    assert await a.evaluate("""() => {
        window.mark = wires[0].sent.length;
        for (let i = 0; i < 30; i++) room.send('seq', String(i));
        return wires[0].sent.slice(mark).map((f) => [f.batch, f.messages.length]);
    }""") == [[False, 1]] * 30
    await until(b, "seen('match', 'seq').length === 30")
    assert await b.evaluate(texts("seq")) == [[str(i), a_id] for i in range(30)]
    # Nor does the server batch what it sends the page.
    await b.evaluate("room.send('burst', '20')")
    await until(a, "seen('match', 'seq').length === 20")
    assert await a.evaluate(texts("seq")) == [[str(i), b_id] for i in range(20)]
    assert await a.evaluate("wires[0].received.every((f) => !f.batch)")
    assert await a.evaluate("room.ask('where').then(text)") == "/match"
    in_after, _, _ = await counters(server)
    assert in_after == in_before


# A WebSocket the test plays the server of (protocol v2): it logs the frames the client
# sends (frameOf) and delivers the bytes the test gives, so each rule of the client's
# side of §13 can be checked frame by frame. ``scripted.protocol`` is what its 101 names.
SCRIPTED = """() => {
    window.scripted = { protocol: 'roomer.v2.batch', sockets: [] };
    window.Scripted = class {
        constructor(url, protocols) {
            this.url = url;
            this.offered = protocols;
            this.readyState = 0;
            this.protocol = scripted.protocol;
            this.sent = [];
            scripted.sockets.push(this);
            setTimeout(() => { this.readyState = 1; this.onopen({}); });
        }
        send(data) { this.sent.push(frameOf(data, this.protocol === 'roomer.v2.batch')); }
        close(code = 1005, reason = '') {
            if (this.readyState === 3) return;
            this.readyState = 3;
            setTimeout(() => this.onclose({ code, reason }));
        }
        deliver(bytes) { this.onmessage({ data: bytes.slice().buffer }); }
        drop() {
            this.readyState = 3;
            this.onclose({ code: 1006, reason: '' });
        }
        /** What it was sent: [event, payload] of each message but acks, frame by frame. */
        frames() {
            return this.sent.map((f) => [f.batch, f.messages.filter((m) =>
                m.event !== 'session.ack').map((m) => [m.event, m.payload])]);
        }
        acks() { return of(this.sent, 'session.ack').map((m) => m.payload); }
        /** The ids of the asks of ``event`` it was sent. */
        asks(event) {
            return this.sent.flatMap((f) => f.messages)
                .filter((m) => m.kind === 1 && m.event === event).map((m) => m.id);
        }
    };
    window.warnings = [];
    console.warn = (...args) => warnings.push(args.join(' '));
}"""
URL = "ws://127.0.0.1:9/ws"  # never dialled: the scripted socket plays the server
EVENTS = ("'open', 'close', 'error', 'reconnecting', 'reconnected', 'resumed', 'lost', "
          "'dropped', 'seq', 'chat'")


async def test_the_client_side_of_batches_frame_by_frame(pages: Pages, serve: Any) -> None:
    page = await harness(pages, serve(*batch_args()))
    await page.evaluate(CODEC)
    await page.evaluate(WIRE)  # of() and allAcked(); the scripted socket is no WebSocket
    await page.evaluate(SCRIPTED)
    assert await page.evaluate("""() => {
        try { roomer('/ws', {protocol: 'v2', coalesce: 'yes'}); return 'accepted'; }
        catch (e) { return [e instanceof TypeError, e.message]; }
    }""") == [True, "roomer: options.coalesce must be true or false"]
    await page.evaluate(f"""() => {{
        window.root = record(roomer({URL!r}, {{protocol: 'v2', coalesce: true,
            WebSocket: Scripted, reconnect: {{initialDelay: 10, maxDelay: 10, jitter: 0}}}}),
            {EVENTS});
        window.room = record(root.join('match'), {EVENTS});
        window.s = () => scripted.sockets.at(-1);
    }}""")
    await until(page, "scripted.sockets.length === 1 && s().readyState === 1")
    assert await page.evaluate("s().offered") == ["roomer.v2.batch", "roomer.v2"]

    # Received: a batch's entries are handled in order, each counted as a message.
    await page.evaluate("""s().deliver(batchOf([
        event('root', 'join_ack', 'me', '["me"]'),
        event('root', 'session', '', '{"token": "t1", "window": 20}')]))""")   # 1, 2
    # The join went out alone at the next frame: a plain message.
    await until(page, "s().sent.length === 1")
    assert await page.evaluate("s().frames()") == [[False, [["join", ""]]]]
    await page.evaluate("""() => {
        const entries = [body(2, s().asks('join')[0], 'match', 'join', '', '["me", "p"]')];
        for (let i = 0; i < 10; i++) entries.push(event('match', 'seq', 'p', String(i)));
        s().deliver(batchOf(entries));                                            // 3-13
    }""")
    assert await page.evaluate(f"[room.open(), room.members(), {texts('seq')}]") == [
        True, ["me", "p"], [[str(i), "p"] for i in range(10)]]
    # (Acknowledged half a second after message 1: with 2 first on a slow run.)
    await until(page, "s().acks().at(-1) === '13'")

    # A malformed batch is ignored whole, and counted as one malformed message is; a
    # malformed entry (a batch inside a batch) alone, its neighbours handled.
    await page.evaluate("""() => {
        const good = event('match', 'seq', 'p', 'never');
        s().deliver(batchOf([good, good], [good.length, good.length + 1]));   // runs past
        s().deliver(batchOf([good], [28]));                                  // below 29
        s().deliver(new Uint8Array([4]));                                    // no entry
        s().deliver(new Uint8Array([...batchOf([good]), 0, 0]));             // trailing
        s().deliver(batchOf(Array(257).fill(good)));                         // 257 entries
        s().deliver(batchOf([event('match', 'seq', 'p', '10'), batchOf([good]),
                             event('match', 'seq', 'p', '11')]));
    }""")                                                                  # 14-18, 19-21
    assert await page.evaluate(texts("seq")) == [[str(i), "p"] for i in range(12)]
    assert await page.evaluate("warnings") == [
        "roomer: the server sent a malformed batch; ignored"] * 5 + [
        "roomer: the server sent a malformed message; ignored"]
    await until(page, "s().acks().at(-1) === '21'")

    # A join answered in the batch that brings the room's first messages: the handlers
    # the application adds once its await returns get them, as if each came alone.
    await page.evaluate("""() => {
        window.mark = s().sent.length;
        root.joined('late').then((late) => record(late, 'seq'));
    }""")
    await until(page, "s().sent.length === mark + 1")
    await page.evaluate("""s().deliver(batchOf([
        body(2, s().asks('join').at(-1), 'late', 'join', '', '["me"]'),
        event('late', 'seq', 'p', 'first'), event('late', 'seq', 'p', 'second')]))""")
    await until(page, "seen('late', 'seq').length === 2")                     # 22-24
    assert await page.evaluate(texts("seq", "late")) == [["first", "p"], ["second", "p"]]

    # Sent: what one block sends leaves at the next frame, in order, as one batch.
    assert await page.evaluate("""() => {
        window.mark = s().sent.length;
        room.send('chat', 'a');
        window.where = room.ask('where');
        room.send('chat', 'b');
        return s().sent.length - mark;
    }""") == 0
    await until(page, "s().sent.length === mark + 1")
    assert await page.evaluate("s().frames().at(-1)") == [
        True, [["chat", "a"], ["where", ""], ["chat", "b"]]]
    await page.evaluate("s().deliver(body(2, s().asks('where')[0], 'match', 'where', '', "
                        "'here'))")                                             # 25
    assert await page.evaluate("where.then(text)") == "here"

    # Dropped with messages held: the sends and the ask were never written, so they are
    # queued as if sent while disconnected, and go after the resume, in order; nothing
    # is dropped and the ask is asked again on the new socket.
    await page.evaluate("""() => {
        room.send('chat', 'h0');
        window.again = room.ask('where');
        room.send('chat', 'h1', 'someone');
        s().drop();
        window.away = [root.pendingAsks(), s().frames().flatMap(([, messages]) => messages)
            .filter(([, payload]) => payload.startsWith('h'))];
    }""")
    assert await page.evaluate("away") == [1, []]
    await until(page, "scripted.sockets.length === 2 && s().readyState === 1")
    assert await page.evaluate("s().url") == URL + "?session=t1&received=25"
    assert await page.evaluate("s().sent.length") == 0  # nothing before the verdict
    await page.evaluate("""s().deliver(batchOf([
        event('root', 'session.resumed', 'me', '{"id": "me", "token": "t2", "window": 20}'),
        event('match', 'seq', 'p', '12')]))""")                       # verdict, then 26
    await until(page, "s().sent.length === 1")
    assert await page.evaluate("s().frames()") == [
        [True, [["chat", "h0"], ["where", ""], ["chat", "h1"]]]]
    await page.evaluate("s().deliver(body(2, s().asks('where')[0], 'match', 'where', '', "
                        "'back'))")                                             # 27
    assert await page.evaluate("""async () => [text(await again),
        seen('root', 'resumed').length, seen('match', 'dropped').length,
        seen('root', 'dropped').length, seen('match', 'seq').length]""") == [
        "back", 1, 0, 0, 13]
    await until(page, "s().acks().at(-1) === '27'")

    # close() writes what is held, then closes.
    await page.evaluate("room.send('chat', 'bye 1'); room.send('chat', 'bye 2'); "
                        "root.close()")
    assert await page.evaluate("[s().readyState, s().frames().at(-1)]") == [
        3, [True, [["chat", "bye 1"], ["chat", "bye 2"]]]]

    # A server that names roomer.v2: each message is written at once, alone, and a
    # message starting with byte 4 is a malformed v2 message (kind 4), not a batch.
    await page.evaluate("""() => {
        scripted.protocol = 'roomer.v2';
        window.warnings.length = 0;
        window.old = record(roomer('ws://127.0.0.1:9/old', {protocol: 'v2', coalesce: true,
            WebSocket: Scripted, resume: false}), 'chat');
    }""")
    await until(page, "scripted.sockets.length === 3 && s().readyState === 1")
    assert await page.evaluate("""() => {
        s().deliver(event('root', 'join_ack', 'me', '["me"]'));
        s().deliver(batchOf([event('root', 'chat', 'p', 'in a batch')]));
        old.send('chat', 'x');
        old.send('chat', 'y');
        return [s().frames(), seen('root', 'chat').length, warnings];
    }""") == [[[False, [["chat", "x"]]], [False, [["chat", "y"]]]], 0,
              ["roomer: the server sent a malformed message; ignored"]]
    await page.evaluate("old.close()")
