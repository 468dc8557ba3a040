"""Adapter methods: each one's recipe fields, its peft config (or a baseline) and training hook;
default target modules and target discovery.

peft is imported inside functions so that `hfadapt validate` can check adapter sections without torch.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal

from pydantic import Field

from hfadapt.core.errors import HfadaptError, first_line
from hfadapt.core.recipe import AdapterSection, ModelSection, adapter_methods, adapter_section, register_adapter_section
from hfadapt.core.registry import Registry, did_you_mean

if TYPE_CHECKING:
    from peft import PeftConfig, PeftModel
    from torch.nn import Module
    from transformers import PreTrainedModel

    from hfadapt.core.recipe import Recipe
    from hfadapt.modeling.models import StartingAdapter
    from hfadapt.tasks.base import Task

# Direct children of a *ForXClassification model that are its freshly initialised head.
# ("projector": the hidden -> classifier_proj_size layer of wav2vec2/Whisper audio classifiers.)
HEAD_NAMES = ("pre_classifier", "classifier", "score", "classification_head", "head", "fc", "qa_outputs", "projector")

# LoRA-family defaults for audio architectures peft has no entry for: the attention's query and
# value projections, as for its text models (wav2vec2-style and Whisper attention: q_proj/v_proj).
AUDIO_LORA_TARGETS: dict[str, list[str]] = {
    **{t: ["q_proj", "v_proj"] for t in (
        "wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat", "sew", "whisper",
    )},
    "wav2vec2-conformer": ["linear_q", "linear_v"],
    "sew-d": ["query_proj", "value_proj"],
    "audio-spectrogram-transformer": ["q_proj", "v_proj"],  # transformers 5 names (4.x: query/value)
}
LORA_FAMILY = ("LORA", "ADALORA", "LOHA", "LOKR")


@dataclass(frozen=True)
class AdapterContext:
    """What a method builder needs besides the recipe's adapter section."""

    target_modules: list[str] | str | None
    modules_to_save: list[str] | None
    task_type: str | None
    feedforward_modules: list[str] | None = None
    total_steps: int | None = None  # optimizer steps of the run (AdaLoRA's rank budget schedule spans it)
    dropout: float | None = None  # the architecture's LoRA dropout when adapter.dropout is not set (timm ConvNets: 0)


# ---- each method's recipe fields ----------------------------------------------------------------
# Only the fields the method's peft config takes (peft.<X>Config); anything else of peft's goes in
# `options`, checked against that config class when it is built (check_options).
class PeftAdapterSection(AdapterSection):
    modules_to_save: list[str] | None = Field(
        None, description="modules trained fully and saved with the adapter; the task head by default"
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="further keyword arguments of the method's peft config class"
    )


class TargetedAdapterSection(PeftAdapterSection):
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None, description="module names to adapt; peft's default for the architecture, else all linear layers"
    )


class LoraSection(TargetedAdapterSection):
    """LoRA (peft.LoraConfig): low-rank updates of the target modules' weights."""

    method: Literal["lora"] = "lora"
    r: int = Field(8, gt=0, description="rank of the update")
    alpha: float = Field(16, gt=0, description="scaling numerator (lora_alpha): the update is scaled by alpha/r")
    dropout: float | None = Field(
        None, ge=0, lt=1,
        description="dropout on the LoRA branch's input (lora_dropout); null: 0.05, or 0 where LoRA adapts "
        "convolutions (timm ConvNets), whose dropout would mask whole input feature maps",
    )
    use_rslora: bool = Field(False, description="rank-stabilised scaling alpha/sqrt(r)")
    use_dora: bool = Field(False, description="DoRA: weight-decomposed LoRA")


class IA3Section(TargetedAdapterSection):
    """IA3 (peft.IA3Config): learned scaling vectors of activations; no rank, no dropout."""

    method: Literal["ia3"] = "ia3"
    field_notes: ClassVar[dict[str, str]] = {"r": "IA3 learns scaling vectors and has no rank"}


class LoHaSection(TargetedAdapterSection):
    """LoHa (peft.LoHaConfig): low-rank Hadamard product updates."""

    method: Literal["loha"] = "loha"
    r: int = Field(8, gt=0, description="rank of the update")
    alpha: float = Field(16, gt=0, description="scaling numerator")
    dropout: float = Field(0.05, ge=0, lt=1, description="probability of dropping an adapted module in training (module_dropout)")


