"""The recipe schema: YAML loading, dotted overrides, error messages, cross-field checks, shipped recipes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from hfadapt import HfadaptError, Recipe
from hfadapt.core.shipped import recipes_dir, shipped_recipes
from hfadapt.core.recipe import SCHEDULERS

BASE: dict[str, Any] = {
    "task": "text-classification",
    "model": {"name_or_path": "google-bert/bert-base-uncased"},
    "data": {"train_files": "./train.csv"},
}


def write(folder: Path, raw: dict[str, Any] | str, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False))
    return path


def error(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(HfadaptError) as err:
        Recipe.from_yaml(path, overrides)
    msg = str(err.value)
    assert "\n" not in msg, msg  # the CLI prints it as one line
    return msg


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write(tmp_path, BASE)


# ---- loading -----------------------------------------------------------------------------------
def test_load_yaml_with_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, BASE, "my-run.yaml")
    r = Recipe.from_yaml(path)
    assert r.name == "my-run"  # the file's stem when the recipe gives none
    assert r.run_name == "my-run"
    assert r.output_dir == Path("runs") / "my-run"
    assert r.source == str(path)
    assert r.task == "text-classification"
    assert r.model.name_or_path == "google-bert/bert-base-uncased"
    assert r.model.dtype == "float32" and r.model.init == "pretrained" and r.model.trust_remote_code is False
    assert r.data.train_files == [str(tmp_path / "train.csv")]  # a string becomes a one-item list
    assert r.data.dataset is None
    assert r.data.validation_split == "validation"
    assert r.adapter.method == "lora" and r.adapter.r == 8 and r.adapter.alpha == 16
    assert r.adapter.target_modules is None
    assert r.train.epochs == 3 and r.train.scheduler == "linear" and r.train.log_with == ["tensorboard"]
    assert r.eval.metrics is None and r.eval.best_metric is None
    assert r.output.dir is None and r.output.overwrite is False


def test_load_yaml_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
name: custom
task: text-classification
model:
  name_or_path: roberta-base
  dtype: bfloat16
data:
  dataset: some/dataset
  config_name: cfg
  text_column: sentence
  labels: [neg, pos]
  max_length: 64
adapter:
  method: lora
  r: 16
  alpha: 32
  target_modules: [query, value]
  use_rslora: true
  options: {init_lora_weights: gaussian}
train:
  learning_rate: 5.0e-4
  warmup_ratio: 0.06
  max_grad_norm: null
  log_with: []
eval:
  metrics: [accuracy, f1]
  best_metric: f1_macro
output:
  dir: /somewhere/run
""",
    )
    r = Recipe.from_yaml(path)
    assert r.name == "custom"
    assert r.model.dtype == "bfloat16"
    assert r.data.dataset == "some/dataset" and r.data.train_files is None
    assert r.data.labels == ["neg", "pos"] and r.data.max_length == 64
    assert r.adapter.r == 16 and r.adapter.alpha == 32.0 and r.adapter.use_rslora is True
    assert r.adapter.target_modules == ["query", "value"]
    assert r.adapter.options == {"init_lora_weights": "gaussian"}
    assert r.train.learning_rate == 5e-4 and r.train.warmup_ratio == 0.06 and r.train.max_grad_norm is None
    assert r.train.log_with == []
    assert r.eval.metrics == ["accuracy", "f1"] and r.eval.best_metric == "f1_macro"
    assert r.output_dir == Path("/somewhere/run")


def test_yaml_round_trip(base: Path) -> None:
    r = Recipe.from_yaml(base, ["adapter.target_modules=[query,value]", "train.epochs=1"])
    again = Recipe.from_dict(yaml.safe_load(r.to_yaml()))
    assert again.to_dict() == r.to_dict()


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    msg = error(write(tmp_path, "task: [unclosed\n", "broken.yaml"))
    assert "broken.yaml" in msg and "not valid YAML" in msg
    msg = error(write(tmp_path, "- a\n- b\n", "list.yaml"))
    assert "list.yaml" in msg and "must be a YAML mapping" in msg


