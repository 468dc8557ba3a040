"""The training loop: plain Accelerate, readable top to bottom.

Everything is built by training.py; this file only steps, logs, evaluates and checkpoints.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from hfadapt import metrics
from hfadapt.training.checkpoint import TrainerState, save_checkpoint, save_trainable, write_json_atomic
from hfadapt.rundir.layout import RunDir
from hfadapt.training.throughput import Meter

if TYPE_CHECKING:
    from accelerate import Accelerator
    from torch import Tensor


@dataclass
class LoopParts:
    """What the loop works with, prepared by Accelerate."""

    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any
    make_train_loader: Callable[[int], Any]  # epoch -> that epoch's prepared dataloader (fixed shuffle)
    evaluate: Callable[[int], dict[str, float]] | None  # optimizer step -> validation results
    run: RunDir
    on_step_end: Callable[[Any, TrainerState], None] | None = None  # the adapter method's after_optimizer_step hook
    meter: Meter | None = None  # throughput: examples, units and where the time goes (throughput.py)
    compiled: Any = None  # train.compile: a compiling.CompiledForward for the training forward, or None
    training_loss: Callable[[Any, dict], tuple[Any, dict[str, Any]]] | None = None  # (model, batch) -> (loss, figures): Task.training_loss
    default_best_metric: str | None = None  # Task.default_best_metric: eval.best_metric when the recipe leaves it unset
    rollout: Callable[[Any, dict, int], list[dict]] | None = None  # (model, loader batch, step) -> micro-batches: Task.rollout (online-rl)
    stop_requested: Callable[[], bool] | None = None  # SIGTERM arrived (coordinator.sigterm_stops): checkpoint and stop


class StopRequested(KeyboardInterrupt):
    """The run was asked to stop (SIGTERM): a checkpoint of the step reached is saved, the run reads as
    interrupted and resumes with --resume. A KeyboardInterrupt, so status and exit are an interruption's."""

    exit_code = 143  # 128 + SIGTERM, what a shell reports for a terminated process


def fit(parts: LoopParts, recipe: Any, state: TrainerState, steps_per_epoch: int, callbacks: list[Callable] = ()) -> TrainerState:
    import torch
    from accelerate.data_loader import skip_first_batches
    from tqdm.auto import tqdm

    t = recipe.train
    acc, model, optimizer, scheduler = parts.accelerator, parts.model, parts.optimizer, parts.scheduler
    best_metric = recipe.eval.best_metric or (parts.default_best_metric if parts.evaluate is not None else None)
    greater = recipe.eval.greater_is_better
    if greater is None and best_metric is not None:
        greater = not metrics.lower_is_better(best_metric)
    num_epochs = math.ceil(state.total_steps / steps_per_epoch)

    progress = tqdm(total=state.total_steps, initial=state.global_step, disable=not acc.is_local_main_process, desc="train")
    model.train()
    micro_losses: list[Any] = []
    micro_logs: list[dict[str, Any]] = []
    training_loss = parts.training_loss or (lambda m, b: (m(**b).loss, {}))
    compiled = parts.compiled
    meter = parts.meter if parts.meter is not None else Meter(base=state.perf)
    meter.start(state.global_step)
    while state.epoch < num_epochs and state.global_step < state.total_steps and not state.stopped_early:
        loader = parts.make_train_loader(state.epoch)
        if state.batches_in_epoch:  # resumed mid-epoch: the same order, minus what was already seen
            loader = skip_first_batches(loader, state.batches_in_epoch)
        for batch, first, last in _micro_batches(parts, meter, loader, state):
            mark = compiled.start() if compiled is not None else None
            with acc.accumulate(model):
                loss, figures = training_loss(compiled or model, batch)
                acc.backward(loss)
                if acc.sync_gradients and t.max_grad_norm is not None:
                    acc.clip_grad_norm_(model.parameters(), t.max_grad_norm)
                optimizer.step()
                if acc.sync_gradients:
                    scheduler.step()
                    if parts.on_step_end is not None:
                        parts.on_step_end(model, state)
                optimizer.zero_grad()
            if mark is not None:
                compiled.stop(mark)
            micro_losses.append(loss.detach())
            if figures:
                micro_logs.append({k: v.detach().float() for k, v in figures.items()})
            if first:  # a rollout's later updates reuse its prompts: counted once
                meter.count(batch)
            if last:  # resume skips loader batches
                state.batches_in_epoch += 1
            if not acc.sync_gradients:
                continue

            # ---- one optimizer step done ----
            state.global_step += 1
            step_loss = acc.reduce(torch.stack(micro_losses).mean(), reduction="mean").item()
            micro_losses = []
            step_figures = _step_figures(acc, micro_logs)
            micro_logs = []
            state.losses.append(step_loss)
            progress.update(1)
            if state.global_step % t.logging_steps == 0 or state.global_step == state.total_steps:
                logs = {"train/loss": step_loss, "train/lr": scheduler.get_last_lr()[0], "train/epoch": state.epoch}
                logs.update({f"train/{k}": v for k, v in step_figures.items()})
                acc.log(logs, step=state.global_step)
                state.log_history.append({"step": state.global_step, **logs})
                _append_live(parts, {"step": state.global_step, "total_steps": state.total_steps, **logs})
                progress.set_postfix(loss=f"{step_loss:.4f}")
            if parts.evaluate is not None and t.eval_steps and state.global_step % t.eval_steps == 0:
                with meter.timed("eval"):
                    _evaluate_and_track(parts, state, best_metric, greater, t.early_stopping_patience)
            if t.save_steps and state.global_step % t.save_steps == 0:
                with meter.timed("checkpoint"):
                    state.perf = meter.totals(acc, state.global_step)  # a resumed run continues these
                    save_checkpoint(acc, parts.run.path, state, t.save_total_limit)
            for cb in callbacks:
                cb(state)
            # a rollout's updates are one unit for resume (its loader batch counts when the last is done)
            if last and parts.stop_requested is not None and _agreed(acc, parts.stop_requested()):
                if not (t.save_steps and state.global_step % t.save_steps == 0):
                    state.perf = meter.totals(acc, state.global_step)
                    save_checkpoint(acc, parts.run.path, state, t.save_total_limit)
                progress.close()
                raise StopRequested(
                    f"stopped at step {state.global_step}/{state.total_steps}; checkpoint-{state.global_step} saved; "
                    f"continue with `hfadapt train {parts.run.recipe_file} --resume`"
                )
            if state.global_step >= state.total_steps or state.stopped_early:
                break
        else:
            state.epoch += 1
            state.batches_in_epoch = 0
            continue
        break
    progress.close()
    return state


