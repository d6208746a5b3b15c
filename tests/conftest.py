"""Shared fixtures: both codec/fan-out implementations, a live server on loopback (in
this process, or in its own as production runs it), and the event loops tests run on."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import game_app
import pytest
import uvloop
from serverproc import ChildError, ServerProcess

# Broker fixtures (redis_url, nats_url, private_redis, private_nats, prefix, and
# backplane_url, each backplane in turn): tests/services.py.
from services import backplane_url, nats_url, prefix, private_nats, private_redis, redis_url  # noqa: F401

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
async def game_servers() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    """Servers with the room types of tests/game_app.py, on free ports."""
    started: list[Server] = []

    async def start(**options: Any) -> Server:
        server = Server(**options)
        game_app.setup(server)
        await server.start("127.0.0.1", 0)
        started.append(server)
        return server

    game_app.hook_log.clear()
    yield start
    for server in started:
        await server.shutdown(timeout=2.0)


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


@pytest.fixture
async def server_process() -> AsyncIterator[Callable[..., Awaitable[ServerProcess]]]:
    """Start ``roomer serve`` processes (uvloop, free port) with Server options and app
    modules (``"module:setup"``); each must stop cleanly on SIGTERM after the test."""
    started: list[ServerProcess] = []

    async def start(options: dict[str, Any] | None = None,
                    apps: tuple[str, ...] = ()) -> ServerProcess:
        server = await ServerProcess.start(options, apps)
        started.append(server)
        return server

    yield start
    failure: ChildError | None = None
    for server in started:
        try:
            await server.stop()
        except ChildError as exc:
            failure = failure or exc
        finally:
            await server.kill()
    if failure is not None:
        raise failure


# Event loops ------------------------------------------------------------------------------
#
# Production serves on uvloop (Server.run, roomer serve); tests that run a Server in
# their own loop run on both it and asyncio's default loop, and their ids say which.
# Files the pure-Python pass of scripts/test.sh does not run again (marker
# compiled_pass_only): their twin-parametrized tests already ran both twins in the
# compiled pass; or they test what the twins do not touch: the cluster (the backplane and
# game rooms across nodes, where each node's twins do what the single-node tests check),
# the command line, packaging, docs and examples, plain HTTP, the benchmark harness, the
# pages of the demo and the game client; or production-sized behaviour of a compiled
# server (abuse, soak, faults).
COMPILED_PASS_ONLY = frozenset({
    "test_codec.py", "test_codec_args.py", "test_codec_cdef.py", "test_codec_fuzz.py",
    "test_codec_v2.py", "test_fanout.py", "test_fanout_real.py", "test_memory.py",
    "test_backplane_brokers.py", "test_backplane_cluster.py", "test_backplane_failures.py",
    "test_backplane_names.py", "test_backplane_transport.py", "test_backplane_bounds.py",
    "test_backplane_faults.py", "test_backplane_incarnations.py", "test_backplane_link.py",
    "test_games_cluster.py", "test_games_procs.py", "test_scaleout.py",
    "test_scaleout_procs.py", "test_workers_supervision.py",
    "test_benchmark_harness.py", "test_benchmark_game.py", "test_benchmark_cleanup.py",
    "test_cli.py", "test_docs.py", "test_examples.py", "test_npm_package.py",
    "test_packaging.py", "test_http_bounds.py", "test_http_parsing.py",
    "test_http_requests.py", "test_static_files.py", "test_metrics_format.py",
    "test_browser_demo.py", "test_browser_games.py", "test_browser_restart.py",
    "test_abuse.py", "test_soak.py", "test_faults.py",
})
# Cluster tests whose nodes run in this process run on uvloop alone: what they test is the
# backplane, whose code does not depend on the loop, and production serves on uvloop.
UVLOOP_ONLY = frozenset(name for name in COMPILED_PASS_ONLY
                        if name.startswith(("test_backplane_", "test_games_cluster",
                                            "test_scaleout")))


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist's workers ignore SIGINT, and an ignored signal stays ignored in every
    # process they start: the tests that press Ctrl-C on a child (the bot example, the
    # bench's cleanup) would see it ignored. A handler (unlike SIG_IGN) is reset to the
    # default at exec, so each child gets the usual KeyboardInterrupt again.
    if os.environ.get("PYTEST_XDIST_WORKER") and (
            signal.getsignal(signal.SIGINT) is signal.SIG_IGN):
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in COMPILED_PASS_ONLY:
            item.add_marker(pytest.mark.compiled_pass_only)


# Tests whose server runs in a child process (marker server_process: the child is
# uvloop already) need only one loop here.

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    if item.get_closest_marker("server_process") is not None:
        return {"asyncio": LOOPS["asyncio"]}
    if item.path.name in UVLOOP_ONLY:
        return {"uvloop": LOOPS["uvloop"]}
    return LOOPS
