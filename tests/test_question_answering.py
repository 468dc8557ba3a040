"""question-answering: SQuAD metrics on hand-computed cases, context windows mapped back to
character spans, a tiny BERT that learns a trivial rule, data errors naming field/column/row, predict."""

from __future__ import annotations

from hfadapt.tasks.base import get_task
import json
import math
import random
import re
from types import SimpleNamespace

import pytest
import torch

from hfadapt import HfadaptError, Recipe, metrics, predict, train
from hfadapt.inference.run_model import evaluate_run
from hfadapt.tasks import TASKS, EvalContext
from tests.conftest import POSITIVE, vocabulary, write_csv, write_jsonl

TASK = TASKS.get("question-answering")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The tiny models here are slower on two threads than on one when the CPUs are shared.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- metrics ----------------------------------------------------------------------------------------
def _ref(i: str, texts: list[str]) -> dict:
    return {"id": i, "answers": {"text": texts, "answer_start": [0] * len(texts)}}


def test_squad_metric_hand_computed() -> None:
    # 1: "the Eiffel Tower" vs "Eiffel tower": lower-case, drop "the" -> "eiffel tower" both: EM 1, F1 1
    # 2: "in Paris France" vs "Paris": tokens {in, paris, france} vs {paris}: P = 1/3, R = 1,
    #    F1 = 2 * 1/3 * 1 / (1/3 + 1) = 1/2; EM 0
    # 3: "Paris!" vs golds ["in Paris France", "Paris"]: the best gold counts: EM 1, F1 1
    # EM = (1 + 0 + 1) / 3 * 100 = 66.67;  F1 = (1 + 1/2 + 1) / 3 * 100 = 83.33
    preds = [
        {"id": "1", "prediction_text": "the Eiffel Tower"},
        {"id": "2", "prediction_text": "in Paris France"},
        {"id": "3", "prediction_text": "Paris!"},
    ]
    refs = [_ref("1", ["Eiffel tower"]), _ref("2", ["Paris"]), _ref("3", ["in Paris France", "Paris"])]
    got = metrics.compute(["squad"], preds, refs)
    assert sorted(got) == sorted(metrics.result_keys("squad"))
    assert got["exact_match"] == pytest.approx(200 / 3)
    assert got["f1"] == pytest.approx(250 / 3)
    one = metrics.compute(["squad"], preds[1:2], refs[1:2])
    assert one == {"exact_match": 0.0, "f1": pytest.approx(50.0)}


def test_squad_v2_metric_hand_computed() -> None:
    # has answer: "the Eiffel Tower"/"Eiffel tower" EM 1 F1 1; "in Paris France"/"Paris" EM 0 F1 1/2;
    #             ""/"Paris" (said no answer, wrongly) EM 0 F1 0
    # no answer:  "" EM 1 F1 1; "London" EM 0 F1 0
    # EM = 2/5 = 40, F1 = 2.5/5 = 50; HasAns EM 1/3, F1 1.5/3 = 50; NoAns EM 1/2 = 50
    rows = [("the Eiffel Tower", ["Eiffel tower"]), ("in Paris France", ["Paris"]), ("", ["Paris"]), ("", []), ("London", [])]
    preds = [{"id": str(i), "prediction_text": p, "no_answer_probability": 0.0} for i, (p, _) in enumerate(rows)]
    refs = [_ref(str(i), golds) for i, (_, golds) in enumerate(rows)]
    got = metrics.compute(["squad_v2"], preds, refs)
    assert sorted(got) == sorted(metrics.result_keys("squad_v2"))
    expected = {"exact_match": 40.0, "f1": 50.0, "HasAns_exact_match": 100 / 3, "HasAns_f1": 50.0, "NoAns_exact_match": 50.0}
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    # no_answer_probability above the threshold turns "London" into no-answer: NoAns EM 2/2
    preds[4]["no_answer_probability"] = 0.9
    got = metrics.load("squad_v2").compute(predictions=preds, references=refs, no_answer_threshold=0.5)
    assert got["NoAns_exact_match"] == 100.0 and got["exact_match"] == 60.0
    # only answerable questions: NoAns is undefined, reported as NaN
    got = metrics.compute(["squad_v2"], preds[:2], refs[:2])
    assert got["exact_match"] == 50.0 and math.isnan(got["NoAns_exact_match"])


