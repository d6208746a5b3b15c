"""The one place that picks the compiled fan-out engine or its pure-Python twin.

``ROOMER_NO_EXTENSIONS=1`` forces the pure one; ``COMPILED`` says which is active.
"""

from __future__ import annotations

import os

__all__ = ["BUILT_FOR_PICOWS", "COMPILED", "Fanout", "InboundCore", "Peer", "Relay"]

try:
    if os.environ.get("ROOMER_NO_EXTENSIONS") == "1":
        raise ImportError("ROOMER_NO_EXTENSIONS=1 asks for the pure-Python twin")
    from ._fanout import BUILT_FOR_PICOWS, Fanout, InboundCore, Peer, Relay

    COMPILED = True
except ImportError:  # forced, or built without a C compiler: the twin is the same contract
    # (a picows mismatch raises ExtensionMismatch instead: never a silent fallback)
    from ._fanout_py import BUILT_FOR_PICOWS, Fanout, InboundCore, Peer, Relay

    COMPILED = False
