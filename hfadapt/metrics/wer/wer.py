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


def error_rate(predictions, references):
    """Corpus-level rate: all edits of jiwer's Levenshtein alignment over all reference words.

    jiwer refuses an empty reference; such a pair counts its hypothesis words as insertions.
    """
    import jiwer

    edits = total = 0
    kept = []
    for hyp, ref in zip(predictions, references):
        if ref.strip():
            kept.append((ref, hyp))
        else:
            edits += len(hyp.split())
    if kept:
        out = jiwer.process_words([r for r, _ in kept], [h for _, h in kept])
        edits += out.substitutions + out.deletions + out.insertions
        total += out.hits + out.substitutions + out.deletions
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
        out = {"wer": error_rate(predictions, references)}
        norm = normalizer_fn(normalizer, english_spelling_mapping)
        if norm is not None:
            out["wer_normalized"] = error_rate([norm(p) for p in predictions], [norm(r) for r in references])
        return out
