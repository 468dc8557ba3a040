"""What a task module provides, and the registry tasks add themselves to.

Task modules must not import torch/transformers at module level: `hfadapt validate` loads them
to check a recipe without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

from ..registry import Registry

if TYPE_CHECKING:
    from ..labels import LabelInfo
    from ..recipe import Recipe


class Task(Protocol):
    name: str
    modality: str  # "text" or "image": decides which adapter methods fit
    auto_class: str  # the transformers Auto* class of the model head

    def check(self, recipe: "Recipe") -> list[str]:
        """Recipe problems this task can see without loading anything (field path: message)."""

    def columns(self, recipe: "Recipe", with_labels: bool = True) -> list[str]:
        """Dataset columns the task reads."""

    def default_metrics(self, recipe: "Recipe") -> list[str]: ...

    def load_processor(self, recipe: "Recipe", path: str | None = None) -> Any:
        """Tokenizer or image processor of the base model (or of a run directory)."""

    def label_info(self, train: Any, recipe: "Recipe") -> "LabelInfo": ...

    def preprocess(self, ds: Any, split: str, processor: Any, recipe: "Recipe", labels: "LabelInfo", train: bool) -> Any:
        """Raw split -> model-ready dataset (datasets.map, cached)."""

    def collator(self, processor: Any) -> Callable[[list[dict]], dict]: ...

    def encode_inputs(self, items: list[str], processor: Any, recipe: "Recipe") -> dict:
        """User inputs of `hfadapt predict` (text strings, image paths) -> a model batch."""


TASKS: Registry[Task] = Registry("task")
