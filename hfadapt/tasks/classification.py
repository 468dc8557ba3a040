"""What the classification tasks (text, image, audio) share: `ClassificationTask` (label fields,
labels, loss, evaluation, outputs, report section) and the functions behind it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from hfadapt import metrics
from hfadapt.data.labels import LabelInfo, encode_label, infer_labels
from hfadapt.rundir.predictions import save_predictions
from hfadapt.core.recipe import DataSection, Section
from hfadapt.tasks.base import EvalContext, Task
from hfadapt.tasks.reporting import ReportInput, e, img, plt

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import Tensor
    from torch.nn import Module
    from torch.utils.data import DataLoader
    from transformers import PretrainedConfig

    from hfadapt.core.recipe import Recipe
    from hfadapt.tasks.base import Processor, Split


class LabelFields(Section):
    """The label column of a classifier's data section, and how its labels are read."""

    label_column: str = "label"
    labels: list[str] | None = Field(None, description="label names in id order; read from the data when absent")
    problem_type: Literal["single_label", "multi_label", "regression"] = "single_label"

    @field_validator("labels")
    @classmethod
    def _unique(cls, labels: list[str] | None) -> list[str] | None:
        if labels is not None:
            repeated = sorted({n for n in labels if labels.count(n) > 1})
            if repeated:
                raise ValueError(f"data.labels: label names must be unique; repeated: {', '.join(repeated)}")
            if not labels:
                raise ValueError("data.labels: give at least one label name, or leave it out to read them from the data")
        return labels

CLASS_METRICS = ("accuracy", "f1", "precision", "recall", "matthews_correlation")
REGRESSION_METRICS = ("mse", "pearsonr", "spearmanr")


class ClassificationTask(Task):
    """A classifier over whole inputs (texts, images, clips): single-label, multi-label or regression.

    Labels come from data.labels or the data (`LabelInfo`), size the head and are stored in the saved
    config; evaluation gathers logits once per example and writes one prediction row per example,
    which the report shows as a confusion matrix (or per-label scores, or a scatter for regression).
    A subclass gives its data model, columns, processor, preprocessing, collator and inputs.
    """

    restores_eval_order = True  # evaluate() puts length-sorted evaluation back in dataset order

    def check(self, recipe: Recipe) -> list[str]:
        problems = []
        names = recipe.eval.metrics or []
        allowed = REGRESSION_METRICS if recipe.data.problem_type == "regression" else CLASS_METRICS
        for m in names:
            if m in metrics.available() and m not in allowed:  # unknown names are reported once, by checks.py
                problems.append(
                    f"eval.metrics: '{m}' does not fit problem_type {recipe.data.problem_type}; use {', '.join(allowed)}"
                )
        if recipe.data.problem_type == "multi_label" and "matthews_correlation" in names:
            problems.append("eval.metrics: matthews_correlation is not defined for multi_label")
        return problems

    def default_metrics(self, recipe: Recipe) -> list[str]:
        if recipe.data.problem_type == "regression":
            return list(REGRESSION_METRICS)
        return ["accuracy", "f1"]

    def label_info(self, train: Split, recipe: Recipe) -> LabelInfo:
        d = recipe.data
        return infer_labels(train, d.label_column, d.labels, d.problem_type, f"data.label_column '{d.label_column}'", d)

    def info_from_config(self, config: PretrainedConfig) -> LabelInfo:
        return LabelInfo.from_model_config(config)

    def model_kwargs(self, info: LabelInfo | None) -> dict[str, Any]:
        """from_pretrained/from_config arguments that size the head and store the label names in the config."""
        assert info is not None, "a classifier always has label information"
        kw: dict[str, Any] = {"num_labels": info.num_labels, "problem_type": info.hf_problem_type}
        if info.names:
            kw.update(id2label=info.id2label, label2id=info.label2id)
        return kw

    def evaluate(self, ctx: EvalContext, model: Module, dataloader: DataLoader) -> dict[str, Any]:
        """Loss and metrics over a prepared dataloader: gathered once per example across processes, then scored."""
        import torch

        was_training = model.training
        model.eval()
        all_logits, all_targets = [], []
        for batch in dataloader:
            with torch.no_grad():
                logits = model(**batch).logits
            # gather_for_metrics drops the samples Accelerate repeated to even out the last batch.
            logits, targets = ctx.accelerator.gather_for_metrics((logits.contiguous(), batch["labels"]))
            all_logits.append(logits.detach().cpu())
            all_targets.append(targets.detach().cpu())
        model.train(was_training)
        labels = ctx.info
        assert labels is not None, "a classifier's evaluation needs its label information"
        logits, targets = torch.cat(all_logits), torch.cat(all_targets)
        # The loader may have read rows longest first (grouping.eval_order): back to dataset order.
        logits, targets = ctx.in_dataset_order(logits), ctx.in_dataset_order(targets)
        loss, preds, refs = loss_and_predictions(logits, targets, labels)
        results: dict[str, Any] = {"loss": loss, "samples": int(targets.shape[0])}
        results.update(metrics.compute(list(ctx.metric_names), preds, refs, multilabel=labels.problem_type == "multi_label"))
        if ctx.predictions_file is not None:
            save_predictions(ctx, prediction_rows(ctx, logits, targets, labels))
        return results

    def predict(self, model: Module, processor: Processor, items: list[str], recipe: Recipe,
                info: LabelInfo | None) -> list[dict[str, Any]]:
        assert info is not None, "a classifier predicts label names"
        return predict_batch(model, self.encode_inputs(items, processor, recipe), info)

    def report_section(self, report: ReportInput) -> str:
        """Confusion matrix, per-class scores and the most confident mistakes (single-label); per-label
        scores (multi-label); predictions against truth and the largest errors (regression)."""
        rows = report.predictions
        if not rows:
            return "<p class=note>No eval_predictions.jsonl in this run (it is written at the end of training when there is a validation split).</p>"
        if "labels" in rows[0]:
            return _multilabel_section(rows)
        if "confidence" not in rows[0]:
            return _regression_section(rows)
        names = _label_order(report.recipe.data, rows)
        index = {n: i for i, n in enumerate(names)}
        matrix = [[0] * len(names) for _ in names]
        for r in rows:
            matrix[index[r["label"]]][index[r["pred"]]] += 1
        out = ["<h3>Confusion matrix</h3>", "<div class=row>", img(_confusion_plot(matrix, names)), _confusion_table(matrix, names), "</div>"]
        out += ["<h3>Per-class precision, recall and F1</h3>", _per_class_table(matrix, names)]
        mistakes = sorted((r for r in rows if r["label"] != r["pred"]), key=lambda r: -r["confidence"])[:10]
        out.append("<h3>Most confident mistakes</h3>")
        if not mistakes:
            out.append("<p class=note>No mistakes on the validation set.</p>")
        else:
            body = "".join(
                f"<tr><td>{r['index']}</td><td>{e(r.get('text') if r.get('text') is not None else '(no text)')}</td>"
                f"<td>{e(r['label'])}</td><td>{e(r['pred'])}</td><td>{r['confidence']:.3f}</td><td>{r['p_label']:.3f}</td></tr>"
                for r in mistakes
            )
            out.append("<table class=mistakes><tr><th>#</th><th>input</th><th>true</th><th>predicted</th><th>p(predicted)</th><th>p(true)</th></tr>" + body + "</table>")
        return "".join(out)


