"""Audio tasks end to end on tiny models and generated WAV files: audio-classification learns tones, chirps
and noise; speech-recognition overfits tone "words" (Whisper, and CTC with a vocabulary built from the
transcripts); WER/CER match hand-checked cases; resampling; bad files fail in one line before training."""

from __future__ import annotations

from hfadapt.tasks.base import get_task
import json
from pathlib import Path
from typing import Any

import pytest

from hfadapt import Recipe, predict, train
from hfadapt.core.errors import HfadaptError
from tests.audio_fixtures import RATE, noise, tone, utterance, write_wav


def _recipe(task: str, base: str, data: dict[str, Any], run_dir: Path, **sections: Any) -> Any:
    raw = {
        "name": "audio-test",
        "task": task,
        "model": {"name_or_path": base},
        "data": data,
        "adapter": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "train": {"max_steps": 2, "batch_size": 8, "learning_rate": 1e-2, "logging_steps": 1, "log_with": []},
        "output": {"dir": str(run_dir)},
    }
    if sections.get("adapter", {}).get("method", "lora") != "lora":
        raw["adapter"] = {}  # another method: the LoRA fields above are not its own
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    return Recipe.from_dict(raw)


# ---- metrics ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("prediction", "reference", "wer"),
    [
        ("the cat sat", "the cat sat", 0.0),
        ("the cat sat down", "the cat sat", 1 / 3),  # one insertion
        ("the sat", "the cat sat", 1 / 3),  # one deletion
        ("the dog sat", "the cat sat", 1 / 3),  # one substitution
        ("a the dog", "the cat sat", 1.0),  # insertion + substitution + deletion
        ("", "the cat sat", 1.0),  # everything deleted
        ("", "", 0.0),  # empty reference, empty hypothesis
        ("hello", "", float("inf")),  # empty reference: any word is an insertion over zero words
    ],
)
def test_wer_hand_checked(prediction: str, reference: str, wer: float) -> None:
    from hfadapt import metrics

    assert metrics.load("wer").compute(predictions=[prediction], references=[reference])["wer"] == pytest.approx(wer)


def test_wer_is_corpus_level_and_cer_counts_characters() -> None:
    from hfadapt import metrics

    wer = metrics.load("wer").compute(predictions=["a b", "x y z", "q"], references=["a b c d", "x y z", ""])
    assert wer["wer"] == pytest.approx((2 + 0 + 1) / (4 + 3 + 0))  # 2 deletions, 1 insertion over 7 words
    cer = metrics.load("cer").compute(predictions=["kitten"], references=["sitting"])
    assert cer["cer"] == pytest.approx(3 / 7)  # the textbook Levenshtein distance 3
    assert metrics.load("cer").compute(predictions=["a c"], references=["abc"])["cer"] == pytest.approx(1 / 3)


def test_normalised_wer_is_reported_beside_the_raw_one() -> None:
    from hfadapt import metrics

    out = metrics.load("wer").compute(predictions=["Hello, World!"], references=["hello world"], normalizer="basic")
    assert out == {"wer": 1.0, "wer_normalized": 0.0}
    eng = metrics.load("wer").compute(predictions=["Mr. Smith isn't here"], references=["mister smith is not here"], normalizer="english")
    assert eng["wer_normalized"] == 0.0 and eng["wer"] > 0
    assert "cer_normalized" in metrics.load("cer").compute(predictions=["A"], references=["a"], normalizer="basic")


# ---- reading and resampling -----------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [8000, 44100, 16000])
def test_clips_are_mixed_down_and_resampled_to_the_models_rate(rate: int, tmp_path: Path) -> None:
    import numpy as np

    from hfadapt.data.audio import load_clip, storable

    path = write_wav(tmp_path / "a.wav", tone(440.0, 0.5, rate), rate, stereo=True)
    wave = load_clip(storable(str(path), None), RATE, True, "test")
    assert wave.ndim == 1 and wave.dtype == np.float32
    assert abs(wave.size - RATE // 2) <= 2  # half a second at 16 kHz
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * RATE / wave.size - 440.0) < 5  # the tone survives resampling