# ---- windows: a small vocabulary, max_length 10, doc_stride 2 ----------------------------------------
WORDS = "the capital of france is paris and it a big city on seine river where what who".split()
CONTEXT = "the capital of france is paris and it is a big city on the seine river"  # 16 words, one token each


@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory):
    from transformers import BertTokenizerFast

    root = tmp_path_factory.mktemp("qa-tok")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    tok = BertTokenizerFast(vocab=str(vocab), do_lower_case=True)
    tok.save_pretrained(root)
    return tok


def _qa_recipe(tmp_path, model: str, rows: list[dict] | None = None, **data) -> Recipe:
    train_file = write_jsonl(tmp_path / "train.jsonl", rows or [{"question": "q", "context": "c", "answers": {"text": [], "answer_start": []}}])
    return Recipe.from_dict({
        "name": "qa", "task": "question-answering", "model": {"name_or_path": model},
        "data": {"train_files": [str(train_file)], "validation_split": None, **data},
        "train": {"log_with": []}, "output": {"dir": str(tmp_path / "run")},
    })


def _example(question: str, answer: str | None, occurrence: int = 0) -> dict:
    if answer is None:
        return {"question": question, "context": CONTEXT, "answers": {"text": [], "answer_start": []}}
    start = -1
    for _ in range(occurrence + 1):
        start = CONTEXT.index(answer, start + 1)
    return {"question": question, "context": CONTEXT, "answers": {"text": [answer], "answer_start": [start]}}


def test_long_context_windows_label_the_answer_tokens(tmp_path, word_tokenizer) -> None:
    import datasets

    # Question "where" is 1 token; [CLS] q [SEP] ctx [SEP] leaves 10 - 4 = 6 context tokens per window,
    # overlapping by 2: words 0-5, 4-9, 8-13, 12-15 (context token k of a window sits at position 3 + k).
    #   "seine river" = words 14-15: only in window 4, at positions 3+2, 3+3; the other windows point at CLS.
    #   "paris" = word 5: in window 1 (position 3+5) and window 2 (3+1).
    recipe = _qa_recipe(tmp_path, "unused", max_length=10, doc_stride=2)
    ds = datasets.Dataset.from_list([_example("where", "seine river"), _example("what", "paris")])
    out = TASK.preprocess(ds, "train", word_tokenizer, recipe, None, train=True)
    assert out.column_names == ["input_ids", "token_type_ids", "attention_mask", "start_positions", "end_positions"]
    assert len(out) == 8
    assert out["start_positions"] == [0, 0, 0, 5, 8, 4, 0, 0]
    assert out["end_positions"] == [0, 0, 0, 6, 8, 4, 0, 0]
    # those token positions decode back to the answer
    assert word_tokenizer.decode(out[3]["input_ids"][5:7]) == "seine river"
    assert word_tokenizer.decode(out[5]["input_ids"][4:5]) == "paris"

    # evaluation windows keep the example, its context and character offsets of the context tokens
    ev = TASK.preprocess(ds, "validation", word_tokenizer, recipe, None, train=False)
    assert ev["qa_example"] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert ev["qa_window"] == list(range(8))
    offsets = ev[3]["qa_offsets"]
    assert offsets[:3] == [[-1, -1]] * 3 and offsets[-1] == [-1, -1]  # CLS, question, SEP ... SEP
    s, e = offsets[5][0], offsets[6][1]
    assert CONTEXT[s:e] == "seine river" and (s, e) == (CONTEXT.index("seine"), len(CONTEXT))
    # the collator hands the model only its inputs (plus the window number evaluate() pops)
    batch = TASK.collator(word_tokenizer)([ev[i] for i in range(3)])
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "start_positions", "end_positions", "qa_window"}


