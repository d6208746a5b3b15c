"""The app ``roomer serve`` runs for a test's server process (see serverproc.py).

The test passes the Server's options and the app modules to set up in one JSON
environment variable, since some options (``rate_limit``) have no command-line flag.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any

import roomer

ENV = "ROOMER_TEST_SERVER"

# JSON has lists only; these options are tuples in roomer.Config.
_TUPLES = ("rate_limit", "byte_limit", "error_limit")


def options_from_json(options: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if k in _TUPLES and isinstance(v, list) else v
            for k, v in options.items()}


def setup(_flags_server: roomer.Server) -> roomer.Server:
    """``roomer serve serverapp:setup``: a Server built from the test's options (the
    flag-built one is ignored: no flag is given), with each app's ``setup`` applied."""
    spec = json.loads(os.environ[ENV])
    server = roomer.Server(**options_from_json(spec["options"]))
    for app in spec["apps"]:
        module_name, _, attr = app.partition(":")
        getattr(importlib.import_module(module_name), attr or "setup")(server)
    return server
