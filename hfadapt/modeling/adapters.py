"""Adapter section -> peft config (or a baseline), default target modules, and target discovery.

peft is imported inside functions so that `hfadapt validate` can check method names without torch.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from hfadapt.core.errors import HfadaptError, first_line
from hfadapt.core.registry import Registry

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
    total_steps: int | None = None  # AdaLoRA's rank budget schedule spans the run


@dataclass(frozen=True)
class AdapterMethod:
    name: str
    modalities: tuple[str, ...]
    peft_type: str | None  # key of peft's TRANSFORMERS_MODELS_TO_<X>_TARGET_MODULES_MAPPING; None: no targets
    build: Callable[[Any, AdapterContext], Any]  # returns a peft config, or None for the baselines


ADAPTERS: Registry[AdapterMethod] = Registry("adapter method")


def register(name: str, modalities: tuple[str, ...] = ("text", "image", "audio"), peft_type: str | None = None):
    def deco(fn: Callable[[Any, AdapterContext], Any]) -> Callable[[Any, AdapterContext], Any]:
        ADAPTERS.register(name)(AdapterMethod(name, modalities, peft_type, fn))
        return fn

    return deco


@register("lora", peft_type="LORA")
def _lora(a: Any, ctx: AdapterContext) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=a.r, lora_alpha=a.alpha, lora_dropout=a.dropout, target_modules=ctx.target_modules,
        modules_to_save=ctx.modules_to_save, use_rslora=a.use_rslora, use_dora=a.use_dora,
        task_type=ctx.task_type, **a.options,
    )


@register("ia3", peft_type="IA3")
def _ia3(a: Any, ctx: AdapterContext) -> Any:
    from peft import IA3Config

    return IA3Config(
        target_modules=ctx.target_modules, feedforward_modules=ctx.feedforward_modules,
        modules_to_save=ctx.modules_to_save, task_type=ctx.task_type, **a.options,
    )


@register("loha", peft_type="LOHA")
def _loha(a: Any, ctx: AdapterContext) -> Any:
    from peft import LoHaConfig

    return LoHaConfig(
        r=a.r, alpha=a.alpha, module_dropout=a.dropout, target_modules=ctx.target_modules,
        modules_to_save=ctx.modules_to_save, task_type=ctx.task_type, **a.options,
    )


@register("lokr", peft_type="LOKR")
def _lokr(a: Any, ctx: AdapterContext) -> Any:
    from peft import LoKrConfig

    return LoKrConfig(
        r=a.r, alpha=a.alpha, module_dropout=a.dropout, target_modules=ctx.target_modules,
        modules_to_save=ctx.modules_to_save, task_type=ctx.task_type, **a.options,
    )


@register("adalora", peft_type="ADALORA")
def _adalora(a: Any, ctx: AdapterContext) -> Any:
    from peft import AdaLoraConfig

    return AdaLoraConfig(
        init_r=a.init_r, target_r=a.target_r, lora_alpha=a.alpha, lora_dropout=a.dropout,
        target_modules=ctx.target_modules, modules_to_save=ctx.modules_to_save, use_rslora=a.use_rslora,
        total_step=ctx.total_steps, task_type=ctx.task_type, **a.options,
    )


@register("prefix", modalities=("text",))
def _prefix(a: Any, ctx: AdapterContext) -> Any:
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(num_virtual_tokens=a.num_virtual_tokens, task_type=ctx.task_type, **a.options)


@register("prompt", modalities=("text",))
def _prompt(a: Any, ctx: AdapterContext) -> Any:
    from peft import PromptTuningConfig

    return PromptTuningConfig(num_virtual_tokens=a.num_virtual_tokens, task_type=ctx.task_type, **a.options)


@register("full")
def _full(a: Any, ctx: AdapterContext) -> None:
    return None


@register("freeze")
def _freeze(a: Any, ctx: AdapterContext) -> None:
    return None


def is_peft(method: str) -> bool:
    return method not in ("full", "freeze")


# ---- applying --------------------------------------------------------------------------------
def head_modules(model: Any, extra: tuple[str, ...] = ()) -> list[str]:
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


def linear_module_names(model: Any, exclude: list[str] | None = None) -> dict[str, list[tuple[int, int]]]:
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


def default_targets(model: Any, method: AdapterMethod) -> list[str] | str | None:
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


def apply_adapter(model: Any, recipe: Any, task: Any, num_training_steps: int | None = None) -> Any:
    """Wrap (or freeze) the model as the recipe's adapter section says."""
    a = recipe.adapter
    method = ADAPTERS.get(a.method, field="adapter.method")
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
    targets = a.target_modules if a.target_modules is not None else default_targets(model, method)
    if targets == "all-linear" and task.fresh_heads:
        # peft's all-linear would also wrap a head it can't recognise as the output layer (CTC's lm_head)
        targets = sorted(linear_module_names(model, exclude=heads))
    if isinstance(a.target_modules, list):
        _check_targets_exist(model, a.target_modules, recipe.model.name_or_path)
    feedforward = None
    if a.method == "ia3":
        from peft.utils import constants

        ff_map = constants.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING
        model_type = getattr(model.config, "model_type", None)
        if a.target_modules is None and model_type in ff_map:
            feedforward = list(ff_map[model_type])
        else:
            feedforward = []
    modules_to_save = a.modules_to_save if a.modules_to_save is not None else (heads or None)
    ctx = AdapterContext(targets, modules_to_save, task_type, feedforward, num_training_steps)
    try:
        config = method.build(a, ctx)
        return get_peft_model(model, config)
    except HfadaptError:
        raise
    except Exception as e:  # noqa: BLE001 - peft raises ValueError/TypeError/KeyError for misfits
        raise HfadaptError(
            f"adapter: {a.method} does not fit {type(model).__name__} ({recipe.model.name_or_path}): {first_line(e)}"
        ) from e


def _check_targets_exist(model: Any, names: list[str], where: str) -> None:
    leaves = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    full = {n for n, _ in model.named_modules()}
    missing = [n for n in names if n not in leaves and n not in full]
    if missing:
        candidates = ", ".join(sorted(linear_module_names(model, exclude=head_modules(model))))
        raise HfadaptError(
            f"adapter.target_modules: {', '.join(map(repr, missing))} matches no module of {type(model).__name__} "
            f"({where}); linear layers: {candidates} (`hfadapt targets MODEL` lists them)"
        )


def _accepts_past_key_values(model: Any) -> bool:
    """The check peft's prefix tuning makes at the first forward, made before training starts."""
    forwards = [model.forward] + [m.forward for _, m in model.named_children()]
    return any("past_key_values" in inspect.signature(f).parameters for f in forwards)


def count_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
