"""Spearman rank correlation for regression."""

import datasets
import evaluate
from scipy.stats import spearmanr

_DESCRIPTION = "Spearman rank correlation between predictions and references, in [-1, 1]."
_KWARGS = """
Args:
    predictions: predicted floats.
    references: reference floats.
Returns:
    spearmanr (float)
Examples:
    >>> evaluate.load("spearmanr").compute(predictions=[1.0, 2.0, 3.0], references=[1.0, 5.0, 9.0])
    {'spearmanr': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Spearmanr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}),
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.spearmanr.html"],
        )

    def _compute(self, predictions, references):
        return {"spearmanr": float(spearmanr(references, predictions)[0])}
