"""`hfadapt merge A B OUT --method M`: LoRA adapters combined by peft's add_weighted_adapter.

Two tiny-BERT text-classification runs of one base and one label set, trained on different words:
`words` learns sentiment from sentiment words, `topics` learns the same two labels from topic words
(food -> positive, sport -> negative). Their LoRA weights are merged by hfadapt and, in the test, by
peft's own add_weighted_adapter on the same adapters; the two must agree for every method.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from hfadapt import merge, predict
from hfadapt.cli import main
from tests.conftest import NEGATIVE, POSITIVE, SUBJECTS, sentiment_recipe, write_csv

METHODS = {
    "linear": {}, "cat": {}, "svd": {}, "ties": {"density": 0.5}, "dare_linear": {"density": 0.5},
    "dare_ties": {"density": 0.5}, "magnitude_prune": {"density": 0.5},
}
SPORT, FOOD = ["goal", "match"], ["pizza", "soup"]


def _word_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"text": f"{rng.choice(SUBJECTS)} {rng.choice(POSITIVE if i % 2 else NEGATIVE)}",
             "label": "positive" if i % 2 else "negative"} for i in range(n)]


def _topic_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"text": f"{rng.choice(SUBJECTS)} {rng.choice(FOOD if i % 2 else SPORT)}",
             "label": "positive" if i % 2 else "negative"} for i in range(n)]


def _train(tmp: Path, tiny_bert: str, name: str, rows: list[dict[str, Any]], seed: int, r: int = 4) -> Path:
    from hfadapt import Recipe, train

    raw = sentiment_recipe(tiny_bert, str(write_csv(tmp / f"{name}.csv", rows)), tmp / name)
    raw["adapter"]["r"] = r
    raw["adapter"]["target_modules"] = "all-linear"
    raw["train"].update({"epochs": 12, "seed": seed, "learning_rate": 1e-2})
    train(Recipe.from_dict(raw))
    return tmp / name


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory, tiny_bert: str) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("merge-methods")
    # one seed: the task head starts from the same random init in both runs, so averaging the heads is meaningful
    return _train(tmp, tiny_bert, "words", _word_rows(128, 0), seed=1), _train(tmp, tiny_bert, "topics", _topic_rows(64, 1), seed=1)


def _peft_reference(tiny_bert: str, adapters: list[Path], weights: list[float], method: str, density: float | None) -> dict[str, torch.Tensor]:
    """peft's own add_weighted_adapter on the LoRA weights of `adapters`, computed here without hfadapt."""
    from peft import PeftConfig, PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, config=AutoConfig.from_pretrained(adapters[0]))
    names = []
    model = None
    for i, folder in enumerate(adapters):
        config = PeftConfig.from_pretrained(str(folder))
        config.modules_to_save = None  # peft refuses to merge two copies of the head: compare the LoRA part
        name = f"a{i}"
        if model is None:
            model = PeftModel(base, config, adapter_name=name)
        else:
            model.add_adapter(name, config)
        lora = {k: v for k, v in load_file(str(folder / "adapter_model.safetensors")).items() if "lora_" in k}
        set_peft_model_state_dict(model, lora, adapter_name=name)
        names.append(name)
    torch.manual_seed(0)
    model.add_weighted_adapter(names, weights, "m", combination_type=method, **({"density": density} if density else {}))
    return {k: v for k, v in get_peft_model_state_dict(model, adapter_name="m").items() if "lora_" in k}


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_equals_peft(two_runs: tuple[Path, Path], tiny_bert: str, tmp_path: Path, method: str) -> None:
    from safetensors.torch import load_file

    density = METHODS[method].get("density")
    weights = [0.7, 0.3]
    out = merge(list(two_runs), tmp_path / "out", method=method, weights=weights, density=density)
    ours = {k: v for k, v in load_file(str(out / "adapter_model.safetensors")).items() if "lora_" in k}
    ref = _peft_reference(tiny_bert, [r / "adapter" for r in two_runs], weights, method, density)
    assert ours.keys() == ref.keys() and ours
    for k in ref:
        torch.testing.assert_close(ours[k], ref[k], rtol=1e-5, atol=1e-6, msg=k)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == (8 if method == "cat" else 4)
    card = (out / "README.md").read_text()
    assert f"`{method}`" in card and "words" in card and "topics" in card


