"""`train(recipe)`: setup -> fit -> save. The CLI and the Python API both come through here."""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .checkpoint import STATE_FILE, TRAINABLE_FILE, TrainerState, latest_checkpoint, load_trainable, no_checkpoint_message, write_json_atomic
from .errors import HfadaptError
from .run import RunDir

# Fields a resumed run may change: how long to train, and where the run lives.
RESUMABLE_CHANGES = {("train", "epochs"), ("train", "max_steps"), ("output", "overwrite"), ("output", "dir")}


@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict[str, float]
    state: TrainerState = field(repr=False)

    @property
    def losses(self) -> list[float]:
        return self.state.losses


def train(recipe: Any, resume: bool = False, callbacks: list[Callable[[TrainerState], None]] = ()) -> TrainResult:
    """Train the recipe's adapter; with resume=True continue from the run's latest checkpoint.

    `callbacks` are called with the trainer state after every optimizer step.
    """
    from .tasks import TASKS

    run = RunDir(recipe.output_dir)
    task = TASKS.get(recipe.task, field="task")
    checkpoint = _check_run_dir(run, recipe, resume)
    created = not run.path.exists()
    progress = {"training": False}
    try:
        return _train(recipe, resume, callbacks, run, task, checkpoint, progress)
    except BaseException:
        # A run that failed while setting up (bad data, a model that won't load) leaves nothing
        # behind, so fixing the recipe and running again is not refused as "already holds a run".
        if created and not progress["training"] and int(os.environ.get("RANK", "0")) == 0:
            shutil.rmtree(run.path, ignore_errors=True)
        raise