class _PointingModel(torch.nn.Module):
    """Start/end logits 20 on given token ids, chosen by the question's token; CLS for no-answer."""

    def __init__(self, rules: dict[int, tuple[int, int] | None]) -> None:
        super().__init__()
        self.rules = rules
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        s = torch.zeros(input_ids.shape)
        e = torch.zeros(input_ids.shape)
        for b, ids in enumerate(input_ids):
            rule = self.rules[int(ids[1])]
            if rule is None:
                s[b, 0] = e[b, 0] = 20.0
            else:
                s[b] += 20.0 * (ids == rule[0])
                e[b] += 20.0 * (ids == rule[1])
        return SimpleNamespace(start_logits=s, end_logits=e)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_evaluation_maps_windows_back_to_character_spans(tmp_path, word_tokenizer, batch_size) -> None:
    import datasets
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    ids = word_tokenizer.convert_tokens_to_ids
    recipe = _qa_recipe(tmp_path, "unused", max_length=10, doc_stride=2, version_2_with_negative=True)
    # the second "is" (word 8) is in windows 2 and 3: the answer is read from whichever wins
    rows = [_example("where", "seine river"), _example("what", "paris"), _example("who", None), _example("city", "is", occurrence=1)]
    ds = datasets.Dataset.from_list(rows)
    ev = TASK.preprocess(ds, "validation", word_tokenizer, recipe, None, train=False)
    model = _PointingModel({
        ids("where"): (ids("seine"), ids("river")), ids("what"): (ids("paris"), ids("paris")), ids("who"): None,
        ids("city"): (ids("a"), ids("big")),  # gold is "is"; predicts "a big": EM 0, F1 0
    })
    accelerator = Accelerator(cpu=True)
    dl = accelerator.prepare_data_loader(DataLoader(ev, batch_size=batch_size, collate_fn=TASK.collator(word_tokenizer)))
    got = TASK.evaluate(EvalContext(accelerator, recipe, word_tokenizer, None, ev, "validation", ("squad_v2",)), model, dl)
    assert got["samples"] == 4
    assert got["exact_match"] == 75.0 and got["f1"] == 75.0
    assert got["HasAns_exact_match"] == pytest.approx(200 / 3) and got["NoAns_exact_match"] == 100.0
    assert math.isfinite(got["loss"]) and got["loss"] > 0


def test_best_span_respects_order_and_max_answer_length() -> None:
    from hfadapt.tasks.question_answering import best_span

    offs = [[-1, -1], [0, 3], [4, 7], [8, 11], [-1, -1]]  # CLS, three context tokens, SEP
    start = torch.tensor([50.0, 5.0, 1.0, 0.0, 50.0])
    end = torch.tensor([50.0, 0.0, 1.0, 6.0, 50.0])
    assert best_span(start, end, offs, 3) == (11.0, 0, 11, 1, 3)  # tokens 1..3; CLS/SEP never
    assert best_span(start, end, offs, 2) == (7.0, 4, 11, 2, 3)  # 3 tokens too long now
    # the end may not come before the start
    assert best_span(torch.tensor([0.0, 0.0, 0.0, 9.0]), torch.tensor([0.0, 8.0, 0.0, 1.0]), offs[:4], 5)[3:] == (3, 3)
    assert best_span(start[:1], end[:1], offs[:1], 5) is None


# ---- errors --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ({"text": ["paris"], "answer_start": [4]}, r"answer 'paris' not found at answer_start 4 in data.context_column 'context' \(the context has 'capit' there\)$"),
        ({"text": [], "answer_start": []}, r"no answer, but data.version_2_with_negative is false"),
        ("paris", r"expected \{'text': \[...\], 'answer_start': \[...\]\}, got 'paris'"),
        ({"text": ["paris", "it"], "answer_start": [25]}, r"'text' and 'answer_start' must be lists of equal length, got"),
    ],
)
def test_broken_answers_name_column_and_row(tmp_path, word_tokenizer, answers, message) -> None:
    rows = [_example("what", "paris") for _ in range(4)]
    rows[2] = {**rows[2], "answers": answers}
    recipe = _qa_recipe(tmp_path, str(tmp_path), max_length=10, doc_stride=2)
    if isinstance(answers, str):  # CSV: answers as JSON text, one row not JSON at all
        path = write_csv(tmp_path / "train.csv", [{**r, "answers": r["answers"] if i == 2 else json.dumps(r["answers"])} for i, r in enumerate(rows)])
    else:
        path = write_jsonl(tmp_path / "train.jsonl", rows)
    recipe.data.train_files = [str(path)]
    word_tokenizer.save_pretrained(tmp_path)
    line = 4 if isinstance(answers, str) else 3  # row 2: after a CSV header, or of JSON Lines
    with pytest.raises(HfadaptError, match=rf"^data.answers_column 'answers', line {line} of {re.escape(str(path))}: " + message) as err:
        train(recipe)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


