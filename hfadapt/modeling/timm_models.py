"""timm backbones (`timm/...` Hub repos or folders laid out like them) as image classifiers.

They load through transformers' own timm integration: `AutoConfig` reads a timm config.json as a
`TimmWrapperConfig`, `AutoModelForImageClassification` builds a `TimmWrapperForImageClassification`
(a `timm_model` attribute holding the plain timm model, saved without the prefix so timm loads the
files back), and `AutoImageProcessor` gives a `TimmWrapperImageProcessor` whose transforms come
from the checkpoint's `pretrained_cfg` (input size, interpolation, crop, mean/std). What the
wrapper does not do, this module does:

* a folder saved with `timm.models.save_for_hf(..., model_args=...)` records `num_classes` in
  `model_args`; the wrapper passes `num_classes` itself and would fail ("got multiple values"),
  so the duplicate is dropped (`drop_duplicate_num_classes`);
* the wrapper's config writes `label_names` with `setdefault`, so a base whose config names its
  own classes would keep them in the saved config: `sync_label_names` writes the data's;
* the classifier is `timm_model.<name>` (head, head.fc, fc, classifier), not a direct child of
  the model, so `classifier_names` asks timm (`get_classifier`) which module it is;
* default LoRA targets per family (`default_targets`): transformers (ViT, DeiT, EVA, Swin, ...)
  adapt the attention and MLP projections; ConvNets adapt their convolutions (and the Linear
  layers that are ConvNeXt's pointwise convolutions).

No torch/timm import at module level: `hfadapt validate` imports the modules that import this one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from torch import Tensor
    from torch.nn import Module
    from transformers import BaseImageProcessor, PretrainedConfig, PreTrainedModel

MODEL_TYPE = "timm_wrapper"


def is_timm(model_or_config: Module | PretrainedConfig) -> bool:
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, "model_type", None) == MODEL_TYPE


def is_timm_folder(path: str) -> bool:
    """A local folder laid out like a `timm/...` Hub repo: config.json with `architecture` and `pretrained_cfg`."""
    import json
    from pathlib import Path

    file = Path(path).expanduser() / "config.json"
    if not file.is_file():
        return False
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, OSError):
        return False
    return isinstance(config, dict) and "architecture" in config and "pretrained_cfg" in config


TIMM_KEYS = ("architecture", "pretrained_cfg")  # what a timm folder's config.json must hold
TIMM_HINTS = ("architecture", "pretrained_cfg", "model_args", "num_features", "label_names")  # ... and may


def check_timm_folder(path: str, field: str) -> None:
    """A local config.json that looks like timm's (no model_type, timm keys) but lacks `architecture` or
    `pretrained_cfg`: one error saying what a timm folder needs. Without `architecture` transformers would
    quietly build a resnet50; without `pretrained_cfg` the folder is taken for a transformers one."""
    import json
    from pathlib import Path

    from hfadapt.core.errors import HfadaptError

    file = Path(path).expanduser() / "config.json"
    if not file.is_file():
        return
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, OSError):
        return
    if not isinstance(config, dict) or "model_type" in config:  # transformers' own (timm_wrapper included) checks itself
        return
    if not any(k in config for k in TIMM_HINTS):
        return
    missing = [k for k in TIMM_KEYS if k not in config]
    if missing:
        raise HfadaptError(
            f"{field}: {file} looks like a timm checkpoint but has no {' or '.join(repr(k) for k in missing)}; a timm folder needs "
            "config.json with 'architecture' (the timm model name) and 'pretrained_cfg' (input size, mean, std), "
            "as timm's push_to_hf_hub writes it, beside model.safetensors"
        )


def drop_duplicate_num_classes(config: PretrainedConfig) -> PretrainedConfig:
    """The wrapper sizes the head from config.num_labels; a `num_classes` in model_args would be a second value."""
    if is_timm(config) and isinstance(getattr(config, "model_args", None), dict) and "num_classes" in config.model_args:
        config.model_args = {k: v for k, v in config.model_args.items() if k != "num_classes"}
    return config


def checkpoint_config(source: str, revision: str | None, trust_remote_code: bool, kwargs: dict) -> PretrainedConfig | None:
    """The config to load a timm checkpoint with (labels from `kwargs` applied), or None for other models."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code, **kwargs)
    return drop_duplicate_num_classes(config) if is_timm(config) else None


def sync_label_names(model: PreTrainedModel) -> None:
    """config.json of a timm model names the classes in `label_names` (what timm reads); make it the model's own labels."""
    if is_timm(model):
        config = model.config
        config.label_names = [config.id2label[i] for i in range(config.num_labels)]


def freeze_batch_norm(model: PreTrainedModel) -> None:
    """BatchNorm of a frozen backbone keeps its running statistics (timm's FrozenBatchNorm2d).

    In train mode BatchNorm would update them although the base is "frozen"; the adapter does not
    save them, so the reloaded run would evaluate differently from the one that ended training, and
    a run on N processes would differ from one process (statistics of per-process batches).
    """
    if is_timm(model):
        from timm.layers import freeze_batch_norm_2d

        model.timm_model = freeze_batch_norm_2d(model.timm_model)


