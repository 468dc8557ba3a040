"""ANLS (Average Normalized Levenshtein Similarity), the DocVQA score: per question, the best over its
accepted answers of 1 - edit distance / longer length (case-insensitive, spaces collapsed), counted
as 0 below the threshold (0.5); averaged over questions, 0..1. Biten et al., ICCV 2019."""

import datasets
import evaluate

_DESCRIPTION = "ANLS (0..1): average over questions of the best normalised Levenshtein similarity, 0 below threshold."
_KWARGS = """
Args:
    predictions: generated answers.
    references: one reference answer per prediction, or a list of accepted answers per prediction.
    threshold (float): similarities below it count as 0 (default 0.5).
Returns:
    anls (float, 0..1)
Examples:
    >>> evaluate.load("anls").compute(predictions=["1985"], references=[["1986"]])
    {'anls': 0.75}
"""


def levenshtein(a, b):
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def similarity(prediction, reference):
    p, r = " ".join(str(prediction).lower().split()), " ".join(str(reference).lower().split())
    longest = max(len(p), len(r))
    return 1.0 if longest == 0 else 1.0 - levenshtein(p, r) / longest


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Anls(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=[
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            reference_urls=["https://arxiv.org/abs/1907.00490"],
        )

    def _compute(self, predictions, references, threshold=0.5):
        if not predictions:
            return {"anls": 0.0}
        total = 0.0
        for p, refs in zip(predictions, references):
            refs = refs if isinstance(refs, list) else [refs]
            best = max(similarity(p, r) for r in refs)
            total += best if best >= threshold else 0.0
        return {"anls": total / len(predictions)}