def test_question_too_long_for_the_windows(tmp_path, word_tokenizer) -> None:
    import datasets

    rows = [_example("what", "paris"), _example("what is the capital of france", "paris")]
    recipe = _qa_recipe(tmp_path, "unused", rows, max_length=10, doc_stride=2)
    ds = datasets.Dataset.from_list(rows)
    with pytest.raises(HfadaptError, match=rf"data.question_column 'question', line 2 of {re.escape(str(tmp_path / 'train.jsonl'))}: the question takes 6 tokens, leaving 1 .* more than data.doc_stride=2"):
        TASK.preprocess(ds, "train", word_tokenizer, recipe, None, train=True)


def test_recipe_checks() -> None:
    with pytest.raises(HfadaptError, match=r"eval.metrics: 'squad_v2' does not fit data.version_2_with_negative=false; use squad"):
        Recipe.from_dict({
            "task": "question-answering", "model": {"name_or_path": "m"}, "data": {"dataset": "d", "max_length": 384},
            "eval": {"metrics": ["squad_v2"]},
        })
    with pytest.raises(HfadaptError, match=r"eval.metrics: 'accuracy' does not fit question-answering; use squad_v2"):
        Recipe.from_dict({
            "task": "question-answering", "model": {"name_or_path": "m"},
            "data": {"dataset": "d", "max_length": 384, "version_2_with_negative": True}, "eval": {"metrics": ["accuracy"]},
        })
    with pytest.raises(HfadaptError, match=r"data.doc_stride: 128 must be smaller than data.max_length 128"):
        Recipe.from_dict({"task": "question-answering", "model": {"name_or_path": "m"}, "data": {"dataset": "d", "max_length": 128}})
    # The defaults are SQuAD's: windows of 384 tokens overlapping by 128.
    squad = Recipe.from_dict({"task": "question-answering", "model": {"name_or_path": "m"}, "data": {"dataset": "d"}})
    assert (squad.data.max_length, squad.data.doc_stride) == (384, 128)
    r = Recipe.from_dict({
        "task": "question-answering", "model": {"name_or_path": "m"},
        "data": {"dataset": "d", "max_length": 384, "version_2_with_negative": True}, "eval": {"best_metric": "HasAns_f1"},
    })
    assert TASK.default_metrics(r) == ["squad_v2"]


def test_slow_tokenizer_is_refused(tmp_path, monkeypatch) -> None:
    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: SimpleNamespace(is_fast=False))
    recipe = Recipe.from_dict({"task": "question-answering", "model": {"name_or_path": "slow/model"}, "data": {"dataset": "d", "max_length": 64, "doc_stride": 16}})
    with pytest.raises(HfadaptError, match=r"model.name_or_path: question-answering needs a fast tokenizer"):
        TASK.load_processor(recipe)


# ---- a tiny BERT learns: the answer is the one positive word ---------------------------------------------
def _positive_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    others = [w for w in vocabulary()[5:] if w not in POSITIVE]
    rows = []
    for _ in range(n):
        words = [rng.choice(others) for _ in range(rng.randint(4, 16))]
        at = rng.randint(0, len(words))
        answer = rng.choice(POSITIVE)
        words.insert(at, answer)
        context = " ".join(words)
        start = len(" ".join(words[:at])) + (1 if at else 0)
        rows.append({"question": "what is it", "context": context, "answers": {"text": [answer], "answer_start": [start]}})
    return rows


