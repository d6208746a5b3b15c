#!/usr/bin/env bash
# Build the wheel, install it into a fresh venv and run the whole test suite against
# the installed package from outside the checkout; then the server, client, browser and
# HTTP tests again on the pure-Python twins (ROOMER_NO_EXTENSIONS=1; what the compiled
# pass already covered is marked compiled_pass_only). Extra arguments go to pytest.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${ROOMER_TEST_VENV:-$repo/.venv-test}
python=${PYTHON:-python3}

rm -rf "$venv" "$repo/dist"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip wheel -q --no-deps -w "$repo/dist" "$repo"
wheel=$(ls "$repo"/dist/roomer-*.whl)
# [browser] is Playwright for tests/browser, which drives the system's Chromium
# (Debian's chromium package); without that browser those tests skip (fail under CI).
"$venv/bin/python" -m pip install -q "$wheel[test,bench,browser]"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$repo/tests" "$repo/bench" "$work/"
cd "$work"
export ROOMER_TEST_INSTALLED=1
"$venv/bin/python" -m pytest -c "$repo/pyproject.toml" --rootdir "$work" -p no:cacheprovider \
    tests bench "$@"
# The pure-Python twins behind the whole server: every test but those marked
# compiled_pass_only (tests/conftest.py lists them and says why).
ROOMER_NO_EXTENSIONS=1 "$venv/bin/python" -m pytest -c "$repo/pyproject.toml" \
    --rootdir "$work" -p no:cacheprovider -q -m "not compiled_pass_only" tests "$@"
