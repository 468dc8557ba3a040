"""train.mixed_precision=auto: the launcher's precision, else the device's; explicit values must agree with a launch."""

from __future__ import annotations

import pytest

from hfadapt.core.errors import HfadaptError
from hfadapt.training.precision import resolve_precision


@pytest.mark.parametrize(
    ("recipe", "env", "cuda", "bf16", "expected"),
    [
        ("auto", {}, False, False, "no"),  # CPU: fp32
        ("auto", {}, True, True, "bf16"),  # Ampere and newer
        ("auto", {}, True, False, "fp16"),  # V100, T4: fp16 with loss scaling
        ("auto", {"ACCELERATE_MIXED_PRECISION": "fp16"}, True, True, "fp16"),  # the launch decides an auto recipe
        ("auto", {"ACCELERATE_MIXED_PRECISION": "no"}, True, True, "bf16"),  # "no" is Accelerate's unset
        ("no", {}, True, True, "no"),  # an explicit value wins over the device
        ("bf16", {"ACCELERATE_MIXED_PRECISION": "bf16"}, False, False, "bf16"),
    ],
)
def test_auto_follows_the_launch_then_the_device(recipe, env, cuda, bf16, expected, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert resolve_precision(recipe, env) == expected


def test_an_explicit_value_the_launch_contradicts_is_refused() -> None:
    with pytest.raises(HfadaptError, match=r"train.mixed_precision: the launch asks for fp16 .* the recipe says bf16"):
        resolve_precision("bf16", {"ACCELERATE_MIXED_PRECISION": "fp16"})


def test_a_default_run_records_what_auto_became(finished_run) -> None:
    """The default recipe value is auto; the run keeps `auto` in its recipe and run_info.json says what ran
    (fp32 on a CPU, as in CI)."""
    import json

    from hfadapt.training.precision import device_default
    from hfadapt.rundir.layout import RunDir

    run = RunDir(finished_run.output_dir)
    info = json.loads(run.info_file.read_text())
    recipe_text = run.recipe_file.read_text()
    assert "mixed_precision: auto" in recipe_text
    assert info["mixed_precision"] == device_default()


def test_an_unquoted_yaml_no_means_no() -> None:
    """YAML 1.1 reads `mixed_precision: no` and the override `train.mixed_precision=no` as false."""
    from hfadapt import Recipe

    assert Recipe.from_yaml("text/tiny-sentiment-offline", overrides=["train.mixed_precision=no"]).train.mixed_precision == "no"
    assert Recipe.from_yaml("text/tiny-sentiment-offline").train.mixed_precision == "auto"
