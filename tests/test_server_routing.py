"""Routing of what a client sends, and every error code of docs/protocol.md §9, over loopback."""

from __future__ import annotations

import struct
import uuid

import pytest
from rawclient import RawClient, connect, encode
from rawsocket import joined
from waiting import eventually, pace, scaled

from roomer import fanout

RESERVED = ("join_ack", "leave_ack", "new_member", "member_left", "error", "open", "close")


async def pair(server, room: str = "r") -> tuple[RawClient, RawClient]:
    """Two clients in ``room``, presence already consumed."""
    a = await connect(server)
    b = await connect(server)
    await a.join(room)
    await b.join(room)
    await a.expect("new_member", room)
    return a, b


async def still_works(a: RawClient, b: RawClient, room: str = "r") -> None:
    """The connection was kept: a relay from a reaches b."""
    await a.send(room, "ping", payload=b"alive")
    msg = await b.expect("ping", room)
    assert msg.src == a.id and msg.payload == b"alive"


# relay and direct messages -------------------------------------------------------------


async def test_relay_to_room_members_except_sender(make_server) -> None:
    server = await make_server()
    a, b = await pair(server)
    c = await connect(server)
    await c.join("r")
    await a.expect("new_member")
    await b.expect("new_member")
    outsider = await connect(server)
    payload = bytes(range(256)) * 3  # opaque bytes, not UTF-8
    await a.send("r", "chat", payload=payload)
    for receiver in (b, c):
        msg = await receiver.recv()
        assert msg == ("r", "chat", "", a.id, payload)
    await a.expect_nothing()  # no echo to the sender
    await outsider.expect_nothing()
    assert server.counters["relayed"] == 1


async def test_forged_src_is_replaced_by_sender_id(make_server) -> None:
    server = await make_server()
    a, b = await pair(server)
    await a.send("r", "chat", src=b.id, payload=b"1")
    assert (await b.recv()).src == a.id
    await a.send("r", "chat", src=b"\xff\xfe not utf-8", payload=b"2")  # src is not even read
    msg = await b.recv()
    assert (msg.src, msg.payload) == (a.id, b"2")
    await a.send("root", "dm", dst=b.id, src="someone-else", payload=b"3")
    msg = await b.recv()
    assert (msg.src, msg.dst, msg.payload) == (a.id, b.id, b"3")


async def test_text_frames_are_accepted_like_binary(make_server) -> None:
    server = await make_server()
    a, b = await pair(server)
    await a.send_text("r", "chat", payload="héllo")
    msg = await b.recv()  # the server answers with binary frames (checked by recv)
    assert msg == ("r", "chat", "", a.id, "héllo".encode())
    await a.send_text("r2", "join")
    await a.expect("join_ack", "r2")
    await a.send_text("root", "chat")
    await a.expect_error("forbidden", "root", "chat")


async def test_direct_message(make_server) -> None:
    server = await make_server()
    a = await connect(server)
    b = await connect(server)
    c = await connect(server)
    # no membership needed, room and dst as sent, src set to the sender
    await a.send("some-room", "dm", dst=b.id, payload=b"\x00secret")
    msg = await b.recv()
    assert msg == ("some-room", "dm", b.id, a.id, b"\x00secret")
    await a.send("root", "dm", dst=b.id, payload=b"x")
    assert await b.recv() == ("root", "dm", b.id, a.id, b"x")
    await a.expect_nothing()
    await c.expect_nothing()
    assert "some-room" not in server.rooms()
    assert server.counters["direct"] == 2


async def test_direct_message_to_unknown_client(make_server) -> None:
    server = await make_server()
    a = await connect(server)
    b = await connect(server)
    await a.send("lobby", "dm", dst="00000000-0000-4000-8000-000000000000")
    await a.expect_error("no_such_client", "lobby", "dm")
    await b.close()
    await a.send("root", "dm", dst=b.id)
    await a.expect_error("no_such_client", "root", "dm")


