"""task: preference: hand-checked losses, parity with TRL, learning a preference, plain-peft reload, bad inputs."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from hfadapt import Recipe, train
from tests.conftest import write_jsonl
from tests.test_causal_lm import TEMPLATE, VOCAB, WORDS, _tokenizer

MARKER = "brief"  # chosen answers end with it, rejected ones lack it


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer Llama (no dropout) with the word-level chat tokenizer, saved like a Hub checkpoint."""
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(
        vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=1,
        tie_word_embeddings=False, initializer_range=0.2,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(root)
    _tokenizer(TEMPLATE).save_pretrained(root)
    return str(root)


def pairs(n: int, seed: int = 0, chat: bool = False) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    words = [w for w in WORDS if w != MARKER]
    rows = []
    for _ in range(n):
        prompt = "say " + " ".join(rng.choice(words) for _ in range(2))
        answer = " ".join(rng.choice(words) for _ in range(rng.randint(2, 4)))
        chosen, rejected = f" {answer} {MARKER}", f" {answer}"
        if chat:
            conv = lambda a: [{"role": "user", "content": prompt}, {"role": "assistant", "content": a.strip()}]  # noqa: E731
            rows.append({"chosen": conv(chosen), "rejected": conv(rejected)})
        else:
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def unpaired(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rows = []
    for i, r in enumerate(pairs(n, seed)):
        good = i % 2 == 0
        rows.append({"prompt": r["prompt"], "completion": r["chosen"] if good else r["rejected"], "label": good})
    return rows


def recipe(tmp: Path, model: str, rows: list[dict[str, Any]], **data: Any) -> Recipe:
    train_over = data.pop("train", {})
    return Recipe.from_dict({
        "name": "pref", "task": "preference", "model": {"name_or_path": model},
        "data": {"train_files": [str(write_jsonl(tmp / "pairs.jsonl", rows))], "validation_size": 0.25, "max_length": 32,
                 "max_prompt_length": 16, **data},
        "adapter": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "train": {"max_steps": 2, "batch_size": 8, "learning_rate": 1e-2, "logging_steps": 1, "log_with": [], **train_over},
        "output": {"dir": str(tmp / "run")},
    })
