"""The offline `evaluate` modules in hfadapt/metrics, checked against values worked out by hand."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest

from hfadapt import metrics
from hfadapt.core.errors import HfadaptError

# ---- single-label classification -----------------------------------------------------------------
# predictions [0, 1, 1, 2], references [0, 1, 0, 2]; three classes.
#
#   class 0: refs at 0, 2     preds at 0        TP=1 FP=0 FN=1  P=1    R=1/2  F1=2/3   support 2
#   class 1: refs at 1        preds at 1, 2     TP=1 FP=1 FN=0  P=1/2  R=1    F1=2/3   support 1
#   class 2: refs at 3        preds at 3        TP=1 FP=0 FN=0  P=1    R=1    F1=1     support 1
#
#   accuracy   = 3 correct / 4 = 0.75
#   macro      P = (1 + 1/2 + 1)/3 = 5/6     R = (1/2 + 1 + 1)/3 = 5/6     F1 = (2/3 + 2/3 + 1)/3 = 7/9
#   micro      single-label: P = R = F1 = accuracy = 3/4
#   weighted   P = (2*1 + 1*1/2 + 1*1)/4 = 7/8   R = (2*1/2 + 1 + 1)/4 = 3/4   F1 = (2*2/3 + 2/3 + 1)/4 = 3/4
#
#   Matthews (multi-class, Gorodkin): c = 3 correct, s = 4 samples, predicted counts p = (1, 2, 1),
#   true counts t = (2, 1, 1):  (c*s - sum p_k t_k) / sqrt((s^2 - sum p_k^2) (s^2 - sum t_k^2))
#                              = (12 - (2 + 2 + 1)) / sqrt((16 - 6) (16 - 6)) = 7 / 10 = 0.7
PREDS = [0, 1, 1, 2]
REFS = [0, 1, 0, 2]
EXPECTED_SINGLE = {
    "accuracy": 0.75,
    "f1_macro": 7 / 9,
    "f1_micro": 0.75,
    "f1_weighted": 0.75,
    "precision_macro": 5 / 6,
    "precision_micro": 0.75,
    "precision_weighted": 7 / 8,
    "recall_macro": 5 / 6,
    "recall_micro": 0.75,
    "recall_weighted": 0.75,
    "matthews_correlation": 0.7,
}


def _close(got: dict, expected: dict) -> None:
    assert set(got) == set(expected), (sorted(got), sorted(expected))
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
        assert isinstance(got[key], float), key


def test_available_metrics() -> None:
    assert metrics.available() == [
        "accuracy", "anls", "bleu", "cer", "chrf", "exact_match", "f1", "matthews_correlation", "mse", "pearsonr", "precision",
        "recall", "rouge", "seqeval", "spearmanr", "squad", "squad_v2", "wer",
    ]


@pytest.mark.parametrize("name", ["accuracy", "f1", "precision", "recall", "matthews_correlation"])
def test_single_label_metric(name: str) -> None:
    got = metrics.compute([name], PREDS, REFS)
    _close(got, {k: v for k, v in EXPECTED_SINGLE.items() if k in metrics.result_keys(name)})


def test_all_classification_metrics_at_once_and_numpy_inputs() -> None:
    names = ["accuracy", "f1", "precision", "recall", "matthews_correlation"]
    _close(metrics.compute(names, PREDS, REFS), EXPECTED_SINGLE)
    # The training loop passes numpy arrays (int64 from torch.argmax).
    _close(metrics.compute(names, np.array(PREDS, dtype=np.int64), np.array(REFS, dtype=np.int64)), EXPECTED_SINGLE)


def test_result_keys_match_compute() -> None:
    for name in ["accuracy", "f1", "precision", "recall", "matthews_correlation"]:
        assert sorted(metrics.compute([name], PREDS, REFS)) == sorted(metrics.result_keys(name))
    for name in ["mse", "pearsonr", "spearmanr"]:
        assert sorted(metrics.compute([name], [1.0, 2.0, 3.0], [1.0, 3.0, 2.0])) == metrics.result_keys(name)


def test_binary_matthews_and_zero_division() -> None:
    # preds [1,0,1,1] refs [1,0,0,1]: TP=2 TN=1 FP=1 FN=0 -> (2*1 - 1*0) / sqrt(3*2*1*2) = 2/sqrt(12)
    got = metrics.compute(["matthews_correlation"], [1, 0, 1, 1], [1, 0, 0, 1])
    assert got["matthews_correlation"] == pytest.approx(2 / math.sqrt(12))
    # Class 1 is never predicted: its precision counts as 0 (no warning-as-nan).
    # class 0: P = 2/4, R = 1;  class 1: P = 0 (zero_division), R = 0 -> macro P = 1/4, macro R = 1/2
    got = metrics.compute(["precision", "recall"], [0, 0, 0, 0], [0, 0, 1, 1])
    assert got["precision_macro"] == pytest.approx(0.25)
    assert got["recall_macro"] == pytest.approx(0.5)


# ---- regression --------------------------------------------------------------------------------
def test_mse() -> None:
    # errors 0, 0, 2 -> (0 + 0 + 4) / 3
    assert metrics.compute(["mse"], [1.0, 2.0, 3.0], [1.0, 2.0, 5.0]) == {"mse": pytest.approx(4 / 3)}
    assert metrics.compute(["mse"], np.array([1.0, 2.0], dtype=np.float32), np.array([1.0, 4.0])) == {"mse": 2.0}


def test_pearson() -> None:
    # x = [1,2,3], y = [1,3,2]: deviations (-1,0,1) and (-1,1,0); sum of products 1; sums of squares 2 and 2 -> 1/2
    assert metrics.compute(["pearsonr"], [1.0, 2.0, 3.0], [1.0, 3.0, 2.0])["pearsonr"] == pytest.approx(0.5)
    # x = [1,2,3,4], y = [2,4,5,9]: dx = (-1.5,-.5,.5,1.5), dy = (-3,-1,0,4): 11 / sqrt(5 * 26)
    got = metrics.compute(["pearsonr"], [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 5.0, 9.0])["pearsonr"]
    assert got == pytest.approx(11 / math.sqrt(130))


def test_spearman() -> None:
    # Monotone but not linear: ranks agree exactly -> 1 (Pearson would be < 1).
    assert metrics.compute(["spearmanr"], [1.0, 2.0, 3.0, 4.0], [1.0, 4.0, 9.0, 100.0])["spearmanr"] == pytest.approx(1.0)
    # ranks (1,2,3,4) vs (2,3,4,1): d = (-1,-1,-1,3), sum d^2 = 12 -> 1 - 6*12 / (4 * (16 - 1)) = -0.2
    got = metrics.compute(["spearmanr"], [1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 5.0])["spearmanr"]
    assert got == pytest.approx(-0.2)


def test_regression_metrics_together() -> None:
    got = metrics.compute(["mse", "pearsonr", "spearmanr"], [1.0, 2.0, 3.0], [1.0, 3.0, 2.0])
    # mse: errors 0, 1, 1 -> 2/3; Spearman equals Pearson here because the values are their ranks.
    _close(got, {"mse": 2 / 3, "pearsonr": 0.5, "spearmanr": 0.5})


# ---- multi-label -------------------------------------------------------------------------------
# rows of 0/1 indicators over 3 labels:
#   preds [1,0,1] [0,1,0] [1,1,0]
#   refs  [1,0,1] [0,1,1] [1,0,0]
# accuracy (exact match of the whole row): only row 0 matches -> 1/3
# per label: label 0 TP=2 FP=0 FN=0 (P=1, R=1, F1=1, support 2)
#            label 1 TP=1 FP=1 FN=0 (P=1/2, R=1, F1=2/3, support 1)
#            label 2 TP=1 FP=0 FN=1 (P=1, R=1/2, F1=2/3, support 2)
# micro: TP=4 FP=1 FN=1 -> P = R = F1 = 4/5
# macro: P = 5/6, R = 5/6, F1 = 7/9;  weighted: P = (2 + 1/2 + 2)/5 = 9/10, R = (2 + 1 + 1)/5 = 4/5,
#        F1 = (2 + 2/3 + 4/3)/5 = 4/5
ML_PREDS = [[1, 0, 1], [0, 1, 0], [1, 1, 0]]
ML_REFS = [[1, 0, 1], [0, 1, 1], [1, 0, 0]]


def test_multilabel_accuracy_is_exact_row_match() -> None:
    assert metrics.compute(["accuracy"], ML_PREDS, ML_REFS, multilabel=True) == {"accuracy": pytest.approx(1 / 3)}
    # numpy int32 predictions ((logits > 0).int()) against int64 references
    got = metrics.compute(["accuracy"], np.array(ML_PREDS, dtype=np.int32), np.array(ML_REFS), multilabel=True)
    assert got == {"accuracy": pytest.approx(1 / 3)}


def test_multilabel_f1_precision_recall() -> None:
    got = metrics.compute(["f1", "precision", "recall"], ML_PREDS, ML_REFS, multilabel=True)
    _close(
        got,
        {
            "f1_micro": 0.8, "f1_macro": 7 / 9, "f1_weighted": 0.8,
            "precision_micro": 0.8, "precision_macro": 5 / 6, "precision_weighted": 0.9,
            "recall_micro": 0.8, "recall_macro": 5 / 6, "recall_weighted": 0.8,
        },
    )


def test_single_and_multilabel_modules_are_cached_separately() -> None:
    assert metrics.load("accuracy") is metrics.load("accuracy")
    assert metrics.load("accuracy", True) is not metrics.load("accuracy", False)
    assert metrics.load("accuracy", True).config_name == "multilabel"


# ---- loading -----------------------------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test: loading must not need the Hub."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_offline_loading_by_path(no_network: None) -> None:
    import evaluate
    import huggingface_hub.constants

    # Every socket connection is refused (no_network), so nothing can come from a Hub.
    assert not huggingface_hub.constants.ENDPOINT.startswith("https://huggingface.co")
    for name in metrics.available():
        module = evaluate.load(str(metrics.METRICS_DIR / name / f"{name}.py"))
        assert isinstance(module, evaluate.Metric)
        assert module.name == name
    metrics.load.cache_clear()
    try:
        assert metrics.compute(["accuracy", "mse"], [1, 0], [1, 1]) == {"accuracy": 0.5, "mse": 0.5}
    finally:
        metrics.load.cache_clear()


def test_unknown_metric_raises_with_suggestion() -> None:
    with pytest.raises(HfadaptError) as err:
        metrics.load("acuracy")
    msg = str(err.value)
    assert "eval.metrics" in msg
    assert "unknown metric 'acuracy'" in msg
    assert "did you mean 'accuracy'" in msg
    assert "known: accuracy, anls, bleu, cer, chrf, exact_match, f1" in msg
    with pytest.raises(HfadaptError, match="did you mean 'spearmanr'"):
        metrics.compute(["spearman"], [1.0, 2.0], [1.0, 2.0])


def test_every_metric_module_is_declared_once() -> None:
    """A metric is declared (name, result keys) where it is registered, and its module ships with it."""
    folders = sorted(p.name for p in metrics.METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())
    assert folders == metrics.available()
    assert metrics.lower_is_better("mse") and metrics.lower_is_better("loss") and metrics.lower_is_better("perplexity")
    assert not metrics.lower_is_better("accuracy") and not metrics.lower_is_better("f1_macro")


def test_exact_match_and_anls_score_generated_answers() -> None:
    from hfadapt import metrics

    em = metrics.compute(["exact_match"], ["The Red.", "blue", "12"], [["red", "crimson"], ["green"], ["12"]])
    assert em == {"exact_match": pytest.approx(2 / 3)}
    # ANLS: 1 - 1/4 edits for "1985" vs "1986"; "abc" vs "xyz" is below the 0.5 threshold: 0
    anls = metrics.compute(["anls"], ["1985", "abc", "Total"], [["1986"], ["xyz"], ["total", "sum"]])
    assert anls == {"anls": pytest.approx((0.75 + 0.0 + 1.0) / 3)}
