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
from tests.pairs_fixtures import GLOBAL_BATCH, STEPS, resumed_equals_uninterrupted, two_process_recipes, two_processes_equal_one
from tests.test_causal_lm import TEMPLATE, VOCAB, WORDS, _tokenizer

MARKER = "brief"  # chosen answers end with it, rejected ones lack it


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def save_tiny_llama(root: Path) -> str:
    """A 2-layer Llama (no dropout) with the word-level chat tokenizer, saved like a Hub checkpoint in `root`."""
    from transformers import LlamaConfig, LlamaForCausalLM

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


# ---- (a) hand-checked ----------------------------------------------------------------------------
def _data(**kw: Any) -> Any:
    from hfadapt.tasks.preference import PreferenceData

    return PreferenceData(train_files=["x.jsonl"], **kw)


def test_losses_on_a_hand_worked_case() -> None:
    from hfadapt.tasks.preference import pair_losses

    c, r = torch.tensor([-10.0]), torch.tensor([-12.0])  # policy log-probs (sums)
    rc, rr = torch.tensor([-11.0]), torch.tensor([-11.0])  # reference
    nc, nr = torch.tensor([4.0]), torch.tensor([5.0])  # completion tokens
    # delta = (-10 + 11) - (-12 + 11) = 2; beta 0.1 -> beta * delta = 0.2
    loss, cw, rw = pair_losses(_data(loss="dpo"), c, r, rc, rr, nc, nr)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.2)), abs=1e-6)
    assert (cw.item(), rw.item()) == pytest.approx((0.1, -0.1))
    # conservative DPO, label_smoothing 0.1: 0.9 * softplus(-0.2) + 0.1 * softplus(0.2)
    loss, _, _ = pair_losses(_data(loss="dpo", label_smoothing=0.1), c, r, rc, rr, nc, nr)
    assert loss.item() == pytest.approx(0.9 * math.log(1 + math.exp(-0.2)) + 0.1 * math.log(1 + math.exp(0.2)), abs=1e-6)
    # hinge: relu(1 - 0.2) = 0.8
    assert pair_losses(_data(loss="hinge"), c, r, rc, rr, nc, nr)[0].item() == pytest.approx(0.8)
    # IPO (length-normalised as TRL): (1/4 - (-1)/5 - 1/(2*0.1))^2 = (0.45 - 5)^2
    assert pair_losses(_data(loss="ipo"), c, r, rc, rr, nc, nr)[0].item() == pytest.approx((0.45 - 5) ** 2)
    # SimPO, beta 2, gamma 0.5: averages -2.5 and -2.4 -> logit (-0.1 - 0.25) * 2 = -0.7
    loss, cw, rw = pair_losses(_data(loss="simpo", beta=2.0, simpo_gamma=0.5), c, r, None, None, nc, nr)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(0.7)), abs=1e-6)
    assert (cw.item(), rw.item()) == pytest.approx((-5.0, -4.8))


def test_first_dpo_step_on_a_fresh_lora_is_ln2(tmp_path: Path, llama: str) -> None:
    result = train(recipe(tmp_path, llama, pairs(32), train={"max_steps": 1}))
    assert result.losses[0] == pytest.approx(math.log(2), abs=1e-6)


@pytest.mark.parametrize("disable", [True, False])
def test_dropout_is_off_as_in_trl(tmp_path: Path, llama: str, disable: bool) -> None:
    """data.disable_dropout (TRL's default) sets every dropout layer to p=0 before training, LoRA's
    included, so the policy is scored by the same network as its reference and as evaluation."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from hfadapt.tasks.base import get_task

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(llama), LoraConfig(r=4, lora_dropout=0.5, task_type="CAUSAL_LM"))
    r = recipe(tmp_path, llama, pairs(8), disable_dropout=disable)
    get_task("preference").prepare_model(model.get_base_model(), r)
    ps = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
    assert ps == ({0.0} if disable else {0.5})


# ---- (b) parity with TRL -------------------------------------------------------------------------
def _policy(llama: str, randomize: bool = True) -> Any:
    """The tiny Llama with a LoRA whose B is random (policy != reference); randomize=False: a fresh LoRA (TRL
    copies an adapter it is given as its reference, so it gets a fresh one, randomised after)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(llama), LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    for n, p in model.named_parameters():
        if "lora_B" in n and randomize:
            p.data.normal_(0, 0.3)
    return model.eval()


