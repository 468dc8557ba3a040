"""The package's modules form layers: no import cycle, function-level imports included.

Imports under `if TYPE_CHECKING:` never run and are left out; every other `import` statement
counts, wherever it sits (module level, inside a function or a method).
"""

from __future__ import annotations

import ast
from pathlib import Path

import hfadapt

PACKAGE = Path(hfadapt.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, modules: set[str]) -> set[str]:
    """hfadapt modules that `path` imports (the most specific existing module of each import)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def resolve(target: str) -> None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hfadapt"):
                    resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            if origin.startswith("hfadapt"):
                for alias in node.names:  # `from . import tasks` imports the module hfadapt.tasks
                    candidate = f"{origin}.{alias.name}"
                    resolve(candidate if candidate in modules else origin)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def import_graph() -> dict[str, set[str]]:
    files = [p for p in PACKAGE.rglob("*.py") if not p.name.startswith("_") or p.name == "__init__.py"]
    files = [p for p in files if "metrics" not in p.relative_to(PACKAGE).parts[:1] or p.parent == PACKAGE / "metrics"]
    modules = {_module_name(p) for p in files}
    return {_module_name(p): _imports(p, modules) for p in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = dfs(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = dfs(node)
            if cycle:
                return cycle
    return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_import_graph_is_built_from_real_imports() -> None:
    graph = import_graph()
    assert "hfadapt.training" in graph and "hfadapt.tasks.text_classification" in graph
    assert "hfadapt.tasks.base" in graph["hfadapt.tasks.text_classification"]
    assert "hfadapt.loop" in graph["hfadapt.training"]  # a function-level import counts


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_recipe_schema_is_the_ground_floor() -> None:
    """recipe.py reaches neither tasks nor the Hub nor anything that imports torch."""
    below = reachable(import_graph(), "hfadapt.recipe")
    assert below <= {"hfadapt.errors", "hfadapt.registry", "hfadapt.shipped"}, below
