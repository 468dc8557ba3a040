"""Mean squared error for regression."""

import datasets
import evaluate
from sklearn.metrics import mean_squared_error

_DESCRIPTION = "Mean squared error between predicted and reference values."
_KWARGS = """
Args:
    predictions: predicted floats.
    references: reference floats.
Returns:
    mse (float)
Examples:
    >>> evaluate.load("mse").compute(predictions=[1.0, 2.0], references=[1.0, 4.0])
    {'mse': 2.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Mse(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.mean_squared_error.html"],
        )

    def _compute(self, predictions, references):
        return {"mse": float(mean_squared_error(references, predictions))}
