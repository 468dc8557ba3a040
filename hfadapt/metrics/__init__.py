"""Offline metrics: `evaluate` modules shipped in this folder, loaded by path so no Hub access is needed."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import HfadaptError
from ..registry import did_you_mean

METRICS_DIR = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())


@lru_cache(maxsize=None)
def load(name: str, multilabel: bool = False) -> Any:
    """`evaluate.load` of a shipped module; the same object `evaluate.load("accuracy")` would give."""
    import evaluate

    if name not in available():
        raise HfadaptError(f"eval.metrics: unknown metric '{name}'{did_you_mean(name, available())}; known: {', '.join(available())}")
    # keep_in_memory: no arrow cache files, which concurrent processes under `accelerate launch` would share.
    return evaluate.load(str(METRICS_DIR / name / f"{name}.py"), config_name="multilabel" if multilabel else None, keep_in_memory=True)


def compute(names: list[str], predictions: Any, references: Any, multilabel: bool = False) -> dict[str, float]:
    results: dict[str, float] = {}
    for name in names:
        results.update(load(name, multilabel).compute(predictions=predictions, references=references))
    return results


# Keys each metric module returns, where they differ from its name (checked by tests against compute()).
RESULT_KEYS: dict[str, list[str]] = {
    "f1": ["f1_macro", "f1_micro", "f1_weighted"],
    "precision": ["precision_macro", "precision_micro", "precision_weighted"],
    "recall": ["recall_macro", "recall_micro", "recall_weighted"],
    "rouge": ["rouge1", "rouge2", "rougeL", "rougeLsum"],
    "seqeval": ["precision", "recall", "f1", "accuracy"],
    "squad": ["exact_match", "f1"],
    "squad_v2": ["exact_match", "f1", "HasAns_exact_match", "HasAns_f1", "NoAns_exact_match"],
}


def result_keys(name: str) -> list[str]:
    """Keys a metric adds to the results (for checking eval.best_metric without computing)."""
    return RESULT_KEYS.get(name, [name])
