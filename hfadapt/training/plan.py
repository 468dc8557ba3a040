"""`hfadapt plan RECIPE`: parameters and memory per device before anything is downloaded or trained.

The model is built on the meta device from its config (accelerate's init_empty_weights), so no
weights are loaded, and the recipe's adapter is applied to it as training would apply it. From
that skeleton:

- parameters: counted exactly (total, trainable);
- weights: every parameter at the dtype it would be loaded in (model.dtype; trainable adapter
  weights stay float32, as peft keeps them); with model.quantization=4bit the frozen Linear
  weights take NF4's 4 bits plus ~0.127 bits of double-quantised scales;
- gradients: trainable parameters in float32;
- optimizer: AdamW's two float32 moments per trainable parameter;
- activations: the tensors autograd saves for backward in one forward pass over a micro-batch
  of train.batch_size examples at the recipe's sequence length (or image size), counted by
  running that forward pass on the meta device (shapes only, no memory, no compute) with a
  saved-tensors hook — with gradient checkpointing as the recipe sets it, and 16-bit weights
  standing in for mixed precision (see _saved_tensor_bytes). This is
  what stays alive between forward and backward; transient buffers of single ops come on top.

Layouts: one process; DDP over N (a full replica per device, plus gradient buckets the size of
the gradients); FSDP full-shard over N (weights, gradients and optimizer state divided by N,
plus the largest block gathered whole); and the same recipe with 4-bit quantisation.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from hfadapt.core.errors import HfadaptError, first_line
from hfadapt.training.precision import resolve_precision

if TYPE_CHECKING:
    from torch import Tensor
    from torch.nn import Module
    from transformers import PretrainedConfig

    from hfadapt.core.recipe import Recipe

NF4_BYTES = (4 + 0.127) / 8  # bitsandbytes NF4 with double quantisation (QLoRA paper, section 3)
BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class MemoryPlan:
    model: str
    total_params: int
    trainable_params: int
    weight_bytes: int  # one full copy, as loaded
    weight_bytes_4bit: int  # the same with the frozen Linear weights in NF4
    gradient_bytes: int
    optimizer_bytes: int
    activation_bytes: int | None  # None: the task gives no example batch to trace
    largest_block_bytes: int  # what FSDP gathers whole at a time
    batch_size: int
    sequence: str  # what one example is: "128 tokens", "224x224 pixels"
    mixed_precision: str
    gradient_checkpointing: bool

    def per_device(self, layout: str, processes: int = 1) -> int:
        """Bytes per device for 'single', 'ddp', 'fsdp' or 'qlora' (4-bit base, one process)."""
        act = self.activation_bytes or 0
        states = self.gradient_bytes + self.optimizer_bytes
        if layout == "single":
            return self.weight_bytes + states + act
        if layout == "ddp":
            return self.weight_bytes + states + self.gradient_bytes + act  # + DDP's gradient buckets
        if layout == "fsdp":
            return (self.weight_bytes + states) // max(processes, 1) + self.largest_block_bytes + act
        if layout == "qlora":
            return self.weight_bytes_4bit + states + act
        raise ValueError(layout)


def plan_recipe(recipe: Recipe) -> MemoryPlan:
    """The memory plan of a recipe: config only, nothing downloaded beyond it."""
    import torch
    import transformers

    from hfadapt.modeling.adapters import apply_adapter
    from hfadapt.modeling.models import auto_model_class, check_local_path
    from hfadapt.tasks import TASKS

    task = TASKS.get(recipe.task, field="task")
    m = recipe.model
    check_local_path(m.name_or_path, "model.name_or_path")
    try:
        config = transformers.AutoConfig.from_pretrained(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code)
    except Exception as e:  # noqa: BLE001
        raise HfadaptError(f"model.name_or_path: cannot read the config of '{m.name_or_path}': {first_line(e)}") from e
    info = task.info_from_config(config)
    for key, value in task.model_kwargs(info).items():
        setattr(config, key, value)
    auto = auto_model_class(task, config)  # speech-recognition: seq2seq or CTC, from the config
    # torch.device("meta") rather than accelerate's init_empty_weights: under the latter,
    # transformers 5 leaves tied embeddings untied (GPT-2 would count its 38.6M embedding twice).
    with torch.device("meta"):
        try:
            model = auto.from_config(config, trust_remote_code=m.trust_remote_code)
        except Exception as e:  # noqa: BLE001
            raise HfadaptError(f"model.name_or_path: cannot build {task.auto_class} from the config of '{m.name_or_path}': {first_line(e)}") from e
        if recipe.train.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model = apply_adapter(model, recipe, task, num_training_steps=1)
    dtype = _load_dtype(m.dtype, config)
    params = list(model.named_parameters())
    trainable = [(n, p) for n, p in params if p.requires_grad]
    n_trainable = sum(p.numel() for _, p in trainable)
    frozen = [(n, p) for n, p in params if not p.requires_grad]
    weight_bytes = n_trainable * 4 + sum(p.numel() for _, p in frozen) * BYTES[dtype]
    linear_frozen = _frozen_linear_params(model)
    compute = 2 if dtype == "float32" else BYTES[dtype]  # QLoRA computes in bf16/fp16
    weight_4bit = n_trainable * 4 + int(linear_frozen * NF4_BYTES) + (sum(p.numel() for _, p in frozen) - linear_frozen) * compute
    precision = resolve_precision(recipe.train.mixed_precision, os.environ)  # as train() would on this machine
    planned = task.plan_batch(recipe, config, recipe.train.batch_size)
    inputs, sequence = planned if planned is not None else (None, "n/a")
    activations = None
    if inputs is not None:
        try:
            activations = _saved_tensor_bytes(model, inputs, precision)
        except Exception as e:  # noqa: BLE001 - a model whose forward needs real values: no estimate
            sequence += f" (not traceable on the meta device: {first_line(e)})"
    return MemoryPlan(
        model=m.name_or_path,
        total_params=sum(p.numel() for _, p in params),
        trainable_params=n_trainable,
        weight_bytes=weight_bytes,
        weight_bytes_4bit=weight_4bit,
        gradient_bytes=n_trainable * 4,
        optimizer_bytes=n_trainable * 8,
        activation_bytes=activations,
        largest_block_bytes=_largest_block(model, BYTES[dtype]),
        batch_size=recipe.train.batch_size,
        sequence=sequence,
        mixed_precision=precision if recipe.train.mixed_precision == precision else f"{recipe.train.mixed_precision} ({precision} here)",
        gradient_checkpointing=recipe.train.gradient_checkpointing,
    )


def _load_dtype(dtype: str, config: PretrainedConfig) -> str:
    if dtype != "auto":
        return dtype
    stored = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32").replace("torch.", "")
    return stored if stored in BYTES else "float32"


def _frozen_linear_params(model: Module) -> int:
    import torch.nn as nn

    return sum(
        mod.weight.numel() for name, mod in model.named_modules()
        if type(mod) is nn.Linear and not mod.weight.requires_grad and "lora_" not in name
    )


def _largest_block(model: Module, bytes_per: int) -> int:
    """Parameters of the largest repeated block (a transformer layer): FSDP gathers one at a time."""
    import torch.nn as nn

    best = 0
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 1:
            best = max(best, max(sum(p.numel() for p in child.parameters()) for child in module) * bytes_per)
    return best


def _saved_tensor_bytes(model: Module, inputs: dict[str, Tensor], mixed_precision: str) -> int:
    """Bytes autograd keeps for backward in one forward pass, traced on the meta device.

    Tensors are counted once per storage (a view shares its base) and parameters not at all:
    a saved weight costs nothing beyond the weights already counted. Autocast has no meta-device
    kernel, so mixed precision is traced with the weights in its 16-bit dtype: autocast keeps a
    few ops (softmax, norms, the loss) in float32, so the real figure is somewhat higher.
    """
    import torch

    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
    if half is not None:
        model.to(half)

    param_ids = {id(p) for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        base = t._base if t._base is not None else t
        if id(base) not in param_ids:
            saved[id(base)] = base.numel() * base.element_size()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _shape_only_masks():
        model(**inputs)
    return sum(saved.values())


@contextmanager
def _shape_only_masks() -> Iterator[None]:
    """transformers' mask builders look at mask values to take shortcuts (`padding_mask.all()`, packed
    sequences); meta tensors have no values. Under torch.compile/export they skip those looks; so
    does the trace, which then builds the general mask (a few KiB more than the shortcut)."""
    from unittest import mock

    try:
        import transformers.masking_utils as masking
    except ImportError:  # an older transformers: nothing to skip
        yield
        return
    with mock.patch.object(masking, "is_tracing", lambda *args, **kwargs: True):
        yield


def format_plan(plan: MemoryPlan, processes: int) -> str:
    def gib(n: int | None) -> str:
        if n is None:
            return "n/a"
        return f"{n / 2**30:,.2f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"

    share = 100 * plan.trainable_params / plan.total_params if plan.total_params else 0.0
    lines = [
        f"{plan.model}: {plan.total_params:,} parameters, {plan.trainable_params:,} trainable ({share:.3f}%)",
        f"micro-batch: {plan.batch_size} x {plan.sequence}; mixed precision {plan.mixed_precision}; "
        f"gradient checkpointing {'on' if plan.gradient_checkpointing else 'off'}",
        "",
        f"{'':<28}{'weights':>12}{'gradients':>12}{'optimizer':>12}{'activations':>13}{'per device':>13}",
    ]
    act = plan.activation_bytes
    rows = [
        ("1 process", plan.weight_bytes, plan.gradient_bytes, plan.optimizer_bytes, "single"),
        (f"DDP x{processes} (+buckets)", plan.weight_bytes, 2 * plan.gradient_bytes, plan.optimizer_bytes, "ddp"),
        (f"FSDP full-shard x{processes}", plan.weight_bytes // processes + plan.largest_block_bytes,
         plan.gradient_bytes // processes, plan.optimizer_bytes // processes, "fsdp"),
        ("4-bit base (QLoRA)", plan.weight_bytes_4bit, plan.gradient_bytes, plan.optimizer_bytes, "qlora"),
    ]
    for name, w, g, o, layout in rows:
        lines.append(f"{name:<28}{gib(w):>12}{gib(g):>12}{gib(o):>12}{gib(act):>13}{gib(plan.per_device(layout, processes)):>13}")
    lines.append("")
    lines.append(
        "activations: tensors saved for backward in one forward pass (traced on the meta device); "
        "allocator overhead, CUDA context (~0.5 GiB) and transient buffers come on top"
    )
    if act is None:
        lines.append("this task gives no example batch to trace, so activations are not estimated")
    return "\n".join(lines)
