"""The v2 wire codec (docs/protocol.md): both twins, every boundary, compiled/pure parity.

``codec_impl`` (tests/conftest.py) runs a test against roomer._codec_py and roomer._codec.
"""

from __future__ import annotations

import importlib
import os
import struct
from typing import Any

import pytest
from codec_fuzzing import BAD_UTF8, assert_server_frame, outcome
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roomer import ProtocolError
from roomer import _codec_py as pure

PURE_ONLY = os.environ.get("ROOMER_NO_EXTENSIONS") == "1"
needs_compiled = pytest.mark.skipif(PURE_ONLY, reason="ROOMER_NO_EXTENSIONS=1 forces pure")
FIELDS = ("namespace", "room", "event", "dst", "src", "payload")
U32_MAX = 0xFFFFFFFF
V2_NAMES = ("decode", "decode_client", "decode_client_v2", "decode_v2", "encode",
            "encode_frame", "encode_frame_v2", "encode_v2", "frame_header",
            "frame_v2_from_v1_body")


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def raw(kind: int, mid: int, *fields: bytes) -> bytes:
    """A v2 body built by hand from raw field bytes (no validation)."""
    return bytes([kind]) + u32(mid) + b"".join(u32(len(f)) + f for f in fields)


def hexbytes(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# docs/protocol.md, "Examples": the same bytes, character for character.
ASK_JOIN = hexbytes("""
    01 00000001
    00000004 63686174
    00000005 6c6f626279
    00000004 6a6f696e
    00000000
    00000000
    00000000
""")
JOIN_LOBBY_V1 = hexbytes("00000005 6c6f626279 00000004 6a6f696e 00000000 00000000 00000000")
EVENT_DEFAULT_NS = hexbytes("00 00000000 00000000") + JOIN_LOBBY_V1
ERROR_REPLY = hexbytes("""
    03 00000007
    00000000
    00000005 6c6f626279
    00000004 726f6c6c
    00000000
    00000000
    0000002b 7b22636f6465223a2264656e696564222c226d657373616765223a226e6f7420796f7572207475726e227d
""")
V2_FRAME_FROM_V1 = hexbytes("82 2a  00 00000000 00000004 63686174") + JOIN_LOBBY_V1


def test_doc_examples(codec_impl: Any) -> None:
    assert len(ASK_JOIN) == 42
    assert codec_impl.encode_v2(1, 1, "chat", "lobby", "join", "", "", b"") == ASK_JOIN
    assert codec_impl.decode_v2(ASK_JOIN) == (1, 1, "chat", "lobby", "join", "", "", b"")
    assert codec_impl.decode_client_v2(ASK_JOIN) == (1, 1, "chat", "lobby", "join", "", b"")

    assert len(EVENT_DEFAULT_NS) == 38
    assert codec_impl.encode_v2(0, 0, "", "lobby", "join", "", "", b"") == EVENT_DEFAULT_NS
    assert EVENT_DEFAULT_NS[9:] == codec_impl.encode("lobby", "join", "", "", b"")

    payload = b'{"code":"denied","message":"not your turn"}'
    assert len(ERROR_REPLY) == 29 + 5 + 4 + len(payload)
    assert codec_impl.decode_v2(ERROR_REPLY) == (3, 7, "", "lobby", "roll", "", "", payload)
    assert codec_impl.encode_v2(3, 7, "", "lobby", "roll", "", "", payload) == ERROR_REPLY

    assert codec_impl.decode_v2(bytes(29)) == (0, 0, "", "", "", "", "", b"")
    v1_frame = codec_impl.encode_frame("lobby", "join", "", "", b"")
    assert v1_frame == b"\x82\x1d" + JOIN_LOBBY_V1
    assert codec_impl.frame_v2_from_v1_body(0, 0, "chat", v1_frame[2:]) == V2_FRAME_FROM_V1
    assert codec_impl.encode_frame_v2(0, 0, "chat", "lobby", "join", "", "", b"") \
        == V2_FRAME_FROM_V1


# --------------------------------------------------------------------------- round trips


NAMES = [
    ("", "lobby", "join", "", ""),
    ("", "", "", "", ""),
    ("chat", "match/42", "move", "3f2a-dst", "src-id"),
    ("éspace", "Ñandú ☃ 房间", "évènement", "dést", "sŕc"),
    ("n" * 300, "\U0001f600" * 50, "e" * 300, "d" * 70000, "s"),
]
HEADERS = [(0, 0), (1, 1), (1, U32_MAX), (2, 12345), (3, 0x80000000)]


@pytest.mark.parametrize("names", NAMES, ids=range(len(NAMES)))
@pytest.mark.parametrize(("kind", "mid"), HEADERS)
def test_round_trip(codec_impl: Any, names: tuple, kind: int, mid: int) -> None:
    for payload in (b"", b"\x00", bytes(range(256)), b"\xff" * 70000):
        body = codec_impl.encode_v2(kind, mid, *names, payload)
        assert isinstance(body, bytes)
        assert len(body) == 29 + sum(len(n.encode()) for n in names) + len(payload)
        assert body[:5] == bytes([kind]) + u32(mid)
        decoded = codec_impl.decode_v2(body)
        assert decoded == (kind, mid, *names, payload)
        assert [type(v) for v in decoded] == [int, int, str, str, str, str, str, bytes]
        assert codec_impl.decode_client_v2(body) == (kind, mid, *names[:4], payload)
        # the v1 body is a suffix: a v2 body is a prefix, the namespace, then v1
        v1 = codec_impl.encode(*names[1:], payload)
        assert body == bytes([kind]) + u32(mid) + u32(len(names[0].encode())) \
            + names[0].encode() + v1
        frame = codec_impl.encode_frame_v2(kind, mid, *names, payload)
        assert_server_frame(frame, body)
        assert codec_impl.frame_v2_from_v1_body(kind, mid, names[0], v1) == frame


def test_str_payload_is_utf8(codec_impl: Any) -> None:
    body = codec_impl.encode_v2(2, 9, "n", "r", "e", "", "", "héllo ☃")
    assert codec_impl.decode_v2(body)[7] == "héllo ☃".encode()


# --------------------------------------------------------------------------- kind and id


def assert_malformed(impl: Any, data: bytes, message: str, header: tuple = (None, None)) -> None:
    for fn in (impl.decode_v2, impl.decode_client_v2):
        with pytest.raises(ProtocolError) as info:
            fn(data)
        err = info.value
        assert str(err) == message
        assert err.code == "malformed"
        assert (err.namespace, err.room, err.event) == (None, None, None)
        assert (err.kind, err.id) == header
        assert isinstance(err, ValueError)


@pytest.mark.parametrize("size", range(29))
def test_shorter_than_29(codec_impl: Any, size: int) -> None:
    assert_malformed(codec_impl, bytes(size),
                     f"message is {size} bytes, shorter than the minimum of 29")


def test_a_v1_minimum_is_too_short_for_v2(codec_impl: Any) -> None:
    assert_malformed(codec_impl, JOIN_LOBBY_V1[:28],
                     "message is 28 bytes, shorter than the minimum of 29")


@pytest.mark.parametrize("kind", [4, 5, 0x7F, 0x80, 0xFF])
def test_unknown_kind(codec_impl: Any, kind: int) -> None:
    for mid in (0, 1):
        assert_malformed(codec_impl, raw(kind, mid, *[b""] * 6),
                         f"kind {kind} is not 0 (event), 1 (ask), 2 (reply) or 3 (error reply)")
        with pytest.raises(ValueError, match=f"^kind {kind} is not 0 \\(event\\)"):
            codec_impl.encode_v2(kind, mid, "", "", "", "", "", b"")


@pytest.mark.parametrize("mid", [1, 2, 0xFFFF, U32_MAX])
def test_an_event_has_id_0(codec_impl: Any, mid: int) -> None:
    message = f"an event (kind 0) must have id 0, not {mid}"
    assert_malformed(codec_impl, raw(0, mid, *[b""] * 6), message)
    with pytest.raises(ValueError) as info:
        codec_impl.encode_v2(0, mid, "", "", "", "", "", b"")
    assert str(info.value) == message
    with pytest.raises(ValueError, match=r"^an event"):
        codec_impl.frame_v2_from_v1_body(0, mid, "", JOIN_LOBBY_V1)


@pytest.mark.parametrize("kind", [1, 2, 3])
def test_ask_reply_error_have_a_non_zero_id(codec_impl: Any, kind: int) -> None:
    message = f"kind {kind} must have a non-zero id"
    assert_malformed(codec_impl, raw(kind, 0, *[b""] * 6), message)
    for make in (lambda: codec_impl.encode_v2(kind, 0, "", "", "", "", "", b""),
                 lambda: codec_impl.encode_frame_v2(kind, 0, "", "", "", "", "", b""),
                 lambda: codec_impl.frame_v2_from_v1_body(kind, 0, "", JOIN_LOBBY_V1)):
        with pytest.raises(ValueError) as info:
            make()
        assert str(info.value) == message
        assert not isinstance(info.value, ProtocolError)  # a caller's mistake, not bad bytes


@pytest.mark.parametrize("kind", [-1, 4, 256, 1 << 40])
def test_encode_kind_range(codec_impl: Any, kind: int) -> None:
    with pytest.raises(ValueError) as info:
        codec_impl.encode_v2(kind, 1, "", "", "", "", "", b"")
    assert str(info.value) == f"kind {kind} is not 0 (event), 1 (ask), 2 (reply) or 3 (error reply)"


@pytest.mark.parametrize("mid", [-1, U32_MAX + 1, 1 << 64])
def test_encode_id_range(codec_impl: Any, mid: int) -> None:
    for kind in (0, 1):
        with pytest.raises(ValueError) as info:
            codec_impl.encode_v2(kind, mid, "", "", "", "", "", b"")
        assert str(info.value) == f"id {mid} is not between 0 and 4294967295"


# --------------------------------------------------------------------------- lengths


GOOD = [b"chat", b"room", b"event", b"dst", b"src", b"payload"]


@pytest.mark.parametrize("index", range(6))
def test_length_overruns_by_exactly_one(codec_impl: Any, index: int) -> None:
    head = b"".join(u32(len(f)) + f for f in GOOD[:index])
    tail = b"".join(u32(len(f)) + f for f in GOOD[index:])
    left = len(tail) - 4
    data = b"\x01" + u32(5) + head + u32(left + 1) + tail[4:]
    assert_malformed(
        codec_impl, data,
        f"{FIELDS[index]} length {left + 1} runs past the end of the message ({left} bytes left)",
        (1, 5))


@pytest.mark.parametrize("index", range(5))
def test_length_swallowing_the_rest(codec_impl: Any, index: int) -> None:
    head = b"".join(u32(len(f)) + f for f in GOOD[:index])
    tail = b"".join(u32(len(f)) + f for f in GOOD[index:])
    data = b"\x02" + u32(U32_MAX) + head + u32(len(tail) - 4) + tail[4:]
    assert_malformed(codec_impl, data,
                     f"{FIELDS[index + 1]} length runs past the end of the message",
                     (2, U32_MAX))


@pytest.mark.parametrize("length", [U32_MAX, 0x80000000, 0x7FFFFFFF, 0xFFFFFFFE, 30, 25])
def test_huge_length_in_each_field(codec_impl: Any, length: int) -> None:
    for index in range(6):
        data = bytearray(29)
        data[5 + 4 * index: 9 + 4 * index] = u32(length)
        left = 29 - 5 - 4 * (index + 1)
        assert_malformed(
            codec_impl, bytes(data),
            f"{FIELDS[index]} length {length} runs past the end of the message"
            f" ({left} bytes left)", (0, 0))


def test_trailing_bytes(codec_impl: Any) -> None:
    assert_malformed(codec_impl, bytes(30), "1 bytes remain after the payload", (0, 0))
    assert_malformed(codec_impl, ASK_JOIN + b"\x00" * 3, "3 bytes remain after the payload",
                     (1, 1))


def test_lengths_are_checked_before_names(codec_impl: Any) -> None:
    data = raw(1, 3, b"\xff", b"\xff", b"", b"", b"", b"") + b"\x00"
    assert_malformed(codec_impl, data, "1 bytes remain after the payload", (1, 3))


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("bad", BAD_UTF8)
def test_invalid_utf8_in_each_name(codec_impl: Any, bad: bytes) -> None:
    good = [b"chat", b"lobby", b"join", b"dst", b"src", b"payload"]
    # namespace, room and event are named whenever they are valid, whichever is bad
    context = [(None, "lobby", "join"), ("chat", None, "join"), ("chat", "lobby", None),
               ("chat", "lobby", "join"), ("chat", "lobby", "join")]
    for index in range(5):
        fields = list(good)
        fields[index] = bad
        data = raw(1, 42, *fields)
        fns = [codec_impl.decode_v2] + ([codec_impl.decode_client_v2] if index < 4 else [])
        for fn in fns:
            with pytest.raises(ProtocolError) as info:
                fn(data)
            err = info.value
            assert err.code == "invalid_name"
            assert str(err) == f"{FIELDS[index]} is not valid UTF-8"
            assert (err.namespace, err.room, err.event) == context[index]
            assert (err.kind, err.id) == (1, 42)


def test_every_name_invalid(codec_impl: Any) -> None:
    data = raw(0, 0, b"\xff", b"\xfe", b"\xfd", b"\xfc", b"\xfb", b"")
    with pytest.raises(ProtocolError) as info:
        codec_impl.decode_v2(data)
    err = info.value
    assert str(err) == "namespace is not valid UTF-8"
    assert (err.code, err.namespace, err.room, err.event) == ("invalid_name", None, None, None)


def test_decode_client_v2_ignores_src(codec_impl: Any) -> None:
    for src in (b"", b"\xff\xfe", b"\xed\xa0\x80", b"whatever"):
        data = raw(1, 1, b"chat", b"lobby", b"say", b"", src, b"hi")
        assert codec_impl.decode_client_v2(data) == (1, 1, "chat", "lobby", "say", "", b"hi")
    data = raw(1, 1, b"chat", b"lobby", b"say", b"") + u32(1000) + b"x"
    with pytest.raises(ProtocolError, match="src length 1000 runs past the end"):
        codec_impl.decode_client_v2(data)


def test_invalid_utf8_payload_is_fine(codec_impl: Any) -> None:
    assert codec_impl.decode_v2(raw(2, 1, b"", b"", b"", b"", b"", b"\xff"))[7] == b"\xff"


def test_v1_errors_carry_no_v2_context(codec_impl: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        codec_impl.decode(b"\x00\x00\x00\x01\xff" + bytes(16))
    err = info.value
    assert (err.code, err.namespace, err.kind, err.id) == ("invalid_name", None, None, None)


def test_protocol_error_constructor_is_compatible() -> None:
    err = ProtocolError("bad", "invalid_name", "room", "event")
    assert (str(err), err.code, err.room, err.event) == ("bad", "invalid_name", "room", "event")
    assert (err.namespace, err.kind, err.id) == (None, None, None)
    assert ProtocolError("x").code == "malformed"
    full = ProtocolError("y", "invalid_name", None, "e", namespace="n", kind=1, id=5)
    assert (full.namespace, full.kind, full.id) == ("n", 1, 5)


# --------------------------------------------------------------------------- v1 body → v2


@pytest.mark.parametrize("payload_size", [0, 80, 100, 65000, 70000])
def test_frame_v2_from_v1_body_matches_encode(codec_impl: Any, payload_size: int) -> None:
    payload = os.urandom(payload_size)
    v1_frame = codec_impl.encode_frame("lobby", "chat", "", "src-id", payload)
    offset = {126: 4, 127: 10}.get(v1_frame[1], 2)
    body = memoryview(v1_frame)[offset:]  # the server's case: the body inside a v1 frame
    for kind, mid in HEADERS:
        for namespace in ("", "chat", "é" * 200):
            frame = codec_impl.frame_v2_from_v1_body(kind, mid, namespace, body)
            assert frame == codec_impl.encode_frame_v2(kind, mid, namespace, "lobby", "chat",
                                                       "", "src-id", payload)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "message is 0 bytes, shorter than the minimum of 20"),
        (JOIN_LOBBY_V1[:-1], "payload length runs past the end of the message"),
        (JOIN_LOBBY_V1 + b"\x00", "1 bytes remain after the payload"),
        (bytes(16) + u32(U32_MAX), "payload length 4294967295 runs past the end of the message"
         " (0 bytes left)"),
    ],
)
def test_frame_v2_from_v1_body_checks_the_body(codec_impl: Any, body: bytes,
                                               message: str) -> None:
    with pytest.raises(ProtocolError) as info:
        codec_impl.frame_v2_from_v1_body(1, 1, "chat", body)
    assert str(info.value) == message
    assert info.value.code == "malformed"


