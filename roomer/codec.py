"""The one place that picks the compiled codec or its pure-Python twin.

``ROOMER_NO_EXTENSIONS=1`` forces the pure one; otherwise the compiled module is
used when it was built, and ``COMPILED`` says which one is active.
"""

from __future__ import annotations

import os

__all__ = ["COMPILED", "decode", "decode_client", "encode", "encode_frame", "frame_header"]

if os.environ.get("ROOMER_NO_EXTENSIONS") == "1":
    from ._codec_py import decode, decode_client, encode, encode_frame, frame_header

    COMPILED = False
else:
    try:
        from ._codec import decode, decode_client, encode, encode_frame, frame_header

        COMPILED = True
    except ImportError:  # built without a C compiler: the twin is the same contract
        from ._codec_py import decode, decode_client, encode, encode_frame, frame_header

        COMPILED = False
