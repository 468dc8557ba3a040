"""SQuAD v2.0: exact match and F1 (0..100) where questions may have no answer.

Written from the SQuAD v2.0 definition: answers are normalised as in v1.1 (lower case, no
punctuation, no articles a/an/the, whitespace collapsed); a question without gold answers is
scored against the empty answer, so an empty prediction is right for it and any other is wrong;
a prediction whose no_answer_probability exceeds `no_answer_threshold` counts as empty.
HasAns_* and NoAns_* are the same scores over the answerable / unanswerable questions only
(NaN where a split has no such question).
"""

import collections
import math
import re
import string

import datasets
import evaluate

_DESCRIPTION = "SQuAD v2.0 exact match and F1 (0..100) with no-answer questions, plus HasAns_/NoAns_ breakdowns."
_KWARGS = """
Args:
    predictions: list of {"id": str, "prediction_text": str ("" for no answer), "no_answer_probability": float}.
    references: list of {"id": str, "answers": {"text": [str, ...], "answer_start": [int, ...]}};
        empty lists for a question that has no answer.
    no_answer_threshold (float): predictions with no_answer_probability above it count as "no answer" (default 1.0: never).
Returns:
    exact_match, f1, HasAns_exact_match, HasAns_f1, NoAns_exact_match (floats, 0..100)
Examples:
    >>> evaluate.load("squad_v2").compute(
    ...     predictions=[{"id": "1", "prediction_text": "", "no_answer_probability": 0.0}],
    ...     references=[{"id": "1", "answers": {"text": [], "answer_start": []}}])["exact_match"]
    100.0
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
    if not pred_tokens or not gold_tokens:
        # No-answer: right only when both are empty.
        return float(pred_tokens == gold_tokens)
    same = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def answer_texts(answers) -> list:
    if isinstance(answers, dict):
        return list(answers.get("text") or [])
    return [a["text"] for a in answers or []]


def _mean(values: list) -> float:
    return 100.0 * sum(values) / len(values) if values else math.nan


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class SquadV2(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Rajpurkar, Jia and Liang, Know What You Don't Know: Unanswerable Questions for SQuAD, ACL 2018",
            inputs_description=_KWARGS,
            features=datasets.Features({
                "predictions": {
                    "id": datasets.Value("string"),
                    "prediction_text": datasets.Value("string"),
                    "no_answer_probability": datasets.Value("float32"),
                },
                "references": {
                    "id": datasets.Value("string"),
                    "answers": datasets.Sequence({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}),
                },
            }),
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references, no_answer_threshold=1.0):
        predicted = {p["id"]: p for p in predictions}
        em_has, f1_has, em_no, f1_no = [], [], [], []
        for ref in references:
            if ref["id"] not in predicted:
                raise ValueError(f"no prediction for question id {ref['id']!r}")
            p = predicted[ref["id"]]
            pred = p["prediction_text"]
            if p.get("no_answer_probability") is not None and p["no_answer_probability"] > no_answer_threshold:
                pred = ""
            texts = answer_texts(ref["answers"])
            golds = [t for t in texts if normalize_answer(t)] or [""]
            em = max(exact_match(pred, g) for g in golds)
            f = max(f1(pred, g) for g in golds)
            if texts:
                em_has.append(em)
                f1_has.append(f)
            else:
                em_no.append(em)
                f1_no.append(f)
        return {
            "exact_match": _mean(em_has + em_no) if references else 0.0,
            "f1": _mean(f1_has + f1_no) if references else 0.0,
            "HasAns_exact_match": _mean(em_has),
            "HasAns_f1": _mean(f1_has),
            "NoAns_exact_match": _mean(em_no),
        }
