"""`hfadapt runs`: a finished, a failed, an interrupted (killed) and a running run told apart from
their files, never from their folder names."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hfadapt.cli import main
from tests.conftest import sentiment_recipe

KILLER = """
import os, signal, sys
from hfadapt import Recipe, train

def kill(state):
    if state.global_step == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no status update: as if the machine went down

train(Recipe.from_yaml(sys.argv[1]), callbacks=[kill])
"""


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory, finished_run, tiny_bert, sentiment_csv) -> Path:
    from hfadapt import Recipe, train

    root = tmp_path_factory.mktemp("runs")
    shutil.copytree(finished_run.output_dir, root / "a-finished")

    # killed at step 3 with a checkpoint at step 2: interrupted, resumable (the name says nothing)
    raw = sentiment_recipe(tiny_bert, sentiment_csv, root / "b-run")
    raw["train"].update(max_steps=6, save_steps=2)
    (root / "b.yaml").write_text(yaml.safe_dump(raw))
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-c", KILLER, str(root / "b.yaml")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]

    # raised after setup: failed, with the error recorded
    class Boom(RuntimeError):
        pass

    def boom(state):
        if state.global_step == 1:
            raise Boom("the data loader broke")

    with pytest.raises(Boom):
        train(Recipe.from_dict(sentiment_recipe(tiny_bert, sentiment_csv, root / "c-run")), callbacks=[boom])

    # still running: its status names this (live) process
    shutil.copytree(root / "b-run", root / "d-run")
    status = json.loads((root / "d-run" / "status.json").read_text())
    (root / "d-run" / "status.json").write_text(json.dumps(dict(status, pid=os.getpid())))
    return root


def test_runs_table_tells_states_apart(runs_root: Path, capsys) -> None:
    assert main(["runs", str(runs_root), "--json"]) == 0
    runs = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert sorted(runs) == ["a-finished", "b-run", "c-run", "d-run"]
    a, b, c, d = (runs[k] for k in sorted(runs))
    assert a["state"] == "finished" and a["step"] == a["total_steps"] == 4 and a["resumable_from"] is None
    assert a["task"] == "text-classification" and a["method"] == "lora" and 0 < a["trainable_share"] < 1
    assert a["best_metric"] == "accuracy" and a["best_value"] == json.loads((runs_root / "a-finished" / "metrics.json").read_text())["eval/accuracy"]
    assert a["train_time_s"] > 0
    assert b["state"] == "interrupted" and b["resumable_from"] == "checkpoint-2" and (b["step"], b["total_steps"]) == (2, 6)
    assert b["train_time_s"] > 0  # the totals the checkpoint carries
    assert c["state"] == "failed" and "Boom: the data loader broke" in c["error"] and c["resumable_from"] is None
    assert d["state"] == "running"

    assert main(["runs", str(runs_root)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["name", "task", "base", "method", "trainable", "best", "steps", "time", "state"]
    rows = {line.split()[0]: line for line in table[1:]}
    assert rows["a-finished"].endswith("finished") and " 4/4 " in rows["a-finished"]
    assert "interrupted (resume from checkpoint-2)" in rows["b-run"] and " 2/6 " in rows["b-run"]
    assert "failed" in rows["c-run"] and "running" in rows["d-run"]


def test_runs_sort_and_errors(runs_root: Path, capsys, tmp_path: Path) -> None:
    assert main(["runs", str(runs_root), "--json", "--sort", "loss"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert runs[0]["name"] == "a-finished"  # the only run with a final eval loss comes first; the rest follow
    assert main(["runs", str(runs_root), "--sort", "acuracy"]) == 2  # a typo: refused, listing what exists
    err = capsys.readouterr().err
    assert "runs --sort: no run has the metric 'acuracy'" in err and "loss" in err, err
    assert main(["runs", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_runs_imports_no_heavy_library(runs_root: Path) -> None:
    from tests.test_cli import HEAVY

    snippet = (
        "import sys\n"
        "from hfadapt.cli import main\n"
        f"assert main(['runs', {str(runs_root)!r}, '--sort', 'accuracy']) == 0\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "a-finished" in r.stdout