class LoKrSection(LoHaSection):
    """LoKr (peft.LoKrConfig): low-rank Kronecker product updates."""

    method: Literal["lokr"] = "lokr"  # type: ignore[assignment]


class AdaLoraSection(TargetedAdapterSection):
    """AdaLoRA (peft.AdaLoraConfig): LoRA whose rank budget is reallocated during training."""

    method: Literal["adalora"] = "adalora"
    init_r: int = Field(12, gt=0, description="initial rank of each update")
    target_r: int = Field(8, gt=0, description="average rank the budget is pruned to")
    alpha: float = Field(16, gt=0, description="scaling numerator (lora_alpha)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the update's input (lora_dropout)")
    use_rslora: bool = Field(False, description="rank-stabilised scaling alpha/sqrt(r)")
    field_notes: ClassVar[dict[str, str]] = {
        "r": "AdaLoRA sets ranks with adapter.init_r and adapter.target_r",
        "use_dora": "peft's AdaLoRA does not support DoRA",
    }


class VirtualTokensSection(PeftAdapterSection):
    num_virtual_tokens: int = Field(20, gt=0, description="virtual tokens prepended to the input")


class PrefixSection(VirtualTokensSection):
    """Prefix tuning (peft.PrefixTuningConfig): learned key/value prefixes in every layer."""

    method: Literal["prefix"] = "prefix"


class PromptSection(VirtualTokensSection):
    """Prompt tuning (peft.PromptTuningConfig): learned input embeddings prepended to the prompt."""

    method: Literal["prompt"] = "prompt"


class FullSection(AdapterSection):
    """Full fine-tuning: every weight trains; no peft config."""

    method: Literal["full"] = "full"


class FreezeSection(AdapterSection):
    """Linear probing: the base frozen, only the task head trains; no peft config."""

    method: Literal["freeze"] = "freeze"


# ---- the registry --------------------------------------------------------------------------------
@dataclass(frozen=True)
class AdapterMethod:
    """One method: its recipe fields, how its peft config is built, and hooks into training.

    `kwargs` maps recipe fields to the peft config's arguments (`r` -> `r`, `alpha` -> `lora_alpha`);
    `context` lists the arguments hfadapt fills itself (task_type, total_step, ...). Both are
    refused in `adapter.options`, whose other keys must be fields of `config` (peft's class name).
    `after_optimizer_step(model, step)` is called on the unwrapped model after each optimizer step
    (before the step count goes up); None: nothing to do.
    """

    name: str
    section: type[AdapterSection]
    modalities: tuple[str, ...]
    peft_type: str | None  # key of peft's TRANSFORMERS_MODELS_TO_<X>_TARGET_MODULES_MAPPING; None: no targets
    build: Callable[[Any, AdapterContext], Any]  # returns a peft config, or None for the baselines
    config: str | None = None  # peft config class name; None for the baselines
    kwargs: tuple[tuple[str, str], ...] = ()
    context: tuple[str, ...] = ()
    after_optimizer_step: Callable[[Any, int], None] | None = None


ADAPTERS: Registry[AdapterMethod] = Registry("adapter method")


def register(
    name: str, section: type[AdapterSection], modalities: tuple[str, ...] = ("text", "image", "audio"),
    peft_type: str | None = None, config: str | None = None, kwargs: dict[str, str] | None = None,
    context: tuple[str, ...] = (), after_optimizer_step: Callable[[Any, int], None] | None = None,
):
    """Register a method where it is defined: the builder below, its recipe section with the recipe schema."""
    def deco(fn: Callable[[Any, AdapterContext], Any]) -> Callable[[Any, AdapterContext], Any]:
        method = AdapterMethod(
            name, section, modalities, peft_type, fn, config, tuple((kwargs or {}).items()), context, after_optimizer_step,
        )
        ADAPTERS.register(name)(method)
        register_adapter_section(name, section)
        return fn

    return deco


LORA_DROPOUT = 0.05  # peft's examples and most LoRA recipes; convolution LoRA gets ctx.dropout (0)


def _dropout(a: LoraSection, ctx: AdapterContext) -> float:
    """adapter.dropout when the recipe gives one; null: the architecture's default (ctx.dropout), else 0.05.
    A null (not a filled-in number) is what the run's recipe.yaml keeps, so a resume decides alike."""
    if a.dropout is not None:
        return a.dropout
    return ctx.dropout if ctx.dropout is not None else LORA_DROPOUT


