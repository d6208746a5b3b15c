"""The wire codec (docs/protocol.md §2): both twins, every boundary, and compiled/pure parity.

``codec_impl`` (tests/conftest.py) runs a test against roomer._codec_py and roomer._codec.
"""

from __future__ import annotations

import importlib
import os
import struct
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from waiting import scaled

import roomer
from roomer import Message, ProtocolError
from roomer import _codec_py as pure

PURE_ONLY = os.environ.get("ROOMER_NO_EXTENSIONS") == "1"
ROOT = Path(__file__).resolve().parent.parent
FIELDS = ("room", "event", "dst", "src", "payload")
U32_MAX = 0xFFFFFFFF

# docs/protocol.md §2: a client asking to join "lobby" (29 bytes).
JOIN_LOBBY = bytes.fromhex(
    "00000005 6c6f626279 00000004 6a6f696e 00000000 00000000 00000000".replace(" ", "")
)

needs_compiled = pytest.mark.skipif(PURE_ONLY, reason="ROOMER_NO_EXTENSIONS=1 forces pure")


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def raw(*fields: bytes) -> bytes:
    """A message body built by hand from raw field bytes (no validation)."""
    return b"".join(u32(len(f)) + f for f in fields)


def compiled_module() -> Any:
    return importlib.import_module("roomer._codec")


# --------------------------------------------------------------------------- round trips


NAMES = [
    ("lobby", "join", "", ""),
    ("", "", "", ""),
    ("match/42", "move", "3f2a-dst", "src-id"),
    ("Ñandú ☃ 房间", "évènement", "dést", "sŕc"),
    ("\U0001f600" * 50, "e" * 300, "d" * 70000, "s"),
]


@pytest.mark.parametrize("names", NAMES, ids=range(len(NAMES)))
@pytest.mark.parametrize(
    "make_payload",
    [
        pytest.param(lambda b: b, id="bytes"),
        pytest.param(bytearray, id="bytearray"),
        pytest.param(memoryview, id="memoryview"),
    ],
)
def test_round_trip_bytes_like_payloads(codec_impl: Any, names: tuple, make_payload: Any) -> None:
    for payload in (b"", b"\x00", bytes(range(256)), b"\xff" * 70000):
        body = codec_impl.encode(*names, make_payload(payload))
        assert isinstance(body, bytes)
        assert len(body) == 20 + sum(len(n.encode()) for n in names) + len(payload)
        decoded = codec_impl.decode(body)
        assert decoded == (*names, payload)
        assert type(decoded[4]) is bytes
        assert codec_impl.decode_client(body) == (names[0], names[1], names[2], payload)


def test_round_trip_str_payload(codec_impl: Any) -> None:
    for text in ("", "hello", "héllo ☃ \U0001f600", "x" * 5000):
        body = codec_impl.encode("r", "e", "d", "s", text)
        assert codec_impl.decode(body) == ("r", "e", "d", "s", text.encode())


def test_payload_memoryview_slices_and_views(codec_impl: Any) -> None:
    source = bytearray(b"..payload..")
    view = memoryview(source)[2:9]
    assert codec_impl.decode(codec_impl.encode("r", "e", "", "", view))[4] == b"payload"
    # a non-contiguous view is copied as its logical bytes
    strided = memoryview(b"a-b-c-d")[::2]
    assert codec_impl.decode(codec_impl.encode("r", "e", "", "", strided))[4] == b"abcd"


def test_decode_accepts_bytes_like_input(codec_impl: Any) -> None:
    body = codec_impl.encode("room", "ev", "dst", "src", b"pay")
    expected = ("room", "ev", "dst", "src", b"pay")
    assert codec_impl.decode(bytearray(body)) == expected
    assert codec_impl.decode(memoryview(body)) == expected
    # a slice of a bigger buffer (non-zero offset), as a server reading a stream has
    assert codec_impl.decode(memoryview(b"xx" + body + b"yy")[2:-2]) == expected
    # the payload is a copy: mutating the input afterwards does not change it
    buf = bytearray(body)
    payload = codec_impl.decode(buf)[4]
    buf[-1] = 0
    assert payload == b"pay"


def test_encode_rejects_wrong_types(codec_impl: Any) -> None:
    for i in range(4):
        args: list[Any] = ["r", "e", "d", "s", b"p"]
        args[i] = b"bytes-name"
        with pytest.raises(TypeError, match=f"{FIELDS[i]} must be str, not bytes"):
            codec_impl.encode(*args)
        with pytest.raises(TypeError):
            codec_impl.encode_frame(*args)
    with pytest.raises(TypeError, match="payload must be str or bytes-like, not int"):
        codec_impl.encode("r", "e", "d", "s", 5)
    with pytest.raises(TypeError):
        codec_impl.encode("r", "e", "d", "s", None)


