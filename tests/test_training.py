"""End-to-end training on tiny models: learning, exact resume, reload with plain peft."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hfadapt import HfadaptError, predict, train


def test_text_classification_learns(make_recipe):
    recipe = make_recipe(train={"epochs": 6, "eval_steps": 6, "learning_rate": 2e-2}, eval={"best_metric": "accuracy"})
    result = train(recipe)
    losses = result.losses
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.1, losses
    assert result.metrics["eval/accuracy"] >= 0.75
    assert result.metrics["eval/samples"] == 16
    saved = json.loads((result.output_dir / "metrics.json").read_text())
    assert saved == pytest.approx(result.metrics)
    # The best checkpoint was kept and is what the run ends with.
    best = json.loads((result.output_dir / "best" / "best.json").read_text())
    assert saved["best/step"] == best["step"]
    assert saved["eval/accuracy"] == pytest.approx(best["accuracy"])


def test_resume_reproduces_uninterrupted_run(make_recipe, tmp_path):
    common = {"max_steps": 9, "save_steps": 3, "gradient_accumulation_steps": 2, "eval_steps": 3}
    full = train(make_recipe(train=common, adapter={"dropout": 0.1}, output={"dir": str(tmp_path / "full")}))

    class Crash(Exception):
        pass

    def crash_at_step_7(state):
        if state.global_step == 7:
            raise Crash()

    interrupted = make_recipe(train=common, adapter={"dropout": 0.1}, output={"dir": str(tmp_path / "resumed")})
    with pytest.raises(Crash):
        train(interrupted, callbacks=[crash_at_step_7])
    assert not (tmp_path / "resumed" / "adapter").exists()
    resumed = train(interrupted, resume=True)  # continues from checkpoint-6

    assert resumed.losses == full.losses  # bit-identical per-step losses, dropout included
    a = _adapter_weights(full.output_dir)
    b = _adapter_weights(resumed.output_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert {k: v for k, v in resumed.metrics.items() if not k.startswith("perf/")} == pytest.approx(
        {k: v for k, v in full.metrics.items() if not k.startswith("perf/")}
    )
    # the throughput figures cover the whole run: the resumed session adds to checkpoint-6's
    assert resumed.metrics["perf/sessions"] == 2 and resumed.metrics["perf/samples"] == full.metrics["perf/samples"]


def test_resume_needs_checkpoint_and_same_recipe(make_recipe, tmp_path):
    with pytest.raises(HfadaptError, match="no complete checkpoint"):
        train(make_recipe(), resume=True)
    train(make_recipe(train={"max_steps": 2, "save_steps": 2}))
    with pytest.raises(HfadaptError, match="train.learning_rate"):
        train(make_recipe(train={"max_steps": 2, "save_steps": 2, "learning_rate": 0.1}), resume=True)


def test_interrupted_checkpoint_save_is_ignored(make_recipe, tmp_path):
    from hfadapt.training.checkpoint import latest_checkpoint

    result = train(make_recipe(train={"max_steps": 4, "save_steps": 2, "save_total_limit": 1}))
    ckpts = sorted(p.name for p in (result.output_dir / "checkpoints").iterdir())
    assert ckpts == ["checkpoint-4"]  # save_total_limit pruned checkpoint-2
    half_written = result.output_dir / "checkpoints" / ".tmp-checkpoint-6"
    half_written.mkdir()
    (half_written / "0-trainable.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(result.output_dir).name == "checkpoint-4"


def test_adapter_reloads_with_plain_peft(finished_run, tiny_bert):
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    result = finished_run
    adapter = result.output_dir / "adapter"
    texts = ["the film was wonderful", "the plot was awful"]

    config = AutoConfig.from_pretrained(adapter)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, config=config)
    model = PeftModel.from_pretrained(base, adapter).eval()
    tok = AutoTokenizer.from_pretrained(adapter)
    with torch.no_grad():
        logits = model(**tok(texts, return_tensors="pt", padding=True)).logits
    expected = torch.softmax(logits, dim=-1)

    ours = predict(result.output_dir, texts)
    assert [p["label"] for p in ours] == [config.id2label[i] for i in expected.argmax(-1).tolist()]
    got = torch.tensor([[p["scores"][config.id2label[i]] for i in range(2)] for p in ours])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert config.id2label == {0: "negative", 1: "positive"}


def _adapter_weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "adapter" / "adapter_model.safetensors"))
