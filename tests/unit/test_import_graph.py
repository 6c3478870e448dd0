"""The import graph of ``zerolabel``: no module imports, directly or through others, a module
that imports it back, so every module sits on a floor above everything it uses.

Read with the standard library's ``ast`` from the source files (nothing is imported): an edge
``a -> b`` for every ``import zerolabel.b`` / ``from zerolabel.b import x`` in ``a``, wherever
it stands (top level, inside a function, under ``TYPE_CHECKING``), plus the edge to each
package's ``__init__`` that importing a submodule runs first. ``from zerolabel.pkg import name``
counts as an edge to ``pkg.name`` when that is a module, else to ``pkg`` itself.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "worker"
PACKAGE = "zerolabel"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(tree: ast.AST, name: str, is_package: bool) -> Iterator[tuple[str, str | None]]:
    """(module, imported name or None) of every import of the package in a module's tree."""
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                yield module, alias.name


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (its parents' ``__init__`` included)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for module, imported in _imported(tree, name, is_package):
            if module != PACKAGE and not module.startswith(PACKAGE + "."):
                continue
            submodule = f"{module}.{imported}" if imported else ""
            target = submodule if submodule in modules else module
            while target not in modules and "." in target:
                target = target.rpartition(".")[0]
            chain = target.split(".")
            for depth in range(2, len(chain)):  # importing a.b.c runs a.b's __init__ first
                parent = ".".join(chain[:depth])
                if parent in modules and parent != name and not name.startswith(parent + "."):
                    graph[name].add(parent)
            if target != name:
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_is_read_whole():
    graph = import_graph()
    assert {"zerolabel.settings", "zerolabel.queue.worker", "zerolabel.cli.main"} <= set(graph)
    assert "zerolabel.contract" in graph["zerolabel.pipeline"]


def test_no_module_imports_one_that_imports_it_back():
    found = cycles(import_graph())
    assert found == [], "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_a_circle_is_found_where_there_is_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
