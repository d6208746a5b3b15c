"""MkDocs hook: the reference tables that are generated from the code at build time.

A page asks for a table with a marker line, ``<!-- roomer:NAME -->``; the hook replaces it
before the page is converted, so the options, the flags and the metrics on the site are
always those of the code being documented (they cannot drift). An unknown marker fails
the build.

- ``options``: every field of ``roomer.Config`` (its type, default, flag and help, from
  the field metadata that ``roomer serve`` derives its flags from);
- ``serve-flags`` / ``bench-flags``: the argparse parsers of ``roomer serve`` and
  ``roomer bench``;
- ``metrics``: the series of ``GET /metrics`` (``roomer.metrics``) and the error codes
  counted there.

The checkout is put first on ``sys.path``, so the build documents the source it sits in
(the pure-Python twins stand in where the extensions are not built: nothing here depends
on them).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

MARKER = re.compile(r"^<!-- roomer:([a-z-]+) -->$", re.MULTILINE)


class UnknownMarker(ValueError):
    pass


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(value: str) -> str:
    return f"`{value}`" if value else ""


def _size(value: int) -> str:
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if value >= 1 << shift and value % (1 << shift) == 0:
            return f"{value >> shift} {unit}"
    return str(value)


def _default(field: dataclasses.Field[Any]) -> str:
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = field.default_factory()  # type: ignore[misc]
    else:
        value = field.default
    shown = f"`{value!r}`"
    help_text = field.metadata.get("help", "")
    if (isinstance(value, int) and not isinstance(value, bool) and value >= 1024
            and ("bytes" in help_text or field.metadata.get("metavar") == "BYTES")):
        shown += f" ({_size(value)})"
    return shown


def _type(name: str) -> str:
    from roomer import Config

    kind = Config.option_type(name)
    label = getattr(kind, "__name__", str(kind))
    if label == "tuple":
        label = "(count, seconds)"
    elif label == "Callable":
        label = "callable"
    elif label == "Mapping":
        label = "mapping"
    return label + (" or None" if Config.allows_none(name) else "")


def options_table() -> str:
    from roomer import Config

    rows = ["| option | type | default | `roomer serve` flag | what it does |",
            "| --- | --- | --- | --- | --- |"]
    for field in dataclasses.fields(Config):
        meta = field.metadata
        anchor = f'<span id="option-{field.name}"></span>'  # guides link to options here
        rows.append(
            f"| {anchor}`{field.name}` | {_cell(_type(field.name))} "
            f"| {_cell(_default(field))} | {_code(meta.get('flag') or '')} "
            f"| {_cell(meta['help'])} |")
    return "\n".join(rows)


def _flags_table(parser: argparse.ArgumentParser) -> str:
    rows = ["| flag | value | default | what it does |", "| --- | --- | --- | --- |"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if action.option_strings:
            flag = ", ".join(f"`{s}`" for s in action.option_strings)
        else:
            flag = f"`{action.dest}` (positional)"
        if action.nargs == 0:
            value = ""
        elif action.choices:
            value = " \\| ".join(f"`{c}`" for c in action.choices)
        else:
            value = f"`{action.metavar or action.dest.upper()}`"
        default = "" if action.default in (None, argparse.SUPPRESS) else f"`{action.default}`"
        if action.nargs == 0 and not action.default:  # a switch (None: "not given")
            default = "off"
        rows.append(f"| {flag} | {value} | {default} | {_cell(action.help or '')} |")
    return "\n".join(rows)


def serve_parser() -> argparse.ArgumentParser:
    """The ``roomer serve`` subparser of ``roomer.cli``."""
    from roomer import cli

    parser = cli._parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices["serve"]  # type: ignore[no-any-return]
    raise LookupError("roomer.cli has no serve command")


def bench_parser() -> argparse.ArgumentParser:
    from roomer.benchmark.harness import build_parser

    return build_parser()


def metrics_table() -> str:
    from roomer import metrics

    rows = ["| series | type | what it counts |", "| --- | --- | --- |"]
    for _key, name, help_text in metrics.GAUGES:
        rows.append(f"| `{name}` | gauge | {_cell(help_text)} |")
    for _key, name, help_text in metrics.COUNTERS:
        rows.append(f"| `{name}` | counter | {_cell(help_text)} |")
    for group, kind in ((getattr(metrics, "BACKPLANE_GAUGES", ()), "gauge"),
                        (getattr(metrics, "BACKPLANE_COUNTERS", ()), "counter")):
        for entry in group:
            name, help_text = entry[1], entry[-1]
            rows.append(f"| `{name}` | {kind} (with a backplane) | {_cell(help_text)} |")
    codes = ", ".join(f"`{code}`" for code in metrics.ERROR_CODES)
    rows.append(f"| `roomer_errors_total{{code=...}}` | counter | error replies sent, by code: "
                f"{codes}, `denied`, `timeout`; any other code a handler's error carries "
                "is counted as `other` |")
    return "\n".join(rows)


TABLES = {
    "options": options_table,
    "serve-flags": lambda: _flags_table(serve_parser()),
    "bench-flags": lambda: _flags_table(bench_parser()),
    "metrics": metrics_table,
}


def render(markdown: str) -> str:
    """``markdown`` with every marker replaced by its table (UnknownMarker otherwise)."""

    def table(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in TABLES:
            raise UnknownMarker(f"unknown marker <!-- roomer:{name} --> "
                                f"(known: {', '.join(sorted(TABLES))})")
        # md_in_html: the table stays markdown; the class keeps its names unbroken.
        return f'<div class="roomer-generated" markdown>\n\n{TABLES[name]()}\n\n</div>'

    return MARKER.sub(table, markdown)


def on_config(config: Any, **kwargs: Any) -> Any:
    # Here, not at import: MkDocs restores sys.path after loading a hook.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return config


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    try:
        return render(markdown)
    except UnknownMarker as exc:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"{page.file.src_path}: {exc}") from None
