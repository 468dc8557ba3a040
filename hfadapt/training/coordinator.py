"""`train(recipe)`: setup steps -> fit -> finish. The CLI and the Python API both come through here.

Reading order: `train` names the steps; each `_setup_*` function builds one thing (accelerator,
data, model + adapter, optimizer + scheduler); `loop.fit` runs the loop; `_finish` restores
the best weights, evaluates, saves and pushes.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from hfadapt.training.checkpoint import (
    TrainerState,
    resumable_checkpoint,
    load_trainable,
    no_checkpoint_message,
    write_json_atomic,
)
from hfadapt.core.errors import HfadaptError, first_line
from hfadapt.core.recipe import shed_foreign_fields
from hfadapt.modeling.adapters import after_optimizer_step_hook, check_options
from hfadapt.modeling.sharding import prepare_sharded_generation
from hfadapt.training.loop import LoopParts, fit
from hfadapt.training.precision import launched_precision, resolve_precision
from hfadapt.rundir.layout import RunDir, RunMetrics
from hfadapt.rundir.status import recorded, write_status
from hfadapt.tasks import TASKS, EvalContext, Task
from hfadapt.training.throughput import Meter, figures, summary_line, unit_counter

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator
    from datasets import Dataset, IterableDataset
    from torch.utils.data import DataLoader

    from hfadapt.core.recipe import Recipe
    from hfadapt.tasks.base import Processor

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


@dataclass
class Splits:
    """The preprocessed data of a run and what the task learned from it."""

    processor: Processor
    info: Any  # what the task read from the data (task.label_info: LabelInfo for classifiers), or None
    train: Dataset | IterableDataset
    validation: Dataset | None
    test: Dataset | None
    collate: Callable[[list[dict]], dict]
    train_collate: Callable[[list[dict]], dict] | None = None  # training batches only (mixup); `collate` when None


@dataclass
class Evaluator:
    """One split's evaluation during training: the task's evaluate() with an explicit context."""

    task: Task
    ctx: EvalContext
    model: torch.nn.Module
    dataloader: DataLoader
    count: int = 0

    def __call__(self, step: int, predictions_file: Path | None = None) -> dict[str, float]:
        self.count += 1
        ctx = replace(self.ctx, step=step, evaluation=self.count, predictions_file=predictions_file)
        return self.task.evaluate(ctx, self.model, self.dataloader)


@dataclass
class Session:
    """Everything setup built, prepared by Accelerate, ready for `fit`."""

    accelerator: Accelerator
    splits: Splits
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    make_train_loader: Callable[[int], DataLoader]
    steps_per_epoch: int
    validate: Evaluator | None
    test: Evaluator | None
    state: TrainerState
    compiled: Any = None  # train.compile: the compiled training forward (compiling.py), or None
    liger: str | None = None  # train.liger_kernel: the model_type liger patched, or None


def train(recipe: Recipe, resume: bool = False, callbacks: list[Callable[[TrainerState], None]] = ()) -> TrainResult:
    """Train the recipe's adapter; with resume=True continue from the run's latest checkpoint.

    `callbacks` are called with the trainer state after every optimizer step.
    """
    task = TASKS.get(recipe.task, field="task")
    run = RunDir(recipe.output_dir)
    _check_start_apart_from_output(recipe, run)
    checkpoint = _check_run_dir(run, recipe, resume)
    with _kept_unless_setup_fails(run, replace=recipe.output.overwrite and not resume, is_main=_process_state().is_main_process):
        session = _setup(recipe, task, run, checkpoint)
        if session.accelerator.is_main_process:
            _keep_reward_files(recipe, run)
    on_step_end = None
    hook = after_optimizer_step_hook(recipe.adapter.method)  # the method's own (AdaLoRA: its rank budget update)
    if hook is not None:
        on_step_end = lambda m, s: hook(session.accelerator.unwrap_model(m), s.global_step)  # noqa: E731
    meter = Meter(unit_counter(task, session.splits.processor), base=session.state.perf)
    parts = LoopParts(
        session.accelerator, session.model, session.optimizer, session.scheduler,
        session.make_train_loader, session.validate, run, on_step_end, meter, session.compiled,
        training_loss=lambda model, batch: task.training_loss(model, batch, recipe),
        rollout=(lambda model, batch, step: task.rollout(model, batch, recipe, step)) if type(task).rollout is not Task.rollout else None,
        default_best_metric=task.default_best_metric,
    )
    with recorded(run.path, session.state, is_main=session.accelerator.is_main_process), sigterm_stops() as stop:
        parts.stop_requested = stop
        state = fit(parts, recipe, session.state, session.steps_per_epoch, list(callbacks))
        return _finish(recipe, run, session, state, meter)


@contextmanager
def sigterm_stops() -> Iterator[Callable[[], bool]]:
    """While training: SIGTERM (`kill`, a scheduler's preemption, the UI's Stop) sets a flag the loop reads
    after each optimizer step, so it saves a checkpoint and stops instead of dying mid-step. Only the main
    thread can take a signal; elsewhere the process's own handling stays."""
    import signal
    import threading

    asked = [False]
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def on_term(signum: int, frame: Any) -> None:
        asked[0] = True

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield lambda: asked[0]
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---- setup ---------------------------------------------------------------------------------------
def _setup(recipe: Recipe, task: Task, run: RunDir, checkpoint: Path | None) -> Session:
    check_options(recipe.adapter)  # adapter.options against the peft config class, before data and model load
    accelerator = _setup_accelerator(recipe, run)
    if recipe.train.liger_kernel:  # package and device: refused before data and model are loaded
        from hfadapt.modeling.liger import check_available

        check_available(accelerator.device.type)
    start = _starting_adapter(recipe, task, accelerator)  # model.adapter: refused before data and model are loaded
    splits = _setup_data(recipe, task, accelerator)
    make_train_loader = _train_loader_factory(recipe, task, splits, accelerator)
    if recipe.data.streaming:  # one endless "epoch"; checks guarantee train.max_steps
        steps_per_epoch = total_steps = recipe.train.max_steps
    else:
        updates = task.updates_per_batch(recipe)  # online-rl: rl.num_iterations updates per generation
        steps_per_epoch = math.ceil(len(make_train_loader(0)) * updates / recipe.train.gradient_accumulation_steps)
        total_steps = recipe.train.max_steps or recipe.train.epochs * steps_per_epoch
    model, trainable, total, liger = _setup_model(recipe, task, run, splits, accelerator, total_steps, start)
    optimizer, scheduler = _setup_optimizer(recipe, model, total_steps, accelerator.device)
    model, optimizer, scheduler = _prepare(accelerator, recipe, model, optimizer, scheduler)
    _add_model_columns(recipe, task, splits, model, accelerator)
    prepare_sharded_generation(model)  # evaluation may generate with FSDP2-sharded weights
    compiled = _setup_compile(recipe, model, accelerator)
    validate = _evaluator(recipe, task, run, splits, accelerator, model, "validation")
    test = _evaluator(recipe, task, run, splits, accelerator, model, "test")
    state = _setup_state(accelerator, run, checkpoint, total_steps)
    if checkpoint is not None and accelerator.is_main_process:
        for name in task.step_logs:
            run.drop_rows_after(name, state.global_step)
    if accelerator.is_main_process:
        print(
            f"hfadapt: {recipe.task} | {recipe.model.name_or_path} | {recipe.adapter.method} | "
            f"trainable {trainable:,} / {total:,} ({100 * trainable / total:.3f}%) | {_train_size(splits.train)} | "
            f"{total_steps} steps on {accelerator.num_processes} process(es)"
            + (f" | resuming from {checkpoint.name}" if checkpoint else "")
            + _planned_memory(recipe)
        )
        write_status(run.path, "running", accelerator.is_main_process, trainable=trainable, total=total, total_steps=total_steps, step=state.global_step)
    accelerator.init_trackers(recipe.run_name, config=_flat_config(recipe.to_dict()))
    return Session(accelerator, splits, model, optimizer, scheduler, make_train_loader, steps_per_epoch, validate, test, state, compiled, liger)