@pytest.mark.parametrize("backplane", [False, True], ids=["alone", "memory-backplane"])
async def test_direct_message_to_an_impossible_id(make_server, backplane: bool) -> None:
    # A dst no client id can be (huge, or not ASCII) is answered at once, and never
    # reaches the backplane: naming it there escapes it byte by byte, and a broker drops
    # a node publishing a subject of kilobytes.
    options = {"backplane": f"memory://{uuid.uuid4().hex}"} if backplane else {}
    server = await make_server(max_message_size=4 << 20, **options)
    a = await connect(server)
    b = await connect(server)
    for dst in ("x" * (1 << 20), "é" * 20, b.id + "x" * 40):
        await a.send("root", "dm", dst=dst, payload=b"p")
        await a.expect_error("no_such_client", "root", "dm")
    await b.expect_nothing()
    if backplane:
        assert server.stats()["backplane"]["direct_out"] == 0
    await a.send("root", "dm", dst=b.id, payload=b"still here")
    assert (await b.expect("dm")).payload == b"still here"
    # The server API refuses them the same way.
    assert server.send_to("y" * 100_000, "hi") is False
    assert server.send_to(b.id, "hi") is True
    assert (await b.expect("hi")).src == ""


async def test_direct_message_wins_over_handler(make_server) -> None:
    # §3 order: a dst makes it a direct message before any handler is looked at.
    server = await make_server()
    calls: list[str] = []
    server.on("dm")(lambda conn, msg: calls.append(msg.event))
    a = await connect(server)
    b = await connect(server)
    await a.send("root", "dm", dst=b.id, payload=b"p")
    assert await b.recv() == ("root", "dm", b.id, a.id, b"p")
    assert calls == []


# 1. malformed -----------------------------------------------------------------------------


def _mutations() -> list[bytes]:
    good = encode("r", "chat", "", "", b"payload")
    cases = [good[:n] for n in range(len(good))]  # every proper prefix
    cases += [good + b"\x00", good + b"\x00" * 4]  # bytes after the payload
    cases.append(b"\x00" * 19)  # one short of the minimum
    for field in range(5):  # each length claims 0xFFFFFFFF / one too many
        offset = 0
        for _ in range(field):
            (size,) = struct.unpack_from(">I", good, offset)
            offset += 4 + size
        (size,) = struct.unpack_from(">I", good, offset)
        for bad in (0xFFFFFFFF, 0x7FFFFFFF, size + 1):
            cases.append(good[:offset] + struct.pack(">I", bad) + good[offset + 4:])
    return cases


async def test_malformed_messages_keep_the_connection(make_server) -> None:
    server = await make_server()
    a, b = await pair(server)
    cases = _mutations()
    for data in cases:
        await a.send_raw(data)
    for _ in cases:
        await a.expect_error("malformed", "root", "")
    await b.expect_nothing()
    await still_works(a, b)
    assert server.errors["malformed"] == len(cases)


async def test_malformed_text_frame(make_server) -> None:
    server = await make_server()
    a, b = await pair(server)
    await a.send_raw("short")
    await a.expect_error("malformed", "root", "")
    await still_works(a, b)


# 2. names ------------------------------------------------------------------------------------


async def test_room_name_limits(make_server) -> None:
    server = await make_server()
    a = await connect(server)
    ok = "x" * 128
    assert await a.join(ok) == [a.id]
    await a.send("x" * 129, "join")
    await a.expect_error("invalid_name", "root", "join")
    await a.send("", "join")
    await a.expect_error("invalid_name", "root", "join")
    await a.send("", "chat")
    await a.expect_error("invalid_name", "root", "chat")
    await a.send("é" * 64, "join")  # 128 bytes of UTF-8: the limit is in bytes
    await a.expect("join_ack", "é" * 64)
    await a.send("é" * 64 + "x", "leave")  # 129 bytes
    await a.expect_error("invalid_name", "root", "leave")
    assert server.errors["invalid_name"] == 4


async def test_event_name_limits(make_server) -> None:
    server = await make_server()
    a, b = await pair(server)
    await a.send("r", "e" * 64, payload=b"ok")
    assert (await b.recv()).event == "e" * 64
    await a.send("r", "e" * 65)
    await a.expect_error("invalid_name", "r", "")
    await a.send("r", "")
    await a.expect_error("invalid_name", "r", "")
    await b.expect_nothing()


async def test_configurable_name_limits(make_server) -> None:
    server = await make_server(max_room_name=5, max_event_name=5)
    a = await connect(server)
    await a.join("abcde")
    await a.send("abcdef", "join")
    await a.expect_error("invalid_name", "root", "join")
    await a.send("abcde", "abcdef")
    await a.expect_error("invalid_name", "abcde", "")


