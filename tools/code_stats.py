"""Figures of the hfadapt package a reviewer asks for: the share of function parameters typed `Any`
(target: under 10 %), modules per package, the longest functions and the files over 400 lines.

    python tools/code_stats.py                 # this checkout
    python tools/code_stats.py --top 40        # more rows per list
    python tools/code_stats.py --package DIR   # another tree (an older checkout's hfadapt/)

A parameter counts as `Any` when its annotation is exactly `Any` (or `typing.Any`); *args/**kwargs
count like the others; self/cls and unannotated parameters are reported apart.
"""

from __future__ import annotations

import argparse
import ast
from collections import Counter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hfadapt"


def _is_any(annotation: ast.expr | None) -> bool:
    if annotation is None:
        return False
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):  # "Any" in quotes
        return annotation.value.strip() in ("Any", "typing.Any")
    return (isinstance(annotation, ast.Name) and annotation.id == "Any") or (
        isinstance(annotation, ast.Attribute) and annotation.attr == "Any"
    )


def count(path: Path) -> tuple[int, int, int]:
    """(parameters, typed Any, unannotated) of every function and method in one file."""
    total = anys = bare = 0
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Lambda):
            continue
        a = node.args
        params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *([a.vararg] if a.vararg else []), *([a.kwarg] if a.kwarg else [])]
        for p in params:
            if p.arg in ("self", "cls"):
                continue
            total += 1
            anys += _is_any(p.annotation)
            bare += p.annotation is None
    return total, anys, bare


def longest_functions(path: Path) -> list[tuple[int, str]]:
    """(lines, qualified name) of every function and method in one file."""
    out = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((child.end_lineno - child.lineno + 1, f"{prefix}{child.name}"))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(ast.parse(path.read_text(), filename=str(path)), "")
    return out


def main() -> None:
    global PACKAGE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--package", type=Path, default=PACKAGE)
    args = parser.parse_args()
    PACKAGE = args.package.resolve()
    every = sorted(PACKAGE.rglob("*.py"))  # the Any share counts the shipped metric scripts too
    files = [p for p in every if p.parent.parent != PACKAGE / "metrics"]  # the package's own modules
    per_file: Counter[str] = Counter()
    total = anys = bare = 0
    for path in every:
        t, n, b = count(path)
        total, anys, bare = total + t, anys + n, bare + b
        if n:
            per_file[str(path.relative_to(PACKAGE.parent))] = n
    print(f"parameters: {total}; typed Any: {anys} ({100 * anys / max(total, 1):.1f} %); unannotated: {bare}")
    for name, n in per_file.most_common(args.top):
        print(f"  {n:4d}  {name}")
    packages: Counter[str] = Counter(
        "/".join(p.relative_to(PACKAGE).parts[:-1]) or "(top)" for p in files if p.name != "__init__.py"
    )
    print("modules per package: " + ", ".join(f"{k} {v}" for k, v in sorted(packages.items())))
    funcs = sorted(((n, f"{p.relative_to(PACKAGE.parent)}:{name}") for p in files for n, name in longest_functions(p)), reverse=True)
    print("longest functions: " + ", ".join(f"{name} {n}" for n, name in funcs[: min(args.top, 5)]))
    big = sorted(((len(p.read_text().splitlines()), str(p.relative_to(PACKAGE.parent))) for p in files), reverse=True)
    print("files over 400 lines: " + (", ".join(f"{name} {n}" for n, name in big if n > 400) or "none"))


if __name__ == "__main__":
    main()
