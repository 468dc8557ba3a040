"""Offline metrics: `evaluate` modules shipped in this folder, loaded by path so no Hub access is needed."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from hfadapt.core.registry import Registry

METRICS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Metric:
    """A shipped metric: its `evaluate` module is METRICS_DIR/<name>/<name>.py."""

    name: str
    result_keys: tuple[str, ...]  # what compute() returns (checked by tests against the module)
    lower_is_better: bool = False

    @property
    def path(self) -> Path:
        return METRICS_DIR / self.name / f"{self.name}.py"


METRICS: Registry[Metric] = Registry("metric")


def _register(name: str, keys: tuple[str, ...] | None = None, lower_is_better: bool = False) -> None:
    METRICS.register(name)(Metric(name, keys or (name,), lower_is_better))


_register("accuracy")
_register("f1", ("f1_macro", "f1_micro", "f1_weighted"))
_register("precision", ("precision_macro", "precision_micro", "precision_weighted"))
_register("recall", ("recall_macro", "recall_micro", "recall_weighted"))
_register("matthews_correlation")
_register("mse", lower_is_better=True)
_register("pearsonr")
_register("spearmanr")
_register("rouge", ("rouge1", "rouge2", "rougeL", "rougeLsum"))
_register("bleu")
_register("chrf")
_register("seqeval", ("precision", "recall", "f1", "accuracy"))
_register("squad", ("exact_match", "f1"))
_register("wer", ("wer", "wer_normalized"), lower_is_better=True)  # *_normalized: with data.text_normalizer
_register("cer", ("cer", "cer_normalized"), lower_is_better=True)
_register("exact_match")  # generated answers (image-text-to-text), SQuAD-normalised
_register("anls")  # document VQA (DocVQA): normalised Levenshtein similarity
_register("squad_v2", ("exact_match", "f1", "HasAns_exact_match", "HasAns_f1", "NoAns_exact_match"))


def available() -> list[str]:
    return METRICS.names()


@lru_cache(maxsize=None)
def load(name: str, multilabel: bool = False) -> Any:
    """`evaluate.load` of a shipped module; the same object `evaluate.load("accuracy")` would give."""
    import evaluate

    metric = METRICS.get(name, field="eval.metrics")
    # keep_in_memory: no arrow cache files, which concurrent processes under `accelerate launch` would share.
    return evaluate.load(str(metric.path), config_name="multilabel" if multilabel else None, keep_in_memory=True)


def compute(names: list[str], predictions: Any, references: Any, multilabel: bool = False) -> dict[str, float]:
    results: dict[str, float] = {}
    for name in names:
        results.update(load(name, multilabel).compute(predictions=predictions, references=references))
    return results


def result_keys(name: str) -> list[str]:
    """Keys a metric adds to the results (for checking eval.best_metric without computing)."""
    return list(METRICS.get(name, field="eval.metrics").result_keys)


def lower_is_better(key: str) -> bool:
    """Whether a smaller value of a result key is better (loss, mse, perplexity): the default of eval.greater_is_better."""
    return key in ("loss", "perplexity") or any(m.lower_is_better and key in m.result_keys for m in map(METRICS.get, METRICS.names()))


def module(name: str) -> ModuleType:
    """The Python module of a shipped metric as `load` imported it, for its per-example functions
    (squad_v2's `exact_match` and `f1` score one answer the way the metric scores them all)."""
    import sys

    return sys.modules[type(load(name)).__module__]