def encode_labels(values: list[Any], indices: list[int], labels: LabelInfo, split: str, data: DataSection) -> list[Any]:
    return [encode_label(v, labels, data.label_column, i, split, data) for v, i in zip(values, indices)]


def prediction_rows(ctx: EvalContext, logits: Tensor, targets: Tensor, labels: LabelInfo) -> list[dict[str, Any]]:
    """One row per evaluated example for eval_predictions.jsonl: the true and the predicted label, the
    model's probabilities of both, and the input text (text tasks)."""
    import torch

    from hfadapt.rundir.predictions import input_texts

    logits = logits.float()
    texts = input_texts(ctx, range(int(targets.shape[0])))
    if labels.problem_type == "regression":
        values = zip(targets.float().tolist(), logits.squeeze(-1).tolist())
        return [{"index": i, "label": t, "pred": p, "text": texts[i]} for i, (t, p) in enumerate(values)]
    names = labels.names or [str(i) for i in range(logits.shape[-1])]
    if labels.problem_type == "multi_label":
        probs = torch.sigmoid(logits).tolist()
        return [
            {"index": i, "labels": [names[j] for j, v in enumerate(t) if v > 0.5], "preds": [names[j] for j, p in enumerate(row) if p > 0.5], "text": texts[i]}
            for i, (t, row) in enumerate(zip(targets.tolist(), probs))
        ]
    probs = torch.softmax(logits, dim=-1)
    pred = probs.argmax(dim=-1)
    target = targets.long()
    rows = []
    for i in range(len(target)):
        t, p = int(target[i]), int(pred[i])
        rows.append({"index": i, "label": names[t], "pred": names[p], "confidence": float(probs[i, p]), "p_label": float(probs[i, t]), "text": texts[i]})
    return rows


