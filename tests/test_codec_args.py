"""The codec's argument contract: both twins take the same types
and raise the same exceptions with the same texts.

The contract is written in roomer/_codec_py.py's docstring. Each candidate value is
tried in every argument position of every function, on both twins (parity), and
the contract's promises are asserted on each twin by itself.
"""

from __future__ import annotations

import array
import ctypes
import importlib
import mmap
import os
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from codec_fuzzing import outcome

from roomer import _codec_py as pure

PURE_ONLY = os.environ.get("ROOMER_NO_EXTENSIONS") == "1"
needs_compiled = pytest.mark.skipif(PURE_ONLY, reason="ROOMER_NO_EXTENSIONS=1 forces pure")


class StrSub(str):
    def encode(self, *args: Any, **kwargs: Any) -> bytes:  # type: ignore[override]
        return b"NOT-USED"

    def __str__(self) -> str:
        return "NOT-USED"


class BytesSub(bytes):
    def __bytes__(self) -> bytes:
        return b"NOT-USED"


class BytearraySub(bytearray):
    pass


class IntSub(int):
    pass


class Indexable:
    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


class BadIndex:
    def __index__(self) -> int:
        raise TypeError("no index here")


class FakeStr:
    """Claims to be a str through __class__; isinstance() believes it, the codec not."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return str


class FakeBytes:
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return bytes


class BytesOnly:
    """Has __bytes__ but no buffer: not bytes-like."""

    def __bytes__(self) -> bytes:
        return b"payload"


def released() -> memoryview:
    view = memoryview(b"payload")
    view.release()
    return view


def strided(data: bytes) -> memoryview:
    spread = bytearray(2 * len(data))
    spread[::2] = data
    return memoryview(spread)[::2]


def anonymous_mmap(data: bytes) -> mmap.mmap:
    region = mmap.mmap(-1, len(data))
    region.write(data)
    return region


# Candidate values for each kind of argument: (id, factory). Factories, so that a
# consumed or released object is never shared between two calls.
NAME_VALUES: list[tuple[str, Any]] = [
    ("str", lambda: "lobby"),
    ("empty", lambda: ""),
    ("unicode", lambda: "Ñandú ☃ \U0001f600"),
    ("str-subclass", lambda: StrSub("lobby")),
    ("surrogate", lambda: "a\ud800b"),
    ("nul", lambda: "a\x00b"),
    ("bytes", lambda: b"lobby"),
    ("bytearray", lambda: bytearray(b"lobby")),
    ("memoryview", lambda: memoryview(b"lobby")),
    ("bool", lambda: True),
    ("int", lambda: 1),
    ("float", lambda: 1.5),
    ("none", lambda: None),
    ("object", object),
    ("fake-str", FakeStr),
    ("list", lambda: ["lobby"]),
]

PAYLOAD_VALUES: list[tuple[str, Any]] = [
    ("bytes", lambda: b"payload"),
    ("empty", lambda: b""),
    ("bytes-subclass", lambda: BytesSub(b"payload")),
    ("bytearray", lambda: bytearray(b"payload")),
    ("bytearray-subclass", lambda: BytearraySub(b"payload")),
    ("memoryview", lambda: memoryview(b"payload")),
    ("memoryview-slice", lambda: memoryview(b"..payload..")[2:-2]),
    ("memoryview-strided", lambda: strided(b"payload")),
    ("memoryview-2d", lambda: memoryview(b"payloads").cast("B", (2, 4))),
    ("memoryview-int", lambda: memoryview(array.array("i", [1, 2, 3]))),
    ("memoryview-int-strided", lambda: memoryview(array.array("i", [1, 2, 3, 4]))[::2]),
    ("memoryview-released", released),
    ("array-bytes", lambda: array.array("B", b"payload")),
    ("array-double", lambda: array.array("d", [1.5, -2.0])),
    ("ctypes-array", lambda: (ctypes.c_uint16 * 3)(1, 2, 3)),
    ("ctypes-int", lambda: ctypes.c_int32(-7)),
    ("mmap", lambda: anonymous_mmap(b"payload")),
    ("str", lambda: "payload"),
    ("str-subclass", lambda: StrSub("payload ☃")),
    ("surrogate", lambda: "\udcff"),
    ("int", lambda: 5),
    ("bool", lambda: False),
    ("float", lambda: 1.5),
    ("none", lambda: None),
    ("list", lambda: [1, 2]),
    ("bytes-only", BytesOnly),
    ("fake-bytes", FakeBytes),
    ("object", object),
]

INT_VALUES: list[tuple[str, Any]] = [
    ("zero", lambda: 0),
    ("one", lambda: 1),
    ("three", lambda: 3),
    ("four", lambda: 4),
    ("true", lambda: True),
    ("false", lambda: False),
    ("int-subclass", lambda: IntSub(2)),
    ("index", lambda: Indexable(1)),
    ("index-huge", lambda: Indexable(1 << 70)),
    ("bad-index", BadIndex),
    ("negative", lambda: -1),
    ("u32-max", lambda: 0xFFFFFFFF),
    ("u32-max+1", lambda: 0x100000000),
    ("2**63-1", lambda: (1 << 63) - 1),
    ("2**63", lambda: 1 << 63),
    ("huge", lambda: 1 << 100),
    ("-huge", lambda: -(1 << 100)),
    ("float", lambda: 1.0),
    ("decimal", lambda: Decimal(1)),
    ("fraction", lambda: Fraction(1)),
    ("str", lambda: "1"),
    ("bytes", lambda: b"\x01"),
    ("none", lambda: None),
]

V1_BODY = pure.encode("lobby", "chat", "", "src", b"payload")
V2_BODY = pure.encode_v2(1, 7, "chat", "lobby", "roll", "", "src", b"payload")
# Bodies padded to a multiple of 4 bytes so they can also be viewed as 32-bit items.
V1_BODY4 = pure.encode("lobby", "chat", "", "src", b"payl")
V2_BODY4 = pure.encode_v2(1, 7, "chat", "lobby", "roll", "", "srcs", b"pa")
assert len(V1_BODY4) % 4 == 0 and len(V2_BODY4) % 4 == 0
BATCH = pure.encode_batch([V2_BODY, V1_BODY + bytes(9)])
BATCH4 = pure.encode_batch([V2_BODY4 + b"xyz"])  # split does not decode what it holds
assert len(BATCH4) % 4 == 0

BODIES_VALUES: list[tuple[str, Any]] = [
    ("list", lambda: [V2_BODY, V2_BODY]),
    ("tuple", lambda: (V2_BODY,)),
    ("generator", lambda: (body for body in [V2_BODY] * 3)),
    ("buffers", lambda: [bytearray(V2_BODY), memoryview(V2_BODY), strided(V2_BODY),
                         BytesSub(V2_BODY), array.array("B", V2_BODY)]),
    ("2d-view", lambda: [memoryview(V2_BODY4).cast("B", (4, len(V2_BODY4) // 4))]),
    ("int-view", lambda: [memoryview(V2_BODY4).cast("i")]),
    ("empty", lambda: []),
    ("short", lambda: [V2_BODY, b"x" * 28]),
    ("too-many", lambda: [V2_BODY] * 257),
    ("str", lambda: ["text"]),
    ("bytes", lambda: V2_BODY),
    ("none", lambda: None),
    ("none-inside", lambda: [V2_BODY, None]),
    ("int", lambda: 3),
]


def data_values(body: bytes, body4: bytes) -> list[tuple[str, Any]]:
    return [
        ("bytes", lambda: body),
        ("bytes-subclass", lambda: BytesSub(body)),
        ("bytearray", lambda: bytearray(body)),
        ("bytearray-subclass", lambda: BytearraySub(body)),
        ("memoryview", lambda: memoryview(body)),
        ("memoryview-slice", lambda: memoryview(b"xx" + body + b"yy")[2:-2]),
        ("memoryview-strided", lambda: strided(body)),
        ("memoryview-2d", lambda: memoryview(body4).cast("B", (4, len(body4) // 4))),
        ("memoryview-int", lambda: memoryview(body4).cast("i")),
        ("memoryview-int-strided", lambda: strided(body4)),  # 'B' items, strided
        ("memoryview-released", released),
        ("array", lambda: array.array("B", body)),
        ("ctypes", lambda: (ctypes.c_uint8 * len(body)).from_buffer_copy(body)),
        ("mmap", lambda: anonymous_mmap(body)),
        ("empty", lambda: b""),
        ("truncated", lambda: body[:-1]),
        ("str", lambda: body.decode("latin-1")),
        ("int", lambda: 20),
        ("none", lambda: None),
        ("list", lambda: list(body)),
        ("bytes-only", BytesOnly),
        ("fake-bytes", FakeBytes),
    ]


# function -> its arguments, each with the kind of values to try in it.
GOOD: dict[str, list[tuple[str, Any]]] = {
    "encode": [("name", "lobby"), ("name", "chat"), ("name", ""), ("name", "src"),
               ("payload", b"payload")],
    "encode_frame": [("name", "lobby"), ("name", "chat"), ("name", ""), ("name", "src"),
                     ("payload", b"payload")],
    "encode_v2": [("int", 1), ("int", 7), ("name", "chat"), ("name", "lobby"),
                  ("name", "roll"), ("name", ""), ("name", "src"), ("payload", b"payload")],
    "encode_frame_v2": [("int", 1), ("int", 7), ("name", "chat"), ("name", "lobby"),
                        ("name", "roll"), ("name", ""), ("name", "src"),
                        ("payload", b"payload")],
    "frame_v2_from_v1_body": [("int", 2), ("int", 9), ("name", "chat"), ("v1", V1_BODY)],
    "frame_header": [("int", 300)],
    "decode": [("v1", V1_BODY)],
    "decode_client": [("v1", V1_BODY)],
    "decode_v2": [("v2", V2_BODY)],
    "decode_client_v2": [("v2", V2_BODY)],
    "split_batch": [("batch", BATCH)],
    "encode_batch": [("bodies", [V2_BODY, V2_BODY])],
}
VALUES = {
    "name": NAME_VALUES, "payload": PAYLOAD_VALUES, "int": INT_VALUES,
    "v1": data_values(V1_BODY, V1_BODY4), "v2": data_values(V2_BODY, V2_BODY4),
    "batch": data_values(BATCH, BATCH4), "bodies": BODIES_VALUES,
}
CASES = [
    pytest.param(function, position, factory, id=f"{function}-arg{position}-{value_id}")
    for function, args in GOOD.items()
    for position, (kind, _) in enumerate(args)
    for value_id, factory in VALUES[kind]
]


def call_args(function: str, position: int, value: Any) -> list[Any]:
    args = [good for _, good in GOOD[function]]
    args[position] = value
    return args


@needs_compiled
@pytest.mark.parametrize(("function", "position", "factory"), CASES)
def test_twins_agree_on_every_argument_type(function: str, position: int, factory: Any) -> None:
    compiled = importlib.import_module("roomer._codec")
    got = outcome(getattr(compiled, function), *call_args(function, position, factory()))
    expected = outcome(getattr(pure, function), *call_args(function, position, factory()))
    assert got == expected


def test_the_matrix_covers_every_public_function() -> None:
    assert sorted(GOOD) == sorted(name for name in pure.__all__ if name != "BATCH_MAX")
    assert len(CASES) > 600


@needs_compiled
@pytest.mark.parametrize("function", sorted(GOOD))
def test_twins_agree_on_keywords_and_argument_count(function: str) -> None:
    compiled = importlib.import_module("roomer._codec")
    args = [good for _, good in GOOD[function]]
    names = pure_parameter_names(function)
    kwargs = dict(zip(names, args, strict=True))
    for impl in (compiled, pure):
        assert getattr(impl, function)(**kwargs) == getattr(pure, function)(*args)
        for wrong in (args[:-1], [*args, b"extra"]):
            with pytest.raises(TypeError):
                getattr(impl, function)(*wrong)
        with pytest.raises(TypeError):
            getattr(impl, function)(*args, unknown=1)


def pure_parameter_names(function: str) -> list[str]:
    code = getattr(pure, function).__code__
    return list(code.co_varnames[: code.co_argcount])


# --------------------------------------------------------------------------- the contract


def test_names_are_str_of_the_real_type(codec_impl: Any) -> None:
    body = codec_impl.encode(StrSub("lobby"), StrSub("é"), "", "", b"")
    assert body == codec_impl.encode("lobby", "é", "", "", b"")  # code points, not .encode()
    for bad, shown in ((b"lobby", "bytes"), (True, "bool"), (1, "int"), (None, "NoneType"),
                       (FakeStr(), "FakeStr"), (bytearray(b"x"), "bytearray")):
        for position, field in enumerate(("room", "event", "dst", "src")):
            args: list[Any] = ["r", "e", "d", "s", b"p"]
            args[position] = bad
            with pytest.raises(TypeError) as info:
                codec_impl.encode(*args)
            assert str(info.value) == f"{field} must be str, not {shown}"
        with pytest.raises(TypeError, match=f"^namespace must be str, not {shown}$"):
            codec_impl.encode_v2(0, 0, bad, "r", "e", "", "", b"")
        with pytest.raises(TypeError, match=f"^namespace must be str, not {shown}$"):
            codec_impl.frame_v2_from_v1_body(0, 0, bad, V1_BODY)


def test_surrogates_are_a_unicode_encode_error(codec_impl: Any) -> None:
    with pytest.raises(UnicodeEncodeError) as info:
        codec_impl.encode("ok", "a\ud800", "", "", b"")
    assert "surrogates not allowed" in str(info.value)
    with pytest.raises(UnicodeEncodeError):
        codec_impl.encode_v2(0, 0, "\udfff", "r", "e", "", "", b"")
    with pytest.raises(UnicodeEncodeError):
        codec_impl.encode("r", "e", "", "", "\ud800")  # a str payload too


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: BytesSub(b"raw"), b"raw"),  # contents, never __bytes__
        (lambda: BytearraySub(b"raw"), b"raw"),
        (lambda: strided(b"abcd"), b"abcd"),  # logical order
        (lambda: memoryview(b"abcdef").cast("B", (2, 3)), b"abcdef"),
        (lambda: memoryview(array.array("H", [1, 2])), array.array("H", [1, 2]).tobytes()),
        (lambda: (ctypes.c_uint8 * 3)(7, 8, 9), b"\x07\x08\x09"),
        (lambda: anonymous_mmap(b"mapped"), b"mapped"),
        (lambda: StrSub("ñ"), "ñ".encode()),
    ],
)
def test_payload_any_buffer_in_logical_order(codec_impl: Any, make: Any, expected: bytes) -> None:
    assert codec_impl.decode(codec_impl.encode("r", "e", "", "", make()))[4] == expected
    assert codec_impl.decode_v2(codec_impl.encode_v2(0, 0, "n", "r", "e", "", "", make()))[7] \
        == expected


@pytest.mark.parametrize("bad", [5, True, 1.5, None, [1], BytesOnly(), FakeBytes(), object()],
                         ids=lambda value: type(value).__name__)
def test_payload_refuses_what_is_not_bytes_like(codec_impl: Any, bad: Any) -> None:
    with pytest.raises(TypeError) as info:
        codec_impl.encode("r", "e", "", "", bad)
    assert str(info.value) == f"payload must be str or bytes-like, not {type(bad).__name__}"


def test_released_view_is_the_memoryview_error(codec_impl: Any) -> None:
    for call in (lambda: codec_impl.encode("r", "e", "", "", released()),
                 lambda: codec_impl.decode(released())):
        with pytest.raises(ValueError, match="released memoryview"):
            call()


@pytest.mark.parametrize("name", ["decode", "decode_client"])
def test_decode_reads_any_buffer(codec_impl: Any, name: str) -> None:
    expected = getattr(codec_impl, name)(V1_BODY)
    for value_id, factory in data_values(V1_BODY, V1_BODY4)[:5]:
        assert getattr(codec_impl, name)(factory()) == expected, value_id
    assert getattr(codec_impl, name)(strided(V1_BODY)) == expected
    assert getattr(codec_impl, name)(array.array("B", V1_BODY)) == expected
    padded = getattr(codec_impl, name)(V1_BODY4)
    assert getattr(codec_impl, name)(memoryview(V1_BODY4).cast("i")) == padded
    two_d = memoryview(V1_BODY4).cast("B", (4, len(V1_BODY4) // 4))
    assert getattr(codec_impl, name)(two_d) == padded


@pytest.mark.parametrize("name", ["decode", "decode_client", "decode_v2", "decode_client_v2"])
@pytest.mark.parametrize("bad", ["a str" * 10, 20, None, [0] * 29, BytesOnly(), FakeBytes()],
                         ids=lambda value: type(value).__name__)
def test_decode_refuses_what_is_not_bytes_like(codec_impl: Any, name: str, bad: Any) -> None:
    with pytest.raises(TypeError) as info:
        getattr(codec_impl, name)(bad)
    assert str(info.value) == f"data must be bytes-like, not {type(bad).__name__}"


def test_v1_body_refuses_what_is_not_bytes_like(codec_impl: Any) -> None:
    with pytest.raises(TypeError, match=r"^v1_body must be bytes-like, not str$"):
        codec_impl.frame_v2_from_v1_body(0, 0, "", V1_BODY.decode("latin-1"))


def test_integers_by_operator_index(codec_impl: Any) -> None:
    assert codec_impl.frame_header(True) == codec_impl.frame_header(1)
    assert codec_impl.frame_header(IntSub(300)) == codec_impl.frame_header(300)
    assert codec_impl.frame_header(Indexable(70000)) == codec_impl.frame_header(70000)
    expected = codec_impl.encode_v2(1, 5, "", "", "", "", "", b"")
    assert codec_impl.encode_v2(True, Indexable(5), "", "", "", "", "", b"") == expected
    assert codec_impl.encode_v2(IntSub(1), IntSub(5), "", "", "", "", "", b"") == expected
    for bad, shown in ((1.0, "float"), ("1", "str"), (None, "NoneType"), (Decimal(1), "Decimal"),
                       (BadIndex(), "BadIndex")):
        with pytest.raises(TypeError, match=f"^size must be an integer, not {shown}$"):
            codec_impl.frame_header(bad)
        with pytest.raises(TypeError, match=f"^kind must be an integer, not {shown}$"):
            codec_impl.encode_v2(bad, 1, "", "", "", "", "", b"")
        with pytest.raises(TypeError, match=f"^id must be an integer, not {shown}$"):
            codec_impl.frame_v2_from_v1_body(1, bad, "", V1_BODY)


def test_frame_header_range(codec_impl: Any) -> None:
    assert codec_impl.frame_header((1 << 63) - 1) == b"\x82\x7f" + b"\x7f" + b"\xff" * 7
    for bad, message in ((-1, "size must not be negative"), (-(1 << 100), "size must not be"),
                         (1 << 63, "size must be less than 2\\*\\*63"),
                         (1 << 100, "size must be less than 2\\*\\*63")):
        with pytest.raises(ValueError, match=message):
            codec_impl.frame_header(bad)
