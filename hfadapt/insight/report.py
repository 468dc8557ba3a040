"""`hfadapt report RUN`: one self-contained HTML page about a run.

Works offline: plots are inline base64 PNGs drawn with matplotlib (Agg backend), styles inline,
no scripts. Reads only files of the run directory (or of a pulled Hub adapter: what `push`
carries): recipe.yaml, metrics.json, trainer_state.json (or the latest checkpoint's),
run_info.json, status.json, eval_predictions.jsonl and generations.jsonl.

The page: summary, speed and memory, training loss and learning rate, evaluation metrics over
steps with the best step marked, the task's own section, the final metrics, the resolved recipe
and run info.

The task section: a task object's own `report_section(data: ReportData) -> str` (HTML) wins;
otherwise a function registered here with `@section("task-name")`; otherwise a generic section
listing the final evaluation. A task registered later thus always gets a report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hfadapt.core.errors import HfadaptError
from hfadapt.rundir.layout import RECIPE_FILE, RunDir, RunInfo, RunMetrics, RunState, RunStatus

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


# ---- per-task sections ----------------------------------------------------------------------------
SECTIONS: dict[str, Callable[[ReportData], str]] = {}


def section(*tasks: str) -> Callable[[Callable[[ReportData], str]], Callable[[ReportData], str]]:
    """Register the report section of one or more tasks."""

    def deco(fn: Callable[[ReportData], str]) -> Callable[[ReportData], str]:
        for name in tasks:
            SECTIONS[name] = fn
        return fn

    return deco


def task_section(data: ReportData) -> str:
    task = None
    if data.recipe is not None:
        from hfadapt.tasks import TASKS

        task = TASKS.get(data.task) if data.task in TASKS else None
    own = getattr(task, "report_section", None)
    if callable(own):
        return own(data)
    return SECTIONS.get(data.task, generic_section)(data)


def generic_section(data: ReportData) -> str:
    evals = data.split("eval")
    if not evals:
        return "<p class=note>No final evaluation in this run.</p>"
    return "<p class=note>No task-specific view for this task; the final evaluation:</p>" + _metric_table(evals, "eval")


@section("text-classification", "image-classification")
def classification_section(data: ReportData) -> str:
    rows = data.predictions
    if not rows:
        return "<p class=note>No eval_predictions.jsonl in this run (it is written at the end of training when there is a validation split).</p>"
    if "labels" in rows[0]:
        return _multilabel_section(rows)
    if "confidence" not in rows[0]:
        return _regression_section(rows)
    names = _label_order(data, rows)
    index = {n: i for i, n in enumerate(names)}
    matrix = [[0] * len(names) for _ in names]
    for r in rows:
        matrix[index[r["label"]]][index[r["pred"]]] += 1
    out = ["<h3>Confusion matrix</h3>", "<div class=row>", _img(_confusion_plot(matrix, names)), _confusion_table(matrix, names), "</div>"]
    out += ["<h3>Per-class precision, recall and F1</h3>", _per_class_table(matrix, names)]
    mistakes = sorted((r for r in rows if r["label"] != r["pred"]), key=lambda r: -r["confidence"])[:10]
    out.append("<h3>Most confident mistakes</h3>")
    if not mistakes:
        out.append("<p class=note>No mistakes on the validation set.</p>")
    else:
        body = "".join(
            f"<tr><td>{r['index']}</td><td>{_e(r.get('text') if r.get('text') is not None else '(no text)')}</td>"
            f"<td>{_e(r['label'])}</td><td>{_e(r['pred'])}</td><td>{r['confidence']:.3f}</td><td>{r['p_label']:.3f}</td></tr>"
            for r in mistakes
        )
        out.append("<table class=mistakes><tr><th>#</th><th>input</th><th>true</th><th>predicted</th><th>p(predicted)</th><th>p(true)</th></tr>" + body + "</table>")
    return "".join(out)


def _label_order(data: ReportData, rows: list[dict[str, Any]]) -> list[str]:
    names = list(getattr(data.recipe.data, "labels", None) or []) if data.recipe is not None else []
    seen = sorted({r["label"] for r in rows} | {r["pred"] for r in rows})
    return names + [n for n in seen if n not in names] if names else seen


def _confusion_table(matrix: list[list[int]], names: list[str]) -> str:
    total = sum(map(sum, matrix))
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{_e(n)}</th>" for n in names) + "</tr>"
    body = "".join(
        f"<tr><th>{_e(n)}</th>" + "".join(f"<td data-count={c}{' class=diag' if i == j else ''}>{c}</td>" for j, c in enumerate(row)) + "</tr>"
        for i, (n, row) in enumerate(zip(names, matrix))
    )
    return f"<table class=confusion data-total={total}>{head}{body}</table>"


def _per_class_table(matrix: list[list[int]], names: list[str]) -> str:
    body = []
    for i, n in enumerate(names):
        tp = matrix[i][i]
        predicted = sum(row[i] for row in matrix)
        support = sum(matrix[i])
        p = tp / predicted if predicted else 0.0
        r = tp / support if support else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        body.append(f"<tr><td>{_e(n)}</td><td>{p:.3f}</td><td>{r:.3f}</td><td>{f:.3f}</td><td>{support}</td></tr>")
    return "<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>" + "".join(body) + "</table>"


def _multilabel_section(rows: list[dict[str, Any]]) -> str:
    names = sorted({n for r in rows for n in r["labels"] + r["preds"]})
    body = []
    for n in names:
        tp = sum(n in r["labels"] and n in r["preds"] for r in rows)
        fp = sum(n not in r["labels"] and n in r["preds"] for r in rows)
        fn = sum(n in r["labels"] and n not in r["preds"] for r in rows)
        p, rc = (tp / (tp + fp) if tp + fp else 0.0), (tp / (tp + fn) if tp + fn else 0.0)
        f = 2 * p * rc / (p + rc) if p + rc else 0.0
        body.append(f"<tr><td>{_e(n)}</td><td>{p:.3f}</td><td>{rc:.3f}</td><td>{f:.3f}</td><td>{tp + fn}</td></tr>")
    return "<h3>Per-label precision, recall and F1</h3><table><tr><th>label</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>" + "".join(body) + "</table>"


def _regression_section(rows: list[dict[str, Any]]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter([r["label"] for r in rows], [r["pred"] for r in rows], s=10, alpha=0.6)
    lo = min(min(r["label"] for r in rows), min(r["pred"] for r in rows))
    hi = max(max(r["label"] for r in rows), max(r["pred"] for r in rows))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
    ax.set_xlabel("true value")
    ax.set_ylabel("prediction")
    ax.set_title("validation: prediction vs truth")
    worst = sorted(rows, key=lambda r: -abs(r["pred"] - r["label"]))[:10]
    table = "".join(f"<tr><td>{r['index']}</td><td>{_e(r.get('text') or '')}</td><td>{r['label']:.3f}</td><td>{r['pred']:.3f}</td></tr>" for r in worst)
    return (f"<h3>Predictions</h3>{_img(fig)}<h3>Largest errors</h3><table><tr><th>#</th><th>input</th><th>true</th><th>predicted</th></tr>{table}</table>")


@section("token-classification")
def token_classification_section(data: ReportData) -> str:
    evals = data.split("eval")
    types = sorted({k.split("/")[0] for k in evals if "/" in k})
    if not types:
        return generic_section(data)
    cols = ("precision", "recall", "f1")
    body = "".join(
        f"<tr><td>{_e(t)}</td>" + "".join(_value_cell(f"eval/{t}/{c}", evals.get(f"{t}/{c}")) for c in cols) + "</tr>" for t in types
    )
    over = {c: (f"overall_{c}" if f"overall_{c}" in evals else c) for c in cols}  # seqeval's overall_* keys, or plain
    overall = "<tr class=total><td>overall</td>" + "".join(_value_cell(f"eval/{over[c]}", evals.get(over[c])) for c in cols) + "</tr>"
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(types) + 2), 3))
    width = 0.27
    for k, c in enumerate(cols):
        ax.bar([i + (k - 1) * width for i in range(len(types))], [evals.get(f"{t}/{c}", 0) for t in types], width, label=c)
    ax.set_xticks(range(len(types)), types)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("per entity type (validation)")
    return ("<h3>Per entity type</h3><div class=row>" + _img(fig) + "<table><tr><th>entity</th><th>precision</th><th>recall</th><th>F1</th></tr>" + body + overall + "</table></div>")


def _normalize_answer(text: str) -> str:
    """SQuAD's normalisation (hfadapt/metrics/squad): lower case, no punctuation, no articles, single spaces."""
    import string

    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def _qa_scores(prediction: str, answers: list[str]) -> tuple[float, float]:
    from collections import Counter

    golds = answers or [""]
    em = max(float(_normalize_answer(prediction) == _normalize_answer(g)) for g in golds)

    def f1(gold: str) -> float:
        p, g = _normalize_answer(prediction).split(), _normalize_answer(gold).split()
        if not p or not g:
            return float(p == g)
        same = sum((Counter(p) & Counter(g)).values())
        if not same:
            return 0.0
        precision, recall = same / len(p), same / len(g)
        return 2 * precision * recall / (precision + recall)

    return em, max(f1(g) for g in golds)


