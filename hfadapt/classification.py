"""Helpers shared by the classification tasks (text and image): labels, loss, metric inputs, outputs."""

from __future__ import annotations

from typing import Any

from .labels import LabelInfo, encode_label, infer_labels

CLASS_METRICS = ("accuracy", "f1", "precision", "recall", "matthews_correlation")
REGRESSION_METRICS = ("mse", "pearsonr", "spearmanr")


def check(recipe: Any) -> list[str]:
    problems = []
    metrics = recipe.eval.metrics or []
    allowed = REGRESSION_METRICS if recipe.data.problem_type == "regression" else CLASS_METRICS
    from .metrics import available

    for m in metrics:
        if m in available() and m not in allowed:  # unknown names are reported once, by checks.py
            problems.append(
                f"eval.metrics: '{m}' does not fit problem_type {recipe.data.problem_type}; use {', '.join(allowed)}"
            )
    if recipe.data.problem_type == "multi_label" and "matthews_correlation" in metrics:
        problems.append("eval.metrics: matthews_correlation is not defined for multi_label")
    return problems


def default_metrics(recipe: Any) -> list[str]:
    if recipe.data.problem_type == "regression":
        return list(REGRESSION_METRICS)
    return ["accuracy", "f1"]


def label_info(train: Any, recipe: Any) -> LabelInfo:
    d = recipe.data
    return infer_labels(train, d.label_column, d.labels, d.problem_type, f"data.label_column '{d.label_column}'")


def encode_labels(values: list[Any], indices: list[int], labels: LabelInfo, column: str, split: str) -> list[Any]:
    return [encode_label(v, labels, column, i, split) for v, i in zip(values, indices)]


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
