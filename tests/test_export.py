"""`hfadapt export RUN OUT --format onnx`: ONNX graphs of every required task, checked against PyTorch.

Each task gets a tiny LoRA run (two steps: the adapter must only be non-zero), which is exported;
the test then feeds its own batches (other sizes than the export's samples) to onnxruntime and to
the run's PyTorch model with the adapter *unmerged*, and `hfadapt predict OUT` must give the JSON
`hfadapt predict RUN` gives.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from hfadapt import HfadaptError, Recipe, export, predict, train
from hfadapt.cli import main
from tests.conftest import write_jsonl
from tests.test_seq2seq import WORDS, rows, tiny_t5  # noqa: F401  (tiny_t5: a fixture)
from tests.timm_fixtures import ARCHS, build_timm_model, save_like_hub

TOLERANCE = 1e-4


def _recipe(task: str, base: str, data: dict[str, Any], run_dir: Path, **sections: Any) -> Recipe:
    raw: dict[str, Any] = {
        "name": f"export-{task}", "task": task, "model": {"name_or_path": base}, "data": data,
        "adapter": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
        "train": {"max_steps": 2, "batch_size": 8, "learning_rate": 5e-2, "logging_steps": 1, "log_with": []},
        "output": {"dir": str(run_dir)},
    }
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    if "timm" in base:
        del raw["adapter"]["target_modules"]  # a ResNet has convolutions, no linear layers: its default targets
    return Recipe.from_dict(raw)


def _ner_rows(n: int) -> list[dict[str, Any]]:
    rng = random.Random(0)
    words = "the film was good and the music felt quite dull".split()
    rows = []
    for _ in range(n):
        ws = rng.sample(words, 5)
        rows.append({"tokens": ws, "ner_tags": ["B-MISC" if w in ("good", "dull") else "O" for w in ws]})
    return rows


def _qa_rows(n: int) -> list[dict[str, Any]]:
    rng = random.Random(0)
    rows = []
    for _ in range(n):
        words = [rng.choice(["the", "film", "was", "and", "music", "plot"]) for _ in range(rng.randint(4, 10))]
        at = rng.randint(0, len(words))
        words.insert(at, "superb")
        start = len(" ".join(words[:at])) + (1 if at else 0)
        rows.append({"question": "what is it", "context": " ".join(words), "answers": {"text": ["superb"], "answer_start": [start]}})
    return rows


@pytest.fixture(scope="module")
def timm_base(tmp_path_factory: pytest.TempPathFactory) -> str:
    arch, args = ARCHS["resnet"]
    return str(save_like_hub(build_timm_model(arch, args, 0), tmp_path_factory.mktemp("timm-base") / "resnet", arch, args))


TEXTS = ["the film was good", "a plot", "the music and the acting felt really quite dull and so was the ending"]
QA = ["what is it\tthe film was superb", "what is it\tthe plot and the music was superb and so was the ending, really"]


def _case(kind: str, request: pytest.FixtureRequest, tmp: Path) -> tuple[Recipe, list[str]]:
    """The recipe of a tiny run of `kind` and inputs for predict."""
    if kind == "text":
        return _recipe("text-classification", request.getfixturevalue("tiny_bert"),
                       {"train_files": [request.getfixturevalue("sentiment_csv")], "validation_size": 0.25, "max_length": 16}, tmp / "run"), TEXTS
    if kind == "token":
        return _recipe("token-classification", request.getfixturevalue("tiny_bert"),
                       {"train_files": [str(write_jsonl(tmp / "ner.jsonl", _ner_rows(16)))], "max_length": 24}, tmp / "run"), TEXTS
    if kind == "qa":
        return _recipe("question-answering", request.getfixturevalue("tiny_bert"),
                       {"train_files": [str(write_jsonl(tmp / "qa.jsonl", _qa_rows(16)))], "max_length": 20, "doc_stride": 8}, tmp / "run"), QA
    if kind in ("vit", "timm"):
        folder = Path(request.getfixturevalue("image_folder"))
        base = request.getfixturevalue("tiny_vit" if kind == "vit" else "timm_base")
        images = [str(p) for p in sorted((folder / "validation").rglob("*.png"))[:3]]
        return _recipe("image-classification", base, {"dataset": str(folder)}, tmp / "run"), images
    folder = Path(request.getfixturevalue("sound_folder"))
    sounds = [str(p) for p in sorted((folder / "validation").rglob("*.wav"))[:3]]
    return _recipe("audio-classification", request.getfixturevalue("tiny_wav2vec2"), {"dataset": str(folder)}, tmp / "run"), sounds


def _batch(task: str, processor: Any, recipe: Recipe, items: list[str]) -> dict[str, torch.Tensor]:
    from hfadapt.tasks.base import get_task

    if task == "question-answering":
        q, c = zip(*(i.split("\t") for i in items))
        return dict(processor(list(q), list(c), padding=True, return_tensors="pt"))
    if task == "token-classification":
        return dict(processor(items, padding=True, return_tensors="pt"))
    return dict(get_task(task).encode_inputs(items, processor, recipe))


@pytest.mark.parametrize("kind", ["text", "token", "qa", "vit", "timm", pytest.param("audio", marks=pytest.mark.slow)])
def test_onnx_matches_pytorch_and_predict(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    from hfadapt.inference.onnx_model import load_export
    from hfadapt.inference.run_model import load_model_and_processor
    from hfadapt.rundir.layout import RunDir

    recipe, items = _case(kind, request, tmp_path)
    run = RunDir.open(train(recipe).output_dir)
    out = export(run.path, tmp_path / "onnx")
    info = json.loads((out / "export_info.json").read_text())
    assert info["task"] == recipe.task and info["source"] == str(run.path) and info["exporter"] == "dynamo"
    assert 0 <= info["max_abs_diff"] <= TOLERANCE and info["opset"] >= 18
    assert {"model.onnx", "config.json", "recipe.yaml"} <= {p.name for p in out.iterdir()}

    # Our own batch (3 rows, other lengths than the export traced) through both runtimes
    onnx_model, processor, _, _ = load_export(out)
    torch_model, _, _ = load_model_and_processor(run)  # the adapter unmerged, as training left it
    assert torch_model.peft_config  # the comparison is against the adapter, not a bare base
    batch = _batch(recipe.task, processor, recipe, items)
    with torch.no_grad():
        want = torch_model(**batch)
    got = onnx_model(**batch)
    names = ["start_logits", "end_logits"] if recipe.task == "question-answering" else ["logits"]
    for name in names:
        assert getattr(got, name).shape == want[name].shape
        assert (getattr(got, name) - want[name]).abs().max() <= TOLERANCE, name

    # predict on the export gives predict's JSON on the run: same labels, entities, answers; scores to 1e-4
    _same(predict(str(out), items), predict(str(run.path), items))


def _same(a: Any, b: Any) -> None:
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=TOLERANCE)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    else:
        assert a == b


def test_cli_predict_on_the_export_prints_the_runs_json(finished_run: Any, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "onnx"
    assert main(["export", str(finished_run.output_dir), str(out), "--format", "onnx", "--opset", "18"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.count("\n") == 0 and "max abs difference to PyTorch" in line
    assert json.loads((out / "export_info.json").read_text())["opset"] == 18
    assert main(["predict", str(out), "the film was good"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["input"] == "the film was good" and set(row) >= {"label", "scores"}
    assert (finished_run.output_dir / "adapter").is_dir()  # the source run is left as it was


def _error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_bad_inputs_one_line_each(finished_run: Any, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = str(finished_run.output_dir)
    assert "unknown format 'tflite'" in _error(["export", run, str(tmp_path / "a"), "--format", "tflite"], capsys)
    assert "no maintained converter" in _error(["export", run, str(tmp_path / "a"), "--format", "gguf"], capsys)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert "exists and is not empty" in _error(["export", run, str(taken)], capsys)
    assert (taken / "keep.txt").read_text() == "mine"
    assert "inside the run" in _error(["export", run, str(Path(run) / "onnx")], capsys)
    # a run without weights: its adapter/ holds no safetensors
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "recipe.yaml").write_text((Path(run) / "recipe.yaml").read_text())
    (broken / "adapter").mkdir()
    (broken / "adapter" / "adapter_config.json").write_text((Path(run) / "adapter" / "adapter_config.json").read_text())
    err = _error(["export", str(broken), str(tmp_path / "b")], capsys)
    assert "broken" in err and not (tmp_path / "b").exists()
    assert not list(tmp_path.glob(".b.*"))  # no temporary folder left behind


@pytest.mark.slow
def test_a_failed_check_leaves_nothing(finished_run: Any, tmp_path: Path) -> None:
    with pytest.raises(HfadaptError, match="differ from PyTorch's"):
        export(finished_run.output_dir, tmp_path / "onnx", tolerance=-1.0)
    assert not (tmp_path / "onnx").exists() and not list(tmp_path.iterdir())


# ---- causal-lm: a decoder with past key/values that onnxruntime generates with -------------------
LM_PROMPTS = ["the film was", "a plot and the music and the acting", "good"]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory, tiny_bert: str) -> str:
    """A 2-layer Llama (rotary positions, grouped-query attention) over the tiny word-level tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(root)
    tok.save_pretrained(root)
    return str(root)


