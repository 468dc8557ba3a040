"""Shared fixtures: tiny models saved like Hub checkpoints, small generated datasets, recipe builder.

Everything is built once per session; huggingface.co is never contacted (see HF_ENDPOINT below).
"""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path
from typing import Any, Callable

import pytest

import socket


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# huggingface_hub reads these at import time, so they are set before anything imports it:
# the whole session talks to the Hub-compatible server of tests/hub_server.py (started by the
# `hub_server` fixture) and never to huggingface.co; with no server running, calls are refused at once.
HUB_PORT = _free_port()
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{HUB_PORT}"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ.pop("HF_TOKEN", None)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.hub_server import hub_server  # noqa: E402,F401  (fixture; imported after the variables above)
from tests.audio_fixtures import sound_folder, tiny_wav2vec2, tiny_whisper, tone_speech  # noqa: E402,F401  (fixtures)
from tests.vlm_fixtures import colour_chat, tiny_gemma3, tiny_idefics3, tiny_llava, tiny_qwen2_vl  # noqa: E402,F401  (fixtures)

import torch  # noqa: E402

# Tiny models on 2 shared cores: a second intra-op thread costs more than it gives.
torch.set_num_threads(1)


POSITIVE = "good great wonderful excellent delightful superb brilliant charming lovely fun".split()
NEGATIVE = "bad awful terrible boring dull poor weak tedious messy bland".split()
SUBJECTS = ["the film", "the movie", "the plot", "the acting", "the music", "the ending"]
FILLERS = ["was", "is", "felt", "really", "quite", "very", "and", "so", "also"]
TOPICS = ["sport", "music", "food"]
TOPIC_WORDS = {"sport": ["goal", "match"], "music": ["song", "band"], "food": ["pizza", "soup"]}


def sentiment_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        word = rng.choice(POSITIVE if label else NEGATIVE)
        rows.append({"text": f"{rng.choice(SUBJECTS)} {rng.choice(FILLERS)} {word}", "label": "positive" if label else "negative"})
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def vocabulary() -> list[str]:
    words = set(POSITIVE + NEGATIVE + FILLERS + " ".join(SUBJECTS).split())
    for ws in TOPIC_WORDS.values():
        words.update(ws)
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(words)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer BERT with random weights saved like a Hub checkpoint (loaded with from_pretrained).

    Dropout is off so runs with different process counts can be compared exactly.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("tiny-bert")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(vocabulary()) + "\n")
    tok = BertTokenizerFast(vocab=str(vocab), do_lower_case=True)  # transformers 5: `vocab`, not `vocab_file`
    config = BertConfig(
        vocab_size=len(vocabulary()), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        initializer_range=0.2,  # larger random features than BERT's 0.02, so a tiny random base can learn quickly
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(root)
    tok.save_pretrained(root)
    return str(root)


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory, tiny_bert: str) -> str:
    """A 2-layer GPT-2 (Conv1D layers, accepts past_key_values) sharing the tiny word-level tokenizer."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2Model

    root = tmp_path_factory.mktemp("tiny-gpt2")
    config = GPT2Config(
        vocab_size=len(vocabulary()), n_positions=64, n_embd=32, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0,
    )
    torch.manual_seed(0)
    GPT2Model(config).save_pretrained(root)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(root)
    return str(root)


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> str:
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    root = tmp_path_factory.mktemp("tiny-vit")
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    ViTModel(config, add_pooling_layer=False).save_pretrained(root)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(root)
    return str(root)


@pytest.fixture(scope="session")
def sentiment_csv(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_csv(tmp_path_factory.mktemp("data") / "sentiment.csv", sentiment_rows(64)))


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """train/{red,blue}/*.png: the colour decides the class."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("validation", 6)):
        for label, channel in (("red", 0), ("blue", 2)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 80, size=(40, 40, 3), dtype=np.uint8)
                arr[..., channel] = rng.integers(170, 255, size=(40, 40), dtype=np.uint8)
                Image.fromarray(arr).save(folder / f"{i}.png")
    return str(root)


def sentiment_recipe(model: str, data_file: str, run_dir: Path) -> dict[str, Any]:
    """The small text-classification recipe of `make_recipe` and `finished_run`."""
    return {
        "name": "test",
        "task": "text-classification",
        "model": {"name_or_path": model},
        "data": {"train_files": [data_file], "validation_size": 0.25, "max_length": 16},
        "adapter": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"epochs": 1, "batch_size": 8, "learning_rate": 5e-3, "logging_steps": 1, "log_with": []},
        "output": {"dir": str(run_dir)},
    }


@pytest.fixture
def make_recipe(tmp_path: Path, tiny_bert: str, sentiment_csv: str) -> Callable[..., Any]:
    """Recipe.from_dict over a small text-classification base; keyword args are dotted overrides."""
    from hfadapt import Recipe

    def build(overrides: list[str] | None = None, **sections: Any) -> Any:
        raw = sentiment_recipe(tiny_bert, sentiment_csv, tmp_path / "run")
        if sections.get("adapter", {}).get("method", "lora") != "lora":
            raw["adapter"] = {}  # another method: the base's LoRA fields are not its own
        for key, value in sections.items():
            raw.setdefault(key, {}).update(value) if isinstance(value, dict) else raw.__setitem__(key, value)
        return Recipe.from_dict(raw, overrides=overrides)

    return build


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert: str, sentiment_csv: str) -> Any:
    """One finished LoRA run of `make_recipe`'s recipe (4 steps, local tiny BERT), trained once per session
    for the tests that only read a run: eval, predict, reload with plain peft, model card, merge.
    Its TrainResult; tests must not change the run directory."""
    from hfadapt import Recipe, train

    run_dir = tmp_path_factory.mktemp("finished") / "run"
    return train(Recipe.from_dict(sentiment_recipe(tiny_bert, sentiment_csv, run_dir), overrides=["train.max_steps=4"]))


class _Crash(Exception):
    """Stands for a kill: raised from a step callback, after the last checkpoint."""


def train_interrupted_then_resumed(recipe: Any, crash_at: int) -> Any:
    """Train `recipe` until optimizer step `crash_at`, stop there as a crash would, then `--resume` it.

    Returns the resumed run's TrainResult, to compare with an uninterrupted run of the same recipe.
    """
    from hfadapt import train

    def crash(state: Any) -> None:
        if state.global_step == crash_at:
            raise _Crash()

    with pytest.raises(_Crash):
        train(recipe, callbacks=[crash])
    assert not (Path(recipe.output_dir) / "adapter").exists()  # the crash came before the end
    return train(recipe, resume=True)


def assert_same_adapter(one: Path, two: Path) -> None:
    """The saved adapter weights of two runs are bit-identical (and there are some)."""
    from safetensors.torch import load_file

    a = load_file(str(Path(one) / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(Path(two) / "adapter" / "adapter_model.safetensors"))
    assert a and a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
