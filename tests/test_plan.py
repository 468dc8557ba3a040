"""`hfadapt plan`: exact parameter counts from a config alone, memory figures checked against the
tensors a real training step holds on the tiny models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from hfadapt import Recipe
from hfadapt.cli import main
from hfadapt.training.plan import MemoryPlan, plan_recipe


def _config_only(tmp_path: Path, config: Any, name: str) -> str:
    folder = tmp_path / name
    config.save_pretrained(folder)  # config.json only: a plan needs no weights
    return str(folder)


def _recipe(task: str, model: str, data: dict | None = None, **sections: Any) -> Recipe:
    return Recipe.from_dict({
        "task": task, "model": {"name_or_path": model}, "data": {"train_files": ["unused.csv"], **(data or {})},
        "train": {"log_with": []}, **sections,
    })


def test_parameter_counts_of_published_configs(tmp_path: Path) -> None:
    """bert-base-uncased has 109,482,240 parameters and GPT-2 small 124,439,808 (their model pages)."""
    from transformers import BertConfig, GPT2Config

    bert = _config_only(tmp_path, BertConfig(), "bert-base")  # BertConfig() is bert-base-uncased's config
    full = plan_recipe(_recipe("text-classification", bert, adapter={"method": "full"}))
    assert full.total_params == 109_482_240 + 768 * 2 + 2  # + a 2-label classifier head
    assert full.trainable_params == full.total_params
    lora = plan_recipe(_recipe("text-classification", bert, adapter={"method": "lora", "r": 8, "target_modules": ["query", "value"]}))
    # LoRA r=8 on query and value of 12 layers (12 * 2 * (768*8 + 8*768)) + the head trained fully
    assert lora.trainable_params == 12 * 2 * (768 * 8 + 8 * 768) + 768 * 2 + 2 == 296_450
    gpt2 = _config_only(tmp_path, GPT2Config(), "gpt2")
    lm = plan_recipe(_recipe("causal-lm", gpt2, adapter={"method": "full"}))
    assert lm.total_params == 124_439_808  # the tied embedding/LM head counted once
    assert lm.weight_bytes == 124_439_808 * 4 and lm.gradient_bytes == lm.weight_bytes and lm.optimizer_bytes == 2 * lm.weight_bytes


def _saved_bytes_real(model: Any, batch: dict) -> int:
    """Bytes of the distinct storages autograd saves in a real forward pass, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: Any) -> Any:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**batch).loss.backward()
    return sum(seen.values())


@pytest.mark.parametrize("checkpointing", [False, True])
def test_plan_matches_a_real_training_step(make_recipe: Any, checkpointing: bool) -> None:
    from hfadapt.modeling.adapters import apply_adapter
    from hfadapt.modeling.models import load_base_model
    from hfadapt.tasks import TASKS

    recipe = make_recipe(train={"batch_size": 4, "gradient_checkpointing": checkpointing}, data={"max_length": 16})
    plan = plan_recipe(recipe)
    task = TASKS.get(recipe.task)
    processor = task.load_processor(recipe)
    from transformers import AutoConfig

    model = load_base_model(recipe, task, task.info_from_config(AutoConfig.from_pretrained(recipe.model.name_or_path)), processor)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = apply_adapter(model, recipe, task).train()
    params = list(model.parameters())
    assert plan.total_params == sum(p.numel() for p in params)
    assert plan.trainable_params == sum(p.numel() for p in params if p.requires_grad)
    assert plan.weight_bytes == sum(p.numel() * p.element_size() for p in params)

    batch = {"input_ids": torch.full((4, 16), 7, dtype=torch.long), "labels": torch.zeros(4, dtype=torch.long)}
    measured = _saved_bytes_real(model, batch)
    # Traced on the meta device, measured here on real tensors: the same tensors are saved.
    assert plan.activation_bytes == pytest.approx(measured, rel=0.05), (plan.activation_bytes, measured)
    optimizer = torch.optim.AdamW([p for p in params if p.requires_grad])
    optimizer.step()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    moments = sum(v.numel() * v.element_size() for s in optimizer.state.values() for k, v in s.items() if k != "step")
    assert plan.gradient_bytes == grads and plan.optimizer_bytes == moments


def test_checkpointing_and_sharding_shrink_the_plan(make_recipe: Any) -> None:
    plain = plan_recipe(make_recipe(train={"batch_size": 8}))
    checkpointed = plan_recipe(make_recipe(train={"batch_size": 8, "gradient_checkpointing": True}))
    assert checkpointed.activation_bytes < plain.activation_bytes
    assert plain.per_device("fsdp", 4) < plain.per_device("single") < plain.per_device("ddp", 4)
    assert plain.per_device("qlora") < plain.per_device("single")


def test_plan_command(tmp_path: Path, tiny_bert: str, sentiment_csv: str, capsys: Any) -> None:
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"task": "text-classification", "model": {"name_or_path": tiny_bert},
                                    "data": {"train_files": [sentiment_csv], "max_length": 16}}))
    assert main(["plan", str(path), "train.batch_size=4", "--processes", "2"]) == 0
    out = capsys.readouterr().out
    assert "4 x 16 tokens" in out and "DDP x2" in out and "FSDP full-shard x2" in out and "4-bit base (QLoRA)" in out
    assert main(["plan", str(path), "--processes", "0"]) == 2
    assert "plan --processes" in capsys.readouterr().err


def test_memory_plan_layouts_add_up() -> None:
    plan = MemoryPlan("m", 10, 2, 1000, 300, 8, 16, 100, 50, 1, "1 token", "no", False)
    assert plan.per_device("single") == 1000 + 8 + 16 + 100
    assert plan.per_device("ddp", 4) == 1000 + 8 + 16 + 8 + 100
    assert plan.per_device("fsdp", 4) == (1000 + 8 + 16) // 4 + 50 + 100
    assert plan.per_device("qlora") == 300 + 8 + 16 + 100


def test_audio_recipes_plan_with_their_inputs(tmp_path: Path) -> None:
    """Audio models are planned with the inputs their feature extractors give; AST's default LoRA targets
    exist under transformers 5 (q_proj/v_proj: 12 layers x 2 x 768*8*2, plus its layernorm+linear head)."""
    from transformers import ASTConfig, Wav2Vec2Config, WhisperConfig

    ast = plan_recipe(_recipe("audio-classification", _config_only(tmp_path, ASTConfig(), "ast"), data={"dataset": "d", "train_files": None}))
    assert ast.trainable_params == 12 * 2 * (768 * 8 * 2) + (768 * 2 + 768 * 2 + 2)
    assert ast.sequence == "1024 x 128 spectrograms" and ast.activation_bytes > 0
    whisper = _config_only(tmp_path, WhisperConfig(d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                                   decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=100,
                                                   pad_token_id=0, bos_token_id=1, eos_token_id=0, decoder_start_token_id=1), "whisper")
    asr = plan_recipe(_recipe("speech-recognition", whisper, data={"dataset": "d", "train_files": None, "max_target_length": 32}))
    assert asr.sequence == "30 s log-mel windows + 32-token transcripts" and asr.activation_bytes > 0
    ctc = _config_only(tmp_path, Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                                  conv_dim=(32, 32), conv_kernel=(10, 4), conv_stride=(5, 4), vocab_size=32), "ctc")
    kws = plan_recipe(_recipe("audio-classification", ctc, data={"dataset": "d", "train_files": None, "max_duration_s": 2}))
    assert kws.sequence == "2 s at 16 kHz" and kws.activation_bytes > 0