def _micro_batches(parts: LoopParts, meter: Meter, loader: Any, state: TrainerState) -> Any:
    """(micro-batch, first of its loader batch, last of it): the loader's batches, or what the task's
    rollout makes of each (generation timed as "generate")."""
    for batch in meter.batches(loader):  # times the wait for each batch
        if parts.rollout is None:
            yield batch, True, True
            continue
        with meter.timed("generate"):
            micro = parts.rollout(parts.model, batch, state.global_step)
        for i, m in enumerate(micro):
            yield m, i == 0, i == len(micro) - 1


def _evaluate_and_track(parts: LoopParts, state: TrainerState, key: str | None, greater: bool | None, patience: int | None) -> None:
    acc = parts.accelerator
    results = parts.evaluate(state.global_step)  # type: ignore[misc]
    logs = state.record_evaluation(state.global_step, results)
    acc.log(logs, step=state.global_step)
    _append_live(parts, {"step": state.global_step, **logs})
    if key is None:
        return
    value = results[key]
    improved = state.best_metric is None or (value > state.best_metric if greater else value < state.best_metric)
    if improved:
        state.best_metric, state.best_step, state.evals_without_improvement = value, state.global_step, 0
        if acc.is_main_process:
            parts.run.best_dir.mkdir(exist_ok=True)
        # Every process: a sharded model's weights are gathered collectively; the main one writes.
        save_trainable(acc.unwrap_model(parts.model), parts.run.best_weights, main=acc.is_main_process)
        if acc.is_main_process:
            write_json_atomic(parts.run.best_info_file, {"step": state.global_step, key: value})
        acc.wait_for_everyone()
    else:
        state.evals_without_improvement += 1
        if patience is not None and state.evals_without_improvement >= patience:
            state.stopped_early = True


def _append_live(parts: LoopParts, entry: dict[str, Any]) -> None:
    """One line of train_log.jsonl (main process), flushed at once so a watcher sees it; never fails a run."""
    if not parts.accelerator.is_main_process:
        return
    try:
        with open(parts.run.live_log_file, "a", encoding="utf-8") as f:
            f.write(json.dumps({**entry, "time": round(time.time(), 3)}, default=float) + "\n")
    except OSError:
        pass


def _agreed(acc: Accelerator, mine: bool) -> bool:
    """Whether any process was asked to stop: all of them stop at the same step (the checkpoint is collective)."""
    if acc.num_processes == 1:
        return mine
    import torch

    return acc.reduce(torch.tensor(float(mine), device=acc.device), reduction="sum").item() > 0


def _step_figures(acc: Accelerator, micro_logs: list[dict[str, Tensor]]) -> dict[str, float]:
    """A task's training figures of one step: the mean over micro-batches and processes of the values
    that exist. A micro-batch may have none for a figure (NaN: KTO's rejected rewards when it holds
    no undesirable row); a figure no micro-batch of the step had is left out, not logged as NaN."""
    import torch

    out = {}
    for key in micro_logs[0] if micro_logs else {}:
        values = torch.stack([m[key] for m in micro_logs])
        present = ~torch.isnan(values)
        total = acc.reduce(torch.where(present, values, torch.zeros_like(values)).sum(), reduction="sum")
        count = acc.reduce(present.sum().float(), reduction="sum")
        if count.item() > 0:
            out[key] = (total / count).item()
    return out
