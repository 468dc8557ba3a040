"""Run-directory layout, atomic checkpoints that hold only trainable weights, exact resume.

A checkpoint is written under a hidden temporary name and renamed into place only after
every file, the trainer state last, is on disk (fsynced, then the folder and its parent): a
crash mid-save leaves a `.tmp-*` folder that is ignored and cleaned up, never a `checkpoint-N`
that fails to load. Deleting goes the other way round: a checkpoint is first renamed to a
hidden `.del-*` name, then removed, so a crash mid-delete never leaves a `checkpoint-N` that
still has its trainer state but lost other files.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfadapt.modeling.sharding import sharding
from hfadapt.core.errors import HfadaptError
from hfadapt.rundir.layout import CHECKPOINT_PREFIX, STATE_FILE, TRAINABLE_FILE, RunDir, RunState, read_json

if TYPE_CHECKING:
    from accelerate import Accelerator
    from torch import Tensor
    from torch.nn import Module, Parameter

TMP_PREFIX = ".tmp-"  # a checkpoint being written
DEL_PREFIX = ".del-"  # a checkpoint being deleted


class TrainerState(RunState):
    """Everything beyond Accelerate's state needed to continue a run exactly: the trainer_state.json
    format (RunState, rundir/layout.py), saved atomically."""

    def save(self, path: Path, files: dict[str, Any] | None = None) -> None:
        """`files`: in a checkpoint, the size and sha256 of every other file in it (see verify_checkpoint)."""
        write_json_atomic(path, {**self.to_json(), **({FILES_KEY: files} if files is not None else {})})

    @classmethod
    def load(cls, path: Path) -> "TrainerState":
        return cls.from_json(read_json(path))  # the file record is not state: from_json leaves it out


FILES_KEY = "files"  # in a checkpoint's state file: {relative path: {"size": bytes, "sha256": hex}}


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_record(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file under `folder` except the state file, written into the state file."""
    return {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != STATE_FILE
    }


def _open_check(path: Path) -> None:
    """For a checkpoint written without a file record: the file must open and parse."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:  # refuses a file its header does not exactly cover
            for key in f.keys():
                f.get_slice(key)
    elif path.suffix in (".bin", ".pt", ".pkl", ".pth"):
        import torch

        torch.load(str(path), map_location="cpu", weights_only=False)  # the run's own file, as Accelerate loads it
    elif path.suffix == ".json":
        json.loads(path.read_text())


def verify_checkpoint(path: Path) -> str | None:
    """None when `path` is whole; else what is wrong, naming the file.

    Checked against the size and sha256 recorded in its state file when it was written; a checkpoint
    from before that record is checked by opening every file it holds.
    """
    state_file = path / STATE_FILE
    try:
        data = json.loads(state_file.read_text())
        TrainerState(**{k: v for k, v in data.items() if k != FILES_KEY})
    except Exception as e:  # noqa: BLE001
        return f"{state_file} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    record = data.get(FILES_KEY)
    if record is not None:
        for rel, want in record.items():
            f = path / rel
            if not f.is_file():
                return f"{f} is missing"
            size = f.stat().st_size
            if size != want["size"]:
                return f"{f} has {size} bytes, {want['size']} were written"
            if _sha256(f) != want["sha256"]:
                return f"{f} does not match the sha256 recorded when it was written"
        return None
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.name != STATE_FILE):
        try:
            _open_check(f)
        except Exception as e:  # noqa: BLE001
            msg = str(e).splitlines()[0] if str(e) else ""
            return f"{f} cannot be read ({type(e).__name__}{': ' + msg if msg else ''})"
    return None


def resumable_checkpoint(run_dir: Path) -> tuple[Path | None, str | None]:
    """The newest checkpoint that is whole, and a one-line notice when a newer one was not.

    Raises HfadaptError naming the file when checkpoints exist but none is whole.
    """
    found = complete_checkpoints(run_dir)
    problems = []
    for cp in reversed(found):
        problem = verify_checkpoint(cp)
        if problem is None:
            notice = None
            if problems:
                notice = f"--resume: {problems[0]}; resuming from the previous complete checkpoint, {cp.name}"
            return cp, notice
        problems.append(problem)
    if problems:
        raise HfadaptError(
            f"--resume: {problems[0]}; no earlier complete checkpoint to fall back on. "
            "Restore the file, or start the run over with output.overwrite=true"
        )
    return None, None


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable (POSIX; a no-op where directories can't be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file under `root`, then every folder, deepest first."""
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fsync_file(Path(dirpath) / name)
        fsync_dir(Path(dirpath))


def replace_durably(src: Path, dst: Path) -> None:
    """os.replace, then fsync the parent so the rename itself survives a power loss."""
    os.replace(src, dst)
    fsync_dir(dst.parent)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    replace_durably(tmp, path)