def loss_and_predictions(logits: Tensor, targets: Tensor, labels: LabelInfo) -> tuple[float, Any, Any]:
    """Mean loss over all gathered examples, predictions and references for the metrics."""
    import torch
    import torch.nn.functional as F

    logits = logits.float()
    if labels.problem_type == "regression":
        preds = logits.squeeze(-1)
        loss = F.mse_loss(preds, targets.float()).item()
        return loss, preds.numpy(), targets.float().numpy()
    if labels.problem_type == "multi_label":
        loss = F.binary_cross_entropy_with_logits(logits, targets.float()).item()
        return loss, (logits > 0).int().numpy(), targets.int().numpy()
    loss = F.cross_entropy(logits, targets.long()).item()
    return loss, torch.argmax(logits, dim=-1).numpy(), targets.long().numpy()


def predict_batch(model: Module, batch: dict[str, Any], labels: LabelInfo) -> list[dict[str, Any]]:
    import torch

    with torch.no_grad():
        logits = model(**batch).logits
    return format_predictions(logits, labels)


def format_predictions(logits: Tensor, labels: LabelInfo) -> list[dict[str, Any]]:
    """Model outputs of `predict` as plain dicts: label and score(s)."""
    import torch

    logits = logits.float()
    if labels.problem_type == "regression":
        return [{"score": float(v)} for v in logits.squeeze(-1).tolist()]
    if labels.problem_type == "multi_label":
        probs = torch.sigmoid(logits)
        return [
            {"labels": [labels.names[j] for j, p in enumerate(row) if p > 0.5], "scores": dict(zip(labels.names, row))}
            for row in probs.tolist()
        ]
    probs = torch.softmax(logits, dim=-1)
    out = []
    for row in probs.tolist():
        best = max(range(len(row)), key=row.__getitem__)
        out.append({"label": labels.names[best], "score": row[best], "scores": dict(zip(labels.names, row))})
    return out


# ---- report parts ----------------------------------------------------------------------------------
def _label_order(data: DataSection, rows: list[dict[str, Any]]) -> list[str]:
    """The recipe's label names first (data.labels), then any other label seen, sorted."""
    names = list(data.labels or []) if isinstance(data, LabelFields) else []
    seen = sorted({r["label"] for r in rows} | {r["pred"] for r in rows})
    return names + [n for n in seen if n not in names] if names else seen


def _confusion_table(matrix: list[list[int]], names: list[str]) -> str:
    total = sum(map(sum, matrix))
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{e(n)}</th>" for n in names) + "</tr>"
    body = "".join(
        f"<tr><th>{e(n)}</th>" + "".join(f"<td data-count={c}{' class=diag' if i == j else ''}>{c}</td>" for j, c in enumerate(row)) + "</tr>"
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
        body.append(f"<tr><td>{e(n)}</td><td>{p:.3f}</td><td>{r:.3f}</td><td>{f:.3f}</td><td>{support}</td></tr>")
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
        body.append(f"<tr><td>{e(n)}</td><td>{p:.3f}</td><td>{rc:.3f}</td><td>{f:.3f}</td><td>{tp + fn}</td></tr>")
    return "<h3>Per-label precision, recall and F1</h3><table><tr><th>label</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>" + "".join(body) + "</table>"


def _regression_section(rows: list[dict[str, Any]]) -> str:
    fig, ax = plt().subplots(figsize=(4.5, 4.5))
    ax.scatter([r["label"] for r in rows], [r["pred"] for r in rows], s=10, alpha=0.6)
    lo = min(min(r["label"] for r in rows), min(r["pred"] for r in rows))
    hi = max(max(r["label"] for r in rows), max(r["pred"] for r in rows))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
    ax.set_xlabel("true value")
    ax.set_ylabel("prediction")
    ax.set_title("validation: prediction vs truth")
    worst = sorted(rows, key=lambda r: -abs(r["pred"] - r["label"]))[:10]
    table = "".join(f"<tr><td>{r['index']}</td><td>{e(r.get('text') or '')}</td><td>{r['label']:.3f}</td><td>{r['pred']:.3f}</td></tr>" for r in worst)
    return (f"<h3>Predictions</h3>{img(fig)}<h3>Largest errors</h3><table><tr><th>#</th><th>input</th><th>true</th><th>predicted</th></tr>{table}</table>")


def _confusion_plot(matrix: list[list[int]], names: list[str]) -> Figure:
    n = len(names)
    fig, ax = plt().subplots(figsize=(min(1.0 + 0.6 * n, 10) + 1.5, min(1.0 + 0.6 * n, 10) + 1))
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
