"""What the classification tasks (text and image) share: label fields, labels, loss, evaluation, outputs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from hfadapt import metrics
from hfadapt.data.labels import LabelInfo, encode_label, infer_labels
from hfadapt.rundir.predictions import save_predictions
from hfadapt.core.recipe import Section

if TYPE_CHECKING:
    from hfadapt.tasks.base import EvalContext


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


def check(recipe: Any) -> list[str]:
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


def default_metrics(recipe: Any) -> list[str]:
    if recipe.data.problem_type == "regression":
        return list(REGRESSION_METRICS)
    return ["accuracy", "f1"]


def label_info(train: Any, recipe: Any) -> LabelInfo:
    d = recipe.data
    return infer_labels(train, d.label_column, d.labels, d.problem_type, f"data.label_column '{d.label_column}'", d)


def encode_labels(values: list[Any], indices: list[int], labels: LabelInfo, split: str, data: Any) -> list[Any]:
    return [encode_label(v, labels, data.label_column, i, split, data) for v, i in zip(values, indices)]


def evaluate(ctx: "EvalContext", model: Any, dataloader: Any) -> dict[str, float]:
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
    labels: LabelInfo = ctx.info
    logits, targets = torch.cat(all_logits), torch.cat(all_targets)
    # The loader may have read rows longest first (grouping.eval_order): back to dataset order.
    logits, targets = ctx.in_dataset_order(logits), ctx.in_dataset_order(targets)
    loss, preds, refs = loss_and_predictions(logits, targets, labels)
    results = {"loss": loss, "samples": int(targets.shape[0])}
    results.update(metrics.compute(list(ctx.metric_names), preds, refs, multilabel=labels.problem_type == "multi_label"))
    if ctx.predictions_file is not None:
        save_predictions(ctx, prediction_rows(ctx, logits, targets, labels))
    return results


def prediction_rows(ctx: "EvalContext", logits: Any, targets: Any, labels: LabelInfo) -> list[dict[str, Any]]:
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


def loss_and_predictions(logits: Any, targets: Any, labels: LabelInfo) -> tuple[float, Any, Any]:
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


def model_kwargs(labels: LabelInfo) -> dict[str, Any]:
    """from_pretrained/from_config arguments that size the head and store the label names in the config."""
    kw: dict[str, Any] = {"num_labels": labels.num_labels, "problem_type": labels.hf_problem_type}
    if labels.names:
        kw.update(id2label=labels.id2label, label2id=labels.label2id)
    return kw


def predict_batch(model: Any, batch: dict, labels: LabelInfo) -> list[dict]:
    import torch

    with torch.no_grad():
        logits = model(**batch).logits
    return format_predictions(logits, labels)


def format_predictions(logits: Any, labels: LabelInfo) -> list[dict]:
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
