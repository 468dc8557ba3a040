"""Pulled adapters of local base models (`--base-model`), through the real huggingface_hub client and
the local Hub-compatible server: a push names a local base as `<local>/NAME` (or `<run>/base_model` for
model.init=config), so predict, eval and merge of the pulled id stop in one line naming --base-model,
and work when it is given, with the local run's predictions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hfadapt import HfadaptError, Recipe, evaluate_run, predict, train
from hfadapt.cli import main

TEXTS = ["the film was wonderful", "the plot was awful", "the music was quite dull"]


@pytest.fixture
def token(hub_server, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    return hub_server.token


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _same_predictions(got: list[dict], expected: list[dict]) -> None:
    assert [p["label"] for p in got] == [p["label"] for p in expected]
    for a, b in zip(got, expected):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-6)


def test_pulled_adapter_of_a_local_base_needs_base_model(finished_run, tiny_bert, sentiment_csv, hub_server, token, capsys, tmp_path, monkeypatch):
    result = finished_run
    repo = "test-user/local-base-adapter"
    assert main(["push", str(result.output_dir), repo]) == 0
    capsys.readouterr()
    assert "--base-model PATH|HUB_ID" in hub_server.files(repo)["README.md"].decode()  # the card says how
    placeholder = f"<local>/{Path(tiny_bert).name}"
    expected = (f"hfadapt: error: {repo} was trained on a local base model ({placeholder}) that was not published; "
                "give it with --base-model PATH|HUB_ID")

    # predict: one line without the base, the local run's predictions with it
    assert _one_line_error(capsys, ["predict", repo, TEXTS[0]]) == expected
    with pytest.raises(HfadaptError, match=r"--base-model PATH\|HUB_ID$"):
        predict(repo, TEXTS)
    local = predict(result.output_dir, TEXTS)
    _same_predictions(predict(repo, TEXTS, base_model=tiny_bert), local)
    assert main(["predict", repo, *TEXTS, "--base-model", tiny_bert]) == 0
    import json

    _same_predictions([json.loads(line) for line in capsys.readouterr().out.splitlines()], local)

    # a local path that is not there: one line naming the flag
    missing = str(tmp_path / "no-such-base")
    assert _one_line_error(capsys, ["predict", repo, TEXTS[0], "--base-model", missing]) == \
        f"hfadapt: error: --base-model: local path {missing} does not exist"

    # eval: the unpublished data and the base in one line, so that one retry works
    err = _one_line_error(capsys, ["eval", repo])
    assert err.endswith(f"give yours: hfadapt eval {repo} data.train_files=YOUR_FILES --base-model PATH|HUB_ID"), err
    assert f"and its base model ({placeholder})" in err
    assert _one_line_error(capsys, ["eval", repo, f"data.train_files=[{sentiment_csv}]"]) == expected
    metrics = evaluate_run(repo, overrides=[f"data.train_files=[{sentiment_csv}]"], base_model=tiny_bert)
    assert metrics["validation/accuracy"] == pytest.approx(result.metrics["eval/accuracy"])
    assert main(["eval", repo, f"data.train_files=[{sentiment_csv}]", "--base-model", tiny_bert]) == 0
    assert "validation/accuracy" in capsys.readouterr().out

    # merge: nothing written without the base; with it, a standalone model with the local run's outputs
    out = tmp_path / "merged"
    assert _one_line_error(capsys, ["merge", repo, str(out)]) == expected
    assert not out.exists()
    assert main(["merge", repo, str(out), "--base-model", tiny_bert]) == 0
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        probs = torch.softmax(model(**tok(TEXTS, return_tensors="pt", padding=True)).logits, -1)
    got = [[p["scores"][model.config.id2label[i]] for i in range(2)] for p in local]
    torch.testing.assert_close(torch.tensor(got), probs, rtol=0, atol=1e-5)

    # report: it loads no weights, so it needs no base; given one, the page names it
    monkeypatch.chdir(tmp_path)
    assert main(["report", repo]) == 0
    page = Path(tmp_path / "test-user--local-base-adapter-report.html").read_text()
    assert placeholder.replace("<", "&lt;").replace(">", "&gt;") in page
    assert main(["report", repo, "--out", "with-base.html", "--base-model", tiny_bert]) == 0
    assert tiny_bert in (tmp_path / "with-base.html").read_text()
    assert _one_line_error(capsys, ["report", repo, "--base-model", missing]) == \
        f"hfadapt: error: --base-model: local path {missing} does not exist"


def test_pulled_adapter_of_a_random_base_needs_base_model(tiny_bert, sentiment_csv, hub_server, token, capsys, tmp_path):
    from tests.conftest import sentiment_recipe

    raw = sentiment_recipe(tiny_bert, sentiment_csv, tmp_path / "run")
    raw["model"]["init"] = "config"
    result = train(Recipe.from_dict(raw, overrides=["train.max_steps=2"]))
    repo = "test-user/random-base-adapter"
    assert main(["push", str(result.output_dir), repo]) == 0
    capsys.readouterr()
    assert _one_line_error(capsys, ["predict", repo, TEXTS[0]]) == (
        f"hfadapt: error: {repo} was trained on a random base model built from a config (<run>/base_model), "
        "saved in its training run only and not published; give it with --base-model PATH|HUB_ID"
    )
    base = str(result.output_dir / "base_model")  # what the author would publish or hand over
    _same_predictions(predict(repo, TEXTS, base_model=base), predict(result.output_dir, TEXTS))


def test_base_model_of_a_standalone_model_is_refused(make_recipe, tiny_bert):
    result = train(make_recipe(adapter={"method": "full"}, train={"max_steps": 1}))
    with pytest.raises(HfadaptError, match=r"^--base-model: .* holds a standalone model \(adapter.method=full\)"):
        predict(result.output_dir, TEXTS, base_model=tiny_bert)
