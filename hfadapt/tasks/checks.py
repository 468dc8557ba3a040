"""Cross-field recipe checks that every task shares: adapter method, metrics and best metric.

They need the adapter and metric registries but not torch (`hfadapt validate`). Each task's
recipe model runs them, then the task's own `check` (see hfadapt.tasks.base.register_task).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hfadapt import metrics
from hfadapt.modeling.adapters import ADAPTERS
from hfadapt.core.errors import HfadaptError
from hfadapt.core.registry import did_you_mean

if TYPE_CHECKING:
    from hfadapt.core.recipe import Recipe
    from hfadapt.tasks.base import Task


def common_problems(recipe: "Recipe", task: "Task") -> list[str]:
    try:
        method = ADAPTERS.get(recipe.adapter.method, field="adapter.method")
    except HfadaptError as e:
        return [str(e)]
    problems: list[str] = []
    a = recipe.adapter
    if task.modality not in method.modalities:
        problems.append(f"adapter.method: '{a.method}' does not fit {task.name} (works for {', '.join(method.modalities)} models)")
    # fields of another method (adapter.use_dora with ia3) are refused by the schema: each method has its own section
    names = recipe.eval.metrics or task.default_metrics(recipe)
    known = metrics.available()
    for name in names:
        if name not in known:
            problems.append(f"eval.metrics: unknown metric '{name}'{did_you_mean(name, known)}; known: {', '.join(known)}")
    if recipe.data.streaming and recipe.train.max_steps is None:
        problems.append("data.streaming: a stream has no length to count epochs in; set train.max_steps")
    if recipe.data.streaming and recipe.train.group_by_length:
        problems.append("train.group_by_length: a stream's lengths are not known in advance; set train.group_by_length=false")
    if recipe.train.liger_kernel and not task.liger_kernel:
        # liger replaces a causal LM's forward (fused LM head + loss); on another head it would be wrong
        problems.append(f"train.liger_kernel: Liger's kernels are for causal-lm models, not {task.name}; set train.liger_kernel=false")
    best = recipe.eval.best_metric
    keys = ["loss", *task.extra_result_keys] + [k for n in names if n in known for k in metrics.result_keys(n)]
    if recipe.search is not None:
        problems += _objective_problems(recipe, task, keys)
    if best is not None:
        if best not in keys:
            problems.append(f"eval.best_metric: '{best}' is not computed{did_you_mean(best, keys)}; choose from {', '.join(keys)}")
        if recipe.data.validation_split is None:
            problems.append("eval.best_metric: needs an evaluation split (data.validation_split)")
    return problems


def _objective_problems(recipe: "Recipe", task: "Task", keys: list[str]) -> list[str]:
    """hfadapt tune optimises an evaluation result: one the task reports, on an evaluation split."""
    metric = recipe.search.objective.metric or recipe.eval.best_metric or task.default_best_metric  # type: ignore[union-attr]
    if metric is None:
        return ["search.objective.metric: required (or eval.best_metric): the evaluation result the study optimises"]
    if metric not in keys:
        return [f"search.objective.metric: '{metric}' is not reported by {task.name}{did_you_mean(metric, keys)}; choose from {', '.join(keys)}"]
    if recipe.data.validation_split is None:
        return ["search.objective.metric: needs an evaluation split (data.validation_split)"]
    return []