def test_frame_v2_from_v1_body_does_not_check_utf8(codec_impl: Any) -> None:
    """Only lengths: the body came from encode, whose names are str."""
    v1 = b"\x00\x00\x00\x01\xff" + bytes(16)
    frame = codec_impl.frame_v2_from_v1_body(0, 0, "", v1)
    assert frame.endswith(v1)


# --------------------------------------------------------------------------- parity


@st.composite
def near_valid_v2(draw: st.DrawFn) -> bytes:
    """A well-formed v2 body, then its header, lengths and bytes mutated a little."""
    name = st.one_of(
        st.text(max_size=6).map(str.encode), st.binary(max_size=6), st.sampled_from(BAD_UTF8))
    fields = [draw(name) for _ in range(5)] + [draw(st.binary(max_size=12))]
    lengths = [len(f) for f in fields]
    for index in draw(st.lists(st.integers(0, 5), max_size=3)):
        lengths[index] = draw(st.one_of(
            st.integers(-3, 3).map(lambda d, n=lengths[index]: min(max(n + d, 0), U32_MAX)),
            st.sampled_from([0, 1, 28, 29, 0x7FFFFFFF, 0x80000000, U32_MAX - 1, U32_MAX])))
    kind = draw(st.one_of(st.integers(0, 3), st.integers(0, 255)))
    mid = draw(st.one_of(st.just(0), st.integers(0, U32_MAX)))
    data = bytearray(bytes([kind]) + u32(mid) + b"".join(
        u32(n) + f for n, f in zip(lengths, fields, strict=True)))
    mutation = draw(st.sampled_from(["none", "truncate", "append", "flip"]))
    if mutation == "truncate":
        del data[draw(st.integers(0, len(data) - 1)):]
    elif mutation == "append":
        data += draw(st.binary(min_size=1, max_size=5))
    elif mutation == "flip":
        data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    return bytes(data)


