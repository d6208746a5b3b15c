#!/usr/bin/env bash
# Install a built wheel as a user would, on a machine where no compiler can run, and
# smoke-test it: a fresh venv, a PATH that holds no compiler (only the venv's bin), CC,
# CXX and LDSHARED set to /bin/false, and every package taken as a wheel
# (--only-binary=:all:), roomer's dependencies first on their own (what `pip install
# roomer` brings), then its [test,bench] extras. scripts/wheel_smoke.py then checks that
# the compiled extensions loaded (roomer.COMPILED) and runs its part of the suite from a
# folder outside the checkout.
#
#   bash scripts/check_wheel.sh [WHEEL] [PYTEST ARGS...]
# WHEEL defaults to the manylinux wheel for PYTHON (python3) in dist/, made by
# scripts/build_dist.sh.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}

fail() { echo "check_wheel: $*" >&2; exit 1; }

if [ $# -ge 1 ] && [[ $1 == *.whl ]]; then
    wheel=$1
    shift
else
    tag=$("$python" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
    wheel=$(ls "$repo"/dist/roomer-*-"$tag"-"$tag"-*manylinux*.whl 2>/dev/null | head -1)
    [ -n "$wheel" ] || fail "no $tag manylinux wheel in dist/: run scripts/build_dist.sh"
fi
wheel=$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m venv "$work/venv"
venv=$work/venv
# The folder the smoke test runs in, laid out as cibuildwheel's test-sources lay it.
mkdir -p "$work/run/scripts"
cp -r "$repo/tests" "$repo/pyproject.toml" "$work/run/"
cp "$repo/scripts/wheel_smoke.py" "$work/run/scripts/"

# Every command below runs with this environment: nothing on the PATH but the venv.
nocc() {
    env PATH="$venv/bin" CC=/bin/false CXX=/bin/false LDSHARED=/bin/false \
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"
}
for compiler in cc gcc c++ g++ clang; do
    if nocc "$venv/bin/python" -c "import shutil, sys; sys.exit(shutil.which('$compiler') is None)"
    then
        fail "$compiler is still on the PATH"
    fi
done

nocc "$venv/bin/python" -m pip install -q --only-binary=:all: "$wheel" \
    || fail "roomer and its dependencies do not install from wheels alone"
nocc "$venv/bin/python" -m pip install -q --only-binary=:all: "$wheel[test,bench]" \
    || fail "the [test,bench] extras do not install from wheels alone"
cd "$work/run"
nocc "$venv/bin/python" scripts/wheel_smoke.py "$@"
