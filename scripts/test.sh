#!/usr/bin/env bash
# Build the wheel, install it into a fresh venv and run the whole test suite against
# the installed package from outside the checkout; then the server, client, browser and
# HTTP tests again on the pure-Python twins (ROOMER_NO_EXTENSIONS=1; what the compiled
# pass already covered is marked compiled_pass_only). Both passes always run; a summary
# of each follows, and the exit status is non-zero if either failed. Extra arguments go
# to pytest. ROOMER_TEST_TIMEOUT_FACTOR scales every wait of the tests, and each pass runs
# in ROOMER_TEST_WORKERS processes (default 4; 0 runs it in this one) (tests/README.md).
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

# run NAME [env...] -- pytest arguments: one pass, its status in $work/NAME.status and
# its results in $work/NAME.xml, whatever it gives.
run() {
    local name=$1
    shift
    local status=0
    local started=$SECONDS
    env "$@" --junitxml="$work/$name.xml" || status=$?
    echo "$status $((SECONDS - started))" > "$work/$name.status"
}

# Most tests wait on sockets, timers and child processes rather than on a CPU: several
# processes at once, more than the cores, cut the wall time (the tests that measure
# latency scale their bounds by the CPU share their server got).
workers=${ROOMER_TEST_WORKERS:-4}
parallel=()
if [ "$workers" != 0 ]; then
    parallel=(-n "$workers")
fi

run compiled "$venv/bin/python" -m pytest -c "$repo/pyproject.toml" --rootdir "$work" \
    -p no:cacheprovider "${parallel[@]}" tests bench "$@"
# The pure-Python twins behind the whole server: every test but those marked
# compiled_pass_only (tests/conftest.py lists them and says why).
run pure ROOMER_NO_EXTENSIONS=1 "$venv/bin/python" -m pytest -c "$repo/pyproject.toml" \
    --rootdir "$work" -p no:cacheprovider -q "${parallel[@]}" -m "not compiled_pass_only" \
    tests "$@"

"$venv/bin/python" - "$work" <<'EOF'
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

work = Path(sys.argv[1])
totals = {"passed": 0, "failed": 0, "skipped": 0}
worst = 0
print("\nroomer test summary")
for name, title in (("compiled", "compiled pass"), ("pure", "pure-Python pass")):
    status, seconds = (work / f"{name}.status").read_text().split()
    worst = max(worst, int(status))
    try:
        suites = ET.parse(work / f"{name}.xml").getroot().iter("testsuite")
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        for suite in suites:
            for key in counts:
                counts[key] += int(suite.get(key, 0))
    except (OSError, ET.ParseError) as exc:
        print(f"  {title}: no results ({exc}); pytest exit status {status}")
        totals["failed"] += 1
        continue
    failed = counts["failures"] + counts["errors"]
    passed = counts["tests"] - failed - counts["skipped"]
    # pytest exits 0 or 5 (nothing collected) without a failing test; anything else
    # (an internal error, a crash) is a failure even if no test case says so.
    if failed == 0 and status not in ("0", "5"):
        failed = 1
    totals["passed"] += passed
    totals["failed"] += failed
    totals["skipped"] += counts["skipped"]
    print(f"  {title}: {passed} passed, {failed} failed, {counts['skipped']} skipped "
          f"in {seconds} s (pytest exit status {status})")
print(f"{totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped")
sys.exit(1 if totals["failed"] else 0)
EOF