def test_encode_rejects_unencodable_str(codec_impl: Any) -> None:
    with pytest.raises(UnicodeEncodeError):
        codec_impl.encode("\ud800", "e", "", "", b"")


def test_decode_rejects_non_buffers(codec_impl: Any) -> None:
    with pytest.raises(TypeError):
        codec_impl.decode("not bytes" * 3)
    with pytest.raises(TypeError):
        codec_impl.decode(None)


# ------------------------------------------------------------------ docs/protocol.md §2 bytes


def test_design_example_join_lobby(codec_impl: Any) -> None:
    assert len(JOIN_LOBBY) == 29
    assert codec_impl.encode("lobby", "join", "", "", b"") == JOIN_LOBBY
    assert codec_impl.encode("lobby", "join", "", "", "") == JOIN_LOBBY
    assert codec_impl.decode(JOIN_LOBBY) == ("lobby", "join", "", "", b"")
    assert codec_impl.decode_client(JOIN_LOBBY) == ("lobby", "join", "", b"")


def test_field_order_and_big_endian_lengths(codec_impl: Any) -> None:
    body = codec_impl.encode("R", "EE", "DDD", "SSSS", b"PPPPP" * 60)
    assert body == (
        b"\x00\x00\x00\x01R"
        b"\x00\x00\x00\x02EE"
        b"\x00\x00\x00\x03DDD"
        b"\x00\x00\x00\x04SSSS"
        b"\x00\x00\x01\x2c" + b"PPPPP" * 60
    )


def test_all_fields_empty_is_20_bytes(codec_impl: Any) -> None:
    body = codec_impl.encode("", "", "", "", b"")
    assert body == bytes(20)
    assert codec_impl.decode(bytes(20)) == ("", "", "", "", b"")
    assert codec_impl.decode_client(bytes(20)) == ("", "", "", b"")


# --------------------------------------------------------------------------- malformed


def assert_malformed(impl: Any, data: bytes, message: str) -> ProtocolError:
    for fn in (impl.decode, impl.decode_client):
        with pytest.raises(ProtocolError) as info:
            fn(data)
        err = info.value
        assert str(err) == message
        assert err.code == "malformed"
        assert err.room is None and err.event is None
        assert isinstance(err, ValueError)  # ProtocolError is a ValueError too
    return err


@pytest.mark.parametrize("size", range(20))
def test_shorter_than_20(codec_impl: Any, size: int) -> None:
    assert_malformed(
        codec_impl, bytes(size), f"message is {size} bytes, shorter than the minimum of 20"
    )


def test_short_even_when_lengths_look_valid(codec_impl: Any) -> None:
    # 19 bytes that would be "all empty but one zero byte short"
    assert_malformed(
        codec_impl,
        bytes(16) + b"\x00\x00\x00",
        "message is 19 bytes, shorter than the minimum of 20",
    )


@pytest.mark.parametrize("index", range(5))
def test_length_overruns_by_exactly_one(codec_impl: Any, index: int) -> None:
    """Field ``index`` claims one byte more than what is left after its length."""
    fields = [b"room", b"event", b"dst", b"src", b"payload"]
    head = b"".join(u32(len(f)) + f for f in fields[:index])
    tail = b"".join(u32(len(f)) + f for f in fields[index:])  # what follows the length
    left = len(tail) - 4
    data = head + u32(left + 1) + tail[4:]
    assert_malformed(
        codec_impl,
        data,
        f"{FIELDS[index]} length {left + 1} runs past the end of the message ({left} bytes left)",
    )


@pytest.mark.parametrize("index", range(4))
def test_length_swallowing_the_rest_leaves_no_room_for_the_next(
    codec_impl: Any, index: int
) -> None:
    fields = [b"room", b"event", b"dst", b"src", b"payload"]
    head = b"".join(u32(len(f)) + f for f in fields[:index])
    tail = b"".join(u32(len(f)) + f for f in fields[index:])
    data = head + u32(len(tail) - 4) + tail[4:]  # exactly fits: nothing left for the next
    assert_malformed(
        codec_impl, data, f"{FIELDS[index + 1]} length runs past the end of the message"
    )


