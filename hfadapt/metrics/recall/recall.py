"""Recall with macro, micro and weighted averaging in one call (single- or multi-label)."""

import datasets
import evaluate
from sklearn.metrics import recall_score

_DESCRIPTION = "Recall = TP / (TP + FN), averaged three ways. Config 'multilabel' takes 0/1 indicator rows."
_KWARGS = """
Args:
    predictions: predicted class ids (or 0/1 rows with config 'multilabel').
    references: true class ids (or 0/1 rows).
    averages (list of str): subset of ["macro", "micro", "weighted"] (default: all three).
Returns:
    recall_macro, recall_micro, recall_weighted (float); classes with no prediction count as 0.
Examples:
    >>> evaluate.load("recall").compute(predictions=[0, 1, 1], references=[0, 1, 0])["recall_macro"]
    0.75
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Recall(evaluate.Metric):
    def _info(self):
        value = datasets.Sequence(datasets.Value("int32")) if self.config_name == "multilabel" else datasets.Value("int32")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": value, "references": value}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.recall_score.html"],
        )

    def _compute(self, predictions, references, averages=("macro", "micro", "weighted")):
        return {
            f"recall_{avg}": float(recall_score(references, predictions, average=avg, zero_division=0)) for avg in averages
        }