def _logits_with_plain_peft(out: Path, tiny_bert: str, texts: list[str]) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, config=AutoConfig.from_pretrained(out))
    model = PeftModel.from_pretrained(base, str(out)).eval()
    tok = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        return model(**tok(texts, return_tensors="pt", padding=True)).logits


def test_plain_peft_reloads_to_the_logits_of_predict(two_runs: tuple[Path, Path], tiny_bert: str, tmp_path: Path) -> None:
    out = tmp_path / "ties"
    assert main(["merge", str(two_runs[0]), str(two_runs[1]), str(out), "--method", "ties",
                 "--weights", "1,1", "--density", "0.5"]) in (0, None)
    texts = [r["text"] for r in _word_rows(10, 7) + _topic_rows(10, 8)]
    rows = predict(str(out), texts)
    probs = torch.softmax(_logits_with_plain_peft(out, tiny_bert, texts), dim=-1)
    names = json.loads((out / "config.json").read_text())["id2label"]
    for row, p in zip(rows, probs):
        for j, label in names.items():
            assert abs(row["scores"][label] - float(p[int(j)])) < 1e-5


def test_full_folds_the_merge(two_runs: tuple[Path, Path], tiny_bert: str, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    adapter = merge(list(two_runs), tmp_path / "adapter", method="cat", weights=[0.5, 0.5])
    full = merge(list(two_runs), tmp_path / "full", method="cat", weights=[0.5, 0.5], full=True)
    texts = ["the film good", "the plot soup"]
    model = AutoModelForSequenceClassification.from_pretrained(full).eval()
    tok = AutoTokenizer.from_pretrained(full)
    with torch.no_grad():
        folded = model(**tok(texts, return_tensors="pt", padding=True)).logits
    torch.testing.assert_close(folded, _logits_with_plain_peft(adapter, tiny_bert, texts), rtol=1e-4, atol=1e-5)
    assert "Merged adapters" in (full / "README.md").read_text()


def test_one_source_with_a_weight_scales_it(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    out = merge([two_runs[0]], tmp_path / "half", method="linear", weights=[0.5])
    ours = load_file(str(out / "adapter_model.safetensors"))
    src = load_file(str(two_runs[0] / "adapter" / "adapter_model.safetensors"))
    head = [k for k in src if "lora_" not in k]
    assert head and all(torch.equal(ours[k], src[k]) for k in head)  # the task head is the source's own


HUB_BASE = "tiny-org/tiny-bert-merge"


def test_sources_by_hub_id_merge_like_the_runs_and_the_card_names_them(hub_server: Any, tiny_bert: str, sentiment_csv: str,
                                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs over a Hub-hosted base, pushed, then merged by repo id: the same adapter as merging the run
    folders, and the card names the repo ids, the method and the weights."""
    from safetensors.torch import load_file

    from hfadapt import Recipe, push, train
    from tests.conftest import sentiment_recipe

    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    if not hub_server.repo_exists(HUB_BASE):
        hub_server.seed(HUB_BASE, {p.name: p.read_bytes() for p in Path(tiny_bert).iterdir() if p.is_file()})
    runs, ids = [], ["test-user/merge-a", "test-user/merge-b"]
    for seed, repo in enumerate(ids):
        raw = sentiment_recipe(HUB_BASE, sentiment_csv, tmp_path / repo.split("/")[1])
        raw["train"].update({"seed": seed, "max_steps": 2})
        runs.append(train(Recipe.from_dict(raw)).output_dir)
        push(runs[-1], repo)
    by_id = merge(ids, tmp_path / "by-id", method="ties", weights=[0.6, 0.4], density=0.5)
    by_path = merge(runs, tmp_path / "by-path", method="ties", weights=[0.6, 0.4], density=0.5)
    ours, ref = load_file(str(by_id / "adapter_model.safetensors")), load_file(str(by_path / "adapter_model.safetensors"))
    assert ours.keys() == ref.keys() and any("lora_" in k for k in ours)
    for k in ref:
        assert torch.equal(ours[k], ref[k]), k
    card = (by_id / "README.md").read_text()
    assert "`ties`" in card and "density 0.5" in card
    assert "| `test-user/merge-a` | 0.6 |" in card and "| `test-user/merge-b` | 0.4 |" in card
    assert predict(str(by_id), ["the film was good"])[0]["label"] in ("positive", "negative")


# ---- TIES keeps both behaviours: two causal-lm adapters answering different prompts with different words ----
LOW, HIGH = "one two three four five".split(), "six seven eight nine ten".split()
OTHER = "the a and is was".split()


def _answer_rows(words: list[str], answer: str, n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"prompt": "say " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 4))), "completion": answer} for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.test_causal_lm import TEMPLATE, VOCAB, _tokenizer

    root = tmp_path_factory.mktemp("tiny-lm-merge")
    config = GPT2Config(vocab_size=len(VOCAB), n_positions=64, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, initializer_range=0.2, pad_token_id=0, bos_token_id=1, eos_token_id=1)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(root)
    _tokenizer(TEMPLATE).save_pretrained(root)
    return str(root)


def _lm_run(tmp: Path, base: str, name: str, rows: list[dict[str, Any]]) -> Path:
    from hfadapt import Recipe, train
    from tests.conftest import write_jsonl

    train(Recipe.from_dict({
        "name": name, "task": "causal-lm", "model": {"name_or_path": base},
        "data": {"train_files": [str(write_jsonl(tmp / f"{name}.jsonl", rows))], "validation_split": None, "max_length": 32,
                 "lm_format": "prompt_completion"},
        "adapter": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
        "train": {"max_steps": 30, "batch_size": 8, "learning_rate": 2e-2, "logging_steps": 1, "log_with": [], "seed": 0},
        "generation": {"max_new_tokens": 1},
        "output": {"dir": str(tmp / name)},
    }))
    return tmp / name


def _accuracy(model: str | Path, prompts: list[str], answer: str) -> float:
    return sum(r["generated_text"].strip() == answer for r in predict(str(model), prompts)) / len(prompts)


@pytest.mark.slow
def test_ties_merge_keeps_both_answers(tiny_lm: str, tmp_path: Path) -> None:
    """`red` answers "say <one..five>" prompts with red, `blue` "say <six..ten>" ones with blue; the TIES merge of
    the two answers both prompt sets far above the base (measured: 0.62 and 0.54 of held-out prompts, the
    adapters 1.0 each, the base 0.04 and 0.0). Each adapter alone says its word to any prompt, so the merge
    keeps each behaviour on part of the prompts only; the margins below leave room for that."""
    red = _lm_run(tmp_path, tiny_lm, "red", _answer_rows(LOW, "red", 64, 0))
    blue = _lm_run(tmp_path, tiny_lm, "blue", _answer_rows(HIGH, "blue", 64, 1))
    low = [r["prompt"] for r in _answer_rows(LOW, "red", 24, 2)]
    high = [r["prompt"] for r in _answer_rows(HIGH, "blue", 24, 3)]
    base = merge([red, blue], tmp_path / "base", method="linear", weights=[0.0, 0.0])  # zero deltas: the base model
    ties = merge([red, blue], tmp_path / "ties", method="ties", weights=[1.0, 1.0], density=0.5)
    scores = {
        "red": (_accuracy(red, low, "red"), _accuracy(red, high, "blue")),
        "blue": (_accuracy(blue, low, "red"), _accuracy(blue, high, "blue")),
        "base": (_accuracy(base, low, "red"), _accuracy(base, high, "blue")),
        "ties": (_accuracy(ties, low, "red"), _accuracy(ties, high, "blue")),
    }
    assert scores["red"][0] >= 0.9 and scores["blue"][1] >= 0.9, scores  # each adapter learned its answer
    assert scores["red"][1] <= 0.1 and scores["blue"][0] <= 0.1, scores  # and only its own
    assert max(scores["base"]) <= 0.15, scores
    for i in (0, 1):  # both behaviours survive the merge, clearly above the base
        assert scores["ties"][i] >= 0.35 and scores["ties"][i] >= scores["base"][i] + 0.25, scores
