# Sourced by the before/after benchmark scripts: `. scripts/before_tree.sh REV FILE...`
# checks REV out beside this tree ($work/before, removed on exit), builds both in place,
# and copies this tree's bench FILEs into $work, so both sides run the same benchmark and
# each imports its own roomer. Sets repo, python and work.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
work=$(mktemp -d)
cleanup() {
    git -C "$repo" worktree remove --force "$work/before" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
git -C "$repo" worktree add -q --detach "$work/before" "$1"
for tree in "$work/before" "$repo"; do
    (cd "$tree" && "$python" setup.py -q build_ext --inplace >/dev/null 2>&1)
done
for file in "${@:2}"; do
    cp "$repo/bench/$file" "$work/"
done
