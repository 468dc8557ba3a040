"""Cross-field recipe checks that need the registries but not torch (`hfadapt validate`)."""

from __future__ import annotations

from typing import Any

from .errors import HfadaptError


def check_recipe(recipe: Any, where: str = "") -> None:
    from . import metrics
    from .adapters import ADAPTERS
    from .tasks import TASKS

    try:
        task = TASKS.get(recipe.task, field="task")
        method = ADAPTERS.get(recipe.adapter.method, field="adapter.method")
    except HfadaptError as e:
        raise HfadaptError(where + str(e)) from None
    problems: list[str] = []
    a = recipe.adapter
    if task.modality not in method.modalities:
        problems.append(f"adapter.method: '{a.method}' does not fit {task.name} (works for {', '.join(method.modalities)} models)")
    if a.use_dora and a.method != "lora":
        problems.append("adapter.use_dora: DoRA is a LoRA variant; set adapter.method=lora")
    if a.use_rslora and a.method not in ("lora", "adalora"):
        problems.append("adapter.use_rslora: rsLoRA applies to lora and adalora")
    names = recipe.eval.metrics or task.default_metrics(recipe)
    known = metrics.available()
    for name in names:
        if name not in known:
            from .registry import did_you_mean

            problems.append(f"eval.metrics: unknown metric '{name}'{did_you_mean(name, known)}; known: {', '.join(known)}")
    best = recipe.eval.best_metric
    if best is not None:
        keys = ["loss", *getattr(task, "extra_result_keys", ())] + [k for n in names if n in known for k in metrics.result_keys(n)]
        if best not in keys:
            from .registry import did_you_mean

            problems.append(f"eval.best_metric: '{best}' is not computed{did_you_mean(best, keys)}; choose from {', '.join(keys)}")
        if recipe.data.validation_split is None:
            problems.append("eval.best_metric: needs an evaluation split (data.validation_split)")
    problems += task.check(recipe)
    if problems:
        raise HfadaptError(where + "; ".join(problems))
