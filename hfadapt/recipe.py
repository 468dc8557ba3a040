"""The recipe schema: typed, validated sections loaded from YAML with dotted overrides.

This module must stay importable without torch: `hfadapt validate` and `hfadapt schema` use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from .errors import HfadaptError
from .registry import did_you_mean

# transformers.SchedulerType values, repeated here so validation needs no torch import;
# tests check the list against transformers.
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "warmup_stable_decay",
    "cosine_warmup_with_min_lr",
    "greedy",
)


class Section(BaseModel):
    # coerce_numbers_to_str: YAML reads `revision: 1234567` (a short commit hash) as an int.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


class ModelSection(Section):
    """The base model."""

    name_or_path: str = Field(description="Hub model id or local directory (./ is relative to the recipe file)")
    revision: str | None = Field(None, description="Hub branch, tag or commit of the base model")
    dtype: Literal["float32", "float16", "bfloat16", "auto"] = Field(
        "float32", description="dtype the base weights are loaded in"
    )
    trust_remote_code: bool = Field(False, description="Run modelling code from the Hub repo; off unless you opt in")
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none", description="QLoRA: load the base quantized with bitsandbytes (needs a CUDA GPU)"
    )
    init: Literal["pretrained", "config"] = Field(
        "pretrained",
        description="'config' builds the model with random weights from its config (offline demos, tests)",
    )


class DataSection(Section):
    """Where the examples come from and which columns mean what."""

    dataset: str | None = Field(None, description="Hub dataset id, or a local folder (an image folder)")
    config_name: str | None = Field(None, description="Hub dataset configuration name")
    revision: str | None = Field(None, description="Hub dataset revision")
    train_files: list[str] | None = Field(None, description="local training files (csv, json/jsonl, parquet)")
    validation_files: list[str] | None = None
    test_files: list[str] | None = None
    train_split: str = "train"
    validation_split: str | None = Field(
        "validation", description="split used for evaluation; carved off train (validation_size) when absent"
    )
    test_split: str | None = None
    validation_size: float = Field(0.1, gt=0, lt=1, description="share of train held out when no validation split")
    split_seed: int = 42
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    image_column: str = "image"
    labels: list[str] | None = Field(None, description="label names in id order; read from the data when absent")
    problem_type: Literal["single_label", "multi_label", "regression"] = "single_label"
    max_length: int = Field(128, gt=0, description="tokenizer truncation length")
    max_train_samples: int | None = Field(None, gt=0)
    max_eval_samples: int | None = Field(None, gt=0)
    augment: bool = Field(False, description="random train-time image augmentation (image tasks)")
    # ---- causal-lm ----
    lm_format: Literal["auto", "text", "prompt_completion", "chat"] = Field(
        "auto", description="causal-lm data: plain text_column, prompt/completion columns, or chat messages"
    )
    prompt_column: str = "prompt"
    completion_column: str = "completion"
    messages_column: str = "messages"
    chat_template: str | None = Field(None, description="Jinja chat template for tokenizers without one")
    completion_only_loss: bool = Field(True, description="causal-lm: loss on completions / assistant turns only")
    packing: bool = Field(False, description="causal-lm: pack examples into max_length blocks without cross-attention")
    truncation: bool = Field(True, description="false: a sequence longer than max_length is an error, not cut")
    # ---- seq2seq ----
    target_column: str = Field("target", description="seq2seq: the summary / translation column")
    source_prefix: str | None = Field(None, description="seq2seq: text put before every source (T5: 'summarize: ')")
    max_target_length: int = Field(128, gt=0)
    # ---- token-classification ----
    tokens_column: str = Field("tokens", description="token-classification: list of words per example")
    tags_column: str = Field("ner_tags", description="token-classification: one tag per word")
    label_all_subtokens: bool = Field(False, description="label every sub-token, not only the first of each word")
    # ---- question-answering ----
    question_column: str = "question"
    context_column: str = "context"
    answers_column: str = Field("answers", description="SQuAD-style {text: [...], answer_start: [...]}")
    doc_stride: int = Field(128, gt=0, description="overlap between the windows of a long context")
    version_2_with_negative: bool = Field(False, description="SQuAD v2: questions may have no answer")
    max_answer_length: int = Field(30, gt=0)
    num_proc: int | None = Field(None, gt=0, description="processes for datasets.map")

    @model_validator(mode="before")
    @classmethod
    def _files_as_lists(cls, values: Any) -> Any:
        if isinstance(values, dict):
            for key in ("train_files", "validation_files", "test_files"):
                if isinstance(values.get(key), str):
                    values[key] = [values[key]]
        return values

    @model_validator(mode="after")
    def _one_source(self) -> "DataSection":
        if (self.dataset is None) == (self.train_files is None):
            raise ValueError("give exactly one of data.dataset or data.train_files")
        return self


class AdapterSection(Section):
    """The parameter-efficient method (peft) or a baseline."""

    method: str = Field("lora", description="lora, ia3, loha, lokr, adalora, prefix, prompt, full or freeze")
    r: int = Field(8, gt=0)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None, description="module names to adapt; peft's default for the architecture, else all linear layers"
    )
    modules_to_save: list[str] | None = Field(
        None, description="modules trained fully and saved with the adapter; the task head by default"
    )
    use_rslora: bool = False
    use_dora: bool = False
    num_virtual_tokens: int = Field(20, gt=0, description="prefix/prompt tuning")
    init_r: int = Field(12, gt=0, description="AdaLoRA initial rank")
    target_r: int = Field(8, gt=0, description="AdaLoRA target rank")
    options: dict[str, Any] = Field(
        default_factory=dict, description="further keyword arguments of the peft config class"
    )


class TrainSection(Section):
    """The Accelerate training loop."""

    epochs: int = Field(3, gt=0)
    max_steps: int | None = Field(None, gt=0, description="optimizer steps; overrides epochs")
    batch_size: int = Field(8, gt=0, description="per device")
    eval_batch_size: int | None = Field(None, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    learning_rate: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    scheduler: str = "linear"
    warmup_steps: int | None = Field(None, ge=0)
    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    seed: int = 42
    logging_steps: int = Field(10, gt=0)
    eval_steps: int | None = Field(None, gt=0, description="evaluate every N optimizer steps (and at the end)")
    save_steps: int | None = Field(None, gt=0, description="checkpoint every N optimizer steps")
    save_total_limit: int | None = Field(2, gt=0, description="checkpoints kept")
    early_stopping_patience: int | None = Field(None, gt=0, description="evaluations without improvement")
    log_with: list[str] = Field(default_factory=lambda: ["tensorboard"], description="Accelerate trackers")
    num_workers: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "TrainSection":
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ValueError("can't give both train.warmup_steps and train.warmup_ratio")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(
                f"train.scheduler: unknown scheduler '{self.scheduler}'{did_you_mean(self.scheduler, SCHEDULERS)}"
            )
        if self.early_stopping_patience is not None and self.eval_steps is None:
            raise ValueError("train.early_stopping_patience needs train.eval_steps")
        return self


class EvalSection(Section):
    """Metrics, computed with the offline `evaluate` modules shipped in hfadapt.metrics."""

    metrics: list[str] | None = Field(None, description="metric names; the task's defaults when absent")
    best_metric: str | None = Field(None, description="e.g. 'accuracy', 'f1_macro' or 'loss'; keeps the best checkpoint")
    greater_is_better: bool | None = Field(None, description="defaults to false for loss/mse, true otherwise")


class GenerationSection(Section):
    """Decoding for evaluation and `hfadapt predict` (causal-lm, seq2seq)."""

    max_new_tokens: int = Field(64, gt=0)
    num_beams: int = Field(1, gt=0)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    prompts: list[str] = Field(default_factory=list, description="causal-lm: prompts generated at each evaluation and saved")
    predict_with_generate: bool = Field(True, description="seq2seq: score generated text (ROUGE/BLEU) at evaluation")


class OutputSection(Section):
    dir: str | None = Field(None, description="run directory; runs/<name> when absent")
    overwrite: bool = Field(False, description="replace an existing finished run directory")


class HubSection(Section):
    """Publishing to the Hugging Face Hub (`hfadapt push`, or at the end of training)."""

    push: bool = Field(False, description="push the adapter and its model card when training ends (main process)")
    repo_id: str | None = Field(None, description="target repo, e.g. user/sst2-bert-lora")
    private: bool = False
    revision: str | None = Field(None, description="branch to push to (created if missing)")
    license: str | None = Field(None, description="license id for the model card, e.g. apache-2.0")
    commit_message: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "HubSection":
        if self.push and not self.repo_id:
            raise ValueError("hub.push needs hub.repo_id")
        if self.repo_id is not None and self.repo_id.count("/") != 1:
            raise ValueError(f"hub.repo_id: expected 'namespace/name', got '{self.repo_id}'")
        return self


class Recipe(Section):
    """A whole fine-tune: task, base model, data, adapter, training, evaluation and output."""

    name: str | None = Field(None, description="run name; the recipe file's stem when absent")
    task: str
    model: ModelSection
    data: DataSection
    adapter: AdapterSection = Field(default_factory=AdapterSection)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    generation: GenerationSection = Field(default_factory=GenerationSection)
    output: OutputSection = Field(default_factory=OutputSection)
    hub: HubSection = Field(default_factory=HubSection)

    _source: str | None = PrivateAttr(None)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> "Recipe":
        """Load a recipe file (or a shipped recipe name such as 'text/sst2-bert-lora')."""
        from .catalog import resolve_recipe_path

        file = resolve_recipe_path(str(path))
        try:
            raw = yaml.safe_load(file.read_text())
        except yaml.YAMLError as e:
            raise HfadaptError(f"{file}: not valid YAML: {e}".replace("\n", " ")) from None
        if not isinstance(raw, dict):
            raise HfadaptError(f"{file}: a recipe must be a YAML mapping")
        raw.setdefault("name", file.stem)
        if str(path).startswith("hub:"):
            # Someone else's recipe: it may not run code, push to its author's repo, or pick our output dir.
            # The user's own overrides below can still opt in.
            raw.setdefault("model", {})["trust_remote_code"] = False
            raw.setdefault("hub", {})["push"] = False
            raw.setdefault("output", {})["dir"] = None
        return cls.from_dict(raw, overrides=overrides, source=file)

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], overrides: list[str] | None = None, source: str | Path | None = None
    ) -> "Recipe":
        raw = _deep_copy(raw)
        for item in overrides or []:
            apply_override(raw, item)
        where = f"{source}: " if source else ""
        try:
            recipe = cls.model_validate(raw)
        except ValidationError as e:
            raise HfadaptError(where + format_validation_error(e, cls)) from None
        recipe._source = str(source) if source else None
        if source is not None:
            recipe._resolve_relative_paths(Path(source).resolve().parent)
        from .checks import check_recipe

        check_recipe(recipe, where)
        return recipe

    def _resolve_relative_paths(self, base: Path) -> None:
        """'./x' and '../x' in path fields are relative to the recipe file, so shipped recipes work anywhere."""

        def fix(p: str | None) -> str | None:
            if p is not None and (p.startswith("./") or p.startswith("../")):
                return str((base / p).resolve())
            return p

        self.model.name_or_path = fix(self.model.name_or_path)  # type: ignore[assignment]
        self.data.dataset = fix(self.data.dataset)
        for key in ("train_files", "validation_files", "test_files"):
            files = getattr(self.data, key)
            if files:
                setattr(self.data, key, [fix(f) for f in files])

    # ---- output -------------------------------------------------------------------------
    @property
    def source(self) -> str | None:
        return self._source

    @property
    def run_name(self) -> str:
        return self.name or "run"

    @property
    def output_dir(self) -> Path:
        return Path(self.output.dir) if self.output.dir else Path("runs") / self.run_name

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---- overrides ------------------------------------------------------------------------------
def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one `section.field=value` override; the value is parsed as YAML (1, true, [a, b])."""
    if "=" not in item:
        raise HfadaptError(f"override '{item}': expected key.sub=value")
    key, _, text = item.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise HfadaptError(f"override '{item}': empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise HfadaptError(f"override '{item}': '{'.'.join(parts[: i + 1])}' is not a section")
        node = child
    node[parts[-1]] = value


def _deep_copy(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {k: _deep_copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deep_copy(v) for v in raw]
    return raw


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the section a location points into (for 'did you mean')."""
    current: Any = model
    for part in loc[:-1]:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
    return list(getattr(current, "model_fields", {}))


def format_validation_error(err: ValidationError, model: type[BaseModel]) -> str:
    msgs = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"])
        path = ".".join(str(p) for p in loc) or "recipe"
        if e["type"] == "extra_forbidden":
            hint = did_you_mean(str(loc[-1]), _fields_at(model, loc))
            msgs.append(f"{path}: unknown field{hint}")
        elif e["type"] == "missing":
            msgs.append(f"{path}: required field missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if msg.startswith((path + ":", path + ".")):
                msgs.append(msg)
            elif msg.startswith(("give ", "can't ", "hub.push ")):
                msgs.append(f"{path}: {msg}")
            else:
                msgs.append(f"{path}: {msg} (got {e.get('input')!r})")
    return "; ".join(msgs)
