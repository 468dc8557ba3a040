"""One of two torchrun processes (gloo, CPU) for tests/test_fsdp2.py; not a test module itself.

It shards a LoRA model the way Accelerate's FSDP2 does (accelerate's own `fsdp2_prepare_model`:
`fully_shard` per `_no_split_modules` block, embeddings and head, then the root), trains it a few
steps, and drives hfadapt's weight functions on it. Process 0 writes what the test compares into
OUT (argv[2]); an unsharded copy trained on the whole global batch serves as the reference.

    torchrun --nproc_per_node 2 tests/fsdp2_worker.py BASE_DIR OUT
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist

STEPS = 3
GLOBAL_BATCH, SEQ = 4, 8


def lora_model(base: str):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)  # the same adapter initialisation in every process and in the reference
    model = AutoModelForCausalLM.from_pretrained(base)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))


def fake_accelerator(rank: int) -> SimpleNamespace:
    """What accelerate's fsdp2_prepare_model and get_state_dict read from an Accelerator (Accelerate itself
    enables FSDP only on GPUs, so a real one cannot be built here)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2, auto_wrap_policy="transformer_based_wrap", reshard_after_forward=True,
        cpu_ram_efficient_loading=False, state_dict_type="SHARDED_STATE_DICT",
    )
    acc = SimpleNamespace(
        state=SimpleNamespace(fsdp_plugin=plugin), mixed_precision="no", device=torch.device("cpu"), parallelism_config=None,
        is_main_process=rank == 0, distributed_type=DistributedType.FSDP, is_fsdp2=True, unwrap_model=lambda m: m,
    )
    acc.get_state_dict = lambda model: Accelerator.get_state_dict(acc, model)  # accelerate's own code path
    hooks: dict[str, object] = {}
    acc.register_save_state_pre_hook = lambda h: hooks.__setitem__("save", h)
    acc.register_load_state_pre_hook = lambda h: hooks.__setitem__("load", h)
    acc.hooks = hooks
    return acc


def main() -> None:
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model
    from safetensors.torch import save_file
    from torch.distributed.fsdp import FSDPModule
    from transformers import AutoTokenizer

    from hfadapt.modeling.sharding import generation_sync, prepare_sharded_generation, sharding
    from hfadapt.training.checkpoint import (
        load_trainable,
        register_trainable_hooks,
        save_trainable,
        trainable_state_dict,
    )
    from hfadapt.rundir.layout import RunDir
    from hfadapt.training.coordinator import _gathered_weights, _save_model

    base, out = sys.argv[1], Path(sys.argv[2])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    main_process = rank == 0
    acc = fake_accelerator(rank)

    reference = lora_model(base)
    model = fsdp2_prepare_model(acc, lora_model(base))
    assert isinstance(model, FSDPModule) and sharding(model) == "fsdp2" and sharding(reference) is None

    batch = torch.randint(0, model.config.vocab_size, (GLOBAL_BATCH, SEQ), generator=torch.Generator().manual_seed(1))
    mine = batch.chunk(world)[rank]  # equal halves: the mean of the halves' mean losses is the global mean
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ref_opt = torch.optim.AdamW([p for p in reference.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(STEPS):
        model(input_ids=mine, labels=mine).loss.backward()  # FSDP2 averages the gradients over processes
        opt.step()
        opt.zero_grad()
        reference(input_ids=batch, labels=batch).loss.backward()
        ref_opt.step()
        ref_opt.zero_grad()

    # 1. generate() on the sharded model straight after a training step (the root's own weights resharded),
    # as evaluation may. The processes ask for different lengths: the one that finishes first must keep
    # joining the other's collectives (synced_gpus) instead of leaving it hanging.
    prepare_sharded_generation(model)
    sync = generation_sync(model, world)
    new_tokens = 3 + 3 * rank
    model.eval()
    reference.eval()
    with torch.no_grad():
        ids = model.generate(input_ids=mine, max_new_tokens=new_tokens, do_sample=False, min_new_tokens=new_tokens, **sync)
        expected = reference.generate(input_ids=mine, max_new_tokens=new_tokens, do_sample=False, min_new_tokens=new_tokens)
    torch.save({"sync": sync, "generated": ids, "expected": expected}, out / f"generated-{rank}.pt")
    model.train()
    reference.train()

    # 2. checkpoint weights through the save_state hook, called on every process as save_state does
    register_trainable_hooks(acc)
    ckpt = out / "checkpoint"
    if main_process:
        ckpt.mkdir(parents=True)
        save_file(trainable_state_dict(reference), str(out / "reference.safetensors"))
    dist.barrier()
    acc.hooks["save"]([model], [], str(ckpt))

    # 3. perturb, then load the checkpoint back (as _finish does with the best weights)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(1.0)
    save_trainable(model, out / "perturbed.safetensors", main=main_process)
    dist.barrier()
    load_trainable(model, ckpt / "0-trainable.safetensors")
    save_trainable(model, out / "restored.safetensors", main=main_process)

    # 4. the final adapter, gathered on every process and written by the main one, and the sharded model's outputs
    weights = _gathered_weights(acc, model)
    if main_process:
        run = RunDir(out / "run")
        run.path.mkdir()
        recipe = SimpleNamespace(model=SimpleNamespace(init="pretrained"))
        _save_model(model, AutoTokenizer.from_pretrained(base), run, recipe, True, weights)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch).logits
    if main_process:
        torch.save({"input_ids": batch, "logits": logits}, out / "sharded_outputs.pt")

    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