def _config_kwargs(a: AdapterSection, method: AdapterMethod) -> dict[str, Any]:
    return {arg: getattr(a, field) for field, arg in method.kwargs}


_TARGETED = ("task_type",)  # target_modules and modules_to_save: recipe fields of their own
_LORA_KWARGS = {"r": "r", "alpha": "lora_alpha", "dropout": "lora_dropout", "use_rslora": "use_rslora", "use_dora": "use_dora"}


@register("lora", LoraSection, peft_type="LORA", config="LoraConfig", kwargs=_LORA_KWARGS, context=_TARGETED)
def _lora(a: LoraSection, ctx: AdapterContext) -> PeftConfig:
    from peft import LoraConfig

    return LoraConfig(
        **{**_config_kwargs(a, ADAPTERS.get("lora")), "lora_dropout": _dropout(a, ctx)}, target_modules=ctx.target_modules,
        modules_to_save=ctx.modules_to_save, task_type=ctx.task_type, **a.options,
    )


@register("ia3", IA3Section, peft_type="IA3", config="IA3Config", context=(*_TARGETED, "feedforward_modules"))
def _ia3(a: IA3Section, ctx: AdapterContext) -> PeftConfig:
    from peft import IA3Config

    return IA3Config(
        target_modules=ctx.target_modules, feedforward_modules=ctx.feedforward_modules,
        modules_to_save=ctx.modules_to_save, task_type=ctx.task_type, **a.options,
    )


_HADAMARD_KWARGS = {"r": "r", "alpha": "alpha", "dropout": "module_dropout"}


@register("loha", LoHaSection, peft_type="LOHA", config="LoHaConfig", kwargs=_HADAMARD_KWARGS, context=_TARGETED)
def _loha(a: LoHaSection, ctx: AdapterContext) -> PeftConfig:
    from peft import LoHaConfig

    return LoHaConfig(
        **_config_kwargs(a, ADAPTERS.get("loha")), target_modules=ctx.target_modules,
        modules_to_save=ctx.modules_to_save, task_type=ctx.task_type, **a.options,
    )


@register("lokr", LoKrSection, peft_type="LOKR", config="LoKrConfig", kwargs=_HADAMARD_KWARGS, context=_TARGETED)
def _lokr(a: LoKrSection, ctx: AdapterContext) -> PeftConfig:
    from peft import LoKrConfig

    return LoKrConfig(
        **_config_kwargs(a, ADAPTERS.get("lokr")), target_modules=ctx.target_modules,
        modules_to_save=ctx.modules_to_save, task_type=ctx.task_type, **a.options,
    )


def _adalora_update(model: PeftModel, step: int) -> None:
    """AdaLoRA reallocates its rank budget after each optimizer step (peft: before zero_grad)."""
    model.base_model.update_and_allocate(step)


@register(
    "adalora", AdaLoraSection, peft_type="ADALORA", config="AdaLoraConfig",
    kwargs={"init_r": "init_r", "target_r": "target_r", "alpha": "lora_alpha", "dropout": "lora_dropout", "use_rslora": "use_rslora"},
    context=(*_TARGETED, "total_step"), after_optimizer_step=_adalora_update,
)
def _adalora(a: AdaLoraSection, ctx: AdapterContext) -> PeftConfig:
    from peft import AdaLoraConfig

    return AdaLoraConfig(
        **_config_kwargs(a, ADAPTERS.get("adalora")), target_modules=ctx.target_modules,
        modules_to_save=ctx.modules_to_save, total_step=ctx.total_steps, task_type=ctx.task_type, **a.options,
    )


_VIRTUAL_KWARGS = {"num_virtual_tokens": "num_virtual_tokens", "modules_to_save": "modules_to_save"}


@register("prefix", PrefixSection, modalities=("text",), config="PrefixTuningConfig", kwargs=_VIRTUAL_KWARGS, context=("task_type",))
def _prefix(a: PrefixSection, ctx: AdapterContext) -> PeftConfig:
    from peft import PrefixTuningConfig

    # modules_to_save as given (None: peft's own choice, the classifier of SEQ_CLS models)
    return PrefixTuningConfig(**_config_kwargs(a, ADAPTERS.get("prefix")), task_type=ctx.task_type, **a.options)


