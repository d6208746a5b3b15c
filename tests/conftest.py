"""Shared fixtures: both codec/fan-out implementations, and a live server on loopback."""

from __future__ import annotations

import importlib
import os
from collections.abc import AsyncIterator

import pytest

# Broker fixtures (redis_url, nats_url, private_redis, private_nats, prefix): tests/services.py.
from services import nats_url, prefix, private_nats, private_redis, redis_url  # noqa: F401

from roomer import Server

PURE_ONLY = os.environ.get("ROOMER_NO_EXTENSIONS") == "1"


def _implementations(name: str) -> list[object]:
    params: list[object] = [pytest.param(f"roomer._{name}_py", id="pure")]
    params.append(
        pytest.param(
            f"roomer._{name}",
            id="compiled",
            marks=pytest.mark.skipif(PURE_ONLY, reason="ROOMER_NO_EXTENSIONS=1 forces pure"),
        )
    )
    return params


@pytest.fixture(params=_implementations("codec"))
def codec_impl(request: pytest.FixtureRequest) -> object:
    """roomer._codec_py and roomer._codec; the compiled one must import (no silent skip)."""
    return importlib.import_module(request.param)


@pytest.fixture(params=_implementations("fanout"))
def fanout_impl(request: pytest.FixtureRequest) -> object:
    """roomer._fanout_py and roomer._fanout; the compiled one must import."""
    return importlib.import_module(request.param)


@pytest.fixture
async def make_server() -> AsyncIterator[object]:
    """Start Servers on 127.0.0.1 with a free port; all are shut down after the test."""
    started: list[Server] = []

    async def start(**options: object) -> Server:
        server = Server(**options)  # type: ignore[arg-type]
        await server.start("127.0.0.1", 0)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.shutdown(timeout=1.0)