def _ours(model: Any, batch: dict[str, Any], **data: Any) -> tuple[float, dict[str, float]]:
    from hfadapt.tasks.preference import batch_terms, summary

    batch = dict(batch)
    batch.setdefault("row", torch.arange(batch["input_ids"].shape[0] // (1 if "label" in batch else 2)))
    with torch.no_grad():
        terms = batch_terms(model, batch, _data(**data))
    return terms["batch_loss"].item(), {k: v.item() for k, v in summary(terms).items()}


TRL_DPO = {"dpo": ("sigmoid", 0.0), "robust": ("robust", 0.1), "ipo": ("ipo", 0.0), "hinge": ("hinge", 0.0)}


@pytest.mark.parametrize("loss", list(TRL_DPO))
def test_dpo_family_equals_trl(loss: str, tmp_path: Path, llama: str) -> None:
    pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from hfadapt.tasks.language import PairCollator, PairColumns, tokenize_pairs

    tok = AutoTokenizer.from_pretrained(llama)
    trl_type, ls = TRL_DPO[loss]
    rows = pairs(6, seed=3)
    args = DPOConfig(output_dir=str(tmp_path / "trl"), report_to=[], beta=0.1, loss_type=[trl_type], label_smoothing=ls,
                     use_cpu=True, max_length=None)
    trainer = DPOTrainer(model=_policy(llama, randomize=False), args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    model = trainer.model
    torch.manual_seed(1)
    for n, p in model.named_parameters():
        if "lora_B.default" in n:  # not TRL's "ref" copy
            p.data.normal_(0, 0.3)
    theirs_batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    # our tokenization and collation give TRL's batch
    r = recipe(tmp_path, llama, rows, max_length=64, max_prompt_length=32)
    ours_rows = tokenize_pairs(Dataset.from_list(rows), "train", tok, r, PairColumns(), 32, 64).dataset
    ours_batch = PairCollator(tok.pad_token_id)([ours_rows[i] for i in range(len(rows))])
    for k in ("input_ids", "attention_mask", "completion_mask"):
        assert torch.equal(ours_batch[k], theirs_batch[k]), k
    model.eval()
    with torch.no_grad():
        their_loss = trainer.compute_loss(model, theirs_batch).item()
    their = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    our_loss, our = _ours(model, ours_batch, loss=loss, beta=0.1, label_smoothing=ls)
    assert our_loss == pytest.approx(their_loss, abs=1e-5)
    assert their["rewards/margins"] != 0
    for k in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"):
        assert our[k] == pytest.approx(their[k], abs=1e-5), k


def test_kto_equals_trl(tmp_path: Path, llama: str) -> None:
    pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import KTOConfig, KTOTrainer

    tok = AutoTokenizer.from_pretrained(llama)
    rows = unpaired(6, seed=4)
    args = KTOConfig(output_dir=str(tmp_path / "trl"), report_to=[], beta=0.1, use_cpu=True, max_length=None)
    trainer = KTOTrainer(model=_policy(llama, randomize=False), args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    model = trainer.model
    torch.manual_seed(1)
    for n, p in model.named_parameters():
        if "lora_B.default" in n:  # not TRL's "ref" copy
            p.data.normal_(0, 0.3)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    model.eval()
    with torch.no_grad():
        their_loss = trainer.compute_loss(model, batch).item()
    their = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    ours = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "completion_mask": batch["completion_mask"],
            "kl_input_ids": batch["KL_input_ids"], "kl_attention_mask": batch["KL_attention_mask"],
            "kl_completion_mask": batch["KL_completion_mask"], "label": torch.as_tensor(batch["label"]).bool()}
    our_loss, our = _ours(model, ours, loss="kto", beta=0.1)
    assert our_loss == pytest.approx(their_loss, abs=1e-5)
    for k in ("kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"):
        assert our[k] == pytest.approx(their[k], abs=1e-5), k


@pytest.mark.parametrize("loss", ["simpo", "orpo"])
def test_simpo_and_orpo_equal_trls_loss_functions(loss: str, tmp_path: Path, llama: str) -> None:
    """TRL's CPOTrainer.cpo_loss (loss_type simpo, cpo_alpha 0) and ORPOTrainer.odds_ratio_loss fed with the
    log-probs our forward computed; the log-probs themselves checked with TRL's get_batch_logps."""
    pytest.importorskip("trl")
    from types import SimpleNamespace

    from transformers import AutoTokenizer
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer

    from hfadapt.tasks.language import PairCollator
    from hfadapt.tasks.preference import batch_terms

    tok = AutoTokenizer.from_pretrained(llama)
    model = _policy(llama)
    feats = [{"prompt_input_ids": tok(r["prompt"])["input_ids"], "chosen_input_ids": tok(r["chosen"])["input_ids"] + [1],
              "rejected_input_ids": tok(r["rejected"])["input_ids"] + [1], "row": i} for i, r in enumerate(pairs(6, seed=5))]
    batch = PairCollator(tok.pad_token_id)(feats)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        avg = CPOTrainer.get_batch_logps(logits, labels, average_log_prob=True)
        data = _data(loss=loss, beta=2.0 if loss == "simpo" else 0.1, simpo_gamma=0.5, orpo_lambda=0.1)
        terms = batch_terms(model, batch, data)
    b = len(feats)
    torch.testing.assert_close(terms["chosen_logps"].float(), avg[:b], atol=1e-5, rtol=0)
    torch.testing.assert_close(terms["rejected_logps"].float(), avg[b:], atol=1e-5, rtol=0)
    device = SimpleNamespace(device="cpu")
    if loss == "simpo":
        fake = SimpleNamespace(alpha=0.0, beta=2.0, simpo_gamma=0.5, label_smoothing=0.0, loss_type="simpo", accelerator=device)
        losses, cr, rr = CPOTrainer.cpo_loss(fake, avg[:b], avg[b:])
        expected = losses.mean()
    else:
        fake = SimpleNamespace(beta=0.1, accelerator=device)
        losses, cr, rr, _, _ = ORPOTrainer.odds_ratio_loss(fake, avg[:b], avg[b:])
        nll_labels = torch.where(batch["attention_mask"][:b] == 1, batch["input_ids"][:b], -100)
        nll = torch.nn.functional.cross_entropy(logits[:b, :-1].reshape(-1, logits.shape[-1]), nll_labels[:, 1:].reshape(-1))
        expected = nll - losses.mean()
    assert terms["batch_loss"].item() == pytest.approx(expected.item(), abs=1e-5)
    torch.testing.assert_close(terms["chosen_rewards"].float(), cr, atol=1e-5, rtol=0)
    torch.testing.assert_close(terms["rejected_rewards"].float(), rr, atol=1e-5, rtol=0)


# ---- (c) learning a preference -------------------------------------------------------------------
# per loss: data settings, and the training that learns the marker (KTO needs more: see below)
LEARNING = {
    "dpo": ({"beta": 0.1}, {"max_steps": 30, "learning_rate": 2e-2}),
    "simpo": ({"beta": 2.0}, {"max_steps": 30, "learning_rate": 2e-2}),
    "orpo": ({"orpo_lambda": 0.1}, {"max_steps": 30, "learning_rate": 2e-2}),
    "kto": ({"beta": 0.1}, {"max_steps": 60, "learning_rate": 5e-2}),
}


def unpaired_from_pairs(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Each pair as two KTO rows, (prompt, chosen, true) and (prompt, rejected, false): how paired sets are
    unpaired for KTO (TRL's unpair_preference_dataset). Rows of different prompts (`unpaired`) also push
    the answer words up or down, noise this tiny model needs many more steps to average out."""
    return [row for r in pairs(n, seed) for row in ({"prompt": r["prompt"], "completion": r["chosen"], "label": True},
                                                    {"prompt": r["prompt"], "completion": r["rejected"], "label": False})]


@pytest.mark.parametrize("loss", list(LEARNING))
def test_held_out_reward_accuracy_learns_the_marker(loss: str, tmp_path: Path, llama: str) -> None:
    """Held-out reward accuracy from chance to > 0.9. For KTO, accuracy is the share of rows whose reward has
    their label's sign: 0 on a fresh LoRA (every reward is 0), noise once a step of lr 1e-9 has moved it."""
    settings, training = LEARNING[loss]
    data = {"loss": loss, **settings, "validation_size": 0.2}
    rows = unpaired_from_pairs(80) if loss == "kto" else pairs(160)
    (tmp_path / "before").mkdir()
    (tmp_path / "after").mkdir()
    first = train(recipe(tmp_path / "before", llama, rows, **data, train={"max_steps": 1, "learning_rate": 1e-9}))
    after = train(recipe(tmp_path / "after", llama, rows, **data, train={**training, "eval_steps": training["max_steps"]}))
    assert first.metrics["eval/rewards/accuracies"] <= 0.7
    assert after.metrics["eval/rewards/accuracies"] > 0.9
    assert after.metrics["eval/rewards/margins"] > max(first.metrics["eval/rewards/margins"], 0)  # ORPO's are small: lambda x mean log-prob
    if loss == "kto":
        assert abs(first.metrics["eval/rewards/chosen"]) < 1e-6 and abs(first.metrics["eval/rewards/rejected"]) < 1e-6
        assert after.metrics["eval/rewards/chosen"] > 0 > after.metrics["eval/rewards/rejected"]
    assert after.metrics["best/step"] == training["max_steps"] if "best/step" in after.metrics else True


def test_kto_accuracy_of_a_fresh_lora_is_zero() -> None:
    """Policy = reference: every KTO reward is 0, on neither side of 0, so no row counts as right."""
    from hfadapt.tasks.preference import metric_values

    n = 6
    label = torch.tensor([1.0, 0.0] * (n // 2), dtype=torch.float64)
    zero, nan = torch.zeros(n, dtype=torch.float64), torch.full((n,), float("nan"), dtype=torch.float64)
    t = {"loss": torch.full((n,), 0.5, dtype=torch.float64), "label": label, "nll_sum": zero, "nll_count": zero,
         "chosen_rewards": torch.where(label.bool(), zero, nan), "rejected_rewards": torch.where(label.bool(), nan, zero),
         "chosen_logps": torch.where(label.bool(), -zero - 3, nan), "rejected_logps": torch.where(label.bool(), nan, -zero - 4)}
    results = metric_values(t, "kto")
    assert results["rewards/accuracies"] == 0.0 and results["rewards/margins"] == 0.0 and results["loss"] == 0.5


# ---- (d) truncation is counted, not refused --------------------------------------------------------
def test_prompts_longer_than_max_length_are_truncated_and_counted(tmp_path: Path, llama: str, capsys) -> None:
    import re

    rows = pairs(40, seed=6)
    long_rows = {3, 9, 17, 25, 38}
    for i in long_rows:  # 40-word prompts: more than max_length 32 on their own
        rows[i]["prompt"] = "say " + " ".join(["one two three four"] * 10)
    capsys.readouterr()
    result = train(recipe(tmp_path, llama, rows, validation_size=0.25, train={"max_steps": 1}))
    out = capsys.readouterr().out
    counts = {m[0]: (int(m[1]), int(m[2])) for m in re.findall(r"hfadapt: preference (\w+): truncated (\d+) of (\d+) pairs to data.max_length 32", out)}
    # one line per split that has truncated pairs; together they count every long pair once
    assert set(counts) <= {"train", "validation"} and sum(c for c, _ in counts.values()) == len(long_rows), out
    assert all(n == {"train": 30, "validation": 10}[split] for split, (_, n) in counts.items()), counts
    assert result.state.global_step == 1
    # what was kept: the prompt's last max_prompt_length tokens, the whole response, within max_length
    from datasets import Dataset
    from transformers import AutoTokenizer

    from hfadapt.tasks.language import PairColumns, tokenize_pairs

    tok = AutoTokenizer.from_pretrained(llama)
    (tmp_path / "x").mkdir()
    out_rows = tokenize_pairs(Dataset.from_list(rows), "train", tok, recipe(tmp_path / "x", llama, rows), PairColumns(), 16, 32)
    assert out_rows.truncated == len(long_rows) and out_rows.rows == 40
    for i in long_rows:
        r = out_rows.dataset[i]
        assert len(r["prompt_input_ids"]) == 16 and r["length"] <= 32
        assert tok.decode(r["prompt_input_ids"]).endswith("one two three four")
        assert r["chosen_input_ids"] == tok(rows[i]["chosen"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


# ---- (e) guarantees: exact resume ----------------------------------------------------------------
@pytest.mark.parametrize("loss", ["dpo", "kto"])
def test_resumed_run_equals_the_uninterrupted_one(loss: str, tmp_path: Path, llama: str) -> None:
    """Killed after step 3 (checkpoint at step 2), resumed: the same per-step losses, reward figures,
    evaluations and adapter weights, bit for bit. Dropout on (data.disable_dropout false, LoRA dropout
    0.1): the RNG state must come back too."""
    rows = pairs(48, seed=2) if loss == "dpo" else unpaired(48, seed=2)

    def run(name: str) -> Recipe:
        (tmp_path / name).mkdir(exist_ok=True)
        r = recipe(tmp_path / name, llama, rows, loss=loss, disable_dropout=False,
                   train={"max_steps": 6, "save_steps": 2, "eval_steps": 3, "batch_size": 4})
        return r.model_copy(update={"adapter": r.adapter.model_copy(update={"dropout": 0.1})})

    full, _ = resumed_equals_uninterrupted(run, kill_at=3)
    assert full.state.global_step == 6
    assert any("train/rewards/accuracies" in h for h in full.state.log_history)
    assert any("eval/rewards/accuracies" in h for h in full.state.log_history)
    from safetensors.torch import load_file

    a = load_file(str(full.output_dir / "adapter" / "adapter_model.safetensors"))
    assert any(a[k].abs().max() > 0 for k in a if "lora_B" in k)


# ---- (f) guarantees: 2 processes == 1 ------------------------------------------------------------
@pytest.mark.slow
def test_dpo_on_two_processes_equals_one_process(tmp_path: Path, llama: str) -> None:
    """tests/test_distributed.py's check for DPO: one process with batch 8 and two (torchrun, gloo) with 4
    each see the same global batches (length-grouped), so per-step losses and reward figures, adapter
    weights and the evaluations (16 held-out pairs in batches of 5: the last one padded under 2
    processes and dropped again) agree; throughput counts every pair once."""
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs(64, seed=8))
    one, two = two_process_recipes(tmp_path, "preference", llama, data, {"max_length": 32, "max_prompt_length": 16})
    r1, r2 = two_processes_equal_one(tmp_path, one, two, figures="train/rewards")
    assert abs(r1["state"]["losses"][0] - math.log(2)) < 1e-6
    for run in (r1, r2):
        assert run["perf"]["pairs"] == STEPS * GLOBAL_BATCH, run["perf"]


# ---- (g) preprocessing is cached: the map functions hash ----------------------------------------------
@pytest.mark.parametrize("kind", ["pairs", "chat", "kto"])
def test_tokenizing_twice_gives_the_same_fingerprint(kind: str, tmp_path: Path, llama: str) -> None:
    """datasets caches a map only when it can hash the function and what it captures (not the recipe:
    a random fingerprint, a warning, and no cache); the same split tokenized twice has one fingerprint."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from hfadapt.tasks.language import PairColumns, tokenize_pairs, tokenize_unpaired

    tok = AutoTokenizer.from_pretrained(llama)
    rows = unpaired(8) if kind == "kto" else pairs(8, chat=kind == "chat")
    r = recipe(tmp_path, llama, rows, loss="kto" if kind == "kto" else "dpo")
    ds = Dataset.from_list(rows)

    def tokenize() -> Any:
        if kind == "kto":
            return tokenize_unpaired(ds, "train", tok, r, "prompt", "completion", "label", 16, 32).dataset
        return tokenize_pairs(ds, "train", tok, r, PairColumns(), 16, 32).dataset

    first, second = tokenize(), tokenize()
    assert first._fingerprint == second._fingerprint
    other = tokenize_pairs(ds, "train", tok, r, PairColumns(), 8, 32).dataset if kind != "kto" else None
    assert other is None or other._fingerprint != first._fingerprint  # the settings are part of it


def test_a_figure_missing_from_a_micro_batch_is_averaged_over_those_that_have_it() -> None:
    """KTO: a micro-batch without undesirable rows has no rejected reward (NaN); the step's figure is the
    mean of the others, and a figure no micro-batch had is left out, never logged as NaN."""
    from types import SimpleNamespace

    from hfadapt.training.loop import _step_figures

    one_process = SimpleNamespace(reduce=lambda t, reduction: t)
    logs = [{"a": torch.tensor(1.0), "b": torch.tensor(float("nan"))}, {"a": torch.tensor(float("nan")), "b": torch.tensor(float("nan"))},
            {"a": torch.tensor(3.0), "b": torch.tensor(float("nan"))}]
    assert _step_figures(one_process, logs) == {"a": 2.0}
    assert _step_figures(one_process, []) == {}


def test_the_runs_table_names_the_default_best_metric(tmp_path: Path, llama: str) -> None:
    """eval.best_metric unset: the run tracks rewards/accuracies (the task's default), and reading the run
    back says so instead of 'None'."""
    from hfadapt.insight.runs import describe, format_table

    result = train(recipe(tmp_path, llama, pairs(32), train={"max_steps": 2, "eval_steps": 1}))
    run = describe(result.output_dir)
    assert run["best_metric"] == "rewards/accuracies" and run["best_step"] is not None
    assert "None" not in format_table([run])
