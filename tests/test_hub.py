"""Publishing through the real huggingface_hub client against the local Hub-compatible server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from hfadapt import HfadaptError, Recipe, evaluate_run, load_recipe, predict, train
from hfadapt.cli import main

BASE_REPO = "tiny-org/tiny-bert"
TEXTS = ["the film was wonderful", "the plot was awful"]


@pytest.fixture
def token(hub_server, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    return hub_server.token


@pytest.fixture(scope="module")
def hub_base(hub_server, tiny_bert):
    """The tiny BERT published on the test Hub, so recipes can name it by Hub id."""
    if not hub_server.repo_exists(BASE_REPO):
        hub_server.seed(BASE_REPO, {p.name: p.read_bytes() for p in Path(tiny_bert).iterdir() if p.is_file()})
    return BASE_REPO


@pytest.fixture(scope="module")
def hub_run(hub_base, tiny_bert, sentiment_csv, tmp_path_factory):
    """One finished run over the Hub-hosted base, shared by the tests that push or read it without changing it."""
    from tests.conftest import sentiment_recipe

    raw = sentiment_recipe(hub_base, sentiment_csv, tmp_path_factory.mktemp("hub-run") / "run")
    return train(Recipe.from_dict(raw, overrides=["train.max_steps=3"]))


def _card_metadata(readme: bytes) -> dict:
    text = readme.decode()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_train_pushes_adapter_card_and_recipe(make_recipe, hub_base, hub_server, token, capsys):
    recipe = make_recipe(
        model={"name_or_path": hub_base},
        train={"max_steps": 3},
        hub={"push": True, "repo_id": "test-user/sentiment-lora", "license": "apache-2.0"},
    )
    result = train(recipe)
    files = hub_server.files("test-user/sentiment-lora")
    assert {"adapter_model.safetensors", "adapter_config.json", "config.json", "tokenizer.json", "recipe.yaml",
            "metrics.json", "run_info.json", "trainer_state.json", "README.md"} <= set(files)
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]
    commit = hub_server.commits("test-user/sentiment-lora")[-1]
    assert "adapter_model.safetensors" in commit.lfs_files  # weights went through LFS
    local = (result.output_dir / "adapter" / "adapter_model.safetensors").read_bytes()
    assert files["adapter_model.safetensors"] == local

    meta = _card_metadata(files["README.md"])
    assert meta["base_model"] == hub_base
    assert meta["library_name"] == "peft" and meta["pipeline_tag"] == "text-classification"
    assert {"hfadapt", "lora", "text-classification"} <= set(meta["tags"])
    assert meta["license"] == "apache-2.0"
    assert "datasets" not in meta  # local CSV: no Hub dataset to name
    metrics = json.loads(files["metrics.json"])
    reported = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert reported["accuracy"] == pytest.approx(metrics["eval/accuracy"])
    validated = [v for v in hub_server.yaml_validations if "test-user/sentiment-lora" in v["content"] or hub_base in v["content"]]
    assert validated and validated[-1]["valid"], validated[-1:]
    card = files["README.md"].decode()
    assert "hfadapt train hub:test-user/sentiment-lora" in card and "PeftModel.from_pretrained" in card
    for content in files.values():
        assert token.encode() not in content
    assert token not in capsys.readouterr().out


def test_pulled_adapter_predicts_like_the_local_run_and_plain_peft(hub_run, hub_base, hub_server, token, sentiment_csv):
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    result = hub_run
    assert main(["push", str(result.output_dir), "test-user/pulled"]) == 0
    local = predict(result.output_dir, TEXTS)
    pulled = predict("test-user/pulled", TEXTS)  # downloaded over HTTP, base resolved from the adapter config
    for a, b in zip(pulled, local):
        assert a["label"] == b["label"] and a["scores"] == pytest.approx(b["scores"], abs=1e-6)

    config = AutoConfig.from_pretrained("test-user/pulled")
    base = AutoModelForSequenceClassification.from_pretrained(hub_base, config=config)
    model = PeftModel.from_pretrained(base, "test-user/pulled").eval()
    tok = AutoTokenizer.from_pretrained("test-user/pulled")
    with torch.no_grad():
        probs = torch.softmax(model(**tok(TEXTS, return_tensors="pt", padding=True)).logits, -1)
    expected = [[float(p) for p in row] for row in probs]
    got = [[p["scores"][config.id2label[i]] for i in range(2)] for p in pulled]
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), rtol=0, atol=1e-6)

    # The data file was not pushed: eval says which field to give, and evaluates once it is given.
    with pytest.raises(HfadaptError, match=r"^eval: .*data.train_files \(<local>/sentiment.csv\); give yours: "
                                           r"hfadapt eval test-user/pulled data.train_files=YOUR_FILES$"):
        evaluate_run("test-user/pulled")
    metrics = evaluate_run("test-user/pulled", overrides=[f"data.train_files=[{sentiment_csv}]"])
    assert metrics["validation/accuracy"] == pytest.approx(result.metrics["eval/accuracy"])


def test_repush_is_one_commit_and_branches_work(hub_run, hub_server, token):
    result = hub_run
    assert main(["push", str(result.output_dir), "test-user/repush"]) == 0
    before = len(hub_server.commits("test-user/repush"))
    # Only the card changes (a license is added): one commit, and unchanged files are not re-sent.
    assert main(["push", str(result.output_dir), "test-user/repush", "--commit-message", "second", "--license", "mit"]) == 0
    commits = hub_server.commits("test-user/repush")
    assert len(commits) == before + 1 and commits[-1].message == "second"
    assert commits[-1].regular_files == ("README.md",) and not commits[-1].lfs_files
    assert _card_metadata(hub_server.files("test-user/repush")["README.md"])["license"] == "mit"
    assert main(["push", str(result.output_dir), "test-user/repush", "--revision", "v2", "--private"]) == 0
    assert "v2" in hub_server.branches("test-user/repush")
    assert "adapter_model.safetensors" in hub_server.files("test-user/repush", revision="v2")


def test_failed_push_keeps_the_run_and_hides_the_token(hub_run, hub_server, monkeypatch, capsys):
    result = hub_run
    before = {p: p.stat().st_mtime_ns for p in result.output_dir.rglob("*")}
    secret = "hf_not_the_right_token_123"
    monkeypatch.setenv("HF_TOKEN", secret)
    assert main(["push", str(result.output_dir), "test-user/denied"]) == 2
    err = capsys.readouterr().err
    assert "could not push" in err and f"hfadapt push {result.output_dir} test-user/denied" in err
    assert secret not in err
    assert {p: p.stat().st_mtime_ns for p in result.output_dir.rglob("*")} == before
    assert not hub_server.repo_exists("test-user/denied")


def test_local_base_card_has_no_base_model_and_still_validates(finished_run, hub_server, token):
    result = finished_run
    assert main(["push", str(result.output_dir), "test-user/local-base"]) == 0
    files = hub_server.files("test-user/local-base")
    meta = _card_metadata(files["README.md"])
    assert "base_model" not in meta
    assert "was the local directory" in files["README.md"].decode()


def test_train_hub_recipe_cannot_run_code_or_push(make_recipe, hub_base, hub_server, token, tmp_path, sentiment_csv):
    recipe = make_recipe(model={"name_or_path": hub_base, "trust_remote_code": True}, train={"max_steps": 2})
    recipe.hub.repo_id = "test-user/reproduce"
    result = train(recipe)
    assert main(["push", str(result.output_dir), "test-user/reproduce"]) == 0
    pushed = yaml.safe_load(hub_server.files("test-user/reproduce")["recipe.yaml"])
    assert pushed["data"]["train_files"] == ["<local>/sentiment.csv"] and pushed["output"]["dir"] == "<run>"
    assert pushed["model"]["name_or_path"] == hub_base  # a Hub id stays
    assert yaml.safe_load((result.output_dir / "recipe.yaml").read_text())["data"]["train_files"] == [sentiment_csv]
    # The data file was not published: the user must give theirs, and is told how.
    with pytest.raises(HfadaptError, match=r"^hub:test-user/reproduce: .*data.train_files \(<local>/sentiment.csv\); "
                                           r"override them: hfadapt train hub:test-user/reproduce data.train_files=YOUR_FILES$"):
        load_recipe("hub:test-user/reproduce")
    again = load_recipe("hub:test-user/reproduce", overrides=[f"output.dir={tmp_path / 'again'}", f"data.train_files=[{sentiment_csv}]"])
    assert again.model.trust_remote_code is False and again.hub.push is False
    assert again.model.name_or_path == hub_base and again.train.max_steps == 2
    rerun = train(again)
    assert rerun.losses == pytest.approx(result.losses)  # same recipe, same seed, same losses


def test_unknown_hub_id_is_one_clear_error(hub_server):
    with pytest.raises(HfadaptError, match="nobody/nothing: not a run directory, and the Hub repo could not be fetched"):
        predict("nobody/nothing", ["x"])


def test_merge_gives_a_standalone_model_with_the_same_outputs(finished_run, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result = finished_run
    out = tmp_path / "merged"
    assert main(["merge", str(result.output_dir), str(out)]) == 0
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        probs = torch.softmax(model(**tok(TEXTS, return_tensors="pt", padding=True)).logits, -1)
    ours = predict(result.output_dir, TEXTS)
    got = [[p["scores"][model.config.id2label[i]] for i in range(2)] for p in ours]
    torch.testing.assert_close(torch.tensor(got), probs, rtol=0, atol=1e-5)
    assert (out / "README.md").read_text().startswith("---\n")
    assert not list(out.glob("adapter_*"))
    with pytest.raises(HfadaptError, match="exists and is not empty"):
        from hfadapt.inference.merge import merge

        merge(result.output_dir, out)


def test_merge_refuses_full_finetunes(make_recipe, tmp_path):
    from hfadapt.inference.merge import merge

    result = train(make_recipe(adapter={"method": "full"}, train={"max_steps": 1}))
    with pytest.raises(HfadaptError, match="already standalone"):
        merge(result.output_dir, tmp_path / "m")


def test_merge_refuses_a_quantized_base(finished_run, tmp_path, monkeypatch):
    import hfadapt.inference.run_model as inference
    from hfadapt.inference.merge import merge

    result = finished_run
    real = inference.load_model_and_processor

    def quantized(run, **kwargs):
        model, processor, labels = real(run, **kwargs)
        model.get_base_model().config.quantization_config = {"load_in_4bit": True}
        return model, processor, labels

    monkeypatch.setattr(inference, "load_model_and_processor", quantized)
    with pytest.raises(HfadaptError, match="base model is quantized"):
        merge(result.output_dir, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_every_task_has_a_model_card_section():
    from hfadapt.core.shipped import shipped_dir
    from hfadapt.tasks import TASKS

    for name in TASKS.names():
        assert (shipped_dir("model_cards") / "tasks" / f"{name}.md").is_file(), name


def test_a_local_starting_adapter_is_not_pushed_as_a_path(tmp_path: Path) -> None:
    """model.adapter (preference from an SFT run): a local run directory becomes a placeholder the user must
    replace; a Hub adapter id (with or without hub:) stays usable."""
    from hfadapt.publishing.cards import publish_recipe, unpublished_fields

    sft = tmp_path / "runs" / "sft"
    sft.mkdir(parents=True)
    for given, published in ((str(sft), "<local>/sft"), ("hub:someone/sft", "hub:someone/sft"), ("someone/sft", "someone/sft")):
        raw = {"task": "preference", "model": {"name_or_path": "someone/base", "adapter": given}}
        out = publish_recipe(raw)
        assert out["model"]["adapter"] == published
        assert ("model.adapter" in unpublished_fields(out)) == published.startswith("<local>")
