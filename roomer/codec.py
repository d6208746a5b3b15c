"""The one place that picks the compiled codec or its pure-Python twin.

``ROOMER_NO_EXTENSIONS=1`` forces the pure one; otherwise the compiled module is
used when it was built, and ``COMPILED`` says which one is active. Both speak the
wire formats of docs/protocol.md (v1, and v2 in the ``*_v2`` functions) and follow
one argument contract (roomer/_codec_py.py's docstring).
"""

from __future__ import annotations

import os

__all__ = [
    "BATCH_MAX", "COMPILED", "decode", "decode_client", "decode_client_v2", "decode_v2",
    "encode", "encode_batch", "encode_frame", "encode_frame_v2", "encode_v2", "frame_header",
    "frame_v2_from_v1_body", "split_batch",
]

try:
    if os.environ.get("ROOMER_NO_EXTENSIONS") == "1":
        raise ImportError("ROOMER_NO_EXTENSIONS=1 asks for the pure-Python twin")
    from ._codec import (
        BATCH_MAX,
        decode,
        decode_client,
        decode_client_v2,
        decode_v2,
        encode,
        encode_batch,
        encode_frame,
        encode_frame_v2,
        encode_v2,
        frame_header,
        frame_v2_from_v1_body,
        split_batch,
    )

    COMPILED = True
except ImportError:  # forced, or built without a C compiler: the twin is the same contract
    from ._codec_py import (
        BATCH_MAX,
        decode,
        decode_client,
        decode_client_v2,
        decode_v2,
        encode,
        encode_batch,
        encode_frame,
        encode_frame_v2,
        encode_v2,
        frame_header,
        frame_v2_from_v1_body,
        split_batch,
    )

    COMPILED = False
