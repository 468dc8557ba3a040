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


# ---- a torn checkpoint: the newest is checked before anything in the run is rewritten -----------------
def _kill_at_step_4(state):
    if state.global_step == 4:
        raise Stop()


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("record", [True, False], ids=["size-and-hash-record", "written-before-the-record"])
def test_torn_newest_checkpoint_falls_back_or_stops(make_recipe, tmp_path, capsys, record):
    """Each file of the newest checkpoint truncated in turn: with an older whole checkpoint, resume continues
    from it with a one-line notice; without one, it stops in one line naming the file and changes nothing."""
    import json
    import shutil

    from hfadapt.training.checkpoint import STATE_FILE

    base = tmp_path / "base"
    with pytest.raises(Stop):
        train(make_recipe(train={"max_steps": 6, "save_steps": 2}, output={"dir": str(base)}), callbacks=[_kill_at_step_4])
    newest = base / "checkpoints" / "checkpoint-4"
    if not record:  # a checkpoint written before the size/hash record: its files are opened instead
        for cp in (base / "checkpoints").iterdir():
            state = json.loads((cp / STATE_FILE).read_text())
            assert "files" in state
            del state["files"]
            (cp / STATE_FILE).write_text(json.dumps(state))
    files = sorted(p.relative_to(newest) for p in newest.rglob("*") if p.is_file())
    assert len(files) >= 4, files
    for i, rel in enumerate(files):
        # no earlier checkpoint: one line naming the file, nothing changed
        alone = tmp_path / f"alone-{i}"
        shutil.copytree(base, alone)
        shutil.rmtree(alone / "checkpoints" / "checkpoint-2")
        _truncate(alone / "checkpoints" / "checkpoint-4" / rel)
        before = _snapshot(alone)
        with pytest.raises(HfadaptError) as e:
            train(make_recipe(train={"max_steps": 6, "save_steps": 2}, output={"dir": str(alone)}), resume=True)
        assert str(alone / "checkpoints" / "checkpoint-4" / rel) in str(e.value) and "\n" not in str(e.value), str(e.value)
        assert _snapshot(alone) == before
        if i % 2 and record:
            continue  # falling back trains: every other file is enough to show it with the record
        # an earlier whole checkpoint: resumed from it, with a notice
        fallback = tmp_path / f"fallback-{i}"
        shutil.copytree(base, fallback)
        _truncate(fallback / "checkpoints" / "checkpoint-4" / rel)
        steps = []
        capsys.readouterr()
        result = train(make_recipe(train={"max_steps": 6, "save_steps": 2}, output={"dir": str(fallback)}),
                       resume=True, callbacks=[lambda s: steps.append(s.global_step)])
        err = capsys.readouterr().err
        notices = [line for line in err.splitlines() if "resuming from the previous complete checkpoint, checkpoint-2" in line]
        assert len(notices) == 1 and str(rel) in notices[0], err
        assert steps[0] == 3 and result.state.global_step == 6
