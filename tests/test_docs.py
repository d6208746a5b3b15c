"""The documentation says what the code does: every code block of README.md and docs/ is
checked, and the reference pages cover every error code, public name and JS export.

- Python blocks compile (snippets of examples/ resolved as the site includes them); those
  marked ``<!-- test: run -->`` on the line before are complete programs and run here.
- Shell blocks: every ``roomer serve`` / ``roomer bench`` command parses with the real
  argparse parsers, every ``pip install`` names extras pyproject.toml declares, every
  script they run exists. Inline ``roomer serve ...`` code in prose is parsed the same way.
- JavaScript blocks (and the module scripts of HTML blocks) pass ``node --check``.
- docs/reference/events.md lists every error code the server can send (found by reading
  the roomer package) and every code the clients raise; python-api.md renders every name of
  ``roomer.__all__``; js-api.md names every export of roomer.d.ts and every member of Room.

The site itself is built with ``mkdocs build --strict`` by .ci/run (links, anchors,
snippets, API references).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

import roomer
from roomer import metrics
from roomer.benchmark.connections import build_parser as connections_parser
from roomer.benchmark.game import build_parser as game_parser
from roomer.benchmark.harness import build_parser as bench_parser
from roomer.cli import _parser as roomer_parser

# Reads files and runs short programs: nothing here touches the codec twins.
pytestmark = pytest.mark.compiled_pass_only

ROOMER_ROOT = Path(roomer.__file__).resolve().parents[1]
PACKAGE = Path(roomer.__file__).resolve().parent
RUN_MARKER = "<!-- test: run -->"
SNIPPET = re.compile(r'^\s*--8<--\s+"([^"]+)"\s*$')
SECTION = re.compile(r"--8<-- \[(start|end):([\w-]+)\]")


def find_repo(config: pytest.Config) -> Path:
    """The checkout: beside this file, or (scripts/test.sh runs a copy of tests/ from a
    temporary folder) where the pyproject.toml that pytest was given lives."""
    candidates = [Path(__file__).resolve().parents[1]]
    if config.inipath is not None:
        candidates.insert(0, Path(config.inipath).resolve().parent)
    for candidate in candidates:
        if (candidate / "mkdocs.yml").is_file() and (candidate / "docs").is_dir():
            return candidate
    pytest.fail(f"no checkout with mkdocs.yml and docs/ in {candidates}")


@pytest.fixture(scope="module")
def repo(pytestconfig: pytest.Config) -> Path:
    return find_repo(pytestconfig)


# reading the pages -------------------------------------------------------------------------


@dataclass
class Block:
    page: str
    line: int
    lang: str
    text: str
    runnable: bool

    def __str__(self) -> str:
        return f"{self.page}:{self.line} ({self.lang})"


FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def pages(repo: Path) -> list[Path]:
    found = [repo / "README.md", repo / "SECURITY.md"]
    found += sorted(p for p in (repo / "docs").rglob("*.md") if "_hooks" not in p.parts)
    return found


def blocks_of(path: Path, repo: Path) -> list[Block]:
    """The fenced code blocks of a markdown page, snippets resolved."""
    lines = path.read_text().splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence = len(match["indent"]), match["fence"]
        lang = match["info"].strip().split(" ")[0].lower()
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][indent:] if lines[j][:indent].isspace() else lines[j])
            j += 1
        text = "\n".join(resolve(line, repo) for line in body)
        out.append(Block(path.relative_to(repo).as_posix(), i + 1, lang, text,
                         before == RUN_MARKER))
        i = j + 1
    return out


def resolve(line: str, repo: Path) -> str:
    """A ``--8<-- "file[:section]"`` line as the snippets extension includes it."""
    match = SNIPPET.match(line)
    if not match:
        return line
    name, _, section = match[1].partition(":")
    source = (repo / name).read_text().splitlines()
    if section:
        starts = [n for n, text in enumerate(source) if f"[start:{section}]" in text]
        ends = [n for n, text in enumerate(source) if f"[end:{section}]" in text]
        assert starts and ends, f"no section {section!r} in {name}"
        # mkdocs.yml's dedent_subsections: a section inside a class reads as top level
        source = textwrap.dedent("\n".join(source[starts[0] + 1:ends[0]])).splitlines()
    return "\n".join(text for text in source if not SECTION.search(text))


def all_blocks(repo: Path) -> list[Block]:
    return [block for page in pages(repo) for block in blocks_of(page, repo)]


@pytest.fixture(scope="module")
def blocks(repo: Path) -> list[Block]:
    found = all_blocks(repo)
    assert found, "no code blocks found"
    return found


# Python ------------------------------------------------------------------------------------


def test_every_python_block_compiles(blocks: list[Block]) -> None:
    python = [block for block in blocks if block.lang in ("python", "py")]
    assert len(python) >= 10, [str(b) for b in python]
    for block in python:
        try:
            compile(block.text, str(block), "exec")
        except SyntaxError as exc:
            pytest.fail(f"{block}: {exc}\n{block.text}")


def test_python_blocks_use_no_top_level_await(blocks: list[Block]) -> None:
    """A reader copies a block into a file: it must run as a program."""
    for block in blocks:
        if block.lang not in ("python", "py"):
            continue
        tree = ast.parse(block.text)
        for node in tree.body:
            for inner in ast.walk(node):
                if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    break
                assert not isinstance(inner, (ast.Await, ast.AsyncFor, ast.AsyncWith)), (
                    f"{block}: top-level await; wrap it in an async def main()")


def runnable(repo: Path) -> list[Block]:
    return [block for block in all_blocks(repo) if block.runnable]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "program" in metafunc.fixturenames:
        found = [str(block) for block in runnable(find_repo(metafunc.config))]
        metafunc.parametrize("program", found or ["none found"])


def test_runnable_blocks_run(repo: Path, program: str, tmp_path: Path) -> None:
    found = {str(block): block for block in runnable(repo)}
    assert found, "no block is marked <!-- test: run -->"
    block = found[program]
    assert block.lang == "python", f"{block}: only Python blocks can be run"
    source = tmp_path / "program.py"
    source.write_text(block.text)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOMER_ROOT), os.environ.get("PYTHONPATH", "")]))}
    done = subprocess.run([sys.executable, str(source)], capture_output=True, text=True,
                          timeout=60, env=env, cwd=tmp_path)
    assert done.returncode == 0, f"{block} failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout.strip(), f"{block} printed nothing"


def test_the_readme_example_is_runnable(repo: Path) -> None:
    readme = [block for block in blocks_of(repo / "README.md", repo) if block.lang == "python"]
    assert len(readme) == 1 and readme[0].runnable, "the README's example must be run"
    assert len(readme[0].text.splitlines()) <= 30, "the README's example stays short"


# shell -------------------------------------------------------------------------------------

SHELLS = ("sh", "bash", "shell", "console")


def commands(text: str) -> list[list[str]]:
    """The simple commands of a shell block: continuations joined, comments dropped, split
    on && || ; and |."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out: list[list[str]] = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        if not line or line.startswith("#"):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        for token in lexer:
            if token and set(token) <= set(";&|"):
                if words:
                    out.append(words)
                words = []
            else:
                words.append(token)
        if words:
            out.append(words)
    return out


