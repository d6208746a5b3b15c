"""What the browser tests share: a ``roomer serve`` process that can be stopped and
started again on its port, and the pages of a test."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from services import free_port
from waiting import scaled

HERE = Path(__file__).parent
#: The harness page (static/index.html) imports /roomer.js and exposes helpers.
HARNESS = HERE / "static"
CHROMIUM = os.environ.get("ROOMER_CHROMIUM", "/usr/bin/chromium")
# --headless --no-sandbox --disable-gpu: Chromium as root without a display or GPU; the
# rest keep it from reaching for the network or updating itself mid-run.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
PURE = os.environ.get("ROOMER_NO_EXTENSIONS") == "1"
WAIT_MS = scaled(10.0) * 1000  # the longest any page condition is waited for


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed (pip install 'roomer[browser]')"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


class RoomerServe:
    """A ``roomer serve`` subprocess on a fixed port, which can be stopped and started
    again on the same port. ``tests/browser`` is on its PYTHONPATH (the test app)."""

    def __init__(self, *args: str) -> None:
        self.args = list(args)
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        self.proc = proc = subprocess.Popen(
            [sys.executable, "-m", "roomer", "serve", *self.args, "--port", str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
            if line.startswith("extensions:"):
                # The pure pass must really run the pure twins, the other the compiled.
                assert ("pure Python" if PURE else "compiled") in line, line
                return
        proc.kill()
        err = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"roomer serve did not start: {lines} {err}")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def harness_args(*extra: str) -> tuple[str, ...]:
    """``roomer serve`` arguments: the test app, with the harness page as static folder."""
    return ("browser_app:setup", "--static", str(HARNESS), *extra)


class Pages:
    """The pages of one test, each in its own browser context (as separate browsers
    would be); an uncaught error in any page fails the test."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.contexts: list[Any] = []
        self.errors: list[str] = []

    async def open(self, url: str, *, width: int = 1100, height: int = 760,
                   mobile: bool = False) -> Any:
        context = await self.browser.new_context(
            viewport={"width": width, "height": height}, is_mobile=mobile,
            has_touch=mobile, device_scale_factor=2 if mobile else 1)
        context.set_default_timeout(WAIT_MS)
        self.contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda err: self.errors.append(f"{url}: {err}"))
        await page.goto(url)
        return page

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()


async def harness(pages: Pages, server: RoomerServe) -> Any:
    page = await pages.open(server.http + "/")
    await page.wait_for_function("window.ready === true")
    return page


async def joined(page: Any, room: str, url: str = "/ws", options: str = "{}") -> str:
    """Connect the page, join ``room`` (recording its events) and return the page's id."""
    return await page.evaluate(f"""async () => {{
        window.root = record(roomer({url!r}, {options}), "open", "close", "error",
                             "reconnecting", "reconnected", "dropped");
        window.room = record(root.join({room!r}), "open", "close", "error", "new_member",
                             "member_left", "chat", "bin", "seq", "reconnecting",
                             "reconnected", "dropped", "marker", "secret");
        await room.ready();
        return root.id();
    }}""")


async def until(page: Any, condition: str) -> None:
    await page.wait_for_function(condition)
