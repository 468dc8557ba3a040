"""token-classification: seqeval, word/sub-token label alignment, training, predict offsets, broken data."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hfadapt import HfadaptError, Recipe, predict, train
from hfadapt.tasks import TASKS
from tests.conftest import write_jsonl

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]  # data.labels order in the hand-checked cases
FIRST = ["John", "Mary", "Anna", "Peter"]
LAST = ["Smith", "Brown", "Johnson", "Peters"]  # Johnson -> john ##son, Peters -> peter ##s
CITIES = ["Paris", "London", "Rome", "Berlin"]
# A WordPiece vocabulary in which some words split: playing -> play ##ing, visited -> visit ##ed.
VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "john", "mary", "anna", "peter", "smith", "brown", "paris", "london", "rome", "berlin",
    "is", "in", "the", "park", "with", "and", "play", "visit", "lives", "met", ".", ",",
    "##son", "##s", "##ing", "##ed",
]


@pytest.fixture(scope="module")
def wordpiece_bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer BERT (random weights, no dropout) with the word-piece vocabulary above."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("wordpiece-bert")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    tok = BertTokenizerFast(vocab=str(vocab), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.2,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(root)
    tok.save_pretrained(root)
    return str(root)


def ner_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Sentences in which names are persons and cities are locations (a rule a tiny model can learn)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        first, last, city, other = rng.choice(FIRST), rng.choice(LAST), rng.choice(CITIES), rng.choice(FIRST)
        kind = i % 4
        if kind == 0:
            words, tags = [first, last, "is", "playing", "in", city, "."], ["B-PER", "I-PER", "O", "O", "O", "B-LOC", "O"]
        elif kind == 1:
            words, tags = [first, "visited", city, "with", other], ["B-PER", "O", "B-LOC", "O", "B-PER"]
        elif kind == 2:
            words, tags = ["the", "park", "in", city, "is", "playing"], ["O", "O", "O", "B-LOC", "O", "O"]
        else:
            words, tags = [first, last, "met", other, "in", city], ["B-PER", "I-PER", "O", "B-PER", "O", "B-LOC"]
        rows.append({"tokens": words, "ner_tags": tags})
    return rows


def recipe_for(tmp_path: Path, model: str, train_rows: list[dict], validation_rows: list[dict] | None = None, **sections: Any) -> Recipe:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"train_files": [str(write_jsonl(tmp_path / "train.jsonl", train_rows))], "max_length": 24}
    if validation_rows is not None:
        data["validation_files"] = [str(write_jsonl(tmp_path / "validation.jsonl", validation_rows))]
    raw: dict[str, Any] = {
        "name": "ner", "task": "token-classification", "model": {"name_or_path": model}, "data": data,
        "adapter": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"epochs": 1, "batch_size": 8, "learning_rate": 2e-2, "logging_steps": 1, "log_with": []},
        "output": {"dir": str(tmp_path / "run")},
    }
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    return Recipe.from_dict(raw)


# ---- the seqeval metric module ------------------------------------------------------------------
def test_seqeval_hand_checked() -> None:
    from hfadapt import metrics

    # Entities: refs PER[0:2], LOC[3]; preds PER[0:2]. TP=1, FP=0, FN=1: P=1, R=1/2, F1=2/3.
    # Tags: 3 of 4 right -> accuracy 3/4.
    got = metrics.compute(["seqeval"], [["B-PER", "I-PER", "O", "O"]], [["B-PER", "I-PER", "O", "B-LOC"]])
    assert got == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "accuracy": 0.75}, abs=1e-12)
    assert sorted(got) == sorted(metrics.result_keys("seqeval"))
    assert all(isinstance(v, float) for v in got.values())

    # Two sequences, per entity type. refs: PER[0:2], LOC[3], LOC[0] of row 2; preds: PER[0:2], PER[3].
    #   PER: TP=1 FP=1 FN=0 -> P=1/2 R=1 F1=2/3;  LOC: TP=0 FN=2 -> 0
    #   micro: TP=1, 2 predicted, 3 true -> P=1/2 R=1/3 F1=2*(1/6)/(5/6)=2/5;  tags right 3 of 5
    got = metrics.load("seqeval").compute(
        predictions=[["B-PER", "I-PER", "O", "B-PER"], ["O"]],
        references=[["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC"]],
        per_entity=True,
    )
    assert got["PER"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "number": 1})
    assert got["LOC"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 2})
    assert (got["precision"], got["recall"], got["f1"], got["accuracy"]) == pytest.approx((0.5, 1 / 3, 0.4, 0.6))
    # A chunk counts only with the right type AND both ends: I-PER cut short is a miss.
    got = metrics.compute(["seqeval"], [["B-PER", "O", "O"]], [["B-PER", "I-PER", "O"]])
    assert (got["precision"], got["recall"], got["f1"]) == (0.0, 0.0, 0.0)


# ---- alignment of word tags to sub-tokens --------------------------------------------------------
def _prepare(tmp_path: Path, model: str, rows: list[dict], split_train: bool = True, **data: Any) -> tuple[Any, Any, Any]:
    from hfadapt.data.sources import load_raw

    recipe = recipe_for(tmp_path, model, rows, rows, data={"labels": TAGS, **data})
    task = TASKS.get("token-classification")
    tok = task.load_processor(recipe)
    raw = load_raw(recipe, task)
    info = task.label_info(raw.train, recipe)
    ds = task.preprocess(raw.train if split_train else raw.validation, "train" if split_train else "validation", tok, recipe, info, train=split_train)
    return tok, ds, info


def test_labels_on_first_sub_token_only(tmp_path, wordpiece_bert) -> None:
    rows = [{"tokens": ["Johnson", "is", "playing", "in", "Paris"], "ner_tags": ["B-PER", "O", "O", "O", "B-LOC"]}]
    tok, ds, _ = _prepare(tmp_path, wordpiece_bert, rows)
    ex = ds[0]
    assert tok.convert_ids_to_tokens(ex["input_ids"]) == ["[CLS]", "john", "##son", "is", "play", "##ing", "in", "paris", "[SEP]"]
    #                      [CLS] john ##son  is  play ##ing  in  paris [SEP]
    assert ex["labels"] == [-100, 1, -100, 0, 0, -100, 0, 3, -100]


def test_label_all_subtokens_turns_b_into_i(tmp_path, wordpiece_bert) -> None:
    rows = [{"tokens": ["Johnson", "is", "playing", "in", "Paris"], "ner_tags": ["B-PER", "O", "O", "O", "B-LOC"]}]
    _, ds, _ = _prepare(tmp_path, wordpiece_bert, rows, label_all_subtokens=True)
    #                               [CLS] john ##son  is  play ##ing  in  paris [SEP]
    assert ds[0]["labels"] == [-100, 1, 2, 0, 0, 0, 0, 3, -100]  # ##son: B-PER -> I-PER
    # Evaluation always scores one prediction per word, the first sub-token's.
    _, ds, _ = _prepare(tmp_path / "eval", wordpiece_bert, rows, split_train=False, label_all_subtokens=True)
    assert ds[0]["labels"] == [-100, 1, -100, 0, 0, -100, 0, 3, -100]


def test_label_names_from_classlabel_strings_and_ints(tmp_path) -> None:
    import datasets

    task = TASKS.get("token-classification")
    recipe = SimpleNamespace(data=SimpleNamespace(labels=None, tags_column="ner_tags"))
    features = datasets.Features({
        "tokens": datasets.Sequence(datasets.Value("string")),
        "ner_tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER"])),
    })
    ds = datasets.Dataset.from_dict({"tokens": [["a", "b"]], "ner_tags": [[1, 2]]}, features=features)
    assert task.label_info(ds, recipe).names == ("O", "B-PER", "I-PER")
    ds = datasets.Dataset.from_dict({"tokens": [["a", "b"], ["c"]], "ner_tags": [["O", "B-LOC"], ["B-PER"]]})
    assert task.label_info(ds, recipe).names == ("B-LOC", "B-PER", "O")  # sorted
    ds = datasets.Dataset.from_dict({"tokens": [["a", "b"], ["c"]], "ner_tags": [[0, 3], [1]]})
    assert task.label_info(ds, recipe).names == ("0", "1", "2", "3")
    recipe.data.labels = ["O", "B-X", "I-X"]
    info = task.label_info(ds, recipe)
    assert info.names == ("O", "B-X", "I-X")
    assert task.model_kwargs(info) == {"num_labels": 3, "id2label": {0: "O", 1: "B-X", 2: "I-X"}, "label2id": {"O": 0, "B-X": 1, "I-X": 2}}


def test_byte_level_bpe_gets_a_prefix_space(tmp_path) -> None:
    """RoBERTa/GPT-2 tokenizers must encode pre-split words as if a space came first (is_split_into_words)."""
    from transformers import RobertaTokenizerFast

    vocab = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "\u0120"] + list("hijnos") + ["\u0120" + c for c in "hijnos"] + ["\u0120jo", "\u0120joh", "\u0120john"]
    (tmp_path / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(vocab)}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n\u0120 j\n\u0120j o\n\u0120jo h\n\u0120joh n\n")
    RobertaTokenizerFast(vocab=str(tmp_path / "vocab.json"), merges=str(tmp_path / "merges.txt")).save_pretrained(tmp_path / "tok")
    recipe = SimpleNamespace(model=SimpleNamespace(name_or_path=str(tmp_path / "tok"), revision=None, trust_remote_code=False))
    tok = TASKS.get("token-classification").load_processor(recipe)
    enc = tok(["john", "is"], is_split_into_words=True)
    assert enc.tokens()[1] == "\u0120john" and enc.word_ids() == [None, 0, 1, 1, 1, None]


# ---- end to end: train, evaluate, predict --------------------------------------------------------
def test_tiny_bert_learns_names_and_cities_then_predicts_spans(tmp_path, wordpiece_bert) -> None:
    recipe = recipe_for(
        tmp_path, wordpiece_bert, ner_rows(64, seed=0), ner_rows(16, seed=1),
        # The plain shuffle: the "the park" -> no entity check below holds for this seed's order only; over
        # seeds 1-3 it fails once with the plain shuffle and never length-grouped (f1 1.0 / 1.0 / 0.972 grouped).
        train={"epochs": 6, "eval_steps": 4, "group_by_length": False},
    )
    result = train(recipe)
    losses = result.losses
    assert sum(losses[-4:]) / 4 < 0.5 * sum(losses[:4]) / 4, losses
    evals = [h for h in result.state.log_history if "eval/f1" in h]
    assert evals[0]["eval/f1"] < 0.7 and result.metrics["eval/f1"] >= 0.95, [h["eval/f1"] for h in evals]
    assert evals[-1]["eval/loss"] < evals[0]["eval/loss"]
    assert result.metrics["eval/samples"] == 16
    assert result.metrics["eval/accuracy"] >= 0.95
    assert {"eval/PER/f1", "eval/LOC/f1", "eval/precision", "eval/recall"} <= set(result.metrics)
    config = json.loads((result.output_dir / "adapter" / "config.json").read_text())
    assert sorted(config["id2label"].values()) == ["B-LOC", "B-PER", "I-PER", "O"]

    text = "Mary Johnson is playing in Rome."
    out = predict(result.output_dir, [text, "the park"])
    assert out[0]["input"] == text
    spans = [(e["entity"], e["text"], e["start"], e["end"]) for e in out[0]["entities"]]
    #         0123456789012345678901234567890
    #         Mary Johnson is playing in Rome.
    assert spans == [("PER", "Mary Johnson", 0, 12), ("LOC", "Rome", 27, 31)]
    assert all(0.5 < e["score"] <= 1.0 for e in out[0]["entities"])
    assert out[1] == {"input": "the park", "entities": []}


class _TableModel:
    """Stands in for a model: the tag of each token id comes from a fixed table (hand-checkable predict)."""

    def __init__(self, table: dict[int, int], num_labels: int) -> None:
        import torch

        self.table, self.num_labels = table, num_labels
        self._p = torch.nn.Parameter(torch.zeros(1))

    def parameters(self) -> Any:
        return iter([self._p])

    def __call__(self, input_ids: Any, **_: Any) -> Any:
        import torch

        logits = torch.zeros(*input_ids.shape, self.num_labels)
        for (i, t), v in zip(torch.cartesian_prod(torch.arange(input_ids.shape[0]), torch.arange(input_ids.shape[1])).tolist(), input_ids.flatten().tolist()):
            logits[i, t, self.table.get(v, 0)] = 5.0
        return SimpleNamespace(logits=logits)


def test_predict_offsets_group_words_and_chunks(wordpiece_bert) -> None:
    from transformers import AutoTokenizer

    from hfadapt.data.labels import LabelInfo

    tok = AutoTokenizer.from_pretrained(wordpiece_bert)
    ids = {w: tok.convert_tokens_to_ids(w) for w in VOCAB}
    # "##son" is predicted O, but a word takes the tag of its first piece: Johnson stays I-PER.
    # "Berlin" is I-LOC after O: conlleval starts a new LOC chunk there.
    table = {ids["mary"]: 1, ids["john"]: 2, ids["##son"]: 0, ids["rome"]: 3, ids["berlin"]: 4, ids["peter"]: 1}
    info = LabelInfo(tuple(TAGS), "single_label")
    recipe = SimpleNamespace(data=SimpleNamespace(max_length=32))
    text = "Mary  Johnson visited Rome, Berlin and Peter."
    #       0         1         2         3         4
    #       0123456789012345678901234567890123456789012345
    out = TASKS.get("token-classification").predict(_TableModel(table, len(TAGS)), tok, [text, "Peter"], recipe, info)
    assert [(e["entity"], e["text"], e["start"], e["end"]) for e in out[0]["entities"]] == [
        ("PER", "Mary  Johnson", 0, 13), ("LOC", "Rome", 22, 26), ("LOC", "Berlin", 28, 34), ("PER", "Peter", 39, 44),
    ]
    assert all(e["score"] == pytest.approx(out[0]["entities"][0]["score"]) for e in out[0]["entities"])
    assert [(e["text"], e["start"], e["end"]) for e in out[1]["entities"]] == [("Peter", 0, 5)]


def test_group_entities_schemes() -> None:
    from hfadapt.tasks.token_classification import group_entities

    text = "a b c d"
    words = lambda *tags: [[2 * i, 2 * i + 1, t, 1.0] for i, t in enumerate(tags)]  # noqa: E731
    spans = lambda *tags: [(e["entity"], e["text"]) for e in group_entities(text, words(*tags))]  # noqa: E731
    assert spans("B-X", "I-X", "B-X", "I-Y") == [("X", "a b"), ("X", "c"), ("Y", "d")]
    assert spans("S-X", "B-X", "E-X", "S-X") == [("X", "a"), ("X", "b c"), ("X", "d")]  # IOBES
    assert spans("NN", "NN", "O", "VB") == [("NN", "a"), ("NN", "b"), ("VB", "d")]  # POS: one per word


# ---- broken data -----------------------------------------------------------------------------------
def test_tags_and_words_of_different_length(tmp_path, wordpiece_bert) -> None:
    rows = ner_rows(8, seed=0)
    rows[5]["ner_tags"] = rows[5]["ner_tags"][:-1]
    n = len(rows[5]["tokens"])
    recipe = recipe_for(tmp_path, wordpiece_bert, rows, ner_rows(4, seed=1), train={"max_steps": 1})
    with pytest.raises(HfadaptError, match=rf"^data.tags_column 'ner_tags', line 6 of {re.escape(str(tmp_path / 'train.jsonl'))}: {n - 1} tags for {n} words"):
        train(recipe)
    assert not (tmp_path / "run").exists()


def test_int_tag_out_of_range_names_row_and_word(tmp_path, wordpiece_bert) -> None:
    rows = [{"tokens": r["tokens"], "ner_tags": [TAGS.index(t) for t in r["ner_tags"]]} for r in ner_rows(8, seed=0)]
    bad = [dict(r) for r in rows[:4]]
    bad[2] = {"tokens": bad[2]["tokens"], "ner_tags": [0] * (len(bad[2]["tokens"]) - 1) + [7]}
    word = bad[2]["tokens"][-1]
    recipe = recipe_for(tmp_path, wordpiece_bert, rows, bad, data={"labels": TAGS}, train={"max_steps": 1})
    with pytest.raises(HfadaptError, match=rf"^data.tags_column 'ner_tags', line 3 of {re.escape(str(tmp_path / 'validation.jsonl'))}, word \d+ \('{word}'\): tag 7 out of range \[0, 4\]$"):
        train(recipe)


def test_unknown_tag_and_bad_cells(tmp_path, wordpiece_bert) -> None:
    rows = ner_rows(8, seed=0)
    val = ner_rows(4, seed=1)
    val[1]["ner_tags"][0] = "B-ORG"
    with pytest.raises(HfadaptError, match=rf"line 2 of {re.escape(str(tmp_path / 'a' / 'validation.jsonl'))}, word 0 \('\w+'\): unknown tag 'B-ORG'; known: B-LOC, B-PER, I-PER, O"):
        train(recipe_for(tmp_path / "a", wordpiece_bert, rows, val, train={"max_steps": 1}))
    rows[3]["tokens"] = "John visited Paris"
    with pytest.raises(HfadaptError, match=rf"^data.tokens_column 'tokens', line 4 of {re.escape(str(tmp_path / 'b' / 'train.jsonl'))}: expected a list of words, got 'John visited Paris'"):
        train(recipe_for(tmp_path / "b", wordpiece_bert, rows, ner_rows(4, seed=1), train={"max_steps": 1}))


def test_recipe_checks() -> None:
    base = {"task": "token-classification", "model": {"name_or_path": "x"}, "data": {"train_files": ["t.jsonl"]}}
    with pytest.raises(HfadaptError, match="eval.metrics: 'accuracy' does not fit token-classification; use seqeval"):
        Recipe.from_dict({**base, "eval": {"metrics": ["accuracy"]}})
    with pytest.raises(HfadaptError, match="eval.best_metric: 'f1_macro' is not computed"):
        Recipe.from_dict({**base, "eval": {"best_metric": "f1_macro"}})
    assert Recipe.from_dict({**base, "eval": {"best_metric": "f1"}}).eval.best_metric == "f1"


# ---- evaluation across processes -------------------------------------------------------------------
EVAL_SCRIPT = """
import json, sys
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from hfadapt import Recipe
from hfadapt.data.sources import load_raw
from hfadapt.data.grouping import eval_order
from hfadapt.modeling.models import load_base_model
from hfadapt.tasks import TASKS, EvalContext