def test_resampled_folder_feeds_the_model_at_its_rate(tiny_wav2vec2: str, sound_folder: str, tmp_path: Path) -> None:
    from hfadapt.tasks import TASKS

    recipe = _recipe("audio-classification", tiny_wav2vec2, {"dataset": sound_folder}, tmp_path / "run")
    task = TASKS.get("audio-classification")
    from hfadapt.data.sources import load_raw

    raw = load_raw(recipe, task)
    processor = task.load_processor(recipe)
    ds = task.preprocess(raw.train, "train", processor, recipe, task.label_info(raw.train, recipe), train=True)
    rates = {Path(p).name: p for p in raw.train["audio"]}
    assert len(rates) > 0
    durations = [round(len(ds[i]["input_values"]) / RATE, 2) for i in range(6)]
    # files at 16, 8 and 44.1 kHz all come out at 16 kHz: 0.40/0.45/0.50/0.55 s whatever the file's rate
    assert set(durations) <= {0.4, 0.45, 0.5, 0.55}


# ---- audio-classification ---------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["tiny_wav2vec2", "tiny_whisper"])  # wav2vec2, and Whisper's encoder
def test_audio_classification_learns_sounds(model: str, sound_folder: str, tmp_path: Path, request: Any) -> None:
    recipe = _recipe(
        "audio-classification", request.getfixturevalue(model), {"dataset": sound_folder}, tmp_path / "run",
        train={"max_steps": 30, "logging_steps": 5},
    )
    result = train(recipe)
    assert sum(result.losses[-5:]) / 5 < 0.5 * sum(result.losses[:3]) / 3  # loss falls
    assert result.metrics["eval/accuracy"] >= 0.75  # 3 classes: chance is 0.33
    assert result.metrics["eval/samples"] == 12
    folder = Path(sound_folder) / "validation"
    preds = predict(result.output_dir, [str(folder / "tone" / "0.wav"), str(folder / "noise" / "1.wav")])
    assert {"label", "score", "scores"} <= set(preds[0]) and set(preds[0]["scores"]) == {"chirp", "noise", "tone"}


def test_multi_label_audio_from_a_jsonl_of_relative_paths(tiny_wav2vec2: str, tmp_path: Path) -> None:
    rows = []
    for i in range(12):
        labels = [["tone"], ["noise"], ["tone", "noise"]][i % 3]
        wave = tone(440.0, 0.4) if labels == ["tone"] else noise(0.4, seed=i) if labels == ["noise"] else tone(440.0, 0.4) + noise(0.4, seed=i)
        write_wav(tmp_path / "clips" / f"{i}.wav", wave)
        rows.append({"path": f"clips/{i}.wav", "tags": labels})
    data = tmp_path / "sounds.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = _recipe(
        "audio-classification", tiny_wav2vec2,
        {"train_files": [str(data)], "audio_column": "path", "label_column": "tags", "problem_type": "multi_label", "validation_size": 0.25},
        tmp_path / "run",
    )
    result = train(recipe)
    assert result.state.global_step == 2 and "eval/f1_macro" in result.metrics
    pred = predict(result.output_dir, [str(tmp_path / "clips" / "0.wav")])[0]
    assert set(pred) == {"input", "labels", "scores"}


def test_feature_encoder_stays_frozen_unless_asked(tiny_wav2vec2: str, sound_folder: str, tmp_path: Path) -> None:
    from hfadapt.training.coordinator import _setup

    from hfadapt.rundir.layout import RunDir
    from hfadapt.tasks import TASKS

    for freeze in (True, False):
        recipe = _recipe("audio-classification", tiny_wav2vec2, {"dataset": sound_folder}, tmp_path / f"run{freeze}",
                         adapter={"method": "full"}, model={"freeze_feature_encoder": freeze})
        session = _setup(recipe, TASKS.get(recipe.task), RunDir(recipe.output_dir), None)
        conv = [p.requires_grad for n, p in session.model.named_parameters() if "feature_extractor" in n]
        assert conv and all(g != freeze for g in conv)
        assert any(p.requires_grad for n, p in session.model.named_parameters() if "encoder.layers" in n)


