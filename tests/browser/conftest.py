"""Browser tests: headless Chromium (Debian's ``chromium``) driven by Playwright for
Python, against a real ``roomer serve`` process.

Without chromium or Playwright each one is reported skipped, with the reason; under CI
(CI=true) they fail instead. Playwright's own browser download is never used: the
system's Chromium is launched (``ROOMER_CHROMIUM`` overrides its path). One browser
serves the whole run (session-scoped event loop); each test opens its own contexts.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
from browserkit import CHROMIUM, CHROMIUM_ARGS, Pages, RoomerServe, missing

_MISSING = missing()
_SKIPPED = _MISSING is not None and os.environ.get("CI") != "true"
_BROWSER_DIR = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Collected and reported skipped, with the reason, in the summary's count; under CI
    # the browser fixture fails every test instead.
    if not _SKIPPED:
        return
    skip = pytest.mark.skip(reason=f"browser tests cannot run: {_MISSING}")
    for item in items:
        if str(item.path).startswith(_BROWSER_DIR + os.sep):
            item.add_marker(skip)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    if _MISSING is not None:
        pytest.fail(f"browser tests cannot run under CI: {_MISSING}")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()


@pytest_asyncio.fixture(loop_scope="session")
async def pages(browser: Any) -> AsyncIterator[Pages]:
    opened = Pages(browser)
    try:
        yield opened
    finally:
        await opened.close()
    assert not opened.errors, opened.errors


@pytest.fixture
def serve() -> Iterator[Callable[..., RoomerServe]]:
    """``serve(*args)`` starts ``roomer serve *args`` on a free port; every server a
    test started is stopped after it."""
    started: list[RoomerServe] = []

    def start(*args: str) -> RoomerServe:
        server = RoomerServe(*args)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()
