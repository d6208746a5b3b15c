"""The one place that picks the compiled fan-out engine or its pure-Python twin.

``ROOMER_NO_EXTENSIONS=1`` forces the pure one; ``COMPILED`` says which is active.
"""

from __future__ import annotations

import os

__all__ = ["COMPILED", "Fanout", "Peer"]

if os.environ.get("ROOMER_NO_EXTENSIONS") == "1":
    from ._fanout_py import Fanout, Peer

    COMPILED = False
else:
    try:
        from ._fanout import Fanout, Peer

        COMPILED = True
    except ImportError:  # built without a C compiler: the twin is the same contract
        from ._fanout_py import Fanout, Peer

        COMPILED = False