def test_default_lora_targets_of_audio_architectures(tiny_wav2vec2: str, tiny_whisper: str) -> None:
    from hfadapt.insight.targets import list_targets

    for model, task in ((tiny_wav2vec2, "audio-classification"), (tiny_wav2vec2, "speech-recognition"), (tiny_whisper, "speech-recognition")):
        report = list_targets(model, task=task)
        assert report.peft_default == ("q_proj", "v_proj")
        assert "q_proj" in {row.name for row in report.rows}
    assert "lm_head" in list_targets(tiny_wav2vec2, task="speech-recognition").heads  # CTC head: trained fully


# ---- speech-recognition ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_whisper_overfits_tone_words_and_greedy_transcripts_match_plain_peft(tiny_whisper: str, tone_speech: str, tmp_path: Path) -> None:
    """Full fine-tuning overfits the 9 utterances (WER falls from the first evaluation to ~0); a LoRA run's
    adapter, reloaded with plain transformers + peft, generates the transcripts `hfadapt predict` gives."""
    import torch
    import transformers
    from peft import PeftModel

    from hfadapt.data.audio import encode_files

    data = {"train_files": [tone_speech], "validation_files": [tone_speech]}
    gen = {"language": "en", "task": "transcribe", "max_new_tokens": 8}
    recipe = _recipe("speech-recognition", tiny_whisper, data, tmp_path / "full", adapter={"method": "full"},
                     train={"max_steps": 60, "batch_size": 9, "learning_rate": 3e-3, "eval_steps": 5, "logging_steps": 5}, generation=gen)
    result = train(recipe)
    evals = [h for h in result.state.log_history if "eval/wer" in h]
    first, last = evals[0]["eval/wer"], result.metrics["eval/wer"]
    print(f"whisper WER: step 5 {first:.3f} -> step 60 {last:.3f}; loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}")
    assert first >= 0.5 and last <= 0.2 and last < first / 3
    assert result.losses[-1] < 0.2 * result.losses[0]
    clips = Path(tone_speech).parent / "clips"
    assert predict(result.output_dir, [str(clips / "1.wav")])[0]["text"] == "do re"

    lora = _recipe("speech-recognition", tiny_whisper, data, tmp_path / "lora",
                   train={"max_steps": 5, "batch_size": 9, "learning_rate": 5e-2}, generation=gen)
    run = train(lora).output_dir
    files = [str(clips / f"{i}.wav") for i in range(3)]
    ours = [p["text"] for p in predict(run, files)]
    config = transformers.AutoConfig.from_pretrained(run / "adapter")
    base = transformers.AutoModelForSpeechSeq2Seq.from_pretrained(tiny_whisper, config=config)
    plain = PeftModel.from_pretrained(base, str(run / "adapter")).eval()
    processor = transformers.AutoProcessor.from_pretrained(run / "adapter")
    batch = encode_files(files, processor.feature_extractor, lora.data)
    with torch.no_grad():
        ids = plain.generate(**batch, language="en", task="transcribe", max_new_tokens=8)
    assert [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)] == ours


@pytest.mark.slow
def test_ctc_with_a_vocabulary_from_the_transcripts_learns(tiny_wav2vec2: str, tone_speech: str, tmp_path: Path) -> None:
    import torch
    import transformers
    from peft import PeftModel

    recipe = _recipe(
        "speech-recognition", tiny_wav2vec2,
        {"train_files": [tone_speech], "validation_files": [tone_speech], "vocabulary": "transcripts"}, tmp_path / "run",
        adapter={"target_modules": "all-linear", "r": 16, "alpha": 32},
        train={"max_steps": 80, "batch_size": 9, "learning_rate": 2e-2, "eval_steps": 40, "logging_steps": 10},
    )
    result = train(recipe)
    print(f"CTC: loss {result.losses[0]:.2f} -> {result.losses[-1]:.2f}, WER {result.metrics['eval/wer']:.3f}, CER {result.metrics['eval/cer']:.3f}")
    assert result.losses[-1] < 0.1 * result.losses[0]
    assert result.metrics["eval/cer"] < 0.6
    vocab = json.loads((result.output_dir / "adapter" / "vocab.json").read_text())
    assert set(vocab) == {"d", "e", "i", "m", "o", "r", "|", "[UNK]", "[PAD]"}
    # the adapter + CTC head reload with plain peft to the same greedy transcript
    clips = [str(Path(tone_speech).parent / "clips" / f"{i}.wav") for i in range(3)]
    ours = [p["text"] for p in predict(result.output_dir, clips)]
    adapter = str(result.output_dir / "adapter")
    base = transformers.AutoModelForCTC.from_pretrained(tiny_wav2vec2, config=transformers.AutoConfig.from_pretrained(adapter))
    plain = PeftModel.from_pretrained(base, adapter).eval()
    processor = transformers.AutoProcessor.from_pretrained(adapter)
    from hfadapt.data.audio import encode_files

    with torch.no_grad():
        ids = plain(**encode_files(clips, processor.feature_extractor, recipe.data)).logits.argmax(-1)
    assert [t.strip() for t in processor.batch_decode(ids)] == ours