@pytest.mark.parametrize("base", ["tiny_gpt2", "tiny_llama"])
def test_causal_lm_export_generates_like_the_run(base: str, request: pytest.FixtureRequest, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    from hfadapt.inference.onnx_model import load_export, position_ids
    from hfadapt.inference.run_model import load_model_and_processor
    from hfadapt.rundir.layout import RunDir
    from hfadapt.tasks.language import encode_prompts

    texts = [{"text": t} for t in ["the film was good and the music was superb", "a plot and the acting felt dull"] * 8]
    recipe = _recipe("causal-lm", request.getfixturevalue(base), {"train_files": [str(write_jsonl(tmp_path / "lm.jsonl", texts))],
                     "max_length": 16}, tmp_path / "run", generation={"max_new_tokens": 6})
    run = RunDir.open(train(recipe).output_dir)
    out = export(run.path, tmp_path / "onnx")
    info = json.loads((out / "export_info.json").read_text())
    assert info["task"] == "causal-lm" and info["past_key_values"] is True and 0 <= info["max_abs_diff"] <= TOLERANCE
    assert "past_key_values.1.value" in info["inputs"] and "present.1.value" in info["outputs"]

    # Our own left-padded prompts: the prompt's logits through both runtimes, then 8 greedy tokens each
    onnx_model, processor, _, _ = load_export(out)
    torch_model, _, _ = load_model_and_processor(run)
    assert torch_model.peft_config  # against the adapter, unmerged
    batch = encode_prompts(LM_PROMPTS, processor, recipe)
    assert (batch["attention_mask"] == 0).any()  # left padding is exercised
    with torch.no_grad():
        # positions count real tokens only, as in generate (a plain forward would count the left padding)
        want = torch_model(**batch, position_ids=position_ids(batch["attention_mask"], batch["input_ids"].shape[1])).logits
        want_ids = torch_model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=processor.pad_token_id)
    logits, _ = onnx_model.step(batch["input_ids"], batch["attention_mask"], onnx_model.empty_past(len(LM_PROMPTS)))
    real = batch["attention_mask"].bool()
    assert (torch.from_numpy(logits) - want).abs()[real].max() <= TOLERANCE
    got_ids = onnx_model.generate(**batch, max_new_tokens=8, pad_token_id=processor.pad_token_id)
    assert got_ids.shape == want_ids.shape == (3, batch["input_ids"].shape[1] + 8)  # no EOS here: 8 new tokens each
    assert torch.equal(got_ids, want_ids)

    # `hfadapt predict OUT "prompt"` prints what `hfadapt predict RUN "prompt"` prints (greedy, the run's max_new_tokens)
    capsys.readouterr()  # training's summary lines
    assert main(["predict", str(out), *LM_PROMPTS]) == 0
    from_onnx = capsys.readouterr().out
    assert main(["predict", str(run.path), *LM_PROMPTS]) == 0
    assert from_onnx == capsys.readouterr().out and from_onnx.count("generated_text") == 3
    assert all(json.loads(line)["generated_text"] for line in from_onnx.splitlines())  # something was generated for each
    with pytest.raises(HfadaptError, match="greedily"):
        predict(str(out), LM_PROMPTS[:1], generation={"do_sample": True})


