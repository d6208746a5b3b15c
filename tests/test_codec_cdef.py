"""The compiled codec's C-level API (roomer/_codec.pxd), as the fan-out calls it.

A small extension module that cimports roomer._codec is built here with Cython, the
way roomer._fanout is, and its results are compared with the Python-level functions.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from waiting import scaled

from roomer import ProtocolError
from roomer import _codec_py as pure

PURE_ONLY = os.environ.get("ROOMER_NO_EXTENSIONS") == "1"
pytestmark = pytest.mark.skipif(PURE_ONLY, reason="ROOMER_NO_EXTENSIONS=1 forces pure")

CALLER = textwrap.dedent(
    """
    # cython: language_level=3
    from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
    from libc.stdint cimport uint8_t, uint32_t

    from roomer._codec cimport (
        c_encode_frame, c_encode_frame_v2, c_frame_body_offset, c_frame_header,
        c_frame_v2_from_v1_body,
    )


    def encode_frame(str room, str event, str dst, str src, payload):
        return c_encode_frame(room, event, dst, src, payload)


    def encode_frame_v2(int kind, uint32_t mid, str namespace, str room, str event, str dst,
                        str src, payload):
        return c_encode_frame_v2(kind, mid, namespace, room, event, dst, src, payload)


    def frame_header(Py_ssize_t size):
        return c_frame_header(size)


    def body_offset(bytes frame):
        return c_frame_body_offset(<const uint8_t*>PyBytes_AS_STRING(frame))


    def v2_from_v1_frame(int kind, uint32_t mid, str namespace, bytes v1_frame):
        cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(v1_frame)
        cdef Py_ssize_t offset = c_frame_body_offset(p)
        return c_frame_v2_from_v1_body(kind, mid, namespace, p + offset,
                                       PyBytes_GET_SIZE(v1_frame) - offset)
    """
)


@pytest.fixture(scope="module")
def caller(tmp_path_factory: pytest.TempPathFactory) -> Any:
    try:
        import Cython  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("Cython is not installed: cannot build a module that cimports roomer._codec")
    import roomer._codec

    assert roomer._codec.__file__.endswith((".so", ".pyd"))
    work = tmp_path_factory.mktemp("cdef")
    (work / "codec_caller.pyx").write_text(CALLER)
    include = str(Path(roomer.__file__).resolve().parent.parent)
    setup = textwrap.dedent(
        f"""
        from setuptools import Extension, setup
        from Cython.Build import cythonize
        setup(ext_modules=cythonize([Extension("codec_caller", ["codec_caller.pyx"])],
                                    include_path=[{include!r}], quiet=True))
        """
    )
    (work / "setup.py").write_text(setup)
    result = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=work, capture_output=True, text=True, timeout=scaled(300),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    built = next(work.glob("codec_caller*.so"), None) or next(work.glob("codec_caller*.pyd"))
    spec = importlib.util.spec_from_file_location("codec_caller", built)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SIZES = [0, 100, 125 - 20, 126, 65535 - 20, 65536, 200_000]


@pytest.mark.parametrize("payload_size", SIZES)
def test_c_functions_match_the_python_ones(caller: Any, payload_size: int) -> None:
    payload = os.urandom(payload_size)
    v1_frame = caller.encode_frame("lobby", "chat", "", "src", payload)
    assert v1_frame == pure.encode_frame("lobby", "chat", "", "src", payload)
    body = pure.encode("lobby", "chat", "", "src", payload)
    assert caller.body_offset(v1_frame) == len(v1_frame) - len(body)
    assert caller.frame_header(len(body)) == pure.frame_header(len(body))
    for kind, mid in ((0, 0), (1, 1), (2, 0xFFFFFFFF), (3, 77)):
        for namespace in ("", "chat", "ñ" * 100):
            expected = pure.encode_frame_v2(kind, mid, namespace, "lobby", "chat", "", "src",
                                            payload)
            assert caller.encode_frame_v2(kind, mid, namespace, "lobby", "chat", "", "src",
                                          payload) == expected
            assert caller.v2_from_v1_frame(kind, mid, namespace, v1_frame) == expected


def test_c_functions_refuse_what_the_python_ones_refuse(caller: Any) -> None:
    v1_frame = pure.encode_frame("lobby", "chat", "", "src", b"x")
    for kind, mid, message in ((0, 5, "an event (kind 0) must have id 0, not 5"),
                               (2, 0, "kind 2 must have a non-zero id"),
                               (4, 1, "kind 4 is not 0 (event), 1 (ask), 2 (reply) or 3 "
                                      "(error reply)"),
                               (-1, 1, "kind -1 is not 0 (event), 1 (ask), 2 (reply) or 3 "
                                       "(error reply)")):
        with pytest.raises(ValueError) as info:
            caller.encode_frame_v2(kind, mid, "", "", "", "", "", b"")
        assert str(info.value) == message
        with pytest.raises(ValueError) as info:
            caller.v2_from_v1_frame(kind, mid, "", v1_frame)
        assert str(info.value) == message
    with pytest.raises(ProtocolError, match="1 bytes remain after the payload"):
        caller.v2_from_v1_frame(0, 0, "", v1_frame + b"\x00")
    with pytest.raises(TypeError, match="payload must be str or bytes-like, not int"):
        caller.encode_frame_v2(0, 0, "", "", "", "", "", 5)
    for call in (lambda: caller.encode_frame_v2(0, 0, None, "", "", "", "", b""),
                 lambda: caller.v2_from_v1_frame(0, 0, None, v1_frame)):
        with pytest.raises(TypeError, match=r"^namespace must be str, not NoneType$"):
            call()
