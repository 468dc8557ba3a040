"""train.liger_kernel: refusals with one line each, the order of patching, and what liger swaps.

Liger's kernels are Triton GPU kernels, so no forward pass runs with them here. The tests that need
the package import it: liger-kernel is an optional extra for users (`hfadapt[liger]`) and part of
`.[dev]`, so CI checks its module swaps on CPU; the refusal for a missing package fakes its absence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import hfadapt.modeling.liger as liger
from hfadapt import HfadaptError, train
from hfadapt.cli import main
from tests.conftest import write_jsonl
from tests.test_causal_lm import VOCAB, _tokenizer, lm_recipe


def _llama_config(family: str) -> Any:
    from transformers import LlamaConfig, Qwen2Config

    config = LlamaConfig if family == "llama" else Qwen2Config
    return config(
        vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=1,
    )


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> str:
    from transformers import LlamaForCausalLM

    root = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    LlamaForCausalLM(_llama_config("llama")).save_pretrained(root)
    _tokenizer(None).save_pretrained(root)
    return str(root)


@pytest.fixture
def text_file(tmp_path: Path) -> str:
    rows = [{"text": "say red red and blue"}, {"text": "one two three four five"}] * 8
    return str(write_jsonl(tmp_path / "train.jsonl", rows))


def _recipe_file(tmp_path: Path, model: str, data: str) -> Path:
    import yaml

    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(lm_recipe(tmp_path, model, {"train_files": [data]}).to_dict()))
    return path


# ---- refusals --------------------------------------------------------------------------------------
def test_cli_refuses_without_the_package(tmp_path, tiny_llama, text_file, monkeypatch, capsys):
    monkeypatch.setattr(liger, "installed_version", lambda: None)  # as where hfadapt[liger] is not installed
    rc = main(["train", str(_recipe_file(tmp_path, tiny_llama, text_file)), "train.liger_kernel=true"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "hfadapt: error: train.liger_kernel: needs the liger-kernel package: pip install 'hfadapt[liger]'" in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run" / "adapter").exists()


def test_refuses_without_a_gpu_before_loading_anything(tmp_path, tiny_llama, monkeypatch):
    monkeypatch.setattr(liger, "installed_version", lambda: "0.8.5")
    # A training file that does not exist: the device refusal must come before the data is read.
    recipe = lm_recipe(tmp_path, tiny_llama, {"train_files": [str(tmp_path / "absent.jsonl")]}, train={"liger_kernel": True})
    with pytest.raises(HfadaptError) as e:
        train(recipe)
    assert str(e.value) == (
        "train.liger_kernel: Liger's Triton kernels need a CUDA GPU; this run is on cpu. "
        "Run on a GPU or set train.liger_kernel=false"
    )


def test_validate_refuses_a_task_liger_does_not_patch(capsys):
    rc = main(["validate", "text/sst2-bert-lora", "train.liger_kernel=true"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "train.liger_kernel: Liger's kernels are for causal-lm models, not text-classification" in err


def test_refuses_a_model_family_liger_has_no_kernels_for():
    import liger_kernel  # noqa: F401 - in .[dev]: see the module docstring
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(HfadaptError, match=r"train.liger_kernel: liger-kernel \S+ has no kernels for model type 'gpt2' "
                                           r"\(supported: .*\bllama\b.*\bqwen2\b.*\); set train.liger_kernel=false"):
        liger.apply(model)


# ---- where it is applied, and what is recorded -------------------------------------------------------
def test_applied_to_the_base_model_before_peft_and_recorded(tmp_path, tiny_llama, text_file, monkeypatch, capsys):
    """The plumbing, with liger's patching itself stubbed (its kernels can't run on a CPU)."""
    seen: list[Any] = []

    def fake_apply(model: Any) -> str:
        seen.append(model)
        return model.config.model_type

    monkeypatch.setattr(liger, "check_available", lambda device_type: "0.8.5")
    monkeypatch.setattr(liger, "apply", fake_apply)
    monkeypatch.setattr(liger, "installed_version", lambda: "0.8.5")
    result = train(lm_recipe(tmp_path, tiny_llama, {"train_files": [text_file]}, train={"liger_kernel": True}))

    from peft import PeftModel
    from transformers import LlamaForCausalLM

    assert len(seen) == 1 and isinstance(seen[0], LlamaForCausalLM) and not isinstance(seen[0], PeftModel)
    assert "hfadapt: train.liger_kernel: Liger kernels applied to llama (liger-kernel 0.8.5)" in capsys.readouterr().out
    info = json.loads((result.output_dir / "run_info.json").read_text())
    assert info["liger_kernel"] is True


def test_not_applied_by_default(tmp_path, tiny_llama, text_file, monkeypatch):
    monkeypatch.setattr(liger, "apply", lambda model: pytest.fail("liger applied though train.liger_kernel is false"))
    result = train(lm_recipe(tmp_path, tiny_llama, {"train_files": [text_file]}))
    info = json.loads((result.output_dir / "run_info.json").read_text())
    assert info["liger_kernel"] is False and "liger-kernel" not in info["versions"]


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_liger_swaps_the_modules_and_lora_wraps_them(family, monkeypatch):
    import liger_kernel  # noqa: F401 - in .[dev]: see the module docstring
    import importlib

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from liger_kernel.transformers.rms_norm import LigerRMSNorm
    from liger_kernel.transformers.rope import liger_rotary_pos_emb
    from liger_kernel.transformers.swiglu import LigerSwiGLUMLP

    lce_forward = importlib.import_module(f"liger_kernel.transformers.model.{family}").lce_forward
    modeling = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
    # liger also patches the family's transformers module for the whole process: restore it afterwards.
    prefix = "Llama" if family == "llama" else "Qwen2"
    for name in ("apply_rotary_pos_emb", f"{prefix}RMSNorm", f"{prefix}MLP"):
        monkeypatch.setattr(modeling, name, getattr(modeling, name))
    for cls in (getattr(modeling, f"{prefix}ForCausalLM"),):
        monkeypatch.setattr(cls, "forward", cls.forward)

    model = AutoModelForCausalLM.from_config(_llama_config(family))
    assert liger.apply(model) == family
    assert model.forward.__func__ is lce_forward  # fused linear cross-entropy instead of the plain LM head + loss
    assert modeling.apply_rotary_pos_emb is liger_rotary_pos_emb
    for layer in model.model.layers:
        assert layer.mlp.forward.__func__ is LigerSwiGLUMLP.forward
        assert layer.input_layernorm.forward.__func__ is LigerRMSNorm.forward
        assert layer.post_attention_layernorm.forward.__func__ is LigerRMSNorm.forward
    assert model.model.norm.forward.__func__ is LigerRMSNorm.forward

    # LoRA applied afterwards replaces the projections the patched MLP forward calls.
    peft_model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["gate_proj", "up_proj", "down_proj"]))
    mlp = peft_model.get_base_model().model.layers[0].mlp
    assert mlp.forward.__func__ is LigerSwiGLUMLP.forward
    assert type(mlp.gate_proj).__module__.startswith("peft.tuners.lora")
    assert peft_model.get_base_model().forward.__func__ is lce_forward