async def test_invalid_utf8_names(make_server) -> None:
    server = await make_server()
    a, b = await pair(server)
    await a.send(b"r\xff", "join")
    await a.expect_error("invalid_name", "root", "join")
    await a.send(b"\xc3\x28", "chat")
    await a.expect_error("invalid_name", "root", "chat")
    await a.send("r", b"ch\xffat")
    await a.expect_error("invalid_name", "r", "")
    await a.send("r", b"\xed\xa0\x80")  # an encoded surrogate is not valid UTF-8
    await a.expect_error("invalid_name", "r", "")
    await a.send("root", "dm", dst=b"\xff" + b.id.encode())
    await a.expect_error("invalid_name", "root", "dm")
    await b.expect_nothing()
    await still_works(a, b)


async def test_invalid_name_checked_before_everything_else(make_server) -> None:
    server = await make_server()
    a = await connect(server)
    b = await connect(server)
    await a.send("x" * 129, "join_ack")  # bad room beats reserved event
    await a.expect_error("invalid_name", "root", "join_ack")
    await a.send("x" * 129, "dm", dst=b.id)  # bad room beats the direct message
    await a.expect_error("invalid_name", "root", "dm")
    await b.expect_nothing()


# 3. join / leave ----------------------------------------------------------------------------


async def test_too_many_rooms(make_server) -> None:
    server = await make_server(max_rooms_per_connection=2)
    a = await connect(server)
    await a.join("one")
    await a.join("two")
    await a.send("three", "join")
    body = await a.expect_error("too_many_rooms", "three", "join")
    assert body["message"]
    assert "three" not in server.rooms()
    await a.join("one")  # re-joining a room already in is fine
    await a.leave("two")
    await a.join("three")  # room freed
    await a.leave("root")
    await a.join("root")  # root does not count


async def test_join_and_leave_ignore_other_fields(make_server) -> None:
    server = await make_server()
    a = await connect(server)
    b = await connect(server)
    await a.send("r", "join", dst=b.id, src=b.id, payload=b"junk")
    ack = await a.expect("join_ack", "r")
    assert ack.src == a.id and ack.dst == "" and ack.json() == [a.id]
    await b.expect_nothing()
    await a.send("r", "leave", dst="nobody", payload=b"junk")
    msg = await a.expect("leave_ack", "r")
    assert msg.payload == a.id.encode()


# 4. reserved ---------------------------------------------------------------------------------


@pytest.mark.parametrize("event", RESERVED)
async def test_reserved_events(make_server, event: str) -> None:
    server = await make_server(allow_root_broadcast=True)
    a, b = await pair(server)
    await a.send("r", event)
    await a.expect_error("reserved_event", "r", event)
    await a.send("not-joined", event)  # reserved is checked before membership
    await a.expect_error("reserved_event", "not-joined", event)
    await a.send("root", event, dst=b.id)  # ...and before direct messages
    await a.expect_error("reserved_event", "root", event)
    await b.expect_nothing()


# 7. broadcast checks -------------------------------------------------------------------------


async def test_broadcast_into_root_is_forbidden(make_server) -> None:
    server = await make_server()
    a = await connect(server)
    b = await connect(server)
    await a.send("root", "chat", payload=b"hi")
    await a.expect_error("forbidden", "root", "chat")
    await b.expect_nothing()
    assert server.errors["forbidden"] == 1


async def test_allow_root_broadcast(make_server) -> None:
    server = await make_server(allow_root_broadcast=True)
    a = await connect(server)
    b = await connect(server)
    c = await connect(server)
    await a.send("root", "chat", payload=b"hi")
    for other in (b, c):
        assert await other.recv() == ("root", "chat", "", a.id, b"hi")
    await a.expect_nothing()


async def test_not_member(make_server) -> None:
    server = await make_server()
    a, b = await pair(server)
    c = await connect(server)
    await c.send("r", "chat")  # the room exists, c is not in it
    await c.expect_error("not_member", "r", "chat")
    await c.send("nowhere", "chat")  # the room does not exist
    await c.expect_error("not_member", "nowhere", "chat")
    await b.leave("r")
    await a.expect("member_left", "r")
    await b.send("r", "chat")
    await b.expect_error("not_member", "r", "chat")
    await a.expect_nothing()
    assert "nowhere" not in server.rooms()


