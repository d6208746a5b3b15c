"""Batch frames (docs/protocol.md §13) in the codec: both twins, every boundary, parity.

``codec_impl`` (tests/conftest.py) runs a test against roomer._codec_py and roomer._codec.
"""

from __future__ import annotations

import importlib
import os
import struct

import pytest
from codec_fuzzing import outcome
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roomer import ProtocolError
from roomer import _codec_py as pure

PURE_ONLY = os.environ.get("ROOMER_NO_EXTENSIONS") == "1"
needs_compiled = pytest.mark.skipif(PURE_ONLY, reason="ROOMER_NO_EXTENSIONS=1 forces pure")


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def hexbytes(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# docs/protocol.md §13's example, byte for byte.
EXAMPLE = hexbytes("""
    04
    00000020
      00 00000000 00000000
      00000001 72 00000001 61 00000000 00000000 00000001 31
    00000020
      00 00000000 00000000
      00000001 72 00000001 62 00000000 00000000 00000001 32
""")


def entry(body: bytes) -> bytes:
    return u32(len(body)) + body


def test_the_documented_example(codec_impl) -> None:
    a = codec_impl.encode_v2(0, 0, "", "r", "a", "", "", b"1")
    b = codec_impl.encode_v2(0, 0, "", "r", "b", "", "", b"2")
    assert len(EXAMPLE) == 73
    assert codec_impl.encode_batch([a, b]) == EXAMPLE
    assert codec_impl.split_batch(EXAMPLE) == [a, b]
    assert [codec_impl.decode_v2(body)[4] for body in codec_impl.split_batch(EXAMPLE)] == [
        "a", "b"]


def test_round_trip_at_the_limits(codec_impl) -> None:
    smallest = bytes(29)
    assert codec_impl.split_batch(codec_impl.encode_batch([smallest])) == [smallest]
    bodies = [codec_impl.encode_v2(0, 0, "", "r", "e", "", "", str(i)) for i in range(256)]
    assert codec_impl.BATCH_MAX == 256
    batch = codec_impl.encode_batch(iter(bodies))
    assert codec_impl.split_batch(batch) == bodies
    assert codec_impl.split_batch(bytearray(batch)) == bodies
    assert codec_impl.split_batch(memoryview(batch)) == bodies
    # A strided view is read in logical order, as every decoder reads it.
    doubled = bytes(b for byte in batch for b in (byte, 0))
    assert codec_impl.split_batch(memoryview(doubled)[::2]) == bodies


def test_the_entries_are_copies(codec_impl) -> None:
    data = bytearray(EXAMPLE)
    bodies = codec_impl.split_batch(data)
    data[10:20] = bytes(10)
    assert bodies == codec_impl.split_batch(EXAMPLE)
    assert all(type(body) is bytes for body in bodies)


BROKEN = [
    (b"", "not a batch: its first byte is not 04"),
    (b"\x00" + entry(bytes(29)), "not a batch: its first byte is not 04"),
    (b"\x04", "a batch must hold at least one message"),
    (b"\x04\x00\x00\x00", "entry 1 length runs past the end of the batch"),
    (b"\x04" + u32(28) + bytes(28), "entry 1 is 28 bytes, shorter than the minimum of 29"),
    (b"\x04" + u32(30) + bytes(29),
     "entry 1 length 30 runs past the end of the batch (29 bytes left)"),
    (b"\x04" + u32(0xFFFFFFFF) + bytes(40),
     "entry 1 length 4294967295 runs past the end of the batch (40 bytes left)"),
    (b"\x04" + entry(bytes(29)) + b"\x00",
     "entry 2 length runs past the end of the batch"),
    (b"\x04" + entry(bytes(29)) + u32(0),
     "entry 2 is 0 bytes, shorter than the minimum of 29"),
    (b"\x04" + entry(bytes(29)) * 257, "a batch holds more than 256 messages"),
]


@pytest.mark.parametrize(("data", "text"), BROKEN)
def test_a_broken_batch_is_refused_whole(codec_impl, data: bytes, text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        codec_impl.split_batch(data)
    assert str(info.value) == text
    assert info.value.code == "malformed"
    assert outcome(codec_impl.split_batch, data) == outcome(pure.split_batch, data)


def test_entries_are_not_decoded(codec_impl) -> None:
    # A body that is no v2 message (kind 4 inside, bad UTF-8) is split all the same: each
    # entry is a message of its own, answered by whoever decodes it.
    odd = [b"\x04" + bytes(28), b"\x00" + bytes(8) + u32(1) + b"\xff" + bytes(16)]
    assert codec_impl.split_batch(codec_impl.encode_batch(odd)) == odd
    with pytest.raises(ProtocolError, match="kind 4 is not"):
        codec_impl.decode_v2(odd[0])


@pytest.mark.parametrize(("bodies", "error", "text"), [
    ([], ValueError, "a batch must hold at least one message"),
    ([bytes(28)], ValueError, "a body of 28 bytes is shorter than the minimum of 29"),
    ([bytes(29)] * 257, ValueError, "a batch holds at most 256 messages"),
    (["text"], TypeError, "body must be bytes-like, not str"),
    ([None], TypeError, "body must be bytes-like, not NoneType"),
])
def test_encode_batch_refuses_what_split_would(codec_impl, bodies, error, text) -> None:
    with pytest.raises(error) as info:
        codec_impl.encode_batch(bodies)
    assert str(info.value) == text


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | st.lists(st.binary(min_size=25, max_size=40), max_size=6).map(
    lambda parts: b"\x04" + b"".join(entry(p) for p in parts)))
def test_twins_agree_on_any_bytes(codec_impl, data: bytes) -> None:
    assert outcome(codec_impl.split_batch, data) == outcome(pure.split_batch, data)


@needs_compiled
def test_the_compiled_functions_are_the_ones_exported() -> None:
    import roomer.codec

    compiled = importlib.import_module("roomer._codec")
    assert roomer.codec.COMPILED is True
    for name in ("split_batch", "encode_batch", "BATCH_MAX"):
        assert name in roomer.codec.__all__ and name in pure.__all__
        assert getattr(roomer.codec, name) is getattr(compiled, name)
    assert compiled.__file__.endswith((".so", ".pyd"))