def _setup_compile(recipe: Recipe, model: torch.nn.Module, accelerator: Accelerator) -> Any:
    """train.compile: the compiled training forward, or None (with one line saying why where it can't)."""
    if not recipe.train.compile:
        return None
    from hfadapt.training.compiling import CompiledForward, compile_blocker

    why = compile_blocker(recipe, accelerator.device.type)
    if why is not None:
        if accelerator.is_main_process:
            print(f"hfadapt: train.compile: training eagerly: {why}")
        return None
    return CompiledForward(model, verbose=accelerator.is_main_process)


def _train_size(train: Dataset | IterableDataset) -> str:
    from hfadapt.data.sources import is_streamed

    return "train examples streamed" if is_streamed(train) else f"{len(train)} train examples"


def _planned_memory(recipe: Recipe) -> str:
    """' | ~X per device planned' from `hfadapt plan`, or nothing when the model can't be planned."""
    from hfadapt.training.plan import plan_recipe

    try:
        plan = plan_recipe(recipe)
    except Exception:  # noqa: BLE001 - the plan is advice; it must never stop a run
        return ""
    layout = "qlora" if recipe.model.quantization != "none" else "single"
    mib = plan.per_device(layout) / 2**20
    if mib >= 1024:
        return f" | plan: ~{mib / 1024:.1f} GiB/device"
    return f" | plan: ~{mib:.0f} MiB/device" if mib >= 10 else f" | plan: ~{mib:.1f} MiB/device"


