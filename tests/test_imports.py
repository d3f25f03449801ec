"""No import cycle anywhere in the package.

The graph is read from the source with `ast`: every `import videogn...` and
`from videogn... import ...` (relative ones too), at module level and inside functions, is an
edge from the importing module to the module it names (`from pkg import name` goes to
`pkg.name` when that is a module, else to `pkg`). A package's `__init__` being run on the way
to a submodule is not counted: that is how Python works, not a dependency anyone wrote.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "videogn"


def module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _known(name: str, modules) -> str | None:
    """The longest prefix of a dotted name that is a module of the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imported_modules(module: str, path: Path, modules) -> set[str]:
    """Package modules that `module` imports anywhere in its source."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    root = next(iter(modules)).partition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(_known(alias.name, modules) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb level - 1 packages from this module's package
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            if base.partition(".")[0] != root:
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else _known(base, modules))
    found.discard(None)
    found.discard(module)
    return found


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    modules = module_files(package_dir)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path a -> b -> ... -> a) per strongly connected component."""
    order, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(node):  # Tarjan's algorithm; the package is far too small to need iteration
        order[node] = low[node] = len(order)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in order:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], order[target])
        if low[node] == order[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(_closed_path(graph, component))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return cycles


def _closed_path(graph, component: set[str]) -> list[str]:
    """A cycle inside a strongly connected component, found by walking until a repeat."""
    path = [min(component)]
    while True:
        step = min(t for t in graph[path[-1]] if t in component)
        if step in path:
            return path[path.index(step) :] + [step]
        path.append(step)


def test_the_package_has_no_import_cycle():
    cycles = find_cycles(import_graph(PACKAGE_DIR))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_finds_module_and_function_level_cycles(tmp_path):
    """The check above can fail: a cycle through a function-level relative import is found."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from pkg.sub.b import B\n")
    (package / "a.py").write_text("import pkg.sub.b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from ..c import C\n")
    (package / "c.py").write_text("from pkg import a\nimport os\n")
    graph = import_graph(package)
    assert graph["pkg.sub"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"}
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
    (package / "c.py").write_text("import os\n")
    assert find_cycles(import_graph(package)) == []


@pytest.mark.parametrize("module", ["videogn.data.video_reader", "videogn.data.frame_index"])
def test_leaf_modules_import_nothing_from_the_package(module):
    assert import_graph(PACKAGE_DIR)[module] == set()