@section("question-answering")
def question_answering_section(data: ReportData) -> str:
    rows = data.predictions
    if not rows:
        return generic_section(data)
    groups: dict[str, list[tuple[float, float]]] = {"all": [], "answerable": [], "unanswerable": []}
    for r in rows:
        s = _qa_scores(r["prediction"], r["answers"])
        r["_em"], r["_f1"] = s
        groups["all"].append(s)
        groups["answerable" if r["answerable"] else "unanswerable"].append(s)
    body = "".join(
        f"<tr><td>{name}</td><td>{len(v)}</td>"
        + (f"<td>{100 * sum(e for e, _ in v) / len(v):.1f}</td><td>{100 * sum(f for _, f in v) / len(v):.1f}</td>" if v else "<td>-</td><td>-</td>")
        + "</tr>"
        for name, v in groups.items()
    )
    wrong = [r for r in rows if r["_em"] < 1][:10]
    examples = "".join(
        f"<tr><td>{r['index']}</td><td>{_e(r['context'])}</td><td>{_e(' | '.join(r['answers']) or '(no answer)')}</td><td>{_e(r['prediction'] or '(no answer)')}</td><td>{r['_f1']:.2f}</td></tr>"
        for r in wrong
    )
    return (
        "<h3>Exact match and F1 by question kind (validation, %)</h3><table><tr><th>questions</th><th>count</th><th>exact match</th><th>F1</th></tr>"
        + body + "</table><h3>Answers that missed</h3>"
        + ("<table class=mistakes><tr><th>#</th><th>context</th><th>gold</th><th>predicted</th><th>F1</th></tr>" + examples + "</table>" if wrong else "<p class=note>Every answer matched.</p>")
    )


