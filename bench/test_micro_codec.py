"""Codec micro-benchmarks: compiled (roomer._codec) vs pure (roomer._codec_py).

One benchmark call = one message. Groups put both twins of the same operation and
payload size side by side; the closing table (bench/conftest.py) gives ns per message
and the pure/compiled ratio. Run:  python -m pytest bench/ --benchmark-enable
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import pytest
from implementations import implementations

SIZES = [16, 256, 4096, 65536]
ROOM, EVENT, DST, SRC = "lobby", "chat", "", "6f1c1d5e-8a43-4b47-9a0b-2f8c1e0d7a55"
OPS = ["encode", "encode_frame", "decode", "decode_client"]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("impl", implementations("codec"))
def test_codec(benchmark: Any, impl: str, op: str, size: int) -> None:
    codec = importlib.import_module(impl)
    payload = os.urandom(size)
    benchmark.group = f"codec {op} {size} B"
    benchmark.extra_info["items"] = 1
    if op in ("encode", "encode_frame"):
        fn = getattr(codec, op)
        result = benchmark(fn, ROOM, EVENT, DST, SRC, payload)
        assert result.endswith(payload)
    else:
        body = codec.encode(ROOM, EVENT, DST, SRC, payload)
        result = benchmark(getattr(codec, op), body)
        assert result[-1] == payload


NAMESPACE, KIND, ID = "chat", 1, 0x01020304
OPS_V2 = ["encode_v2", "encode_frame_v2", "decode_v2", "decode_client_v2",
          "frame_v2_from_v1_body"]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("op", OPS_V2)
@pytest.mark.parametrize("impl", implementations("codec"))
def test_codec_v2(benchmark: Any, impl: str, op: str, size: int) -> None:
    codec = importlib.import_module(impl)
    payload = os.urandom(size)
    benchmark.group = f"codec {op} {size} B"
    benchmark.extra_info["items"] = 1
    if op in ("encode_v2", "encode_frame_v2"):
        result = benchmark(getattr(codec, op), KIND, ID, NAMESPACE, ROOM, EVENT, DST, SRC, payload)
        assert result.endswith(payload)
    elif op == "frame_v2_from_v1_body":
        # the broadcast path: one v1 body already encoded, framed again for v2 receivers
        body = codec.encode(ROOM, EVENT, DST, SRC, payload)
        result = benchmark(codec.frame_v2_from_v1_body, KIND, ID, NAMESPACE, body)
        assert result == codec.encode_frame_v2(KIND, ID, NAMESPACE, ROOM, EVENT, DST, SRC, payload)
    else:
        body = codec.encode_v2(KIND, ID, NAMESPACE, ROOM, EVENT, DST, SRC, payload)
        result = benchmark(getattr(codec, op), body)
        assert result[-1] == payload and result[:3] == (KIND, ID, NAMESPACE)
