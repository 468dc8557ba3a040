"""Trainer switches: mixed precision, gradient checkpointing, early stopping, trackers, schedulers,
and the eval / predict commands on a finished run."""

from __future__ import annotations

import json
import zipfile

import pytest

from hfadapt import HfadaptError, evaluate_run, train
from hfadapt.cli import main


def test_bf16_and_gradient_checkpointing_train_on_cpu(make_recipe):
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    result = train(make_recipe(train={"max_steps": 3, "mixed_precision": "bf16", "gradient_checkpointing": True}))
    assert len(result.losses) == 3 and all(l == l for l in result.losses)  # no NaN
    assert json.loads((result.output_dir / "run_info.json").read_text())["mixed_precision"] == "bf16"
    # ... and bf16 really ran: Accelerate autocasts a prepared model's forward on CPU too
    model, seen = torch.nn.Sequential(torch.nn.Linear(4, 4)), []
    model[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))  # inside; prepare() returns outputs as fp32
    Accelerator(mixed_precision="bf16").prepare(model)(torch.ones(1, 4))
    AcceleratorState._reset_state()
    assert seen == [torch.bfloat16]


def test_early_stopping_stops_after_patience(make_recipe):
    # learning_rate so small nothing improves after the first evaluation: stop after 1 + patience evals.
    recipe = make_recipe(
        train={"epochs": 10, "learning_rate": 1e-9, "eval_steps": 1, "early_stopping_patience": 2},
        eval={"best_metric": "loss", "greater_is_better": False},
    )
    result = train(recipe)
    evals = [h for h in result.state.log_history if "eval/loss" in h]
    assert result.state.stopped_early
    assert result.state.global_step < 10 * 6
    assert result.state.evals_without_improvement == 2
    assert len(evals) <= result.state.best_step + 2


def test_tensorboard_logs_and_warmup_schedule(make_recipe):
    result = train(make_recipe(train={"max_steps": 4, "log_with": ["tensorboard"], "warmup_steps": 2, "scheduler": "linear"}))
    assert list((result.output_dir / "logs").rglob("events.out.tfevents.*"))
    lrs = [h["train/lr"] for h in result.state.log_history if "train/lr" in h]
    assert lrs[0] < lrs[1]  # warming up
    assert lrs[-1] < lrs[1]  # then decaying


def test_eval_and_predict_commands(finished_run, tmp_path, capsys):
    result = finished_run
    metrics = evaluate_run(result.output_dir)
    assert metrics["validation/accuracy"] == pytest.approx(result.metrics["eval/accuracy"])
    assert metrics["validation/samples"] == 16

    inputs = tmp_path / "inputs.txt"
    inputs.write_text("the film was good\n\nthe plot was dull\n")
    capsys.readouterr()  # keep only what predict prints
    assert main(["predict", str(result.output_dir), "the music was fun", "--file", str(inputs)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["input"] for r in rows] == ["the music was fun", "the film was good", "the plot was dull"]


def test_eval_of_unfinished_run_says_how_to_resume(make_recipe, tmp_path):
    class Stop(Exception):
        pass

    def stop(state):
        raise Stop()

    recipe = make_recipe(train={"max_steps": 4, "save_steps": 1})
    with pytest.raises(Stop):
        train(recipe, callbacks=[stop])
    with pytest.raises(HfadaptError, match="has not finished .*--resume"):
        evaluate_run(recipe.output_dir)


def test_wheel_carries_the_shipped_recipes(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(root)],
        check=True, capture_output=True,
    )
    wheel = next(tmp_path.glob("hfadapt-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "hfadapt/_recipes/text/sst2-bert-lora.yaml" in names
    assert "hfadapt/_recipes/assets/tiny-bert/vocab.txt" in names
    assert "hfadapt/metrics/accuracy/accuracy.py" in names
    assert "hfadapt/_model_cards/adapter.md" in names


def test_fused_adamw_on_a_gpu_only(make_recipe):
    """On a CUDA device the optimizer is the fused AdamW (HF Trainer's default there); elsewhere the default one."""
    import torch

    from hfadapt.training.coordinator import _setup_optimizer

    model = torch.nn.Linear(4, 2)
    recipe = make_recipe()
    on_gpu, _ = _setup_optimizer(recipe, model, 10, torch.device("cuda"))
    on_cpu, _ = _setup_optimizer(recipe, model, 10, torch.device("cpu"))
    assert on_gpu.defaults["fused"] is True and not on_cpu.defaults["fused"]
