"""The package's floors: sub-packages import only from the floors below them, and no module is in a
cycle. Every import counts wherever it sits (module level, inside a function), and so do modules
loaded with `importlib.import_module`; imports under `if TYPE_CHECKING:` never run and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import hfadapt

PACKAGE = Path(hfadapt.__file__).resolve().parent

# Floor by floor, bottom up: each package may import itself and the packages listed for it. The
# building blocks (metrics, modeling, data, rundir) share the second floor with the edges written out.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "metrics": {"core"},
    "modeling": {"core"},
    "data": {"core", "modeling"},
    "rundir": {"core", "modeling"},
    "tasks": {"core", "metrics", "modeling", "data", "rundir"},
    "publishing": {"core", "metrics", "modeling", "data", "rundir", "tasks"},
    "training": {"core", "metrics", "modeling", "data", "rundir", "tasks", "publishing"},
    "inference": {"core", "metrics", "modeling", "data", "rundir", "tasks", "publishing", "training"},
    "ui": {"core", "metrics", "modeling", "data", "rundir", "tasks", "publishing", "training", "inference", "insight", "tuning"},
    "serving": {"core", "metrics", "modeling", "data", "rundir", "tasks", "publishing", "training", "inference"},
    "tuning": {"core", "metrics", "modeling", "data", "rundir", "tasks", "publishing", "training"},
    "insight": {"core", "metrics", "modeling", "data", "rundir", "tasks", "publishing", "training", "inference", "tuning"},
}
TOP = {"hfadapt", "hfadapt.cli", "hfadapt.__main__"}  # the public API and the command line: may import anything


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_import_module(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id == "import_module"
    )


def _imports(path: Path, modules: set[str]) -> set[str]:
    """hfadapt modules that `path` imports (the most specific existing module of each import)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()

    def resolve(target: str) -> None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    dynamic = False

    def visit(node: ast.AST) -> None:
        nonlocal dynamic
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
                for alias in node.names:  # `from hfadapt.tasks import base` imports the module hfadapt.tasks.base
                    candidate = f"{origin}.{alias.name}"
                    resolve(candidate if candidate in modules else origin)
        elif _is_import_module(node):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                resolve(arg.value)
            else:
                dynamic = True
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    if dynamic:
        # A computed module name: count every module the file names in a string (a lazy table), and,
        # for a package that imports its own modules by name, every module of that package.
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in modules:
                found.add(node.value)
        if path.name == "__init__.py":
            found |= {m for m in modules if m.rpartition(".")[0] == name}
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = [p for p in PACKAGE.rglob("*.py") if not p.name.startswith("_") or p.name in ("__init__.py", "__main__.py")]
    # the metric scripts are loaded by `evaluate` from their folders, not imported
    files = [p for p in files if "metrics" not in p.relative_to(PACKAGE).parts[:1] or p.parent == PACKAGE / "metrics"]
    modules = {_module_name(p) for p in files}
    return {_module_name(p): _imports(p, modules) for p in files}


def floor(module: str) -> str | None:
    """The package of a module below the top ('core' for hfadapt.core.recipe), None for the top."""
    if module in TOP:
        return None
    return module.split(".")[1]


def rule_breaks(graph: dict[str, set[str]]) -> list[str]:
    breaks = []
    for module, imported in sorted(graph.items()):
        own = floor(module)
        if own is None:
            continue
        assert own in ALLOWED, f"{module}: package '{own}' has no rule in ALLOWED"
        for target in sorted(imported):
            other = floor(target)
            if other is None or (other != own and other not in ALLOWED[own]):
                breaks.append(f"{module} -> {target}")
    return breaks


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
    assert "hfadapt.training.coordinator" in graph and "hfadapt.tasks.text_classification" in graph
    assert "hfadapt.tasks.base" in graph["hfadapt.tasks.text_classification"]
    assert "hfadapt.training.loop" in graph["hfadapt.training.coordinator"]  # a function-level import counts
    # importlib: the tasks package loads its task modules by name, the API its lazy names
    assert "hfadapt.tasks.causal_lm" in graph["hfadapt.tasks"]
    assert "hfadapt.training.coordinator" in graph["hfadapt"]


def test_every_package_has_a_floor() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(ALLOWED)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_rules_catch_an_import_from_a_higher_floor() -> None:
    graph = {"hfadapt.core.recipe": {"hfadapt.tasks.base"}, "hfadapt.tasks.base": {"hfadapt.core.recipe"}}
    assert rule_breaks(graph) == ["hfadapt.core.recipe -> hfadapt.tasks.base"]
    assert rule_breaks({"hfadapt.tasks.base": {"hfadapt.cli"}}) == ["hfadapt.tasks.base -> hfadapt.cli"]


def test_imports_only_go_down() -> None:
    breaks = rule_breaks(import_graph())
    assert not breaks, "imports from a higher floor:\n" + "\n".join(breaks)


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_recipe_schema_is_the_ground_floor() -> None:
    """The schema reaches neither tasks nor the Hub nor anything that imports torch."""
    below = reachable(import_graph(), "hfadapt.core.recipe")
    assert below <= {"hfadapt.core.errors", "hfadapt.core.registry", "hfadapt.core.search", "hfadapt.core.shipped", "hfadapt.core.task_source"}, below
