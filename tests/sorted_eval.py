"""Evaluate one task twice: rows read longest first (grouping.eval_order, as training and `hfadapt eval`
do) and in dataset order. Tests compare the two: metrics, the predictions file and the per-example
inputs of the metric modules must be the same, in the same order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def evaluate_sorted_and_plain(task: Any, model: Any, processor: Any, info: Any, ds: Any, recipe: Any, names: list[str],
                              batch_size: int, out_dir: Path, monkeypatch: Any) -> dict[str, dict[str, Any]]:
    """{"sorted": ..., "plain": ...}, each {"results", "rows" (predictions file, or None), "metric_inputs"}."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from hfadapt import metrics
    from hfadapt.data.grouping import eval_order
    from hfadapt.tasks import EvalContext

    order = eval_order(task, ds)
    assert order is not None and order != sorted(order), "the sorted pass must really read another order"
    seen: list[tuple] = []  # what reached the metric modules, in the order it reached them
    real_load = metrics.load

    class Spy:  # a wrapper, not a patched module: metrics.load caches the modules for the whole session
        def __init__(self, name: str, module: Any) -> None:
            self.name, self.module = name, module

        def compute(self, **kwargs: Any) -> Any:
            seen.append((self.name, json.dumps(kwargs.get("predictions"), default=str), json.dumps(kwargs.get("references"), default=str)))
            return self.module.compute(**kwargs)

    def spying_load(name: str, *a: Any, **kw: Any) -> Any:
        return Spy(name, real_load(name, *a, **kw))

    monkeypatch.setattr(metrics, "load", spying_load)
    accelerator = Accelerator(cpu=True)
    out: dict[str, dict[str, Any]] = {}
    for name, sampler in (("sorted", order), ("plain", None)):
        seen.clear()
        file = out_dir / f"{name}.jsonl"
        dl = accelerator.prepare_data_loader(DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=task.collator(processor)))
        ctx = EvalContext(accelerator, recipe, processor, info, ds, "validation", tuple(names), predictions_file=file,
                          order=tuple(sampler) if sampler is not None else None)
        results = task.evaluate(ctx, model, dl)
        rows = [json.loads(line) for line in file.read_text().splitlines()] if file.exists() else None
        out[name] = {"results": results, "rows": rows, "metric_inputs": list(seen)}
    return out
