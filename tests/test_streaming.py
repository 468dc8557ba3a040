"""data.streaming: the train split read as a stream, preprocessed on the fly, one share per
process, resumed exactly; evaluation splits materialised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hfadapt import HfadaptError, Recipe, train
from tests.conftest import sentiment_rows, write_csv, write_jsonl

STREAM = {"streaming": True, "shuffle_buffer": 16, "labels": ["negative", "positive"], "validation_split": None}


def _stream(path: str) -> Any:
    import datasets

    return datasets.load_dataset("csv", data_files={"train": [path]}, streaming=True)["train"]


def test_streaming_needs_max_steps(make_recipe: Any) -> None:
    with pytest.raises(HfadaptError, match="data.streaming: a stream has no length to count epochs in; set train.max_steps"):
        make_recipe(data=STREAM)
    assert make_recipe(data=STREAM, train={"max_steps": 2}).data.streaming


def test_each_process_reads_each_example_once_per_epoch(tmp_path: Path) -> None:
    from hfadapt.data.streaming import EpochStream

    one_file = write_csv(tmp_path / "one.csv", sentiment_rows(30))
    halves = [write_csv(tmp_path / f"half{i}.csv", sentiment_rows(30)[i * 15:(i + 1) * 15]) for i in range(2)]
    import datasets

    for stream in (_stream(str(one_file)), datasets.load_dataset("csv", data_files={"train": [str(p) for p in halves]}, streaming=True)["train"]):
        for buffer in (0, 8):
            shares = [[ex["text"] for ex in EpochStream(stream, 3, buffer, rank, 2).epoch(0)] for rank in (0, 1)]
            assert sorted(shares[0] + shares[1]) == sorted(r["text"] for r in sentiment_rows(30))  # every example, once
            assert len(shares[0]) + len(shares[1]) == 30
            one_process = [ex["text"] for ex in EpochStream(stream, 3, buffer, 0, 1).epoch(0)]
            assert sorted(one_process) == sorted(shares[0] + shares[1])
    # The shuffle is a function of (seed, epoch): the same twice, another order the next epoch.
    stream = _stream(str(one_file))
    first = [ex["text"] for ex in EpochStream(stream, 3, 8, 0, 1).epoch(0)]
    assert first == [ex["text"] for ex in EpochStream(stream, 3, 8, 0, 1).epoch(0)]
    assert first != [ex["text"] for ex in EpochStream(stream, 3, 8, 0, 1).epoch(1)]


def test_streamed_run_learns_and_holds_out_validation(make_recipe: Any) -> None:
    recipe = make_recipe(
        data={**STREAM, "validation_split": "validation", "max_eval_samples": 16},
        train={"max_steps": 12, "learning_rate": 2e-2, "eval_steps": 12},
    )
    result = train(recipe)
    assert result.state.global_step == 12 and len(result.losses) == 12
    assert sum(result.losses[-3:]) < sum(result.losses[:3])
    assert result.metrics["eval/samples"] == 16  # the first 16 rows, held out of the stream


def test_streamed_labels_must_be_named(make_recipe: Any) -> None:
    recipe = make_recipe(data={**STREAM, "labels": None}, train={"max_steps": 2})
    with pytest.raises(HfadaptError, match="data.labels: the labels of a streamed dataset can't be read up front"):
        train(recipe)


def test_stream_without_a_validation_split_says_what_to_do(make_recipe: Any) -> None:
    recipe = make_recipe(data={**STREAM, "validation_split": "validation"}, train={"max_steps": 2})
    with pytest.raises(HfadaptError, match="data.validation_split: the stream .* has no 'validation' split; set data.max_eval_samples"):
        train(recipe)


def test_streamed_resume_is_bit_identical(make_recipe: Any, tmp_path: Path) -> None:
    """Killed mid-stream and resumed, a run continues from the same example: losses and weights equal."""
    from tests.conftest import assert_same_adapter, train_interrupted_then_resumed

    common = {"max_steps": 9, "save_steps": 3, "gradient_accumulation_steps": 2}
    full = train(make_recipe(data=STREAM, train=common, adapter={"dropout": 0.1}, output={"dir": str(tmp_path / "full")}))
    interrupted = make_recipe(data=STREAM, train=common, adapter={"dropout": 0.1}, output={"dir": str(tmp_path / "resumed")})
    # from checkpoint-6: 12 micro-batches already read; 9 steps x 2 micro-batches x 8 examples = 144
    # examples of a 64-example stream, so the run also wraps into new epochs.
    resumed = train_interrupted_then_resumed(interrupted, crash_at=7)
    assert resumed.losses == full.losses
    assert_same_adapter(full.output_dir, resumed.output_dir)


def test_packing_on_the_fly_equals_packing_the_materialised_set(tmp_path: Path, tiny_gpt2: str) -> None:
    import datasets

    from hfadapt.tasks import TASKS

    rows = [{"text": r["text"]} for r in sentiment_rows(40)]
    path = str(write_jsonl(tmp_path / "lm.jsonl", rows))

    def recipe(streaming: bool) -> Recipe:
        return Recipe.from_dict({
            "task": "causal-lm", "model": {"name_or_path": tiny_gpt2},
            "data": {"train_files": [path], "validation_split": None, "max_length": 32, "packing": True, "streaming": streaming},
            "train": {"max_steps": 1, "log_with": []},
        })

    task = TASKS.get("causal-lm")
    tok = task.load_processor(recipe(False))
    materialised = task.preprocess(datasets.load_dataset("json", data_files=path)["train"], "train", tok, recipe(False), None, train=True)
    streamed = task.preprocess(datasets.load_dataset("json", data_files=path, streaming=True)["train"], "train", tok, recipe(True), None, train=True)
    blocks = list(streamed)
    assert len(blocks) == len(materialised) < len(rows)  # packed: fewer blocks than examples
    for a, b in zip(blocks, materialised):
        assert {k: list(v) for k, v in a.items()} == {k: list(b[k]) for k in a}


@pytest.mark.slow
def test_two_processes_stream_their_own_shares(tmp_path: Path, tiny_bert: str, sentiment_csv: str) -> None:
    """Under torchrun each process reads its own share of the stream (no dispatch from the main process,
    no hang at an epoch's end), and the run ends at train.max_steps with one banner."""
    import time

    import yaml

    from tests.test_distributed import TIMEOUT_S, _check, _env, _free_port, _Proc, _read_run, _torchrun

    raw = {
        "name": "stream2", "task": "text-classification", "model": {"name_or_path": tiny_bert},
        "data": {"train_files": [sentiment_csv], "max_length": 16, **STREAM, "validation_split": "validation", "max_eval_samples": 10},
        "adapter": {"method": "lora", "r": 4},
        # 64 rows, 10 held out: 54 streamed, 27 per process; 10 steps of 4 per process cross into a second epoch
        "train": {"max_steps": 10, "batch_size": 4, "eval_batch_size": 3, "log_with": [], "logging_steps": 1},
        "output": {"dir": str(tmp_path / "run")},
    }
    recipe = tmp_path / "stream2.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    cmd = _torchrun() + ["--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                         "-m", "hfadapt", "train", str(recipe)]
    proc = _Proc("stream2", cmd, tmp_path, _env(tmp_path / "cache"))
    try:
        rc, out, err = proc.wait(time.perf_counter() + TIMEOUT_S)
    finally:
        proc.kill()
    _check("stream2", cmd, rc, out, err)
    assert out.count("hfadapt: text-classification") == 1 and "train examples streamed | 10 steps on 2 process(es)" in out, out[-2000:]
    run = _read_run(tmp_path / "run")
    assert run["state"]["global_step"] == 10 and len(run["state"]["losses"]) == 10
    assert run["metrics"]["eval/samples"] == 10  # the held-out rows, each scored once over both processes
    assert run["perf"]["samples"] == 10 * 4 * 2  # both processes' shares counted


