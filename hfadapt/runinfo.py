"""What a run ran on: library versions, hardware, process count and the launching command.

Written to run_info.json at the end of training; the model card reads it.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from importlib import metadata
from typing import Any

LIBRARIES = ("hfadapt", "torch", "transformers", "peft", "accelerate", "datasets", "evaluate", "huggingface_hub")


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def launch_command(num_processes: int) -> str:
    """The command line that started this run, as the user would type it."""
    argv = list(sys.argv)
    if argv and os.path.basename(argv[0]) in ("hfadapt", "__main__.py"):
        cmd = "hfadapt " + shlex.join(argv[1:])
    else:
        cmd = ""  # started from Python: no command to show
    if cmd and num_processes > 1:
        cmd = f"accelerate launch --num_processes {num_processes} -m " + cmd
    return cmd


def collect(accelerator: Any) -> dict[str, Any]:
    import torch

    device = accelerator.device
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = f"{device.type} ({platform.processor() or platform.machine()})"
    return {
        "versions": library_versions(),
        "python": platform.python_version(),
        "hardware": hardware,
        "num_processes": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type).split(".")[-1],
        "mixed_precision": accelerator.mixed_precision,
        "command": launch_command(accelerator.num_processes),
    }
