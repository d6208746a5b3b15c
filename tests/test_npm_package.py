"""The browser client as the npm package ``roomer`` (js/): packed with ``npm pack``,
installed from its tarball into a temporary project, type-checked by ``tsc --strict``, and
run in Node.js against a real ``roomer serve``.

The tools (TypeScript, ws with its types, Node.js 22 from the npm registry; versions in
tests/npm/package.json) are installed once per version set outside the checkout
(``ROOMER_NPM_TOOLS``, default ~/.cache/roomer/npm-tools), and each run's project is made
inside that folder, so that Node and tsc find them by walking up from it as they would in
a user's project. Without node and npm these tests skip (and fail under ``CI=true``).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
NPM_TESTS = HERE / "npm"
TOOLS_HOME = Path(os.environ.get("ROOMER_NPM_TOOLS",
                                 Path.home() / ".cache" / "roomer" / "npm-tools"))
IN_CI = os.environ.get("CI") == "true"

# The server side of the Node scripts: tests/browser's apps (drop-me, closed-* rooms,
# asks), served by the browser tests' RoomerServe.
_spec = importlib.util.spec_from_file_location("browserkit", HERE / "browser" / "browserkit.py")
assert _spec is not None and _spec.loader is not None
browserkit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(browserkit)

# Nothing here touches the codec or fan-out twins: the compiled pass of scripts/test.sh
# runs it once.
pytestmark = pytest.mark.compiled_pass_only


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"npm package tests cannot run under CI: {reason}")
    pytest.skip(reason)


def _run(args: list[str], cwd: Path, timeout: float = 120.0) -> str:
    """Run a command; its stdout, or a failure that shows all it printed."""
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert done.returncode == 0, (
        f"{' '.join(args)} exited with {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done.stdout


@pytest.fixture(scope="module")
def repo(pytestconfig: pytest.Config) -> Path:
    """The checkout: the one whose pyproject.toml configures this run (scripts/test.sh
    runs a copy of tests/ with -c <checkout>/pyproject.toml), else this file's."""
    inipath = pytestconfig.inipath
    root = inipath.parent if inipath is not None else HERE.parent
    if not (root / "js" / "package.json").is_file():
        _unavailable(f"no js/package.json in {root}")
    return root


@pytest.fixture(scope="module")
def tools() -> Path:
    """The folder whose node_modules holds the pinned tools, installed on first use."""
    for program in ("node", "npm"):
        if shutil.which(program) is None:
            _unavailable(f"no {program} on the PATH (apt-get install nodejs npm)")
    manifest = (NPM_TESTS / "package.json").read_bytes()
    home = TOOLS_HOME / hashlib.sha256(manifest).hexdigest()[:16]
    TOOLS_HOME.mkdir(parents=True, exist_ok=True)
    with open(TOOLS_HOME / "install.lock", "w") as lock:
        # One installer at a time (other checkouts may run these tests meanwhile); a
        # folder is renamed into place only once whole.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / "node_modules" / ".bin" / "tsc").exists():
            staging = Path(tempfile.mkdtemp(dir=TOOLS_HOME, prefix="installing-"))
            try:
                (staging / "package.json").write_bytes(manifest)
                _run(["npm", "install", "--no-audit", "--no-fund", "--prefer-offline"],
                     staging, timeout=900)
                shutil.rmtree(home, ignore_errors=True)
                staging.rename(home)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    (home / "projects").mkdir(exist_ok=True)
    return home


