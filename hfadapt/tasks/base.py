"""What a task module provides, and the registry tasks add themselves to.

Task modules must not import torch/transformers at module level: `hfadapt validate` loads them
to check a recipe without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

from ..registry import Registry

if TYPE_CHECKING:
    from ..recipe import Recipe


class Task(Protocol):
    name: str
    modality: str  # "text" or "image": decides which adapter methods fit
    auto_class: str  # the transformers Auto* class of the model head
    peft_task_type: str | None  # peft TaskType name (SEQ_CLS, CAUSAL_LM, ...), None where peft has none
    # Optional: result keys the task computes itself besides metric modules (e.g. "perplexity"),
    # accepted by eval.best_metric: extra_result_keys: tuple[str, ...]

    def check(self, recipe: "Recipe") -> list[str]:
        """Recipe problems this task can see without loading anything (field path: message)."""

    def columns(self, recipe: "Recipe", with_labels: bool = True) -> dict[str, str]:
        """Dataset columns the task reads -> the recipe field that names each (for error messages)."""

    def default_metrics(self, recipe: "Recipe") -> list[str]: ...

    def load_processor(self, recipe: "Recipe", path: str | None = None) -> Any:
        """Tokenizer or image processor of the base model (or of a run directory)."""

    def label_info(self, train: Any, recipe: "Recipe") -> Any:
        """What the data tells the model besides examples (label names for classifiers), or None."""

    def info_from_config(self, config: Any) -> Any:
        """The same information read back from a saved model config (for eval/predict on a run)."""

    def model_kwargs(self, info: Any) -> dict:
        """Extra from_pretrained/from_config arguments (num_labels, id2label, ...)."""

    def evaluate(self, accelerator: Any, model: Any, dataloader: Any, info: Any, metric_names: list[str]) -> dict:
        """Loss and metrics over a prepared dataloader, each example counted once across processes."""

    def predict(self, model: Any, processor: Any, items: list[str], recipe: "Recipe", info: Any) -> list[dict]:
        """Predictions for one chunk of user inputs, one dict per input."""

    def preprocess(self, ds: Any, split: str, processor: Any, recipe: "Recipe", info: Any, train: bool) -> Any:
        """Raw split -> model-ready dataset (datasets.map, cached)."""

    def collator(self, processor: Any) -> Callable[[list[dict]], dict]: ...

    def encode_inputs(self, items: list[str], processor: Any, recipe: "Recipe") -> dict:
        """User inputs of `hfadapt predict` (text strings, image paths) -> a model batch."""


TASKS: Registry[Task] = Registry("task")