@register("prompt", PromptSection, modalities=("text",), config="PromptTuningConfig", kwargs=_VIRTUAL_KWARGS, context=("task_type",))
def _prompt(a: PromptSection, ctx: AdapterContext) -> PeftConfig:
    from peft import PromptTuningConfig

    return PromptTuningConfig(**_config_kwargs(a, ADAPTERS.get("prompt")), task_type=ctx.task_type, **a.options)


@register("full", FullSection)
def _full(a: FullSection, ctx: AdapterContext) -> None:
    return None


@register("freeze", FreezeSection)
def _freeze(a: FreezeSection, ctx: AdapterContext) -> None:
    return None


def check_options(a: AdapterSection) -> None:
    """`adapter.options` keys must be fields of the method's peft config class, and not ones hfadapt
    sets from a named recipe field or from the model/task: one line naming adapter.options.KEY."""
    method = ADAPTERS.get(a.method, field="adapter.method")
    if method.config is None or not a.options:
        return
    import dataclasses

    import peft

    config = getattr(peft, method.config)
    from_field = {arg: field for field, arg in method.kwargs}
    from_field.update({f: f for f in ("target_modules", "modules_to_save") if f in method.section.model_fields})
    fixed = {f.name for f in dataclasses.fields(peft.PeftConfig)} | set(method.context)
    allowed = sorted({f.name for f in dataclasses.fields(config)} - fixed - set(from_field))
    for key in a.options:
        where = f"adapter.options.{key}"
        if key in from_field:
            raise HfadaptError(f"{where}: {a.method} sets {config.__name__}.{key} from adapter.{from_field[key]}; give adapter.{from_field[key]} instead")
        if key in fixed:
            raise HfadaptError(f"{where}: hfadapt sets {config.__name__}.{key} itself; it is not an option")
        if key not in allowed:
            owners = [m for m in adapter_methods() if key in adapter_section(m).model_fields]
            elsewhere = f" (adapter.{key} is a field of {', '.join(owners)})" if owners else did_you_mean(str(key), allowed)
            raise HfadaptError(f"{where}: not an option of {a.method}: peft's {config.__name__} has no field '{key}'{elsewhere}")


def is_peft(method: str) -> bool:
    return method not in ("full", "freeze")


def after_optimizer_step_hook(method: str) -> Callable[[Any, int], None] | None:
    """The method's `after_optimizer_step(model, step)`, or None: what the training loop calls
    on the unwrapped model after each optimizer step, without knowing which method it is."""
    return ADAPTERS.get(method, field="adapter.method").after_optimizer_step


# ---- applying --------------------------------------------------------------------------------
def head_modules(model: Module, extra: tuple[str, ...] = ()) -> list[str]:
    """The freshly initialised task head(s): direct children for transformers models, `timm_model.<classifier>`
    for timm; `extra`: a task's own (CTC's lm_head, sized to its vocabulary)."""
    from hfadapt.modeling.timm_models import classifier_names, is_timm

    if is_timm(model):
        return classifier_names(model)
    return [name for name, _ in model.named_children() if name in HEAD_NAMES or name in extra]


def peft_default_targets(model_type: str | None, peft_type: str = "LORA") -> list[str] | None:
    """peft's default target modules for an architecture, or hfadapt's own for audio models."""
    from peft.utils import constants

    mapping = getattr(constants, f"TRANSFORMERS_MODELS_TO_{peft_type}_TARGET_MODULES_MAPPING", {})
    if model_type in mapping:
        return list(mapping[model_type])
    if peft_type in LORA_FAMILY and model_type in AUDIO_LORA_TARGETS:
        return list(AUDIO_LORA_TARGETS[model_type])
    return None


def linear_module_names(model: Module, exclude: list[str] | None = None) -> dict[str, list[tuple[int, int]]]:
    """Leaf names of linear layers (nn.Linear, GPT-2 Conv1D) -> (in, out) shapes of each instance."""
    import torch.nn as nn
    from transformers.pytorch_utils import Conv1D

    exclude = exclude or []
    found: dict[str, list[tuple[int, int]]] = {}
    for name, module in model.named_modules():
        if any(name == e or name.startswith(e + ".") for e in exclude):
            continue
        if isinstance(module, nn.Linear):
            shape = (module.in_features, module.out_features)
        elif isinstance(module, Conv1D):
            shape = (module.weight.shape[0], module.weight.shape[1])
        else:
            continue
        found.setdefault(name.rsplit(".", 1)[-1], []).append(shape)
    return found