def test_long_files_are_transcribed_in_pieces_cut_at_pauses(tiny_whisper: str, tone_speech: str, tmp_path: Path) -> None:
    import numpy as np

    from hfadapt.data.audio import split_long

    wave = np.concatenate([utterance(["do", "re"]), utterance(["mi", "do"]), utterance(["re", "re"])])  # 1.95 s
    pieces = split_long(wave, RATE, 1.0)
    assert len(pieces) == 2 and sum(p.size for p in pieces) == wave.size and all(p.size <= RATE for p in pieces)
    cut = pieces[0].size
    assert np.abs(wave[cut - 80 : cut + 80]).max() < 1e-3  # in a gap between tones, not inside one
    recipe = _recipe("speech-recognition", tiny_whisper, {"train_files": [tone_speech]}, tmp_path / "run", generation={"max_new_tokens": 4})
    run = train(recipe).output_dir
    long_file = write_wav(tmp_path / "long.wav", wave)
    out = predict(run, [str(long_file), str(Path(tone_speech).parent / "clips" / "0.wav")])
    assert out[0]["chunks"] == 2 and out[1]["chunks"] == 1


def test_durations_filter_and_count(tiny_whisper: str, tone_speech: str, tmp_path: Path, capsys: Any) -> None:
    from hfadapt.data.sources import load_raw
    from hfadapt.tasks import TASKS

    long_clip = write_wav(tmp_path / "long.wav", tone(330.0, 1.5))  # over Whisper's (tiny) 1 s window
    short_clip = write_wav(tmp_path / "short.wav", tone(330.0, 0.05))
    rows = [json.loads(line) for line in Path(tone_speech).read_text().splitlines()]
    rows = [{"audio": str(Path(tone_speech).parent / r["audio"]), "text": r["text"]} for r in rows]
    rows += [{"audio": str(long_clip), "text": "do"}, {"audio": str(short_clip), "text": "do"}]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = _recipe("speech-recognition", tiny_whisper, {"train_files": [str(data)], "min_duration_s": 0.1}, tmp_path / "run")
    task = TASKS.get(recipe.task)
    raw = load_raw(recipe, task)
    ds = task.preprocess(raw.train, "train", task.load_processor(recipe), recipe, None, train=True)
    assert "dropped 2 of" in capsys.readouterr().out
    assert len(ds) == len(raw.train) - 2


# ---- bad inputs: one line, before training, nothing of a previous run touched ----------------------------------
def _bad_speech_data(tmp_path: Path, tone_speech: str, bad: str) -> Path:
    rows = [json.loads(line) for line in Path(tone_speech).read_text().splitlines()]
    rows = [{"audio": str(Path(tone_speech).parent / r["audio"]), "text": r["text"]} for r in rows]
    if bad == "not audio":
        (tmp_path / "notes.wav").write_text("these are notes, not sound\n")
        rows[4]["audio"] = str(tmp_path / "notes.wav")
    elif bad == "empty file":
        (tmp_path / "empty.wav").write_bytes(b"")
        rows[4]["audio"] = str(tmp_path / "empty.wav")
    elif bad == "no samples":
        import numpy as np

        rows[4]["audio"] = str(write_wav(tmp_path / "silent.wav", np.zeros(0, dtype="float32")))
    elif bad == "missing":
        rows[4]["audio"] = str(tmp_path / "nowhere.wav")
    elif bad == "empty transcript":
        rows[4]["text"] = "  "
    elif bad == "rate":
        rows[4]["audio"] = str(write_wav(tmp_path / "phone.wav", tone(330.0, 0.5, 8000), 8000))
    path = tmp_path / "speech.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ("not audio", "notes.wav: not an audio file"),
        ("empty file", "empty.wav"),
        ("no samples", "silent.wav is empty"),
        ("missing", "nowhere.wav"),
        ("empty transcript", "the transcript is empty"),
        ("rate", "phone.wav: sampling rate 8000 Hz, but the model takes 16000 Hz"),
    ],
)
def test_bad_audio_fails_in_one_line_naming_file_and_row(bad: str, expected: str, tiny_whisper: str, tone_speech: str, tmp_path: Path) -> None:
    data = _bad_speech_data(tmp_path, tone_speech, bad)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "keep.txt").write_text("a previous run")
    recipe = _recipe("speech-recognition", tiny_whisper, {"train_files": [str(data)], "validation_size": 0.2, "resample": bad != "rate"},
                     run_dir, output={"overwrite": True})
    with pytest.raises(HfadaptError) as err:
        train(recipe)
    message = str(err.value)
    assert "\n" not in message and expected in message, message
    assert f"line 5 of {data}" in message  # the fifth line of the JSONL file, whichever split it landed in
    assert (run_dir / "keep.txt").read_text() == "a previous run" and sorted(p.name for p in run_dir.iterdir()) == ["keep.txt"]


