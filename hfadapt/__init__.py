"""hfadapt: declarative parameter-efficient fine-tuning of Hub models.

Everything here loads on first use, so `import hfadapt` is instant and importing one module of the
package (`hfadapt.core.recipe`) does not drag in the floors above it.
"""

from __future__ import annotations

from typing import Any

from hfadapt import tasks as _tasks  # noqa: F401  (installs task discovery for the schema; imports no task)

__all__ = [
    "Recipe", "load_recipe", "HfadaptError", "train", "predict", "evaluate_run", "list_targets", "push", "merge",
    "export",
    "TrainResult", "serve", "build_app", "tune", "__version__",
]
__version__ = "0.1.0"

# public name -> (module, attribute); the import-rule test reads these module names.
_LAZY = {
    "Recipe": ("hfadapt.core.recipe", "Recipe"),
    "HfadaptError": ("hfadapt.core.errors", "HfadaptError"),
    "load_recipe": ("hfadapt.publishing.loading", "load_recipe"),
    "train": ("hfadapt.training.coordinator", "train"),
    "TrainResult": ("hfadapt.training.coordinator", "TrainResult"),
    "predict": ("hfadapt.inference.run_model", "predict"),
    "evaluate_run": ("hfadapt.inference.run_model", "evaluate_run"),
    "list_targets": ("hfadapt.insight.targets", "list_targets"),
    "push": ("hfadapt.publishing.hub", "push"),
    "merge": ("hfadapt.inference.merge", "merge"),
    "export": ("hfadapt.inference.export", "export"),
    "serve": ("hfadapt.serving.app", "serve"),
    "build_app": ("hfadapt.serving.app", "build_app"),
    "tune": ("hfadapt.tuning.study", "tune"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'hfadapt' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(__all__)