def _parse(parser: argparse.ArgumentParser, args: list[str], where: str) -> None:
    try:
        parser.parse_args(args)
    except SystemExit:
        pytest.fail(f"{where}: {shlex.join(args)!r} is refused by the real parser")


def _bench_mode(args: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser ``roomer bench`` hands these arguments to, as its dispatch does."""
    if "--game" in args:
        return game_parser(), [a for a in args if a != "--game"]
    if any(a == "--connections" or a.startswith("--connections=") for a in args):
        return connections_parser(), args
    return bench_parser(), args


def check_command(words: list[str], repo: Path, where: str) -> int:
    """Check one command; the number of checks it made (roomer, pip, scripts)."""
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        words = words[1:]  # VAR=value prefixes
    if not words:
        return 0
    program, args = Path(words[0]).name, words[1:]
    if program.startswith("python") and args[:2] == ["-m", "roomer"]:
        program, args = "roomer", args[2:]
    if program == "roomer":
        if args[:1] == ["serve"]:
            _parse(roomer_parser(), args, where)
        elif args[:1] == ["bench"]:
            _parse(*_bench_mode(args[1:]), where)
        else:
            _parse(roomer_parser(), args, where)
        return 1
    if program == "pip" or (program.startswith("python") and args[:2] == ["-m", "pip"]):
        if program != "pip":
            args = args[2:]
        extras = set(tomllib.loads((repo / "pyproject.toml").read_text())
                     ["project"]["optional-dependencies"])
        for arg in args:
            match = re.fullmatch(r"(\.|roomer)\[([\w,-]+)\]", arg)
            if match:
                unknown = set(match[2].split(",")) - extras
                assert not unknown, f"{where}: {arg} names no extra of pyproject.toml"
        return 1
    if program.startswith("python") or program == "bash":
        script = next((a for a in args if not a.startswith("-")), "")
        if re.fullmatch(r"(examples|bench|scripts|tests)/[\w./-]+\.(py|sh)", script):
            assert (repo / script).is_file(), f"{where}: {script} does not exist"
            return 1
    return 0


def test_shell_commands_use_real_flags_extras_and_scripts(blocks: list[Block],
                                                        repo: Path) -> None:
    checked = 0
    for block in blocks:
        if block.lang in SHELLS:
            for words in commands(block.text):
                checked += check_command(words, repo, str(block))
    assert checked >= 20, f"only {checked} commands checked"


INLINE = re.compile(r"`((?:\S*/)?roomer (?:serve|bench)\b[^`]*)`")


def test_inline_roomer_commands_parse(repo: Path) -> None:
    seen = 0
    for page in pages(repo):
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for match in INLINE.finditer(line):
                text = match[1]
                if "..." in text or "[" in text:
                    continue  # a synopsis, not a command
                seen += check_command(shlex.split(text), repo, f"{page.name}:{number}")
    assert seen >= 5


def test_the_two_commands_of_the_readme(repo: Path) -> None:
    readme = [b for b in blocks_of(repo / "README.md", repo) if b.lang in SHELLS]
    assert [b.text for b in readme] == [
        "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/roomer serve",
        "bash scripts/test.sh",
    ]
    assert "bash scripts/test.sh" in (repo / ".ci" / "run").read_text()


# JavaScript --------------------------------------------------------------------------------


def scripts_of(block: Block) -> list[str]:
    if block.lang in ("js", "javascript"):
        return [block.text]
    if block.lang == "html":
        return re.findall(r'<script type="module">(.*?)</script>', block.text, re.S)
    return []


def test_javascript_blocks_parse(blocks: list[Block], tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is needed to check the docs' JavaScript under CI")
        pytest.skip("node is not installed: the docs' JavaScript blocks are not checked")
    checked = 0
    for block in blocks:
        for number, script in enumerate(scripts_of(block)):
            source = tmp_path / f"block{checked}-{number}.mjs"
            source.write_text(script)
            done = subprocess.run([node, "--check", str(source)], capture_output=True,
                                  text=True, timeout=30)
            assert done.returncode == 0, f"{block}: {done.stderr}\n{script}"
            checked += 1
    assert checked >= 4


# the reference pages cover the code ---------------------------------------------------------


def server_error_codes() -> set[str]:
    """Every error code the server can send, read off the roomer package."""
    codes = set(metrics.ERROR_CODES) | set(metrics.COUNTED_CODES)
    patterns = [
        re.compile(r'\berror\(\s*conn,\s*"([a-z_]+)"'),  # Router.error(conn, code, ...)
        re.compile(r'"([a-z]+_denied)"'),  # the codes of refusing hooks
        re.compile(r'\{"code": "([a-z_]+)"'),  # error bodies built by hand
    ]
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for pattern in patterns:
            codes.update(pattern.findall(text))
        if path.name == "errors.py":  # RoomerError subclasses: the code they carry
            codes.update(re.findall(r'^    code = "([a-z_]+)"', text, re.M))
    return codes


def client_error_codes() -> set[str]:
    codes = {"unsupported_protocol"}  # roomer.client: a 101 without roomer.v2
    js = (PACKAGE / "static" / "roomer.js").read_text()
    for pattern in (r'RoomerError\(\s*"([a-z_]+)"', r'code: "([a-z_]+)"', r'refuse\("([a-z_]+)"'):
        codes.update(re.findall(pattern, js))
    return codes


def test_every_error_code_is_documented(repo: Path) -> None:
    page = (repo / "docs" / "reference" / "events.md").read_text()
    rows = set(re.findall(r"^\| `([a-z_]+)` \|", page, re.M))
    server = server_error_codes()
    assert {"malformed", "join_denied", "not_member", "no_handler", "denied"} <= server
    missing = sorted((server | client_error_codes()) - rows)
    assert not missing, f"error codes missing from docs/reference/events.md: {missing}"


def test_every_public_name_is_in_the_python_api(repo: Path) -> None:
    page = (repo / "docs" / "reference" / "python-api.md").read_text()
    rendered = set(re.findall(r"^::: roomer\.(\w+)$", page, re.M))
    missing = sorted(set(roomer.__all__) - rendered)
    assert not missing, f"names of roomer.__all__ missing from python-api.md: {missing}"


def dts_names() -> tuple[set[str], set[str]]:
    """(exported names, members of the Room interface) of roomer.d.ts."""
    dts = (PACKAGE / "static" / "roomer.d.ts").read_text()
    exported = set(re.findall(
        r"^export (?:declare )?(?:type|interface|class|function|const) (\w+)", dts, re.M))
    body = dts[dts.index("export interface Room {"):]
    body = body[:body.index("\n}\n")]
    members = set(re.findall(r"^  (?:readonly )?(\w+)\s*(?:[(<:?])", body, re.M))
    return exported, members


def test_every_export_of_roomer_d_ts_is_in_the_js_api(repo: Path) -> None:
    page = (repo / "docs" / "reference" / "js-api.md").read_text()
    exported, members = dts_names()
    assert {"roomer", "text", "RoomerError", "Room"} <= exported
    assert {"join", "joined", "ask", "onAsk", "send", "on"} <= members
    missing = sorted(name for name in exported | members if f"`{name}" not in page)
    assert not missing, f"roomer.d.ts names missing from docs/reference/js-api.md: {missing}"


def test_generated_tables_cover_every_option_and_flag(repo: Path) -> None:
    """The build hook renders every Config field and every flag (and refuses a typo)."""
    sys.path.insert(0, str(repo / "docs" / "_hooks"))
    try:
        import reference
    finally:
        sys.path.pop(0)
    options = reference.render("<!-- roomer:options -->")
    for field in roomer.Config.__dataclass_fields__:
        assert f'id="option-{field}"' in options, field
    flags = reference.render("<!-- roomer:serve-flags -->")
    serve = reference.serve_parser()
    for action in serve._actions:
        for flag in action.option_strings:
            if flag not in ("-h", "--help"):
                assert f"`{flag}`" in flags, flag
    assert "`--cross-node`" in reference.render("<!-- roomer:bench-flags -->")
    assert "`roomer_backplane_dropped_total`" in reference.render("<!-- roomer:metrics -->")
    with pytest.raises(reference.UnknownMarker):
        reference.render("<!-- roomer:option -->")


def test_readme_links_resolve(repo: Path) -> None:
    """GitHub renders the README from the repository: its relative links must exist."""
    text = (repo / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert local
    missing = [link for link in local if not (repo / link).exists()]
    assert not missing, missing


# proxy configurations ------------------------------------------------------------------------


def test_proxy_configurations_are_well_formed_and_outlast_the_pings(blocks: list[Block]) -> None:
    """The nginx and Caddy blocks of the deployment guide: braces balance, every nginx
    statement ends with ``;``, the upgrade is passed through, and nginx's timeouts are
    longer than a quiet client takes to be pinged and answer with the default options."""
    configs = {block.lang: block for block in blocks if block.lang in ("nginx", "caddy")}
    assert set(configs) == {"nginx", "caddy"}, sorted(configs)
    for block in configs.values():
        text = re.sub(r"#.*", "", block.text)
        assert text.count("{") == text.count("}"), f"{block}: unbalanced braces"
    nginx = re.sub(r"#.*", "", configs["nginx"].text)
    for line in filter(None, (line.strip() for line in nginx.splitlines())):
        assert line.endswith((";", "{", "}")), f"{configs['nginx']}: {line!r} lacks a ';'"
    for needed in ("proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;",
                   "proxy_set_header Connection $connection_upgrade;"):
        assert needed in nginx, needed
    defaults = roomer.Config()
    assert defaults.ping_interval is not None
    quiet = defaults.ping_interval + defaults.ping_timeout
    timeouts = [int(seconds) for seconds in re.findall(r"proxy_(?:read|send)_timeout (\d+)s;",
                                                      nginx)]
    assert len(timeouts) == 2 and min(timeouts) > quiet, (timeouts, quiet)
    assert "reverse_proxy 127.0.0.1:8080" in configs["caddy"].text
