"""`hfadapt runs [DIR]`: a table of the runs under a folder (runs/ by default).

A run is a folder with a recipe.yaml; its state comes from what it holds, never from its name:
  * finished     metrics.json and the saved adapter (or model) are there
  * failed       training raised after setup (status.json says so, with the error and step)
  * pruned       hfadapt tune stopped the trial (status.json holds the reason)
  * running      status.json names a live process on this host
  * interrupted  anything else (killed, power loss): resumable when a complete checkpoint exists
Reads files only: no torch, no model loading.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from typing import Any

from hfadapt.rundir.layout import RECIPE_FILE, RunDir, RunMetrics, RunState
from hfadapt.rundir.status import process_alive
from hfadapt.tasks.base import tracked_metric

COLUMNS = ("name", "task", "base", "method", "trainable", "best", "steps", "time", "state")


def find_runs(root: Path) -> list[Path]:
    """Folders under `root` (or `root` itself) holding a recipe.yaml; a run's own subfolders are not searched."""
    root = Path(root)
    if RunDir(root).is_run():
        return [root]
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if RECIPE_FILE in filenames and dirpath != str(root):
            found.append(Path(dirpath))
            dirnames[:] = []
    return sorted(found)


def describe(path: Path, root: Path | None = None) -> dict[str, Any]:
    """One run as a plain dict (what `--json` prints). A corrupt file reads as absent: one broken run
    must not hide the others."""
    run = RunDir(path)
    recipe = run.recipe_dict()
    model, adapter, ev = (recipe.get(k) or {} for k in ("model", "adapter", "eval"))
    metrics = run.read_metrics(lenient=True)
    status = run.read_status()
    checkpoints = run.checkpoints()
    finished = bool(metrics) and run.has_saved_model()
    found = run.latest_state(lenient=True) if finished else (run.checkpoint_state(checkpoints[-1], lenient=True) if checkpoints else None)
    state = found or RunState()

    if finished:
        what = "finished"
    elif status.state in ("failed", "pruned"):
        what = status.state
    elif status.state == "running" and status.host == socket.gethostname() and process_alive(int(status.pid or 0)):
        what = "running"
    else:
        what = "interrupted"
    resumable = checkpoints[-1].name if checkpoints and not finished and what != "pruned" else None

    trainable, total = status.trainable, status.total
    best_key = tracked_metric(recipe.get("task"), ev.get("best_metric"))
    best_value, best_step = state.best_metric, state.best_step
    if best_value is None:  # no eval.best_metric: the first metric of the last evaluation
        last = _last_eval(metrics, state)
        if last:
            best_key, best_value, best_step = last
    wall = metrics.perf.get("train_time_s", state.perf.get("wall_s"))
    return {
        "name": str(path.relative_to(root)) if root and path != root and path.is_relative_to(root) else path.name,
        "path": str(path),
        "task": recipe.get("task"),
        "base": model.get("name_or_path"),
        "method": adapter.get("method"),
        "trainable_params": trainable,
        "total_params": total,
        "trainable_share": trainable / total if trainable and total else None,
        "best_metric": best_key,
        "best_value": best_value,
        "best_step": best_step,
        "step": state.global_step if found is not None else status.step,
        "total_steps": state.total_steps if found is not None else status.total_steps,
        "train_time_s": wall,
        "state": what,
        "resumable_from": resumable,
        "error": status.error if what in ("failed", "pruned") else None,
        "metrics": {f"eval/{k}": v for k, v in metrics.eval.items()},
    }


def _last_eval(metrics: RunMetrics, state: RunState) -> tuple[str, float, int | None] | None:
    evals, step = metrics.eval, state.global_step
    if not evals:
        logged = state.evaluations()
        if not logged:
            return None
        evals, step = logged[-1].values, logged[-1].step
    for key, value in evals.items():
        if key not in ("loss", "samples", "tokens") and isinstance(value, (int, float)):
            return key, value, step
    return ("loss", evals["loss"], step) if "loss" in evals else None


def metric_value(run: dict[str, Any], name: str) -> float | None:
    """A run's final value of eval metric `name` (or its best value when that is the tracked metric)."""
    name = name.removeprefix("eval/")
    value = run["metrics"].get(f"eval/{name}")
    if value is None and run.get("best_metric") == name:
        value = run.get("best_value")
    return value if isinstance(value, (int, float)) and not math.isnan(value) else None


def sort_runs(runs: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Best first by `metric` (direction from the metric: loss and mse ascend); runs without it last."""
    from hfadapt.metrics import lower_is_better

    name = metric.removeprefix("eval/")
    sign = 1 if lower_is_better(name) else -1
    have = [r for r in runs if metric_value(r, name) is not None]
    lack = [r for r in runs if metric_value(r, name) is None]
    if runs and not have:  # a typo would otherwise print the table unsorted without a word
        from hfadapt.core.errors import HfadaptError

        known = sorted({k.removeprefix("eval/") for r in runs for k in r["metrics"]} | {r["best_metric"] for r in runs if r.get("best_metric")})
        raise HfadaptError(f"runs --sort: no run has the metric '{metric}'; metrics these runs have: {', '.join(known) or 'none yet'}")
    return sorted(have, key=lambda r: sign * metric_value(r, name)) + lack


def list_runs(root: str | Path = "runs", sort: str | None = None) -> list[dict[str, Any]]:
    root = Path(root)
    runs = [describe(p, root) for p in find_runs(root)]
    return sort_runs(runs, sort) if sort else runs


def _cells(run: dict[str, Any]) -> list[str]:
    base = run["base"] or "?"
    if os.sep in base and Path(base).is_absolute():
        base = Path(base).name  # a local folder: its name is enough in a table
    share = f"{100 * run['trainable_share']:.2f}%" if run["trainable_share"] is not None else "-"
    best = "-"
    if run["best_value"] is not None:
        best = f"{run['best_metric']} {run['best_value']:.4g}" + (f" @{run['best_step']}" if run["best_step"] is not None else "")
    steps = f"{run['step'] if run['step'] is not None else '?'}/{run['total_steps'] if run['total_steps'] is not None else '?'}"
    time = _duration(run["train_time_s"]) if run["train_time_s"] is not None else "-"
    state = run["state"]
    if run["resumable_from"]:
        state += f" (resume from {run['resumable_from']})"
    elif state == "interrupted":
        state += " (no checkpoint)"
    if run["error"]:
        state += f": {run['error'][:60]}"
    return [run["name"], run["task"] or "?", base, run["method"] or "?", share, best, steps, time, state]


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, s = divmod(int(round(seconds)), 60)
    return f"{minutes}m{s:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def format_table(runs: list[dict[str, Any]]) -> str:
    rows = [list(COLUMNS)] + [_cells(r) for r in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)