def test_payload_length_exactly_fits(codec_impl: Any) -> None:
    data = raw(b"r", b"e", b"d", b"s", b"payload")
    assert codec_impl.decode(data)[4] == b"payload"
    # one short: the last byte remains
    shorter = data[:20] + u32(6) + data[24:]
    assert_malformed(codec_impl, shorter, "1 bytes remain after the payload")


def test_one_trailing_byte(codec_impl: Any) -> None:
    assert_malformed(codec_impl, JOIN_LOBBY + b"\x00", "1 bytes remain after the payload")
    assert_malformed(codec_impl, bytes(21), "1 bytes remain after the payload")
    assert_malformed(codec_impl, bytes(20) + b"\xff" * 7, "7 bytes remain after the payload")


@pytest.mark.parametrize("length", [U32_MAX, 0x80000000, 0x7FFFFFFF, 0xFFFFFFFE])
def test_huge_length_in_each_field(codec_impl: Any, length: int) -> None:
    for index in range(5):
        data = bytearray(20)
        data[4 * index : 4 * index + 4] = u32(length)
        left = 20 - 4 * (index + 1)
        assert_malformed(
            codec_impl,
            bytes(data),
            f"{FIELDS[index]} length {length} runs past the end of the message ({left} bytes left)",
        )
        # the same after real content, and with plenty of bytes after it
        fields = [b"ab", b"cd", b"ef", b"gh", b"ij"]
        head = b"".join(u32(len(f)) + f for f in fields[:index])
        rest = b"\x00" * 100
        assert_malformed(
            codec_impl,
            head + u32(length) + rest,
            f"{FIELDS[index]} length {length} runs past the end of the message (100 bytes left)",
        )


