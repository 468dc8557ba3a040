"""train.num_workers: the default per task and device, and runs with workers equal to runs without."""

from __future__ import annotations

import json

import pytest

from hfadapt.training.workers import resolve_num_workers


def test_default_workers_for_decoding_tasks_on_cuda_only():
    # image/audio on CUDA: one CPU kept for the training process, at most 8, shared between local processes
    assert resolve_num_workers(None, "image", "cuda", 1, cpus=16) == 8
    assert resolve_num_workers(None, "audio", "cuda", 2, cpus=8) == 3
    assert resolve_num_workers(None, "image", "cuda", 4, cpus=4) == 0
    # on CPU the workers would take the model's cores; text is tokenised up front; streams would be replayed
    assert resolve_num_workers(None, "image", "cpu", 1, cpus=16) == 0
    assert resolve_num_workers(None, "text", "cuda", 1, cpus=16) == 0
    assert resolve_num_workers(None, "image", "cuda", 1, streaming=True, cpus=16) == 0
    assert resolve_num_workers(3, "text", "cpu", 1, cpus=2) == 3  # what the recipe says wins


def test_image_run_with_workers_equals_run_without(tmp_path, tiny_vit, image_folder):
    """Two worker processes decode training and evaluation batches: the same losses, metrics and
    predictions as decoding in the training process; run_info.json records the count."""
    from hfadapt import Recipe, train

    def run(name: str, workers: int):
        return train(Recipe.from_dict({
            "name": name, "task": "image-classification", "model": {"name_or_path": tiny_vit},
            "data": {"dataset": image_folder},
            "adapter": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.1},
            "train": {"max_steps": 4, "batch_size": 4, "num_workers": workers, "log_with": [], "eval_steps": 2},
            "output": {"dir": str(tmp_path / name)},
        }))

    plain, workers = run("plain", 0), run("workers", 2)
    assert workers.losses == plain.losses
    strip = lambda m: {k: v for k, v in m.items() if not k.startswith("perf/")}  # noqa: E731 - wall-clock figures differ
    assert strip(workers.metrics) == pytest.approx(strip(plain.metrics))
    assert (workers.output_dir / "eval_predictions.jsonl").read_text() == (plain.output_dir / "eval_predictions.jsonl").read_text()
    assert json.loads((workers.output_dir / "run_info.json").read_text())["num_workers"] == 2
    assert json.loads((plain.output_dir / "run_info.json").read_text())["num_workers"] == 0
