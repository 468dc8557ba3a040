"""A run directory written by the previous release still loads: predict, eval, report, runs and --resume
on copies of the committed runs of tests/fixtures/previous_release/ (see its README.md: which commit wrote
them, and how)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hfadapt import evaluate_run, predict
from hfadapt.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "previous_release"
REPO = Path(__file__).resolve().parents[1]
# The checkout that wrote the fixture, and its output folder: recipe.yaml holds absolute paths (the recipe
# resolves ./ and ../ paths), adapter_config.json the absolute path of the run's base_model/.
OLD_ROOT = "/work/wt-oldrel"
OLD_OUT = f"{OLD_ROOT}/fixture-out"


@pytest.fixture
def old_runs(tmp_path: Path) -> Path:
    """A copy of the fixture's runs whose absolute paths are rewritten: the output folder to the copy,
    the old checkout's recipes/assets (tiny-bert config, sentiment.csv) to this checkout's. Nothing else
    is changed: the files are as the previous release wrote them."""
    runs = tmp_path / "runs"
    runs.mkdir()
    for name in ("finished", "interrupted"):
        shutil.copytree(FIXTURE / name, runs / name)
    for f in runs.rglob("*"):
        if f.suffix in (".yaml", ".json", ".md"):
            text = f.read_text()
            f.write_text(text.replace(OLD_OUT, str(runs)).replace(OLD_ROOT, str(REPO)))
    assert (REPO / "recipes" / "assets" / "sentiment.csv").is_file()
    return runs


def _no_perf(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith("perf/")}


def test_previous_release_run_predicts_evaluates_and_reports(old_runs, capsys):
    run = old_runs / "finished"
    expected = json.loads((FIXTURE / "finished_predictions.json").read_text())
    texts = [row["input"] for row in expected]
    got = predict(run, texts)
    assert [p["label"] for p in got] == [p["label"] for p in expected]
    for a, b in zip(got, expected):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-6)
    assert main(["predict", str(run), texts[0]]) == 0
    assert json.loads(capsys.readouterr().out)["label"] == expected[0]["label"]

    # the same validation split and metrics as the previous release's final evaluation
    old = json.loads((run / "metrics.json").read_text())
    metrics = evaluate_run(run)
    assert metrics["validation/accuracy"] == pytest.approx(old["eval/accuracy"])
    assert metrics["validation/loss"] == pytest.approx(old["eval/loss"], abs=1e-5)
    assert main(["eval", str(run)]) == 0
    assert f"validation/accuracy: {old['eval/accuracy']:.4f}" in capsys.readouterr().out

    for name in ("finished", "interrupted"):
        assert main(["report", str(old_runs / name)]) == 0
        page = (old_runs / name / "report.html").read_text()
        assert "tiny-sentiment-offline" in page and "text-classification" in page
    capsys.readouterr()

    assert main(["runs", str(old_runs), "--json"]) == 0
    listed = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(listed) == {"finished", "interrupted"}, listed
    assert listed["finished"]["state"] == "finished" and listed["finished"]["step"] == 3
    assert listed["finished"]["best_value"] == pytest.approx(old["eval/accuracy"])
    assert listed["interrupted"]["state"] == "failed" and listed["interrupted"]["resumable_from"] == "checkpoint-2"
    assert main(["runs", str(old_runs)]) == 0
    table = capsys.readouterr().out
    assert "finished" in table and "interrupted" in table


def test_previous_release_interrupted_run_resumes(old_runs, capsys):
    run = old_runs / "interrupted"
    assert not (run / "adapter").exists()
    assert main(["train", str(run / "recipe.yaml"), "--resume"]) == 0
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    # The same recipe ran to the end uninterrupted in finished/: resuming from its step-2 checkpoint
    # reproduces it.
    from safetensors.torch import load_file
    import torch

    a = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(old_runs / "finished" / "adapter" / "adapter_model.safetensors"))
    assert a and a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    assert _no_perf(json.loads((run / "metrics.json").read_text())) == pytest.approx(
        _no_perf(json.loads((old_runs / "finished" / "metrics.json").read_text())), abs=1e-5)
    texts = ["the film was wonderful", "the plot was awful"]
    for x, y in zip(predict(run, texts), predict(old_runs / "finished", texts)):
        assert x["label"] == y["label"] and x["scores"] == pytest.approx(y["scores"], abs=1e-5)
