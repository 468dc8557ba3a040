"""`train.mixed_precision`: what `auto` becomes, and how the recipe and the launcher agree.

`auto` (the default) is what a practitioner picks for the device the run lands on: bf16 autocast on
a CUDA GPU that supports it (Ampere and newer), fp16 with loss scaling on older CUDA GPUs, fp32 on a
CPU (bf16 autocast runs there but is slower than fp32 on most CPUs) and elsewhere. A launch that
sets a precision (`accelerate launch --mixed_precision X` or its config) decides an `auto` recipe;
an explicit recipe value must agree with it.
"""

from __future__ import annotations

from typing import Any, Mapping

from hfadapt.core.errors import HfadaptError


def device_default() -> str:
    import torch

    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def launched_precision(env: Mapping[str, str]) -> str | None:
    launched = str(env.get("ACCELERATE_MIXED_PRECISION", "no")).lower()
    return None if launched in ("", "no") else launched


def resolve_precision(recipe_value: str, env: Mapping[str, str]) -> str:
    """The precision a run uses: the recipe's, or for `auto` the launcher's, else the device's default.
    A launch asking for another precision than an explicit recipe value is refused rather than overruled."""
    launched = launched_precision(env)
    if recipe_value == "auto":
        return launched or device_default()
    if launched is not None and launched != recipe_value:
        raise HfadaptError(
            f"train.mixed_precision: the launch asks for {launched} (ACCELERATE_MIXED_PRECISION, from accelerate launch or "
            f"its config) but the recipe says {recipe_value}; set train.mixed_precision={launched} (or auto) or launch with "
            f"--mixed_precision {recipe_value}"
        )
    return recipe_value