# ---- seq2seq: an encoder graph and a decoder with past key/values ------------------------------
S2S_SOURCES = ["the big red cat", "a small dog and the big blue bird", "the"]


@pytest.fixture(scope="module")
def tiny_bart(tmp_path_factory: pytest.TempPathFactory, tiny_t5: str) -> str:
    """A 2+2-layer BART (learned positions, decoding starts from </s>) over tiny_t5's word-level tokenizer."""
    from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration

    root = tmp_path_factory.mktemp("tiny-bart")
    config = BartConfig(vocab_size=len(WORDS), d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                        pad_token_id=0, eos_token_id=1, bos_token_id=None, decoder_start_token_id=1, forced_eos_token_id=None)
    torch.manual_seed(0)
    BartForConditionalGeneration(config).save_pretrained(root)
    AutoTokenizer.from_pretrained(tiny_t5).save_pretrained(root)
    return str(root)


@pytest.mark.parametrize("base", ["tiny_t5", pytest.param("tiny_bart", marks=pytest.mark.slow)])
def test_seq2seq_export_generates_like_the_run(base: str, request: pytest.FixtureRequest, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    from hfadapt.inference.onnx_model import load_export
    from hfadapt.inference.run_model import load_model_and_processor
    from hfadapt.rundir.layout import RunDir

    recipe = _recipe("seq2seq", request.getfixturevalue(base), {"train_files": [str(write_jsonl(tmp_path / "s2s.jsonl", rows(16, 0)))],
                     "max_length": 16, "max_target_length": 8}, tmp_path / "run", generation={"max_new_tokens": 6})
    run = RunDir.open(train(recipe).output_dir)
    out = export(run.path, tmp_path / "onnx")
    info = json.loads((out / "export_info.json").read_text())
    assert info["task"] == "seq2seq" and info["past_key_values"] is True and 0 <= info["max_abs_diff"] <= TOLERANCE
    assert info["encoder"] == "encoder.onnx" and (out / "encoder.onnx").is_file()
    assert "past_key_values.1.value" in info["inputs"] and "present.1.value" in info["outputs"]

    # Our own right-padded sources: the first decoder step's logits through both runtimes, then greedy ids
    onnx_model, processor, _, _ = load_export(out)
    torch_model, _, _ = load_model_and_processor(run)
    assert torch_model.peft_config  # against the adapter, unmerged
    batch = dict(processor(S2S_SOURCES, padding=True, return_tensors="pt"))
    assert (batch["attention_mask"] == 0).any()  # padding is exercised
    start = torch.full((3, 1), torch_model.config.decoder_start_token_id)
    with torch.no_grad():
        want = torch_model(**batch, decoder_input_ids=start).logits
        # an EOS outside the vocabulary: 8 steps each, however soon the tiny run has learnt to stop
        want_ids = torch_model.generate(**batch, max_new_tokens=8, do_sample=False, eos_token_id=len(WORDS))
    states = onnx_model.encode(batch["input_ids"], batch["attention_mask"])
    logits, _ = onnx_model.decoder_step(start, states, batch["attention_mask"], onnx_model.empty_past(3))
    assert (torch.from_numpy(logits) - want).abs().max() <= TOLERANCE
    got_ids = onnx_model.generate(**batch, max_new_tokens=8, eos_token_id=len(WORDS))
    assert got_ids.shape == want_ids.shape == (3, 1 + 8) and torch.equal(got_ids, want_ids)
    assert torch.equal(onnx_model.generate(**batch, max_new_tokens=8), torch_model.generate(**batch, max_new_tokens=8, do_sample=False))

    # `hfadapt predict OUT "text"` prints what `hfadapt predict RUN "text"` prints
    capsys.readouterr()
    assert main(["predict", str(out), *S2S_SOURCES]) == 0
    from_onnx = capsys.readouterr().out
    assert main(["predict", str(run.path), *S2S_SOURCES]) == 0
    assert from_onnx == capsys.readouterr().out and from_onnx.count("generated_text") == 3
