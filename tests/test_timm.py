"""timm backbones in image-classification: tiny ViT and ResNet saved as `timm/...` repos are on the Hub.

Loss falls and the pretrained base beats the same recipe from random weights; labels come from
the data (the base's config names other classes); predict works on a base with 1000 classes; the
adapter reloads with plain transformers + peft to hfadapt's outputs; merge gives a folder timm
loads; family targets; timm augmentation with mixup; exact resume.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from hfadapt import HfadaptError, Recipe, predict, train
from tests.timm_fixtures import ARCHS, BASE_NAMES, PATTERNS, build_timm_model, save_like_hub, write_pattern_folder


@pytest.fixture(scope="session")
def timm_bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("timm-bases")
    steps = {"vit": 100, "resnet": 40}  # enough for each to tell the four patterns apart
    return {name: str(save_like_hub(build_timm_model(arch, args, steps[name]), root / name, arch, args)) for name, (arch, args) in ARCHS.items()}


@pytest.fixture(scope="session")
def patterns(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_pattern_folder(tmp_path_factory.mktemp("patterns"), {"train": 16, "validation": 6}))


def timm_recipe(base: str, data_dir: str, run_dir: Path, **sections: Any) -> Any:
    raw: dict[str, Any] = {
        "name": "timm-test",
        "task": "image-classification",
        "model": {"name_or_path": base},
        "data": {"dataset": data_dir},
        "adapter": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"epochs": 2, "batch_size": 16, "learning_rate": 1e-2, "logging_steps": 1, "log_with": []},
        "output": {"dir": str(run_dir)},
    }
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    return Recipe.from_dict(raw)


def _first_images(data: str) -> list[str]:
    return [str(sorted((Path(data) / "validation" / name).glob("*.png"))[0]) for name in PATTERNS]


# ---- targets per family (architectures of the real Hub repos, built on the meta device) ---------------
@pytest.mark.parametrize(
    "arch, expected, head",
    [
        ("vit_base_patch16_224", ["attn.proj", "fc1", "fc2", "qkv"], "timm_model.head"),
        # the stem (pretrained_cfg first_conv: conv1, stem.0, conv_stem) is left out: blocks' conv1 need longer names
        ("resnet50", ["0.conv1", "1.conv1", "2.conv1", "3.conv1", "4.conv1", "5.conv1", "conv2", "conv3", "downsample.0"], "timm_model.fc"),
        ("convnext_tiny", ["downsample.1", "fc1", "fc2"], "timm_model.head.fc"),
        ("tf_efficientnet_lite0", ["conv_head", "conv_pw", "conv_pwl"], "timm_model.classifier"),
    ],
)
def test_family_default_targets(arch: str, expected: list[str], head: str) -> None:
    from accelerate import init_empty_weights
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    from hfadapt.modeling.adapters import head_modules
    from hfadapt.modeling.timm_models import default_targets

    with init_empty_weights():
        model = TimmWrapperForImageClassification(TimmWrapperConfig(architecture=arch, num_labels=10))
    targets = default_targets(model)
    assert targets == expected
    assert head_modules(model) == [head]
    # depthwise convolutions are left out (peft: rank must divide groups, and no merge)
    assert "conv_dw" not in targets


def test_targets_lists_convolutions_and_linear_layers(timm_bases: dict[str, str]) -> None:
    from hfadapt import list_targets
    from hfadapt.insight.targets import format_report

    rep = list_targets(timm_bases["resnet"], r=4)
    kinds = {row.kind for row in rep.rows}
    assert {"conv 3x3", "conv 1x1", "conv 7x7"} <= kinds
    assert rep.heads == ("timm_model.fc",) and rep.timm_family == "convnet"
    conv2 = next(r for r in rep.rows if r.name == "conv2")
    assert conv2.lora_params == sum(4 * (i * 9 + o) for i, o in [(16, 16), (32, 32), (64, 64), (128, 128)])
    text = format_report(rep)
    assert "hfadapt default for a timm convnet" in text and "timm_model.fc" in text
    vit = list_targets(timm_bases["vit"], r=4)
    assert vit.timm_default == ("attn.proj", "fc1", "fc2", "qkv") and vit.timm_family == "transformer"


# ---- a run end to end --------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["resnet", "vit"])
def test_timm_run_learns_predicts_reloads_and_merges(family: str, timm_bases: dict[str, str], patterns: str, tmp_path: Path) -> None:
    import timm
    import transformers
    from peft import PeftConfig, PeftModel
    from safetensors.torch import load_file

    from hfadapt import evaluate_run
    from hfadapt.inference.merge import merge
    from hfadapt.publishing.cards import render_adapter_card, render_merged_card
    from hfadapt.inference.run_model import load_model_and_processor
    from hfadapt.rundir.layout import RunDir

    result = train(timm_recipe(timm_bases[family], patterns, tmp_path / "run"))
    losses = result.losses
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.2, losses
    assert result.metrics["eval/accuracy"] >= 0.5, result.metrics

    # what was trained: LoRA on the family's layers, the new classifier fully
    weights = load_file(str(result.output_dir / "adapter" / "adapter_model.safetensors"))
    head = "fc" if family == "resnet" else "head"
    assert any(f"timm_model.{head}.modules_to_save" in k or f"timm_model.{head}.weight" in k for k in weights), sorted(weights)[:5]
    adapted = "conv2" if family == "resnet" else "attn.qkv"
    assert any(adapted in k and "lora_A" in k for k in weights)

    # labels come from the data, not from the base's config (which names 1000 other classes)
    config = json.loads((result.output_dir / "adapter" / "config.json").read_text())
    assert config["label_names"] == list(PATTERNS) and config["num_classes"] == len(PATTERNS)
    assert json.loads(Path(timm_bases[family], "config.json").read_text())["label_names"] == BASE_NAMES

    # eval of the saved run gives the evaluation training ended with (BatchNorm statistics frozen)
    again = evaluate_run(result.output_dir)
    assert again["validation/loss"] == pytest.approx(result.metrics["eval/loss"], rel=1e-4, abs=1e-6)

    # predict on a run whose base has 1000 classes
    images = _first_images(patterns)
    ours = predict(result.output_dir, images)
    assert all(p["label"] in PATTERNS and set(p["scores"]) == set(PATTERNS) for p in ours)

    # plain transformers + peft: the same probabilities as `hfadapt predict`
    run = RunDir.open(result.output_dir)
    adapter = str(run.model_dir)
    base_path = PeftConfig.from_pretrained(adapter).base_model_name_or_path
    base = transformers.AutoModelForImageClassification.from_pretrained(
        base_path, config=transformers.AutoConfig.from_pretrained(adapter), ignore_mismatched_sizes=True
    )
    plain = PeftModel.from_pretrained(base, adapter).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(adapter)
    from PIL import Image

    pixels = processor([Image.open(p).convert("RGB") for p in images], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        probs = torch.softmax(plain(pixel_values=pixels).logits, -1)
    got = torch.tensor([[p["scores"][n] for n in PATTERNS] for p in ours])
    torch.testing.assert_close(got, probs, rtol=1e-5, atol=1e-6)
    assert plain.config.id2label == dict(enumerate(PATTERNS))

    # Hub cards: listed with timm models; a merged model is a timm checkpoint
    card = render_adapter_card(run, "user/patterns-timm")
    meta = card.split("---")[1]
    assert "- timm" in meta and "library_name: peft" in meta
    out = merge(result.output_dir, tmp_path / "merged")
    assert "library_name: timm" in (out / "README.md").read_text().split("---")[1]
    assert "library_name: timm" in render_merged_card(run, "user/patterns-timm-merged")

    # merge: a standalone folder plain timm loads, with the data's class names and the same logits
    standalone = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert standalone.num_classes == len(PATTERNS)
    assert standalone.pretrained_cfg["label_names"] == list(PATTERNS)
    with torch.no_grad():
        torch.testing.assert_close(torch.softmax(standalone(pixels), -1), probs, rtol=1e-4, atol=1e-5)
    ours_model, _, _ = load_model_and_processor(run)
    assert ours_model.config.label_names == list(PATTERNS)


def test_pretrained_timm_base_beats_random_weights(timm_bases: dict[str, str], patterns: str, tmp_path: Path) -> None:
    pretrained = train(timm_recipe(timm_bases["resnet"], patterns, tmp_path / "pretrained"))
    scratch = train(timm_recipe(timm_bases["resnet"], patterns, tmp_path / "scratch", model={"init": "config"}))
    assert pretrained.metrics["eval/accuracy"] >= scratch.metrics["eval/accuracy"] + 0.25, (pretrained.metrics, scratch.metrics)
    assert pretrained.metrics["eval/loss"] < scratch.metrics["eval/loss"]
    # the random base was kept so the adapter reloads onto it
    assert predict(scratch.output_dir, _first_images(patterns))[0]["label"] in PATTERNS


def test_folder_written_by_timm_save_for_hf(tmp_path: Path, patterns: str) -> None:
    """timm's save_for_hf records model_args.num_classes, which transformers' wrapper rejects on its own."""
    arch, args = ARCHS["vit"]
    base = save_like_hub(build_timm_model(arch, args, pretrain_steps=0), tmp_path / "base", arch, args, with_num_classes_arg=True)
    result = train(timm_recipe(str(base), patterns, tmp_path / "run", train={"max_steps": 1}))
    assert predict(result.output_dir, _first_images(patterns)[:1])[0]["label"] in PATTERNS


# ---- timm augmentation -------------------------------------------------------------------------------
AUGMENT = {"auto_augment": "rand-m9-mstd0.5", "re_prob": 0.25, "mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1}


def test_timm_augment_mixup_trains_and_evaluates_on_hard_labels(timm_bases: dict[str, str], patterns: str, tmp_path: Path) -> None:
    from hfadapt.tasks import TASKS

    recipe = timm_recipe(timm_bases["vit"], patterns, tmp_path / "run", data={"timm_augment": AUGMENT}, train={"max_steps": 3, "batch_size": 5})
    assert recipe.data.augment is True
    task = TASKS.get("image-classification")
    from hfadapt.data.labels import LabelInfo

    collate = task.train_collator(None, recipe, LabelInfo(PATTERNS, "single_label"))
    rows = [{"pixel_values": torch.randn(3, 32, 32), "labels": i % 4} for i in range(5)]  # odd: the last one is not mixed
    batch = collate(rows)
    assert batch["labels"].shape == (5, 4) and torch.allclose(batch["labels"].sum(-1), torch.ones(5))
    assert batch["labels"][-1].max().item() == pytest.approx(0.9 + 0.1 / 4)
    result = train(recipe)
    assert all(math.isfinite(x) for x in result.losses)
    assert 0 <= result.metrics["eval/accuracy"] <= 1 and result.metrics["eval/samples"] == 24


def test_timm_augment_recipe_checks(timm_bases: dict[str, str], patterns: str, tmp_path: Path) -> None:
    with pytest.raises(HfadaptError, match="data.timm_augment: augmentation is off"):
        timm_recipe(timm_bases["vit"], patterns, tmp_path / "a", data={"augment": False, "timm_augment": AUGMENT})
    with pytest.raises(HfadaptError, match="need problem_type single_label"):
        timm_recipe(timm_bases["vit"], patterns, tmp_path / "b", data={"problem_type": "multi_label", "timm_augment": {"mixup": 0.2}})
    with pytest.raises(HfadaptError, match="data.timm_augment.re_prob"):
        timm_recipe(timm_bases["vit"], patterns, tmp_path / "c", data={"timm_augment": {"re_prob": 2}})
    bad = timm_recipe(timm_bases["vit"], patterns, tmp_path / "d", data={"timm_augment": {"auto_augment": "nonsense-m9"}})
    with pytest.raises(HfadaptError, match="data.timm_augment"):
        train(bad)


# ---- exact resume --------------------------------------------------------------------------------------
def test_timm_resume_reproduces_uninterrupted_run(timm_bases: dict[str, str], patterns: str, tmp_path: Path) -> None:
    from tests.conftest import assert_same_adapter, train_interrupted_then_resumed

    common = {"max_steps": 6, "save_steps": 3, "batch_size": 8, "eval_steps": 3}

    def recipe(name: str) -> Any:
        # dropout, not augmentation: like the transformers test (Accelerate's loader draws the next batch,
        # and so its random augmentation, before a checkpoint is saved; see the README)
        return timm_recipe(timm_bases["resnet"], patterns, tmp_path / name, train=common, adapter={"dropout": 0.1})

    full = train(recipe("full"))
    resumed = train_interrupted_then_resumed(recipe("resumed"), crash_at=5)
    assert resumed.losses == full.losses
    assert_same_adapter(full.output_dir, resumed.output_dir)
    timings = ("perf/",)  # wall-clock figures differ between runs; everything else must not
    assert {k: v for k, v in resumed.metrics.items() if not k.startswith(timings)} == pytest.approx(
        {k: v for k, v in full.metrics.items() if not k.startswith(timings)}
    )


# ---- two processes ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_timm_two_processes_match_one_process(timm_bases: dict[str, str], patterns: str, tmp_path: Path) -> None:
    """As tests/test_distributed.py for a transformers base: 1 process x batch 8 == 2 processes x batch 4."""
    import sys

    import yaml

    from tests.test_distributed import _check, _env, _free_port, _Proc, _read_run, _run_all, _torchrun

    def write(name: str, batch_size: int) -> Path:
        recipe = timm_recipe(timm_bases["vit"], patterns, tmp_path / f"run-{name}", train={"max_steps": 6, "batch_size": batch_size,
                             "eval_batch_size": 5, "eval_steps": 3, "seed": 7})
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        return path

    one, two = write("one", 8), write("two", 4)
    procs = [
        _Proc("2proc", _torchrun() + ["--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
                                      str(_free_port()), "-m", "hfadapt", "train", str(two)], tmp_path, _env(tmp_path / "cache-2")),
        _Proc("1proc", [sys.executable, "-m", "hfadapt", "train", str(one)], tmp_path, _env(tmp_path / "cache-1")),
    ]
    results = _run_all(procs)
    for name, (cmd, rc, out, err) in results.items():
        _check(name, cmd, rc, out, err)
    assert "on 2 process(es)" in results["2proc"][2]
    r1, r2 = _read_run(tmp_path / "run-one"), _read_run(tmp_path / "run-two")
    torch.testing.assert_close(torch.tensor(r2["state"]["losses"]), torch.tensor(r1["state"]["losses"]), rtol=1e-4, atol=1e-5)
    assert sorted(r1["adapter"]) == sorted(r2["adapter"])
    for key, weight in r1["adapter"].items():
        torch.testing.assert_close(r2["adapter"][key], weight, rtol=1e-4, atol=1e-5)
    assert r1["metrics"]["eval/samples"] == r2["metrics"]["eval/samples"] == 24
    assert r2["metrics"]["eval/accuracy"] == pytest.approx(r1["metrics"]["eval/accuracy"])


def test_convnet_lora_dropout_defaults_to_none_unless_set() -> None:
    """Dropout on a conv LoRA drops the whole input feature map of every adapted conv: off for timm ConvNets
    unless adapter.dropout is set; other models get 0.05. The recipe keeps null, so a resume from the
    run's saved recipe.yaml decides the same way."""
    from hfadapt.modeling.adapters import LORA_DROPOUT, AdapterContext, LoraSection, _dropout

    convnet = AdapterContext(["conv_pw"], None, None, dropout=0.0)
    other = AdapterContext(["qkv"], None, None)
    assert _dropout(LoraSection(), convnet) == 0.0
    assert _dropout(LoraSection(dropout=0.1), convnet) == 0.1
    assert _dropout(LoraSection(dropout=0.05), convnet) == 0.05  # set explicitly: kept
    assert _dropout(LoraSection(), other) == LORA_DROPOUT == 0.05
    saved = LoraSection.model_validate(LoraSection().model_dump(mode="json"))  # what recipe.yaml holds
    assert saved.dropout is None and _dropout(saved, convnet) == 0.0
