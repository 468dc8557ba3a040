"""FSDP2 (torch `fully_shard`, as Accelerate's FSDP2 applies it) with a LoRA adapter, on two CPU
processes (torchrun, gloo): hfadapt's checkpoint weights, best-weights restore and final adapter.

Accelerate enables FSDP only on GPUs, so hfadapt's functions are driven directly on a model
sharded by accelerate's own `fsdp2_prepare_model` (tests/fsdp2_worker.py); whole training runs
under FSDP2 are checked on GPUs by benchmarks/gpu_check.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.test_distributed import _Proc, _check, _env, _free_port, _torchrun, TIMEOUT_S

WORKER = Path(__file__).with_name("fsdp2_worker.py")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory, tiny_bert: str) -> str:
    """A 2-layer Llama (the architecture of the shipped FSDP2 example) with untied embeddings."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tests.conftest import vocabulary

    root = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(
        vocab_size=len(vocabulary()), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, pad_token_id=0,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(root)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(root)
    return str(root)


@pytest.mark.slow
def test_fsdp2_lora_weights_gather_restore_and_save_a_plain_adapter(tmp_path: Path, tiny_llama: str) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    out.mkdir()
    cmd = _torchrun() + [
        "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        str(WORKER), tiny_llama, str(out),
    ]
    env = _env(tmp_path / "cache")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    proc = _Proc("fsdp2", cmd, tmp_path, env)
    try:
        rc, stdout, stderr = proc.wait(time.perf_counter() + TIMEOUT_S)
    finally:
        proc.kill()
    _check("fsdp2", cmd, rc, stdout, stderr)

    # Gathered trainable weights: whole tensors equal to the unsharded model trained on the same global batches.
    reference = load_file(str(out / "reference.safetensors"))
    gathered = load_file(str(out / "checkpoint" / "0-trainable.safetensors"))
    assert sorted(gathered) == sorted(reference) and any("lora_B" in k for k in reference)
    for key, weight in reference.items():
        assert gathered[key].shape == weight.shape, f"{key}: a shard {tuple(gathered[key].shape)}, not the whole {tuple(weight.shape)}"
        if "lora_B" in key:  # zero at initialisation: nonzero means the steps trained it
            assert weight.abs().max() > 1e-3, f"{key} did not train"
        assert torch.allclose(gathered[key], weight, rtol=1e-4, atol=1e-6), f"{key}: max diff {(gathered[key] - weight).abs().max():.3g}"

    # Save -> perturb -> load restores exactly (and the perturbation really changed the weights).
    perturbed, restored = load_file(str(out / "perturbed.safetensors")), load_file(str(out / "restored.safetensors"))
    for key, weight in gathered.items():
        assert not torch.equal(perturbed[key], weight), key
        assert torch.equal(restored[key], weight), f"{key} not restored exactly"

    # The final adapter is a plain peft folder: it loads onto an unsharded base and computes what the sharded model did.
    adapter = out / "run" / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    assert len(saved) == len(reference)  # the adapter only, not the gathered base
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), str(adapter)).eval()
    sharded = torch.load(out / "sharded_outputs.pt")
    with torch.no_grad():
        logits = plain(input_ids=sharded["input_ids"]).logits
    assert torch.allclose(logits, sharded["logits"], rtol=1e-4, atol=1e-5), f"max diff {(logits - sharded['logits']).abs().max():.3g}"
    # generate() on the sharded weights, each process asking for its own length, gives what the unsharded model gives.
    for rank in (0, 1):
        gen = torch.load(out / f"generated-{rank}.pt")
        assert gen["sync"] == {"synced_gpus": True}
        assert gen["generated"].shape[1] == gen["expected"].shape[1] == 8 + 3 + 3 * rank
        assert torch.equal(gen["generated"], gen["expected"]), f"process {rank}: {gen['generated'].tolist()} != {gen['expected'].tolist()}"


def test_a_model_the_sharding_engine_cannot_wrap_ends_in_one_line() -> None:
    """Accelerate's FSDP2 raises deep inside fully_shard for some architectures (BERT-style embeddings blocks
    in accelerate 1.15); the run ends with the engine and the model named, and the way out."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from hfadapt.core.errors import HfadaptError
    from hfadapt.training.coordinator import _prepare

    def failing_prepare(*parts):
        raise AssertionError("fully_shard: module already sharded\nmore lines")

    recipe = SimpleNamespace(model=SimpleNamespace(name_or_path="google-bert/bert-base-uncased"))
    acc = SimpleNamespace(distributed_type=DistributedType.FSDP, prepare=failing_prepare)
    with pytest.raises(HfadaptError) as info:
        _prepare(acc, recipe, "model")
    assert str(info.value) == (
        "train: FSDP could not wrap google-bert/bert-base-uncased: fully_shard: module already sharded; "
        "launch it with a DDP config (examples/launch/multi-gpu-ddp.yaml) or another engine"
    )
    acc.distributed_type = DistributedType.MULTI_GPU  # not a sharding engine: the library's error as it is
    with pytest.raises(AssertionError):
        _prepare(acc, recipe, "model")