def _train(recipe: Any, resume: bool, callbacks: Any, run: RunDir, task: Any, checkpoint: Path | None, progress: dict) -> TrainResult:
    import torch
    from accelerate import Accelerator
    from accelerate.data_loader import prepare_data_loader
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import ProjectConfiguration, set_seed
    from torch.utils.data import DataLoader
    from transformers import get_scheduler

    from .adapters import apply_adapter, count_parameters, is_peft
    from .checkpoint import register_trainable_hooks
    from .data import load_raw
    from .modeling import load_base_model
    from .runinfo import collect as collect_run_info
    from .trainer import LoopParts, fit

    t = recipe.train
    # Accelerate keeps its state in process-wide singletons; a second train() in the same
    # process (notebooks, tests) may ask for other settings, so start from a clean state.
    # The process group (PartialState) is kept.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    # Under torchrun without a GPU, Accelerate sets up a CPU process group only when asked;
    # otherwise every rank would train alone on the whole data.
    world = int(os.environ.get("WORLD_SIZE", "1"))
    on_cpu_only = world > 1 and not torch.cuda.is_available()
    try:
        accelerator = Accelerator(
            cpu=on_cpu_only,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            mixed_precision=t.mixed_precision,
            log_with=t.log_with or None,
            project_config=ProjectConfiguration(project_dir=str(run.path), logging_dir=str(run.logs_dir)),
            step_scheduler_with_optimizer=False,  # stepped once per optimizer step, whatever the process count
        )
    except (ValueError, ImportError) as e:
        raise HfadaptError(f"train: {str(e).splitlines()[0]} (train.mixed_precision={t.mixed_precision}, train.log_with={t.log_with})") from e
    if accelerator.num_processes != world:
        raise HfadaptError(f"train: launched with WORLD_SIZE={world} but Accelerate set up {accelerator.num_processes} process(es)")
    set_seed(t.seed)
    if accelerator.is_main_process:
        run.path.mkdir(parents=True, exist_ok=True)
        run.recipe_file.write_text(recipe.to_yaml())
    accelerator.wait_for_everyone()

    # ---- data ----
    processor = task.load_processor(recipe)
    with accelerator.main_process_first():
        raw = load_raw(recipe, task)
        info = task.label_info(raw.train, recipe)  # label names for classifiers; what a task needs from the data
        train_ds = task.preprocess(raw.train, "train", processor, recipe, info, train=True)
        eval_ds = task.preprocess(raw.validation, "validation", processor, recipe, info, train=False) if raw.validation is not None else None
        test_ds = task.preprocess(raw.test, "test", processor, recipe, info, train=False) if raw.test is not None else None
    collate = task.collator(processor)

    def make_train_loader(epoch: int) -> Any:
        # The shuffle of each epoch is a pure function of (seed, epoch): a resumed run sees the
        # same order, and every process agrees on it. The loader's own generator keeps
        # iterator creation from drawing on the global RNG that dropout uses.
        order = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(t.seed + epoch)).tolist()
        dl = DataLoader(
            train_ds, batch_size=t.batch_size, sampler=order, collate_fn=collate,
            num_workers=t.num_workers, generator=torch.Generator().manual_seed(t.seed),
        )
        return prepare_data_loader(
            dl, device=accelerator.device, num_processes=accelerator.num_processes,
            process_index=accelerator.process_index, put_on_device=True, rng_types=[],
        )

    steps_per_epoch = math.ceil(len(make_train_loader(0)) / t.gradient_accumulation_steps)
    total_steps = t.max_steps or t.epochs * steps_per_epoch

    # ---- model ----
    base_path = str(run.base_model_dir) if recipe.model.init == "config" and run.base_model_dir.is_dir() else None
    model = load_base_model(recipe, task, info, processor, path=base_path)
    if recipe.model.init == "config" and base_path is None and accelerator.is_main_process:
        # Random weights: keep them, or the adapter could never be loaded onto its base again.
        model.save_pretrained(run.base_model_dir)
        processor.save_pretrained(run.base_model_dir)
    if t.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = apply_adapter(model, recipe, task, num_training_steps=total_steps)
    trainable, total = count_parameters(model)
    if trainable == 0:
        raise HfadaptError(f"adapter: {recipe.adapter.method} left no trainable parameters in {recipe.model.name_or_path}")

    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=t.learning_rate, weight_decay=t.weight_decay
    )
    warmup = t.warmup_steps if t.warmup_steps is not None else int((t.warmup_ratio or 0.0) * total_steps)
    scheduler = get_scheduler(t.scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    eval_bs = t.eval_batch_size or t.batch_size
    eval_dl = DataLoader(eval_ds, batch_size=eval_bs, collate_fn=collate) if eval_ds is not None else None
    test_dl = DataLoader(test_ds, batch_size=eval_bs, collate_fn=collate) if test_ds is not None else None
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if eval_dl is not None:
        eval_dl = accelerator.prepare_data_loader(eval_dl)
    if test_dl is not None:
        test_dl = accelerator.prepare_data_loader(test_dl)
    register_trainable_hooks(accelerator)

    state = TrainerState(total_steps=total_steps)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        state = TrainerState.load(checkpoint / STATE_FILE)
        state.total_steps = total_steps
    if accelerator.is_main_process:
        print(
            f"hfadapt: {recipe.task} | {recipe.model.name_or_path} | {recipe.adapter.method} | "
            f"trainable {trainable:,} / {total:,} ({100 * trainable / total:.3f}%) | {len(train_ds)} train examples | "
            f"{total_steps} steps on {accelerator.num_processes} process(es)"
            + (f" | resuming from {checkpoint.name}" if checkpoint else "")
        )
    accelerator.init_trackers(recipe.run_name, config=_flat_config(recipe.to_dict()))

    metric_names = recipe.eval.metrics or task.default_metrics(recipe)
    evaluate = (lambda: task.evaluate(accelerator, model, eval_dl, info, metric_names)) if eval_dl is not None else None
    on_step_end = None
    if recipe.adapter.method == "adalora":
        on_step_end = lambda m, s: accelerator.unwrap_model(m).base_model.update_and_allocate(s.global_step)  # noqa: E731
    parts = LoopParts(accelerator, model, optimizer, scheduler, make_train_loader, evaluate, run.path, on_step_end)
    progress["training"] = True
    state = fit(parts, recipe, state, steps_per_epoch, list(callbacks))

    # ---- finish: best weights, final metrics, the saved adapter ----
    unwrapped = accelerator.unwrap_model(model)
    if state.best_step is not None and (run.best_dir / TRAINABLE_FILE).is_file():
        load_trainable(unwrapped, run.best_dir / TRAINABLE_FILE)
    final: dict[str, float] = {"train/loss": state.losses[-1] if state.losses else float("nan"), "train/steps": state.global_step}
    if evaluate is not None:
        final.update({f"eval/{k}": v for k, v in evaluate().items()})
    if test_dl is not None:
        final.update({f"test/{k}": v for k, v in task.evaluate(accelerator, model, test_dl, info, metric_names).items()})
    if state.best_step is not None:
        final["best/step"] = state.best_step
    accelerator.log({k: v for k, v in final.items() if not k.startswith("train/")}, step=state.global_step)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _save_model(unwrapped, processor, run, recipe, is_peft(recipe.adapter.method))
        write_json_atomic(run.metrics_file, final)
        write_json_atomic(run.info_file, collect_run_info(accelerator))
        state.save(run.state_file)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if recipe.hub.push and accelerator.is_main_process:
        from .hub import push

        push(run.path, recipe.hub.repo_id, private=recipe.hub.private, revision=recipe.hub.revision,
             commit_message=recipe.hub.commit_message)
    return TrainResult(run.path, final, state)


def _check_run_dir(run: RunDir, recipe: Any, resume: bool) -> Path | None:
    """Never silently overwrite a run; on resume, find the checkpoint and refuse a changed recipe."""
    if resume:
        checkpoint = latest_checkpoint(run.path)
        if checkpoint is None:
            raise HfadaptError(no_checkpoint_message(run.path, recipe.train.save_steps))
        if run.recipe_file.is_file():
            saved = yaml.safe_load(run.recipe_file.read_text())
            changed = _differences(saved, recipe.to_dict())
            if changed:
                raise HfadaptError(
                    f"--resume: the recipe differs from the one {run.path} was started with at {', '.join(changed)}; "
                    "only train.epochs and train.max_steps may change"
                )
        return checkpoint
    if run.is_started():
        if not recipe.output.overwrite:
            raise HfadaptError(
                f"output.dir: {run.path} already holds a run; pass --resume to continue it, "
                "set output.overwrite=true to replace it, or choose another output.dir"
            )
        if int(os.environ.get("RANK", "0")) == 0:
            shutil.rmtree(run.path)
    return None


def _differences(a: Any, b: Any, path: tuple[str, ...] = ()) -> list[str]:
    if path in RESUMABLE_CHANGES:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _differences(a.get(k), b.get(k), path + (k,))
        return out
    return [] if a == b else [".".join(path)]


def _save_model(model: Any, processor: Any, run: RunDir, recipe: Any, peft: bool) -> None:
    target = run.path / ("adapter" if peft else "model")
    tmp = run.path / f".tmp-{target.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    if peft:
        if recipe.model.init == "config":
            # The base is the random model saved in the run; point the adapter at it.
            model.peft_config["default"].base_model_name_or_path = str(run.base_model_dir.resolve())
        model.save_pretrained(tmp)
        model.get_base_model().config.save_pretrained(tmp)  # id2label/label2id/problem_type for reloading
    else:
        model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def _flat_config(d: dict, prefix: str = "") -> dict[str, Any]:
    """Recipe as flat scalars: TensorBoard's hparams accept nothing else."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_config(v, key + "."))
        elif isinstance(v, (int, float, str, bool)):
            out[key] = v
        elif v is not None:
            out[key] = str(v)
    return out
