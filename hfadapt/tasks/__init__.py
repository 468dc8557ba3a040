"""Tasks, one module each, found by name: task `text-classification` is module `text_classification`.

A task module registers itself when imported (`register_task` at its end). Nothing here imports a
task: the core loads the one a recipe names (`core.task_source`), so `--help` and `validate` stay fast.
Adding a task is adding a module; the shared modules below are not tasks.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from typing import Any

from hfadapt.core import task_source

SHARED_MODULES = frozenset({"base", "checks", "classification", "language", "reporting", "rewards"})


@lru_cache(maxsize=1)
def task_modules() -> dict[str, str]:
    """task name -> module name, for every task module of this package."""
    return {
        m.name.replace("_", "-"): f"{__name__}.{m.name}"
        for m in pkgutil.iter_modules(__path__)
        if m.name not in SHARED_MODULES and not m.name.startswith("_")
    }


def load_task_module(name: str) -> None:
    importlib.import_module(task_modules()[name])


task_source.install(lambda: sorted(task_modules()), load_task_module)

_FROM_BASE = ("TASKS", "EvalContext", "Task", "register_task", "get_task")
__all__ = [*_FROM_BASE, "task_modules", "load_task_module", "SHARED_MODULES"]


def __getattr__(name: str) -> Any:
    if name in _FROM_BASE:
        from hfadapt.tasks import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