def test_huge_payload_claim_fails_without_allocating(codec_impl: Any) -> None:
    data = bytes(16) + u32(U32_MAX) + b"abcd"  # 24 bytes claiming a 4 GiB payload
    assert len(data) == 24
    tracemalloc.start()
    try:
        for _ in range(1000):
            with pytest.raises(ProtocolError) as info:
                codec_impl.decode(data)
            with pytest.raises(ProtocolError):
                codec_impl.decode_client(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code == "malformed"
    assert "payload length 4294967295 runs past the end" in str(info.value)
    assert peak < 256 * 1024  # never anything like the claimed size


def test_decode_allocates_at_most_about_its_input(codec_impl: Any) -> None:
    payload = os.urandom(1 << 20)
    body = codec_impl.encode("room", "event", "", "src", payload)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        decoded = codec_impl.decode(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded[4] == payload
    assert peak < len(body) + 64 * 1024  # the payload copy plus small change


# --------------------------------------------------------------------------- invalid UTF-8


BAD_UTF8 = [b"\xff", b"\xc3", b"ok\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"]


@pytest.mark.parametrize("bad", BAD_UTF8)
def test_invalid_utf8_in_each_name(codec_impl: Any, bad: bytes) -> None:
    good = [b"lobby", b"join", b"dst", b"src", b"payload"]
    # room and event are named whenever they are valid, whichever field is the bad one
    expected_context = [(None, "join"), ("lobby", None), ("lobby", "join"), ("lobby", "join")]
    for index in range(4):
        fields = list(good)
        fields[index] = bad
        data = raw(*fields)
        fns = [codec_impl.decode] + ([codec_impl.decode_client] if index < 3 else [])
        for fn in fns:
            with pytest.raises(ProtocolError) as info:
                fn(data)
            err = info.value
            assert err.code == "invalid_name"
            assert str(err) == f"{FIELDS[index]} is not valid UTF-8"
            assert (err.room, err.event) == expected_context[index]


def test_invalid_room_and_event_both_unnamed(codec_impl: Any) -> None:
    data = raw(b"\xff", b"\xfe", b"\xfd", b"src", b"")
    for fn in (codec_impl.decode, codec_impl.decode_client):
        with pytest.raises(ProtocolError) as info:
            fn(data)
        assert str(info.value) == "room is not valid UTF-8"
        assert (info.value.code, info.value.room, info.value.event) == ("invalid_name", None, None)


def test_decode_client_ignores_src(codec_impl: Any) -> None:
    for src in (b"", b"\xff\xfe\xfd", b"\xed\xa0\x80", b"anything the client likes"):
        data = raw(b"lobby", b"say", b"", src, b"hi")
        assert codec_impl.decode_client(data) == ("lobby", "say", "", b"hi")
    # src is still bounds-checked
    data = raw(b"lobby", b"say", b"") + u32(1000) + b"x"
    with pytest.raises(ProtocolError, match="src length 1000 runs past the end"):
        codec_impl.decode_client(data)


def test_invalid_utf8_in_payload_is_fine(codec_impl: Any) -> None:
    data = raw(b"r", b"e", b"", b"", b"\xff\xfe")
    assert codec_impl.decode(data)[4] == b"\xff\xfe"


def test_malformed_wins_over_invalid_name(codec_impl: Any) -> None:
    """Lengths are checked before any name is decoded."""
    data = raw(b"\xff", b"e", b"", b"", b"") + b"\x00"
    with pytest.raises(ProtocolError) as info:
        codec_impl.decode(data)
    assert info.value.code == "malformed"


# --------------------------------------------------------------------------- framing


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x82\x00"),
        (1, b"\x82\x01"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (127, b"\x82\x7e\x00\x7f"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
        (1 << 32, b"\x82\x7f\x00\x00\x00\x01\x00\x00\x00\x00"),
        ((1 << 63) - 1, b"\x82\x7f\x7f\xff\xff\xff\xff\xff\xff\xff"),
    ],
)
def test_frame_header_sizes(codec_impl: Any, size: int, header: bytes) -> None:
    assert codec_impl.frame_header(size) == header


def test_frame_header_rejects_negative(codec_impl: Any) -> None:
    with pytest.raises(ValueError):
        codec_impl.frame_header(-1)


@pytest.mark.parametrize("body_size", [20, 125, 126, 65535, 65536, 200_000])
def test_encode_frame_layout(codec_impl: Any, body_size: int) -> None:
    payload = b"\xab" * (body_size - 20)
    body = codec_impl.encode("", "", "", "", payload)
    assert len(body) == body_size
    frame = codec_impl.encode_frame("", "", "", "", payload)
    header = codec_impl.frame_header(body_size)
    assert frame == header + body
    assert frame[0] == 0x82  # FIN + binary, no RSV bits
    assert frame[1] & 0x80 == 0  # server frames are unmasked
    length7 = frame[1] & 0x7F
    if body_size < 126:
        assert (length7, len(header)) == (body_size, 2)
    elif body_size < 65536:
        assert (length7, len(header)) == (126, 4)
        assert struct.unpack(">H", frame[2:4])[0] == body_size
    else:
        assert (length7, len(header)) == (127, 10)
        assert struct.unpack(">Q", frame[2:10])[0] == body_size
    assert codec_impl.decode(frame[len(header) :]) == ("", "", "", "", payload)


def test_encode_frame_join_lobby(codec_impl: Any) -> None:
    assert codec_impl.encode_frame("lobby", "join", "", "", b"") == b"\x82\x1d" + JOIN_LOBBY


# --------------------------------------------------------------------------- parity


def outcome(fn: Any, *args: Any) -> tuple:
    """What a call returned or raised, in a form that compares across the twins."""
    try:
        return ("ok", fn(*args))
    except ProtocolError as err:
        return ("protocol", str(err), err.code, err.room, err.event)
    except Exception as err:  # any other error must match too
        return ("error", type(err), str(err))


def assert_parity(name: str, *args: Any) -> tuple:
    compiled = compiled_module()
    expected = outcome(getattr(pure, name), *args)
    assert outcome(getattr(compiled, name), *args) == expected
    return expected


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    """A well-formed body, then its lengths and bytes mutated a little."""
    name = st.one_of(
        st.text(max_size=6).map(str.encode),
        st.binary(max_size=6),
        st.sampled_from(BAD_UTF8),
    )
    fields = [draw(name) for _ in range(4)] + [draw(st.binary(max_size=12))]
    lengths = [len(f) for f in fields]
    for index in draw(st.lists(st.integers(0, 4), max_size=3)):
        lengths[index] = draw(
            st.one_of(
                st.integers(-3, 3).map(lambda d, n=lengths[index]: min(max(n + d, 0), U32_MAX)),
                st.sampled_from([0, 1, 19, 20, 0x7FFFFFFF, 0x80000000, U32_MAX - 1, U32_MAX]),
            )
        )
    data = bytearray(b"".join(u32(n) + f for n, f in zip(lengths, fields, strict=True)))
    mutation = draw(st.sampled_from(["none", "truncate", "append", "flip"]))
    if mutation == "truncate" and data:
        del data[draw(st.integers(0, len(data) - 1)) :]
    elif mutation == "append":
        data += draw(st.binary(min_size=1, max_size=5))
    elif mutation == "flip" and data:
        data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    return bytes(data)


PARITY = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@needs_compiled
@PARITY
@given(st.binary(max_size=64))
def test_parity_arbitrary_bytes(data: bytes) -> None:
    assert_parity("decode", data)
    assert_parity("decode_client", data)


@needs_compiled
@PARITY
@given(near_valid())
def test_parity_near_valid(data: bytes) -> None:
    assert_parity("decode", data)
    assert_parity("decode_client", data)
    assert_parity("decode", bytearray(data))
    assert_parity("decode_client", memoryview(data))


@needs_compiled
@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(max_size=8), min_size=4, max_size=4),
    st.one_of(st.binary(max_size=300), st.text(max_size=50)),
)
def test_parity_encode(names: list[str], payload: bytes | str) -> None:
    body = assert_parity("encode", *names, payload)
    frame = assert_parity("encode_frame", *names, payload)
    assert body[0] == "ok" and frame[0] == "ok"
    assert frame[1].endswith(body[1])
    assert assert_parity("decode", body[1]) == (
        "ok",
        (*names, payload if isinstance(payload, bytes) else payload.encode()),
    )


