"""eval_predictions.jsonl: per-example results of a run's final validation, for `hfadapt report`
(confusion matrix, most confident mistakes, QA split by answerable, sample generations).

Written at the end of training by the task's evaluate() when its context names a file
(EvalContext.predictions_file); one JSON object per example, in dataset order. Pushed with the
adapter, so a pulled Hub adapter reports the same views. Read back with RunDir.read_predictions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from hfadapt.tasks.base import EvalContext

MAX_TEXT = 300  # characters of an input kept per row
MAX_GENERATIONS = 100  # rows kept for generative tasks


def save_predictions(ctx: EvalContext, rows: Iterable[dict[str, Any]]) -> None:
    """Write `rows` to ctx.predictions_file (main process only; atomically). A no-op without a file."""
    path = getattr(ctx, "predictions_file", None)
    if path is None or not ctx.accelerator.is_main_process:
        return
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def input_texts(ctx: EvalContext, indices: Iterable[int]) -> list[str | None]:
    """The decoded inputs of rows of the evaluated (tokenized) dataset, shortened; None where there is no text."""
    ds = ctx.dataset
    if "input_ids" not in getattr(ds, "column_names", ()) or not hasattr(ctx.processor, "batch_decode"):
        return [None for _ in indices]
    indices = list(indices)
    ids = ds.select_columns(["input_ids"])[indices]["input_ids"] if indices else []
    return [t[:MAX_TEXT] for t in ctx.processor.batch_decode(ids, skip_special_tokens=True)]