# ---- overrides ---------------------------------------------------------------------------------
def test_overrides_nested_lists_numbers_bools(base: Path) -> None:
    r = Recipe.from_yaml(
        base,
        [
            "adapter.target_modules=[query,value]",
            "adapter.r=4",
            "adapter.alpha=8.5",
            "adapter.use_rslora=true",
            "adapter.options={init_lora_weights: gaussian}",
            "train.epochs=1",
            "train.learning_rate=1e-4",  # YAML 1.1 reads this as a string; pydantic coerces it
            "train.warmup_ratio=0.1",
            "train.gradient_checkpointing=yes",
            "train.max_grad_norm=null",
            "train.log_with=[]",
            "data.max_train_samples=100",
            "data.labels=[neg, pos]",
            "eval.metrics=[accuracy]",  # a section the file lacks is created
            "output.overwrite=false",
            "name=renamed",
        ],
    )
    assert r.adapter.target_modules == ["query", "value"]
    assert r.adapter.r == 4 and isinstance(r.adapter.r, int)
    assert r.adapter.alpha == 8.5
    assert r.adapter.use_rslora is True
    assert r.adapter.options == {"init_lora_weights": "gaussian"}
    assert r.train.epochs == 1
    assert r.train.learning_rate == pytest.approx(1e-4) and isinstance(r.train.learning_rate, float)
    assert r.train.warmup_ratio == 0.1
    assert r.train.gradient_checkpointing is True
    assert r.train.max_grad_norm is None
    assert r.train.log_with == []
    assert r.data.max_train_samples == 100
    assert r.data.labels == ["neg", "pos"]
    assert r.eval.metrics == ["accuracy"]
    assert r.output.overwrite is False
    assert r.name == "renamed"


def test_override_replaces_value_from_file(tmp_path: Path) -> None:
    path = write(tmp_path, {**BASE, "adapter": {"target_modules": ["query"], "r": 16}, "train": {"epochs": 5}})
    r = Recipe.from_yaml(path, ["adapter.target_modules=[key, value, dense]", "train.epochs=2"])
    assert r.adapter.target_modules == ["key", "value", "dense"]
    assert r.adapter.r == 16  # untouched siblings stay
    assert r.train.epochs == 2
    assert Recipe.from_yaml(path, ["adapter.target_modules=all-linear"]).adapter.target_modules == "all-linear"


def test_from_dict_overrides_do_not_touch_the_input() -> None:
    raw = {**BASE, "data": {"train_files": ["/abs/train.csv"]}, "adapter": {"r": 2}}
    r = Recipe.from_dict(raw, overrides=["adapter.r=6", "train.epochs=1"])
    assert r.adapter.r == 6 and r.train.epochs == 1
    assert raw["adapter"] == {"r": 2} and "train" not in raw
    assert r.source is None


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.epochs", "override 'train.epochs': expected key.sub=value"),
        ("=3", "override '=3': empty key"),
        ("model.name_or_path.x=1", "'model.name_or_path' is not a section"),
    ],
)
def test_override_syntax_errors(base: Path, override: str, expected: str) -> None:
    assert expected in error(base, [override])


# ---- schema errors -----------------------------------------------------------------------------
def test_unknown_key_in_file_suggests_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, {**BASE, "train": {"epoch": 3}}, "typo-recipe.yaml")
    msg = error(path)
    assert "typo-recipe.yaml" in msg
    assert "train.epoch" in msg
    assert "unknown field" in msg
    assert "did you mean 'epochs'" in msg


def test_unknown_key_by_override_and_at_top_level(base: Path) -> None:
    msg = error(base, ["adapter.dropuot=0.1"])
    assert "adapter.dropuot: unknown field (did you mean 'dropout'?)" in msg
    assert base.name in msg
    msg = error(base, ["modle.name_or_path=x"])
    assert "modle: unknown field (did you mean 'model'?)" in msg


