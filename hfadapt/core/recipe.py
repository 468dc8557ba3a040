"""The recipe schema: typed, validated sections loaded from YAML with dotted overrides.

The ground floor of the house: it imports no task, no Hub client and no torch (`hfadapt validate`
and `hfadapt schema` use it). Tasks register their recipe model here (`register_task_recipe`);
Hub references are resolved above, by `hfadapt.loading.load_recipe`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter, ValidationError, create_model, field_validator, model_validator

from hfadapt.core import task_source
from hfadapt.core.errors import HfadaptError
from hfadapt.core.registry import did_you_mean
from hfadapt.core.search import SearchSection, space_problems
from hfadapt.core.shipped import resolve_recipe_path

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


DEFAULT_ADAPTER_METHOD = "lora"


class Section(BaseModel):
    # coerce_numbers_to_str: YAML reads `revision: 1234567` (a short commit hash) as an int.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


class ModelSection(Section):
    """The base model: the fields every task shares.

    A task whose models take settings of their own extends this (its `model_model`, e.g. the audio
    tasks' feature-encoder freeze), as it extends DataSection with its `data_model`.
    """

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
    """Where the examples come from: the fields every task shares.

    Each task extends this with its own columns and settings (its `data_model`, defined in the
    task module), and the recipe picks that model by `task`.
    """

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
    max_train_samples: int | None = Field(None, gt=0)
    max_eval_samples: int | None = Field(None, gt=0)
    num_proc: int | None = Field(None, gt=0, description="processes for datasets.map")
    streaming: bool = Field(
        False, description="read the train split as a stream, preprocessed on the fly (needs train.max_steps); evaluation splits stay in memory"
    )
    shuffle_buffer: int = Field(10_000, ge=0, description="streaming: examples in the shuffle buffer; 0 reads in file order")

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
        if self.train_files is not None and not self.train_files:
            raise ValueError("data.train_files: the list is empty; name at least one file")
        return self


class AdapterSection(Section):
    """The parameter-efficient method (peft) or a baseline: the one field every method shares.

    Each method extends this with its own fields (hfadapt.modeling.adapters defines them with the
    method and registers them with `register_adapter_section`); the recipe picks the model by `method`.
    """

    method: str = Field(DEFAULT_ADAPTER_METHOD, description="lora, ia3, loha, lokr, adalora, prefix, prompt, full or freeze")
    # field -> why it is not one of this method's, added to the "a field of X, not of Y" refusal
    field_notes: ClassVar[dict[str, str]] = {}


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
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field(
        "auto", description="auto: bf16 on a bf16-capable CUDA GPU, fp16 on older ones, fp32 on CPU (or what accelerate launch says)"
    )
    gradient_checkpointing: bool = False

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted `no` (recipe files, `train.mixed_precision=no` overrides) as false.
        return "no" if value is False else value
    seed: int = 42
    logging_steps: int = Field(10, gt=0)
    eval_steps: int | None = Field(None, gt=0, description="evaluate every N optimizer steps (and at the end)")
    save_steps: int | None = Field(None, gt=0, description="checkpoint every N optimizer steps")
    save_total_limit: int | None = Field(2, gt=0, description="checkpoints kept")
    early_stopping_patience: int | None = Field(None, gt=0, description="evaluations without improvement")
    log_with: list[str] = Field(default_factory=lambda: ["tensorboard"], description="Accelerate trackers")
    num_workers: int | None = Field(
        None, ge=0,
        description="DataLoader worker processes (training and evaluation); default: for image/audio tasks on CUDA "
        "min(8, CPUs per process - 1), else 0",
    )
    group_by_length: bool | None = Field(
        None,
        description="batch rows of similar length together (less padding; the same examples each epoch, in a "
        "shuffled order of batches); default: on for padded text tasks, off for packed causal-lm, images, audio and streams",
    )
    compile: bool = Field(False, description="torch.compile the model's training forward (falls back with a note where it can't)")
    liger_kernel: bool = Field(
        False,
        description="causal-lm on a GPU: Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear "
        "cross-entropy) for the model families liger-kernel supports; needs pip install 'hfadapt[liger]'",
    )

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
    """Decoding for evaluation and `hfadapt predict` (causal-lm, seq2seq, speech-recognition)."""

    max_new_tokens: int = Field(64, gt=0)
    num_beams: int = Field(1, gt=0)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    prompts: list[str] = Field(default_factory=list, description="causal-lm: prompts generated at each evaluation and saved")
    predict_with_generate: bool = Field(True, description="seq2seq: score generated text (ROUGE/BLEU) at evaluation")
    language: str | None = Field(None, description="speech-recognition, Whisper: spoken language ('en', 'english'); detected when absent")
    task: Literal["transcribe", "translate"] | None = Field(
        None, description="speech-recognition, Whisper: transcribe, or translate to English"
    )


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
    """A whole fine-tune: task, base model, data, adapter, training, evaluation and output.

    `Recipe.from_yaml` / `Recipe.from_dict` return the subclass registered for the recipe's task
    (see `register_task_recipe`): its `data` is that task's own data model, and its `problems()`
    runs the task's cross-field checks.
    """

    name: str | None = Field(None, description="run name; the recipe file's stem when absent")
    task: str
    model: ModelSection
    data: DataSection
    adapter: AdapterSection = Field(default_factory=lambda: _ADAPTER_SECTIONS[DEFAULT_ADAPTER_METHOD]())
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    generation: GenerationSection = Field(default_factory=GenerationSection)
    output: OutputSection = Field(default_factory=OutputSection)
    hub: HubSection = Field(default_factory=HubSection)
    search: SearchSection | None = Field(None, description="hfadapt tune: the fields searched and how (ignored by hfadapt train)")

    _source: str | None = PrivateAttr(None)
    # Set on each task's subclass by register_task_recipe: cross-field problems ("field: message").
    _checker: ClassVar[Callable[["Recipe"], list[str]] | None] = None

    @model_validator(mode="before")
    @classmethod
    def _default_method(cls, values: Any) -> Any:
        # `method` picks the adapter model; a section that leaves it out is the default method's.
        if isinstance(values, dict) and isinstance(values.get("adapter"), dict) and "method" not in values["adapter"]:
            values = {**values, "adapter": {"method": DEFAULT_ADAPTER_METHOD, **values["adapter"]}}
        return values

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> "Recipe":
        """Load a recipe file, or a shipped recipe by name ('text/sst2-bert-lora').

        `hub:user/adapter` references are resolved by `hfadapt.load_recipe`, which downloads them.
        """
        if str(path).startswith("hub:"):
            raise HfadaptError(f"{path}: a Hub recipe; load it with hfadapt.load_recipe('{path}')")
        file = resolve_recipe_path(str(path))
        return cls.from_dict(read_recipe_file(file), overrides=overrides, source=file)

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], overrides: list[str] | None = None, source: str | Path | None = None,
        base: str | Path | None = None,
    ) -> "Recipe":
        """`source` (the recipe file) is named in errors; './' and '../' paths are relative to `base`,
        by default the source file's folder."""
        raw = _deep_copy(raw)
        for item in overrides or []:
            apply_override(raw, item)
        where = f"{source}: " if source else ""
        model = _task_recipe_class(raw, where)
        try:
            recipe = model.model_validate(raw)
        except ValidationError as e:
            raise HfadaptError(blame(validation_messages(e, model), overrides or [], where)) from None
        recipe._source = str(source) if source else None
        if base is not None or source is not None:
            recipe._resolve_relative_paths(Path(base).resolve() if base is not None else Path(source).resolve().parent)
        problems = recipe.problems()
        if problems:
            raise HfadaptError(blame(problems, overrides or [], where))
        return recipe

    def problems(self) -> list[str]:
        """What is wrong across fields, each as 'field.path: message' (empty when all is well)."""
        checker = type(self)._checker
        problems = checker(self) if checker is not None else []
        if self.search is not None:
            problems += space_problems(self.search, type(self), _ADAPTER_SECTIONS, self.adapter.method)
        return problems

    def _resolve_relative_paths(self, base: Path) -> None:
        """'./x' and '../x' in path fields are relative to the recipe file, so shipped recipes work anywhere."""

        def fix(p: str | None) -> str | None:
            if p is not None and (p.startswith("./") or p.startswith("../")):
                return str((base / p).resolve())
            return p

        self.model.name_or_path = fix(self.model.name_or_path)  # type: ignore[assignment]
        if getattr(self.model, "adapter", None):  # a task-owned model field: the adapter a run starts from
            self.model.adapter = fix(self.model.adapter)  # type: ignore[attr-defined]
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


# ---- one adapter model per method, one recipe model per task ------------------------------------
_ADAPTER_SECTIONS: dict[str, type[AdapterSection]] = {}
_TASK_RECIPES: dict[str, type[Recipe]] = {}
_TASK_SPECS: dict[str, tuple[type[DataSection], type[ModelSection], Callable[[Recipe], list[str]], dict[str, type[Section]]]] = {}


def register_adapter_section(method: str, section: type[AdapterSection]) -> None:
    """The fields of one adapter method: `section` fixes `method` to its name (a Literal) and adds
    only what that method's peft config takes. Called by the adapter registry (hfadapt.modeling.adapters)."""
    if method in _ADAPTER_SECTIONS:
        raise ValueError(f"adapter method '{method}' already has a section model")
    if section.model_fields["method"].annotation != Literal[method]:  # type: ignore[valid-type]
        raise ValueError(f"{section.__name__}.method must be Literal['{method}']")
    _ADAPTER_SECTIONS[method] = section
    for task in list(_TASK_RECIPES):  # built before this method registered: rebuild with it
        _TASK_RECIPES[task] = _build_task_recipe(task, *_TASK_SPECS[task])


def adapter_methods() -> list[str]:
    """Methods with a registered adapter section, in registration order."""
    return list(_ADAPTER_SECTIONS)


def adapter_section(method: str) -> type[AdapterSection]:
    return _ADAPTER_SECTIONS[method]


def register_task_recipe(
    task: str, data_model: type[DataSection], checker: Callable[[Recipe], list[str]],
    model_model: type[ModelSection] = ModelSection, sections: dict[str, type[Section]] | None = None,
) -> type[Recipe]:
    """The recipe model of one task: `task` fixed to its name, `data` and `model` its own models,
    `adapter` chosen by `method` among the registered adapter sections, and the task's own top-level
    `sections` (online-rl's `rl`), each filled with its defaults when the recipe leaves it out.

    Called by the task registry (hfadapt.tasks), so this schema module never imports a task.
    """
    if task in _TASK_RECIPES:
        raise ValueError(f"task '{task}' already has a recipe model")
    _TASK_SPECS[task] = (data_model, model_model, checker, dict(sections or {}))
    model = _TASK_RECIPES[task] = _build_task_recipe(task, *_TASK_SPECS[task])
    return model


def _build_task_recipe(
    task: str, data_model: type[DataSection], model_model: type[ModelSection], checker: Callable[[Recipe], list[str]],
    sections: dict[str, type[Section]] | None = None,
) -> type[Recipe]:
    stem = "".join(part.capitalize() for part in task.replace("_", "-").split("-"))
    fields: dict[str, Any] = {
        "task": (Literal[task], Field(description="what is trained")),  # type: ignore[valid-type]
        "model": (model_model, Field(description="the base model")),
        "data": (data_model, Field(description=f"{task} data")),
    }
    for key, section in (sections or {}).items():
        fields[key] = (section, Field(default_factory=section, description=(section.__doc__ or key).strip().splitlines()[0]))
    if _ADAPTER_SECTIONS:
        sections = tuple(_ADAPTER_SECTIONS.values())
        union = sections[0] if len(sections) == 1 else Annotated[Union[sections], Field(discriminator="method")]  # type: ignore[valid-type]
        fields["adapter"] = (
            union, Field(default_factory=lambda: _ADAPTER_SECTIONS[DEFAULT_ADAPTER_METHOD](), description="adapter method and its fields"),
        )
    model = create_model(f"{stem}Recipe", __base__=Recipe, __doc__=f"A {task} fine-tune.", **fields)
    model._checker = checker
    return model


def task_names() -> list[str]:
    return sorted(set(_TASK_RECIPES) | set(task_source.task_names()))


def recipe_class(task: str) -> type[Recipe]:
    """The recipe model of `task`, importing the task's module on first use."""
    if task not in _TASK_RECIPES:
        task_source.load_task(task)
    return _TASK_RECIPES[task]


def data_model_of(task: str) -> type[DataSection]:
    return recipe_class(task).model_fields["data"].annotation  # type: ignore[return-value]


def model_model_of(task: str) -> type[ModelSection]:
    return recipe_class(task).model_fields["model"].annotation  # type: ignore[return-value]


def shed_foreign_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """A recipe.yaml written before model and adapter fields were owned by their task and method held
    every field (model.freeze_feature_encoder in a text recipe, adapter.init_r with lora): drop those
    that belong to another task or method, which that version ignored. Unknown fields stay (refused).
    For saved recipes only (a run directory, a pushed recipe); a user's own recipe is checked as written."""
    raw = _deep_copy(raw)
    task = raw.get("task")
    if isinstance(task, str) and task in task_names() and isinstance(raw.get("model"), dict):
        own = model_model_of(task).model_fields
        raw["model"] = {k: v for k, v in raw["model"].items() if k in own or not _owners("model", k)}
    adapter = raw.get("adapter")
    if isinstance(adapter, dict):
        method = adapter.get("method", DEFAULT_ADAPTER_METHOD)
        if isinstance(method, str) and method in _ADAPTER_SECTIONS:
            own = _ADAPTER_SECTIONS[method].model_fields
            raw["adapter"] = {k: v for k, v in adapter.items() if k in own or not _owners("adapter", k)}
    return raw


def recipe_json_schema() -> dict[str, Any]:
    """JSON Schema of a recipe: one variant per task, chosen by `task`, each with its own data fields."""
    variants = tuple(recipe_class(name) for name in task_names())
    union = Annotated[Union[variants], Field(discriminator="task")]  # type: ignore[valid-type]
    schema = TypeAdapter(union).json_schema()
    schema["title"] = "hfadapt recipe"
    return schema


def _task_recipe_class(raw: Any, where: str) -> type[Recipe]:
    if not isinstance(raw, dict):
        raise HfadaptError(f"{where}a recipe must be a mapping of sections")
    task = raw.get("task")
    if task is None:
        raise HfadaptError(f"{where}task: required field missing; known tasks: {', '.join(task_names())}")
    if not isinstance(task, str) or task not in task_names():
        raise HfadaptError(
            f"{where}task: unknown task '{task}'{did_you_mean(str(task), task_names())}; known: {', '.join(task_names())}"
        )
    return recipe_class(task)


def read_recipe_file(file: Path) -> dict[str, Any]:
    """A recipe file's YAML mapping, with `name` defaulting to the file's stem; a binary, non-UTF-8,
    unreadable or malformed file is one HfadaptError naming the file and line."""
    try:
        data = file.read_bytes()
    except OSError as e:
        raise HfadaptError(f"{file}: cannot read the recipe: {e.strerror or e}") from None
    if b"\0" in data:
        line = data[: data.index(b"\0")].count(b"\n") + 1
        raise HfadaptError(f"{file}: not a recipe: a binary file (NUL byte on line {line}); a recipe is a YAML text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise HfadaptError(f"{file}: line {line} is not UTF-8 (byte 0x{data[e.start]:02x}); save the recipe as UTF-8") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise HfadaptError(f"{file}: not valid YAML{at}: {getattr(e, 'problem', None) or e}".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise HfadaptError(f"{file}: a recipe must be a YAML mapping")
    raw.setdefault("name", file.stem)
    return raw


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


def _owners(section: str, name: str) -> list[str]:
    """The tasks (data, model) or adapter methods (adapter) whose own section has field `name`."""
    if section == "adapter":
        return [m for m, s in _ADAPTER_SECTIONS.items() if name in s.model_fields]
    of = data_model_of if section == "data" else model_model_of
    return [task for task in task_names() if name in of(task).model_fields]


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _adapter_loc(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], str | None]:
    """('adapter', 'lora', 'r') -> (('adapter', 'r'), 'lora'): the union's tag is not part of the path."""
    if len(loc) >= 2 and loc[0] == "adapter" and loc[1] in _ADAPTER_SECTIONS:
        return (loc[0], *loc[2:]), str(loc[1])
    return loc, None


def format_validation_error(err: ValidationError, model: type[BaseModel]) -> str:
    return "; ".join(validation_messages(err, model))


def validation_messages(err: ValidationError, model: type[BaseModel]) -> list[str]:
    """One 'field.path: message' per problem pydantic found."""
    msgs = []
    for e in err.errors():
        loc, method = _adapter_loc(tuple(e["loc"]))
        path = ".".join(str(p) for p in loc) or "recipe"
        if e["type"] == "extra_forbidden":
            section = str(loc[0]) if len(loc) == 2 else ""
            name = str(loc[-1])
            owners = _owners(section, name) if section in ("data", "model", "adapter") else []
            if owners:
                if method is not None:
                    note = _ADAPTER_SECTIONS[method].field_notes.get(name)
                    msgs.append(f"{path}: a field of {_and(owners)}, not of {method}" + (f" ({note})" if note else ""))
                else:
                    task = model.model_fields["task"].annotation.__args__[0]  # type: ignore[union-attr]
                    msgs.append(f"{path}: a field of {_and(owners)}, not of {task}")
            else:
                fields = list(_ADAPTER_SECTIONS[method].model_fields) if method is not None else _fields_at(model, loc)
                msgs.append(f"{path}: unknown field{did_you_mean(name, fields)}")
        elif e["type"] in ("union_tag_invalid", "union_tag_not_found") and loc == ("adapter",):
            tag = str(e.get("ctx", {}).get("tag", ""))
            known = sorted(_ADAPTER_SECTIONS)
            msgs.append(f"adapter.method: unknown adapter method '{tag}'{did_you_mean(tag, known)}; known: {', '.join(known)}")
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
    return msgs


def blame(messages: list[str], overrides: list[str], where: str) -> str:
    """Problems as one line after the recipe file (`where`); a problem in a field that a command-line
    override set names the override too, so the user looks at what they typed."""
    keys = {item.partition("=")[0].strip(): item for item in overrides}
    out = []
    for message in messages:
        path = re.match(r"[\w.]*", message).group(0)  # the field the message opens with
        item = next((v for k, v in keys.items() if path == k or path.startswith(k + ".")), None)
        out.append(message if item is None else f"{message} (from the override '{item}')")
    return where + "; ".join(out)


def with_search(recipe: Recipe, file: str | Path) -> Recipe:
    """The recipe with the search section of a separate search file (its top level is the section, or
    holds one under `search:`); problems are named after that file."""
    from hfadapt.core.search import read_search_file

    raw = recipe.to_dict()
    raw["search"] = read_search_file(Path(file))
    out = recipe_class(recipe.task)
    try:
        searched = out.model_validate(raw)
    except ValidationError as e:
        raise HfadaptError(blame(validation_messages(e, out), [], f"{file}: ")) from None
    searched._source = recipe._source
    problems = searched.problems()
    if problems:
        raise HfadaptError(f"{file}: " + "; ".join(problems))
    return searched