@needs_compiled
@settings(max_examples=300, deadline=None)
@given(st.integers(0, (1 << 63) - 1))
def test_parity_frame_header(size: int) -> None:
    assert_parity("frame_header", size)


# --------------------------------------------------------------------------- selection


@needs_compiled
def test_compiled_modules_are_the_ones_loaded() -> None:
    import roomer._codec
    import roomer._fanout
    import roomer.codec
    import roomer.fanout
    import roomer.inbound

    assert roomer.codec.COMPILED is True
    for name in ("decode", "decode_client", "encode", "encode_frame", "frame_header"):
        assert getattr(roomer.codec, name) is getattr(roomer._codec, name)
    assert roomer.fanout.COMPILED is True
    assert roomer.fanout.Fanout is roomer._fanout.Fanout
    assert roomer.fanout.Peer is roomer._fanout.Peer
    assert roomer.fanout.Relay is roomer._fanout.Relay
    # A connection's inbound state stands on the compiled core the relay path reads.
    assert roomer.inbound.Inbound.__mro__[1] is roomer._fanout.InboundCore
    assert roomer.COMPILED is True
    assert roomer._codec.__file__.endswith((".so", ".pyd"))
    assert roomer._fanout.__file__.endswith((".so", ".pyd"))


def test_no_extensions_env_selects_pure() -> None:
    script = textwrap.dedent(
        """
        import roomer, roomer.codec, roomer.fanout, roomer._codec_py, roomer._fanout_py
        import roomer.inbound
        assert roomer.codec.COMPILED is False
        assert roomer.codec.decode is roomer._codec_py.decode
        assert roomer.codec.encode_frame is roomer._codec_py.encode_frame
        assert roomer.fanout.COMPILED is False
        assert roomer.fanout.Fanout is roomer._fanout_py.Fanout
        assert roomer.fanout.Peer is roomer._fanout_py.Peer
        assert roomer.fanout.Relay is roomer._fanout_py.Relay
        assert roomer.inbound.Inbound.__mro__[1] is roomer._fanout_py.InboundCore
        assert roomer.COMPILED is False
        print("pure-ok")
        """
    )
    env = dict(os.environ, ROOMER_NO_EXTENSIONS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=scaled(60)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pure-ok"


def test_roomer_compiled_flag_matches_modules() -> None:
    import roomer.codec
    import roomer.fanout

    assert (roomer.codec.COMPILED and roomer.fanout.COMPILED) == roomer.COMPILED
    assert roomer.codec.COMPILED is (not PURE_ONLY)


# --------------------------------------------------------------------------- Message


def test_message_round_trip() -> None:
    msg = Message("lobby", "join")
    assert (msg.dst, msg.src, msg.payload) == ("", "", b"")
    assert msg.encode() == JOIN_LOBBY
    assert Message.decode(JOIN_LOBBY) == msg
    full = Message("room ☃", "chat", "dst-id", "src-id", "héllo".encode())
    for data in (full.encode(), bytearray(full.encode()), memoryview(full.encode())):
        back = Message.decode(data)
        assert back == full
        assert isinstance(back, Message)
    assert full.text == "héllo"


def test_message_decode_errors() -> None:
    with pytest.raises(ProtocolError) as info:
        Message.decode(JOIN_LOBBY[:-1])
    assert info.value.code == "malformed"
    with pytest.raises(roomer.ProtocolError) as info2:
        Message.decode(raw(b"lobby", b"\xff", b"", b"", b""))
    assert (info2.value.code, info2.value.room, info2.value.event) == (
        "invalid_name",
        "lobby",
        None,
    )