recipe = Recipe.from_yaml(sys.argv[1])
task = TASKS.get(recipe.task)
accelerator = Accelerator(cpu=True)
tok = task.load_processor(recipe)
raw = load_raw(recipe, task)
info = task.label_info(raw.train, recipe)
ds = task.preprocess(raw.validation, "validation", tok, recipe, info, train=False)
torch.manual_seed(0)  # the same random head in every process and every run
model = load_base_model(recipe, task, info, tok)
order = eval_order(task, ds)  # longest first, as training evaluates: each process gets other rows
dl = DataLoader(ds, batch_size=int(sys.argv[2]), sampler=order, collate_fn=task.collator(tok))
model, dl = accelerator.prepare(model, dl)
results = task.evaluate(EvalContext(accelerator, recipe, tok, info, ds, "validation", ("seqeval",), order=tuple(order)), model, dl)
if accelerator.is_main_process:
    print("RESULT " + json.dumps(results))
"""


@pytest.mark.slow
def test_evaluation_counts_every_example_once_across_processes(tmp_path, wordpiece_bert) -> None:
    """16 sentences of different lengths, batches of 5: under 2 processes the batches of the two
    processes differ in length (pad_across_processes) and the last one is padded with repeated
    examples (gather_for_metrics drops them); rows are read longest first and put back in dataset
    order. Loss and scores must equal the 1-process ones, which
    in turn must equal the model's own loss and a hand count over one batch of all 16."""
    import subprocess
    import sys

    import torch

    from tests.test_distributed import _env, _free_port, _torchrun

    recipe = recipe_for(tmp_path, wordpiece_bert, ner_rows(16, seed=0), ner_rows(16, seed=1))
    (tmp_path / "ner.yaml").write_text(recipe.to_yaml())
    (tmp_path / "run_eval.py").write_text(EVAL_SCRIPT)
    root = str(Path(__file__).resolve().parent.parent)

    def run(name: str, prefix: list[str], batch: int) -> dict[str, float]:
        env = {**_env(tmp_path / f"cache-{name}"), "PYTHONPATH": root}
        cmd = prefix + [str(tmp_path / "run_eval.py"), str(tmp_path / "ner.yaml"), str(batch)]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{name}: {proc.stderr[-4000:]}"
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        assert len(lines) == 1, proc.stdout[-2000:]
        return json.loads(lines[0][len("RESULT "):])

    one = run("one", [sys.executable], 16)
    two = run("two", _torchrun() + ["--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                                     "--master_port", str(_free_port())], 5)
    assert one["samples"] == two["samples"] == 16
    assert sorted(one) == sorted(two)
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key

    # The 1-process numbers by hand: one batch of all 16, the model's own (token-mean) loss,
    # and tag accuracy over first sub-tokens, i.e. over every word.
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    info_names = sorted({t for r in ner_rows(16, seed=0) for t in r["ner_tags"]})
    tok = AutoTokenizer.from_pretrained(wordpiece_bert)
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(
        wordpiece_bert, num_labels=len(info_names), id2label=dict(enumerate(info_names)), label2id={n: i for i, n in enumerate(info_names)},
    ).eval()
    rows = ner_rows(16, seed=1)
    enc = tok([r["tokens"] for r in rows], is_split_into_words=True, padding=True, return_tensors="pt")
    labels = torch.full(enc["input_ids"].shape, -100)
    for b, r in enumerate(rows):
        seen = set()
        for t, w in enumerate(enc.word_ids(b)):
            if w is not None and w not in seen:
                seen.add(w)
                labels[b, t] = info_names.index(r["ner_tags"][w])
    with torch.no_grad():
        out = model(**enc, labels=labels)
    mask = labels != -100
    assert int(mask.sum()) == sum(len(r["tokens"]) for r in rows)
    assert one["loss"] == pytest.approx(out.loss.item(), rel=1e-5)
    right = int((out.logits.argmax(-1)[mask] == labels[mask]).sum())
    assert 0 < right < int(mask.sum()) and one["accuracy"] == pytest.approx(right / int(mask.sum()), abs=1e-12)


def test_length_sorted_evaluation_gives_dataset_order_results(tmp_path, wordpiece_bert, monkeypatch) -> None:
    """Sentences read longest first: the loss, the scores and the tag sequences given to seqeval, in
    their order, are those of dataset order."""
    import torch

    from hfadapt.data.sources import load_raw
    from hfadapt.modeling.models import load_base_model
    from hfadapt.tasks import TASKS
    from tests.sorted_eval import evaluate_sorted_and_plain

    recipe = recipe_for(tmp_path, wordpiece_bert, ner_rows(16, seed=0), ner_rows(16, seed=1))
    task = TASKS.get("token-classification")
    tok = task.load_processor(recipe)
    raw = load_raw(recipe, task)
    info = task.label_info(raw.train, recipe)
    ds = task.preprocess(raw.validation, "validation", tok, recipe, info, train=False)
    torch.manual_seed(0)  # a random head: predictions of every tag, so the order of the lists matters
    model = load_base_model(recipe, task, info, tok).eval()
    got = evaluate_sorted_and_plain(task, model, tok, info, ds, recipe, ["seqeval"], 5, tmp_path, monkeypatch)
    s, p = got["sorted"], got["plain"]
    assert s["results"] == pytest.approx(p["results"], rel=1e-6) and s["results"]["samples"] == 16
    assert s["metric_inputs"] == p["metric_inputs"] and len(s["metric_inputs"]) == 1