N_VALIDATION = 24


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert):
    tmp = tmp_path_factory.mktemp("qa-run")
    train_file = write_jsonl(tmp / "train.jsonl", _positive_rows(128, 0))
    val_file = write_jsonl(tmp / "val.jsonl", _positive_rows(N_VALIDATION, 1))
    recipe = Recipe.from_dict({
        "name": "qa", "task": "question-answering", "model": {"name_or_path": tiny_bert},
        # contexts of 5-17 words; max_length 20 leaves 20 - 3 (question) - 3 (specials) = 14 context
        # tokens per window, so the longest contexts take two windows
        "data": {"train_files": [str(train_file)], "validation_files": [str(val_file)], "max_length": 20, "doc_stride": 8},
        "adapter": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
        "train": {"epochs": 6, "batch_size": 8, "learning_rate": 2e-2, "logging_steps": 1, "log_with": []},
        "eval": {"best_metric": "f1"},
        "output": {"dir": str(tmp / "run")},
    })
    return train(recipe)


def test_tiny_bert_learns_the_rule(trained) -> None:
    losses = trained.losses
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    m = trained.metrics
    assert m["eval/samples"] == N_VALIDATION
    assert m["eval/exact_match"] >= 75 and m["eval/f1"] >= m["eval/exact_match"]
    assert m["eval/loss"] < losses[0]
    assert (trained.output_dir / "adapter" / "adapter_config.json").is_file()
    # `hfadapt eval` on the run reproduces the end-of-training evaluation
    again = evaluate_run(trained.output_dir)
    assert again["validation/samples"] == N_VALIDATION
    assert again["validation/exact_match"] == pytest.approx(m["eval/exact_match"])
    assert again["validation/f1"] == pytest.approx(m["eval/f1"])
    assert again["validation/loss"] == pytest.approx(m["eval/loss"], rel=1e-5)


def test_predict_returns_character_offsets(trained) -> None:
    # a short context, and a long one whose answer only the third window holds
    long_context = " ".join(["the film was dull and"] * 6) + " the ending was lovely"
    inputs = ["what is it\tthe plot was boring but the music was superb", f"what is it\t{long_context}"]
    out = predict(trained.output_dir, inputs)
    assert [set(o) for o in out] == [{"input", "answer", "start", "end", "score"}] * 2
    for o, item in zip(out, inputs):
        context = item.split("\t", 1)[1]
        assert context[o["start"] : o["end"]] == o["answer"]
        assert 0.0 < o["score"] <= 1.0
    assert (out[0]["answer"], out[0]["start"], out[0]["end"]) == ("superb", 38, 44)  # len("the plot was boring but the music was ") == 38
    assert (out[1]["answer"], out[1]["start"], out[1]["end"]) == ("lovely", len(long_context) - 6, len(long_context))
    with pytest.raises(HfadaptError, match=r"predict input 1: give each input as 'QUESTION<TAB>CONTEXT'"):
        predict(trained.output_dir, ["no tab here"])


EVAL_SCRIPT = """
import json, sys
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from hfadapt.data.sources import load_raw
from hfadapt.data.grouping import eval_order
from hfadapt.inference.run_model import load_model_and_processor
from hfadapt.rundir.layout import RunDir
from hfadapt.tasks.base import EvalContext, get_task

torch.set_num_threads(1)
run = RunDir(sys.argv[1])
task = get_task(run.recipe.task)
model, processor, info = load_model_and_processor(run)
accelerator = Accelerator(cpu=True)
ds = task.preprocess(load_raw(run.recipe, task).validation, "validation", processor, run.recipe, info, train=False)
order = eval_order(task, ds)  # longest first, as training evaluates: each process gets other windows
dl = accelerator.prepare_data_loader(DataLoader(ds, batch_size=int(sys.argv[2]), sampler=order, collate_fn=task.collator(processor)))
results = task.evaluate(EvalContext(accelerator, run.recipe, processor, info, ds, "validation", ("squad",), order=tuple(order)), model, dl)
if accelerator.is_main_process:
    print("RESULTS " + json.dumps({"processes": accelerator.num_processes, "windows": len(ds), "sorted": order != sorted(order), **results}))
"""


