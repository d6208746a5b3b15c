#!/usr/bin/env bash
# The long codec fuzz: build roomer ONCE with AddressSanitizer, UBSan and
# libFuzzer coverage into its own venv, then run fuzz/fuzz_codec.py (atheris) on that
# build for RUNS inputs (default 10^6), compiled codec against the pure twin.
#
#   bash scripts/fuzz.sh                 # 10^6 inputs
#   RUNS=20000 bash scripts/fuzz.sh      # a quick one
#   bash scripts/fuzz.sh -max_total_time=600   # extra arguments go to libFuzzer
#
# Environment: RUNS, SEED (libFuzzer's -seed, default 1), FUZZ_DIR (build dir, default
# .fuzz/ in the checkout), FUZZ_SRC (the tree to build, default this checkout: point it
# at a patched copy to fuzz that), CLANG (default: the newest clang-NN found), PYTHON.
# Needs clang with its compiler-rt (Debian: clang-16 libclang-rt-16-dev); as root it
# installs them with apt-get when no clang is found. atheris is built from source
# against that clang (a few minutes, once; pip caches the wheel), because the PyPI
# wheels do not ship the asan_with_fuzzer.so runtime that native fuzzing needs.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
src=$(cd "${FUZZ_SRC:-$repo}" && pwd)
dir=${FUZZ_DIR:-$repo/.fuzz}
runs=${RUNS:-1000000}
python=${PYTHON:-python3}
atheris_version=3.0.0

find_clang() {
    for c in ${CLANG:-} clang-19 clang-18 clang-17 clang-16 clang-15 clang-14 clang; do
        if command -v "$c" >/dev/null && "$c" -print-file-name=libclang_rt.fuzzer_no_main-x86_64.a \
                | grep -q /; then
            command -v "$c"; return 0
        fi
    done
    return 1
}
if ! clang=$(find_clang); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "fuzz: no clang with libFuzzer found; installing clang-16 libclang-rt-16-dev"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            clang-16 libclang-rt-16-dev >/dev/null
        clang=$(find_clang)
    else
        echo "fuzz: needs clang with compiler-rt (e.g. apt-get install clang-16 libclang-rt-16-dev)" >&2
        exit 2
    fi
fi
echo "fuzz: $("$clang" --version | head -1) at $clang"

venv=$dir/venv
mkdir -p "$dir"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip "setuptools>=77" wheel
fi
vpy=$venv/bin/python
"$vpy" -m pip install -q "Cython>=3,<4" "picows>=2.3.1,<2.4" "uvloop>=0.19"
site=$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ ! -f "$site/asan_with_fuzzer.so" ]; then
    echo "fuzz: building atheris $atheris_version from source against $clang"
    CLANG_BIN=$clang "$vpy" -m pip install -q --force-reinstall --no-binary atheris \
        "atheris==$atheris_version"
fi
runtime=$site/asan_with_fuzzer.so
test -f "$runtime"

# One sanitized build, from a clean copy of the sources (no stale objects or .so).
build=$dir/build
rm -rf "$build" && mkdir -p "$build/src"
(cd "$src" && tar cf - --exclude='*.so' --exclude='*.c' --exclude=__pycache__ \
    setup.py pyproject.toml README.md roomer) | tar xf - -C "$build/src"
sanitize="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined"
echo "fuzz: building roomer from $src with $sanitize"
if ! CC=$clang LDSHARED="$clang -shared" CFLAGS="$sanitize -fno-omit-frame-pointer -g -O1" \
        LDFLAGS="$sanitize" "$vpy" -m pip wheel -q --no-build-isolation --no-deps \
        -w "$build/dist" "$build/src" >"$build/build.log" 2>&1; then
    cat "$build/build.log" >&2; exit 1
fi
"$vpy" -m pip install -q --force-reinstall --no-deps "$build"/dist/roomer-*.whl
so=$(ls "$site"/roomer/_codec*.so)
imports() { nm -D "$so" | grep -c " U $1"; }
echo "fuzz: $so imports $(imports __asan_) ASan, $(imports __ubsan_handle) UBSan and" \
    "$(imports __sanitizer_cov) coverage symbols"

# A seed corpus from the short fuzz's generator; libFuzzer adds what it finds.
corpus=$build/corpus
mkdir -p "$corpus"
PYTHONPATH=$repo/tests "$vpy" - "$corpus" <<'EOF'
import hashlib, sys
from pathlib import Path
from codec_fuzzing import corpus
for data in corpus(6, 500):
    (Path(sys.argv[1]) / hashlib.sha1(data).hexdigest()).write_bytes(data)
EOF

cd "$build"  # away from the checkout: `import roomer` is the sanitized install
export LD_PRELOAD=$runtime
export ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:halt_on_error=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export PYTHONMALLOC=malloc  # every object through malloc, so ASan guards its bounds
export FUZZ_REQUIRE_ASAN=1
started=$(date +%s)
set +e
"$vpy" "$repo/fuzz/fuzz_codec.py" -runs="$runs" -seed="${SEED:-1}" -max_len=4096 \
    -print_final_stats=1 -artifact_prefix="$build/" "$@" "$corpus" 2>&1 | tee "$build/fuzz.log"
status=${PIPESTATUS[0]}
set -e
echo "fuzz: exit $status after $(( $(date +%s) - started )) s; log $build/fuzz.log"
exit "$status"
