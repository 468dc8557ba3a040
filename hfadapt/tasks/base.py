"""What a task module provides, the context its evaluation receives, and the task registry.

Task modules must not import torch/transformers at module level: `hfadapt validate` loads them
to check a recipe without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from hfadapt.tasks.checks import common_problems
from hfadapt.core.recipe import DataSection, ModelSection, register_task_recipe
from hfadapt.core import task_source
from hfadapt.core.registry import Registry

if TYPE_CHECKING:
    from hfadapt.core.recipe import Recipe


@dataclass(frozen=True)
class EvalContext:
    """Everything a task's evaluation may need besides the model and the batches."""

    accelerator: Any
    recipe: "Recipe"
    processor: Any  # tokenizer / image processor the split was preprocessed with
    info: Any  # the task's label information (LabelInfo), or None
    dataset: Any  # the preprocessed split the dataloader iterates, whole (not one process's shard)
    split: str  # "validation" or "test"
    metric_names: tuple[str, ...]
    run_dir: Path | None = None  # where evaluation artefacts go (causal-lm generations); None: nowhere
    step: int | None = None  # optimizer step of this evaluation, None outside training
    evaluation: int = 0  # 1, 2, ... for the evaluations of one training process; 0 outside training
    predictions_file: Path | None = None  # the final evaluation: per-example results go here (predictions.py)
    order: tuple[int, ...] | None = None  # the dataloader's row order when not dataset order (grouping.eval_order)

    def in_dataset_order(self, items: Any) -> Any:
        """Per-row results gathered in the dataloader's order (a tensor or a list) back in dataset order."""
        from hfadapt.data.grouping import in_input_order

        return in_input_order(self.order, items)


class Task(Protocol):
    name: str
    modality: str  # "text" or "image": decides which adapter methods fit
    auto_class: str  # the transformers Auto* class of the model head
    peft_task_type: str | None  # peft TaskType name (SEQ_CLS, CAUSAL_LM, ...), None where peft has none
    data_model: type[DataSection]  # the task's `data` section: its columns and settings
    model_model: type[ModelSection]  # the task's `model` section: ModelSection unless its models take settings of their own
    extra_result_keys: tuple[str, ...]  # result keys computed besides metric modules (e.g. "perplexity")
    pipeline_tag: str  # the Hub's pipeline tag for model cards (one the Hub accepts)
    card_example: str  # an input for the usage snippet of model cards
    # Optional, looked up with getattr: count_units(batch, processor) -> {unit: amount} for the throughput figures
    # (throughput.py; default: non-pad tokens, e.g. an audio task returns {"audio_seconds": ...}), and
    # report_section(data) -> HTML for `hfadapt report` (report.py; default: one registered there, or generic),
    # and liger_kernel = True where train.liger_kernel may patch the task's model (liger.py; default False).

    def check(self, recipe: "Recipe") -> list[str]:
        """Recipe problems across sections this task can see without loading anything (field path: message)."""

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

    def evaluate(self, ctx: EvalContext, model: Any, dataloader: Any) -> dict:
        """Loss and metrics over a prepared dataloader, each example counted once across processes."""

    def predict(self, model: Any, processor: Any, items: list[str], recipe: "Recipe", info: Any) -> list[dict]:
        """Predictions for one chunk of user inputs, one dict per input."""

    def preprocess(self, ds: Any, split: str, processor: Any, recipe: "Recipe", info: Any, train: bool) -> Any:
        """Raw split -> model-ready dataset (datasets.map, cached)."""

    def collator(self, processor: Any) -> Callable[[list[dict]], dict]: ...

    def encode_inputs(self, items: list[str], processor: Any, recipe: "Recipe") -> dict:
        """User inputs of `hfadapt predict` (text strings, image paths) -> a model batch."""


TASKS: Registry[Task] = Registry("task", known=task_source.task_names, load=task_source.load_task)


def get_task(name: str, field: str | None = "task") -> Task:
    """The task registered as `name`, its module imported on first use."""
    return TASKS.get(name, field=field)


def register_task(task: Task) -> Task:
    """Add a task to the registry and give it a recipe model of its own (task-owned data and model
    fields, the shared cross-field checks, then the task's own)."""
    TASKS.register(task.name)(task)
    register_task_recipe(
        task.name, task.data_model, lambda recipe: common_problems(recipe, task) + task.check(recipe),
        # ModelSection for tasks that don't declare their own (the Task base class gives that default)
        model_model=getattr(task, "model_model", ModelSection),
    )
    return task
