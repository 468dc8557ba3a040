"""Each task / problem type / data format / adapter method trains and saves on a tiny model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from hfadapt import HfadaptError, Recipe, predict, train
from tests.conftest import TOPIC_WORDS, TOPICS, write_jsonl


def test_image_classification_with_augmentation(tmp_path, tiny_vit, image_folder):
    recipe = Recipe.from_dict({
        "name": "img", "task": "image-classification",
        "model": {"name_or_path": tiny_vit},
        "data": {"dataset": image_folder, "augment": True},
        "adapter": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0},  # default targets: discovered
        "train": {"epochs": 5, "batch_size": 8, "learning_rate": 2e-2, "logging_steps": 1, "log_with": []},
        "output": {"dir": str(tmp_path / "run")},
    })
    result = train(recipe)
    assert result.metrics["eval/samples"] == 12
    assert sum(result.losses[-3:]) < sum(result.losses[:3])
    assert result.metrics["eval/accuracy"] >= 0.75
    config = json.loads((result.output_dir / "adapter" / "config.json").read_text())
    assert sorted(config["id2label"].values()) == ["blue", "red"]
    assert (result.output_dir / "adapter" / "preprocessor_config.json").is_file()
    red = sorted((Path(image_folder) / "validation" / "red").glob("*.png"))
    preds = predict(result.output_dir, [str(p) for p in red[:4]])
    assert [p["input"] for p in preds] == [str(p) for p in red[:4]]
    assert all(set(p["scores"]) == {"blue", "red"} for p in preds)


def test_unreadable_image_names_file_and_row(tmp_path, tiny_vit, image_folder):
    import shutil

    data = tmp_path / "imgs"
    shutil.copytree(image_folder, data)
    bad = data / "train" / "red" / "3.png"
    bad.write_bytes(b"not a png")
    recipe = Recipe.from_dict({
        "name": "img", "task": "image-classification", "model": {"name_or_path": tiny_vit},
        "data": {"dataset": str(data)}, "train": {"max_steps": 1, "log_with": []},
        "output": {"dir": str(tmp_path / "run")},
    })
    with pytest.raises(HfadaptError, match=rf"^data.dataset {re.escape(str(data))}: cannot read image .*3.png"):
        train(recipe)


def test_multi_label_from_jsonl(tmp_path, make_recipe):
    rows = []
    for i in range(48):
        topics = [t for j, t in enumerate(TOPICS) if (i >> j) & 1] or ["sport"]
        words = " ".join(TOPIC_WORDS[t][i % 2] for t in topics)
        rows.append({"text": f"the {words}", "tags": topics})
    path = write_jsonl(tmp_path / "topics.jsonl", rows)
    recipe = make_recipe(
        data={"train_files": [str(path)], "label_column": "tags", "problem_type": "multi_label"},
        train={"epochs": 6, "learning_rate": 2e-2},
    )
    result = train(recipe)
    assert {"eval/accuracy", "eval/f1_micro", "eval/f1_macro"} <= set(result.metrics)
    assert result.losses[-1] < result.losses[0]
    out = predict(result.output_dir, ["the pizza"])[0]
    assert set(out["scores"]) == set(TOPICS)


def test_regression_with_text_pairs_from_parquet(tmp_path, make_recipe):
    import pandas as pd
    from transformers import AutoConfig

    rows = [{"a": f"the film was {w}", "b": f"the plot was {v}", "score": float((i % 5))} for i, (w, v) in enumerate(zip(["good", "bad"] * 20, ["fun", "dull"] * 20))]
    path = tmp_path / "pairs.parquet"
    pd.DataFrame(rows).to_parquet(path)
    recipe = make_recipe(
        data={"train_files": [str(path)], "text_column": "a", "text_pair_column": "b", "label_column": "score", "problem_type": "regression"},
        train={"max_steps": 4},
    )
    result = train(recipe)
    assert {"eval/mse", "eval/pearsonr", "eval/spearmanr"} <= set(result.metrics)
    config = json.loads((result.output_dir / "adapter" / "config.json").read_text())
    assert config.get("problem_type") == "regression", config
    assert len(config.get("id2label", {})) == 1, config  # transformers saves id2label, not num_labels: one output
    loaded = AutoConfig.from_pretrained(result.output_dir / "adapter")
    assert (loaded.problem_type, loaded.num_labels) == ("regression", 1)
    out = predict(result.output_dir, ["the film was good\tthe plot was fun"])[0]
    assert isinstance(out["score"], float)
    with pytest.raises(HfadaptError, match="TEXT<TAB>PAIR"):
        predict(result.output_dir, ["no pair here"])


@pytest.mark.parametrize(
    "adapter",
    [
        {"method": "lora", "use_dora": True},
        {"method": "lora", "use_rslora": True, "target_modules": "all-linear"},
        {"method": "ia3"},
        {"method": "loha"},
        {"method": "lokr"},
        {"method": "adalora", "init_r": 4, "target_r": 2},
        {"method": "prompt", "num_virtual_tokens": 4},
        {"method": "full"},
        {"method": "freeze"},
    ],
    ids=lambda a: "-".join(str(v) for v in a.values() if not isinstance(v, int) or isinstance(v, bool))[:30],
)
def test_adapter_methods_train_save_and_predict(make_recipe, adapter):
    result = train(make_recipe(adapter=adapter, train={"max_steps": 3}))
    method = adapter["method"]
    saved = result.output_dir / ("model" if method in ("full", "freeze") else "adapter")
    assert saved.is_dir()
    if method not in ("full", "freeze"):
        cfg = json.loads((saved / "adapter_config.json").read_text())
        assert cfg["peft_type"] == {"lora": "LORA", "ia3": "IA3", "loha": "LOHA", "lokr": "LOKR", "adalora": "ADALORA", "prefix": "PREFIX_TUNING", "prompt": "PROMPT_TUNING"}[method]
        if method == "adalora":  # the rank budget was reallocated: the method's after_optimizer_step hook ran
            assert cfg["rank_pattern"], cfg
    out = predict(result.output_dir, ["the film was good"])
    assert out[0]["label"] in ("positive", "negative")


@pytest.mark.parametrize("base", ["tiny_bert", "tiny_gpt2"])
def test_prefix_tuning_misfit_is_reported_before_training(make_recipe, base, request):
    # transformers 5 renamed past_key_values to cache; peft's prefix tuning for classification needs the old name.
    recipe = make_recipe(model={"name_or_path": request.getfixturevalue(base)}, adapter={"method": "prefix"}, train={"max_steps": 1})
    with pytest.raises(HfadaptError, match="prefix tuning \\(peft\\) needs a model whose forward takes past_key_values"):
        train(recipe)


def test_lora_default_targets_on_gpt2_conv1d(make_recipe, tiny_gpt2):
    result = train(make_recipe(model={"name_or_path": tiny_gpt2}, train={"max_steps": 2}))
    cfg = json.loads((result.output_dir / "adapter" / "adapter_config.json").read_text())
    assert set(cfg["target_modules"]) == {"c_attn"}  # peft's default for gpt2, a Conv1D layer
    assert "score" in (cfg["modules_to_save"] or [])


def test_freeze_trains_only_the_head(make_recipe, tiny_bert):
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    result = train(make_recipe(adapter={"method": "freeze"}, train={"max_steps": 2}))
    trained = AutoModelForSequenceClassification.from_pretrained(result.output_dir / "model")
    base = load_file(f"{tiny_bert}/model.safetensors")
    for name, p in trained.bert.named_parameters():
        torch.testing.assert_close(p, base[name], msg=name)


def test_prefix_tuning_rejected_for_images(tmp_path, tiny_vit, image_folder):
    with pytest.raises(HfadaptError, match="adapter.method: 'prefix' does not fit image-classification"):
        Recipe.from_dict({
            "task": "image-classification", "model": {"name_or_path": tiny_vit},
            "data": {"dataset": image_folder}, "adapter": {"method": "prefix"},
        })


def test_adapter_that_does_not_fit_the_model(make_recipe):
    with pytest.raises(HfadaptError, match=r"adapter.target_modules: 'nonexistent' matches no module of BertForSequenceClassification .*query"):
        train(make_recipe(adapter={"target_modules": ["nonexistent"]}, train={"max_steps": 1}))


def test_preprocessing_is_cached(make_recipe):
    from hfadapt.data.sources import load_raw
    from hfadapt.tasks import TASKS

    recipe = make_recipe()
    task = TASKS.get(recipe.task)
    tok = task.load_processor(recipe)
    raw = load_raw(recipe, task)
    labels = task.label_info(raw.train, recipe)
    first = task.preprocess(raw.train, "train", tok, recipe, labels, train=True)
    second = task.preprocess(raw.train, "train", tok, recipe, labels, train=True)
    assert first.cache_files and first.cache_files == second.cache_files


def test_targets_lists_modules_and_counts(tiny_bert):
    from hfadapt import list_targets

    rep = list_targets(tiny_bert, task="text-classification", r=4)
    rows = {r.name: r for r in rep.rows}
    assert rows["query"].count == 2 and rows["query"].shapes == ((32, 32),)
    assert rows["query"].lora_params == 2 * 4 * (32 + 32)
    assert "classifier" not in rows and rep.heads == ("classifier",)
    assert rep.peft_default == ("query", "value")
    assert rep.params_for(["query", "value"]) == 2 * rows["query"].lora_params
