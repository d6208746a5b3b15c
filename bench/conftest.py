"""Micro-benchmark support: import roomer from this checkout, and print a closing
"ns per item, pure/compiled ratio" table (only when benchmarks are enabled)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any) -> None:
    session = getattr(terminalreporter.config, "_benchmarksession", None)
    benches = [b for b in getattr(session, "benchmarks", []) if b]
    if not benches:
        return
    groups: dict[str, dict[str, Any]] = {}
    for b in benches:
        impl = "compiled" if "[compiled" in b.name else "pure"
        groups.setdefault(b.group or b.name, {})[impl] = b
    tr = terminalreporter
    tr.write_sep("-", "roomer micro-benchmarks: median ns per item (message or delivery)")
    tr.write_line(f"{'group':<34} {'items':>6} {'pure ns':>11} {'compiled ns':>12} {'ratio':>7}")
    for group in sorted(groups, key=_group_key):
        row = groups[group]
        items = next(iter(row.values())).extra_info.get("items", 1)
        per = {k: v.stats.median * 1e9 / items for k, v in row.items()}
        pure, comp = per.get("pure"), per.get("compiled")
        ratio = f"{pure / comp:6.1f}x" if pure and comp else "    -"
        tr.write_line(f"{group:<34} {items:>6} {_fmt(pure):>11} {_fmt(comp):>12} {ratio:>7}")
    tr.write_line("ratio = pure / compiled (higher: the compiled twin is that many times faster)")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _group_key(group: str) -> tuple:
    parts = group.split()
    nums = [int(p) for p in parts if p.isdigit()]
    return (parts[0], parts[1] if len(parts) > 1 else "", *nums, group)