@pytest.fixture(scope="module")
def tarball(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``npm pack js/``: the package as it would be published."""
    out = tmp_path_factory.mktemp("pack")
    _run(["npm", "pack", "--pack-destination", str(out), str(repo / "js")], repo)
    (packed,) = out.glob("roomer-*.tgz")
    return packed


@pytest.fixture(scope="module")
def project(tools: Path, tarball: Path) -> Iterator[Path]:
    """A project that installed the tarball, with the files of tests/npm beside it."""
    path = Path(tempfile.mkdtemp(dir=tools / "projects"))
    try:
        (path / "package.json").write_text(json.dumps({"private": True, "type": "module"}))
        _run(["npm", "install", "--no-audit", "--no-fund", "--offline", str(tarball)], path)
        for source in NPM_TESTS.iterdir():
            if source.suffix in (".ts", ".mjs") or source.name.startswith("tsconfig"):
                shutil.copy(source, path)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def compiled(project: Path, tools: Path) -> Path:
    """tsc --strict over usage.ts, expect_errors.ts and events.ts (Node.js types,
    nodenext resolution; events.js emitted), and over browser.ts (the DOM library, no
    Node.js types, bundler resolution)."""
    tsc = str(tools / "node_modules" / ".bin" / "tsc")
    _run([tsc, "-p", "tsconfig.json"], project)
    _run([tsc, "-p", "tsconfig.browser.json"], project)
    return project / "out"


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    serve = browserkit.RoomerServe("browser_v2_app:setup")
    serve.start()
    try:
        yield serve
    finally:
        serve.stop()


def _node22(tools: Path) -> str:
    node = tools / "node_modules" / ".bin" / "node"
    if not node.exists():
        _unavailable("Node.js 22 did not install from the npm registry (package node@22)")
    return str(node)


def _major(node: str) -> int:
    version = subprocess.run([node, "--version"], capture_output=True, text=True,
                             check=True).stdout
    match = re.match(r"v(\d+)\.", version)
    assert match, version
    return int(match.group(1))


def test_tarball_holds_the_served_client(repo: Path, tarball: Path, project: Path,
                                         server: Any) -> None:
    with tarfile.open(tarball) as tar:
        assert sorted(tar.getnames()) == ["package/LICENSE", "package/README.md",
                                          "package/package.json", "package/roomer.d.ts",
                                          "package/roomer.js"]
        packed = {name: tar.extractfile(f"package/{name}").read()  # type: ignore[union-attr]
                  for name in ("roomer.js", "roomer.d.ts", "package.json")}
    installed = project / "node_modules" / "roomer"
    for name in ("roomer.js", "roomer.d.ts"):
        source = (repo / "roomer" / "static" / name).read_bytes()
        with urllib.request.urlopen(f"{server.http}/{name}", timeout=10) as response:
            served = response.read()
        assert packed[name] == source, f"the tarball's {name} is not roomer/static/{name}"
        assert served == source, f"the server's /{name} is not roomer/static/{name}"
        assert (installed / name).read_bytes() == source

    manifest = json.loads(packed["package.json"])
    assert manifest["name"] == "roomer"
    assert manifest["type"] == "module"
    assert manifest["exports"]["."] == {"types": "./roomer.d.ts", "default": "./roomer.js"}
    assert (manifest["main"], manifest["types"]) == ("./roomer.js", "./roomer.d.ts")
    pyproject = tomllib.loads((repo / "pyproject.toml").read_text())
    assert manifest["version"] == pyproject["project"]["version"]
    assert manifest["license"] == pyproject["project"]["license"]


def test_types_check_under_strict(compiled: Path) -> None:
    # The fixture ran tsc (it fails on any error, and on any @ts-expect-error of
    # expect_errors.ts or browser.ts that met none); this is what it emitted.
    assert (compiled / "events.js").is_file()


def test_node_with_ws_passed_in(project: Path, server: Any) -> None:
    # The machine's Node.js (20 here: no global WebSocket) with the ws package passed in;
    # the script first checks what roomer() says without one.
    out = _run(["node", "smoke.mjs", server.ws, "ws"], project, timeout=60)
    report = json.loads(out.splitlines()[-1])
    assert report["websocket"] == "ws"
    assert (report["said"], report["where"], report["refused"]) == (
        "héllo from node", "/lobby", "sold_out")
    assert report["open"] == [False, False]


def test_node22_builtin_websocket(project: Path, tools: Path, server: Any) -> None:
    node = _node22(tools)
    assert _major(node) >= 22
    out = _run([node, "smoke.mjs", server.ws, "builtin"], project, timeout=60)
    report = json.loads(out.splitlines()[-1])
    assert report["node"].startswith("v22.")
    assert report["websocket"] == "builtin"
    assert (report["said"], report["where"], report["refused"]) == (
        "héllo from node", "/lobby", "sold_out")


def test_emitted_events_match_their_types(compiled: Path, project: Path, server: Any) -> None:
    out = _run(["node", str(compiled / "events.js"), server.ws], project, timeout=60)
    counts = json.loads(out.splitlines()[-1])
    # root and match both open, reconnect, lose a session, resume one and close (and hear
    # reconnecting twice: once for the session lost, once for the one resumed); B's match
    # hears A drop and come back; the rest once each.
    assert counts == {"open": 2, "new_member": 1, "chat": 1, "error": 1, "reconnecting": 4,
                      "dropped": 1, "lost": 2, "reconnected": 2, "resumed": 2,
                      "member_dropped": 1, "member_back": 1, "member_left": 1, "close": 2}


def test_no_websocket_message_names_the_option(project: Path) -> None:
    # Outside a page and without a WebSocket (Node.js 20): a TypeError that says what to
    # pass, rather than "this.options.WebSocket is not a constructor".
    script = ("import roomer from 'roomer'; delete globalThis.WebSocket;"
              "try { roomer('ws://127.0.0.1:9/ws'); console.log('no error'); }"
              "catch (err) { console.log(err.name + ': ' + err.message); }")
    out = _run(["node", "--input-type=module", "-e", script], project, timeout=30).strip()
    assert out.startswith("TypeError: roomer: this runtime has no WebSocket"), out
    assert "roomer(url, {WebSocket})" in out and 'import WebSocket from "ws"' in out

