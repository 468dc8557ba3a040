"""Classification evaluation over a prepared dataloader: gather once per example across processes, then score."""

from __future__ import annotations

from typing import Any

from . import classification, metrics


def evaluate_classification(accelerator: Any, model: Any, dataloader: Any, labels: Any, metric_names: list[str]) -> dict[str, float]:
    import torch

    was_training = model.training
    model.eval()
    all_logits, all_targets = [], []
    for batch in dataloader:
        with torch.no_grad():
            logits = model(**batch).logits
        # gather_for_metrics drops the samples Accelerate repeated to even out the last batch.
        logits, targets = accelerator.gather_for_metrics((logits.contiguous(), batch["labels"]))
        all_logits.append(logits.detach().cpu())
        all_targets.append(targets.detach().cpu())
    model.train(was_training)
    logits, targets = torch.cat(all_logits), torch.cat(all_targets)
    loss, preds, refs = classification.loss_and_predictions(logits, targets, labels)
    results = {"loss": loss, "samples": int(targets.shape[0])}
    results.update(metrics.compute(metric_names, preds, refs, multilabel=labels.problem_type == "multi_label"))
    return results