@pytest.mark.parametrize(
    "override, field, detail",
    [
        ("train.epochs=abc", "train.epochs", "'abc'"),
        ("train.epochs=2.5", "train.epochs", "2.5"),
        ("train.epochs=0", "train.epochs", "greater than 0"),
        ("adapter.r=x", "adapter.r", "'x'"),
        ("adapter.dropout=1.5", "adapter.dropout", "1.5"),
        ("model.dtype=float64", "model.dtype", "'float64'"),
        ("data.problem_type=multi", "data.problem_type", "'multi'"),
        ("data.validation_size=1.5", "data.validation_size", "1.5"),
        ("train.log_with=tensorboard", "train.log_with", "'tensorboard'"),
        ("train.mixed_precision=fp8", "train.mixed_precision", "'fp8'"),
        ("adapter.target_modules=query", "adapter.target_modules", "'query'"),
        ("train=3", "train", "3"),
    ],
)
def test_type_errors_name_the_field(base: Path, override: str, field: str, detail: str) -> None:
    msg = error(base, [override])
    assert msg.startswith(f"{base}: {field}"), msg
    assert detail in msg


def test_missing_required_fields(tmp_path: Path) -> None:
    msg = error(write(tmp_path, {"task": "text-classification", "data": BASE["data"]}))
    assert "model: required field missing" in msg
    msg = error(write(tmp_path, {"model": BASE["model"], "data": BASE["data"]}))
    assert "task: required field missing" in msg
    msg = error(write(tmp_path, {**BASE, "model": {"dtype": "float16"}}))
    assert "model.name_or_path: required field missing" in msg


def test_data_needs_exactly_one_source(base: Path) -> None:
    assert "data: give exactly one of data.dataset or data.train_files" in error(base, ["data.dataset=glue"])
    assert "give exactly one of data.dataset or data.train_files" in error(base, ["data.train_files=null"])


# ---- cross-field checks ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["train.warmup_steps=10", "train.warmup_ratio=0.1"], ["train.warmup_steps", "train.warmup_ratio", "both"]),
        (["adapter.method=ia3", "adapter.use_dora=true"], ["adapter.use_dora: a field of lora, not of ia3"]),
        (["adapter.method=loha", "adapter.use_rslora=true"], ["adapter.use_rslora: a field of lora and adalora, not of loha"]),
        (
            ["task=image-classification", "adapter.method=prefix"],
            ["adapter.method", "'prefix' does not fit image-classification", "text"],
        ),
        (["task=image-classification", "adapter.method=prompt"], ["adapter.method", "'prompt' does not fit"]),
        (
            ["task=text-clasification"],
            ["task: unknown task 'text-clasification'", "did you mean 'text-classification'", "known: audio-classification, causal-lm, image-classification"],
        ),
        (["adapter.method=lorra"], ["adapter.method: unknown adapter method 'lorra'", "did you mean 'lora'", "known: adalora"]),
        (["eval.metrics=[acuracy]"], ["eval.metrics: unknown metric 'acuracy'", "did you mean 'accuracy'"]),
        (["eval.best_metric=f1"], ["eval.best_metric: 'f1' is not computed", "f1_macro"]),
        (["eval.metrics=[accuracy]", "eval.best_metric=f1_macro"], ["eval.best_metric: 'f1_macro' is not computed", "loss, accuracy"]),
        (["eval.best_metric=accuracy", "data.validation_split=null"], ["eval.best_metric", "data.validation_split"]),
        (["eval.metrics=[mse]"], ["eval.metrics: 'mse' does not fit problem_type single_label", "accuracy"]),
        (["data.problem_type=regression", "eval.metrics=[accuracy]"], ["eval.metrics: 'accuracy' does not fit problem_type regression"]),
        (["data.problem_type=multi_label", "eval.metrics=[matthews_correlation]"], ["matthews_correlation is not defined for multi_label"]),
        (["train.early_stopping_patience=2"], ["train.early_stopping_patience needs train.eval_steps"]),
        (["train.liger_kernel=true"], ["train.liger_kernel: Liger's kernels are for causal-lm models, not text-classification"]),
        (["train.scheduler=cosin"], ["train.scheduler", "unknown scheduler 'cosin'", "did you mean 'cosine'"]),
        (["data.augment=true"], ["data.augment: a field of image-classification, not of text-classification"]),
        (["task=image-classification", "data.text_pair_column=b"], ["data.text_pair_column: a field of text-classification, not of image-classification"]),
        (["data.tags_column=ner"], ["data.tags_column: a field of token-classification, not of text-classification"]),
        (["data.labels=[a, b, a]"], ["data.labels: label names must be unique; repeated: a"]),
        (["data.train_files=[]"], ["data.train_files: the list is empty"]),
    ],
)
def test_cross_field_errors(base: Path, overrides: list[str], expected: list[str]) -> None:
    msg = error(base, overrides)
    assert msg.startswith(f"{base}: "), msg  # the file is named
    for part in expected:
        assert part in msg, (part, msg)


