"""Both twins of a compiled module as pytest params, shared by the micro-benchmarks."""

from __future__ import annotations

import os
from typing import Any

import pytest

PURE_ONLY = os.environ.get("ROOMER_NO_EXTENSIONS") == "1"


def implementations(name: str) -> list[Any]:
    """pytest params for roomer._<name>_py ("pure") and roomer._<name> ("compiled")."""
    return [
        pytest.param(f"roomer._{name}_py", id="pure"),
        pytest.param(
            f"roomer._{name}",
            id="compiled",
            marks=pytest.mark.skipif(PURE_ONLY, reason="ROOMER_NO_EXTENSIONS=1 forces pure"),
        ),
    ]
