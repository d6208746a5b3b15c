from roomer._codec_py import decode as decode
from roomer._codec_py import decode_client as decode_client
from roomer._codec_py import encode as encode
from roomer._codec_py import encode_frame as encode_frame
from roomer._codec_py import frame_header as frame_header

__all__ = ["decode", "decode_client", "encode", "encode_frame", "frame_header"]