@section("causal-lm")
def causal_lm_section(data: ReportData) -> str:
    gens = data.generations
    if not gens:
        return "<p class=note>No sample generations: list prompts under generation.prompts in the recipe to see the model's completions at every evaluation.</p>"
    steps = sorted({g.get("step") for g in gens if g.get("step") is not None})
    show = [steps[0], steps[-1]] if len(steps) > 1 else steps
    out = ["<h3>Sample generations</h3>"]
    for step in show:
        rows = "".join(f"<tr><td>{_e(g['prompt'])}</td><td>{_e(g['generated_text'])}</td></tr>" for g in gens if g.get("step") == step)
        out.append(f"<h4>at step {step}</h4><table class=gen><tr><th>prompt</th><th>generated</th></tr>{rows}</table>")
    return "".join(out)


@section("seq2seq")
def seq2seq_section(data: ReportData) -> str:
    rows = data.predictions[:10]
    if not rows:
        return "<p class=note>No sample generations (set generation.predict_with_generate and an eval metric such as rouge).</p>"
    body = "".join(f"<tr><td>{_e(r.get('input') or '')}</td><td>{_e(r['reference'])}</td><td>{_e(r['prediction'])}</td></tr>" for r in rows)
    return "<h3>Sample generations (validation)</h3><table class=gen><tr><th>input</th><th>reference</th><th>generated</th></tr>" + body + "</table>"


# ---- plots --------------------------------------------------------------------------------------
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _img(fig: Any) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _confusion_plot(matrix: list[list[int]], names: list[str]) -> Any:
    plt = _plt()
    n = len(names)
    fig, ax = plt.subplots(figsize=(min(1.0 + 0.6 * n, 10) + 1.5, min(1.0 + 0.6 * n, 10) + 1))
    im = ax.imshow(matrix, cmap="Blues", vmin=0)
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max(max(r) for r in matrix) or 1
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, matrix[i][j], ha="center", va="center", color="white" if matrix[i][j] > peak / 2 else "black", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return fig


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
    best_key = data.recipe.eval.best_metric if data.recipe is not None and data.recipe.eval.best_metric else None
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
def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _e(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.4g}"


def _value_cell(key: str, value: Any) -> str:
    if value is None:
        return "<td>-</td>"
    raw = json.dumps(value)
    return f"<td data-key=\"{_e(key)}\" data-value=\"{_e(raw)}\">{_fmt(value)}</td>"


def _metric_table(values: dict[str, Any], split: str) -> str:
    body = "".join(f"<tr><td>{_e(k)}</td>{_value_cell(f'{split}/{k}', v)}</tr>" for k, v in values.items())
    return f"<table><tr><th>{_e(split)}</th><th>value</th></tr>{body}</table>"


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
        items.append(("best", f"{r.eval.best_metric if r is not None else 'metric'} = {st.best_metric:.4g} at step {st.best_step}"))
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
