"""One trial: the sampled values written into the recipe and validated, the memory plan checked,
then an ordinary `train` run under <study>/trial-NNN whose evaluations report to the pruner."""

from __future__ import annotations

import math
import os
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfadapt.core.errors import HfadaptError, first_line
from hfadapt.core.recipe import Recipe, shed_foreign_fields
from hfadapt.core.search import SearchSection, parse_bytes
from hfadapt.rundir.layout import RunDir
from hfadapt.rundir.status import RunPruned, write_status

if TYPE_CHECKING:
    import optuna

    from hfadapt.training.checkpoint import TrainerState


@dataclass
class Outcome:
    """How a trial ended: "complete" (with the objective's value), "pruned" or "failed" (with why)."""

    state: str
    value: float | None = None
    reason: str | None = None
    seconds_in_train: float = 0.0  # wall time inside train(): the rest of a trial is the study's overhead


def trial_dir(study_dir: Path, number: int) -> Path:
    return study_dir / f"trial-{number:03d}"


def trial_recipe(base: Recipe, values: dict[str, Any], number: int, study_dir: Path) -> Recipe:
    """The base recipe with the trial's values, as its own run; HfadaptError when it is invalid."""
    raw = base.to_dict()
    raw["search"] = None
    if "adapter.method" in values:  # another method: the base method's own fields do not apply to it
        raw["adapter"]["method"] = values["adapter.method"]
        raw = shed_foreign_fields(raw)
    for key, value in values.items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    raw["name"] = f"{base.run_name}-trial-{number:03d}"
    raw["output"] = {"dir": str(trial_dir(study_dir, number)), "overwrite": False}
    return Recipe.from_dict(raw)


def memory_problem(recipe: Recipe, device_memory: str | None) -> str | None:
    """Why `hfadapt plan` says the recipe will not fit one device, or None (also when it can't plan)."""
    from hfadapt.training.plan import plan_recipe

    try:
        plan = plan_recipe(recipe)
    except HfadaptError:
        return None  # the plan is advice; training reports a model it can't build
    need = plan.per_device("qlora" if recipe.model.quantization != "none" else "single")
    limit, device = available_memory(device_memory)
    if need <= limit:
        return None
    return f"hfadapt plan: ~{need / 2**20:,.0f} MiB per device, more than the {limit / 2**20:,.0f} MiB of {device}"


def available_memory(device_memory: str | None) -> tuple[int, str]:
    """Bytes one trial may plan for, and what they are: search.device_memory, the GPU's, or the RAM."""
    if device_memory is not None:
        return parse_bytes(device_memory), "search.device_memory"
    import torch

    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).total_memory, f"cuda:{index}"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's memory"


class PruningReporter:
    """A training callback: at each evaluation, the objective goes to the trial; a diverged run
    (a loss or the objective not finite) or one the pruner drops stops as pruned."""

    def __init__(self, trial: optuna.Trial, metric: str, eval_steps: int | None, pruner: str, divergence: float | None) -> None:
        self.trial, self.metric, self.eval_steps, self.pruner, self.divergence = trial, metric, eval_steps, pruner, divergence

    def __call__(self, state: TrainerState) -> None:
        step = state.global_step
        if not self.eval_steps or step % self.eval_steps:
            return
        evaluation = next((e for e in reversed(state.evaluations()) if e.step == step), None)
        if evaluation is None or self.metric not in evaluation.values:
            return
        value = float(evaluation.values[self.metric])
        recent = state.losses[-self.eval_steps:]
        mean = sum(recent) / len(recent)
        if not math.isfinite(value) or not math.isfinite(mean) or (
            self.divergence is not None and mean > self.divergence * state.losses[0] > 0
        ):
            raise RunPruned(
                f"diverged by step {step}: training loss {mean:.4g} since the last evaluation (first step {state.losses[0]:.4g}), "
                f"{self.metric} {value:.4g}"
            )
        self.trial.report(value, step)
        if self.trial.should_prune():
            raise RunPruned(f"pruned by the {self.pruner} pruner at step {step}: {self.metric} {value:.4g}")


def run_trial(trial: optuna.Trial, recipe: Recipe, metric: str, search: SearchSection, log: Path) -> Outcome:
    """Train one sampled recipe (already validated); its output goes to `log`, not the terminal."""
    import time

    from hfadapt.training.coordinator import train

    run = RunDir(recipe.output_dir)
    reporter = PruningReporter(trial, metric, recipe.train.eval_steps, search.pruner.type, search.pruner.divergence)
    with open(log, "w", encoding="utf-8") as out, redirect_stdout(out), redirect_stderr(out):
        why = memory_problem(recipe, search.device_memory)
        if why is not None:  # listed by `hfadapt runs` as pruned, with the reason; no model was loaded
            run.path.mkdir(parents=True, exist_ok=True)
            run.recipe_file.write_text(recipe.to_yaml())
            write_status(run.path, "pruned", True, step=0, error=why)
            return Outcome("pruned", reason=why)
        start = time.perf_counter()
        try:
            result = train(recipe, callbacks=[reporter])
            seconds = time.perf_counter() - start
        except RunPruned as e:
            return Outcome("pruned", reason=e.reason, seconds_in_train=time.perf_counter() - start)
        except Exception as e:  # noqa: BLE001 - a trial's failure is recorded with its reason; the study goes on
            why = e if isinstance(e, HfadaptError) else f"{type(e).__name__}: {first_line(e)}"
            return Outcome("failed", reason=str(why), seconds_in_train=time.perf_counter() - start)
    value = result.metrics.get(f"eval/{metric}")
    if value is None or not math.isfinite(value):
        return Outcome("failed", reason=f"the final evaluation gave {metric}={value}", seconds_in_train=seconds)
    return Outcome("complete", value=float(value), seconds_in_train=seconds)
