"""ROUGE: n-gram (rouge1, rouge2) and longest-common-subsequence (rougeL, rougeLsum) overlap between
generated and reference texts, with Google's rouge_score package. Each key is the mean F-measure
over the examples (0..1); with several references per example the best one counts."""

import datasets
import evaluate
from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

_DESCRIPTION = (
    "ROUGE F-measures averaged over examples. rougeL is the LCS over the whole text; rougeLsum the "
    "summary-level LCS over sentences separated by newlines (put '\\n' between sentences to use it)."
)
_KWARGS = """
Args:
    predictions: generated texts.
    references: one reference text per prediction, or a list of references per prediction.
    use_stemmer (bool): Porter-stem words before matching (default False).
Returns:
    rouge1, rouge2, rougeL, rougeLsum (float, mean F-measure, 0..1)
Examples:
    >>> evaluate.load("rouge").compute(predictions=["the cat sat"], references=["the cat ran"])["rouge1"]
    0.6666666666666666
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=[
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            reference_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
        )

    def _compute(self, predictions, references, use_stemmer=False):
        scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
        totals = dict.fromkeys(ROUGE_TYPES, 0.0)
        for pred, ref in zip(predictions, references):
            scores = scorer.score_multi(ref, pred) if isinstance(ref, list) else scorer.score(ref, pred)
            for key in ROUGE_TYPES:
                totals[key] += scores[key].fmeasure
        n = len(predictions)
        return {key: float(total / n) if n else 0.0 for key, total in totals.items()}