def _cpu_process_group() -> bool:
    """Under torchrun without a GPU, Accelerate sets up a CPU process group only when asked;
    otherwise every rank would train alone on the whole data."""
    import torch

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def _process_state() -> Any:
    """Accelerate's process state (rank, process group), set up as the run's Accelerator will find it."""
    from accelerate import PartialState

    return PartialState(cpu=_cpu_process_group())


def _setup_accelerator(recipe: Recipe, run: RunDir) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import ProjectConfiguration, set_seed

    t = recipe.train
    # Accelerate keeps its state in process-wide singletons; a second train() in the same
    # process (notebooks, tests) may ask for other settings, so start from a clean state.
    # The process group (PartialState) is kept.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    on_cpu_only = _cpu_process_group()
    asked = asked_distribution(os.environ)
    precision = resolve_precision(t.mixed_precision, os.environ)  # `auto`: the launcher's, else the device's
    try:
        accelerator = Accelerator(
            cpu=on_cpu_only,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            mixed_precision=precision,
            log_with=t.log_with or None,
            project_config=ProjectConfiguration(project_dir=str(run.path), logging_dir=str(run.logs_dir)),
            step_scheduler_with_optimizer=False,  # stepped once per optimizer step, whatever the process count
        )
    except (ValueError, ImportError) as e:
        if asked is not None:
            raise HfadaptError(f"train: the Accelerate config asks for {asked[1]} ({asked[2]}=true): {first_line(e)}") from e
        raise HfadaptError(f"train: {first_line(e)} (train.mixed_precision={precision}, train.log_with={t.log_with})") from e
    if accelerator.num_processes != world:
        raise HfadaptError(f"train: launched with WORLD_SIZE={world} but Accelerate set up {accelerator.num_processes} process(es)")
    _check_what_runs(accelerator, precision, asked, from_launch=t.mixed_precision == "auto" and launched_precision(os.environ) is not None)
    set_seed(t.seed)
    if accelerator.is_main_process:
        try:
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a folder the OS refuses though check_output could not tell (/proc, read-only mounts)
            raise HfadaptError(f"output.dir: cannot create {run.path}: {e.strerror or e}; choose another output.dir") from None
        run.recipe_file.write_text(recipe.to_yaml())
    accelerator.wait_for_everyone()
    return accelerator


# Variables `accelerate launch` sets from an Accelerate config that asks for a sharded engine.
# (accelerate's DistributedType name, the name users know, the variable)
ENGINES = (
    ("FSDP", "FSDP", "ACCELERATE_USE_FSDP"),
    ("DEEPSPEED", "DeepSpeed", "ACCELERATE_USE_DEEPSPEED"),
    ("MEGATRON_LM", "Megatron-LM", "ACCELERATE_USE_MEGATRON_LM"),
)