# ---- fields owned by a task (model) or an adapter method (adapter) -------------------------------
@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["adapter.init_r=4"], "adapter.init_r: a field of adalora, not of lora"),
        (["adapter.method=adalora", "adapter.r=4"],
         "adapter.r: a field of lora, loha and lokr, not of adalora (AdaLoRA sets ranks with adapter.init_r and adapter.target_r)"),
        (["adapter.num_virtual_tokens=4"], "adapter.num_virtual_tokens: a field of prefix and prompt, not of lora"),
        (["adapter.method=ia3", "adapter.use_dora=true"], "adapter.use_dora: a field of lora, not of ia3"),
        (["adapter.method=ia3", "adapter.dropout=0.1"], "adapter.dropout: a field of lora, loha, lokr and adalora, not of ia3"),
        (["adapter.method=adalora", "adapter.use_dora=true"], "adapter.use_dora: a field of lora, not of adalora (peft's AdaLoRA does not support DoRA)"),
        (["adapter.method=prompt", "adapter.target_modules=[query]"], "adapter.target_modules: a field of lora, ia3, loha, lokr and adalora, not of prompt"),
        (["adapter.method=full", "adapter.modules_to_save=[classifier]"],
         "adapter.modules_to_save: a field of lora, ia3, loha, lokr, adalora, prefix and prompt, not of full"),
        (["adapter.method=freeze", "adapter.options={a: 1}"], "adapter.options: a field of"),
        (["adapter.dropuot=0.1"], "adapter.dropuot: unknown field (did you mean 'dropout'?)"),
        (["adapter.method=lorra"], "adapter.method: unknown adapter method 'lorra' (did you mean 'lora'?); known: adalora, freeze"),
        (["model.freeze_feature_encoder=false"],
         "model.freeze_feature_encoder: a field of audio-classification and speech-recognition, not of text-classification"),
        (["model.freeze_feature_encodr=false"], "model.freeze_feature_encodr: unknown field"),
    ],
)
def test_fields_of_another_method_or_task_are_refused_naming_the_owner(base: Path, overrides: list[str], expected: str) -> None:
    msg = error(base, overrides)
    assert msg.startswith(f"{base}: {expected}"), msg


def test_adapter_fields_per_method(base: Path) -> None:
    r = Recipe.from_yaml(base, ["adapter.method=adalora", "adapter.init_r=6", "adapter.use_rslora=true"])
    assert (r.adapter.init_r, r.adapter.target_r, r.adapter.alpha, r.adapter.dropout) == (6, 8, 16, 0.05)
    assert set(r.to_dict()["adapter"]) == {"method", "modules_to_save", "options", "target_modules", "init_r", "target_r", "alpha", "dropout", "use_rslora"}
    assert Recipe.from_yaml(base, ["adapter.method=prompt", "adapter.num_virtual_tokens=4"]).adapter.num_virtual_tokens == 4
    assert Recipe.from_yaml(base, ["adapter.method=prefix"]).adapter.num_virtual_tokens == 20
    assert Recipe.from_yaml(base, ["adapter.method=full"]).to_dict()["adapter"] == {"method": "full"}
    loha = Recipe.from_yaml(base, ["adapter.method=loha", "adapter.r=4"]).adapter
    assert (loha.r, loha.alpha, loha.dropout) == (4, 16, 0.05)
    lora = Recipe.from_yaml(base).to_dict()["adapter"]  # no method given: lora, its defaults
    assert lora["method"] == "lora" and (lora["r"], lora["alpha"], lora["dropout"]) == (8, 16, None)  # dropout null: 0.05, or 0 for convolution LoRA
    assert not {"init_r", "target_r", "num_virtual_tokens"} & set(lora)


