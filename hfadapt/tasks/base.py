"""The task contract (`Task`), the context a task's evaluation receives, and the task registry.

Task modules must not import torch/transformers at module level: `hfadapt validate` loads them
to check a recipe without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from hfadapt.tasks.checks import common_problems
from hfadapt.core.recipe import DataSection, ModelSection, Section, register_task_recipe
from hfadapt.core import task_source
from hfadapt.core.registry import Registry
from hfadapt.tasks.reporting import ReportInput, generic_section

T = TypeVar("T")

if TYPE_CHECKING:
    from accelerate import Accelerator
    from datasets import Dataset, IterableDataset
    from torch import Tensor
    from torch.nn import Module
    from torch.utils.data import DataLoader
    from transformers import (
        FeatureExtractionMixin,
        ImageProcessingMixin,
        PretrainedConfig,
        PreTrainedModel,
        PreTrainedTokenizerBase,
        ProcessorMixin,
    )

    from hfadapt.core.recipe import Recipe
    from hfadapt.data.labels import LabelInfo

    Split = Dataset | IterableDataset  # a split of a dataset, as loaded (streamed or not) or preprocessed
    Processor = PreTrainedTokenizerBase | ProcessorMixin | FeatureExtractionMixin | ImageProcessingMixin
    Collate = Callable[[list[dict[str, Any]]], dict[str, Any]]


@dataclass(frozen=True)
class EvalContext:
    """Everything a task's evaluation may need besides the model and the batches."""

    accelerator: Accelerator
    recipe: Recipe
    processor: Processor  # tokenizer / image processor the split was preprocessed with
    info: LabelInfo | None  # the task's label information (LabelInfo), or None
    dataset: Split  # the preprocessed split the dataloader iterates, whole (not one process's shard)
    split: str  # "validation" or "test"
    metric_names: tuple[str, ...]
    run_dir: Path | None = None  # where evaluation artefacts go (causal-lm generations); None: nowhere
    step: int | None = None  # optimizer step of this evaluation, None outside training
    evaluation: int = 0  # 1, 2, ... for the evaluations of one training process; 0 outside training
    predictions_file: Path | None = None  # the final evaluation: per-example results go here (predictions.py)
    order: tuple[int, ...] | None = None  # the dataloader's row order when not dataset order (grouping.eval_order)

    def in_dataset_order(self, items: T) -> T:
        """Per-row results gathered in the dataloader's order (a tensor or a list) back in dataset order."""
        from hfadapt.data.grouping import in_input_order

        return in_input_order(self.order, items)