def test_shipped_audio_recipes_validate_without_torch() -> None:
    import subprocess
    import sys

    recipes = sorted(Path(__file__).resolve().parents[1].joinpath("recipes", "audio").glob("*.yaml"))
    assert len(recipes) >= 3
    code = (
        "import sys\nfrom hfadapt.cli import main\n"
        f"for r in {[str(r) for r in recipes]!r}:\n    assert main(['validate', r]) == 0, r\n"
        "assert 'torch' not in sys.modules, 'validate imported torch'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr + out.stdout


@pytest.mark.parametrize(("task", "base", "data"), [
    ("audio-classification", "tiny_wav2vec2", "sound_folder"),
    ("speech-recognition", "tiny_whisper", "tone_speech"),
])
def test_merge_gives_a_standalone_model_with_the_same_outputs(task: str, base: str, data: str, tmp_path: Path, request: Any) -> None:
    import torch
    import transformers

    from hfadapt.inference.run_model import load_model_and_processor
    from hfadapt.inference.merge import merge
    from hfadapt.rundir.layout import RunDir

    source = request.getfixturevalue(data)
    recipe = _recipe(task, request.getfixturevalue(base), {"dataset": source} if data == "sound_folder" else {"train_files": [source]}, tmp_path / "run",
                     generation={"max_new_tokens": 8})
    run = RunDir.open(train(recipe).output_dir)
    out = merge(run.path, tmp_path / "merged")
    ours, processor, _ = load_model_and_processor(run)
    files = [str(p) for p in sorted(Path(source).parent.rglob("*.wav"))[:2]] if data == "tone_speech" else [
        str(Path(source) / "validation" / "tone" / "0.wav"), str(Path(source) / "validation" / "chirp" / "0.wav")]
    batch = get_task(run.recipe.task).encode_inputs(files, processor, run.recipe)
    auto = transformers.AutoModelForAudioClassification if task == "audio-classification" else transformers.AutoModelForSpeechSeq2Seq
    merged = auto.from_pretrained(out).eval()
    if task == "speech-recognition":
        batch["decoder_input_ids"] = torch.full((2, 1), merged.config.decoder_start_token_id)
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, ours(**batch).logits, rtol=1e-4, atol=1e-5)
    card = (out / "README.md").read_text()
    assert f"pipeline_tag: {get_task(run.recipe.task).pipeline_tag}" in card


# ---- exact resume ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("task", "base", "data"), [
    ("audio-classification", "tiny_wav2vec2", "sound_folder"),
    ("speech-recognition", "tiny_whisper", "tone_speech"),
])
def test_resume_reproduces_the_uninterrupted_run(task: str, base: str, data: str, tmp_path: Path, request: Any) -> None:
    """Killed after a checkpoint and resumed, an audio run gives the same per-step losses and adapter (dropout on)."""
    from tests.conftest import assert_same_adapter, train_interrupted_then_resumed

    source = request.getfixturevalue(data)
    data_section = {"dataset": source} if data == "sound_folder" else {"train_files": [source], "validation_split": None}
    common = {"max_steps": 4, "save_steps": 2, "batch_size": 4}

    def recipe(name: str) -> Any:
        return _recipe(task, request.getfixturevalue(base), data_section, tmp_path / name, train=common, adapter={"dropout": 0.1})

    full = train(recipe("full"))
    resumed = train_interrupted_then_resumed(recipe("resumed"), crash_at=3)
    assert resumed.losses == full.losses and len(full.losses) == 4
    assert_same_adapter(full.output_dir, resumed.output_dir)