def test_model_section_is_the_tasks_own(tmp_path: Path) -> None:
    text = Recipe.from_dict(BASE)
    assert "freeze_feature_encoder" not in text.to_dict()["model"]  # not in a text run's recipe.yaml
    audio = {"task": "audio-classification", "model": {"name_or_path": "facebook/wav2vec2-base", "freeze_feature_encoder": False},
             "data": {"dataset": "./sounds"}}
    assert Recipe.from_dict(audio).model.freeze_feature_encoder is False
    assert Recipe.from_dict({**audio, "model": {"name_or_path": "m"}}).model.freeze_feature_encoder is True
    speech = {**audio, "task": "speech-recognition", "data": {"train_files": ["x.csv"]}}
    assert Recipe.from_dict(speech).model.freeze_feature_encoder is False


def test_saved_recipe_of_an_older_version_sheds_foreign_fields() -> None:
    """recipe.yaml of runs written when every model/adapter field was shared still loads (RunDir.recipe)."""
    from hfadapt.core.recipe import shed_foreign_fields

    old = {**BASE, "model": {"name_or_path": "m", "freeze_feature_encoder": True},
           "adapter": {"method": "ia3", "r": 8, "alpha": 16, "dropout": 0.05, "target_modules": None, "modules_to_save": None,
                       "use_rslora": False, "use_dora": False, "num_virtual_tokens": 20, "init_r": 12, "target_r": 8, "options": {}}}
    with pytest.raises(HfadaptError, match="adapter.r: a field of"):
        Recipe.from_dict(old)
    r = Recipe.from_dict(shed_foreign_fields(old))
    assert r.adapter.method == "ia3" and r.to_dict()["adapter"] == {"method": "ia3", "modules_to_save": None, "options": {}, "target_modules": None}
    assert "freeze_feature_encoder" not in r.to_dict()["model"]
    assert old["adapter"]["r"] == 8  # the input is left as it was
    with pytest.raises(HfadaptError, match="adapter.rr: unknown field"):  # an unknown field is still refused
        Recipe.from_dict(shed_foreign_fields({**BASE, "adapter": {"rr": 1}}))


def test_valid_combinations_pass(base: Path) -> None:
    Recipe.from_yaml(base, ["adapter.use_dora=true"])
    Recipe.from_yaml(base, ["adapter.method=adalora", "adapter.use_rslora=true"])
    Recipe.from_yaml(base, ["task=image-classification", "adapter.method=loha"])
    Recipe.from_yaml(base, ["data.problem_type=regression", "eval.best_metric=mse"])  # default metrics: mse, pearsonr, spearmanr
    Recipe.from_yaml(base, ["eval.metrics=[recall]", "eval.best_metric=recall_weighted"])
    Recipe.from_yaml(base, ["eval.best_metric=loss"])
    Recipe.from_yaml(base, ["train.warmup_steps=10"])
    Recipe.from_yaml(base, ["train.early_stopping_patience=2", "train.eval_steps=5"])
    for scheduler in SCHEDULERS:
        Recipe.from_yaml(base, [f"train.scheduler={scheduler}"])


def test_section_validator_message_is_not_doubled(base: Path) -> None:
    msg = error(base, ["train.scheduler=cosin", "train.epochs=2"])
    assert msg == f"{base}: train.scheduler: unknown scheduler 'cosin' (did you mean 'cosine'?) (from the override 'train.scheduler=cosin')"


