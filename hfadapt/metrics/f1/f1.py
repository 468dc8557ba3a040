"""F1 with macro, micro and weighted averaging in one call (single- or multi-label)."""

import datasets
import evaluate
from sklearn.metrics import f1_score

_DESCRIPTION = "F1 = 2 * precision * recall / (precision + recall), averaged three ways. Config 'multilabel' takes 0/1 indicator rows."
_KWARGS = """
Args:
    predictions: predicted class ids (or 0/1 rows with config 'multilabel').
    references: true class ids (or 0/1 rows).
    averages (list of str): subset of ["macro", "micro", "weighted"] (default: all three).
Returns:
    f1_macro, f1_micro, f1_weighted (float); classes with no prediction count as 0.
Examples:
    >>> evaluate.load("f1").compute(predictions=[0, 1, 1], references=[0, 1, 0])["f1_macro"]
    0.6666666666666666
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class F1(evaluate.Metric):
    def _info(self):
        value = datasets.Sequence(datasets.Value("int32")) if self.config_name == "multilabel" else datasets.Value("int32")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": value, "references": value}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def _compute(self, predictions, references, averages=("macro", "micro", "weighted")):
        return {
            f"f1_{avg}": float(f1_score(references, predictions, average=avg, zero_division=0)) for avg in averages
        }