def test_two_processes_score_every_window_once(trained, tmp_path) -> None:
    """Validation windows read longest first in batches of 5 on 2 processes: windows of one example land
    on different processes, Accelerate repeats windows to even out the last batches and the processes pad
    to different lengths; the results must equal the one-process evaluation."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "eval.py"
    script.write_text(EVAL_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = Path(sys.executable).parent / "torchrun"
    launcher = [str(torchrun)] if torchrun.is_file() else [sys.executable, "-m", "torch.distributed.run"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    cmd = launcher + ["--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port),
                      str(script), str(trained.output_dir), "5"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS ")]
    assert proc.returncode == 0 and len(lines) == 1, proc.stderr[-3000:]
    two = json.loads(lines[0].removeprefix("RESULTS "))
    assert two["processes"] == 2 and two["sorted"] is True
    assert two["windows"] > N_VALIDATION and two["windows"] % 10 != 0  # some examples span 2 windows; last batches padded
    assert two["samples"] == N_VALIDATION
    m = trained.metrics
    assert two["loss"] == pytest.approx(m["eval/loss"], rel=1e-5)
    assert two["exact_match"] == pytest.approx(m["eval/exact_match"])
    assert two["f1"] == pytest.approx(m["eval/f1"])


def test_length_sorted_evaluation_gives_dataset_order_results(trained, tmp_path, monkeypatch) -> None:
    """Windows read longest first: an example's windows land in different batches, yet each window is
    matched to its example through qa_window, and the answers, scores and predictions file are those
    of dataset order."""
    from hfadapt.data.sources import load_raw
    from hfadapt.data.grouping import eval_order
    from hfadapt.inference.run_model import load_model_and_processor
    from hfadapt.rundir.layout import RunDir
    from tests.sorted_eval import evaluate_sorted_and_plain

    run = RunDir(trained.output_dir)
    model, processor, info = load_model_and_processor(run)
    task = get_task(run.recipe.task)
    ds = task.preprocess(load_raw(run.recipe, task).validation, "validation", processor, run.recipe, info, train=False)
    examples = ds["qa_example"]
    assert len(examples) > len(set(examples))  # some examples take two windows
    order, batch = eval_order(task, ds), 5
    batch_of = {w: k // batch for k, w in enumerate(order)}
    assert any(batch_of[a] != batch_of[b] for a in range(len(examples)) for b in range(a) if examples[a] == examples[b])
    got = evaluate_sorted_and_plain(task, model, processor, info, ds, run.recipe, ["squad"], batch, tmp_path, monkeypatch)
    s, p = got["sorted"], got["plain"]
    assert s["results"] == pytest.approx(p["results"], rel=1e-6) and s["results"]["samples"] == N_VALIDATION
    assert s["metric_inputs"] == p["metric_inputs"] and s["rows"] == p["rows"]


def test_segment_ids_reach_the_model_so_merge_equals_the_run(trained, tmp_path) -> None:
    """peft's PeftModelForQuestionAnswering drops token_type_ids; hfadapt's reader must see them in training
    and prediction alike, or its merged (or exported) model answers differently from the run."""
    import json

    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from hfadapt.inference.merge import merge
    from hfadapt.modeling.models import load_run_model
    from hfadapt.rundir.layout import RunDir
    from hfadapt.tasks.base import get_task

    run = RunDir(trained.output_dir)
    model = load_run_model(run, get_task("question-answering")).eval()
    tok = AutoTokenizer.from_pretrained(trained.output_dir / "adapter")
    enc = tok(["what is it"], ["the plot was boring but the music was superb"], return_tensors="pt")
    assert enc["token_type_ids"].any()
    merge(trained.output_dir, tmp_path / "merged")
    merged = AutoModelForQuestionAnswering.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        ours, theirs = model(**enc), merged(**enc)
        zeroed = model(**{**enc, "token_type_ids": torch.zeros_like(enc["token_type_ids"])})
    torch.testing.assert_close(ours.start_logits, theirs.start_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.end_logits, theirs.end_logits, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(ours.start_logits, zeroed.start_logits, atol=1e-4)  # the segments matter
    # the plain PeftModel wrapper (not peft's QA one) with the head saved whole
    config = json.loads((trained.output_dir / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] is None and "qa_outputs" in config["modules_to_save"]
