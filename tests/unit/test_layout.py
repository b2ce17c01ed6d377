"""The host package's layout rules: no import cycles, invoke only in the task layer, and nothing
below the task layer reaches up into it. Imports are read from the source (ast), nested ones too:
a cycle hidden in a function-level import is still a cycle."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from kiln.paths import REPO_ROOT

PACKAGES = ("kiln", "kiln_node", "kiln_bridge")
TASK_LAYER = "kiln.tasks"


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                out.add(candidate if candidate in known else base)
    return out


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: {i for i in _imports(path, name, known) if i in known and i != name}
            for name, path in known.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_real_imports() -> None:
    graph = _graph()
    assert "kiln.errors" in graph["kiln.config.load"]
    assert "kiln.config.schema" in graph["kiln.config.shapes"]


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_a_cycle_would_be_found() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_invoke_only_in_the_task_layer() -> None:
    known = _modules()
    users = sorted(name for name, path in known.items()
                   if not name.startswith(TASK_LAYER)
                   and any(i == "invoke" or i.startswith("invoke.") for i in _imports(path, name, known)))
    assert users == []


def test_nothing_below_the_task_layer_imports_it() -> None:
    graph = _graph()
    upward = sorted(f"{name} -> {dep}" for name, deps in graph.items() if not name.startswith(TASK_LAYER)
                    for dep in deps if dep.startswith(TASK_LAYER))
    assert upward == []


def test_baked_packages_use_only_the_standard_library_and_themselves() -> None:
    known = _modules()
    for name, path in known.items():
        if name.split(".")[0] not in ("kiln_node", "kiln_bridge"):
            continue
        own = name.split(".")[0]
        for imported in _imports(path, name, known):
            top = imported.split(".")[0]
            assert top == own or top in sys.stdlib_module_names, f"{name} imports {imported}"



def test_no_two_test_modules_share_a_name() -> None:
    """pytest imports test modules by their base name (rootdir import mode): two test_x.py in
    different folders stop the whole session at collection."""
    names = [p.name for p in (REPO_ROOT / "tests").rglob("test_*.py")]
    names += [p.name for p in (REPO_ROOT / "components").rglob("test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
