"""End-to-end lobby fan-out: roomer vs peer servers (the same as ``roomer bench``).

python bench/lobby.py --quick
python bench/lobby.py --n 100,1000,5000 --payload 64,1024 --json results.json
python bench/lobby.py --game [--sweep]          # many small rooms at a tick rate
python bench/lobby.py --connections 20000       # many connections in one server process
"""

import sys
from pathlib import Path

# Run from a source checkout without installing: import the roomer next to this script.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from roomer.benchmark.harness import main

if __name__ == "__main__":
    sys.exit(main())
