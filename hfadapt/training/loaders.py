"""The evaluation loader: one builder for the evaluations during training (coordinator) and for
`hfadapt eval` on a finished run (inference/run_model.py), so both read batches the same way.

Batches of train.eval_batch_size (else train.batch_size), in the task's evaluation order (longest
first where the task restores dataset order: grouping.eval_order), with the run's worker count
(workers.py). Page-locked batches on CUDA (faster host-to-GPU copies); with workers, they stay
alive between evaluations, so one loader serving every evaluation of a run starts them once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from accelerate import Accelerator

    from hfadapt.core.recipe import Recipe
    from hfadapt.tasks.base import Split, Task


@dataclass
class EvalLoader:
    loader: Any  # the DataLoader, prepared by Accelerate
    order: list[int] | None  # the sampler's order of the dataset's rows, or None for dataset order


def eval_loader_options(recipe: Recipe, num_workers: int, device_type: str) -> dict[str, Any]:
    """The DataLoader arguments of an evaluation loader beyond dataset, order and collator."""
    return {
        "batch_size": recipe.train.eval_batch_size or recipe.train.batch_size,
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,  # one loader serves every evaluation: start its workers once
        "pin_memory": device_type == "cuda",  # page-locked batches: faster host-to-GPU copies
    }


def build_eval_loader(
    recipe: Recipe, task: Task, dataset: Split, collate_fn: Callable[[list[dict]], dict], accelerator: Accelerator
) -> EvalLoader:
    """The evaluation loader of `dataset` (a preprocessed split), prepared by `accelerator`."""
    from torch.utils.data import DataLoader

    from hfadapt.data.grouping import eval_order
    from hfadapt.training.workers import run_workers

    order = eval_order(task, dataset)  # longest first where the task restores dataset order
    options = eval_loader_options(recipe, run_workers(recipe, task, accelerator), accelerator.device.type)
    loader = DataLoader(dataset, sampler=order, collate_fn=collate_fn, **options)
    return EvalLoader(accelerator.prepare_data_loader(loader), order)
