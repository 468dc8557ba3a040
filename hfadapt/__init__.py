"""hfadapt: declarative parameter-efficient fine-tuning of Hub models.

Heavy libraries (torch, transformers, peft) load on first use, so `import hfadapt` and
`Recipe` stay instant.
"""

from __future__ import annotations

from typing import Any

from . import tasks  # noqa: F401  (registers every task and its recipe model; no torch)
from .errors import HfadaptError
from .loading import load_recipe
from .recipe import Recipe

__all__ = [
    "Recipe", "load_recipe", "HfadaptError", "train", "predict", "evaluate_run", "list_targets", "push", "merge",
    "TrainResult", "__version__",
]
__version__ = "0.1.0"

_LAZY = {
    "train": ("training", "train"),
    "TrainResult": ("training", "TrainResult"),
    "predict": ("inference", "predict"),
    "evaluate_run": ("inference", "evaluate_run"),
    "list_targets": ("targets", "list_targets"),
    "push": ("hub", "push"),
    "merge": ("merge", "merge"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'hfadapt' has no attribute '{name}'")
