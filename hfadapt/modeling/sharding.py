"""Whether a model's weights are sharded over processes (FSDP2, ZeRO-3), and what generation needs then.

Below the tasks: causal-lm, seq2seq and speech-recognition generate during evaluation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def sharding(model: "torch.nn.Module") -> str | None:
    """How the model's weights are split over processes: "fsdp2" (torch `fully_shard`, as Accelerate's
    FSDP2 applies it in place), "zero3" (DeepSpeed ZeRO-3: parameters are empty partitions), or None
    (every process holds every weight: one process, DDP, ZeRO-1/2). Read from the model itself, so the
    same functions serve a model prepared by Accelerate and one sharded by hand (tests)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch built without distributed support
        FSDPModule = ()  # noqa: N806
    # The module, not its parameters: between forward and backward FSDP2 swaps in unsharded plain tensors.
    if isinstance(model, FSDPModule) or any(isinstance(m, FSDPModule) for m in model.modules()):
        return "fsdp2"
    if any(hasattr(p, "ds_id") for p in model.parameters()):  # set on every parameter ZeRO-3 partitioned
        return "zero3"
    return None


def prepare_sharded_generation(model: "torch.nn.Module") -> None:
    """Let `model.generate()` run on a model Accelerate sharded with FSDP2. FSDP2 gathers the root's
    own weights (embeddings, final norm, head) only around `forward`, which `generate` bypasses on the
    PeftModel; torch's `register_fsdp_forward_method` makes `generate` gather them too. A no-op for
    anything not sharded with FSDP2."""
    if sharding(model) == "fsdp2" and not getattr(model, "_hfadapt_generate_registered", False):
        from torch.distributed.fsdp import register_fsdp_forward_method

        register_fsdp_forward_method(model, "generate")
        model._hfadapt_generate_registered = True


def generation_sync(model: "torch.nn.Module", num_processes: int) -> dict[str, Any]:
    """Extra `generate()` arguments: with sharded weights every forward is a collective, so processes
    that finish early keep stepping until all are done (`synced_gpus`). transformers detects this by
    itself for ZeRO-3 and for its own FSDP2 wrapping, not for Accelerate's FSDP2, so hfadapt says it."""
    return {"synced_gpus": True} if num_processes > 1 and sharding(model) is not None else {}
