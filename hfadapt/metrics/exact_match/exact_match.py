"""Exact match of generated answers: the share of predictions equal to one of their references after
normalisation (lower case, punctuation, articles and extra spaces removed: SQuAD's normalisation), 0..1."""

import re
import string

import datasets
import evaluate

_DESCRIPTION = "Share (0..1) of predictions equal to any of their references after SQuAD-style normalisation."
_KWARGS = """
Args:
    predictions: generated answers.
    references: one reference answer per prediction, or a list of accepted answers per prediction.
Returns:
    exact_match (float, 0..1)
Examples:
    >>> evaluate.load("exact_match").compute(predictions=["The Red"], references=[["red", "crimson"]])
    {'exact_match': 1.0}
"""


def normalize(text):
    text = "".join(c for c in str(text).lower() if c not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class ExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=[
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
        )

    def _compute(self, predictions, references):
        if not predictions:
            return {"exact_match": 0.0}
        hits = 0
        for p, refs in zip(predictions, references):
            refs = refs if isinstance(refs, list) else [refs]
            hits += any(normalize(p) == normalize(r) for r in refs)
        return {"exact_match": hits / len(predictions)}
