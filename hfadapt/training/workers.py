"""How many DataLoader worker processes a run uses (train.num_workers; None: decided here).

Image and audio tasks decode (and augment) every example on the fly, in `with_transform`: in the
training process that work sits between two GPU steps and starves the GPU, so on CUDA they get
worker processes by default, as a practitioner would set them: min(8, CPUs of this process's share
of the node - 1), one CPU left to the training process itself. On a CPU device the workers would
take cores from the model's own compute threads (measured in the README), and text tasks are
tokenised up front, so both default to 0. Streams also stay at 0: every worker would replay the
whole stream.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from accelerate import Accelerator

    from hfadapt.core.recipe import Recipe
    from hfadapt.tasks.base import Task

MAX_AUTO_WORKERS = 8  # beyond this, decoding rarely is the bottleneck and each worker costs memory


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: what a container or `taskset` allows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_num_workers(asked: int | None, modality: str, device_type: str, processes_per_node: int, streaming: bool = False,
                        cpus: int | None = None) -> int:
    """train.num_workers as given, or the default for this task and device (module docstring)."""
    if asked is not None:
        return asked
    if streaming or modality not in ("image", "audio") or device_type != "cuda":
        return 0
    share = (usable_cpus() if cpus is None else cpus) // max(processes_per_node, 1)
    return max(0, min(MAX_AUTO_WORKERS, share - 1))


def run_workers(recipe: "Recipe", task: "Task", accelerator: "Accelerator") -> int:
    """The worker count of this run's loaders (training and evaluation)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes) or 1)  # processes sharing this node's CPUs
    return resolve_num_workers(recipe.train.num_workers, task.modality, accelerator.device.type, local, recipe.data.streaming)