@pytest.mark.parametrize("kind", ["image", "audio"])
def test_streamed_images_and_audio_are_decoded_as_read(kind: str, tmp_path: Path, request: Any) -> None:
    """Image and audio folders stream too: checked, decoded and featurised example by example (a stream has
    no with_transform); audio throughput counts seconds of audio, not waveform samples."""
    if kind == "image":
        task, model, folder, labels = "image-classification", "tiny_vit", "image_folder", ["blue", "red"]
    else:
        task, model, folder, labels = "audio-classification", "tiny_wav2vec2", "sound_folder", ["chirp", "noise", "tone"]
    recipe = Recipe.from_dict({
        "name": kind, "task": task, "model": {"name_or_path": request.getfixturevalue(model)},
        "data": {"dataset": request.getfixturevalue(folder), "streaming": True, "shuffle_buffer": 8, "labels": labels},
        "adapter": {"method": "lora", "r": 4},
        "train": {"max_steps": 4, "batch_size": 4, "log_with": []},
        "output": {"dir": str(tmp_path / "run")},
    })
    result = train(recipe)
    assert result.state.global_step == 4 and len(result.losses) == 4
    assert result.metrics["eval/samples"] == 12  # the validation folder, materialised: 2 x 6 images, 3 x 4 clips
    assert result.metrics["perf/samples"] == 16
    if kind == "audio":  # 16 clips of 0.40-0.55 s (padded to the longest of each batch at most)
        assert 16 * 0.40 <= result.metrics["perf/audio_seconds"] <= 16 * 0.55 + 1e-6
        assert "perf/tokens" not in result.metrics
