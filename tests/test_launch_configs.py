"""The launch configurations shipped in examples/launch are ones `accelerate launch` accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parents[1] / "examples" / "launch"
EXPECTED = {
    "single-gpu.yaml": ("NO", 1),
    "multi-gpu-ddp.yaml": ("MULTI_GPU", 8),
    "fsdp2-lora.yaml": ("FSDP", 8),
    "deepspeed-zero2.yaml": ("DEEPSPEED", 8),
    "deepspeed-zero3.yaml": ("DEEPSPEED", 8),
}


def test_every_shipped_config_is_listed() -> None:
    assert sorted(p.name for p in LAUNCH.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_reads_the_config(name: str) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(LAUNCH / name))
    kind, processes = EXPECTED[name]
    assert str(config.distributed_type).split(".")[-1] == kind and config.num_processes == processes
    # The recipe's train.mixed_precision is what runs (hfadapt passes it to Accelerator); the file must not pretend otherwise.
    assert config.mixed_precision == "no"
    assert (LAUNCH / name).read_text().startswith("# accelerate launch --config_file examples/launch/" + name)
    if kind == "FSDP":
        assert config.fsdp_config["fsdp_version"] == 2 and config.fsdp_config["fsdp_reshard_after_forward"] is True
    if kind == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] in (2, 3)


def test_slurm_script_is_valid_bash() -> None:
    script = LAUNCH / "slurm.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "--rdzv_backend c10d" in text and "-m hfadapt train" in text
