"""train.liger_kernel: Liger's fused Triton kernels for causal-lm models, through the liger-kernel package.

Liger (https://github.com/linkedin/Liger-Kernel) swaps a supported family's RMSNorm, RoPE and SwiGLU
for Triton kernels and replaces the LM head + cross-entropy by a fused linear cross-entropy that
never materialises the full logits while training (memory, and speed at large vocabularies).
As transformers' Trainer does for `use_liger_kernel`, it is applied to the loaded model instance
(`_apply_liger_kernel_to_instance`), here before peft wraps it: the patched MLP forward calls
its own gate/up/down projections, so LoRA layers that later replace them are used as usual.

Note (liger's design, as under HF Trainer): besides the instance, liger patches the family's
transformers module (RoPE function, RMSNorm/MLP classes) for the rest of the process.

Refused with one line rather than silently training without it: the package missing, a device
without Triton GPU kernels, or a model family liger has no kernels for.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

from hfadapt.core.errors import HfadaptError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Devices liger's kernels run on (its own `infer_device`: CUDA also covers ROCm; Intel XPU).
DEVICES = ("cuda", "xpu")


def installed_version() -> str | None:
    try:
        return metadata.version("liger-kernel")
    except metadata.PackageNotFoundError:
        return None


def check_available(device_type: str) -> str:
    """The liger-kernel version, or an HfadaptError saying why the kernels can't run here.

    Called at train setup, before data and model are loaded, so a refusal comes at once.
    """
    version = installed_version()
    if version is None:
        raise HfadaptError("train.liger_kernel: needs the liger-kernel package: pip install 'hfadapt[liger]'")
    if device_type not in DEVICES:
        raise HfadaptError(
            f"train.liger_kernel: Liger's Triton kernels need a CUDA GPU; this run is on {device_type}. "
            "Run on a GPU or set train.liger_kernel=false"
        )
    return version


def supported_model_types() -> list[str]:
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

    return sorted(MODEL_TYPE_TO_APPLY_LIGER_FN)


def apply(model: "PreTrainedModel") -> str:
    """Patch the (not yet peft-wrapped) model in place; returns its model_type.

    liger's own entry point only logs and returns for a family it does not know; a run that asked
    for the kernels must not silently train without them, so that is refused here first.
    """
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    known = supported_model_types()
    if model_type not in known:
        raise HfadaptError(
            f"train.liger_kernel: liger-kernel {installed_version()} has no kernels for model type '{model_type}' "
            f"(supported: {', '.join(known)}); set train.liger_kernel=false"
        )
    _apply_liger_kernel_to_instance(model=model)
    return model_type
