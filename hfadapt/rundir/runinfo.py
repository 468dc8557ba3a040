"""What a run ran on: library versions, hardware, process count and the launching command.

Written to run_info.json at the end of training; the model card reads it.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from accelerate import Accelerator

LIBRARIES = ("hfadapt", "torch", "transformers", "peft", "accelerate", "datasets", "evaluate", "huggingface_hub")


def library_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of LIBRARIES and `extra` (optional packages the run used)."""
    out = {}
    for name in LIBRARIES + extra:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def launcher(env: dict[str, str] | None = None) -> str:
    """'accelerate', 'torchrun' or 'python': what started this process, from the launchers' variables.

    `accelerate launch` sets ACCELERATE_MIXED_PRECISION / ACCELERATE_DYNAMO_BACKEND in its children
    (also when it uses torch.distributed.run underneath, so it is checked first); torchrun (torch
    elastic) sets TORCHELASTIC_RUN_ID.
    """
    env = os.environ if env is None else env
    if "ACCELERATE_DYNAMO_BACKEND" in env or "ACCELERATE_MIXED_PRECISION" in env:
        return "accelerate"
    if "TORCHELASTIC_RUN_ID" in env:
        return "torchrun"
    return "python"


def launch_command(num_processes: int, env: dict[str, str] | None = None, argv: list[str] | None = None) -> str:
    """The command line that started this run, as the user would type it."""
    env = os.environ if env is None else env
    argv = list(sys.argv if argv is None else argv)
    if not argv or os.path.basename(argv[0]) not in ("hfadapt", "__main__.py"):
        return ""  # started from Python: no command to show
    cmd = "hfadapt " + shlex.join(argv[1:])
    how = launcher(env)
    module = "-m " + cmd  # launchers start the package as a module
    if how == "accelerate":
        machines = int(env.get("ACCELERATE_NUM_MACHINES", env.get("GROUP_WORLD_SIZE", "1")) or 1)
        extra = f" --num_machines {machines}" if machines > 1 else ""
        return f"accelerate launch --num_processes {num_processes}{extra} {module}"
    if how == "torchrun":
        local = int(env.get("LOCAL_WORLD_SIZE", num_processes) or num_processes)
        nodes = max(1, num_processes // max(local, 1))
        extra = f" --nnodes {nodes}" if nodes > 1 else ""
        return f"torchrun --nproc_per_node {local}{extra} {module}"
    if num_processes > 1:  # RANK/WORLD_SIZE set by hand or another launcher: say so rather than guess
        return f"{cmd}  # {num_processes} processes, launcher unknown"
    return cmd


@dataclass(frozen=True)
class RunInfo:
    """run_info.json: what a run ran on. Fields missing in an older file keep their defaults."""

    versions: dict[str, str] = field(default_factory=dict)
    python: str = ""
    hardware: str = "unknown"
    num_processes: int = 1
    distributed_type: str = "NO"
    mixed_precision: str | None = None
    command: str = ""  # as the user would type it; "" when started from Python
    liger_kernel: bool = False  # whether Liger's kernels were applied to the model (train.liger_kernel)
    num_workers: int = 0  # DataLoader worker processes per training process, as resolved (hfadapt.workers)
    reward_functions: dict[str, str] = field(default_factory=dict)  # online-rl: 'file.py:name' -> the file's sha256

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunInfo":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def precision_that_ran(accelerator: Accelerator) -> str:
    """The mixed precision the model really ran in: Accelerate reports the asked one even where it
    did not autocast (fp16 on CPU); DeepSpeed / Megatron-LM handle precision themselves."""
    kind = str(accelerator.distributed_type).split(".")[-1]
    if accelerator.native_amp or kind in ("DEEPSPEED", "MEGATRON_LM"):
        return accelerator.mixed_precision
    return "no"


def collect(accelerator: Accelerator, liger_kernel: bool = False, num_workers: int = 0) -> RunInfo:
    import torch

    device = accelerator.device
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = f"{device.type} ({platform.processor() or platform.machine()})"
    return RunInfo(
        versions=library_versions(("liger-kernel",) if liger_kernel else ()),  # listed only where it ran
        python=platform.python_version(),
        hardware=hardware,
        num_processes=accelerator.num_processes,
        distributed_type=str(accelerator.distributed_type).split(".")[-1],
        mixed_precision=precision_that_ran(accelerator),
        command=launch_command(accelerator.num_processes),
        liger_kernel=liger_kernel,
        num_workers=num_workers,
    )
