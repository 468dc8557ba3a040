"""Two CPU processes (torchrun, gloo) train exactly like one process with the same global batch.

The same recipe runs twice, both times through the CLI in a subprocess, concurrently:
  * 1 process,  train.batch_size 8
  * 2 processes, train.batch_size 4 (accelerate's BatchSamplerShard gives process i the
    batches i, i+2, ... so every optimizer step sees the same 8 examples as the 1-process run)
and the per-step losses, the final adapter weights and the evaluation metrics must agree.

The validation set (16 examples, eval_batch_size 5) is not a multiple of 2 * 5, so under two
processes accelerate pads the last eval batch with repeated examples; `gather_for_metrics`
must drop them again, which `eval/samples` (examples scored) checks exactly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

N_EXAMPLES = 64  # rows of the sentiment_csv fixture (and of varied_csv)
VALIDATION_SIZE = 0.25
N_VALIDATION = round(N_EXAMPLES * VALIDATION_SIZE)  # 16
N_TRAIN = N_EXAMPLES - N_VALIDATION  # 48
GLOBAL_BATCH = 8
EVAL_BATCH = 5
MAX_STEPS = 8  # 6 steps per epoch: the run crosses into a second, reshuffled epoch
EVAL_STEPS = 4  # evaluate mid-run (and once more at the end)
TIMEOUT_S = 300
RTOL, ATOL = 1e-4, 1e-5

assert N_TRAIN % GLOBAL_BATCH == 0, "every step must see a full global batch"
assert N_VALIDATION % (2 * EVAL_BATCH) != 0, "the last eval batch must need padding under 2 processes"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun() -> list[str]:
    script = Path(sys.executable).parent / "torchrun"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "torch.distributed.run"]


def _write_recipe(
    path: Path, tiny_bert: str, sentiment_csv: str, batch_size: int, run_dir: Path,
    train: dict[str, Any] | None = None, adapter: dict[str, Any] | None = None,
) -> Path:
    recipe = {
        "name": path.stem,
        "task": "text-classification",
        "model": {"name_or_path": tiny_bert},
        "data": {"train_files": [sentiment_csv], "validation_size": VALIDATION_SIZE, "max_length": 16},
        "adapter": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "train": {
            "max_steps": MAX_STEPS,
            "batch_size": batch_size,
            "eval_batch_size": EVAL_BATCH,
            "eval_steps": EVAL_STEPS,
            "learning_rate": 2e-2,
            "logging_steps": 1,
            "seed": 7,
            "log_with": [],
        },
        "output": {"dir": str(run_dir)},
    }
    recipe["train"].update(train or {})
    recipe["adapter"].update(adapter or {})
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        # Each run gets its own datasets cache: the two runs go concurrently and would otherwise
        # build the same cache entries at the same time.
        HF_DATASETS_CACHE=str(cache),
        PYTHONUNBUFFERED="1",
    )
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


class _Proc:
    """A subprocess in its own process group, output to files (no pipe to fill up)."""

    def __init__(self, name: str, cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.name, self.cmd = name, cmd
        self.out_path, self.err_path = cwd / f"{name}.stdout", cwd / f"{name}.stderr"
        self._out, self._err = open(self.out_path, "w"), open(self.err_path, "w")
        self.start = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self._out, stderr=self._err, start_new_session=True)

    def wait(self, deadline: float) -> tuple[int | None, str, str]:
        try:
            rc: int | None = self.proc.wait(timeout=max(1.0, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            self.kill()
            rc = None
        self._out.close()
        self._err.close()
        return rc, self.out_path.read_text(), self.err_path.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # torchrun's workers too
            except ProcessLookupError:
                pass
            self.proc.wait()


def _run_all(procs: list["_Proc"]) -> dict[str, tuple[list[str], int | None, str, str]]:
    """Wait for processes started together (one shared deadline), kill what is left, and return
    name -> (command, exit code, stdout, stderr)."""
    deadline = time.perf_counter() + TIMEOUT_S
    try:
        return {p.name: (p.cmd, *p.wait(deadline)) for p in procs}
    finally:
        for p in procs:
            p.kill()


def _check(name: str, cmd: list[str], rc: int | None, out: str, err: str) -> None:
    if rc == 0:
        return
    what = f"timed out after {TIMEOUT_S}s" if rc is None else f"exited with {rc}"
    pytest.fail(f"{name} run {what}\ncommand: {' '.join(cmd)}\n--- stdout (tail) ---\n{out[-3000:]}\n--- stderr (tail) ---\n{err[-8000:]}")


def _read_run(run: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "state": json.loads((run / "trainer_state.json").read_text()),
        "metrics": {k: v for k, v in metrics.items() if not k.startswith("perf/")},  # timings differ between runs
        "perf": {k[5:]: v for k, v in metrics.items() if k.startswith("perf/")},
        "adapter": load_file(str(run / "adapter" / "adapter_model.safetensors")),
    }


def _eval_logs(state: dict[str, Any]) -> list[dict[str, Any]]:
    return [h for h in state["log_history"] if any(k.startswith("eval/") for k in h)]


def _assert_metrics_close(one: dict[str, Any], two: dict[str, Any], where: str) -> None:
    assert sorted(one) == sorted(two), f"{where}: different keys {sorted(one)} vs {sorted(two)}"
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=RTOL, abs=ATOL), f"{where}: {key} 1 process {one[key]} vs 2 processes {two[key]}"


@pytest.fixture(scope="module")
def varied_csv(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The sentiment rows with 0..10 extra filler words (5..16 tokens): with train.group_by_length on (the
    default for text), the batches are length-grouped, and must still be the same global batches."""
    import random

    from tests.conftest import FILLERS, sentiment_rows, write_csv

    rng = random.Random(5)
    rows = [{**r, "text": r["text"] + "".join(" " + rng.choice(FILLERS) for _ in range(rng.randint(0, 10)))} for r in sentiment_rows(N_EXAMPLES)]
    return str(write_csv(tmp_path_factory.mktemp("varied") / "varied.csv", rows))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_bert: str, varied_csv: str) -> dict[str, dict[str, Any]]:
    """Train the 1-process and the 2-process run concurrently; return what each wrote."""
    sentiment_csv = varied_csv
    root = tmp_path_factory.mktemp("distributed")
    one_recipe = _write_recipe(root / "one.yaml", tiny_bert, sentiment_csv, GLOBAL_BATCH, root / "run-1proc")
    two_recipe = _write_recipe(root / "two.yaml", tiny_bert, sentiment_csv, GLOBAL_BATCH // 2, root / "run-2proc")

    two_cmd = _torchrun() + [
        "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "hfadapt", "train", str(two_recipe),
    ]
    one_cmd = [sys.executable, "-m", "hfadapt", "train", str(one_recipe)]
    procs = [
        _Proc("2proc", two_cmd, root, _env(root / "cache-2proc")),
        _Proc("1proc", one_cmd, root, _env(root / "cache-1proc")),
    ]
    results = _run_all(procs)
    for name, (cmd, rc, out, err) in results.items():
        _check(name, cmd, rc, out, err)

    banners = {name: out for name, (_, _, out, _) in results.items()}
    assert "on 1 process(es)" in banners["1proc"], banners["1proc"][-2000:]
    # One banner only (from the main process), naming 2 processes: not two independent 1-process runs.
    assert banners["2proc"].count("hfadapt: text-classification") == 1 and "on 2 process(es)" in banners["2proc"], (
        "torchrun did not give one 2-process run:\n" + banners["2proc"][-3000:]
    )
    return {"1proc": _read_run(root / "run-1proc"), "2proc": _read_run(root / "run-2proc")}


@pytest.mark.slow
def test_two_processes_match_one_process(runs: dict[str, dict[str, Any]]) -> None:
    import torch

    one, two = runs["1proc"], runs["2proc"]

    # ---- per-step losses ----
    for run in (one, two):
        assert run["state"]["global_step"] == MAX_STEPS
        assert len(run["state"]["losses"]) == MAX_STEPS
    l1, l2 = torch.tensor(one["state"]["losses"]), torch.tensor(two["state"]["losses"])
    assert torch.allclose(l1, l2, rtol=RTOL, atol=ATOL), f"per-step losses differ:\n1 process:   {l1.tolist()}\n2 processes: {l2.tolist()}"

    # ---- final adapter weights ----
    w1, w2 = one["adapter"], two["adapter"]
    assert sorted(w1) == sorted(w2)
    assert any("lora_B" in k for k in w1)
    for key in w1:
        if "lora_B" in key:  # initialised to zero: nonzero means training moved it (the comparison is not vacuous)
            assert w1[key].abs().max() > 1e-3, f"{key} did not train"
        diff = (w1[key] - w2[key]).abs().max().item()
        assert torch.allclose(w1[key], w2[key], rtol=RTOL, atol=ATOL), f"adapter weight {key} differs (max abs diff {diff:.3g})"

    # ---- evaluation: mid-run and final, and the example count exactly ----
    e1, e2 = _eval_logs(one["state"]), _eval_logs(two["state"])
    assert [h["step"] for h in e1] == [h["step"] for h in e2] == list(range(EVAL_STEPS, MAX_STEPS + 1, EVAL_STEPS))
    for h1, h2 in zip(e1, e2):
        _assert_metrics_close(h1, h2, f"evaluation at step {h1['step']}")
        assert h1["eval/samples"] == h2["eval/samples"] == N_VALIDATION
    m1, m2 = one["metrics"], two["metrics"]
    assert m1["eval/samples"] == N_VALIDATION, m1
    assert m2["eval/samples"] == N_VALIDATION, m2  # accelerate's padding of the last eval batch dropped again
    _assert_metrics_close(m1, m2, "metrics.json")

    # ---- throughput: every example counted once, whatever the process count ----
    for run in (one, two):
        assert run["perf"]["samples"] == MAX_STEPS * GLOBAL_BATCH, run["perf"]
        assert run["perf"]["samples_per_s"] * run["perf"]["train_time_s"] == pytest.approx(MAX_STEPS * GLOBAL_BATCH, rel=1e-3)
    assert one["perf"]["tokens"] == two["perf"]["tokens"]  # the same examples, padded differently


# ---- a 2-process run killed on one rank resumes exactly ---------------------------------------------

SAVE_STEPS = 2
KILL_STEP = 5  # rank 1 dies after step 5; rank 0 then blocks in step 6's all-reduce: resume from checkpoint-4

# Run through torchrun like `-m hfadapt train`, plus a callback that SIGKILLs rank 1 (no cleanup,
# no exception handler: as if the machine lost that process).
KILLER = """
import os, signal, sys
from hfadapt import Recipe, train

def kill_rank_1(state):
    if os.environ["RANK"] == "1" and state.global_step == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)

train(Recipe.from_yaml(sys.argv[1]), callbacks=[kill_rank_1])
"""


def _two_processes(*args: str) -> list[str]:
    return _torchrun() + [
        "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *args,
    ]


@pytest.mark.slow
def test_two_processes_killed_on_one_rank_resume_exactly(tmp_path: Path, tiny_bert: str, sentiment_csv: str) -> None:
    import torch

    extra = {"train": {"save_steps": SAVE_STEPS}, "adapter": {"dropout": 0.1}}  # dropout: every rank's RNG must come back
    full_recipe = _write_recipe(tmp_path / "full.yaml", tiny_bert, sentiment_csv, GLOBAL_BATCH // 2, tmp_path / "run-full", **extra)
    killed_recipe = _write_recipe(tmp_path / "killed.yaml", tiny_bert, sentiment_csv, GLOBAL_BATCH // 2, tmp_path / "run-killed", **extra)
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)

    procs = [
        _Proc("full", _two_processes("-m", "hfadapt", "train", str(full_recipe)), tmp_path, _env(tmp_path / "cache-full")),
        _Proc("killed", _two_processes(str(killer), str(killed_recipe), str(KILL_STEP)), tmp_path, _env(tmp_path / "cache-killed")),
    ]
    results = _run_all(procs)
    _check("full", *results["full"])
    cmd, rc, out, err = results["killed"]
    assert rc not in (0, None), f"the killed run exited with {rc}\n{out[-2000:]}\n{err[-4000:]}"
    run = tmp_path / "run-killed"
    assert not (run / "adapter").exists()
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == [f"checkpoint-{s}" for s in range(SAVE_STEPS, KILL_STEP + 1, SAVE_STEPS)], checkpoints

    resume = _Proc("resumed", _two_processes("-m", "hfadapt", "train", str(killed_recipe), "--resume"), tmp_path, _env(tmp_path / "cache-killed"))
    try:
        rc, out, err = resume.wait(time.perf_counter() + TIMEOUT_S)
    finally:
        resume.kill()
    _check("resumed", resume.cmd, rc, out, err)
    assert "on 2 process(es) | resuming from checkpoint-4" in out, out[-3000:]

    full, resumed = _read_run(tmp_path / "run-full"), _read_run(run)
    assert resumed["state"]["global_step"] == MAX_STEPS
    assert resumed["state"]["losses"] == full["state"]["losses"]  # bit-identical, dropout included
    assert resumed["state"]["log_history"] == full["state"]["log_history"]
    assert sorted(resumed["adapter"]) == sorted(full["adapter"])
    for key, weight in full["adapter"].items():
        assert torch.equal(resumed["adapter"][key], weight), key
    assert resumed["metrics"] == full["metrics"]
    # throughput covers the whole run: checkpoint-4's totals plus the resumed session's steps 5..8
    assert resumed["perf"]["sessions"] == 2 and full["perf"]["sessions"] == 1
    assert resumed["perf"]["samples"] == full["perf"]["samples"] == MAX_STEPS * GLOBAL_BATCH


# ---- two "nodes" on this machine ---------------------------------------------------------------------
@pytest.mark.slow
def test_two_nodes_train_like_one_two_process_run(tmp_path: Path, tiny_bert: str, varied_csv: str, runs: dict[str, dict[str, Any]]) -> None:
    """Two torchrun agents (--nnodes 2, one process each) meet through a c10d rendezvous on localhost,
    as two machines of a cluster would, and train exactly like the 2-process run on one node."""
    import torch

    recipe = _write_recipe(tmp_path / "nodes.yaml", tiny_bert, varied_csv, GLOBAL_BATCH // 2, tmp_path / "run-2nodes")
    endpoint = f"127.0.0.1:{_free_port()}"

    def agent(is_host: int) -> list[str]:
        return _torchrun() + [
            "--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint,
            "--rdzv_id", "hfadapt-two-nodes", "--rdzv_conf", f"is_host={is_host}",
            "-m", "hfadapt", "train", str(recipe),
        ]

    # Both "nodes" share this file system, as cluster nodes share the run directory; each has its own cache.
    procs = [_Proc("node0", agent(1), tmp_path, _env(tmp_path / "cache-0")), _Proc("node1", agent(0), tmp_path, _env(tmp_path / "cache-1"))]
    results = _run_all(procs)
    for name, (cmd, rc, out, err) in results.items():
        _check(name, cmd, rc, out, err)
    banners = "".join(out for _, _, out, _ in results.values())
    assert banners.count("hfadapt: text-classification") == 1 and "on 2 process(es)" in banners, banners[-3000:]

    nodes, two = _read_run(tmp_path / "run-2nodes"), runs["2proc"]
    l_nodes, l_two = torch.tensor(nodes["state"]["losses"]), torch.tensor(two["state"]["losses"])
    assert torch.allclose(l_nodes, l_two, rtol=RTOL, atol=ATOL), f"per-step losses differ:\n2 nodes: {l_nodes.tolist()}\n2 processes: {l_two.tolist()}"
    for key, weight in two["adapter"].items():
        assert torch.allclose(nodes["adapter"][key], weight, rtol=RTOL, atol=ATOL), key
    _assert_metrics_close(two["metrics"], nodes["metrics"], "metrics.json")
