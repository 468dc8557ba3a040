"""Where the schema finds task modules without importing the floor above it.

The tasks package (`hfadapt.tasks`) installs its discovery here when it is imported (the top-level
`hfadapt` package imports it), so the recipe schema can load just the module of the task a recipe
names: `hfadapt validate` builds one task's recipe model, not eight.
"""

from __future__ import annotations

from typing import Callable

_names: Callable[[], list[str]] = lambda: []
_load: Callable[[str], None] = lambda name: None


def install(names: Callable[[], list[str]], load: Callable[[str], None]) -> None:
    """Called once by hfadapt.tasks: `names()` lists every task, `load(name)` imports its module."""
    global _names, _load
    _names, _load = names, load


def task_names() -> list[str]:
    return _names()


def load_task(name: str) -> None:
    """Import the module of task `name` (it registers itself); unknown names are left to the caller."""
    if name in _names():
        _load(name)


def load_all() -> None:
    for name in _names():
        _load(name)
