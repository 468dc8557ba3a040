"""Resume after a kill reproduces the uninterrupted run: early stopping, and what --resume says
when there is nothing to resume from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hfadapt import HfadaptError, train

# learning_rate so small that accuracy cannot change: the evaluation at step 2 is the best, the
# one at step 4 does not improve, and patience 1 stops the run there (epochs=10 would be 60 steps).
EARLY_STOP = {"epochs": 10, "learning_rate": 1e-9, "eval_steps": 2, "early_stopping_patience": 1, "save_total_limit": 2}
STOP_STEP = 4


class Killed(Exception):
    pass


def _kill_once_stopped(state):
    if state.stopped_early:  # after the checkpoint of this step (if any), before the run finishes
        raise Killed()


def _adapter_weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


@pytest.mark.parametrize("save_steps", [2, 3], ids=["checkpoint-at-the-stop", "checkpoint-before-the-stop"])
def test_resume_of_an_early_stopped_run(make_recipe, tmp_path, save_steps):
    def recipe(name):
        return make_recipe(
            train={**EARLY_STOP, "save_steps": save_steps}, adapter={"dropout": 0.1},
            eval={"best_metric": "accuracy"}, output={"dir": str(tmp_path / name)},
        )

    full = train(recipe("full"))
    assert full.state.stopped_early and full.state.global_step == STOP_STEP

    interrupted = recipe("resumed")
    with pytest.raises(Killed):
        train(interrupted, callbacks=[_kill_once_stopped])
    assert not (tmp_path / "resumed" / "adapter").exists()
    resumed = train(interrupted, resume=True)

    assert resumed.state.stopped_early
    assert resumed.state.global_step == STOP_STEP
    assert resumed.losses == full.losses
    assert resumed.state.log_history == full.state.log_history
    assert resumed.state.best_step == full.state.best_step
    assert _no_perf(resumed.metrics) == pytest.approx(_no_perf(full.metrics))  # perf/: timings differ
    a, b = _adapter_weights(full.output_dir), _adapter_weights(resumed.output_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Stop(Exception):
    pass


def _kill_at_step_2(state):
    if state.global_step == 2:
        raise Stop()


def test_resume_of_nothing_says_no_run_was_started(make_recipe):
    with pytest.raises(HfadaptError, match="no run was started in .*; start it without --resume$"):
        train(make_recipe(), resume=True)


@pytest.mark.parametrize("save_steps", [None, 3])
def test_resume_before_the_first_checkpoint_says_what_to_do(make_recipe, save_steps):
    recipe = make_recipe(train={"max_steps": 4, "save_steps": save_steps})
    with pytest.raises(Stop):
        train(recipe, callbacks=[_kill_at_step_2])
    with pytest.raises(HfadaptError) as e:
        train(recipe, resume=True)
    message = str(e.value)
    assert "start it over without --resume and with output.overwrite=true" in message, message
    if save_steps is None:
        assert "train.save_steps is not set" in message and "setting train.save_steps" in message, message
    else:
        # save_steps is set: don't tell the user to set it.
        assert "set train.save_steps" not in message and "setting train.save_steps" not in message, message
        assert "before its first checkpoint (train.save_steps=3: at step 3)" in message, message
    # Without --resume the run directory is refused ...
    with pytest.raises(HfadaptError, match="already holds a run"):
        train(recipe)
    # ... and doing exactly what the message says works.
    again = make_recipe(train={"max_steps": 4, "save_steps": save_steps}, output={"overwrite": True})
    assert train(again).state.global_step == 4


def _snapshot(folder):
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_keeps_the_old_run_when_the_new_setup_fails(make_recipe):
    """output.overwrite=true replaces a run only once the new one has set up: a wrong column leaves the old run as it was."""
    first = train(make_recipe(train={"max_steps": 2}))
    before = _snapshot(first.output_dir)
    assert len(before) > 5
    with pytest.raises(HfadaptError, match="data.text_column: column 'nope' not in the train split"):
        train(make_recipe(train={"max_steps": 2}, data={"text_column": "nope"}, output={"overwrite": True}))
    assert _snapshot(first.output_dir) == before
    assert not list(first.output_dir.parent.glob(f".{first.output_dir.name}.*"))  # nothing left beside it
    # With a good recipe the old run is replaced.
    second = train(make_recipe(train={"max_steps": 3}, output={"overwrite": True}))
    assert second.output_dir == first.output_dir and second.state.global_step == 3
    assert not list(first.output_dir.parent.glob(f".{first.output_dir.name}.*"))


def test_resume_with_overwrite_set_continues_the_run(make_recipe):
    """--resume never replaces: output.overwrite=true on a resumed run must not move the run away."""
    train(make_recipe(train={"max_steps": 2, "save_steps": 2}))
    resumed = train(make_recipe(train={"max_steps": 4, "save_steps": 2}, output={"overwrite": True}), resume=True)
    assert resumed.state.global_step == 4 and len(resumed.losses) == 4


def _no_perf(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith("perf/")}
