"""Checkpoint files on disk: atomic rotation, durable saves (unit tests, no model, no Accelerate)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hfadapt.training import checkpoint as ckpt
from hfadapt.training.checkpoint import STATE_FILE, TrainerState, complete_checkpoints, latest_checkpoint, save_checkpoint

# What accelerator.save_state writes into a checkpoint (weights via our hook, optimizer, scheduler, RNG).
SAVED_FILES = ["0-trainable.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl"]
RNG_FILE = "random_states_0.pkl"


class FakeAccelerator:
    """One process; save_state writes the files Accelerate would, with some content."""

    is_main_process = True

    def wait_for_everyone(self) -> None:
        pass

    def save_state(self, output_dir: str) -> None:
        for name in SAVED_FILES:
            (Path(output_dir) / name).write_bytes(b"x" * 64)


def _save(run: Path, step: int, keep: int | None = None) -> Path:
    return save_checkpoint(FakeAccelerator(), run, TrainerState(global_step=step, total_steps=10), keep)


def _names(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def _loadable(path: Path) -> bool:
    return all((path / name).is_file() for name in [*SAVED_FILES, STATE_FILE])


def test_rotation_keeps_the_newest(tmp_path):
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, keep=2)
    assert _names(tmp_path) == ["checkpoint-3", "checkpoint-4"]
    assert all(_loadable(p) for p in complete_checkpoints(tmp_path))


def test_crash_while_deleting_an_old_checkpoint(tmp_path, monkeypatch):
    """A kill mid-delete must not leave a `checkpoint-N` that has its state file but lost its RNG file."""
    _save(tmp_path, 1, keep=2)
    _save(tmp_path, 2, keep=2)

    class Killed(Exception):
        pass

    real_rmtree = shutil.rmtree

    def rmtree_killed_after_one_file(path, *args, **kwargs):
        path = Path(path)
        if (path / RNG_FILE).is_file():  # a checkpoint (not the cleanup of a leftover that isn't there)
            (path / RNG_FILE).unlink()
            raise Killed(str(path))
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree_killed_after_one_file)
    with pytest.raises(Killed):
        _save(tmp_path, 3, keep=2)  # rotating checkpoint-1 out is interrupted
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)

    found = complete_checkpoints(tmp_path)
    assert [p.name for p in found] == ["checkpoint-2", "checkpoint-3"]
    assert all(_loadable(p) for p in found), [p.name for p in found if not _loadable(p)]
    assert latest_checkpoint(tmp_path).name == "checkpoint-3"

    # The next save clears what the crash left behind.
    _save(tmp_path, 4, keep=2)
    assert _names(tmp_path) == ["checkpoint-3", "checkpoint-4"]


def test_crash_while_replacing_a_checkpoint_of_the_same_step(tmp_path, monkeypatch):
    """Saving step N again (a replayed run) must not leave a half-deleted checkpoint-N as the latest."""
    _save(tmp_path, 1)
    _save(tmp_path, 2)

    class Killed(Exception):
        pass

    def rmtree_killed(path, *args, **kwargs):
        path = Path(path)
        if (path / RNG_FILE).is_file():
            (path / RNG_FILE).unlink()
            raise Killed(str(path))
        return None

    monkeypatch.setattr(shutil, "rmtree", rmtree_killed)
    with pytest.raises(Killed):
        _save(tmp_path, 2)
    monkeypatch.undo()
    latest = latest_checkpoint(tmp_path)
    assert latest is not None and _loadable(latest), latest


def test_leftovers_are_ignored_and_cleaned(tmp_path):
    _save(tmp_path, 2)
    root = tmp_path / "checkpoints"
    for name in (".tmp-checkpoint-6", ".del-checkpoint-1"):
        (root / name).mkdir()
        (root / name / STATE_FILE).write_text("{}")  # even with a state file, never a checkpoint
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["checkpoint-2"]
    _save(tmp_path, 4)
    assert _names(tmp_path) == ["checkpoint-2", "checkpoint-4"]


@pytest.fixture
def disk_log(monkeypatch):
    """Record fsync (by path) and os.replace calls, in order."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd to name fsynced files")
    events: list[tuple[str, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        events.append(("replace", str(Path(src).resolve()), str(Path(dst).resolve())))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_checkpoint_files_are_fsynced_before_the_rename(tmp_path, disk_log):
    final = _save(tmp_path, 3).resolve()
    tmp = final.with_name(".tmp-checkpoint-3")
    rename = disk_log.index(("replace", str(tmp), str(final)))
    synced_before = {e[1] for e in disk_log[:rename] if e[0] == "fsync"}
    for name in SAVED_FILES:
        assert str(tmp / name) in synced_before, f"{name} not fsynced before the rename"
    assert str(tmp / f".{STATE_FILE}.tmp") in synced_before  # written atomically itself
    assert str(tmp) in synced_before  # the folder's entries
    assert ("fsync", str(final.parent)) in disk_log[rename + 1 :]  # the rename itself


def test_json_and_trainable_weights_fsync_their_folder(tmp_path, disk_log):
    import torch

    ckpt.write_json_atomic(tmp_path / "a.json", {"x": 1})
    rename = next(i for i, e in enumerate(disk_log) if e[0] == "replace")
    assert ("fsync", str(tmp_path.resolve())) in disk_log[rename + 1 :]

    disk_log.clear()
    model = torch.nn.Linear(2, 2)
    ckpt.save_trainable(model, tmp_path / "w.safetensors")
    rename = next(i for i, e in enumerate(disk_log) if e[0] == "replace")
    assert ("fsync", str((tmp_path / ".w.safetensors.tmp").resolve())) in disk_log[:rename]
    assert ("fsync", str(tmp_path.resolve())) in disk_log[rename + 1 :]


def test_unsharded_model_is_written_by_the_main_process_only(tmp_path):
    """Plain / DDP: every process holds the weights, so the others neither gather nor write."""
    import torch
    from safetensors.torch import load_file

    model = torch.nn.Linear(2, 2)
    model.bias.requires_grad_(False)
    assert ckpt.sharding(model) is None
    ckpt.save_trainable(model, tmp_path / "other.safetensors", main=False)
    assert not (tmp_path / "other.safetensors").exists()
    ckpt.save_trainable(model, tmp_path / "main.safetensors")
    assert sorted(load_file(str(tmp_path / "main.safetensors"))) == ["weight"]  # trainable only
