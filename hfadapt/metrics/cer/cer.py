"""Character error rate: (substitutions + deletions + insertions) / reference characters (spaces included), over the whole corpus.

Optionally also on normalised text (Whisper's basic or English normaliser from transformers:
lower case, punctuation and symbols removed; English also spells out contractions, numbers and
British/American spellings), reported as a separate key so raw and normalised WER sit side by side.
"""

import datasets
import evaluate

_DESCRIPTION = "CER = (S + D + I) / N over all reference characters, spaces included (Levenshtein alignment)."
_KWARGS = """
Args:
    predictions: hypothesis transcripts.
    references: reference transcripts.
    normalizer (str): "none" (default), "basic" or "english": also report `cer_normalized`.
    english_spelling_mapping (dict): British -> American spellings for the English normaliser
        (Whisper tokenizers ship it as normalizer.json); empty when absent.
Returns:
    cer (float), and cer_normalized (float) with a normalizer. With no reference characters at all, CER is
    0.0 when every hypothesis is empty too, else inf.
Examples:
    >>> evaluate.load("cer").compute(predictions=["abd"], references=["abc"])
    {'cer': 0.3333333333333333}
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


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class CER(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            reference_urls=["https://en.wikipedia.org/wiki/Word_error_rate#Other_metrics"],
        )

    def _compute(self, predictions, references, normalizer="none", english_spelling_mapping=None):
        out = {"cer": error_rate(predictions, references, list)}
        norm = normalizer_fn(normalizer, english_spelling_mapping)
        if norm is not None:
            out["cer_normalized"] = error_rate([norm(p) for p in predictions], [norm(r) for r in references], list)
        return out