def asked_distribution(env: Mapping[str, str]) -> tuple[str, str, str] | None:
    """The engine (as in ENGINES) that the launch asks for, or None for plain data parallel / none."""
    for engine in ENGINES:
        if str(env.get(engine[2], "false")).lower() == "true":
            return engine
    return None


def _prepare(accelerator: Accelerator, recipe: Recipe, *parts: Any) -> Any:
    """accelerator.prepare; a sharding engine that cannot wrap this model ends the run in one line
    (e.g. Accelerate 1.15's FSDP2 fails on BERT-style models, whose embeddings block is itself a
    no-split module holding the input embeddings it also shards)."""
    engine = str(accelerator.distributed_type).split(".")[-1]
    try:
        return accelerator.prepare(*parts)
    except Exception as e:  # noqa: BLE001 - only re-raised as one line under FSDP / DeepSpeed
        if engine not in ("FSDP", "DEEPSPEED"):
            raise
        name = dict((k, n) for k, n, _ in ENGINES)[engine]
        raise HfadaptError(
            f"train: {name} could not wrap {recipe.model.name_or_path}: {first_line(e)}; "
            "launch it with a DDP config (examples/launch/multi-gpu-ddp.yaml) or another engine"
        ) from e


def _check_what_runs(accelerator: Accelerator, mixed_precision: str, asked: tuple[str, str, str] | None, from_launch: bool = False) -> None:
    """Refuse a run that would quietly differ from what was asked: Accelerate falls back without a word
    (fp16 on CPU trains in fp32; FSDP / DeepSpeed without GPUs become plain data parallel or none)."""
    kind = str(accelerator.distributed_type).split(".")[-1]
    device = accelerator.device.type
    if asked is not None and kind != asked[0]:
        raise HfadaptError(
            f"train: the Accelerate config asks for {asked[1]} ({asked[2]}=true), but on this machine Accelerate set up "
            f"{'no distribution' if kind == 'NO' else kind} ({accelerator.num_processes} {device} process(es)) instead; {asked[1]} needs GPUs: run it on GPUs, "
            "or launch with an Accelerate config without it"
        )
    if mixed_precision != "no" and not accelerator.native_amp and kind not in ("DEEPSPEED", "MEGATRON_LM"):
        if from_launch:  # train.mixed_precision=auto took the launch's value
            raise HfadaptError(
                f"train.mixed_precision: auto takes {mixed_precision} from the launch (ACCELERATE_MIXED_PRECISION), but "
                f"{mixed_precision} autocast is not available on {device}; the run would train in fp32. Launch without "
                "--mixed_precision (or with no)"
            )
        other = "bf16 (CPU autocast supports it) or train.mixed_precision=no" if device == "cpu" else "no"
        raise HfadaptError(
            f"train.mixed_precision: {mixed_precision} autocast is not available on {device}; the run would train in fp32. "
            f"Use train.mixed_precision={other}"
        )


def _setup_data(recipe: Recipe, task: Task, accelerator: Accelerator) -> Splits:
    from hfadapt.data.sources import load_raw

    # The main process fills the datasets cache first; the others then read it (the processor too:
    # a CTC vocabulary built from the training transcripts reads the data).
    with accelerator.main_process_first():
        processor = task.load_processor(recipe)
        raw = load_raw(recipe, task)
        info = task.label_info(raw.train, recipe)

        def prepare(ds: Dataset, split: str, train: bool) -> Any:
            return task.preprocess(ds, split, processor, recipe, info, train=train) if ds is not None else None

        train = prepare(raw.train, "train", True)
        validation = prepare(raw.validation, "validation", False)
        test = prepare(raw.test, "test", False)
    # A task may collate training batches its own way (image-classification: mixup/cutmix), never evaluation's.
    train_collate = task.train_collator(processor, recipe, info)
    return Splits(processor, info, train, validation, test, task.collator(processor), train_collate)


