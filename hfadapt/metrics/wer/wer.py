"""Word error rate: (substitutions + deletions + insertions) / reference words, over the whole corpus.

Optionally also on normalised text (Whisper's basic or English normaliser from transformers:
lower case, punctuation and symbols removed; English also spells out contractions, numbers and
British/American spellings), reported as a separate key so raw and normalised WER sit side by side.
"""

import datasets
import evaluate

_DESCRIPTION = "WER = (S + D + I) / N over all reference words (Levenshtein alignment of word sequences)."
_KWARGS = """
Args:
    predictions: hypothesis transcripts.
    references: reference transcripts.
    normalizer (str): "none" (default), "basic" or "english": also report `wer_normalized`.
    english_spelling_mapping (dict): British -> American spellings for the English normaliser
        (Whisper tokenizers ship it as normalizer.json); empty when absent.
Returns:
    wer (float), and wer_normalized (float) with a normalizer. With no reference words at all, WER is
    0.0 when every hypothesis is empty too, else inf.
Examples:
    >>> evaluate.load("wer").compute(predictions=["the cat sat"], references=["the cat sat down"])
    {'wer': 0.25}
"""


def edit_counts(ref, hyp):
    """(substitutions, deletions, insertions) of the cheapest alignment of two token sequences."""
    # dp[j] = (cost, S, D, I) for ref[:i] vs hyp[:j]
    prev = [(j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i in range(1, len(ref) + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, len(hyp) + 1):
            if ref[i - 1] == hyp[j - 1]:
                best = prev[j - 1]
            else:
                c, s, d, n = prev[j - 1]
                sub = (c + 1, s + 1, d, n)
                c, s, d, n = prev[j]
                dele = (c + 1, s, d + 1, n)
                c, s, d, n = cur[j - 1]
                ins = (c + 1, s, d, n + 1)
                best = min(sub, dele, ins)
            cur.append(best)
        prev = cur
    _, s, d, n = prev[-1]
    return s, d, n


def error_rate(predictions, references, tokens):
    edits = total = 0
    for hyp, ref in zip(predictions, references):
        r, h = tokens(ref), tokens(hyp)
        s, d, n = edit_counts(r, h)
        edits += s + d + n
        total += len(r)
    if total == 0:
        return 0.0 if edits == 0 else float("inf")
    return edits / total


def normalizer_fn(name, english_spelling_mapping=None):
    if name in (None, "none"):
        return None
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

    if name == "basic":
        return BasicTextNormalizer()
    if name == "english":
        return EnglishTextNormalizer(english_spelling_mapping or {})
    raise ValueError(f"normalizer: expected none, basic or english, got {name!r}")


def words(text):
    return text.split()


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class WER(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            reference_urls=["https://en.wikipedia.org/wiki/Word_error_rate"],
        )

    def _compute(self, predictions, references, normalizer="none", english_spelling_mapping=None):
        out = {"wer": error_rate(predictions, references, words)}
        norm = normalizer_fn(normalizer, english_spelling_mapping)
        if norm is not None:
            out["wer_normalized"] = error_rate([norm(p) for p in predictions], [norm(r) for r in references], words)
        return out
