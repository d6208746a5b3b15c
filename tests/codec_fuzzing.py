"""The codec fuzz oracle: one input, every codec function, compiled against pure.

Shared by the short fuzz in the normal test run (tests/test_codec_fuzz.py) and the
long one (fuzz/fuzz_codec.py under atheris, scripts/fuzz.sh). ``check_input`` raises
AssertionError on any disagreement between the twins, on a round trip that does not
give the input back, or on a frame that a hand-written RFC 6455 §5.2 reader does not
read as one unmasked, final, binary frame holding exactly the body.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterator
from typing import Any

from roomer import ProtocolError

U32_MAX = 0xFFFFFFFF
DECODERS = ("decode", "decode_client", "decode_v2", "decode_client_v2")
# Lengths a hostile client would claim (besides "just past the end", made per input).
ADVERSARIAL_LENGTHS = (0, 1, 19, 20, 28, 29, 125, 126, 65535, 65536,
                       0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, U32_MAX)
BAD_UTF8 = (b"\xff", b"\xc3", b"ok\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf",
            b"\xe2\x82", b"a\x00\xfe")
NAMES = ("", "lobby", "join", "chat", "root", "match/42", "Ñandú ☃", "\U0001f600", "x" * 130)


def outcome(fn: Callable[..., Any], *args: Any) -> tuple:
    """What a call returned or raised, in a form that compares across the twins."""
    try:
        return ("ok", fn(*args))
    except ProtocolError as err:
        return ("protocol", str(err), err.code, err.namespace, err.room, err.event,
                err.kind, err.id)
    except Exception as err:  # any other error must match too
        return ("error", type(err), str(err))


def same(compiled: Any, pure: Any, name: str, *args: Any) -> tuple:
    """Call ``name`` on both twins; assert they agree; return the outcome."""
    got = outcome(getattr(compiled, name), *args)
    expected = outcome(getattr(pure, name), *args)
    assert got == expected, f"{name}{args!r:.300}: compiled {got!r:.300} != pure {expected!r:.300}"
    return got


# --------------------------------------------------------------------------- RFC 6455


def read_frame_header(frame: bytes) -> tuple[int, int, int, int, int, int]:
    """RFC 6455 §5.2, written from the RFC: (FIN, RSV1-3, opcode, MASK, length, header size).

    Checks the rules a sender must follow: the minimal length encoding, and the most
    significant bit of a 64-bit length being 0.
    """
    assert len(frame) >= 2, "a frame has at least 2 bytes"
    fin, rsv, opcode = frame[0] >> 7, (frame[0] >> 4) & 0x7, frame[0] & 0x0F
    mask, length, pos = frame[1] >> 7, frame[1] & 0x7F, 2
    if length == 126:
        assert len(frame) >= 4
        length, pos = int.from_bytes(frame[2:4], "big"), 4
        assert length >= 126, "16-bit length used for a length that fits in 7 bits"
    elif length == 127:
        assert len(frame) >= 10
        length, pos = int.from_bytes(frame[2:10], "big"), 10
        assert length >> 63 == 0, "the most significant bit of a 64-bit length must be 0"
        assert length >= 65536, "64-bit length used for a length that fits in 16 bits"
    if mask:
        pos += 4
    return fin, rsv, opcode, mask, length, pos


def assert_server_frame(frame: bytes, body: bytes) -> None:
    """``frame`` is exactly one final, unmasked, binary frame whose payload is ``body``."""
    fin, rsv, opcode, mask, length, pos = read_frame_header(frame)
    assert (fin, rsv, opcode, mask) == (1, 0, 0x2, 0), (fin, rsv, opcode, mask)
    assert length == len(frame) - pos == len(body)
    assert frame[pos:] == body


def check_frame_header(compiled: Any, pure: Any, size: Any) -> None:
    result = same(compiled, pure, "frame_header", size)
    if result[0] == "ok":
        fin, rsv, opcode, mask, length, pos = read_frame_header(result[1])
        assert (fin, rsv, opcode, mask, length, pos) == (1, 0, 2, 0, size, len(result[1]))


# --------------------------------------------------------------------------- the oracle


def _views(data: bytes, selector: int) -> list[Any]:
    """Other buffer types holding the same bytes (one per input, to keep inputs cheap)."""
    choice = selector % 4
    if choice == 0:
        return [bytearray(data)]
    if choice == 1:
        return [memoryview(b"\x00\x01" + data + b"\x02")[2:-1]]  # non-zero offset
    if choice == 2:
        spread = bytearray(2 * len(data))
        spread[::2] = data
        return [memoryview(spread)[::2]]  # strided: copied in logical order
    return [memoryview(data)]


def _names_from(data: bytes, count: int) -> list[str]:
    """``count`` str names from raw bytes; surrogatepass lets lone surrogates through."""
    parts = data.split(b"\x00")
    names = []
    for i in range(count):
        raw = parts[i] if i < len(parts) else b""
        try:
            names.append(raw.decode("utf-8", "surrogatepass"))
        except UnicodeDecodeError:  # any code point below 256 then
            names.append(raw.decode("latin-1"))
    return names


def check_input(compiled: Any, pure: Any, data: bytes) -> None:
    """Every codec function on ``data`` (and on names and numbers made from it)."""
    results = {name: same(compiled, pure, name, data) for name in DECODERS}
    for view in _views(data, data[0] if data else 0):
        for name in DECODERS:
            assert same(compiled, pure, name, view) == results[name], name

    v1 = results["decode"]
    if v1[0] == "ok":
        # decode_client is decode without src, and encode gives the input back.
        room, event, dst, src, payload = v1[1]
        assert results["decode_client"] == ("ok", (room, event, dst, payload))
        assert same(compiled, pure, "encode", *v1[1]) == ("ok", data)
        frame = same(compiled, pure, "encode_frame", *v1[1])
        assert frame[0] == "ok"
        assert_server_frame(frame[1], data)
        # Any valid v1 body becomes a v2 frame by prefix and namespace.
        kind = data[-1] % 4 if data else 0
        mid = 0 if kind == 0 else (int.from_bytes(data[:4], "big") or 1)
        namespace = room[::-1]
        built = same(compiled, pure, "frame_v2_from_v1_body", kind, mid, namespace, data)
        assert built[0] == "ok"
        body = built[1][read_frame_header(built[1])[5]:]
        assert_server_frame(built[1], body)
        assert body.endswith(data)
        assert same(compiled, pure, "decode_v2", body) == (
            "ok", (kind, mid, namespace, room, event, dst, src, payload))
    elif v1[0] == "protocol":
        assert v1[6] is None and v1[7] is None and v1[3] is None  # v1: no v2 context
        if v1[2] == "malformed":
            # src is bounds-checked by decode_client too; only names may differ.
            assert results["decode_client"] == v1

    v2 = results["decode_v2"]
    if v2[0] == "ok":
        kind, mid, namespace, room, event, dst, src, payload = v2[1]
        assert results["decode_client_v2"] == (
            "ok", (kind, mid, namespace, room, event, dst, payload))
        assert same(compiled, pure, "encode_v2", *v2[1]) == ("ok", data)
        frame = same(compiled, pure, "encode_frame_v2", *v2[1])
        assert frame[0] == "ok"
        assert_server_frame(frame[1], data)
        # The v1 body is the suffix after kind, id and the namespace field.
        suffix = data[9 + len(namespace.encode()):]
        assert same(compiled, pure, "decode", suffix) == (
            "ok", (room, event, dst, src, payload))
        assert same(compiled, pure, "frame_v2_from_v1_body", kind, mid, namespace,
                    suffix) == frame
    elif v2[0] == "protocol" and v2[2] == "malformed":
        assert results["decode_client_v2"] == v2

    # Encoding arbitrary names (lone surrogates, any code point) and a raw payload.
    names = _names_from(data, 5)
    body = same(compiled, pure, "encode", *names[:4], data)
    frame = same(compiled, pure, "encode_frame", *names[:4], data)
    if body[0] == "ok":
        assert frame[0] == "ok"
        assert_server_frame(frame[1], body[1])
        assert same(compiled, pure, "decode", body[1]) == ("ok", (*names[:4], data))
    else:
        assert frame == body
    kind, mid = (data[0] % 6, int.from_bytes(data[1:5], "big")) if len(data) >= 5 else (0, 0)
    body = same(compiled, pure, "encode_v2", kind, mid, *names, data)
    frame = same(compiled, pure, "encode_frame_v2", kind, mid, *names, data)
    if body[0] == "ok":
        assert_server_frame(frame[1], body[1])
        assert same(compiled, pure, "decode_v2", body[1]) == ("ok", (kind, mid, *names, data))
    else:
        assert frame == body

    # A frame header for sizes around the encoding boundaries and the data's own.
    raw = int.from_bytes(data[:9], "big")
    for size in (len(data), raw, raw >> 1, raw & 0xFFFF, raw & 0x1FFFF, -raw):
        check_frame_header(compiled, pure, size)


# --------------------------------------------------------------------------- corpus


def _u32(n: int) -> bytes:
    return struct.pack(">I", n)


def _raw(fields: list[bytes], lengths: list[int] | None = None) -> bytes:
    lengths = lengths or [len(f) for f in fields]
    return b"".join(_u32(n) + f for n, f in zip(lengths, fields, strict=True))


def _name(rng: random.Random) -> bytes:
    pick = rng.random()
    if pick < 0.1:
        return rng.choice(BAD_UTF8)
    if pick < 0.2:
        return rng.randbytes(rng.randrange(0, 6))
    return rng.choice(NAMES).encode()


def _fields(rng: random.Random, v2: bool) -> list[bytes]:
    names = [_name(rng) for _ in range(5 if v2 else 4)]
    return [*names, rng.randbytes(rng.choice((0, 0, 1, 3, 17, 130)))]


def _mutate(rng: random.Random, data: bytes, field_starts: list[int]) -> bytes:
    out = bytearray(data)
    how = rng.randrange(7)
    if how == 0 and out:  # truncate
        del out[rng.randrange(len(out)):]
    elif how == 1:  # trailing bytes
        out += rng.randbytes(rng.randrange(1, 6))
    elif how == 2 and out:  # flip a byte
        out[rng.randrange(len(out))] ^= rng.randrange(1, 256)
    elif how in (3, 4) and field_starts:  # a length field set to a hostile or near value
        at = rng.choice(field_starts)
        if at + 4 <= len(out):
            current = int.from_bytes(out[at:at + 4], "big")
            left = len(out) - at - 4
            value = rng.choice((*ADVERSARIAL_LENGTHS, left, left + 1, left - 1,
                                current + 1, max(current - 1, 0)))
            out[at:at + 4] = _u32(min(max(value, 0), U32_MAX))
    elif how == 5:  # a byte inserted or deleted
        at = rng.randrange(len(out) + 1)
        if rng.random() < 0.5 or not out[at:]:
            out[at:at] = bytes([rng.randrange(256)])
        else:
            del out[at]
    return bytes(out)


def _length_offsets(fields: list[bytes], start: int) -> list[int]:
    offsets, pos = [], start
    for field in fields:
        offsets.append(pos)
        pos += 4 + len(field)
    return offsets


TEXT_LIKE = (
    b"", b"hello", b'{"room":"lobby","event":"join"}', b"lobby join", b"GET / HTTP/1.1\r\n\r\n",
    "héllo ☃".encode(), b"00000005 6c6f626279 00000004 6a6f696e 00000000 00000000 00000000",
    b"\x00" * 19, b"\x00" * 20, b"\x00" * 28, b"\x00" * 29, b"\xff" * 29, b"\x01" + b"\x00" * 28,
)


def corpus(seed: int, count: int) -> Iterator[bytes]:
    """``count`` inputs, the same ones for the same seed: random, v1/v2-shaped and mutated."""
    rng = random.Random(seed)
    yield from TEXT_LIKE
    for _ in range(count - len(TEXT_LIKE)):
        pick = rng.random()
        if pick < 0.15:
            yield rng.randbytes(rng.randrange(0, 72))
        elif pick < 0.2:  # text-frame-like: printable ASCII / UTF-8 text
            yield "".join(rng.choice(" {}\":,abcdefjlmnoyé☃0123") for _ in range(
                rng.randrange(0, 60))).encode()
        elif pick < 0.6:
            fields = _fields(rng, False)
            data = _raw(fields)
            yield data if rng.random() < 0.3 else _mutate(rng, data, _length_offsets(fields, 0))
        else:
            fields = _fields(rng, True)
            kind = rng.choice((0, 0, 1, 2, 3, rng.randrange(256)))
            mid = 0 if kind == 0 and rng.random() < 0.8 else rng.choice(
                (0, 1, 2, 0xFFFF, U32_MAX, rng.randrange(U32_MAX + 1)))
            data = bytes([kind]) + _u32(mid) + _raw(fields)
            yield data if rng.random() < 0.3 else _mutate(rng, data, _length_offsets(fields, 5))
