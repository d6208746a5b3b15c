"""The short codec fuzz: a fixed-seed corpus, compiled against pure.

The long run is scripts/fuzz.sh (atheris, 10^6 inputs, AddressSanitizer build); both
use the oracle in tests/codec_fuzzing.py. Here ~20,000 inputs: random bytes, text-frame
-like input, v1 and v2 bodies with invalid UTF-8 in each name and lengths set to
0xFFFFFFFF, 0x7FFFFFFF, just past the end and so on.
"""

from __future__ import annotations

import importlib
import os
import re
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from codec_fuzzing import ADVERSARIAL_LENGTHS, check_input, corpus, outcome

from roomer import _codec_py as pure

PURE_ONLY = os.environ.get("ROOMER_NO_EXTENSIONS") == "1"
needs_compiled = pytest.mark.skipif(PURE_ONLY, reason="ROOMER_NO_EXTENSIONS=1 forces pure")
SEED = 6
COUNT = 20_000


@needs_compiled
def test_compiled_agrees_with_pure_on_the_corpus() -> None:
    compiled = importlib.import_module("roomer._codec")
    assert compiled.__file__.endswith((".so", ".pyd"))
    checked = 0
    for data in corpus(SEED, COUNT):
        check_input(compiled, pure, data)
        checked += 1
    assert checked == COUNT


def test_each_twin_round_trips_and_frames_the_corpus(codec_impl: Any) -> None:
    """Against itself: what parity cannot see (both twins wrong the same way) is caught
    by the round trips and the RFC 6455 reader."""
    for data in corpus(SEED + 1, COUNT // 4):
        check_input(codec_impl, codec_impl, data)


def test_corpus_reaches_every_outcome() -> None:
    """The corpus is not vacuous: each kind of result and fault shows up many times."""
    seen: Counter[str] = Counter()
    claims: Counter[int] = Counter()
    for data in corpus(SEED, COUNT):
        for name in ("decode", "decode_v2"):
            result = outcome(getattr(pure, name), data)
            seen[f"{name} {result[0] if result[0] == 'ok' else result[2]}"] += 1
            claim = re.search(r"length (\d+) runs", result[1]) if result[0] != "ok" else None
            if claim:
                claims[int(claim.group(1))] += 1
            if result[0] == "protocol" and "is not valid UTF-8" in result[1]:
                seen[f"{name} bad {result[1].split()[0]}"] += 1
    for key in ("decode ok", "decode malformed", "decode invalid_name",
                "decode_v2 ok", "decode_v2 malformed", "decode_v2 invalid_name"):
        assert seen[key] >= 200, (key, seen)
    for field in ("room", "event", "dst", "src"):
        assert seen[f"decode bad {field}"] >= 20, (field, seen)
    for field in ("namespace", "room", "event", "dst", "src"):
        assert seen[f"decode_v2 bad {field}"] >= 20, (field, seen)
    for length in (0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF):
        assert length in ADVERSARIAL_LENGTHS
        assert claims[length] >= 20, (hex(length), claims.most_common(10))


def test_the_oracle_catches_a_divergence() -> None:
    """A twin that differs in one error text is reported: the check can fail."""

    def decode_v2(data: Any) -> Any:
        try:
            return pure.decode_v2(data)
        except ValueError as err:
            if "runs past the end" in str(err):
                raise type(err)(str(err).replace("past", "beyond")) from None
            raise

    broken = SimpleNamespace(**{name: getattr(pure, name) for name in pure.__all__})
    broken.decode_v2 = decode_v2
    failures = 0
    for data in corpus(SEED, 2000):
        try:
            check_input(broken, pure, data)
        except AssertionError:
            failures += 1
    assert failures >= 50