def assert_parity(name: str, *args: Any) -> tuple:
    compiled = importlib.import_module("roomer._codec")
    expected = outcome(getattr(pure, name), *args)
    assert outcome(getattr(compiled, name), *args) == expected
    return expected


PARITY = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@needs_compiled
@PARITY
@given(near_valid_v2())
def test_parity_near_valid(data: bytes) -> None:
    for name in ("decode_v2", "decode_client_v2"):
        assert_parity(name, data)
        assert_parity(name, bytearray(data))
        assert_parity(name, memoryview(b"." + data)[1:])


@needs_compiled
@PARITY
@given(st.binary(max_size=80))
def test_parity_arbitrary_bytes(data: bytes) -> None:
    assert_parity("decode_v2", data)
    assert_parity("decode_client_v2", data)
    assert_parity("frame_v2_from_v1_body", 1, 1, "ns", data)


@needs_compiled
@settings(max_examples=300, deadline=None)
@given(
    st.integers(-1, 5), st.one_of(st.integers(0, 3), st.integers(-1, U32_MAX + 1)),
    st.lists(st.text(max_size=8), min_size=5, max_size=5),
    st.one_of(st.binary(max_size=300), st.text(max_size=50)),
)
def test_parity_encode(kind: int, mid: int, names: list[str], payload: bytes | str) -> None:
    body = assert_parity("encode_v2", kind, mid, *names, payload)
    frame = assert_parity("encode_frame_v2", kind, mid, *names, payload)
    assert body[0] == frame[0]
    if body[0] == "ok":
        assert_server_frame(frame[1], body[1])
        raw_payload = payload if isinstance(payload, bytes) else payload.encode()
        assert assert_parity("decode_v2", body[1]) == ("ok", (kind, mid, *names, raw_payload))
        v1 = pure.encode(*names[1:], payload)
        assert assert_parity("frame_v2_from_v1_body", kind, mid, names[0], v1) == frame


# --------------------------------------------------------------------------- selection


def test_codec_exports_v2() -> None:
    import roomer.codec

    for name in V2_NAMES:
        assert name in roomer.codec.__all__
        assert name in pure.__all__
        impl = importlib.import_module("roomer._codec" if roomer.codec.COMPILED
                                       else "roomer._codec_py")
        assert getattr(roomer.codec, name) is getattr(impl, name)
    assert roomer.codec.COMPILED is (not PURE_ONLY)
    assert roomer.ProtocolError is ProtocolError
