"""The adapters `hfadapt serve` is tested with, trained once per session in a few steps: two chat LoRA
adapters of one tiny GPT-2 (one answers with colours, one with numbers), the finished text-classification
run of conftest and a speech-recognition LoRA of the tiny Whisper."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_jsonl

SPECIAL = ["<pad>", "<eos>", "<unk>", "<system>", "<user>", "<assistant>"]
COLORS = ["red", "green", "blue", "yellow", "black", "white"]
NUMBERS = ["one", "two", "three", "four", "five", "six"]
WORDS = COLORS + NUMBERS + "say tell me some please now words".split()
VOCAB = SPECIAL + WORDS
TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} <eos> {% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)


def _tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
                                  additional_special_tokens=["<system>", "<user>", "<assistant>"], model_max_length=64)
    tok.chat_template = TEMPLATE
    return tok


@pytest.fixture(scope="session")
def chat_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer GPT2LMHeadModel with random weights and a word-level tokenizer with a chat template."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    root = tmp_path_factory.mktemp("chat-lm")
    config = GPT2Config(vocab_size=len(VOCAB), n_positions=64, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.2, pad_token_id=0, bos_token_id=1, eos_token_id=1)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(root)
    _tokenizer().save_pretrained(root)
    return str(root)


def _chat_rows(answers: list[str], n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        ask = " ".join(rng.sample(["say", "tell", "me", "some", "words", "please", "now"], 3))
        answer = " ".join(rng.sample(answers, 3))
        rows.append({"messages": [{"role": "user", "content": ask}, {"role": "assistant", "content": answer}]})
    return rows


def train_chat_adapter(base: str, root: Path, name: str, answers: list[str], seed: int) -> Path:
    from hfadapt import Recipe, train

    data = write_jsonl(root / f"{name}.jsonl", _chat_rows(answers, 32, seed))
    recipe = Recipe.from_dict({
        "name": name, "task": "causal-lm", "model": {"name_or_path": base},
        "data": {"train_files": [str(data)], "validation_split": None, "max_length": 32},
        "adapter": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "train": {"max_steps": 12, "batch_size": 8, "learning_rate": 3e-2, "logging_steps": 4, "log_with": []},
        "generation": {"max_new_tokens": 6},
        "output": {"dir": str(root / name)},
    })
    return train(recipe).output_dir


@pytest.fixture(scope="session")
def chat_adapters(tmp_path_factory: pytest.TempPathFactory, chat_lm: str) -> dict[str, Path]:
    """{"colors": run dir, "numbers": run dir}: two LoRA adapters of `chat_lm`."""
    root = tmp_path_factory.mktemp("serve-runs")
    return {"colors": train_chat_adapter(chat_lm, root, "colors", COLORS, 0),
            "numbers": train_chat_adapter(chat_lm, root, "numbers", NUMBERS, 1)}


@pytest.fixture(scope="session")
def whisper_run(tmp_path_factory: pytest.TempPathFactory, tiny_whisper: str, tone_speech: str) -> Path:
    """A speech-recognition LoRA of the tiny Whisper, 2 steps (its transcripts need not be right, only equal)."""
    from hfadapt import Recipe, train

    recipe = Recipe.from_dict({
        "name": "asr", "task": "speech-recognition", "model": {"name_or_path": tiny_whisper},
        "data": {"train_files": [tone_speech], "validation_split": None},
        "adapter": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "train": {"max_steps": 2, "batch_size": 9, "learning_rate": 5e-2, "log_with": []},
        "generation": {"language": "en", "task": "transcribe", "max_new_tokens": 6},
        "output": {"dir": str(tmp_path_factory.mktemp("serve-asr") / "asr")},
    })
    return train(recipe).output_dir