def default_targets(model: PreTrainedModel, method: AdapterMethod) -> list[str] | str | None:
    """peft's own default for the architecture when it has one, the family default for timm
    backbones (hfadapt.timm_models), all linear layers otherwise."""
    if method.peft_type is None:
        return None
    from hfadapt.modeling import timm_models

    if timm_models.is_timm(model):
        return timm_models.default_targets(model)
    default = peft_default_targets(getattr(model.config, "model_type", None), method.peft_type)
    names = sorted(linear_module_names(model, exclude=head_modules(model)))
    # A mapping written for another transformers version may name modules this one renamed
    # (ViT's and AST's query/value became q_proj/v_proj in transformers 5): then all linear layers.
    if default is not None and any(name in names for name in default):
        return default
    if not names:
        raise HfadaptError(f"adapter.target_modules: found no linear layers in {type(model).__name__}; list modules to adapt")
    return names


def apply_adapter(
    model: PreTrainedModel, recipe: Recipe, task: Task, num_training_steps: int | None = None
) -> PreTrainedModel | PeftModel:
    """Wrap (or freeze) the model as the recipe's adapter section says."""
    a = recipe.adapter
    method = ADAPTERS.get(a.method, field="adapter.method")
    check_options(a)
    heads = head_modules(model, extra=task.fresh_heads)
    if a.method == "full":
        model.requires_grad_(True)
        return model
    if a.method == "freeze":
        model.requires_grad_(False)
        if not heads:
            raise HfadaptError(f"adapter.method: freeze found no task head in {type(model).__name__} ({', '.join(HEAD_NAMES)})")
        for h in heads:
            model.get_submodule(h).requires_grad_(True)
        return model

    from peft import get_peft_model

    if a.method == "prefix" and not _accepts_past_key_values(model):
        import transformers

        raise HfadaptError(
            f"adapter.method: prefix tuning (peft) needs a model whose forward takes past_key_values; "
            f"{type(model).__name__} in transformers {transformers.__version__} does not (use prompt or lora)"
        )
    task_type = task.peft_task_type
    if task_type == "QUESTION_ANS" and a.method not in ("prefix", "prompt"):
        # peft's PeftModelForQuestionAnswering.forward drops token_type_ids (peft 0.21), so a BERT-style
        # reader would train and predict with every token in segment 0 while its merged or exported model
        # uses the real segments. The plain PeftModel passes every input on; the head is saved by
        # modules_to_save (qa_outputs is one of HEAD_NAMES) as the typed wrapper would.
        task_type = None
    given = a.target_modules if isinstance(a, TargetedAdapterSection) else None  # prefix/prompt: none
    task_targets, task_saved = task.adapter_targets(model, recipe)
    targets = given if given is not None else (task_targets if task_targets is not None and method.peft_type else default_targets(model, method))
    if targets == "all-linear" and task.fresh_heads:
        # peft's all-linear would also wrap a head it can't recognise as the output layer (CTC's lm_head)
        targets = sorted(linear_module_names(model, exclude=heads))
    if isinstance(given, list):
        _check_targets_exist(model, given, recipe.model.name_or_path)
    feedforward = None
    if a.method == "ia3":
        from peft.utils import constants

        ff_map = constants.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING
        model_type = getattr(model.config, "model_type", None)
        if given is None and model_type in ff_map:
            feedforward = list(ff_map[model_type])
        else:
            feedforward = []
    modules_to_save = a.modules_to_save if a.modules_to_save is not None else ([*heads, *task_saved] or None)
    from hfadapt.modeling.timm_models import is_convnet

    # Dropout on a conv LoRA drops the whole input feature map of every adapted conv (time and memory for
    # little regularisation); ConvNet LoRA is trained without it unless adapter.dropout says otherwise.
    ctx = AdapterContext(targets, modules_to_save, task_type, feedforward, num_training_steps,
                         dropout=0.0 if is_convnet(model) else None)
    try:
        config = method.build(a, ctx)
        return get_peft_model(model, config)
    except HfadaptError:
        raise
    except Exception as e:  # noqa: BLE001 - peft raises ValueError/TypeError/KeyError for misfits
        raise HfadaptError(
            f"adapter: {a.method} does not fit {type(model).__name__} ({recipe.model.name_or_path}): {first_line(e)}"
        ) from e


