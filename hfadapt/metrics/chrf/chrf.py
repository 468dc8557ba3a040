"""chrF with sacrebleu: character n-gram F-score (recall weighted by beta=2), corpus-level, 0..100;
word_order=2 gives chrF++."""

import datasets
import evaluate
from sacrebleu.metrics import CHRF

_DESCRIPTION = "sacrebleu corpus chrF (0..100): character n-gram precision and recall up to char_order, F-beta."
_KWARGS = """
Args:
    predictions: generated texts.
    references: one reference text per prediction, or the same number of references for every prediction.
    char_order (int): longest character n-gram (default 6).
    word_order (int): longest word n-gram (default 0; 2 gives chrF++).
    beta (int): recall weight (default 2).
    lowercase (bool): case-insensitive (default False).
Returns:
    chrf (float, 0..100)
Examples:
    >>> evaluate.load("chrf").compute(predictions=["ab"], references=["ac"], char_order=1)
    {'chrf': 50.0}
"""


def reference_streams(references):
    """Per-example references -> sacrebleu's streams (stream k holds the k-th reference of every example)."""
    refs = [r if isinstance(r, list) else [r] for r in references]
    counts = {len(r) for r in refs}
    if len(counts) > 1:
        raise ValueError(f"every prediction needs the same number of references; got {sorted(counts)}")
    width = counts.pop() if counts else 1
    return [[r[k] for r in refs] for k in range(width)]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Chrf(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=[
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            reference_urls=["https://github.com/mjpost/sacrebleu"],
        )

    def _compute(self, predictions, references, char_order=6, word_order=0, beta=2, lowercase=False):
        chrf = CHRF(char_order=char_order, word_order=word_order, beta=beta, lowercase=lowercase)
        return {"chrf": float(chrf.corpus_score(list(predictions), reference_streams(references)).score)}
