"""image-text-to-text: two CPU processes (torchrun, gloo) train exactly like one with the same global batch.

Every family (Idefics3; Qwen2-VL, whose positions depend on the images: M-RoPE over the image grid; LLaVA;
Gemma 3, whose image tokens attend both ways), through the CLI like tests/test_distributed.py: 1 process with
train.batch_size 8 against 2 processes with 4 each, run concurrently. Per-step losses, the final adapter (LoRA and the fully trained projector) and the evaluation
(loss, generated answers' exact_match, examples scored once despite the padded last eval batch) must agree.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

from hfadapt.modeling.towers import PROJECTOR_NAMES
from tests.test_distributed import ATOL, RTOL, _check, _env, _free_port, _Proc, _read_run, _run_all, _torchrun
from tests.test_image_text_to_text import FAMILY_FIXTURES
from tests.vlm_fixtures import write_colour_set

N_TRAIN = 16
GLOBAL_BATCH = 8
MAX_STEPS = 4  # 2 steps per epoch: the run crosses into a reshuffled epoch
EVAL_BATCH = 3  # 16 validation examples: under 2 processes the last eval batch is padded with repeats


def _recipe(path: Path, model: str, data: Path, batch_size: int, run: Path) -> Path:
    recipe = {
        "name": path.stem, "task": "image-text-to-text",
        "model": {"name_or_path": model, "train_projector": True},
        "data": {"train_files": [str(data)], "validation_files": [str(data)], "max_length": 64},
        "adapter": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "train": {"max_steps": MAX_STEPS, "batch_size": batch_size, "eval_batch_size": EVAL_BATCH, "learning_rate": 2e-2,
                  "logging_steps": 1, "seed": 3, "log_with": [],
                  # Grouped (the task's default) the rows of a global batch are summed in another order: losses agree
                  # to 5e-6, every weight to 1e-5 but 1-3 single lora_A elements out of 256 (up to 5.4e-4), whose
                  # step-2 gradient is rounding noise (~5e-9, the tensor's median 2e-3) that Adam's g / (|g| + eps)
                  # turns into a step-sized difference; with eps 1e-6 the gap is 1.2e-5 (docs/vision-language.md).
                  "group_by_length": False},
        "generation": {"max_new_tokens": 3},
        "output": {"dir": str(run)},
    }
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILY_FIXTURES))
def test_two_processes_match_one_process(family: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(FAMILY_FIXTURES[family])
    data = write_colour_set(tmp_path / "data", n=N_TRAIN)
    one = _recipe(tmp_path / "one.yaml", model, data, GLOBAL_BATCH, tmp_path / "run-1proc")
    two = _recipe(tmp_path / "two.yaml", model, data, GLOBAL_BATCH // 2, tmp_path / "run-2proc")
    two_cmd = _torchrun() + ["--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                             "-m", "hfadapt", "train", str(two)]
    results = _run_all([_Proc("2proc", two_cmd, tmp_path, _env(tmp_path / "cache-2proc")),
                        _Proc("1proc", [sys.executable, "-m", "hfadapt", "train", str(one)], tmp_path, _env(tmp_path / "cache-1proc"))])
    for name, (cmd, rc, out, err) in results.items():
        _check(name, cmd, rc, out, err)
    assert "on 2 process(es)" in results["2proc"][2], results["2proc"][2][-2000:]
    r1, r2 = _read_run(tmp_path / "run-1proc"), _read_run(tmp_path / "run-2proc")

    l1, l2 = torch.tensor(r1["state"]["losses"]), torch.tensor(r2["state"]["losses"])
    assert len(l1) == MAX_STEPS and torch.allclose(l1, l2, rtol=RTOL, atol=ATOL), f"per-step losses: {l1.tolist()} vs {l2.tolist()}"

    w1, w2 = r1["adapter"], r2["adapter"]
    assert sorted(w1) == sorted(w2) and any("lora_B" in k for k in w1) and any(p in k for k in w1 for p in PROJECTOR_NAMES)
    for key in w1:
        if "lora_B" in key:  # zero at start: nonzero means training moved it, so the comparison is not vacuous
            assert w1[key].abs().max() > 1e-3, f"{key} did not train"
        assert torch.allclose(w1[key], w2[key], rtol=RTOL, atol=ATOL), f"{key}: max abs diff {(w1[key] - w2[key]).abs().max().item():.3g}"

    m1, m2 = r1["metrics"], r2["metrics"]
    assert m1["eval/samples"] == m2["eval/samples"] == N_TRAIN  # the padded repeats dropped again
    for key in ("eval/loss", "eval/exact_match", "eval/tokens"):
        assert m2[key] == pytest.approx(m1[key], rel=RTOL, abs=ATOL), f"{key}: 1 process {m1[key]} vs 2 processes {m2[key]}"