def _check_targets_exist(model: Module, names: list[str], where: str) -> None:
    leaves = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    full = {n for n, _ in model.named_modules()}
    missing = [n for n in names if n not in leaves and n not in full]
    if missing:
        candidates = ", ".join(sorted(linear_module_names(model, exclude=head_modules(model))))
        raise HfadaptError(
            f"adapter.target_modules: {', '.join(map(repr, missing))} matches no module of {type(model).__name__} "
            f"({where}); linear layers: {candidates} (`hfadapt targets MODEL` lists them)"
        )


def _accepts_past_key_values(model: Module) -> bool:
    """The check peft's prefix tuning makes at the first forward, made before training starts."""
    forwards = [model.forward] + [m.forward for _, m in model.named_children()]
    return any("past_key_values" in inspect.signature(f).parameters for f in forwards)


def count_parameters(model: Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


# ---- starting from a trained adapter (model.adapter) -----------------------------------------------
REFERENCE_ADAPTER = "reference"  # the frozen copy of a starting adapter (Task.reference_adapter)


class StartingAdapterModelSection(ModelSection):
    """The `model` section of tasks that may start from a trained adapter (preference: DPO after SFT)."""

    adapter: str | None = Field(
        None, description="start from this run's adapter and keep training it: a run directory (./ is relative to the "
        "recipe file) or a pushed adapter (hub:user/name); it must be an adapter of model.name_or_path",
    )


def continue_adapter(model: PreTrainedModel, start: StartingAdapter, reference: bool) -> PeftModel:
    """The base model with the starting adapter loaded trainable (as "default", what training saves), and,
    with `reference`, the same weights again as a frozen adapter named REFERENCE_ADAPTER, without dropout.

    Why two adapters on one base rather than merging the SFT weights into the base and putting a new LoRA
    on top: the run's saved adapter is then the SFT adapter trained further, on the original base, so plain
    peft (PeftModel.from_pretrained(base, run/adapter)), `hfadapt predict` and a pushed card's usage snippet
    load it onto the base model everyone has; a merged base would have to be saved and published with
    every run (a full copy of the weights) and quantized bases (QLoRA) cannot be merged into exactly. The
    frozen copy costs one more adapter's weights (no second base), and the reference pass switches adapters
    (peft set_adapter) where a fresh start switches the adapter off. TRL documents the same arrangement
    (DPOTrainer's model_adapter_name / ref_adapter_name)."""
    from peft import PeftModel

    name = getattr(model, "name_or_path", None)
    try:
        peft_model = PeftModel.from_pretrained(model, start.folder, is_trainable=True)
        if reference:
            add_reference_adapter(peft_model, start.folder)
    except HfadaptError:
        raise
    except Exception as e:  # noqa: BLE001 - peft's errors for an adapter that does not fit
        raise HfadaptError(f"model.adapter: cannot load {start.ref} onto {type(model).__name__}: {first_line(e)}") from e
    if name:  # the saved adapter names the base it was trained on here, as a fresh adapter would
        peft_model.peft_config["default"].base_model_name_or_path = name
    return peft_model


def add_reference_adapter(peft_model: PeftModel, folder: str) -> None:
    """Load the adapter in `folder` beside the model's own, frozen and without dropout, as REFERENCE_ADAPTER;
    the model's active (trained) adapter stays active and trainable. Training from model.adapter and
    `hfadapt eval` of such a run both build their reference this way."""
    from peft import PeftConfig, set_peft_model_state_dict
    from peft.utils import load_peft_weights

    config = PeftConfig.from_pretrained(folder)
    config.inference_mode = True
    for field in ("lora_dropout", "module_dropout"):  # a deterministic reference, as TRL's eval-mode reference model
        if hasattr(config, field):
            setattr(config, field, 0.0)
    active = peft_model.active_adapter
    peft_model.add_adapter(REFERENCE_ADAPTER, config)
    set_peft_model_state_dict(peft_model, load_peft_weights(folder), adapter_name=REFERENCE_ADAPTER)
    peft_model.set_adapter(active)  # trainable where it was, active; the reference frozen