def _train_loader_factory(recipe: Recipe, task: Task, splits: Splits, accelerator: Accelerator) -> Callable[[int], Any]:
    import torch
    from accelerate.data_loader import prepare_data_loader
    from torch.utils.data import DataLoader

    from hfadapt.training.workers import run_workers

    t = recipe.train
    workers = run_workers(recipe, task, accelerator)  # train.num_workers, or the task's default on this device
    if recipe.data.streaming:
        from hfadapt.data.streaming import EpochStream

        stream = EpochStream(splits.train, t.seed, recipe.data.shuffle_buffer, accelerator.process_index, accelerator.num_processes)

        def make_stream_loader(epoch: int) -> Any:
            # Each process reads its own share (EpochStream): Accelerate only moves batches to the device.
            # The loader's own generator, as below: creating its iterator must not draw on the global RNG.
            dl = DataLoader(
                stream, batch_size=t.batch_size, collate_fn=splits.train_collate or splits.collate, num_workers=workers,
                generator=torch.Generator().manual_seed(t.seed), pin_memory=accelerator.device.type == "cuda",
            )
            # dispatch_batches=False: for an iterable dataset Accelerate would otherwise read it on the
            # main process only and send slices to the others (and drop the loader's generator).
            return prepare_data_loader(
                dl, device=accelerator.device, num_processes=1, process_index=0, put_on_device=True, rng_types=[],
                dispatch_batches=False,
            )

        return make_stream_loader

    from hfadapt.data.grouping import grouped_order, row_lengths, wants_grouping

    group, _why = wants_grouping(recipe, task, splits.train)
    lengths = row_lengths(splits.train) if group else None  # once per run, not per epoch
    global_batch = t.batch_size * accelerator.num_processes  # accelerate hands process i the batches i, i+N, ...

    def make_train_loader(epoch: int) -> Any:
        # The shuffle of each epoch is a pure function of (seed, epoch): a resumed run sees the
        # same order, and every process agrees on it. The loader's own generator keeps
        # iterator creation from drawing on the global RNG that dropout uses.
        if lengths is not None:  # train.group_by_length: similar lengths per global batch (grouping.py)
            order = grouped_order(lengths, global_batch, t.seed, epoch)
        else:
            order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(t.seed + epoch)).tolist()
        dl = DataLoader(
            splits.train, batch_size=t.batch_size, sampler=order, collate_fn=splits.train_collate or splits.collate,
            # Workers seed their RNGs from this generator: seeded per epoch, augmentation drawn in the
            # workers differs between epochs and is the same in a rerun.
            num_workers=workers, generator=torch.Generator().manual_seed(t.seed + epoch),
            pin_memory=accelerator.device.type == "cuda",  # page-locked batches: faster host-to-GPU copies
        )
        return prepare_data_loader(
            dl, device=accelerator.device, num_processes=accelerator.num_processes,
            process_index=accelerator.process_index, put_on_device=True, rng_types=[],
        )

    return make_train_loader


def _check_start_apart_from_output(recipe: Recipe, run: RunDir) -> None:
    """model.adapter (preference from an SFT run) must not be output.dir or inside it: the run would start
    from the folder it writes, and output.overwrite would move the adapter away first."""
    start = getattr(recipe.model, "adapter", None)
    if not start or not Path(start).exists():
        return
    where, out = Path(start).resolve(), run.path.resolve()
    if where == out or out in where.parents:
        raise HfadaptError(
            f"model.adapter: {start} is inside output.dir {run.path}, which this run writes; "
            "give the run another output.dir (or name) than the run it starts from"
        )


def _starting_adapter(recipe: Recipe, task: Task, accelerator: Accelerator) -> Any:
    """model.adapter (a task-owned model field: preference), resolved as `hfadapt predict` resolves runs and
    checked against the base model; None when the recipe starts a fresh adapter."""
    ref = getattr(recipe.model, "adapter", None)
    if not ref:
        return None
    from hfadapt.modeling.models import starting_adapter
    from hfadapt.publishing.hub import resolve_run

    with accelerator.main_process_first():  # a Hub adapter is downloaded once
        try:
            run = resolve_run(ref)
        except HfadaptError as e:
            raise HfadaptError(f"model.adapter: {e}") from None
    start = starting_adapter(recipe, run, task)
    if start.note and accelerator.is_main_process:
        print(f"hfadapt: {start.note}")
    return start


