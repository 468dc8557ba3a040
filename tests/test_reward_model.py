"""task: reward-model: the Bradley-Terry loss by hand and against TRL's RewardTrainer, learning a
preference on a tiny GPT-2, `predict` scores of texts and conversations, plain-peft reload, exact resume
and 2 processes == 1 (tests/pairs_fixtures.py, shared with the preference task)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from tests.conftest import FILLERS, NEGATIVE, POSITIVE, SUBJECTS, write_jsonl
from tests.pairs_fixtures import GLOBAL_BATCH, STEPS, resumed_equals_uninterrupted, two_process_recipes, two_processes_equal_one

# A minimal chat template (the tiny tokenizer has none): "<role> content" turns.
CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"


def preference_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Pairs whose chosen response ends with a positive word and whose rejected one ends with a negative
    word; the rest of each response is random, so only the last word tells them apart."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        def response(words: list[str]) -> str:
            return f"{rng.choice(SUBJECTS)} {rng.choice(FILLERS)} {rng.choice(words)}"
        rows.append({"prompt": rng.choice(SUBJECTS), "chosen": response(POSITIVE), "rejected": response(NEGATIVE)})
    return rows


def chat_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """The same pairs as conversations (no prompt column: the shared first turn is the prompt)."""
    return [
        {"chosen": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["chosen"]}],
         "rejected": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["rejected"]}]}
        for r in preference_rows(n, seed)
    ]


def reward_recipe(model: str, train_file: Path, out: Path, train: dict[str, Any] | None = None,
                  adapter: dict[str, Any] | None = None, **data: Any) -> Any:
    from hfadapt import Recipe

    raw = {
        "name": "reward", "task": "reward-model", "model": {"name_or_path": model},
        "data": {"train_files": [str(train_file)], "validation_size": 0.25, "max_length": 24, "max_prompt_length": 8, **data},
        "adapter": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "train": {"epochs": 6, "batch_size": 8, "learning_rate": 1e-2, "logging_steps": 1, "log_with": []},
        "eval": {"best_metric": "accuracy"},
        "output": {"dir": str(out)},
    }
    raw["train"].update(train or {})
    raw["adapter"].update(adapter or {})
    return Recipe.from_dict(raw)


# ---- the loss ------------------------------------------------------------------------------------------
def test_pairwise_loss_by_hand() -> None:
    from hfadapt.tasks.reward_model import pairwise_loss

    loss = pairwise_loss(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, -1.0]))
    expected = [math.log(1 + math.exp(-1)), math.log(2), math.log(1 + math.exp(-3))]
    torch.testing.assert_close(loss, torch.tensor(expected))


def test_training_loss_reads_chosen_then_rejected() -> None:
    """The batch is [chosen_1..chosen_B; rejected_1..rejected_B]: rewards (1, 3 | 0, 4) give pairs (1, 0), (3, 4)."""
    from hfadapt.tasks.base import get_task

    class Fixed(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
            return SimpleNamespace(logits=torch.tensor([[1.0], [3.0], [0.0], [4.0]]))

    batch = {"input_ids": torch.zeros(4, 3, dtype=torch.long), "attention_mask": torch.ones(4, 3, dtype=torch.long)}
    loss, figures = get_task("reward-model").training_loss(Fixed(), batch, None)
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-1)) + math.log(1 + math.exp(1))) / 2, abs=1e-6)
    assert figures["accuracy"].item() == 0.5 and figures["margin"].item() == pytest.approx(0.0)  # margins 1 and -1


def _tiny_reward_model(tiny_gpt2: str) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    tok.eos_token = "[SEP]"  # TRL appends EOS to text responses; the tiny word-level tokenizer names none
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_gpt2, num_labels=1, pad_token_id=tok.pad_token_id).eval()
    return model, tok


@pytest.mark.parametrize("fmt", ["text", "chat"])
def test_loss_and_batch_equal_trls_reward_trainer(fmt: str, tiny_gpt2: str) -> None:
    """The same tiny model and pairs: TRL's tokenization + DataCollatorForPreference give our batch, and
    TRL's RewardTrainer.compute_loss (called on a stand-in trainer) gives our loss, to 1e-5."""
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from trl.data_utils import _tokenize
    from trl.trainer.reward_trainer import DataCollatorForPreference, RewardTrainer

    from hfadapt import Recipe
    from hfadapt.tasks import language
    from hfadapt.tasks.base import get_task

    model, tok = _tiny_reward_model(tiny_gpt2)
    tok.chat_template = CHAT_TEMPLATE
    rows = preference_rows(6, seed=3) if fmt == "text" else chat_rows(6, seed=3)
    recipe = Recipe.from_dict({"task": "reward-model", "model": {"name_or_path": tiny_gpt2},
                               "data": {"train_files": ["x.jsonl"], "max_length": 64, "max_prompt_length": 32}})
    task = get_task("reward-model")
    pairs = task.preprocess(Dataset.from_list(rows), "train", tok, recipe, None, train=True)
    ours = task.collator(tok)([pairs[i] for i in range(len(pairs))])

    # TRL's preprocessing of the same rows (RewardTrainer._prepare_dataset: prompt + response, EOS on text)
    trl_rows = []
    for r in rows:
        if fmt == "text":
            chosen, rejected = (r["prompt"] + r[k] + tok.eos_token for k in ("chosen", "rejected"))
        else:
            chosen, rejected = r["chosen"], r["rejected"]
        trl_rows.append({"chosen_ids": _tokenize(tok, chosen)["input_ids"], "rejected_ids": _tokenize(tok, rejected)["input_ids"]})
    theirs = DataCollatorForPreference(pad_token_id=tok.pad_token_id)(trl_rows)
    assert torch.equal(ours["input_ids"], theirs["input_ids"]) and torch.equal(ours["attention_mask"], theirs["attention_mask"])

    stand_in = SimpleNamespace(
        model=model, args=SimpleNamespace(center_rewards_coefficient=None), _tp_size=1, _total_train_tokens=0,
        _metrics={"train": _Lists(), "eval": _Lists()},
        accelerator=SimpleNamespace(gather_for_metrics=lambda x: x, gather=lambda x: x),
    )
    with torch.no_grad():
        expected = RewardTrainer.compute_loss(stand_in, model, dict(theirs))
        got, _ = task.training_loss(model, ours, recipe)
    assert abs(got.item() - expected.item()) < 1e-5, (got.item(), expected.item())
    assert trl.__version__  # the reference that was compared with


