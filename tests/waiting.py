"""How the tests wait: on an event or on a condition with a deadline, never a bare pause.

Every time unit the tests use (a deadline, a timeout, a deliberate pace) goes through
:func:`scaled`, which multiplies it by ``ROOMER_TEST_TIMEOUT_FACTOR`` (default 1): a slow
or loaded machine is given more time without editing a test, e.g.
``ROOMER_TEST_TIMEOUT_FACTOR=3 bash scripts/test.sh``. Server options the tests set in
seconds (ping intervals, handshake timeouts...) are scaled too where a test waits on them.

- :func:`eventually` polls a condition until it holds, or fails at the deadline with
  what it waited for;
- :func:`pace` and :func:`stall` are the only pauses: a pause that is itself the behaviour
  under test (a client sending at a rate, a hook that is slow on purpose), scaled.
- :func:`suspend` lets an async hook or handler give the loop one turn: what a test
  needs when the point is that the hook *is* asynchronous, not that time passes.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time

# The one module that pauses: every other test module waits through these helpers.
from asyncio import sleep as _loop_sleep
from collections.abc import Callable
from time import sleep as _thread_sleep

__all__ = ["FACTOR", "TIMEOUT", "eventually", "eventually_blocking", "pace", "pace_blocking",
           "pace_until", "scaled", "stall", "suspend"]


def _factor() -> float:
    raw = os.environ.get("ROOMER_TEST_TIMEOUT_FACTOR", "1")
    try:
        factor = float(raw)
    except ValueError:
        raise ValueError(f"ROOMER_TEST_TIMEOUT_FACTOR must be a number, not {raw!r}") from None
    if not factor > 0:
        raise ValueError(f"ROOMER_TEST_TIMEOUT_FACTOR must be positive, not {raw!r}")
    return factor


FACTOR = _factor()


def scaled(seconds: float) -> float:
    """``seconds`` times ROOMER_TEST_TIMEOUT_FACTOR."""
    return seconds * FACTOR


TIMEOUT = scaled(5.0)  # the deadline of anything that should happen (scaled already)
_POLL = 0.005  # how often a condition is looked at (not scaled: it is not a deadline)


async def eventually(check: Callable[[], object], timeout: float = 5.0,
                     what: str = "condition", every_turn: bool = False) -> float:
    """Poll ``check()`` (true, or an awaitable of true) until it holds; the seconds it took.

    ``timeout`` is in seconds before scaling (this applies the factor). ``every_turn``:
    look at every turn of the loop, for a state that lasts one turn only.

    Raises:
        AssertionError: the condition did not hold within ``timeout`` scaled.
    """
    timeout = scaled(timeout)
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return loop.time() - start
        if loop.time() - start > timeout:
            raise AssertionError(f"{what}: not true after {timeout:.2f} s")
        await _loop_sleep(0 if every_turn else _POLL)


def eventually_blocking(check: Callable[[], object], timeout: float = 5.0,
                        what: str = "condition") -> float:
    """:func:`eventually` for code that runs outside an event loop (a thread, a fixture)."""
    timeout = scaled(timeout)
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not true after {timeout:.2f} s")
        _thread_sleep(_POLL)
    return time.monotonic() - start


async def pace(seconds: float) -> None:
    """A deliberate pause between two steps of a client, scaled: the pacing is the test
    (a client sending at a rate, a node that stays quiet through a few timeouts)."""
    await _loop_sleep(scaled(seconds))


async def pace_until(moment: float) -> None:
    """:func:`pace` to an instant of ``time.monotonic()`` (a duration the caller scaled)."""
    await _loop_sleep(max(0.0, moment - time.monotonic()))


def pace_blocking(seconds: float) -> None:
    """:func:`pace` outside an event loop."""
    _thread_sleep(scaled(seconds))


async def stall(seconds: float) -> None:
    """A hook or handler that is slow on purpose, for ``seconds`` scaled."""
    await _loop_sleep(scaled(seconds))


async def suspend() -> None:
    """Give the loop one turn: an async hook that really suspends, or a writer that lets
    the transport run between two writes. Never a way to wait for something."""
    await _loop_sleep(0)
