"""BLEU with sacrebleu: corpus-level (n-gram counts summed over all examples before the geometric
mean and the brevity penalty), 0..100, the standard 13a tokenisation by default."""

import datasets
import evaluate
from sacrebleu.metrics import BLEU

_DESCRIPTION = "sacrebleu corpus BLEU (0..100): clipped n-gram precisions up to 4-grams, geometric mean, brevity penalty."
_KWARGS = """
Args:
    predictions: generated texts.
    references: one reference text per prediction, or the same number of references for every prediction.
    tokenize (str): sacrebleu tokenizer ('13a' default, 'zh', 'ja-mecab', 'intl', 'char', 'none', ...).
    lowercase (bool): case-insensitive BLEU (default False).
    smooth_method (str): 'exp' (default), 'floor', 'add-k' or 'none'.
Returns:
    bleu (float, 0..100)
Examples:
    >>> evaluate.load("bleu").compute(predictions=["the cat sat on the mat"], references=["the cat sat on a mat"])
    {'bleu': 53.7284965911771}
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
class Bleu(evaluate.Metric):
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

    def _compute(self, predictions, references, tokenize=None, lowercase=False, smooth_method="exp"):
        bleu = BLEU(tokenize=tokenize, lowercase=lowercase, smooth_method=smooth_method)
        return {"bleu": float(bleu.corpus_score(list(predictions), reference_streams(references)).score)}
