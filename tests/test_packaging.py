"""The package as users get it: public names, compiled modules, typing files."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import roomer

PURE_ONLY = os.environ.get("ROOMER_NO_EXTENSIONS") == "1"
# Every module of the package (a new one is checked without editing this list), but
# the entry points that run on import and the twin forced off by ROOMER_NO_EXTENSIONS.
PUBLIC_MODULES = ["roomer", *sorted(
    info.name for info in pkgutil.walk_packages(roomer.__path__, "roomer.")
    if not info.name.endswith("__main__")
    and not (PURE_ONLY and info.name in ("roomer._codec", "roomer._fanout")))]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_names_exist(name: str) -> None:
    if name == "roomer.benchmark.sioload":
        pytest.importorskip("socketio", reason="the python-socketio peer is an optional extra")
    module = importlib.import_module(name)
    assert isinstance(getattr(module, "__all__", None), list), f"{name} declares no __all__"
    missing = [attr for attr in module.__all__ if not hasattr(module, attr)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"


def test_top_level_api() -> None:
    for name in ("Server", "Connection", "Message", "ProtocolError", "Deny", "connect",
                 "register_handler", "Room", "ClientError", "Config"):
        assert name in roomer.__all__


@pytest.mark.skipif(PURE_ONLY, reason="ROOMER_NO_EXTENSIONS=1 forces pure Python")
def test_compiled_extensions_loaded() -> None:
    from roomer import _codec, _fanout, codec, fanout

    assert roomer.COMPILED is True
    assert codec.decode is _codec.decode
    assert fanout.Fanout is _fanout.Fanout
    assert Path(_codec.__file__).suffix in (".so", ".pyd")


def test_no_extensions_forces_pure() -> None:
    code = (
        "import roomer, roomer.codec as c, roomer.fanout as f;"
        "print(roomer.COMPILED, c.COMPILED, f.COMPILED, f.Fanout.__module__)"
    )
    env = {**os.environ, "ROOMER_NO_EXTENSIONS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["False", "False", "False", "roomer._fanout_py"]


def test_typing_files_ship() -> None:
    package = Path(roomer.__file__).parent
    for name in ("py.typed", "_codec.pyi", "_fanout.pyi", "_codec.pxd", "_fanout.pxd"):
        assert (package / name).is_file(), name


@pytest.mark.skipif(os.environ.get("ROOMER_TEST_INSTALLED") != "1",
                    reason="only when the suite runs against an installed wheel")
def test_runs_against_installed_wheel() -> None:
    assert "site-packages" in Path(roomer.__file__).parts
    if not PURE_ONLY:
        assert roomer.COMPILED
    assert (Path(roomer.__file__).parent / "static" / "demo.html").is_file()


@pytest.mark.skipif(os.environ.get("ROOMER_TEST_INSTALLED") != "1",
                    reason="only when the suite runs against an installed wheel")
def test_distribution_metadata() -> None:
    # What an index shows and checks: an SPDX license expression (no License classifier
    # beside it), the Python versions the wheels are built for, keywords, and picows
    # pinned to the exact version the compiled fan-out was built against.
    meta = importlib.metadata.metadata("roomer")
    assert meta["License-Expression"] == "MIT"
    assert meta["Requires-Python"] == ">=3.11"
    classifiers = meta.get_all("Classifier") or []
    for version in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]
    assert "websocket" in (meta["Keywords"] or "").split(",")
    assert "picows==2.3.1" in (meta.get_all("Requires-Dist") or [])
    from picows import __version__ as picows_version

    assert picows_version == "2.3.1"
