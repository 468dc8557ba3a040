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


def error_rate(predictions, references):
    """Corpus-level rate: all edits of jiwer's Levenshtein alignment over all reference characters.

    jiwer refuses an empty reference; such a pair counts its hypothesis characters as insertions.
    """
    import jiwer

    edits = total = 0
    kept = []
    for hyp, ref in zip(predictions, references):
        if ref.strip():
            kept.append((ref, hyp))
        else:
            edits += len(hyp.strip())
    if kept:
        out = jiwer.process_characters([r for r, _ in kept], [h for _, h in kept])
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
        out = {"cer": error_rate(predictions, references)}
        norm = normalizer_fn(normalizer, english_spelling_mapping)
        if norm is not None:
            out["cer_normalized"] = error_rate([norm(p) for p in predictions], [norm(r) for r in references])
        return out
