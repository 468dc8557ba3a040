"""Checks shared by the tasks that train on preference pairs (preference, reward-model): exact resume
after a kill, and 2 processes (torchrun, gloo) == 1 process, as tests/test_resume.py and
tests/test_distributed.py check them for the other tasks."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from tests.conftest import assert_same_adapter, train_interrupted_then_resumed


# ---- exact resume ----------------------------------------------------------------------------------
def resumed_equals_uninterrupted(recipe: Callable[[str], Any], kill_at: int) -> tuple[Any, Any]:
    """Train `recipe("full")` through, and `recipe("resumed")` killed after step `kill_at` then resumed
    with --resume: the same per-step losses, logged figures (evaluations included), adapter weights and
    metrics, bit for bit. Returns (full, resumed) TrainResults for the task's own checks.

    `recipe(name)` gives the recipe writing to its own run directory; it should keep dropout on
    (data.disable_dropout false, adapter.dropout > 0) so the RNG state must come back too."""
    from hfadapt import train

    full = train(recipe("full"))
    resumed = train_interrupted_then_resumed(recipe("resumed"), crash_at=kill_at)
    assert resumed.state.global_step == full.state.global_step
    assert resumed.losses == full.losses and len(set(full.losses)) > 1
    # as JSON: a figure may be NaN (KTO without a side in a whole evaluation), and NaN != NaN
    assert json.dumps(resumed.state.log_history) == json.dumps(full.state.log_history)
    assert_same_adapter(full.output_dir, resumed.output_dir)
    nonperf = lambda m: {k: v for k, v in m.items() if not k.startswith("perf/")}  # noqa: E731 - timings differ
    assert json.dumps(nonperf(resumed.metrics)) == json.dumps(nonperf(full.metrics))
    return full, resumed


# ---- 2 processes == 1 process --------------------------------------------------------------------------
STEPS, GLOBAL_BATCH, EVAL_BATCH, EVAL_STEPS = 8, 8, 5, 4


def two_process_recipes(tmp: Path, task: str, model: str, data_file: Path, data: dict[str, Any],
                        sections: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Recipe files "one" (batch GLOBAL_BATCH) and "two" (half of it on each of 2 processes) of `task`,
    writing to tmp/run-one and tmp/run-two: STEPS steps, evaluation every EVAL_STEPS in batches of
    EVAL_BATCH (with 16 held-out pairs the last batch is padded under 2 processes and dropped again).
    `sections`: the task's own recipe sections (online-rl's rl)."""

    def write(name: str, batch_size: int) -> Path:
        raw = {"name": name, "task": task, "model": {"name_or_path": model},
               "data": {"train_files": [str(data_file)], "validation_size": 0.25, **data},
               "adapter": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
               "train": {"max_steps": STEPS, "batch_size": batch_size, "eval_batch_size": EVAL_BATCH, "eval_steps": EVAL_STEPS,
                         "learning_rate": 2e-2, "logging_steps": 1, "seed": 7, "log_with": []},
               "output": {"dir": str(tmp / f"run-{name}")}, **(sections or {})}
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return write("one", GLOBAL_BATCH), write("two", GLOBAL_BATCH // 2)


def two_processes_equal_one(tmp: Path, one: Path, two: Path, figures: str, n_validation: int = 16,
                            units: str = "tokens", loss_falls: bool = True) -> tuple[dict, dict]:
    """Train recipe `one` in one process and `two` in two (torchrun, gloo), concurrently through the CLI;
    check that per-step losses, the logged training figures whose names start with `figures`, the adapter
    weights, every evaluation (n_validation pairs each, each counted once), metrics.json and the throughput
    count of `units` agree. `loss_falls`: the loss of the last step is below the first (not so for a policy
    gradient's surrogate). Returns the two runs as tests/test_distributed.py's _read_run gives them (perf/ apart)."""
    from tests.test_distributed import _Proc, _assert_metrics_close, _check, _env, _eval_logs, _free_port, _read_run, _run_all, _torchrun

    two_cmd = _torchrun() + ["--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                             "-m", "hfadapt", "train", str(two)]
    results = _run_all([_Proc("2proc", two_cmd, tmp, _env(tmp / "cache-2")),
                        _Proc("1proc", [sys.executable, "-m", "hfadapt", "train", str(one)], tmp, _env(tmp / "cache-1"))])
    for name, (cmd, rc, out, err) in results.items():
        _check(name, cmd, rc, out, err)
    assert "on 2 process(es)" in results["2proc"][2], results["2proc"][2][-2000:]
    r1, r2 = _read_run(tmp / "run-one"), _read_run(tmp / "run-two")

    l1, l2 = torch.tensor(r1["state"]["losses"]), torch.tensor(r2["state"]["losses"])
    assert len(l1) == STEPS and torch.allclose(l1, l2, rtol=1e-4, atol=1e-5), (l1.tolist(), l2.tolist())
    assert not loss_falls or l1[-1] < l1[0]  # it trained
    train_logs = lambda s: [{k: v for k, v in h.items() if k.startswith(figures)} for h in s["log_history"] if "train/loss" in h]  # noqa: E731
    logged = train_logs(r1["state"])
    assert len(logged) == STEPS and all(logged), f"no {figures}* figure logged at every step"
    for h1, h2 in zip(logged, train_logs(r2["state"]), strict=True):
        _assert_metrics_close(h1, h2, "training figures")
    assert r1["adapter"].keys() == r2["adapter"].keys()
    for key, weight in r1["adapter"].items():
        assert torch.allclose(weight, r2["adapter"][key], rtol=1e-4, atol=1e-5), key
    e1, e2 = _eval_logs(r1["state"]), _eval_logs(r2["state"])
    assert [h["step"] for h in e1] == [h["step"] for h in e2] == list(range(EVAL_STEPS, STEPS + 1, EVAL_STEPS))
    for h1, h2 in zip(e1, e2):
        _assert_metrics_close(h1, h2, f"evaluation at step {h1['step']}")
        assert h1["eval/samples"] == h2["eval/samples"] == n_validation
    _assert_metrics_close(r1["metrics"], r2["metrics"], "metrics.json")
    assert r1["perf"][units] == r2["perf"][units]
    return r1, r2
