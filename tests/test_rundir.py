"""RunDir, the one reader of a run directory: typed accessors over the files earlier releases wrote,
the status writer, the evaluation loader shared by training and `hfadapt eval`, and predict's
generation overrides (on a copy of the recipe)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from hfadapt.core.errors import HfadaptError
from hfadapt.rundir.layout import RunDir, RunMetrics, RunState
from hfadapt.rundir.status import write_status
from hfadapt.training.checkpoint import TrainerState


def _old_run(root: Path) -> Path:
    """A run directory as the previous release wrote it (plain JSON files, flat metric keys)."""
    run = root / "run"
    (run / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint-4").mkdir()
    (run / "checkpoints" / ".tmp-checkpoint-6").mkdir()  # a save in progress: not a checkpoint
    (run / "recipe.yaml").write_text("task: text-classification\nmodel: {name_or_path: some/model}\n")
    (run / "metrics.json").write_text(json.dumps(
        {"train/loss": 0.5, "train/steps": 4, "eval/accuracy": 0.75, "eval/loss": 0.6, "eval/PER/f1": 0.5,
         "test/f1": 0.7, "perf/train_time_s": 12.5, "best/step": 4}
    ))
    history = [{"step": 1, "train/lr": 0.01, "train/loss": 0.9}, {"step": 2, "eval/accuracy": 0.5, "eval/loss": 0.8},
               {"step": 4, "eval/accuracy": 0.75, "eval/loss": 0.6}]
    state = {"global_step": 4, "epoch": 1, "batches_in_epoch": 0, "total_steps": 4, "losses": [0.9, 0.8, 0.6, 0.5],
             "log_history": history, "best_metric": 0.75, "best_step": 4, "evals_without_improvement": 0,
             "stopped_early": False}  # no "perf": written before throughput figures existed
    for where in (run, run / "checkpoints" / "checkpoint-2", run / "checkpoints" / "checkpoint-4"):
        (where / "trainer_state.json").write_text(json.dumps({**state, "global_step": int(where.name.split("-")[-1]) if "checkpoint" in where.name else 4}))
    (run / "run_info.json").write_text(json.dumps({"hardware": "cpu (x86_64)", "num_processes": 1, "a_future_field": 1}))
    (run / "status.json").write_text(json.dumps({"state": "finished", "step": 4, "trainable": 10, "total": 100, "pid": 1, "host": "h"}))
    (run / "eval_predictions.jsonl").write_text('{"labels": 1, "prediction": 1}\nnot json\n{"labels": 0, "prediction": 1}\n')
    (run / "generations.jsonl").write_text('{"step": 2, "prompt": "hi", "completion": "there"}\n')
    return run


def test_reads_a_run_of_the_previous_release(tmp_path):
    run = RunDir(_old_run(tmp_path))
    assert run.is_run() and run.recipe_dict()["task"] == "text-classification"

    metrics = run.read_metrics()
    assert metrics.eval == {"accuracy": 0.75, "loss": 0.6, "PER/f1": 0.5} and metrics.test == {"f1": 0.7}
    assert metrics.best_step == 4 and metrics.split("perf") == {"train_time_s": 12.5}
    assert RunMetrics.from_json(metrics.to_json()) == metrics  # the flat on-disk keys round-trip

    state = run.read_state()
    assert state.global_step == 4 and state.perf == {}  # a field the old file lacks keeps its default
    assert [(e.step, e.values["accuracy"]) for e in state.evaluations()] == [(2, 0.5), (4, 0.75)]
    assert state.learning_rates() == [(1, 0.01)]

    assert run.read_info().hardware == "cpu (x86_64)"  # unknown fields of a newer file are ignored
    status = run.read_status()
    assert (status.state, status.trainable, status.total, status.error) == ("finished", 10, 100, None)
    assert [r["labels"] for r in run.read_predictions()] == [1, 0]  # the unreadable line is skipped
    assert run.read_generations()[0]["completion"] == "there"
    assert [p.name for p in run.checkpoints()] == ["checkpoint-2", "checkpoint-4"]
    assert {p.name for p in run.run_files()} == {
        "recipe.yaml", "metrics.json", "trainer_state.json", "run_info.json", "eval_predictions.jsonl", "generations.jsonl",
    }


def test_latest_state_falls_back_to_the_latest_checkpoint(tmp_path):
    run = RunDir(_old_run(tmp_path))
    run.state_file.unlink()  # not finished
    assert run.latest_state().global_step == 4
    for checkpoint in run.checkpoints():
        checkpoint.rename(checkpoint.with_name(f".del-{checkpoint.name}"))
    assert run.latest_state() is None


def test_a_corrupt_file_is_named_unless_lenient(tmp_path):
    run = RunDir(_old_run(tmp_path))
    run.metrics_file.write_text("{not json")
    with pytest.raises(HfadaptError, match="metrics.json: not valid JSON"):
        run.read_metrics()
    assert not run.read_metrics(lenient=True)
    run.status_file.write_text("[1, 2")  # a torn status is advisory: reads as empty, never raises
    assert run.read_status().state is None


def test_trainer_state_saves_the_run_state_format(tmp_path):
    state = TrainerState(global_step=3, total_steps=9, losses=[1.0, 0.5, 0.25], log_history=[{"step": 3, "eval/f1": 0.5}])
    state.save(tmp_path / "trainer_state.json")
    back = TrainerState.load(tmp_path / "trainer_state.json")
    assert back == state and isinstance(back, RunState)
    assert back.evaluations()[0].values == {"f1": 0.5}


def test_status_is_written_by_the_main_process_only_and_keeps_earlier_fields(tmp_path):
    write_status(tmp_path, "running", is_main=False, trainable=1, total=2)
    assert not (tmp_path / "status.json").exists()
    write_status(tmp_path, "running", True, trainable=1, total=2, total_steps=8, step=0)
    write_status(tmp_path, "failed", True, step=3, error="ValueError: boom")
    status = RunDir(tmp_path).read_status()
    assert (status.state, status.trainable, status.total_steps, status.step, status.error) == ("failed", 1, 8, 3, "ValueError: boom")
    write_status(tmp_path, "running", True, step=3)  # a resume clears the error
    assert RunDir(tmp_path).read_status().error is None


# ---- the evaluation loader ---------------------------------------------------------------------------
class _FakeAccelerator:
    def __init__(self, device_type: str) -> None:
        self.device = SimpleNamespace(type=device_type)
        self.num_processes = 1

    def prepare_data_loader(self, loader):
        return loader


def _recipe(num_workers: int | None, eval_batch_size: int | None = 3) -> SimpleNamespace:
    train = SimpleNamespace(num_workers=num_workers, eval_batch_size=eval_batch_size, batch_size=8)
    return SimpleNamespace(train=train, data=SimpleNamespace(streaming=False))


@pytest.mark.parametrize(
    ("device", "workers", "pinned", "persistent"),
    [("cuda", 2, True, True), ("cuda", 0, True, False), ("cpu", 2, False, True), ("cpu", 0, False, False)],
)
def test_eval_loader_pins_memory_on_cuda_and_keeps_workers(device, workers, pinned, persistent):
    from hfadapt.training.loaders import build_eval_loader

    task = SimpleNamespace(modality="text", restores_eval_order=False)
    built = build_eval_loader(_recipe(workers), task, list(range(7)), lambda rows: rows, _FakeAccelerator(device))
    assert (built.loader.pin_memory, built.loader.persistent_workers, built.loader.num_workers) == (pinned, persistent, workers)
    assert built.loader.batch_size == 3 and built.order is None


def test_hfadapt_eval_uses_the_training_eval_loader(finished_run, monkeypatch):
    import hfadapt.training.loaders as loaders
    from hfadapt.inference.run_model import evaluate_run

    calls = []
    original = loaders.build_eval_loader

    def spy(recipe, task, dataset, collate_fn, accelerator):
        calls.append(accelerator.device.type)
        return original(recipe, task, dataset, collate_fn, accelerator)

    monkeypatch.setattr(loaders, "build_eval_loader", spy)
    metrics = evaluate_run(finished_run.output_dir)
    assert calls and "validation/accuracy" in metrics


# ---- predict ------------------------------------------------------------------------------------------
def test_predict_generation_overrides_leave_the_run_recipe_unchanged(finished_run, monkeypatch):
    import hfadapt.inference.run_model as run_model
    from hfadapt.tasks.base import get_task

    run = RunDir.open(finished_run.output_dir)
    before = run.recipe.generation.model_dump()
    monkeypatch.setattr(run_model, "resolve_run", lambda ref: run)
    task = get_task(run.recipe.task)
    seen = []
    original = task.predict

    def spy(model, processor, items, recipe, info):
        seen.append(recipe.generation.max_new_tokens)
        return original(model, processor, items, recipe, info)

    monkeypatch.setattr(task, "predict", spy)
    out = run_model.predict(finished_run.output_dir, ["a wonderful film"], generation={"max_new_tokens": 3, "temperature": 0.5})
    assert len(out) == 1 and seen == [3]  # the override reached the task
    assert run.recipe.generation.model_dump() == before  # the run's recipe is as it was loaded

    with pytest.raises(HfadaptError, match="generation.top_p"):
        run_model.predict(finished_run.output_dir, ["x"], generation={"top_p": 2.0})
    with pytest.raises(HfadaptError, match="unknown generation setting 'nope'"):
        run_model.predict(finished_run.output_dir, ["x"], generation={"nope": 1})
    assert run.recipe.generation.model_dump() == before


def test_an_evaluation_recorded_in_the_state_reads_back():
    state = RunState(global_step=5)
    assert state.record_evaluation(5, {"accuracy": 0.5, "loss": 1.0}) == {"eval/accuracy": 0.5, "eval/loss": 1.0}
    assert state.log_history == [{"step": 5, "eval/accuracy": 0.5, "eval/loss": 1.0}]  # the on-disk format
    assert [(e.step, e.values) for e in state.evaluations()] == [(5, {"accuracy": 0.5, "loss": 1.0})]