def _add_model_columns(recipe: Recipe, task: Task, splits: Splits, model: Any, accelerator: Accelerator) -> None:
    """Columns the task computes with the prepared model before training (preference's precomputed
    reference log-probs), added to the in-memory splits the loaders read."""
    for name in ("train", "validation", "test"):
        ds = getattr(splits, name)
        if ds is not None:
            setattr(splits, name, task.add_model_columns(ds, name, model, splits.processor, recipe, accelerator))


def _setup_model(
    recipe: Recipe, task: Task, run: RunDir, splits: Splits, accelerator: Accelerator, total_steps: int, start: Any = None
) -> tuple[Any, int, int, str | None]:
    """The base model with the adapter applied (a fresh one, or model.adapter's `start` trained further);
    returns it with its trainable and total parameter counts and the model_type Liger's kernels were applied
    to (train.liger_kernel), or None."""
    from hfadapt.modeling.adapters import apply_adapter, continue_adapter, count_parameters
    from hfadapt.modeling.models import load_base_model

    saved_random_base = recipe.model.init == "config" and run.base_model_dir.is_dir()
    base_path = str(run.base_model_dir) if saved_random_base else (start.random_base if start is not None else None)
    model = load_base_model(recipe, task, splits.info, splits.processor, path=base_path)
    if recipe.model.init == "config" and not saved_random_base and accelerator.is_main_process:
        # Random weights: keep them, or the adapter could never be loaded onto its base again.
        model.save_pretrained(run.base_model_dir)
        splits.processor.save_pretrained(run.base_model_dir)
    liger = None
    if recipe.train.liger_kernel:  # on the plain transformers model, before peft wraps it (liger.py)
        from hfadapt.modeling.liger import apply as apply_liger, installed_version

        liger = apply_liger(model)
        if accelerator.is_main_process:
            print(f"hfadapt: train.liger_kernel: Liger kernels applied to {liger} (liger-kernel {installed_version()})")
    if recipe.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if start is not None:
        model = continue_adapter(model, start, reference=task.reference_adapter)
    else:
        model = apply_adapter(model, recipe, task, num_training_steps=total_steps)
    # audio: feature-encoder freeze, multi-label loss
    task.prepare_model(model.get_base_model() if hasattr(model, "get_base_model") else model, recipe)
    trainable, total = count_parameters(model)
    if trainable == 0:
        raise HfadaptError(f"adapter: {recipe.adapter.method} left no trainable parameters in {recipe.model.name_or_path}")
    return model, trainable, total, liger


