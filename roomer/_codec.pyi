from roomer._codec_py import BATCH_MAX as BATCH_MAX
from roomer._codec_py import decode as decode
from roomer._codec_py import decode_client as decode_client
from roomer._codec_py import decode_client_v2 as decode_client_v2
from roomer._codec_py import decode_v2 as decode_v2
from roomer._codec_py import encode as encode
from roomer._codec_py import encode_batch as encode_batch
from roomer._codec_py import encode_frame as encode_frame
from roomer._codec_py import encode_frame_v2 as encode_frame_v2
from roomer._codec_py import encode_v2 as encode_v2
from roomer._codec_py import frame_header as frame_header
from roomer._codec_py import frame_v2_from_v1_body as frame_v2_from_v1_body
from roomer._codec_py import split_batch as split_batch

__all__ = [
    "BATCH_MAX", "decode", "decode_client", "decode_client_v2", "decode_v2", "encode",
    "encode_batch", "encode_frame", "encode_frame_v2", "encode_v2", "frame_header",
    "frame_v2_from_v1_body", "split_batch",
]
