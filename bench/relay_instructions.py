"""``python bench/relay_instructions.py MEMBERS SIZE RELAYS``: the v1 relay path of
test_micro_relay.py, RELAYS times after a warm-up, for valgrind's callgrind to count
(scripts/bench_instructions.sh): instructions do not move with the machine's load."""

import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_micro_relay import _body, _core_with_room

members, size, relays = (int(arg) for arg in sys.argv[1:4])
core, sender, loop = _core_with_room(members)
data = _body("lobby", "chat", b"x" * size)
dispatch = core.router.dispatch
# A cycle collection lands wherever the count of allocations since the last one says,
# which differs between trees: none in the counted part.
gc.collect()
gc.disable()
for _ in range(20 + relays):
    dispatch(sender, data)
    loop.turn()