# ---- two processes ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_processes_train_and_count_each_evaluation_example_once(tiny_wav2vec2: str, sound_folder: str, tmp_path: Path) -> None:
    """audio-classification under torchrun: 2 processes x batch 4 train like 1 process x batch 8, and the
    12 validation clips (eval batches of 5: the last one padded under 2 processes) are scored once each."""
    import sys

    import torch
    import yaml

    from tests.test_distributed import _check, _env, _free_port, _Proc, _read_run, _run_all, _torchrun

    def write(name: str, batch: int) -> Path:
        raw = {
            "name": name, "task": "audio-classification", "model": {"name_or_path": tiny_wav2vec2},
            "data": {"dataset": sound_folder}, "adapter": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
            # 3 steps: 30 clips give 3 full global batches of 8 (a 4th, partial one is evened out differently)
            "train": {"max_steps": 3, "batch_size": batch, "eval_batch_size": 5, "learning_rate": 1e-2, "seed": 3,
                      "logging_steps": 1, "log_with": []},
            "output": {"dir": str(tmp_path / f"run-{name}")},
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    one = [sys.executable, "-m", "hfadapt", "train", str(write("one", 8))]
    two = _torchrun() + ["--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                         "-m", "hfadapt", "train", str(write("two", 4))]
    procs = [_Proc("one", one, tmp_path, _env(tmp_path / "cache-one")), _Proc("two", two, tmp_path, _env(tmp_path / "cache-two"))]
    results = _run_all(procs)
    for name, (cmd, rc, out, err) in results.items():
        _check(name, cmd, rc, out, err)
    a, b = _read_run(tmp_path / "run-one"), _read_run(tmp_path / "run-two")
    assert a["metrics"]["eval/samples"] == b["metrics"]["eval/samples"] == 12
    # Clips of different lengths are padded differently in batches of 8 and of 4: close, not bit-equal.
    torch.testing.assert_close(torch.tensor(b["state"]["losses"]), torch.tensor(a["state"]["losses"]), rtol=1e-3, atol=1e-4)
    for key in ("eval/loss", "eval/accuracy"):
        assert b["metrics"][key] == pytest.approx(a["metrics"][key], rel=1e-3, abs=1e-4), key


def test_an_audio_feature_as_hub_datasets_store_it(tiny_wav2vec2: str, tmp_path: Path) -> None:
    """A parquet file whose column is a datasets `Audio` feature (the bytes inside, as Hub audio datasets
    are stored) goes through the Audio-feature path: cast to decode=False, decoded with soundfile."""
    import datasets

    for i in range(12):
        write_wav(tmp_path / f"{i}.wav", tone(300.0, 0.4) if i % 2 else noise(0.4, seed=i), rate=(RATE, 8000)[i % 2])
    table = datasets.Dataset.from_dict(
        {"audio": [str(tmp_path / f"{i}.wav") for i in range(12)], "label": ["noise", "tone"] * 6}
    ).cast_column("audio", datasets.Audio(decode=False))
    table = table.map(lambda ex: {"audio": {"bytes": Path(ex["audio"]["path"]).read_bytes(), "path": Path(ex["audio"]["path"]).name}})
    parquet = tmp_path / "hub-style.parquet"
    table.cast_column("audio", datasets.Audio()).to_parquet(str(parquet))
    for i in range(12):
        (tmp_path / f"{i}.wav").unlink()  # the bytes in the parquet are all there is
    assert isinstance(datasets.load_dataset("parquet", data_files=str(parquet))["train"].features["audio"], datasets.Audio)
    recipe = _recipe("audio-classification", tiny_wav2vec2, {"train_files": [str(parquet)], "validation_size": 0.25}, tmp_path / "run")
    result = train(recipe)
    assert result.state.global_step == 2 and result.metrics["eval/samples"] == 3