# ---- paths -------------------------------------------------------------------------------------
def test_relative_paths_resolve_against_the_recipe_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "project" / "recipes"
    path = write(
        folder,
        {
            "task": "text-classification",
            "model": {"name_or_path": "./models/tiny"},
            "data": {"train_files": ["./data/train.csv", "../shared/more.csv"], "validation_files": "./data/val.csv",
                     "test_files": ["/abs/test.csv"]},
        },
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory must not matter
    r = Recipe.from_yaml(path)
    assert r.model.name_or_path == str(folder / "models" / "tiny")
    assert r.data.train_files == [str(folder / "data" / "train.csv"), str(tmp_path / "project" / "shared" / "more.csv")]
    assert r.data.validation_files == [str(folder / "data" / "val.csv")]
    assert r.data.test_files == ["/abs/test.csv"]


def test_relative_dataset_folder_and_hub_ids(tmp_path: Path) -> None:
    path = write(tmp_path / "sub", {"task": "image-classification", "model": {"name_or_path": "google/vit-base-patch16-224"},
                                    "data": {"dataset": "../images"}})
    r = Recipe.from_yaml(path)
    assert r.data.dataset == str(tmp_path / "images")
    assert r.model.name_or_path == "google/vit-base-patch16-224"  # a Hub id is not a path
    r = Recipe.from_yaml(path, ["data.dataset=beans"])
    assert r.data.dataset == "beans"


def test_from_dict_without_source_keeps_paths() -> None:
    r = Recipe.from_dict({**BASE, "model": {"name_or_path": "./m"}})
    assert r.model.name_or_path == "./m"
    assert r.data.train_files == ["./train.csv"]


# ---- shipped recipes ---------------------------------------------------------------------------
def test_shipped_recipe_by_name() -> None:
    r = Recipe.from_yaml("text/sst2-bert-lora")
    assert r.name == "sst2-bert-lora"
    assert r.source == str(recipes_dir() / "text" / "sst2-bert-lora.yaml")
    assert r.task == "text-classification"
    assert Recipe.from_yaml("text/sst2-bert-lora.yaml").to_dict() == r.to_dict()
    r = Recipe.from_yaml("text/sst2-bert-lora", ["train.epochs=1", "data.max_train_samples=2000"])
    assert r.train.epochs == 1 and r.data.max_train_samples == 2000


def test_unknown_recipe_name_suggests_a_shipped_one(tmp_path: Path) -> None:
    with pytest.raises(HfadaptError) as err:
        Recipe.from_yaml("text/sst2-bert-lroa")
    msg = str(err.value)
    assert "no such recipe file or shipped recipe" in msg and "did you mean 'text/sst2-bert-lora'" in msg
    with pytest.raises(HfadaptError, match="recipe file not found"):
        Recipe.from_yaml(tmp_path / "missing.yaml")


def test_shipped_recipes_listed() -> None:
    names = shipped_recipes()
    assert "text/sst2-bert-lora" in names
    assert any(n.startswith("vision/") for n in names)
    assert not any("assets" in n for n in names)
    assert names == sorted(names)


@pytest.mark.parametrize("name", shipped_recipes())
def test_every_shipped_recipe_validates(name: str) -> None:
    r = Recipe.from_yaml(name)
    assert r.name
    assert r.source == str(recipes_dir() / f"{name}.yaml")
    # Local paths (resolved from ./ or ../) must exist in the checkout / wheel.
    for p in [r.model.name_or_path, r.data.dataset, *(r.data.train_files or []), *(r.data.validation_files or [])]:
        if p is not None and Path(p).is_absolute():
            assert Path(p).exists(), f"{name}: {p} does not exist"
    # What a run directory stores (recipe.yaml) loads back to the same recipe.
    assert Recipe.from_dict(yaml.safe_load(r.to_yaml())).to_dict() == r.to_dict()


def test_shipped_recipes_under_a_folder_named_assets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hfadapt.core.shipped as catalog

    root = tmp_path / "assets" / "hfadapt" / "recipes"
    write(root / "text", BASE, "demo.yaml")
    write(root / "assets", {"not": "a recipe"}, "ignored.yaml")
    monkeypatch.setattr(catalog, "recipes_dir", lambda: root)
    assert catalog.shipped_recipes() == ["text/demo"]


# ---- schema ------------------------------------------------------------------------------------
def test_json_schema_has_one_variant_per_task() -> None:
    from hfadapt.core.recipe import recipe_json_schema
    from hfadapt.tasks import TASKS

    schema = recipe_json_schema()
    json.dumps(schema)
    mapping = schema["discriminator"]["mapping"]
    assert schema["discriminator"]["propertyName"] == "task"
    assert set(mapping) == set(TASKS.names())  # editors pick the variant by `task`
    defs = schema["$defs"]
    text = defs[mapping["text-classification"].rsplit("/", 1)[-1]]
    assert set(text["properties"]) == {"name", "task", "model", "data", "adapter", "train", "eval", "generation", "output", "hub", "search"}
    assert set(text["required"]) == {"task", "model", "data"}
    assert text["properties"]["task"]["const"] == "text-classification"
    for section in ("ModelSection", "LoraSection", "TrainSection", "EvalSection", "OutputSection", "HubSection", "GenerationSection"):
        assert section in defs, section
        assert defs[section]["additionalProperties"] is False
    # Each task's data section carries its own fields and only those.
    data = {task: defs[defs[ref.rsplit("/", 1)[-1]]["properties"]["data"]["$ref"].rsplit("/", 1)[-1]] for task, ref in mapping.items()}
    assert "text_column" in data["text-classification"]["properties"] and "tags_column" not in data["text-classification"]["properties"]
    assert "tags_column" in data["token-classification"]["properties"]
    assert "image_column" in data["image-classification"]["properties"] and "augment" in data["image-classification"]["properties"]
    assert "packing" in data["causal-lm"]["properties"] and "packing" not in data["seq2seq"]["properties"]
    assert all(d["additionalProperties"] is False for d in data.values())
    assert "epochs" in defs["TrainSection"]["properties"]
    assert defs["ModelSection"]["properties"]["name_or_path"]["description"]
    # model: the audio tasks' own section carries the feature-encoder freeze, the shared one does not
    model = {task: defs[ref.rsplit("/", 1)[-1]]["properties"]["model"]["$ref"].rsplit("/", 1)[-1] for task, ref in mapping.items()}
    assert model["text-classification"] == "ModelSection" and "freeze_feature_encoder" not in defs["ModelSection"]["properties"]
    assert "freeze_feature_encoder" in defs[model["audio-classification"]]["properties"]
    assert model["speech-recognition"] == model["audio-classification"]
    # adapter: one variant per method, chosen by `method`, each with its own fields
    adapter = text["properties"]["adapter"]
    assert adapter["discriminator"]["propertyName"] == "method"
    methods = {m: defs[ref.rsplit("/", 1)[-1]] for m, ref in adapter["discriminator"]["mapping"].items()}
    assert set(methods) == {"lora", "ia3", "loha", "lokr", "adalora", "prefix", "prompt", "full", "freeze"}
    props = {m: set(d["properties"]) for m, d in methods.items()}
    assert {"r", "alpha", "dropout", "target_modules", "use_dora", "use_rslora", "options"} <= props["lora"]
    assert {"init_r", "target_r", "num_virtual_tokens"}.isdisjoint(props["lora"])
    assert {"init_r", "target_r"} <= props["adalora"] and {"r", "use_dora"}.isdisjoint(props["adalora"])
    assert {"r", "alpha", "dropout"}.isdisjoint(props["ia3"]) and "target_modules" in props["ia3"]
    assert "num_virtual_tokens" in props["prefix"] and "target_modules" not in props["prompt"]
    assert props["full"] == props["freeze"] == {"method"}
    assert methods["lora"]["properties"]["r"]["default"] == 8 and methods["lora"]["properties"]["dropout"]["default"] is None
    assert all(d["additionalProperties"] is False for d in methods.values())


def test_schedulers_match_transformers() -> None:
    from transformers.trainer_utils import SchedulerType

    assert set(SCHEDULERS) == {s.value for s in SchedulerType}


def test_a_problem_in_an_override_names_the_override_not_the_file() -> None:
    from hfadapt.core.recipe import Recipe

    file = str(Path("recipes/text/tiny-sentiment-offline.yaml").resolve())
    with pytest.raises(HfadaptError) as e:
        Recipe.from_yaml("text/tiny-sentiment-offline", overrides=["train.epoch=3"])
    assert str(e.value) == f"{file}: train.epoch: unknown field (did you mean 'epochs'?) (from the override 'train.epoch=3')"
    with pytest.raises(HfadaptError) as e:  # a cross-field problem of the override alone
        Recipe.from_yaml("text/tiny-sentiment-offline", overrides=["train.early_stopping_patience=2", "train.eval_steps=null"])
    assert str(e.value).startswith(f"{file}: train.early_stopping_patience") and "(from the override 'train.early_stopping_patience=2')" in str(e.value)
    with pytest.raises(HfadaptError) as e:  # the file's own fields, made wrong by switching the method: the file
        Recipe.from_yaml("text/tiny-sentiment-offline", overrides=["adapter.method=ia3"])
    assert str(e.value).startswith(f"{file}: adapter.r: ") and "from the override" not in str(e.value)