# rate limit and message size -----------------------------------------------------------------


async def test_rate_limited(make_server) -> None:
    server = await make_server(rate_limit=(3, 30.0))
    a, b = await pair(server)  # the join spent one of a's 3 tokens
    await a.send("r", "chat", payload=b"1")
    await a.send("r", "chat", payload=b"2")
    await a.send("r", "shout", payload=b"3")
    await a.expect_error("rate_limited", "r", "shout")
    assert (await b.recv()).payload == b"1"
    assert (await b.recv()).payload == b"2"
    await b.expect_nothing()
    assert server.errors["rate_limited"] == 1


async def test_rate_limit_refills(make_server) -> None:
    server = await make_server(rate_limit=(2, scaled(0.2)))
    a, b = await pair(server)
    await a.send("r", "c1")
    await a.send("r", "c2")
    await a.expect_error("rate_limited", "r", "c2")
    await pace(0.3)  # the client waits out the window: the refill is the test
    await a.send("r", "c3")
    assert (await b.recv()).event == "c1"
    assert (await b.recv()).event == "c3"


async def test_max_message_size_closes_with_1009(make_server) -> None:
    server = await make_server(max_message_size=1000)
    a, b = await pair(server)
    overhead = len(encode("r", "chat"))
    await a.send("r", "chat", payload=b"x" * (1000 - overhead))  # exactly the limit: fine
    assert len((await b.recv()).payload) == 1000 - overhead
    await a.send("r", "chat", payload=b"x" * (1001 - overhead))
    code, _ = await a.closed()
    assert code == 1009
    await b.expect("member_left", "r")
    await b.expect_nothing()  # the oversized message was not relayed


async def test_default_max_message_size_is_1_mib(make_server) -> None:
    server = await make_server()
    seen: list[int] = []
    server.on("big")(lambda conn, msg: seen.append(len(msg.payload)))
    a = await connect(server)
    overhead = len(encode("root", "big"))
    await a.send("root", "big", payload=b"x" * ((1 << 20) - overhead))
    await a.send("root", "big", payload=b"")
    # both handled, in order, and the connection is still up
    await eventually(lambda: len(seen) == 2, what="both handled")
    assert seen == [(1 << 20) - overhead, 0]
    await a.send("root", "big", payload=b"x" * ((1 << 20) - overhead + 1))
    code, _ = await a.closed()
    assert code == 1009


async def test_fragmented_messages(make_server) -> None:
    server = await make_server(max_message_size=1000)
    a, b = await pair(server)
    data = encode("r", "chat", payload=b"y" * 600)
    await a.send_raw([data[:7], data[7:300], data[300:]])  # reassembled under the limit
    assert await b.recv() == ("r", "chat", "", a.id, b"y" * 600)
    big = encode("r", "chat", payload=b"z" * 1200)  # each fragment small, the whole too big
    await a.send_raw([big[i:i + 400] for i in range(0, len(big), 400)])
    code, _ = await a.closed()
    assert code == 1009
    await b.expect("member_left", "r")
    await b.expect_nothing()  # nothing of the oversized message was relayed


async def test_big_and_small_messages_arrive_whole_across_read_buffer_cuts(
        make_server) -> None:
    """A read that grows picows' read buffer past 64 KiB is cut back once handled (the
    compiled fan-out), between two reads of the same socket, on the event loop's own
    transport: messages of 150 KB and 10 bytes sent six to a write, a partial frame often
    left over at the cut, reach a room member whole and in order, and the sender is never
    closed."""
    server = await make_server(rate_limit=None, byte_limit=None)
    port = server.address[1]
    sender, _ = await joined(port, "r")
    receiver, _ = await joined(port, "r")
    payloads = [i.to_bytes(4, "big") + bytes([i % 251]) * (150_000 if i % 2 else 6)
                for i in range(60)]
    for start in range(0, len(payloads), 6):
        await sender.send_many([("r", "m", p) for p in payloads[start:start + 6]])
        got = []
        while len(got) < 6:
            _, event, _, _, payload = await receiver.recv()
            if event == "m":
                got.append(payload)
        assert got == payloads[start:start + 6]
    if fanout.COMPILED:
        assert server.stats()["read_buffer_trims"] >= 1
    assert len(server.registry.conns) == 2  # neither was closed
    sender.close()
    receiver.close()
