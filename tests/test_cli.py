"""The `hfadapt` command: fast subcommands, one-line user errors, data errors before training, run-dir safety.

Subcommands that don't need torch run as subprocesses. `train` data errors run one case as a real
subprocess (started in the background when this module starts, so its ~10 s of torch/transformers/
datasets imports overlap the other tests) and the rest in-process through `hfadapt.cli.main`: the
same code path without paying that start-up for every case.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.conftest import sentiment_rows, vocabulary, write_csv, write_jsonl

from hfadapt.core.shipped import shipped_recipes
from hfadapt.cli import main

HEAVY = ("torch", "transformers", "peft", "accelerate", "datasets", "evaluate")

ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
}


def cli(*args: str, cwd: Path, python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *python_flags, "-m", "hfadapt", *args],
        capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300,
    )


def one_error_line(stderr: str, *parts: str, only_line: bool = False) -> str:
    """The single `hfadapt: error:` line (the last thing printed); no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("hfadapt: error:")]
    assert len(errors) == 1, stderr
    assert lines[-1] == errors[0], stderr
    if only_line:
        assert lines == errors, stderr
    for part in parts:
        assert part in errors[0], (part, errors[0])
    return errors[0]


def write_recipe(folder: Path, raw: dict[str, Any], name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def text_recipe(tmp_path: Path, model: str, data_file: str, **data: Any) -> dict[str, Any]:
    return {
        "task": "text-classification",
        "model": {"name_or_path": model},
        "data": {"train_files": data_file, "max_length": 16, **data},
        "adapter": {"method": "lora", "r": 2},
        "train": {"epochs": 1, "batch_size": 8, "log_with": []},
        "output": {"dir": str(tmp_path / "run")},
    }


@pytest.fixture
def good_recipe(tmp_path: Path) -> Path:
    # validate loads neither model nor data, so neither has to exist
    return write_recipe(tmp_path, text_recipe(tmp_path, "google-bert/bert-base-uncased", "./train.csv"), "good.yaml")


@pytest.fixture(scope="module", autouse=True)
def missing_column_train(tmp_path_factory: pytest.TempPathFactory):
    """`hfadapt train` as a real process on a CSV without the label column; test_train_missing_column_subprocess
    checks it. Only a tokenizer is needed: the error comes before the model is loaded."""
    folder = tmp_path_factory.mktemp("cli-missing-column")
    tokenizer = folder / "tokenizer"
    tokenizer.mkdir()
    (tokenizer / "vocab.txt").write_text("\n".join(vocabulary()) + "\n")
    (tokenizer / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 64})
    )
    write_csv(folder / "reviews.csv", [{"text": r["text"], "sentiment": r["label"]} for r in sentiment_rows(16)])
    path = write_recipe(folder, text_recipe(folder, "./tokenizer", "./reviews.csv"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "hfadapt", "train", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=folder,
    )
    yield folder, proc
    if proc.poll() is None:  # the checking test was deselected
        proc.kill()
        proc.communicate()


def run_main(capsys: pytest.CaptureFixture, argv: list[str]) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse errors
        rc = e.code
    return rc, capsys.readouterr().err


@pytest.fixture
def quiet_datasets():
    """No datasets progress bars on the captured stderr of in-process runs."""
    import datasets

    was_disabled = datasets.utils.logging.is_progress_bar_enabled() is False
    datasets.disable_progress_bars()
    yield
    if not was_disabled:
        datasets.enable_progress_bars()


# ---- fast subcommands ----------------------------------------------------------------------------
def test_help(tmp_path: Path, capsys) -> None:
    r = cli("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for command in ("train", "validate", "eval", "predict", "targets", "recipes", "schema", "--debug", "--verbose"):
        assert command in r.stdout
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--resume" in out and "key.sub=value" in out
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("hfadapt ")


def test_validate_imports_no_torch_importtime(tmp_path: Path, good_recipe: Path) -> None:
    r = cli("validate", str(good_recipe), cwd=tmp_path, python_flags=("-X", "importtime"))
    assert r.returncode == 0, r.stderr
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in r.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "hfadapt.core.recipe" in imported  # the output is what we think it is
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert heavy == [], heavy


def test_light_commands_import_no_heavy_library(tmp_path: Path, good_recipe: Path) -> None:
    snippet = (
        "import sys\n"
        "from hfadapt.cli import main\n"
        f"for argv in [['validate', {str(good_recipe)!r}], ['schema'], ['recipes']]:\n"
        "    assert main(argv) == 0, argv\n"
        f"    heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "    assert not heavy, (argv, heavy)\n"
        "print('LIGHT', file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "LIGHT" in r.stderr


def test_validate_good_recipe(tmp_path: Path, good_recipe: Path) -> None:
    r = cli("validate", str(good_recipe), "train.epochs=2", "adapter.target_modules=[query,value]", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{good_recipe}: ok (text-classification, google-bert/bert-base-uncased, lora)"
    assert r.stderr == ""


def test_validate_shipped_recipe_by_name(tmp_path: Path, capsys) -> None:
    assert main(["validate", "text/sst2-bert-lora", "train.epochs=1"]) == 0
    assert "sst2-bert-lora.yaml: ok" in capsys.readouterr().out


# The first cases run as real processes; the rest go through main() in-process (same code, no start-up).
@pytest.mark.parametrize(
    "subprocess_, edit, overrides, parts",
    [
        (True, {"train": {"epoch": 2}}, [], ["train.epoch", "did you mean 'epochs'"]),  # unknown key in the file
        (True, {}, ["train.epochs=many"], ["train.epochs", "'many'"]),  # bad value
        (True, {"task": "text-clasification"}, [], ["task", "unknown task 'text-clasification'", "did you mean 'text-classification'"]),
        (False, {}, ["adapter.dropuot=0.1"], ["adapter.dropuot", "did you mean 'dropout'"]),  # unknown key by override
        (False, {"model": {"dtype": "float64"}}, [], ["model.dtype", "'float64'"]),  # bad value in the file
        (False, {"adapter": {"method": "prefix"}, "task": "image-classification", "data": {"dataset": "beans"}}, [], ["adapter.method", "prefix"]),
        (False, {"task": "image-classification"}, [], ["data.max_length: a field of", "text-classification", "not of image-classification"]),
        (False, {"eval": {"metrics": ["acuracy"]}}, [], ["eval.metrics", "did you mean 'accuracy'"]),
        (False, {}, ["train.warmup_steps=5", "train.warmup_ratio=0.1"], ["train.warmup_steps", "train.warmup_ratio"]),
    ],
)
def test_validate_broken_recipe(
    tmp_path: Path, capsys, subprocess_: bool, edit: dict, overrides: list[str], parts: list[str]
) -> None:
    raw = text_recipe(tmp_path, "google-bert/bert-base-uncased", "./train.csv")
    for key, value in edit.items():
        # an edit's data or adapter section replaces the text/LoRA one (its fields belong to another task
        # or method); others merge
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and key in raw and key not in ("data", "adapter") else value
    path = write_recipe(tmp_path, raw, "broken.yaml")
    if subprocess_:
        r = cli("validate", str(path), *overrides, cwd=tmp_path)
        rc, out, err = r.returncode, r.stdout, r.stderr
    else:
        rc = main(["validate", str(path), *overrides])
        out, err = capsys.readouterr()
    assert rc == 2
    line = one_error_line(err, *parts, only_line=True)
    assert "broken.yaml" in line  # the file is named
    assert out == ""


def test_validate_missing_recipe_and_bad_override_syntax(good_recipe: Path, capsys) -> None:
    rc, err = run_main(capsys, ["validate", "text/sst2-bert-lroa"])
    assert rc == 2
    one_error_line(err, "text/sst2-bert-lroa", "did you mean 'text/sst2-bert-lora'", only_line=True)
    rc, err = run_main(capsys, ["validate", str(good_recipe), "train.epochs"])
    assert rc == 2
    one_error_line(err, "override 'train.epochs'", only_line=True)


def test_debug_shows_traceback(tmp_path: Path, good_recipe: Path) -> None:
    r = cli("--debug", "validate", str(good_recipe), "train.epoch=2", cwd=tmp_path)
    assert r.returncode != 0
    assert "Traceback" in r.stderr
    assert "HfadaptError" in r.stderr and "train.epoch" in r.stderr


def test_recipes_lists_the_shipped_recipes(tmp_path: Path) -> None:
    r = cli("recipes", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == shipped_recipes()
    assert "text/sst2-bert-lora" in r.stdout.split()


def test_schema_prints_json(tmp_path: Path) -> None:
    r = cli("schema", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    schema = json.loads(r.stdout)
    assert schema["discriminator"]["propertyName"] == "task" and "text-classification" in schema["discriminator"]["mapping"]
    variant = schema["$defs"]["TextClassificationRecipe"]
    assert {"task", "model", "data", "adapter", "train", "eval", "output"} <= set(variant["properties"])
    assert "TrainSection" in schema["$defs"] and "TextClassificationData" in schema["$defs"]


# ---- train: data errors before training ----------------------------------------------------------
def test_train_missing_text_column(tmp_path: Path, tiny_bert: str, capsys, quiet_datasets) -> None:
    write_csv(tmp_path / "train.csv", sentiment_rows(16))
    path = write_recipe(tmp_path, text_recipe(tmp_path, tiny_bert, "./train.csv", text_column="review"))
    rc, err = run_main(capsys, ["train", str(path)])
    assert rc == 2
    one_error_line(err, "data.text_column", "column 'review'", "columns: text, label")


def test_train_missing_data_file(tmp_path: Path, tiny_bert: str, capsys, quiet_datasets) -> None:
    path = write_recipe(tmp_path, text_recipe(tmp_path, tiny_bert, "./nowhere.csv"))
    rc, err = run_main(capsys, ["train", str(path)])
    assert rc == 2
    one_error_line(err, "data.train_files", "file not found", str(tmp_path / "nowhere.csv"))


def _labels_with_a_bad_row(bad_row: int, n: int = 16) -> list[dict[str, Any]]:
    rows = sentiment_rows(n)
    return [{"text": r["text"], "label": 7 if i == bad_row else i % 2} for i, r in enumerate(rows)]


def test_train_label_out_of_range(tmp_path: Path, tiny_bert: str, capsys, quiet_datasets) -> None:
    write_jsonl(tmp_path / "train.jsonl", _labels_with_a_bad_row(5))
    raw = text_recipe(tmp_path, tiny_bert, "./train.jsonl", labels=["negative", "positive"], validation_split=None)
    rc, err = run_main(capsys, ["train", str(write_recipe(tmp_path, raw))])
    assert rc == 2
    one_error_line(err, "data.label_column 'label'", f"line 6 of {tmp_path / 'train.jsonl'}", "label 7 out of range [0, 1]")


def test_train_unknown_string_label(tmp_path: Path, tiny_bert: str, capsys, quiet_datasets) -> None:
    rows = sentiment_rows(16)
    rows[3]["label"] = "postive"
    write_csv(tmp_path / "train.csv", rows)
    raw = text_recipe(tmp_path, tiny_bert, "./train.csv", labels=["negative", "positive"], validation_split=None)
    rc, err = run_main(capsys, ["train", str(write_recipe(tmp_path, raw))])
    assert rc == 2
    one_error_line(err, "data.label_column 'label'", f"line 5 of {tmp_path / 'train.csv'}", "unknown label 'postive'")


def test_train_error_row_is_the_file_row_when_validation_is_carved(tmp_path: Path, tiny_bert: str, capsys, quiet_datasets) -> None:
    write_jsonl(tmp_path / "train.jsonl", _labels_with_a_bad_row(5))
    raw = text_recipe(tmp_path, tiny_bert, "./train.jsonl", labels=["negative", "positive"])  # validation_size 0.1 carved
    rc, err = run_main(capsys, ["train", str(write_recipe(tmp_path, raw))])
    assert rc == 2
    line = one_error_line(err, "label 7 out of range")
    assert re.search(r"\bline 6 of \S*train.jsonl\b", line), line  # JSON Lines row 5 (0-based) is line 6


def test_train_unreadable_image(tmp_path: Path, tiny_vit: str, capsys, quiet_datasets) -> None:
    import numpy as np
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    rows = []
    for i in range(6):
        png = tmp_path / "imgs" / f"{i}.png"
        if i == 3:
            png.write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
        else:
            Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(png)
        rows.append({"image": f"imgs/{i}.png", "label": "red" if i % 2 else "blue"})  # relative to the CSV
    write_csv(tmp_path / "images.csv", rows)
    raw = {
        "task": "image-classification",
        "model": {"name_or_path": tiny_vit},
        "data": {"train_files": "./images.csv", "validation_split": None},
        "train": {"epochs": 1, "log_with": []},
        "output": {"dir": str(tmp_path / "run")},
    }
    rc, err = run_main(capsys, ["train", str(write_recipe(tmp_path, raw))])
    assert rc == 2
    one_error_line(err, "data.image_column 'image'", f"line 5 of {tmp_path / 'images.csv'}", "cannot read image", str(tmp_path / "imgs" / "3.png"))


def test_failed_data_preparation_does_not_block_the_next_attempt(tmp_path: Path, tiny_bert: str, capsys, quiet_datasets) -> None:
    rows = [{"text": r["text"], "sentiment": r["label"]} for r in sentiment_rows(16)]
    write_csv(tmp_path / "reviews.csv", rows)
    path = write_recipe(tmp_path, text_recipe(tmp_path, tiny_bert, "./reviews.csv"))
    for _ in range(2):  # the user retries (e.g. after looking at the data): same error, not a run-dir error
        rc, err = run_main(capsys, ["train", str(path)])
        assert rc == 2
        one_error_line(err, "data.label_column", "column 'label'")


def test_data_prep_loads_test_files_with_test_split(tmp_path: Path) -> None:
    """With data.test_split set, data.test_files are loaded and checked like the other splits."""
    from hfadapt import Recipe
    from hfadapt.data.sources import load_raw
    from hfadapt.tasks import TASKS

    write_csv(tmp_path / "train.csv", sentiment_rows(16))
    write_csv(tmp_path / "test.csv", sentiment_rows(4, seed=1))
    r = Recipe.from_dict(text_recipe(tmp_path, "unused", str(tmp_path / "train.csv"),
                                     test_files=[str(tmp_path / "test.csv")], test_split="test"))
    raw = load_raw(r, TASKS.get(r.task))
    assert raw.test is not None and len(raw.test) == 4


def test_data_prep_uses_the_test_files(tmp_path: Path) -> None:
    from hfadapt import Recipe
    from hfadapt.data.sources import load_raw
    from hfadapt.tasks import TASKS

    write_csv(tmp_path / "train.csv", sentiment_rows(16))
    write_csv(tmp_path / "test.csv", sentiment_rows(4, seed=1))
    r = Recipe.from_dict(text_recipe(tmp_path, "unused", str(tmp_path / "train.csv"), test_files=[str(tmp_path / "test.csv")]))
    raw = load_raw(r, TASKS.get(r.task))
    assert raw.test is not None and len(raw.test) == 4


# ---- run directory safety ----------------------------------------------------------------------
def test_existing_run_directory_is_never_overwritten(tmp_path: Path, tiny_bert: str, capsys) -> None:
    write_csv(tmp_path / "train.csv", sentiment_rows(16))
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("precious results")
    path = write_recipe(tmp_path, text_recipe(tmp_path, tiny_bert, "./train.csv"))
    rc, err = run_main(capsys, ["train", str(path)])
    assert rc == 2
    one_error_line(err, "output.dir", str(run), "--resume", "output.overwrite=true")
    assert (run / "notes.txt").read_text() == "precious results"
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_resume_without_checkpoint(tmp_path: Path, tiny_bert: str, capsys) -> None:
    write_csv(tmp_path / "train.csv", sentiment_rows(16))
    path = write_recipe(tmp_path, text_recipe(tmp_path, tiny_bert, "./train.csv"))
    rc, err = run_main(capsys, ["train", str(path), "train.epochs=2", "--resume"])
    assert rc == 2
    one_error_line(err, "--resume: no complete checkpoint", "no run was started", "without --resume")
    assert not (tmp_path / "run").exists()


def test_overrides_after_resume_flag(tmp_path: Path, tiny_bert: str, capsys) -> None:
    write_csv(tmp_path / "train.csv", sentiment_rows(16))
    path = write_recipe(tmp_path, text_recipe(tmp_path, tiny_bert, "./train.csv"))
    rc, err = run_main(capsys, ["train", str(path), "--resume", "train.epochs=2"])
    assert rc == 2
    assert "unrecognized arguments" not in err
    one_error_line(err, "--resume: no complete checkpoint")


# ---- last: the background `train` process started with the module has had time to finish -------------
def test_train_missing_column_subprocess(missing_column_train) -> None:
    folder, proc = missing_column_train
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 2, stderr
    one_error_line(stderr, "data.label_column", "column 'label'", str(folder / "reviews.csv"), "columns: text, sentiment")
    assert not (folder / "run" / "adapter").exists()


def test_a_reader_that_stops_early_ends_the_command_quietly() -> None:
    """`hfadapt schema | head`: no BrokenPipeError traceback when the reader closes the pipe."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "hfadapt", "schema"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and "Traceback" not in err and err == ""
