#!/usr/bin/env bash
# Run bench/test_micro_relay.py (the server's v1 relay path) against an earlier commit and
# against this tree, alternately (before, after, before, after...) in one run, and print
# the median ns per delivery of each side and their ratio. The benchmark file itself is
# this tree's for both sides; each side imports its own roomer (built in place).
#   bash scripts/bench_before_after.sh REV [ROUNDS]
set -euo pipefail
rev=${1:?usage: bench_before_after.sh REV [rounds]}
rounds=${2:-3}
. "$(dirname "$0")/before_tree.sh" "$rev" test_micro_relay.py test_micro_fanout.py \
    implementations.py

for i in $(seq "$rounds"); do
    for side in before after; do
        tree=$repo
        [ "$side" = before ] && tree=$work/before
        (cd "$work" && PYTHONPATH=$tree "$python" -m pytest -q -p no:cacheprovider \
            test_micro_relay.py --benchmark-enable --benchmark-warmup=on \
            --benchmark-max-time=1 --benchmark-json="$work/$side-$i.json" >/dev/null)
    done
done

"$python" - "$work" "$rounds" "$rev" <<'EOF'
import json, statistics, sys
work, rounds, rev = sys.argv[1], int(sys.argv[2]), sys.argv[3]
per = {}
for side in ("before", "after"):
    for i in range(1, rounds + 1):
        for b in json.load(open(f"{work}/{side}-{i}.json"))["benchmarks"]:
            items = b["extra_info"].get("items", 1)
            per.setdefault(b["group"], {}).setdefault(side, []).append(
                b["stats"]["median"] * 1e9 / items)
print(f"v1 relay path, median ns per delivery over {rounds} alternating rounds "
      f"(before = {rev}, after = this tree)")
print(f"{'group':<26} {'before':>9} {'after':>9} {'after/before':>13}")
for group in sorted(per):
    before = statistics.median(per[group]["before"])
    after = statistics.median(per[group]["after"])
    print(f"{group:<26} {before:>9.1f} {after:>9.1f} {after / before:>12.3f}x")
EOF
