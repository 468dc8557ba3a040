"""Tasks register themselves on import (register_task at the end of each module); every module of
this package is imported here, so adding a task is adding a module, nothing else."""

import importlib
import pkgutil

from .base import TASKS, EvalContext, Task, register_task

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TASKS", "EvalContext", "Task", "register_task"]