class _Lists(dict):
    def __missing__(self, key: str) -> list:
        self[key] = []
        return self[key]


# ---- learning, predict, reload -------------------------------------------------------------------------
def _held_out_accuracy(model: Any, tok: Any, recipe: Any, rows: list[dict[str, Any]]) -> float:
    from hfadapt.tasks.base import get_task

    task = get_task("reward-model")
    batch_c = task.encode_inputs([r["prompt"] + r["chosen"] for r in rows], tok, recipe)
    batch_r = task.encode_inputs([r["prompt"] + r["rejected"] for r in rows], tok, recipe)
    with torch.no_grad():
        c, r = model(**batch_c).logits.squeeze(-1), model(**batch_r).logits.squeeze(-1)
    return float((c > r).float().mean())


def test_reward_model_learns_a_preference_and_predict_scores(tmp_path: Path, tiny_gpt2: str) -> None:
    from transformers import AutoModelForSequenceClassification

    from hfadapt import predict, train

    rows = preference_rows(96, seed=0)
    data = write_jsonl(tmp_path / "prefs.jsonl", rows)
    recipe = reward_recipe(tiny_gpt2, data, tmp_path / "run")
    held_out = preference_rows(40, seed=99)

    # before: a fresh head on the base model ranks the held-out pairs about at random
    from hfadapt.tasks.base import get_task

    tok = get_task("reward-model").load_processor(recipe)
    torch.manual_seed(recipe.train.seed)
    fresh = AutoModelForSequenceClassification.from_pretrained(tiny_gpt2, num_labels=1, pad_token_id=tok.pad_token_id).eval()
    before = _held_out_accuracy(fresh, tok, recipe, held_out)
    assert 0.2 <= before <= 0.8, before

    result = train(recipe)
    assert result.metrics["eval/accuracy"] > 0.9, result.metrics
    assert result.metrics["eval/margin"] > 0 and result.metrics["eval/samples"] == 24
    assert result.losses[-1] < result.losses[0]

    # per-pair margins of the final evaluation, in dataset order
    lines = (result.output_dir / "eval_predictions.jsonl").read_text().splitlines()
    preds = [json.loads(x) for x in lines]
    assert len(preds) == 24 and {"row", "margin", "reward_chosen", "reward_rejected", "prompt", "chosen", "rejected"} <= set(preds[0])
    assert sum(p["margin"] > 0 for p in preds) / 24 == pytest.approx(result.metrics["eval/accuracy"])
    assert all(p["margin"] == pytest.approx(p["reward_chosen"] - p["reward_rejected"], abs=1e-5) for p in preds)

    # predict: one score per input; the trained model prefers the positive ending on unseen pairs
    inputs = [r["prompt"] + r[k] for r in held_out for k in ("chosen", "rejected")]
    scores = [p["score"] for p in predict(result.output_dir, inputs)]
    assert all(isinstance(s, float) for s in scores)
    wins = sum(scores[2 * i] > scores[2 * i + 1] for i in range(len(held_out)))
    assert wins / len(held_out) > 0.9

    # the report shows the view of this task
    from tests.test_report import check_report

    check_report(result.output_dir, tmp_path / "report.html")
    assert "Most wrongly ranked pairs" in (tmp_path / "report.html").read_text()


