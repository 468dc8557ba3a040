"""SQuAD v1.1: exact match and token-overlap F1 of extracted answers, the best over each question's
gold answers, averaged and reported 0..100 like the official evaluation script.

Written from the SQuAD v1.1 definition: an answer is normalised by lower-casing, removing
punctuation, removing the articles a/an/the and collapsing whitespace; F1 compares the bags of
normalised tokens of prediction and gold answer.
"""

import collections
import re
import string

import datasets
import evaluate

_DESCRIPTION = "SQuAD v1.1 exact match and F1 (0..100), each the maximum over a question's gold answers."
_KWARGS = """
Args:
    predictions: list of {"id": str, "prediction_text": str}.
    references: list of {"id": str, "answers": {"text": [str, ...], "answer_start": [int, ...]}}.
Returns:
    exact_match (float, 0..100), f1 (float, 0..100)
Examples:
    >>> evaluate.load("squad").compute(
    ...     predictions=[{"id": "1", "prediction_text": "in Paris France"}],
    ...     references=[{"id": "1", "answers": {"text": ["Paris"], "answer_start": [0]}}])
    {'exact_match': 0.0, 'f1': 50.0}
"""

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    same = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def answer_texts(answers) -> list:
    """Gold texts of one reference, whether `answers` arrives as a dict of lists or a list of dicts."""
    if isinstance(answers, dict):
        return list(answers.get("text") or [])
    return [a["text"] for a in answers or []]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Squad(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Rajpurkar et al., SQuAD: 100,000+ Questions for Machine Comprehension of Text, EMNLP 2016",
            inputs_description=_KWARGS,
            features=datasets.Features({
                "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                "references": {
                    "id": datasets.Value("string"),
                    "answers": datasets.Sequence({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}),
                },
            }),
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references):
        predicted = {p["id"]: p["prediction_text"] for p in predictions}
        total_em = total_f1 = 0.0
        for ref in references:
            if ref["id"] not in predicted:
                raise ValueError(f"no prediction for question id {ref['id']!r}")
            pred = predicted[ref["id"]]
            golds = answer_texts(ref["answers"])
            if golds:
                total_em += max(exact_match(pred, g) for g in golds)
                total_f1 += max(f1(pred, g) for g in golds)
        n = len(references)
        return {"exact_match": 100.0 * total_em / n if n else 0.0, "f1": 100.0 * total_f1 / n if n else 0.0}
