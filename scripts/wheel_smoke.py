"""Smoke-test an installed roomer wheel: the compiled extensions really load, then a part
of the test suite runs against the installed package.

Run it with the Python of the environment the wheel is installed in, from a folder that
holds copies of the checkout's ``tests/``, ``pyproject.toml`` and this script (and not its
``roomer/``, which would shadow the wheel)::

    python scripts/wheel_smoke.py [extra pytest arguments]

scripts/check_wheel.sh lays that folder out in a fresh venv with no compiler on the PATH;
cibuildwheel does the same from ``[tool.cibuildwheel]`` (``test-sources``) in
pyproject.toml. Exits with pytest's status, or 1 if the extensions are not the compiled
ones.

Which tests, and why these (about a minute on two cores):

- test_packaging: every module imports and its ``__all__`` holds, ``roomer.COMPILED``,
  the typing files (``py.typed``, ``.pyi``, ``.pxd``) ship, the package is the installed one.
- test_codec: the compiled codec against its pure-Python twin (property tests).
- test_fanout: the compiled fan-out against its twin.
- test_fanout_real: the compiled fan-out on real picows sockets, the part compiled against
  picows' C layout, so the first to break beside a wrong picows.
- test_server_rooms: a real server on loopback: joins, presence, broadcast, direct sends.
- test_static_files: the package data (roomer.js, roomer.d.ts, the demo page) shipped and
  served.

The rest of the suite needs services (Redis, NATS, Chromium) or minutes of time; the full
suite runs against the built wheel in scripts/test.sh.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SMOKE_TESTS = [
    "tests/test_packaging.py",
    "tests/test_codec.py",
    "tests/test_fanout.py",
    "tests/test_fanout_real.py",
    "tests/test_server_rooms.py",
    "tests/test_static_files.py",
]


def check_compiled() -> list[str]:
    """What is wrong with the installed package's extensions (nothing: an empty list)."""
    os.environ.pop("ROOMER_NO_EXTENSIONS", None)
    import roomer
    from roomer import codec, fanout

    problems = []
    package = Path(roomer.__file__).resolve().parent
    if Path.cwd().resolve() in package.parents:
        problems.append(f"roomer was imported from the working folder ({package}), "
                        "not from the installed wheel")
    if roomer.COMPILED is not True:
        problems.append(f"roomer.COMPILED is {roomer.COMPILED!r}: the pure twins are in use")
    for name, module in (("codec", codec), ("fanout", fanout)):
        if not module.COMPILED:
            problems.append(f"roomer.{name} runs its pure twin")
    for name in ("_codec", "_fanout"):
        try:
            module = __import__(f"roomer.{name}", fromlist=["_"])
        except ImportError as exc:
            problems.append(f"roomer.{name} does not import: {exc}")
            continue
        suffix = Path(module.__file__ or "").suffix
        if suffix not in (".so", ".pyd"):
            problems.append(f"roomer.{name} is {module.__file__}, not an extension module")
        else:
            print(f"wheel_smoke: roomer.{name}: {module.__file__}")
    return problems


def main(argv: list[str]) -> int:
    problems = check_compiled()
    if problems:
        for problem in problems:
            print(f"wheel_smoke: {problem}", file=sys.stderr)
        return 1
    missing = [path for path in ("pyproject.toml", *SMOKE_TESTS) if not Path(path).is_file()]
    if missing:
        print(f"wheel_smoke: run it from a folder holding tests/ and pyproject.toml "
              f"(missing: {', '.join(missing)})", file=sys.stderr)
        return 2
    env = {**os.environ, "ROOMER_TEST_INSTALLED": "1"}
    command = [sys.executable, "-m", "pytest", "-c", "pyproject.toml", "--rootdir", ".",
               "-p", "no:cacheprovider", "-q", *SMOKE_TESTS, *argv]
    return subprocess.run(command, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
