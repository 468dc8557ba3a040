"""A catalogue of inputs a user can get wrong: recipes, data files, run directories, CLI flags.

Every case must end with exactly one `hfadapt: error:` line that names the field / file / line,
a non-zero exit, no traceback, and every file that existed before left as it was (content and
mtime). Cases run the CLI in-process (`main([...])`); one runs as a real process.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from tests.conftest import sentiment_rows, write_csv, write_jsonl

from hfadapt.cli import main


# ---- helpers ----------------------------------------------------------------------------------------
def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir", p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def check_one_error(rc: Any, err: str, parts: tuple[str, ...]) -> str:
    assert rc not in (0, None), err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("hfadapt: error:")]
    assert len(errors) == 1, err
    for part in parts:
        assert part in errors[0], (part, errors[0])
    return errors[0]


def run_main(capsys: pytest.CaptureFixture, argv: list[str]) -> tuple[Any, str]:
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def text_recipe(folder: Path, model: str, data_file: str, **data: Any) -> Path:
    raw = {
        "task": "text-classification",
        "model": {"name_or_path": model},
        "data": {"train_files": data_file, "max_length": 16, "validation_split": None, **data},
        "adapter": {"method": "lora", "r": 2},
        "train": {"epochs": 1, "batch_size": 8, "log_with": []},
        "output": {"dir": str(folder / "run")},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def quiet_datasets():
    import datasets

    datasets.disable_progress_bars()
    yield


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert: str, sentiment_csv: str) -> Path:
    """One tiny trained run for the module; cases copy it before breaking it."""
    from hfadapt import Recipe, train

    out = tmp_path_factory.mktemp("bad-inputs-run") / "run"
    recipe = Recipe.from_dict({
        "name": "bad-inputs", "task": "text-classification", "model": {"name_or_path": tiny_bert},
        "data": {"train_files": [sentiment_csv], "validation_size": 0.25, "max_length": 16},
        "adapter": {"method": "lora", "r": 2}, "train": {"max_steps": 2, "batch_size": 8, "log_with": []},
        "output": {"dir": str(out)},
    })
    return train(recipe).output_dir


@pytest.fixture(scope="module")
def checkpointed_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert: str, sentiment_csv: str) -> Path:
    """A run killed after its only checkpoint (checkpoint-2), to be resumed."""
    from hfadapt import Recipe, train

    out = tmp_path_factory.mktemp("bad-inputs-checkpointed") / "run"
    recipe = Recipe.from_dict({
        "name": "bad-inputs", "task": "text-classification", "model": {"name_or_path": tiny_bert},
        "data": {"train_files": [sentiment_csv], "validation_size": 0.25, "max_length": 16},
        "adapter": {"method": "lora", "r": 2}, "train": {"max_steps": 4, "save_steps": 2, "batch_size": 8, "log_with": []},
        "output": {"dir": str(out)},
    })

    class Killed(Exception):
        pass

    def kill(state: Any) -> None:
        if state.global_step == 2:
            raise Killed()

    with pytest.raises(Killed):
        train(recipe, callbacks=[kill])
    return out


# ---- cases: (name, setup(tmp_path, fixtures) -> (argv, expected parts)) -------------------------------
Setup = Callable[[Path, dict], tuple[list[str], tuple[str, ...]]]


def _binary_recipe(tmp: Path, fx: dict):
    path = tmp / "model.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    return ["validate", str(path)], (str(path), "binary")


def _latin1_recipe(tmp: Path, fx: dict):
    path = tmp / "recipe.yaml"
    path.write_bytes("task: text-classification\nname: caf\xe9\n".encode("latin-1"))
    return ["validate", str(path)], (str(path), "line 2", "not UTF-8")


def _data_case(content: bytes, name: str, *parts: str, **data: Any) -> Setup:
    def setup(tmp: Path, fx: dict):
        (tmp / name).write_bytes(content)
        recipe = text_recipe(tmp, fx["tiny_bert"], f"./{name}", **data)
        return ["train", str(recipe)], tuple(p.replace("FILE", str(tmp / name)) for p in parts)
    return setup


def _int_labels_with_empty_cell(with_names: bool) -> Setup:
    def setup(tmp: Path, fx: dict):
        rows = [{"text": r["text"], "label": "" if i == 4 else i % 2} for i, r in enumerate(sentiment_rows(16))]
        write_csv(tmp / "train.csv", rows)
        extra = {"labels": ["negative", "positive"]} if with_names else {}
        recipe = text_recipe(tmp, fx["tiny_bert"], "./train.csv", **extra)
        # data row 4 of a CSV with a header is line 6
        return ["train", str(recipe)], ("data.label_column 'label'", f"line 6 of {tmp / 'train.csv'}", "label is missing")
    return setup


def _missing_model(tmp: Path, fx: dict):
    write_csv(tmp / "train.csv", sentiment_rows(16))
    return ["train", str(text_recipe(tmp, "./models/tiny", "./train.csv"))], ("model.name_or_path", "does not exist")


def _model_without_tokenizer(tmp: Path, fx: dict):
    model = tmp / "weights-only"
    model.mkdir()
    for f in Path(fx["tiny_bert"]).iterdir():
        if f.name in ("config.json", "model.safetensors"):
            shutil.copy2(f, model / f.name)
    write_csv(tmp / "train.csv", sentiment_rows(16))
    return ["train", str(text_recipe(tmp, "./weights-only", "./train.csv"))], ("model.name_or_path", str(model), "no tokenizer files")


def _output_dir_is_a_file(tmp: Path, fx: dict):
    write_csv(tmp / "train.csv", sentiment_rows(16))
    recipe = text_recipe(tmp, fx["tiny_bert"], "./train.csv")
    (tmp / "run").write_text("not a folder")
    return ["train", str(recipe)], ("output.dir", str(tmp / "run"))


def _jsonl_without_text_in_one_line(tmp: Path, fx: dict):
    rows = sentiment_rows(12)
    del rows[5]["text"]  # JSON Lines row 5 is line 6
    write_jsonl(tmp / "train.jsonl", rows)
    recipe = text_recipe(tmp, fx["tiny_bert"], "./train.jsonl")
    return ["train", str(recipe)], ("data.text_column 'text'", f"line 6 of {tmp / 'train.jsonl'}", "expected text, got None")


def _text_override(override: str, *parts: str) -> Setup:
    def setup(tmp: Path, fx: dict):
        write_csv(tmp / "train.csv", sentiment_rows(16))
        return ["train", str(text_recipe(tmp, fx["tiny_bert"], "./train.csv")), override], parts
    return setup


def _images(tmp: Path, n: int = 6) -> list[dict]:
    import numpy as np
    from PIL import Image

    (tmp / "imgs").mkdir()
    rows = []
    for i in range(n):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(tmp / "imgs" / f"{i}.png")
        rows.append({"image": f"imgs/{i}.png", "label": "red" if i % 2 else "blue"})
    return rows


def _image_recipe(tmp: Path, fx: dict, data: dict) -> Path:
    raw = {"task": "image-classification", "model": {"name_or_path": fx["tiny_vit"]()},
           "data": {"validation_split": None, **data}, "train": {"max_steps": 1, "log_with": []}, "output": {"dir": str(tmp / "run")}}
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _image_csv_missing_file(tmp: Path, fx: dict):
    rows = _images(tmp)
    rows[1]["image"] = "imgs/gone.png"  # row 1 of a CSV with a header is line 3
    write_csv(tmp / "images.csv", rows)
    recipe = _image_recipe(tmp, fx, {"train_files": "./images.csv"})
    return ["train", str(recipe)], ("data.image_column 'image'", f"line 3 of {tmp / 'images.csv'}", "image file not found", "gone.png")


def _image_folder_zero_byte_png(tmp: Path, fx: dict):
    import numpy as np
    from PIL import Image

    for label in ("red", "blue"):
        (tmp / "folder" / "train" / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 60 * i, dtype=np.uint8)).save(tmp / "folder" / "train" / label / f"{i}.png")
    (tmp / "folder" / "train" / "red" / "1.png").write_bytes(b"")
    recipe = _image_recipe(tmp, fx, {"dataset": "./folder"})
    return ["train", str(recipe)], ("data.dataset", str(tmp / "folder" / "train" / "red" / "1.png"), "empty (0 bytes)")


def _run_case(break_it: Callable[[Path], None], argv: Callable[[Path], list[str]], *parts: str) -> Setup:
    def setup(tmp: Path, fx: dict):
        run = tmp / "run"
        shutil.copytree(fx["finished_run"](), run)
        break_it(run)
        return argv(run), tuple(p.replace("RUN", str(run)) for p in parts)
    return setup


def _two_runs_case(break_second: Callable[[Path], None], extra: list[str], *parts: str) -> Setup:
    """`merge RUN OTHER OUT --method ...` where OTHER is a copy of the finished run, broken by `break_second`."""
    def setup(tmp: Path, fx: dict):
        run, other = tmp / "run", tmp / "other"
        shutil.copytree(fx["finished_run"](), run)
        shutil.copytree(run, other)
        break_second(other)
        return ["merge", str(run), str(other), str(tmp / "merged"), *extra], tuple(p.replace("OTHER", str(other)) for p in parts)
    return setup


def _edit_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _as_ia3(run: Path) -> None:
    import yaml

    raw = yaml.safe_load((run / "recipe.yaml").read_text())
    raw["adapter"] = {"method": "ia3"}
    (run / "recipe.yaml").write_text(yaml.safe_dump(raw))


def _torn_checkpoint(name: str) -> Setup:
    def setup(tmp: Path, fx: dict):
        run = tmp / "run"
        shutil.copytree(fx["checkpointed_run"](), run)
        torn = run / "checkpoints" / "checkpoint-2" / name
        torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
        return ["train", str(run / "recipe.yaml"), "--resume", f"output.dir={run}"], ("--resume", str(torn), "no earlier complete checkpoint")
    return setup


def _one_label_text(tmp: Path, fx: dict):
    write_csv(tmp / "train.csv", [{"text": r["text"], "label": "positive"} for r in sentiment_rows(16)])
    recipe = text_recipe(tmp, fx["tiny_bert"], "./train.csv")
    return ["train", str(recipe)], ("data.label_column 'label'", "at least 2 labels", "'positive'")


def _one_tag_tokens(tmp: Path, fx: dict):
    write_jsonl(tmp / "train.jsonl", [{"tokens": ["a", "good", "film"], "ner_tags": ["O", "O", "O"]}] * 8)
    raw = {"task": "token-classification", "model": {"name_or_path": fx["tiny_bert"]},
           "data": {"train_files": "./train.jsonl", "validation_split": None}, "adapter": {"method": "lora", "r": 2},
           "train": {"max_steps": 1, "log_with": []}, "output": {"dir": str(tmp / "run")}}
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return ["train", str(tmp / "recipe.yaml")], ("data.tags_column 'ner_tags'", "at least 2 labels", "'O'")


def _one_class_image_folder(tmp: Path, fx: dict):
    import numpy as np
    from PIL import Image

    (tmp / "folder" / "train" / "red").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 60 * i, dtype=np.uint8)).save(tmp / "folder" / "train" / "red" / f"{i}.png")
    recipe = _image_recipe(tmp, fx, {"dataset": "./folder"})
    return ["train", str(recipe)], ("at least 2 labels", "'red'")


def _audio_recipe(tmp: Path, fx: dict, task: str, data: dict) -> Path:
    raw = {"task": task, "model": {"name_or_path": fx["tiny_wav2vec2"]()}, "data": {"validation_split": None, **data},
           "train": {"max_steps": 1, "log_with": []}, "output": {"dir": str(tmp / "run")}}
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _one_class_audio_folder(tmp: Path, fx: dict):
    from tests.audio_fixtures import sound, write_wav

    for i in range(3):
        write_wav(tmp / "sounds" / "train" / "tone" / f"{i}.wav", sound("tone", i))
    recipe = _audio_recipe(tmp, fx, "audio-classification", {"dataset": "./sounds"})
    return ["train", str(recipe)], ("at least 2 labels", "'tone'")


def _speech_rows(tmp: Path, gone: bool) -> Path:
    from tests.audio_fixtures import utterance, write_wav

    rows = []
    for i in range(3):
        write_wav(tmp / "clips" / f"{i}.wav", utterance(["do", "re"]))
        rows.append({"audio": f"clips/{i}.wav", "text": "do re"})
    if gone:
        rows.append({"audio": "clips/gone.wav", "text": "do"})  # row 3 of JSON Lines is line 4
    return write_jsonl(tmp / "speech.jsonl", rows)


def _audio_file_missing(tmp: Path, fx: dict):
    _speech_rows(tmp, gone=True)
    recipe = _audio_recipe(tmp, fx, "speech-recognition", {"train_files": "./speech.jsonl", "vocabulary": "transcripts"})
    return ["train", str(recipe)], ("data.audio_column 'audio'", f"line 4 of {tmp / 'speech.jsonl'}", "audio file not found", "gone.wav")


def _ctc_without_tokenizer(tmp: Path, fx: dict):
    _speech_rows(tmp, gone=False)
    recipe = _audio_recipe(tmp, fx, "speech-recognition", {"train_files": "./speech.jsonl"})
    return ["train", str(recipe)], ("model.name_or_path", "no tokenizer", "data.vocabulary=transcripts")


def _timm_config(tmp: Path, drop: str) -> Path:
    import json

    from tests.timm_fixtures import BASE_NAMES, PRETRAINED_CFG

    folder = tmp / "timm-base"
    folder.mkdir()
    config = {"architecture": "resnet18", "num_classes": 1000, "num_features": 128, "global_pool": "avg",
              "model_args": {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "stem_width": 16},
              "label_names": BASE_NAMES, "pretrained_cfg": PRETRAINED_CFG}
    del config[drop]
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _timm_without_pretrained_cfg(tmp: Path, fx: dict):
    _images(tmp)
    folder = _timm_config(tmp, "pretrained_cfg")
    write_csv(tmp / "images.csv", _images_rows())
    raw = {"task": "image-classification", "model": {"name_or_path": str(folder)},
           "data": {"train_files": "./images.csv", "validation_split": None}, "train": {"max_steps": 1, "log_with": []},
           "output": {"dir": str(tmp / "run")}}
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return ["train", str(tmp / "recipe.yaml")], ("model.name_or_path", "'pretrained_cfg'", "a timm folder needs")


def _images_rows() -> list[dict]:
    return [{"image": f"imgs/{i}.png", "label": "red" if i % 2 else "blue"} for i in range(6)]


def _targets_timm_without_architecture(tmp: Path, fx: dict):
    folder = _timm_config(tmp, "architecture")
    return ["targets", str(folder)], ("targets", "'architecture'", "a timm folder needs")


def _targets_missing_folder(tmp: Path, fx: dict):
    return ["targets", str(tmp / "models" / "nope")], ("targets", str(tmp / "models" / "nope"), "does not exist")


def _plan_missing_folder(tmp: Path, fx: dict):
    write_csv(tmp / "train.csv", sentiment_rows(16))
    recipe = text_recipe(tmp, "./models/nope", "./train.csv")
    return ["plan", str(recipe)], ("model.name_or_path", "does not exist")


def _runs_sort_typo(tmp: Path, fx: dict):
    shutil.copytree(fx["finished_run"](), tmp / "runs" / "one")
    return ["runs", str(tmp / "runs"), "--sort", "acuracy"], ("--sort", "acuracy", "accuracy", "loss")


def _pairs_case(break_rows: Callable[[list[dict]], None], *parts: str) -> Setup:
    """A reward-model run on JSON Lines pairs, one of them broken (data row i is line i + 1)."""
    def setup(tmp: Path, fx: dict):
        rows = [{"prompt": "the film", "chosen": r["text"] + " good", "rejected": r["text"] + " bad"} for r in sentiment_rows(12)]
        break_rows(rows)
        write_jsonl(tmp / "pairs.jsonl", rows)
        raw = {"task": "reward-model", "model": {"name_or_path": fx["tiny_bert"]},
               "data": {"train_files": "./pairs.jsonl", "validation_split": None, "max_length": 16, "max_prompt_length": 4},
               "adapter": {"method": "lora", "r": 2}, "train": {"max_steps": 1, "log_with": []}, "output": {"dir": str(tmp / "run")}}
        (tmp / "recipe.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        return ["train", str(tmp / "recipe.yaml")], tuple(p.replace("FILE", str(tmp / "pairs.jsonl")) for p in parts)
    return setup


def _tiny_llama(folder: Path, hidden: int) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.test_causal_lm import TEMPLATE, VOCAB, _tokenizer

    config = LlamaConfig(vocab_size=len(VOCAB), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=1)
    LlamaForCausalLM(config).save_pretrained(folder)
    _tokenizer(TEMPLATE).save_pretrained(folder)
    return str(folder)


def _sft_adapter_of_another_base(tmp: Path, fx: dict):
    """preference from an SFT run (model.adapter) whose adapter was trained on another base model."""
    from hfadapt import Recipe, train
    from tests.test_preference import pairs

    rows = pairs(16)
    data = str(write_jsonl(tmp / "pairs.jsonl", rows))
    sft = Recipe.from_dict({
        "task": "causal-lm", "model": {"name_or_path": _tiny_llama(tmp / "llama-32", 32)},
        "data": {"train_files": [str(write_jsonl(tmp / "sft.jsonl", [{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows]))],
                 "validation_split": None, "max_length": 32},
        "adapter": {"method": "lora", "r": 2}, "train": {"max_steps": 1, "batch_size": 8, "log_with": []},
        "output": {"dir": str(tmp / "sft")},
    })
    train(sft)
    raw = {"task": "preference", "model": {"name_or_path": _tiny_llama(tmp / "llama-16", 16), "adapter": "./sft"},
           "data": {"train_files": [data], "max_length": 32, "max_prompt_length": 16},
           "adapter": {"method": "lora", "r": 2}, "train": {"max_steps": 1, "batch_size": 8, "log_with": []},
           "output": {"dir": str(tmp / "dpo")}}
    (tmp / "dpo.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return ["train", str(tmp / "dpo.yaml")], ("model.adapter", str(tmp / "sft"), "another base model", "hidden_size 32 vs 16")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.test_preference import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("bad-inputs-llama"))


def _preference_case(rows: Callable[[], list[dict]], name: str, *parts: str, **data: Any) -> Setup:
    """Preference (or, with loss kto, unpaired) rows written to NAME; parts may say FILE for its path."""
    def setup(tmp: Path, fx: dict):
        path = tmp / name
        if path.suffix == ".csv":
            write_csv(path, rows())
        else:
            write_jsonl(path, rows())
        raw = {"task": "preference", "model": {"name_or_path": fx["tiny_llama"]()},
               "data": {"train_files": f"./{name}", "validation_split": None, "max_length": 32, "max_prompt_length": 16, **data},
               "adapter": {"method": "lora", "r": 2}, "train": {"max_steps": 1, "batch_size": 4, "log_with": []},
               "output": {"dir": str(tmp / "run")}}
        (tmp / "recipe.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        return ["train", str(tmp / "recipe.yaml")], tuple(p.replace("FILE", str(path)) for p in parts)
    return setup


def _start_inside_output(tmp: Path, fx: dict):
    """preference with model.adapter naming the run folder the run itself writes (and would replace)."""
    setup = _preference_case(lambda: _pairs(8), "pairs.jsonl")
    argv, _ = setup(tmp, fx)
    shutil.copytree(fx["finished_run"](), tmp / "run")
    raw = yaml.safe_load((tmp / "recipe.yaml").read_text())
    raw["model"]["adapter"] = str(tmp / "run")
    raw["output"]["overwrite"] = True
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return argv, ("model.adapter", str(tmp / "run"), "inside output.dir")


def _pairs(n: int = 8, chat: bool = False) -> list[dict]:
    from tests.test_preference import pairs

    return pairs(n, seed=11, chat=chat)


def _edit(rows: list[dict], i: int, **values: Any) -> list[dict]:
    rows[i] = {**rows[i], **values}
    return [{k: v for k, v in r.items() if v is not _DROP} for r in rows]


_DROP = object()


def _kto_rows(label: Callable[[int], Any]) -> list[dict]:
    from tests.test_preference import unpaired

    return [{**r, "label": label(i)} for i, r in enumerate(unpaired(8, seed=11))]


CASES: dict[str, Setup] = {
    "recipe-binary": _binary_recipe,
    "recipe-latin1": _latin1_recipe,
    "csv-empty": _data_case(b"", "train.csv", "data.train_files", "FILE", "empty"),
    "csv-header-only": _data_case(b"text,label\n", "train.csv", "data.train_files", "FILE", "no data rows"),
    "csv-ragged-row": _data_case(
        b"text,label\n" + b"".join(b"good film %d,positive\n" % i for i in range(10)) + b"bad, film,negative\n",
        "train.csv", "data.train_files", "line 12 of FILE", "3 fields",
    ),
    "csv-latin1": _data_case("text,label\nthe film was good,positive\ncaf\xe9 was bad,negative\n".encode("latin-1"),
                             "train.csv", "data.train_files", "line 3 of FILE", "not UTF-8"),
    "jsonl-broken-line": _data_case(b'{"text": "good", "label": "positive"}\n{"text": "bad", "label": \n',
                                    "train.jsonl", "data.train_files", "line 2 of FILE", "not valid JSON"),
    "int-labels-empty-cell": _int_labels_with_empty_cell(with_names=False),
    "int-labels-empty-cell-with-names": _int_labels_with_empty_cell(with_names=True),
    "csv-labels-all-empty": _data_case(b"text,label\n" + b"".join(b"good film %d,\n" % i for i in range(10)),
                                       "train.csv", "data.label_column 'label'", "FILE", "holds no labels"),
    "jsonl-missing-text-key": _jsonl_without_text_in_one_line,
    "pairs-chosen-column-missing": _pairs_case(lambda rows: [r.pop("chosen") for r in rows], "data.chosen_column", "'chosen'", "FILE"),
    "pairs-chosen-missing-in-one-row": _pairs_case(lambda rows: rows[4].pop("chosen"), "data.chosen_column 'chosen'", "line 5 of FILE"),
    "pairs-empty-response": _pairs_case(lambda rows: rows[6].update(rejected="  "), "data.rejected_column 'rejected'", "line 7 of FILE", "empty response"),
    "batch-size-0": _text_override("train.batch_size=0", "train.batch_size", "greater than 0"),
    "adapter-field-of-another-method": _text_override("adapter.init_r=4", "adapter.init_r: a field of adalora, not of lora"),
    "adapter-r-with-adalora": _text_override("adapter.method=adalora", "adapter.r: a field of lora, loha and lokr, not of adalora", "init_r"),
    "adapter-options-key-of-another-method": _text_override(
        "adapter.options={init_r: 4}", "adapter.options.init_r: not an option of lora", "LoraConfig"),
    "adapter-options-unknown-key": _text_override(
        "adapter.options={init_lora_weight: gaussian}", "adapter.options.init_lora_weight", "did you mean 'init_lora_weights'"),
    "adapter-options-named-field": _text_override("adapter.options={lora_alpha: 4}", "adapter.options.lora_alpha", "adapter.alpha"),
    "adapter-options-set-by-hfadapt": _text_override("adapter.options={task_type: SEQ_CLS}", "adapter.options.task_type", "not an option"),
    "model-field-of-audio-tasks": _text_override(
        "model.freeze_feature_encoder=false", "model.freeze_feature_encoder: a field of audio-classification and speech-recognition"),
    "image-csv-missing-file": _image_csv_missing_file,
    "image-folder-zero-byte-png": _image_folder_zero_byte_png,
    "model-path-missing": _missing_model,
    "model-without-tokenizer": _model_without_tokenizer,
    "output-dir-is-a-file": _output_dir_is_a_file,
    "run-recipe-corrupt": _run_case(lambda r: (r / "recipe.yaml").write_text("task: [unclosed\n"),
                                    lambda r: ["predict", str(r), "a good film"], "RUN/recipe.yaml", "not valid YAML"),
    "run-recipe-not-a-recipe": _run_case(lambda r: (r / "recipe.yaml").write_text("task: text-classification\n"),
                                         lambda r: ["predict", str(r), "a good film"], "RUN/recipe.yaml"),
    "run-adapter-weights-deleted": _run_case(lambda r: (r / "adapter" / "adapter_model.safetensors").unlink(),
                                             lambda r: ["eval", str(r)], "RUN/adapter", "adapter_model.safetensors"),
    "merge-into-existing-file": _run_case(lambda r: (r.parent / "merged.bin").write_text("x"),
                                          lambda r: ["merge", str(r), str(r.parent / "merged.bin")], "merge:", "merged.bin"),
    "merge-the-same-run-twice": _run_case(lambda r: None, lambda r: ["merge", str(r), str(r), str(r.parent / "m"), "--method", "linear"],
                                          "merge:", "RUN is given twice"),
    "preference-starts-inside-its-output": _start_inside_output,
    "csv-one-row-no-room-for-validation": _data_case(b"text,label\ngood film,positive\n", "train.csv",
                                                     "data.validation_size", "1 row(s)", "FILE", "too few", validation_split="validation"),
    "merge-into-the-run": _run_case(lambda r: None, lambda r: ["merge", str(r), str(r), "--overwrite"], "merge:", "the run itself"),
    "merge-into-the-runs-parent": _run_case(lambda r: None, lambda r: ["merge", str(r), str(r.parent), "--overwrite"],
                                            "merge:", "contains the run"),
    "merge-inside-the-run": _run_case(lambda r: None, lambda r: ["merge", str(r), str(r / "merged"), "--overwrite"],
                                      "merge:", "inside the run"),
    "merge-method-weights-count": _two_runs_case(lambda o: None, ["--method", "linear", "--weights", "1"], "merge --weights", "1 weight(s) for 2"),
    "merge-method-density-for-linear": _two_runs_case(lambda o: None, ["--method", "linear", "--density", "0.5"], "merge --density", "not --method linear"),
    "merge-method-ties-without-density": _two_runs_case(lambda o: None, ["--method", "ties"], "merge --method ties", "--density"),
    "merge-method-other-base": _two_runs_case(lambda o: _edit_json(o / "adapter" / "adapter_config.json", base_model_name_or_path="/elsewhere/bert"),
                                              ["--method", "linear"], "merge --method", "OTHER", "/elsewhere/bert", "one base"),
    "merge-method-other-labels": _two_runs_case(lambda o: _edit_json(o / "adapter" / "config.json", id2label={"0": "cat", "1": "dog"}),
                                                ["--method", "linear"], "merge --method", "OTHER", "other labels"),
    "merge-method-not-lora": _two_runs_case(_as_ia3, ["--method", "linear"], "merge --method", "OTHER", "ia3", "LoRA adapters only"),
    "merge-full-without-method": _run_case(lambda r: None, lambda r: ["merge", str(r), str(r.parent / "m"), "--full"], "merge --full", "only with --method"),
    "resume-torn-weights": _torn_checkpoint("0-trainable.safetensors"),
    "resume-torn-optimizer": _torn_checkpoint("optimizer.bin"),
    "resume-torn-state": _torn_checkpoint("trainer_state.json"),
    "one-label-text": _one_label_text,
    "one-tag-tokens": _one_tag_tokens,
    "one-class-image-folder": _one_class_image_folder,
    "one-class-audio-folder": _one_class_audio_folder,
    "audio-file-missing": _audio_file_missing,
    "ctc-base-without-tokenizer": _ctc_without_tokenizer,
    "timm-folder-without-pretrained-cfg": _timm_without_pretrained_cfg,
    "targets-timm-without-architecture": _targets_timm_without_architecture,
    "targets-folder-missing": _targets_missing_folder,
    "plan-folder-missing": _plan_missing_folder,
    "runs-sort-unknown-metric": _runs_sort_typo,
    "preference-sft-adapter-of-another-base": _sft_adapter_of_another_base,
    "eval-split-not-in-recipe": _run_case(lambda r: None, lambda r: ["eval", str(r), "--split", "test"],
                                          "eval --split", "no test split"),
    "eval-override-outside-data": _run_case(lambda r: None, lambda r: ["eval", str(r), "model.name_or_path=x"],
                                            "eval:", "data.*", "model.name_or_path=x"),
    "predict-missing-file": _run_case(lambda r: None, lambda r: ["predict", str(r), "--file", str(r.parent / "nope.txt")],
                                      "nope.txt"),
    "predict-batch-size-0": _run_case(lambda r: None, lambda r: ["predict", str(r), "good", "--batch-size", "0"],
                                      "--batch-size", "got 0"),
    "preference-no-rejected-column": _preference_case(
        lambda: [{k: v for k, v in r.items() if k != "rejected"} for r in _pairs()], "pairs.jsonl",
        "data.rejected_column", "'rejected'", "FILE"),
    "preference-chosen-column-misnamed": _preference_case(
        _pairs, "pairs.jsonl", "data.chosen_column", "'preferred'", "FILE", chosen_column="preferred"),
    "preference-rejected-missing-in-one-row": _preference_case(  # JSON Lines row 5 is line 6
        lambda: _edit(_pairs(), 5, rejected=_DROP), "pairs.jsonl", "data.rejected_column 'rejected'", "line 6 of FILE", "empty response"),
    "preference-equal-once-tokenized": _preference_case(
        lambda: _edit(_pairs(), 2, rejected=_pairs()[2]["chosen"] + "  "), "pairs.jsonl", "line 3 of FILE", "tokenizes exactly like the chosen"),
    "preference-empty-response": _preference_case(
        lambda: _edit(_pairs(), 3, chosen="  "), "pairs.jsonl", "data.chosen_column 'chosen'", "line 4 of FILE", "empty response"),
    "preference-empty-response-csv": _preference_case(  # CSV row 2 is line 4
        lambda: _edit(_pairs(), 2, rejected=""), "pairs.csv", "data.rejected_column 'rejected'", "line 4 of FILE", "empty response"),
    "preference-empty-chat-response": _preference_case(
        lambda: _edit(_pairs(chat=True), 6, rejected=[{"role": "user", "content": _pairs(chat=True)[6]["chosen"][0]["content"]},
                                                      {"role": "assistant", "content": ""}]),
        "pairs.jsonl", "data.rejected_column 'rejected'", "line 7 of FILE", "empty response"),
    "preference-chosen-equals-rejected": _preference_case(
        lambda: _edit(_pairs(), 4, rejected=_pairs()[4]["chosen"]), "pairs.jsonl", "line 5 of FILE", "equals the chosen"),
    "preference-chat-chosen-equals-rejected": _preference_case(
        lambda: _edit(_pairs(chat=True), 1, rejected=_pairs(chat=True)[1]["chosen"]), "pairs.jsonl", "line 2 of FILE", "equals the chosen"),
    "kto-label-integers": _preference_case(
        lambda: _kto_rows(lambda i: i % 2), "rows.jsonl", "data.label_column 'label'", "line 1 of FILE", "expected a boolean", loss="kto"),
    "kto-label-words-csv": _preference_case(  # CSV row 3 is line 5
        lambda: _kto_rows(lambda i: "yes" if i == 3 else ("true" if i % 2 else "false")), "rows.csv",
        "data.label_column 'label'", "line 5 of FILE", "expected a boolean", "'yes'", loss="kto"),
    "kto-label-missing-in-one-row": _preference_case(
        lambda: _kto_rows(lambda i: None if i == 6 else i % 2 == 0), "rows.jsonl",
        "data.label_column 'label'", "line 7 of FILE", "expected a boolean", loss="kto"),
    "kto-empty-completion-csv": _preference_case(  # CSV row 5 is line 7
        lambda: [{**r, "completion": "" if i == 5 else r["completion"]} for i, r in enumerate(_kto_rows(lambda i: i % 2 == 0))],
        "rows.csv", "data.completion_column 'completion'", "line 7 of FILE", "empty response", loss="kto"),
    "kto-no-label-column": _preference_case(
        lambda: [{k: v for k, v in r.items() if k != "label"} for r in _kto_rows(bool)], "rows.jsonl",
        "data.label_column", "'label'", "FILE", loss="kto"),
    "export-out-inside-the-run": _run_case(lambda r: None, lambda r: ["export", str(r), str(r / "onnx")], "inside the run"),
    "export-out-not-empty": _run_case(lambda r: (r.parent / "out").mkdir() or (r.parent / "out" / "keep.txt").write_text("mine"),
                                      lambda r: ["export", str(r), str(r.parent / "out")], "not empty", "--overwrite"),
    "export-unknown-format": _run_case(lambda r: None, lambda r: ["export", str(r), str(r.parent / "out"), "--format", "tflite"],
                                       "export --format", "'tflite'"),
    "serve-one-name-twice": _run_case(lambda r: None, lambda r: ["serve", f"a={r}", f"a={r}"], "two adapters are named 'a'"),
    "serve-an-onnx-export": _run_case(  # an export folder given where a run belongs: named before anything loads
        lambda r: (r.parent / "exp").mkdir() or [(r.parent / "exp" / f).write_text("{}") for f in ("export_info.json", "model.onnx")],
        lambda r: ["serve", str(r.parent / "exp")], "is an ONNX export", "hfadapt predict"),
    "serve-port-out-of-range": _run_case(lambda r: None, lambda r: ["serve", str(r), "--port", "99999"], "--port", "99999"),
    "tune-search-file-missing": lambda tmp, fx: (["tune", "text/tiny-sentiment-offline", "--search", str(tmp / "space.yaml")],
                                                 ("space.yaml", "cannot read the search file")),
    "tune-no-search-section": lambda tmp, fx: (["tune", "text/tiny-sentiment-offline"], ("no search section", "--search")),
    "tune-zero-workers": lambda tmp, fx: (["tune", "text/tiny-sentiment-search", "--workers", "0"], ("tune --workers", "got 0")),
    "predict-file-latin1": _run_case(lambda r: (r.parent / "inputs.txt").write_bytes("good\ncaf\xe9\n".encode("latin-1")),
                                     lambda r: ["predict", str(r), "--file", str(r.parent / "inputs.txt")],
                                     "--file", "line 2 of", "inputs.txt", "not UTF-8"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line(case: str, tmp_path: Path, capsys, request) -> None:
    fx = {"tiny_bert": request.getfixturevalue("tiny_bert"),
          "tiny_vit": lambda: request.getfixturevalue("tiny_vit"),
          "finished_run": lambda: request.getfixturevalue("finished_run"),
          "checkpointed_run": lambda: request.getfixturevalue("checkpointed_run"),
          "tiny_wav2vec2": lambda: request.getfixturevalue("tiny_wav2vec2"),
          "tiny_llama": lambda: request.getfixturevalue("tiny_llama")}
    work = tmp_path / "work"
    work.mkdir()
    argv, parts = CASES[case](work, fx)
    capsys.readouterr()
    before = snapshot(work)
    rc, err = run_main(capsys, argv)
    check_one_error(rc, err, parts)
    after = snapshot(work)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not (set(after) - set(before)), sorted(set(after) - set(before))


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_output_dir_the_os_refuses(tmp_path: Path, capsys, tiny_bert: str) -> None:
    write_csv(tmp_path / "train.csv", sentiment_rows(16))
    recipe = text_recipe(tmp_path, tiny_bert, "./train.csv")
    before = snapshot(tmp_path)
    rc, err = run_main(capsys, ["train", str(recipe), "output.dir=/proc/hfadapt-run"])
    check_one_error(rc, err, ("output.dir", "/proc/hfadapt-run"))
    assert snapshot(tmp_path) == before and not Path("/proc/hfadapt-run").exists()


def test_binary_recipe_as_a_real_process(tmp_path: Path) -> None:
    path = tmp_path / "weights.yaml"
    path.write_bytes(bytes(range(256)))
    before = snapshot(tmp_path)
    r = subprocess.run([sys.executable, "-m", "hfadapt", "validate", str(path)], capture_output=True, text=True, timeout=120)
    check_one_error(r.returncode, r.stderr, (str(path),))
    assert snapshot(tmp_path) == before


# ---- privacy of a push: the staged copies carry no absolute local path -------------------------------
def test_staged_push_has_no_local_paths(finished_run: Path, tiny_bert: str, tmp_path: Path) -> None:
    import json

    from hfadapt.publishing.hub import stage
    from hfadapt.rundir.layout import RunDir

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    info = json.loads((run_dir / "run_info.json").read_text())
    info["command"] = f"hfadapt train {tmp_path}/recipes/x.yaml output.dir={run_dir} train.max_steps=2"
    (run_dir / "run_info.json").write_text(json.dumps(info))
    before = snapshot(run_dir)
    target = tmp_path / "staged"
    target.mkdir()
    stage(RunDir.open(run_dir), "user/x", target)
    assert snapshot(run_dir) == before  # the run keeps its local values
    for f in sorted(target.iterdir()):  # every staged text file, recipe.yaml included
        if f.suffix in (".json", ".yaml", ".md", ".txt", ".jinja"):
            text = f.read_text()
            assert tiny_bert not in text and str(tmp_path) not in text and str(finished_run.parent) not in text, (f.name, text)
    pushed = yaml.safe_load((target / "recipe.yaml").read_text())
    assert pushed["model"]["name_or_path"] == f"<local>/{Path(tiny_bert).name}"
    assert pushed["data"]["train_files"] == ["<local>/sentiment.csv"] and pushed["output"]["dir"] == "<run>"
    assert "hfadapt train hub:user/x model.name_or_path=YOUR_BASE_MODEL data.train_files=YOUR_FILES" in (target / "README.md").read_text()
    assert json.loads((target / "adapter_config.json").read_text())["base_model_name_or_path"] == f"<local>/{Path(tiny_bert).name}"
    staged_info = json.loads((target / "run_info.json").read_text())
    assert staged_info["command"] == "hfadapt train <local>/x.yaml output.dir=<run> train.max_steps=2"
    card = (target / "README.md").read_text()
    assert "# originally: hfadapt train <local>/x.yaml output.dir=<run>" in card and "`<local>/NAME`" in card
    assert str(tmp_path) in (run_dir / "run_info.json").read_text()


def test_launch_command_names_the_real_launcher() -> None:
    from hfadapt.rundir.runinfo import launch_command

    argv = ["/venv/bin/hfadapt", "train", "r.yaml"]
    assert launch_command(1, {}, argv) == "hfadapt train r.yaml"
    assert launch_command(2, {"TORCHELASTIC_RUN_ID": "1", "LOCAL_WORLD_SIZE": "2"}, argv) == "torchrun --nproc_per_node 2 -m hfadapt train r.yaml"
    accel = {"ACCELERATE_MIXED_PRECISION": "no", "TORCHELASTIC_RUN_ID": "1"}  # accelerate runs torch elastic underneath
    assert launch_command(2, accel, argv) == "accelerate launch --num_processes 2 -m hfadapt train r.yaml"


def test_row_location_lines(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from hfadapt.data.sources import row_location

    csv = write_csv(tmp_path / "a.csv", [{"text": "x\ny", "label": 1}, {"text": "z", "label": 0}])  # a quoted newline
    jsonl = write_jsonl(tmp_path / "b.jsonl", [{"text": "a"}, {"text": "b"}])
    d = SimpleNamespace(train_files=[str(csv), str(jsonl)], validation_files=None, test_files=None, dataset=None)
    assert row_location("train", 0, d) == f"line 2 of {csv}"
    assert row_location("train", 1, d) == f"line 4 of {csv}"
    assert row_location("validation", 2, d) == f"line 1 of {jsonl}"  # carved from the train files
    assert row_location("train", 9, d) == "train row 9"


# ---- what runs is what was asked: mixed precision and sharding engines ------------------------------
LAUNCH_CASES = {
    # fp16 autocast needs a GPU; Accelerate would train in fp32 and still report fp16
    "fp16-on-cpu": ({}, ["train.mixed_precision=fp16"], ("train.mixed_precision", "fp16", "fp32", "bf16")),
    # `accelerate launch` with an FSDP / DeepSpeed config sets these; without GPUs Accelerate drops them
    "fsdp-without-gpus": ({"ACCELERATE_USE_FSDP": "true"}, [], ("FSDP", "ACCELERATE_USE_FSDP=true", "no distribution")),
    "deepspeed-without-gpus": ({"ACCELERATE_USE_DEEPSPEED": "true"}, [], ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED=true")),
    # `accelerate launch --mixed_precision bf16` against a recipe that says no
    "launch-precision-differs": ({"ACCELERATE_MIXED_PRECISION": "bf16"}, ["train.mixed_precision=no"], ("train.mixed_precision", "ACCELERATE_MIXED_PRECISION", "bf16")),
    # train.mixed_precision=auto takes the launch's fp16, which a CPU cannot run
    "auto-takes-launch-fp16-on-cpu": ({"ACCELERATE_MIXED_PRECISION": "fp16"}, [], ("auto takes fp16 from the launch", "Launch without --mixed_precision")),
}


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU fallbacks")
@pytest.mark.parametrize("case", list(LAUNCH_CASES))
def test_launch_asking_for_what_would_not_run_is_refused(case: str, tmp_path: Path, capsys, monkeypatch, tiny_bert: str) -> None:
    env, overrides, parts = LAUNCH_CASES[case]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    write_csv(tmp_path / "train.csv", sentiment_rows(16))
    recipe = text_recipe(tmp_path, tiny_bert, "./train.csv")
    before = snapshot(tmp_path)
    rc, err = run_main(capsys, ["train", str(recipe), *overrides])
    check_one_error(rc, err, parts)
    assert snapshot(tmp_path) == before


def test_run_info_records_the_precision_that_ran() -> None:
    from types import SimpleNamespace

    from hfadapt.rundir.runinfo import precision_that_ran

    cpu_fp16 = SimpleNamespace(mixed_precision="fp16", native_amp=False, distributed_type="DistributedType.NO")
    cpu_bf16 = SimpleNamespace(mixed_precision="bf16", native_amp=True, distributed_type="DistributedType.NO")
    assert precision_that_ran(cpu_fp16) == "no"  # Accelerate reports fp16 but does not autocast on CPU
    assert precision_that_ran(cpu_bf16) == "bf16"


# ---- merge --overwrite never deletes the run; a sibling is replaced only once the new model is written --
def test_merge_into_a_sibling_with_overwrite(finished_run: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    sibling = tmp_path / "merged"
    sibling.mkdir()
    (sibling / "old.txt").write_text("an earlier merge")
    before = snapshot(run)
    rc, err = run_main(capsys, ["merge", str(run), str(sibling)])
    check_one_error(rc, err, ("merge:", "--overwrite"))  # not empty: refused without --overwrite
    assert (sibling / "old.txt").is_file()
    assert main(["merge", str(run), str(sibling), "--overwrite"]) in (0, None)
    assert not (sibling / "old.txt").exists() and (sibling / "config.json").is_file() and (sibling / "README.md").is_file()
    assert snapshot(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "run"]  # no temporary folder left beside it
