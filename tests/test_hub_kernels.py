"""Models load without transformers' Hub kernels: they are code fetched from the Hub at run time,
and offline on a GPU they crashed the first train/eval switch (seen on an H100, transformers 5.25)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable


def test_base_and_run_models_load_without_hub_kernels(make_recipe: Callable[..., Any], finished_run: Any) -> None:
    from hfadapt.modeling.models import load_base_model, load_run_model
    from hfadapt.rundir.layout import RunDir
    from hfadapt.tasks.base import get_task

    recipe = make_recipe()
    task = get_task(recipe.task)
    run = RunDir(Path(finished_run.output_dir))
    reloaded = load_run_model(run, task)
    assert reloaded.get_base_model().use_kernels is False
    model = load_base_model(recipe, task, task.info_from_config(reloaded.config))
    assert model.use_kernels is False
