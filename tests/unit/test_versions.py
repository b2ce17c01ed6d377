"""Versions are compared as versions, never as strings: "1.10.0" < "1.9.0" as text.

kiln orders exactly one kind of version, Packer's (PackerVersion: numeric fields); component versions
(manifest, report diff) are only ever compared for equality. The scans below keep it so: an ordering
comparison, sorted(), min(), max() or .sort() over anything named like a version must go through a
version type, and no bake script orders versions with [[ < ]] or -lt.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from kiln.image.packer import PackerVersion
from kiln.paths import REPO_ROOT
from kiln.report.diff import diff_runs

PYTHON_SOURCES = ("kiln", "kiln_node", "kiln_bridge", "benchmarks", "components", "tests/infra", "tasks.py")
SHELL_SOURCES = ("components/*/bake.sh", "components/*/package/*.sh", "provision/*.sh", "scripts/setup",
                 "scripts/test")
VERSION_TYPES = {"PackerVersion"}


@pytest.mark.parametrize(("low", "high"), [("1.9.9", "1.10.0"), ("1.6.10", "1.7.0"), ("1.11.2", "1.11.10"),
                                           ("Packer v1.2.0", "Packer v10.0.0")])
def test_packer_versions_order_by_number(low: str, high: str) -> None:
    assert PackerVersion.parse(low) < PackerVersion.parse(high)
    assert max(PackerVersion.parse(v) for v in (high, low)) == PackerVersion.parse(high)


def test_plugins_start_at_1_7_whatever_the_digits() -> None:
    assert not PackerVersion.parse("Packer v1.6.10").has_plugins  # "1.6.10" > "1.6.9" > "1.10" as text
    assert PackerVersion.parse("Packer v1.10.0").has_plugins and PackerVersion.parse("1.7.0").has_plugins
    assert sorted(["1.10.0", "1.9.0"]) == ["1.10.0", "1.9.0"]  # what a string sort would do
    assert sorted(PackerVersion.parse(v) for v in ["1.10.0", "1.9.0"]) == [PackerVersion(1, 9, 0),
                                                                           PackerVersion(1, 10, 0)]


def test_component_versions_are_compared_for_equality_only() -> None:
    """The report says a version changed, never that it went up or down (Debian's 3.8.0-11+deb12u2
    vs 3.8.0-11+deb12u10 would order wrongly as text)."""
    from report_samples import all_passing_run, clone

    previous = all_passing_run()
    current = clone(previous)
    current.entries[0].components["zookeeper"] = "3.8.0-11+deb12u10"
    (change,) = diff_runs(previous, current).versions
    assert (change.before, change.after) == ("3.8.0-11+deb12u2", "3.8.0-11+deb12u10")


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | \
        {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}


def _typed(node: ast.AST) -> bool:
    """The expression builds or parses a version type (PackerVersion(...), PackerVersion.parse(...))."""
    return bool(_names(node) & VERSION_TYPES)


def version_orderings(root: Path = REPO_ROOT) -> list[str]:
    found = []
    for source in PYTHON_SOURCES:
        base = root / source
        files = [base] if base.is_file() else sorted(base.rglob("*.py")) if base.is_dir() else []
        for path in files:
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                compares = isinstance(node, ast.Compare) and any(
                    isinstance(op, ast.Lt | ast.LtE | ast.Gt | ast.GtE) for op in node.ops)
                sorts = isinstance(node, ast.Call) and (
                    getattr(node.func, "id", "") in ("sorted", "min", "max")
                    or getattr(node.func, "attr", "") == "sort")
                if not (compares or sorts) or not any("version" in n.lower() for n in _names(node)):
                    continue
                if not _typed(node):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)[:100]}")
    return found


def test_no_python_code_orders_versions_as_text() -> None:
    assert version_orderings() == []


def test_the_scan_sees_a_string_comparison(tmp_path: Path) -> None:
    (tmp_path / "kiln").mkdir()
    (tmp_path / "kiln" / "bad.py").write_text(
        "def newest(versions, version):\n"
        "    ok = PackerVersion.parse(version) >= PackerVersion(1, 7, 0)\n"
        "    return max(versions) if version >= '1.7' else sorted(versions)[-1]\n", encoding="utf-8")
    assert sorted(version_orderings(tmp_path)) == [
        "kiln/bad.py:3: max(versions)", "kiln/bad.py:3: sorted(versions)", "kiln/bad.py:3: version >= '1.7'"]


SHELL_ORDERING = re.compile(r"(\[\[|\(\()[^\n]*version[^\n]*( < | > | -lt | -gt | -le | -ge )", re.I)


def test_no_bake_script_orders_versions_as_text() -> None:
    """In [[ ]] `<` compares strings; `-lt` wants integers. A script that must order versions uses
    `dpkg --compare-versions` (or `sort -V`)."""
    files = [p for pattern in SHELL_SOURCES for p in sorted(REPO_ROOT.glob(pattern))]
    assert len(files) >= 10
    found = [f"{p.relative_to(REPO_ROOT)}: {m.group(0)}" for p in files
             for m in SHELL_ORDERING.finditer(p.read_text(encoding="utf-8"))]
    assert found == []
    assert SHELL_ORDERING.search('if [[ "$version" < "3.8" ]]; then')