def test_chat_pairs_predict_conversations_and_reload_with_plain_peft(tmp_path: Path, tiny_gpt2: str) -> None:
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from hfadapt import predict, train
    from hfadapt.rundir.layout import RunDir

    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(32, seed=1))
    recipe = reward_recipe(tiny_gpt2, data, tmp_path / "run", chat_template=CHAT_TEMPLATE)
    recipe = recipe.model_copy(update={"train": recipe.train.model_copy(update={"epochs": 1, "max_steps": 2})})
    result = train(recipe)
    assert math.isfinite(result.metrics["eval/loss"])

    conversation = [{"role": "user", "content": "the film"}, {"role": "assistant", "content": "the plot was good"}]
    inputs = [json.dumps(conversation), "the film was dull"]
    scores = [p["score"] for p in predict(result.output_dir, inputs)]

    # plain transformers + peft, as the model card shows, give the same scores
    adapter = str(RunDir.open(result.output_dir).model_dir)
    config = AutoConfig.from_pretrained(adapter)
    assert config.num_labels == 1 and config.pad_token_id is not None
    plain = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(tiny_gpt2, config=config), adapter).eval()
    tok = AutoTokenizer.from_pretrained(adapter)
    assert tok.chat_template == CHAT_TEMPLATE  # saved with the adapter
    text = tok.apply_chat_template(conversation, tokenize=False)
    # (input ids and mask only, as in training: the word-level test tokenizer also returns token_type_ids,
    # which GPT-2 would add as embeddings)
    kw = {"return_tensors": "pt", "return_token_type_ids": False}
    with torch.no_grad():
        chat_score = plain(**tok(text, add_special_tokens=False, **kw)).logits[0, 0].item()
        text_score = plain(**tok("the film was dull" + (tok.eos_token or ""), **kw)).logits[0, 0].item()
    assert scores == pytest.approx([chat_score, text_score], abs=1e-5)


# ---- guarantees: exact resume, 2 processes == 1 ----------------------------------------------------------
def test_resumed_run_equals_the_uninterrupted_one(tmp_path: Path, tiny_gpt2: str) -> None:
    """Killed after step 3 (checkpoint at step 2), resumed: the same per-step losses, logged accuracy and
    margin, evaluations, adapter weights (the score head included) and metrics, bit for bit. Dropout on
    (data.disable_dropout false, LoRA dropout 0.1): the RNG state must come back too."""
    data = write_jsonl(tmp_path / "prefs.jsonl", preference_rows(48, seed=2))

    def run(name: str) -> Any:
        return reward_recipe(tiny_gpt2, data, tmp_path / name, disable_dropout=False, adapter={"dropout": 0.1},
                             train={"epochs": 1, "max_steps": 6, "save_steps": 2, "eval_steps": 3, "batch_size": 4})

    full, _ = resumed_equals_uninterrupted(run, kill_at=3)
    assert full.state.global_step == 6
    logged = [h for h in full.state.log_history if "train/loss" in h]
    assert len(logged) == 6 and all("train/accuracy" in h and "train/margin" in h for h in logged)
    assert [h["step"] for h in full.state.log_history if "eval/accuracy" in h] == [3, 6]
    from safetensors.torch import load_file

    weights = load_file(str(full.output_dir / "adapter" / "adapter_model.safetensors"))
    assert any("score" in k for k in weights)  # the head is trained and saved with the adapter


@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path: Path, tiny_gpt2: str) -> None:
    """tests/test_distributed.py's check for the reward model: one process with batch 8 and two (torchrun,
    gloo) with 4 each see the same pairs each step, so per-step losses, accuracy and margin, the adapter
    and head weights and the evaluations (16 held-out pairs in batches of 5: the last one padded under
    2 processes and dropped again, each pair counted once) agree; throughput counts every pair once."""
    data = write_jsonl(tmp_path / "prefs.jsonl", preference_rows(64, seed=8))
    one, two = two_process_recipes(tmp_path, "reward-model", tiny_gpt2, data, {"max_length": 24, "max_prompt_length": 8})
    r1, r2 = two_processes_equal_one(tmp_path, one, two, figures="train/")
    assert {"train/accuracy", "train/margin"} <= set(r1["state"]["log_history"][0])
    for run in (r1, r2):  # throughput counts every pair once (its two sequences are the loop's samples)
        assert run["perf"]["pairs"] == STEPS * GLOBAL_BATCH and run["perf"]["samples"] == 2 * STEPS * GLOBAL_BATCH, run["perf"]


def test_recipe_checks() -> None:
    from hfadapt import Recipe
    from hfadapt.core.errors import HfadaptError

    base = {"task": "reward-model", "model": {"name_or_path": "x"}, "data": {"train_files": ["x.jsonl"]}}
    with pytest.raises((HfadaptError, ValueError), match="eval.metrics"):
        Recipe.from_dict({**base, "eval": {"metrics": ["f1"]}})
    with pytest.raises((HfadaptError, ValueError), match="data.max_prompt_length"):
        Recipe.from_dict({**base, "data": {"train_files": ["x.jsonl"], "max_length": 16, "max_prompt_length": 16}})
    ok = Recipe.from_dict({**base, "eval": {"best_metric": "accuracy"}})
    assert ok.eval.best_metric == "accuracy"
