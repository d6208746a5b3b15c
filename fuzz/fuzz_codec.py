"""atheris fuzz target: the compiled codec against its pure twin, on every input.

Run by scripts/fuzz.sh, which builds roomer with AddressSanitizer, UBSan and
libFuzzer's coverage instrumentation into its own venv and runs this file there with
the sanitizer runtime preloaded. Each input goes through tests/codec_fuzzing.py's
``check_input``: v1 and v2 decoders (on bytes and other buffer types), encode round
trips, v1 body to v2 frame, and every frame read back by a hand-written RFC 6455
reader. A disagreement is an AssertionError, which atheris reports as a crash and
saves as a crash-* input; a memory error is ASan's report.

Arguments after the script are libFuzzer's (``-runs=1000000``, a corpus directory...).
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import atheris

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the shared oracle, not the checkout's roomer

import roomer  # noqa: E402
import roomer._codec as compiled  # noqa: E402

with atheris.instrument_imports(include=["roomer._codec_py", "codec_fuzzing"]):
    import codec_fuzzing

    from roomer import _codec_py as pure


def require_sanitized_build() -> None:
    """Refuse to run as "the ASan fuzz" unless the codec really is the ASan build."""
    so = Path(compiled.__file__).resolve()
    if so.parent == REPO / "roomer":
        sys.exit(f"fuzz: {so} is the checkout's own build, not the sanitized one")
    process = ctypes.CDLL(None)
    for symbol in ("__asan_init", "__ubsan_handle_add_overflow",
                   "__sanitizer_cov_8bit_counters_init", "LLVMFuzzerRunDriver"):
        if not hasattr(process, symbol):
            sys.exit(f"fuzz: {symbol} is not loaded: LD_PRELOAD the sanitizer runtime")
    symbols = so.read_bytes()
    for needed in (b"__asan_report_load", b"__ubsan_handle_", b"__sanitizer_cov"):
        if needed not in symbols:
            sys.exit(f"fuzz: {so.name} was not built with {needed.decode()}*")
    print(f"fuzz: sanitized codec {so} (roomer from {Path(roomer.__file__).parent})",
          flush=True)


def test_one_input(data: bytes) -> None:
    codec_fuzzing.check_input(compiled, pure, data)


def main() -> None:
    if os.environ.get("FUZZ_REQUIRE_ASAN") == "1":
        require_sanitized_build()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