def _trainable(model: Module) -> list[tuple[str, Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def trainable_state_dict(model: Module) -> dict[str, Tensor]:
    """The trainable weights, whole, on the CPU.

    For a sharded model this is a collective: every process must call it, in the same order. Under FSDP2
    only process 0 gets the weights (the others get {}: a full copy per process could exhaust host memory).
    """
    kind = sharding(model)
    if kind == "fsdp2":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        # ignore_frozen_params: gather the adapter, not the frozen base it is a tiny fraction of.
        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        full = get_model_state_dict(model, options=options)
        names = {n for n, _ in _trainable(model)}
        return {n: t.contiguous() for n, t in full.items() if n in names}  # buffers are not trainable
    if kind == "zero3":
        import deepspeed  # only ever reached inside a DeepSpeed run

        trainable = _trainable(model)
        with deepspeed.zero.GatheredParameters([p for _, p in trainable]):  # modifier_rank=None: read only
            return {n: p.detach().cpu().clone() for n, p in trainable}
    return {n: p.detach().cpu().contiguous() for n, p in _trainable(model)}


def save_trainable(model: Module, path: Path, main: bool = True) -> None:
    """Write the trainable weights to `path` (safetensors, atomically) from the main process.

    Call it on every process: for a sharded model gathering the weights is a collective. Only the
    process with `main` true writes.
    """
    from safetensors.torch import save_file

    if not main and sharding(model) is None:
        return  # nothing to take part in
    weights = trainable_state_dict(model)
    if not main:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(weights, str(tmp))
    fsync_file(tmp)
    replace_durably(tmp, path)


def load_trainable(model: Module, path: Path) -> None:
    """Put the weights of `path` into the model's trainable parameters. Every process reads the file
    and calls this (for a sharded model it is a collective: each process keeps its shard)."""
    from safetensors.torch import load_file

    weights = load_file(str(path))
    trainable = _trainable(model)
    expected = {n for n, _ in trainable}
    if set(weights) != expected:
        missing = sorted(expected - set(weights))[:3]
        raise HfadaptError(f"{path}: does not match this model's trainable weights (e.g. missing {missing}); was the recipe changed?")
    kind = sharding(model)
    if kind == "fsdp2":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        # full_state_dict: the file holds whole tensors; each process keeps its own shard of them.
        set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=False))
    elif kind == "zero3":
        import deepspeed
        import torch

        # Every process gathers; process 0's copy is written back and partitioned again on exit.
        with deepspeed.zero.GatheredParameters([p for _, p in trainable], modifier_rank=0):
            with torch.no_grad():
                for n, p in trainable:
                    p.copy_(weights[n].to(device=p.device, dtype=p.dtype))
    else:
        model.load_state_dict(weights, strict=False)


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """`checkpoint-N` folders, oldest first; `.tmp-*` (being written) and `.del-*` (being deleted) are not."""
    return RunDir(run_dir).checkpoints()


def remove_checkpoint(path: Path) -> None:
    """Rename out of the way first, then delete: a crash mid-delete leaves a `.del-*` folder,
    which nothing loads and the next save removes, never a half-deleted `checkpoint-N`."""
    doomed = path.with_name(f"{DEL_PREFIX}{path.name}")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    fsync_dir(path.parent)
    shutil.rmtree(doomed, ignore_errors=True)  # what stays behind is removed by the next save


def remove_leftovers(root: Path) -> None:
    """Folders of an interrupted save or delete."""
    for stale in [*root.glob(f"{TMP_PREFIX}{CHECKPOINT_PREFIX}*"), *root.glob(f"{DEL_PREFIX}{CHECKPOINT_PREFIX}*")]:
        shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def no_checkpoint_message(run_dir: Path, save_steps: int | None) -> str:
    """Why --resume found nothing in `run_dir`, and exactly what to do instead."""
    where = f"--resume: no complete checkpoint in {RunDir(run_dir).checkpoints_dir}"
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return f"{where}: no run was started in {run_dir}; start it without --resume"
    start_over = f"start it over without --resume and with output.overwrite=true (which deletes {run_dir})"
    if not save_steps:
        return f"{where}: train.save_steps is not set, so this run writes no checkpoints and cannot be continued; {start_over}, setting train.save_steps to make the new run resumable"
    return f"{where}: the run stopped before its first checkpoint (train.save_steps={save_steps}: at step {save_steps}) was complete; {start_over}"


def save_checkpoint(accelerator: Accelerator, run_dir: Path, state: TrainerState, keep: int | None) -> Path:
    root = RunDir(run_dir).checkpoints_dir
    final = root / f"{CHECKPOINT_PREFIX}{state.global_step}"
    tmp = root / f"{TMP_PREFIX}{CHECKPOINT_PREFIX}{state.global_step}"
    if accelerator.is_main_process:
        remove_leftovers(root)  # of a save or delete that a crash interrupted
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # optimizer, scheduler, RNG of every process; weights via the hooks below
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # Weights, optimizer and RNG files are on disk before the state file that marks the
        # checkpoint complete, and all of it before the rename.
        fsync_tree(tmp)
        state.save(tmp / STATE_FILE, files=file_record(tmp))
        fsync_dir(tmp)
        if final.exists():
            remove_checkpoint(final)
        replace_durably(tmp, final)
        for old in complete_checkpoints(run_dir)[: -keep or None] if keep else []:
            remove_checkpoint(old)
    accelerator.wait_for_everyone()
    return final


def register_trainable_hooks(accelerator: Accelerator) -> None:
    """Make save_state/load_state store only trainable weights (the adapter), not the frozen base."""

    def save_hook(models: list, weights: list, output_dir: str) -> None:
        # Every process: gathering a sharded model's weights is a collective; only the main one writes.
        for i, model in enumerate(models):
            path = Path(output_dir) / f"{i}-{TRAINABLE_FILE}"
            save_trainable(accelerator.unwrap_model(model), path, main=accelerator.is_main_process)
        weights.clear()

    def load_hook(models: list, input_dir: str) -> None:
        # Under FSDP and DeepSpeed, Accelerate has already loaded the weights from its own sharded files
        # and passes no models here; the trainable file is then used for nothing but inspection.
        for i, model in enumerate(models):
            load_trainable(accelerator.unwrap_model(model), Path(input_dir) / f"{i}-{TRAINABLE_FILE}")
        models.clear()

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
