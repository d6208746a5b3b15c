"""``python -m roomer.benchmark``: the same as ``roomer bench``."""

import sys

from roomer.benchmark.harness import main

sys.exit(main())
