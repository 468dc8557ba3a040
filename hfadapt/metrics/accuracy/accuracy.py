"""Accuracy: the share of predictions equal to their reference (exact match of every label
for multi-label rows)."""

import datasets
import evaluate
from sklearn.metrics import accuracy_score

_DESCRIPTION = "Accuracy = correct predictions / all predictions. Config 'multilabel' takes 0/1 indicator rows."
_KWARGS = """
Args:
    predictions: predicted class ids (or 0/1 rows with config 'multilabel').
    references: true class ids (or 0/1 rows).
    normalize (bool): return the share (default) or the count of correct predictions.
    sample_weight (list of float): optional weights.
Returns:
    accuracy (float)
Examples:
    >>> evaluate.load("accuracy").compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.6666666666666666}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Accuracy(evaluate.Metric):
    def _info(self):
        value = datasets.Sequence(datasets.Value("int32")) if self.config_name == "multilabel" else datasets.Value("int32")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": value, "references": value}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"],
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        score = accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight)
        return {"accuracy": float(score)}