def _setup_optimizer(recipe: Recipe, model: torch.nn.Module, total_steps: int, device: torch.device) -> tuple[Any, Any]:
    import torch
    from transformers import get_scheduler

    t = recipe.train
    # On a GPU, the fused AdamW kernel (one launch for all parameters), as HF Trainer's default there.
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=t.learning_rate, weight_decay=t.weight_decay,
        fused=True if device.type == "cuda" else None,
    )
    warmup = t.warmup_steps if t.warmup_steps is not None else int((t.warmup_ratio or 0.0) * total_steps)
    scheduler = get_scheduler(t.scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    return optimizer, scheduler


def _evaluator(recipe: Recipe, task: Task, run: RunDir, splits: Splits, accelerator: Accelerator, model: torch.nn.Module, split: str) -> Evaluator | None:
    from hfadapt.training.loaders import build_eval_loader

    dataset = splits.validation if split == "validation" else splits.test
    if dataset is None:
        return None
    built = build_eval_loader(recipe, task, dataset, splits.collate, accelerator)
    ctx = EvalContext(
        accelerator=accelerator, recipe=recipe, processor=splits.processor, info=splits.info, dataset=dataset,
        split=split, metric_names=tuple(recipe.eval.metrics or task.default_metrics(recipe)), run_dir=run.path,
        order=tuple(built.order) if built.order is not None else None,
    )
    return Evaluator(task, ctx, model, built.loader)


def _setup_state(accelerator: Accelerator, run: RunDir, checkpoint: Path | None, total_steps: int) -> TrainerState:
    from hfadapt.training.checkpoint import register_trainable_hooks

    register_trainable_hooks(accelerator)
    if checkpoint is None:
        return TrainerState(total_steps=total_steps)
    accelerator.load_state(str(checkpoint))
    state = TrainerState.from_json(run.checkpoint_state(checkpoint).to_json())
    state.total_steps = total_steps  # may have changed (train.epochs / max_steps); an early stop stays stopped
    return state


# ---- finish --------------------------------------------------------------------------------------
def _finish(recipe: Recipe, run: RunDir, session: Session, state: TrainerState, meter: Meter) -> TrainResult:
    """Best weights back, final evaluation (and test), the saved model, run info; then push."""
    from hfadapt.modeling.adapters import is_peft
    from hfadapt.rundir.runinfo import collect as collect_run_info
    from hfadapt.training.workers import run_workers

    accelerator = session.accelerator
    state.perf = meter.totals(accelerator, state.global_step)  # the loop's figures: before the final evaluation
    compile_figures = session.compiled.figures() if session.compiled is not None else {}
    unwrapped = accelerator.unwrap_model(session.model)
    if state.best_step is not None and run.best_weights.is_file():
        load_trainable(unwrapped, run.best_weights)
    final = RunMetrics(
        train={"loss": state.losses[-1] if state.losses else float("nan"), "steps": state.global_step},
        eval=session.validate(state.global_step, run.predictions_file) if session.validate is not None else {},
        test=session.test(state.global_step) if session.test is not None else {},
        best_step=state.best_step,
        perf={**figures(state.perf), **compile_figures},  # compile figures: this session's
    )
    accelerator.log({k: v for k, v in final.to_json().items() if not k.startswith("train/")}, step=state.global_step)
    accelerator.wait_for_everyone()
    weights = _gathered_weights(accelerator, session.model)  # every process: a collective when sharded
    if accelerator.is_main_process:
        _save_model(unwrapped, session.splits.processor, run, recipe, is_peft(recipe.adapter.method), weights)
        write_json_atomic(run.metrics_file, final.to_json())
        run_info = collect_run_info(
            accelerator, liger_kernel=session.liger is not None,
            num_workers=run_workers(recipe, TASKS.get(recipe.task), accelerator),
        )
        write_json_atomic(run.info_file, replace(run_info, reward_functions=_reward_function_hashes(recipe)).to_json())
        state.save(run.state_file)
        print(summary_line(final.perf))
        if session.compiled is not None:
            from hfadapt.training.compiling import summary as compile_summary

            print(compile_summary(compile_figures, session.compiled.failed))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if recipe.hub.push and accelerator.is_main_process:
        from hfadapt.publishing.hub import push

        push(run.path, recipe.hub.repo_id, private=recipe.hub.private, revision=recipe.hub.revision,
             commit_message=recipe.hub.commit_message)
    return TrainResult(run.path, final.to_json(), state)


def _keep_reward_files(recipe: Recipe, run: RunDir) -> None:
    """online-rl's `function` rewards: a copy in the run, found by its own recipe.yaml (resume, eval)."""
    if getattr(recipe, "rl", None) is None:
        return
    from hfadapt.tasks.rewards import keep_reward_files

    keep_reward_files(recipe, run.path)


def _reward_function_hashes(recipe: Recipe) -> dict[str, str]:
    """online-rl's `function` rewards (code the run executed): 'file.py:name' -> the file's sha256."""
    rl = getattr(recipe, "rl", None)
    if rl is None:
        return {}
    from hfadapt.tasks.rewards import function_file, sha256_file

    return {s.function: sha256_file(function_file(s, recipe)[0]) for s in rl.rewards if s.type == "function"}


def _gathered_weights(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, Any] | None:
    """The whole model's weights, gathered, when FSDP2 or ZeRO-3 shards them; None when every process
    holds them (save_pretrained then reads the model itself, as it always has).

    Accelerate's get_state_dict is the library's gather (FSDP2: torch's full state dict, offloaded to
    the CPU of process 0; ZeRO-3: the engine's 16-bit consolidation, which needs the config's
    zero3_save_16bit_model). Every process must call it."""
    from hfadapt.modeling.sharding import sharding

    if sharding(accelerator.unwrap_model(model)) is None:
        return None
    return accelerator.get_state_dict(model)


def _save_model(model: torch.nn.Module, processor: Processor, run: RunDir, recipe: Recipe, peft: bool, state_dict: dict[str, Any] | None = None) -> None:
    """Save the adapter (peft) or the whole model, plus the processor, into the run; main process only.

    `state_dict`: the gathered weights of a sharded model (_gathered_weights); peft picks the adapter's
    out of it, so the folder is a plain peft adapter whatever the sharding was."""
    target = run.saved_model_dir(peft)
    tmp = run.path / f".tmp-{target.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    if peft:
        if recipe.model.init == "config":
            # The base is the random model saved in the run; point the adapter at it.
            model.peft_config["default"].base_model_name_or_path = str(run.base_model_dir.resolve())
        # hfadapt never resizes embeddings: a head sized to new labels or a CTC vocabulary is saved through
        # modules_to_save, and peft's "vocab_size changed" guess would try to save input embeddings audio models lack.
        extra = {"state_dict": state_dict} if state_dict is not None else {}
        # model.adapter: only the trained adapter; the frozen reference copy is the starting run's
        model.save_pretrained(tmp, save_embedding_layers=False, selected_adapters=["default"], **extra)
        model.get_base_model().config.save_pretrained(tmp)  # id2label/label2id/problem_type for reloading
    else:
        model.save_pretrained(tmp, **({"state_dict": state_dict} if state_dict is not None else {}))
    processor.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


# ---- the run directory before training -------------------------------------------------------------
def _check_run_dir(run: RunDir, recipe: Recipe, resume: bool) -> Path | None:
    """Never silently overwrite a run; on resume, find the checkpoint and refuse a changed recipe."""
    run.check_output()
    if resume:
        checkpoint, notice = resumable_checkpoint(run.path)  # before anything in the run is rewritten
        if checkpoint is None:
            raise HfadaptError(no_checkpoint_message(run.path, recipe.train.save_steps))
        if run.is_run():
            saved = shed_foreign_fields(run.recipe_dict(lenient=False))  # as an older hfadapt wrote it
            changed = _differences(saved, recipe.to_dict())
            if changed:
                raise HfadaptError(
                    f"--resume: the recipe differs from the one {run.path} was started with at {', '.join(changed)}; "
                    "only train.epochs and train.max_steps may change"
                )
        if notice and int(os.environ.get("RANK", "0")) == 0:
            print(f"hfadapt: {notice}", file=sys.stderr)
        return checkpoint
    if run.is_started() and not recipe.output.overwrite:
        raise HfadaptError(
            f"output.dir: {run.path} already holds a run; pass --resume to continue it, "
            "set output.overwrite=true to replace it, or choose another output.dir"
        )
    return None


@contextmanager
def _kept_unless_setup_fails(run: RunDir, replace: bool, is_main: bool) -> Iterator[None]:
    """Setup may fail on the user's data or model; then the run directory is as it was before.

    A new run directory is removed again. With output.overwrite, the previous run is moved aside
    first and deleted only once setup has succeeded; a failed setup puts it back.
    """
    main = is_main
    created = not run.path.exists()
    aside = None
    if replace and run.is_started():
        aside, created = run.path.with_name(f".{run.path.name}.replaced"), True
        if main:
            import tempfile

            # a fresh name beside the run: never a folder of the user's that happens to be called .NAME.replaced
            aside = Path(tempfile.mkdtemp(prefix=f".{run.path.name}.replaced-", dir=run.path.parent))
            os.replace(run.path, aside)  # onto the empty folder just made
    try:
        yield
    except BaseException:
        if main and created:
            shutil.rmtree(run.path, ignore_errors=True)
        if main and aside is not None:
            os.replace(aside, run.path)
        raise
    if main and aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _differences(a: Any, b: Any, path: tuple[str, ...] = ()) -> list[str]:
    if path in RESUMABLE_CHANGES:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _differences(a.get(k), b.get(k), path + (k,))
        return out
    return [] if a == b else [".".join(path)]


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
