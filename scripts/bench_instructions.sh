#!/usr/bin/env bash
# The server's v1 relay path (bench/relay_instructions.py), an earlier commit against this
# tree, in instructions per delivery counted by valgrind's callgrind: unlike seconds on a
# shared machine, the count is the same run after run (string hashing seeded, address
# randomization off: the allocator's paths depend on both). Each case runs twice, with no
# relays and with RELAYS, and the difference is divided by the deliveries. One thing still
# moves it: where buffers land (memcpy of a 1 KiB frame takes other paths at other
# alignments, and the trees' paths differ in length): the 1 KiB cases move by up to 8%
# between two checkouts of the same commit; the 64 B ones by under 1%.
#   bash scripts/bench_instructions.sh REV
set -euo pipefail
rev=${1:?usage: bench_instructions.sh REV}
. "$(dirname "$0")/before_tree.sh" "$rev" relay_instructions.py test_micro_relay.py \
    test_micro_fanout.py implementations.py

count() {  # tree members size relays -> instructions
    PYTHONHASHSEED=0 PYTHONPATH=$1 setarch -R valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
        "$python" "$work/relay_instructions.py" "$2" "$3" "$4" 2>&1 \
        | awk '/Collected/ {print $4}'
}

printf "v1 relay path, instructions per delivery (before = %s, after = this tree)\n" "$rev"
printf "%-24s %10s %10s %13s\n" case before after after/before
for case in "100 64 1000" "100 1024 1000" "1000 64 100" "1000 1024 100"; do
    set -- $case
    per=()
    for tree in "$work/before" "$repo"; do
        base=$(count "$tree" "$1" "$2" 0)
        total=$(count "$tree" "$1" "$2" "$3")
        per+=("$(( (total - base) / ($1 * $3) ))")
    done
    printf "%-24s %10s %10s %12.4fx\n" "$1 x $2 B" "${per[0]}" "${per[1]}" \
        "$(echo "${per[1]} / ${per[0]}" | bc -l)"
done
