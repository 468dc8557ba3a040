"""`hfadapt report RUN`: one self-contained HTML page about a run.

Works offline: plots are inline base64 PNGs drawn with matplotlib (Agg backend), styles inline,
no scripts. Reads only files of the run directory (or of a pulled Hub adapter: what `push`
carries): recipe.yaml, metrics.json, trainer_state.json (or the latest checkpoint's),
run_info.json, status.json, eval_predictions.jsonl and generations.jsonl.

The page: summary, speed and memory, training loss and learning rate, evaluation metrics over
steps with the best step marked, the task's own section, the final metrics, the resolved recipe
and run info.

The task section is the task's own (`Task.report_section(ReportInput) -> str`, HTML; the
contract's default lists the final evaluation), so a task registered later always gets a report.
The HTML parts shared with the task sections live in hfadapt.tasks.reporting.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfadapt.core.errors import HfadaptError
from hfadapt.rundir.layout import RECIPE_FILE, RunDir, RunInfo, RunMetrics, RunState, RunStatus
from hfadapt.tasks.base import tracked_metric
from hfadapt.tasks.reporting import ReportInput, generic_section
from hfadapt.tasks.reporting import e as _e, fmt as _fmt, img as _img, metric_table as _metric_table, plt as _plt, value_cell as _value_cell

SKIP_CURVES = ("samples", "tokens")  # counts, not scores: no curve


@dataclass
class ReportData:
    """What a report reads from a run directory (through RunDir, its one reader)."""

    path: Path
    task: str  # the recipe's task name
    recipe: Any  # the Recipe, or None when it does not load (an unknown task: the page still renders)
    recipe_text: str
    metrics: RunMetrics
    state: RunState  # the run's trainer state, or its latest checkpoint's; empty before the first
    info: RunInfo | None  # None without run_info.json
    status: RunStatus
    predictions: list[dict[str, Any]] = field(default_factory=list)
    generations: list[dict[str, Any]] = field(default_factory=list)

    def split(self, name: str) -> dict[str, Any]:
        """The final figures of one split ("eval", "test", "perf", "train"), without the prefix."""
        return self.metrics.split(name)


def load(path: Path, from_hub: bool = False) -> ReportData:
    run = RunDir(path)
    run.from_hub = from_hub
    if not run.is_run():
        raise HfadaptError(f"{path}: not an hfadapt run (no {RECIPE_FILE})")
    try:
        recipe = run.recipe
        task = recipe.task
    except HfadaptError:  # e.g. a task this installation lacks: the page still shows what the files say
        recipe = None
        task = str(run.recipe_dict().get("task", "?"))
    # Corrupt files read as absent: the page shows what the others say.
    return ReportData(
        path=path, task=task, recipe=recipe, recipe_text=run.recipe_text(), metrics=run.read_metrics(lenient=True),
        state=run.latest_state(lenient=True) or RunState(), info=run.read_info(lenient=True) if run.has_info() else None,
        status=run.read_status(), predictions=run.read_predictions(), generations=run.read_generations(),
    )


def write_report(ref: str | Path, out: str | Path | None = None, base_model: str | None = None) -> Path:
    """Render the report of a run directory or Hub adapter id; returns the file written.

    The report loads no weights, so a pulled adapter of an unpublished local base needs no base here;
    `base_model` (`--base-model`, as for predict/eval/merge) names it on the page instead of the placeholder.
    """
    ref = str(ref)
    if base_model is not None:
        from hfadapt.modeling.models import check_base_model

        base_model = check_base_model(base_model)
    if Path(ref).exists():
        from hfadapt.tuning.study import is_study

        if is_study(ref):  # an `hfadapt tune` study: its own page
            from hfadapt.insight.study_report import write_study_report

            return write_study_report(ref, out, run_report=write_report, css=CSS)
        data = load(Path(ref))
        target = Path(out) if out else Path(ref) / "report.html"
    else:
        from hfadapt.publishing.hub import resolve_run

        run = resolve_run(ref)
        data = load(run.path, from_hub=True)
        target = Path(out) if out else Path(f"{ref.removeprefix('hub:').replace('/', '--')}-report.html")
    if base_model is not None and data.recipe is not None:
        data.recipe.model.name_or_path = base_model
    page = render(data, title=ref)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target


# ---- the task's section ---------------------------------------------------------------------------
def task_section(data: ReportData) -> str:
    """The task's own section (Task.report_section); the generic one where the recipe does not load or
    names a task this installation lacks."""
    from hfadapt.tasks import TASKS

    if data.recipe is None or data.task not in TASKS:
        return generic_section(data.split("eval"))
    report = ReportInput(recipe=data.recipe, metrics=data.metrics, predictions=data.predictions, generations=data.generations,
                         evaluations=[(r.step, r.values) for r in data.state.evaluations()])
    return TASKS.get(data.task).report_section(report)


# ---- plots --------------------------------------------------------------------------------------
def _training_plot(data: ReportData) -> str:
    losses = data.state.losses
    lrs = data.state.learning_rates()
    if not losses:
        return "<p class=note>No training steps recorded.</p>"
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.4))
    steps = list(range(1, len(losses) + 1))
    a.plot(steps, losses, lw=1, alpha=0.5, label="per step")
    if len(losses) >= 10:
        k = max(5, len(losses) // 20)
        smooth = [sum(losses[max(0, i - k + 1): i + 1]) / len(losses[max(0, i - k + 1): i + 1]) for i in range(len(losses))]
        a.plot(steps, smooth, lw=2, label=f"mean of {k}")
        a.legend(fontsize=8)
    a.set_xlabel("optimizer step")
    a.set_title("training loss")
    if lrs:
        b.plot([s for s, _ in lrs], [v for _, v in lrs], color="tab:green")
        b.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    b.set_xlabel("optimizer step")
    b.set_title("learning rate")
    return _img(fig)


def _eval_plot(data: ReportData) -> str:
    history = data.state.evaluations()
    keys = sorted({k for h in history for k, v in h.values.items() if k not in SKIP_CURVES and isinstance(v, (int, float))})
    if not history or not keys:
        return "<p class=note>No evaluation during training (set train.eval_steps to follow the metrics over steps).</p>"
    keys = [k for k in keys if "/" not in k][:8] or keys[:8]  # per-entity breakdowns live in the task section
    best_step = data.state.best_step
    best_key = tracked_metric(data.recipe.task, data.recipe.eval.best_metric) if data.recipe is not None else None
    plt = _plt()
    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(h.step, h.values[key]) for h in history if key in h.values]
        ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o", ms=3)
        if best_step is not None:
            ax.axvline(best_step, color="tab:red", ls="--", lw=1)
            at = [v for s, v in pts if s == best_step]
            if at:
                ax.plot([best_step], at, marker="*", ms=12, color="tab:red" if key == best_key else "tab:orange")
        ax.set_title(key + (" (tracked)" if key == best_key else ""), fontsize=10)
        ax.set_xlabel("step", fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    note = f"<p class=note>Dashed line: best step {best_step}" + (f" by {best_key}" if best_key else "") + ".</p>" if best_step is not None else ""
    return _img(fig) + note


# ---- tables -------------------------------------------------------------------------------------
PERF_LABELS = {
    "train_time_s": "training wall time (s)",
    "samples": "examples seen",
    "samples_per_s": "examples / s",
    "steps_per_s": "optimizer steps / s",
    "tokens": "tokens (non-pad)",
    "tokens_per_s": "tokens / s",
    "audio_seconds": "seconds of audio (raw-waveform models)",
    "audio_seconds_per_s": "seconds of audio / s",
    "model_share": "time in the model (forward, backward, optimizer)",
    "data_share": "time waiting for data",
    "eval_share": "time in evaluation",
    "checkpoint_share": "time saving checkpoints",
    "peak_rss_mb": "peak process memory (RSS, MiB)",
    "sessions": "training sessions (1 + resumes)",
}


def _perf_section(data: ReportData) -> str:
    perf = data.split("perf")
    if not perf:
        return "<p class=note>No speed figures (the run did not finish, or it predates them).</p>"
    rows = []
    order = {k: i for i, k in enumerate(PERF_LABELS)}
    for k, v in sorted(perf.items(), key=lambda kv: order.get(kv[0], len(order))):
        label = PERF_LABELS.get(k) or (f"peak CUDA memory allocated, process {k.rsplit('_', 1)[-1]} (MiB)" if k.startswith("peak_cuda_mb_") else k.replace("_", " "))
        shown = _value_cell(f"perf/{k}", v)
        if k.endswith("_share"):
            shown = shown.replace(f">{_fmt(v)}<", f">{100 * v:.1f}%<")
        rows.append(f"<tr><td>{_e(label)}</td>{shown}</tr>")
    table = "<table class=perf><tr><th>figure</th><th>value</th></tr>" + "".join(rows) + "</table>"
    shares = [(n, perf.get(f"{n}_share", 0.0)) for n in ("data", "model", "eval", "checkpoint")]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 1.3))
    left = 0.0
    for (name, share), color in zip(shares, ("tab:orange", "tab:blue", "tab:green", "tab:grey")):
        ax.barh([0], [share], left=left, color=color, label=f"{name} {100 * share:.0f}%")
        left += share
    ax.set_xlim(0, 1)
    ax.set_yticks([])
    ax.set_xticks([])
    ax.legend(ncol=4, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), frameon=False)
    ax.set_title("where the training time went", fontsize=10)
    return f"<div class=row>{table}{_img(fig)}</div>"


def _info_section(data: ReportData) -> str:
    info = data.info
    if info is None:
        return "<p class=note>No run_info.json.</p>"
    rows = [("hardware", info.hardware), ("processes", info.num_processes), ("distributed", info.distributed_type),
            ("mixed precision", info.mixed_precision), ("python", info.python), ("command", info.command or "(from Python)")]
    rows += [(name, version) for name, version in (info.versions or {}).items()]
    return "<table>" + "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"


def _summary(data: ReportData) -> str:
    r = data.recipe
    st = data.state
    status = data.status.state or ("finished" if data.metrics else "unknown")
    trainable, total = data.status.trainable, data.status.total
    items = [
        ("task", data.task),
        ("base model", r.model.name_or_path if r is not None else "?"),
        ("adapter", r.adapter.method if r is not None else "?"),
        ("trainable parameters", f"{trainable:,} / {total:,} ({100 * trainable / total:.3f}%)" if trainable and total else "-"),
        ("steps", f"{st.global_step} / {st.total_steps or '?'}" + (" (stopped early)" if st.stopped_early else "")),
        ("state", status + (f": {data.status.error}" if data.status.error else "")),
    ]
    if st.best_step is not None and st.best_metric is not None:
        name = (tracked_metric(r.task, r.eval.best_metric) if r is not None else None) or "metric"
        items.append(("best", f"{name} = {st.best_metric:.4g} at step {st.best_step}"))
    return "<table class=summary>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items) + "</table>"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1150px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
h3{margin-bottom:.4em} .sub{color:#666;margin-top:0} .note{color:#666;font-style:italic}
table{border-collapse:collapse;margin:.5em 1.5em .5em 0;font-size:.92em;vertical-align:top}
td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left} th{background:#f5f5f5}
td[data-value]{text-align:right;font-variant-numeric:tabular-nums}
table.confusion td{text-align:right;min-width:3em} td.diag{background:#e8f1fb;font-weight:600}
table.mistakes td:nth-child(2),table.gen td{max-width:38em} tr.total td{font-weight:600}
.row{display:flex;flex-wrap:wrap;align-items:flex-start;gap:1em} img{max-width:100%}
pre{background:#f7f7f7;border:1px solid #e3e3e3;padding:.8em;overflow:auto;font-size:.85em}
"""


def render(data: ReportData, title: str | None = None) -> str:
    name = data.recipe.run_name if data.recipe is not None else data.path.name
    evals, tests = data.split("eval"), data.split("test")
    finals = _metric_table(evals, "eval") if evals else "<p class=note>No final evaluation.</p>"
    if tests:
        finals += _metric_table(tests, "test")
    parts = [
        f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>hfadapt report: {_e(name)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(name)}</h1><p class=sub>hfadapt run report for {_e(title or data.path)} &middot; generated {time.strftime('%Y-%m-%d %H:%M')}</p>",
        _summary(data),
        "<h2>Training</h2>", _training_plot(data),
        "<h2>Evaluation over steps</h2>", _eval_plot(data),
        f"<h2>{_e(data.task)}</h2>", task_section(data),
        "<h2>Final metrics</h2><div class=row>", finals, "</div>",
        "<h2>Speed and memory</h2>", _perf_section(data),
        "<h2>Recipe</h2>", f"<pre>{_e(data.recipe_text)}</pre>",
        "<h2>Run info</h2>", _info_section(data),
        "</body></html>",
    ]
    return "\n".join(parts)