# ---- modules ----------------------------------------------------------------------------------
def classifier_names(model: Module) -> list[str]:
    """Full names of the timm classifier module(s) inside the wrapper (`timm_model.head.fc`, ...)."""
    inner = getattr(model, "timm_model", None)
    if inner is None or not hasattr(inner, "get_classifier"):
        return []
    heads = inner.get_classifier()
    heads = heads if isinstance(heads, (tuple, list)) else (heads,)
    ids = {id(h) for h in heads if h is not None}
    return [name for name, module in model.named_modules() if id(module) in ids and name]


def family(model: Module) -> str:
    """'transformer' when the backbone has attention blocks (ViT, DeiT, EVA, Swin, BEiT, ...), else 'convnet'."""
    if any(type(m).__name__.endswith("Attention") for m in model.modules()):
        return "transformer"
    return "convnet"


def is_convnet(model: Module) -> bool:
    """A timm ConvNet (LoRA on its convolutions): its LoRA takes no dropout unless adapter.dropout is set."""
    return is_timm(model) and family(model) == "convnet"


def adaptable(module: Module) -> str | None:
    """'linear' or 'conv' for layers LoRA can adapt and merge; None otherwise.

    Grouped and depthwise convolutions are left out: peft (0.21) adapts a grouped Conv2d only when
    the rank is divisible by the groups (a depthwise conv has as many groups as channels) and
    cannot merge it, so `hfadapt merge` would fail.
    """
    import torch.nn as nn

    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Conv2d) and module.groups == 1:
        return "conv"
    return None


def target_modules(model: Module) -> list[str]:
    """Full names of the modules the family default adapts (the classifier is trained fully instead)."""
    heads = classifier_names(model)
    convnet = family(model) == "convnet"
    kinds = ("linear", "conv") if convnet else ("linear",)
    # A ConvNet's stem (pretrained_cfg's first_conv) is left out: a LoRA there makes backward run through the
    # whole network down to the full-resolution input, for a 3-channel layer that gains little from adapting.
    cfg = getattr(getattr(model, "timm_model", None), "pretrained_cfg", None) or {}
    stem = f"timm_model.{cfg['first_conv']}" if convnet and cfg.get("first_conv") else None
    out = []
    for name, module in model.named_modules():
        if any(name == h or name.startswith(h + ".") for h in heads) or name == stem:
            continue
        if adaptable(module) in kinds:
            out.append(name)
    return out


def default_targets(model: Module) -> list[str]:
    """The family default as short peft names: each the shortest dotted suffix that matches only chosen modules.

    ViT: qkv, attn.proj, fc1, fc2 (`attn.proj`, because the patch embedding's conv is also called proj);
    ResNet: the blocks' conv1 (N.conv1), conv2, conv3, downsample.0; EfficientNet: conv_pw, conv_pwl, ...; never the stem.
    """
    chosen = target_modules(model)
    return shortest_suffixes(chosen, [n for n, _ in model.named_modules() if n])


def shortest_suffixes(chosen: list[str], all_names: list[str]) -> list[str]:
    """peft matches a target `t` to module `k` when k == t or k ends with '.' + t."""
    chosen_set = set(chosen)
    others = [n for n in all_names if n not in chosen_set]

    def matches(key: str, suffix: str) -> bool:
        return key == suffix or key.endswith("." + suffix)

    picked: list[str] = []
    for name in chosen:
        if any(matches(name, s) for s in picked):
            continue
        parts = name.split(".")
        for i in range(len(parts) - 1, -1, -1):
            suffix = ".".join(parts[i:])
            if not any(matches(o, suffix) for o in others):
                picked.append(suffix)
                break
    return sorted(picked)


# ---- training ---------------------------------------------------------------------------------
def soft_target_loss(default: Callable[..., Tensor], label_smoothing: float) -> Callable[..., Tensor]:
    """A model loss (transformers' `loss_function` signature) that also takes the soft targets
    mixup/cutmix make, and smooths hard labels; anything else goes to the model's own loss."""

    def loss(labels: Tensor, logits: Tensor, config: PretrainedConfig, **kwargs: Any) -> Tensor:
        import torch.nn.functional as F

        if labels.is_floating_point() and labels.dim() == 2 and config.problem_type != "multi_label_classification":
            return -(labels * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()
        if label_smoothing and not labels.is_floating_point():
            return F.cross_entropy(logits.float().view(-1, config.num_labels), labels.view(-1), label_smoothing=label_smoothing)
        return default(labels, logits, config, **kwargs)

    return loss


def data_config(processor: BaseImageProcessor) -> dict[str, Any]:
    """timm's data config (input_size, interpolation, crop, mean, std) of an image processor:
    the checkpoint's pretrained_cfg for timm models, derived from the processor otherwise."""
    if hasattr(processor, "data_config"):
        return dict(processor.data_config)
    size = getattr(processor, "crop_size", None) or getattr(processor, "size", None) or {}
    if "height" in size:
        hw = (size["height"], size["width"])
    else:
        edge = size.get("shortest_edge", 224)
        hw = (edge, edge)
    return {
        "input_size": (3, *hw),
        "interpolation": "bicubic" if getattr(processor, "resample", 3) == 3 else "bilinear",
        "mean": tuple(getattr(processor, "image_mean", None) or (0.5, 0.5, 0.5)),
        "std": tuple(getattr(processor, "image_std", None) or (0.5, 0.5, 0.5)),
        "crop_pct": 1.0,
        "crop_mode": "center",
    }