class Task:
    """The task contract: every hook the core may call on a task, and nothing else.

    A task module subclasses this (or `ClassificationTask`), sets the class attributes, overrides
    the required hooks and whichever optional ones it needs, then registers one instance
    (`register_task`). The core calls the hooks directly; the defaults below are what a task that
    does not override one gets. A public name a task class adds beyond these is a contract break
    (tests/test_task_contract.py catches typos such as `plan_bacth`); helpers go in module-level
    functions or `_private` methods.
    """

    # ---- what the task is ------------------------------------------------------------------------
    name: str
    """The recipe's `task` value (`text-classification`); also the registry key."""
    modality: str
    """The kind of input, "text", "image" or "audio": decides which adapter methods fit (tasks/checks.py)."""
    auto_class: str
    """The transformers Auto* class of the model head (AutoModelForSequenceClassification, ...)."""
    peft_task_type: str | None
    """peft TaskType name (SEQ_CLS, CAUSAL_LM, ...); None where peft has none (the head then goes to modules_to_save)."""
    data_model: type[DataSection]
    """The task's `data` section of the recipe (a pydantic model): its columns and settings."""
    model_model: type[ModelSection] = ModelSection
    """The task's `model` section: ModelSection unless its models take settings of their own (the
    audio tasks' freeze_feature_encoder)."""
    pipeline_tag: str
    """The Hub's pipeline tag for model cards (one the Hub accepts)."""
    card_example: str
    """An input for the usage snippet of model cards (publishing/cards.py)."""
    extra_result_keys: tuple[str, ...] = ()
    """Result keys evaluate() computes besides the metric modules' (causal-lm: "perplexity"); eval.best_metric may name them."""
    restores_eval_order: bool = False
    """True where evaluate() puts per-row results back in dataset order (EvalContext.in_dataset_order):
    then data/grouping.py lets the evaluation loader read rows longest first (less padding). False:
    evaluation rows are read in dataset order."""
    liger_kernel: bool = False
    """True where train.liger_kernel may patch the task's model (Liger's kernels are for causal LMs;
    modeling/liger.py). False: tasks/checks.py rejects train.liger_kernel for the task."""
    fresh_heads: tuple[str, ...] = ()
    """Module names of a head the task always builds fresh (CTC's lm_head, sized to the vocabulary):
    trained fully with the adapter (modules_to_save) and never wrapped by it (modeling/adapters.py)."""
    default_best_metric: str | None = None
    """The result key that picks the best checkpoint when eval.best_metric is not set and there is an
    evaluation split (preference: "rewards/accuracies"); None: no best checkpoint unless the recipe asks."""
    reference_adapter: bool = False
    """True where training compares the adapter with a frozen reference (preference): a run that starts from
    a trained adapter (model.adapter) then also loads it frozen, as the adapter named "reference"
    (modeling/adapters.py continue_adapter). False: the starting adapter is only trained further."""
    pads_token_rows: bool = False
    """True where a task of another modality than text trains on padded token rows (image-text-to-text: text
    plus image tokens): train.group_by_length then defaults on as for text (data/grouping.py)."""
    paired_inputs: bool = False
    """True where one input of `hfadapt predict` is a file and a text (image-text-to-text: an image and its
    question): `predict RUN a.png "q1" b.png "q2"` gives two inputs, "a.png\tq1" and "b.png\tq2"
    (inference/run_model.py pairs them). False: every string is one input."""
    auto_class_from_config: bool = False
    """True where the model head depends on the base model's config (auto_class_for reads it): the core
    then loads the config before it picks the Auto* class. False: `auto_class` always."""
    step_logs: tuple[str, ...] = ()
    """Run-directory files of JSON lines, one "step" each, the task appends to while training (online-rl:
    completions.jsonl): on --resume the rows past the checkpoint's step are dropped, as the resumed session
    writes those steps again. Default: none."""
    recipe_sections: dict[str, type[Section]] = {}
    """Top-level recipe sections the task owns besides data and model, by key (online-rl: {"rl": RLSection}):
    part of the task's recipe model, defaults filled in. Default: none."""

    # ---- recipe (no torch: `hfadapt validate`) -----------------------------------------------------
    def check(self, recipe: Recipe) -> list[str]:
        """Recipe problems across sections that the task can see without loading anything, each
        "field.path: message". Called by the task's recipe model after the shared checks
        (tasks/checks.py). Default: none."""
        return []

    def columns(self, recipe: Recipe, with_labels: bool = True) -> dict[str, str]:
        """Dataset columns the task reads -> the recipe field that names each, for the data loader's
        "missing column" errors (data/sources.py); with_labels=False for `predict`/unlabelled splits. Required."""
        raise NotImplementedError(f"{type(self).__name__}.columns")

    def default_metrics(self, recipe: Recipe) -> list[str]:
        """Metric modules evaluated when eval.metrics is empty (checks, training, evaluation). Default: none
        (the loss only, plus whatever evaluate() computes itself)."""
        return []

    # ---- model and processor ---------------------------------------------------------------------------
    def load_processor(self, recipe: Recipe, path: str | None = None) -> Processor:
        """The tokenizer / image processor / feature extractor / processor of the base model, or of a run
        directory `path` (eval, predict, push). Called once per process before preprocessing. Required."""
        raise NotImplementedError(f"{type(self).__name__}.load_processor")

    def label_info(self, train: Split, recipe: Recipe) -> LabelInfo | None:
        """What the training data tells the model besides examples (label names of a classifier), read
        once from the raw train split before preprocessing. Default: None (nothing)."""
        return None

    def info_from_config(self, config: PretrainedConfig) -> LabelInfo | None:
        """The same information read back from a saved model config (eval/predict on a run, `hfadapt plan`).
        Default: None."""
        return None

    def model_kwargs(self, info: LabelInfo | None) -> dict[str, Any]:
        """Extra from_pretrained/from_config arguments that size the head (num_labels, id2label, ...),
        given label_info's result. Called when the base model loads (training, plan). Default: none."""
        return {}

    def processor_model_kwargs(self, processor: Processor) -> dict[str, Any]:
        """More from_pretrained arguments that come from the processor (CTC: vocab_size and pad id of
        the vocabulary). Called with model_kwargs when the base model loads for training. Default: none."""
        return {}

    def auto_class_for(self, config: PretrainedConfig | dict[str, Any] | None) -> str:
        """The Auto* class name for a base model whose config is `config` (a config object, a saved
        config.json as a dict, or None where none is at hand). Called wherever the core builds or names
        the model class (training, plan, targets, reload, model card). Default: `auto_class`."""
        return self.auto_class

    def configure_model(self, model: PreTrainedModel, recipe: Recipe) -> None:
        """Adjust the freshly loaded base model before quantization and the adapter (image-classification:
        a loss for soft targets). Called by modeling/models.py on every base-model load. Default: nothing."""

    def adapter_targets(self, model: PreTrainedModel, recipe: Recipe) -> tuple[list[str] | str | None, list[str]]:
        """The task's default adapter target modules (peft target_modules: names or a regex; None: the
        architecture's default, modeling/adapters.py default_targets) and modules it trains fully besides the
        head (modules_to_save), for a recipe that gives neither adapter.target_modules nor adapter.modules_to_save
        (image-text-to-text: the language model's layers, the projector with model.train_projector). Called when
        the adapter is applied (training, plan). Default: (None, [])."""
        return None, []

    def prepare_model(self, model: PreTrainedModel, recipe: Recipe) -> None:
        """Adjust the base model after the adapter is applied, before training (audio: freeze the feature
        encoder, multi-label loss); `model` is the base model inside the peft wrapper. Called once per
        training run (training/coordinator.py). Default: nothing."""

    def training_loss(self, model: Module, batch: dict[str, Any], recipe: Recipe) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss of one training micro-batch (to backpropagate) and figures to log with it ({name:
        scalar tensor}, averaged over the micro-batches of a step and over processes, logged as
        "train/<name>"). `model` is the prepared (possibly compiled or DDP-wrapped) model to call.
        Called by training/loop.py on every micro-batch. Default: `model(**batch).loss`, no figures."""
        return model(**batch).loss, {}

    def rollout(self, model: Module, batch: dict[str, Any], recipe: Recipe, step: int) -> list[dict[str, Any]]:
        """The micro-batches to train on for one batch of the train loader, in order (online-rl: the
        batch's prompts, completions sampled from `model`, their rewards and advantages; one micro-batch
        per update of rl.num_iterations). `step` is the number of optimizer steps done (what sampling is
        seeded with, so a resumed run samples the same). Called by training/loop.py on every training
        batch before training_loss, its time counted as "generate" in the throughput figures. Default: [batch]."""
        return [batch]

    def updates_per_batch(self, recipe: Recipe) -> int:
        """How many micro-batches rollout() makes of one loader batch (the loop's steps per epoch are
        scaled by it). Default: 1."""
        return 1

    # ---- data ----------------------------------------------------------------------------------------------
    def add_model_columns(self, ds: Split, split: str, model: Module, processor: Processor, recipe: Recipe,
                          accelerator: Accelerator) -> Split:
        """A preprocessed split with columns computed by the model before training (preference,
        data.reference=precomputed: the reference log-probs of every pair), as datasets.map so that they
        are cached with the split; `model` is the prepared model, its adapter as training starts. Called
        once per split ("train", "validation", "test") after the model is prepared. Default: `ds` unchanged."""
        return ds

    def preprocess(self, ds: Split, split: str, processor: Processor, recipe: Recipe, info: LabelInfo | None,
                   train: bool) -> Split:
        """Raw split -> model-ready dataset (datasets.map, cached; `train` is False for validation/test,
        which may keep extra columns for evaluate()). Called per split before training/evaluation. Required."""
        raise NotImplementedError(f"{type(self).__name__}.preprocess")

    def collator(self, processor: Processor) -> Collate:
        """The collate function of evaluation batches, and of training batches unless train_collator
        gives one. Required."""
        raise NotImplementedError(f"{type(self).__name__}.collator")

    def train_collator(self, processor: Processor, recipe: Recipe, info: LabelInfo | None) -> Collate | None:
        """The collate function of training batches when it differs from evaluation's (image-classification:
        mixup/cutmix). Called once when training sets up its data. Default: None (collator() for both)."""
        return None

    def count_units(self, batch: dict[str, Any], processor: Processor) -> dict[str, Any]:
        """What one training micro-batch holds besides examples, for the throughput figures
        (training/throughput.py): {unit: amount}, amounts may be device tensors. Called on every
        training batch. Default: non-pad input tokens where there is an attention mask, all input ids
        otherwise, nothing for batches without input ids (images); audio tasks count seconds of audio."""
        return count_tokens(batch)

    def plan_batch(self, recipe: Recipe, config: PretrainedConfig, batch_size: int) -> tuple[dict[str, Any], str] | None:
        """A meta-device micro-batch of the worst case (full length) for `hfadapt plan` to trace the
        activations of, and a few words saying what it holds ("128 tokens"). Default: None (the plan
        gives no activation estimate)."""
        return None

    def encode_inputs(self, items: list[str], processor: Processor, recipe: Recipe) -> dict[str, Any]:
        """User inputs of `hfadapt predict` (text strings, file paths) -> one model batch (tensors). Used by
        predict() and by tests that compare a reloaded model's outputs. Required."""
        raise NotImplementedError(f"{type(self).__name__}.encode_inputs")

    # ---- evaluation, prediction, report ------------------------------------------------------------------
    def evaluate(self, ctx: EvalContext, model: Module, dataloader: DataLoader) -> dict[str, Any]:
        """Loss ("loss"), "samples" and metrics over a prepared dataloader, each example counted once
        across processes; writes per-example rows when ctx.predictions_file is set. Called at every
        evaluation during training and by `hfadapt eval`. Required."""
        raise NotImplementedError(f"{type(self).__name__}.evaluate")

    def predict(self, model: Module, processor: Processor, items: list[str], recipe: Recipe,
                info: LabelInfo | None) -> list[dict[str, Any]]:
        """Predictions for one chunk of `hfadapt predict` inputs, one dict per input. Required."""
        raise NotImplementedError(f"{type(self).__name__}.predict")

    def report_section(self, report: ReportInput) -> str:
        """The task's own HTML section of `hfadapt report` (insight/report.py), from the run's final
        evaluation and per-example rows. Default: a table of the final evaluation."""
        return generic_section(report.split("eval"))


def count_tokens(batch: dict[str, Any]) -> dict[str, Any]:
    """Task.count_units' default: real (non-pad) input tokens where there is an attention mask (text);
    all input ids where there is none (packed causal-LM blocks leave little padding); nothing otherwise
    (images). Values may be device tensors: they are summed on the device and read once at the end."""
    mask = batch.get("attention_mask")
    if mask is not None and hasattr(mask, "sum"):
        return {"tokens": mask.sum()}
    ids = batch.get("input_ids")
    if ids is not None and hasattr(ids, "numel"):
        return {"tokens": ids.numel()}
    return {}


TASKS: Registry[Task] = Registry("task", known=task_source.task_names, load=task_source.load_task)


def tracked_metric(task: str | None, best_metric: str | None) -> str | None:
    """The metric a run's best checkpoint follows: eval.best_metric, else the task's default (the loop's
    rule); for reading a run back (runs table, report), so an unknown task gives None."""
    if best_metric or task is None or task not in TASKS:
        return best_metric or None
    return TASKS.get(task).default_best_metric


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
        model_model=task.model_model, sections=task.recipe_sections,
    )
    return task
