"""train.group_by_length: similar lengths per global batch, the same examples, exact resume."""

from __future__ import annotations

import random
import statistics

import pytest

from hfadapt.data.grouping import grouped_order


@pytest.fixture
def varied_csv(tmp_path):
    """The sentiment rows with 0..10 extra filler words: lengths 5..16 tokens (max_length 16)."""
    from tests.conftest import FILLERS, sentiment_rows, write_csv

    rng = random.Random(5)
    rows = [{**r, "text": r["text"] + "".join(" " + rng.choice(FILLERS) for _ in range(rng.randint(0, 10)))} for r in sentiment_rows(64)]
    return str(write_csv(tmp_path / "varied.csv", rows))


def _spread(order, lengths, batch):
    """Mean (max - min) length within each batch: what padding costs."""
    chunks = [order[i:i + batch] for i in range(0, len(order), batch)]
    return statistics.mean(max(lengths[i] for i in c) - min(lengths[i] for i in c) for c in chunks)


@pytest.mark.parametrize("n,batch", [(1000, 8), (1003, 8), (37, 8), (5, 8), (400, 1)])
def test_grouped_order_is_a_permutation_and_pure(n, batch):
    rng = random.Random(0)
    lengths = [rng.randint(8, 256) for _ in range(n)]
    a = grouped_order(lengths, batch, seed=3, epoch=1)
    assert sorted(a) == list(range(n))  # the same examples every epoch, each once
    assert a == grouped_order(lengths, batch, seed=3, epoch=1)  # a pure function of (seed, epoch)
    assert a != grouped_order(lengths, batch, seed=3, epoch=2) or n < 10


def test_grouped_batches_are_tighter_than_random_and_longest_first():
    import torch

    rng = random.Random(1)
    lengths = [rng.randint(8, 256) for _ in range(3200)]
    grouped = grouped_order(lengths, 32, seed=42, epoch=0)
    plain = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(42)).tolist()
    assert _spread(grouped, lengths, 32) < _spread(plain, lengths, 32) / 5
    assert max(lengths[i] for i in grouped[:32]) == max(lengths)
    # batches come in a shuffled order, not a length staircase
    maxes = [max(lengths[i] for i in grouped[k:k + 32]) for k in range(0, 3200, 32)]
    assert maxes[1:] != sorted(maxes[1:], reverse=True)


def test_global_batch_units_keep_two_process_equality():
    """Chunks of the global batch are the same sets whichever way they are split across processes."""
    rng = random.Random(2)
    lengths = [rng.randint(1, 50) for _ in range(96)]
    order = grouped_order(lengths, 8, seed=7, epoch=0)
    one_process = [set(order[i:i + 8]) for i in range(0, 96, 8)]
    per_process_batches = [order[i:i + 4] for i in range(0, 96, 4)]  # what accelerate shards, batch 4
    two_process = [set(per_process_batches[k]) | set(per_process_batches[k + 1]) for k in range(0, 24, 2)]
    assert one_process == two_process


def test_incomplete_last_batch_stays_last():
    lengths = list(range(1, 21))  # 20 rows, global batch 8: 8, 8, 4
    order = grouped_order(lengths, 8, seed=0, epoch=0)
    tail = order[16:]
    assert len(tail) == 4 and sorted(order) == list(range(20))


def test_resume_with_grouping_reproduces_uninterrupted_run(make_recipe, tmp_path, varied_csv):
    from tests.test_training import _adapter_weights
    import torch

    from hfadapt import train

    common = {"max_steps": 9, "save_steps": 3, "gradient_accumulation_steps": 2, "group_by_length": True}
    data = {"train_files": [varied_csv]}
    full = train(make_recipe(train=common, data=data, adapter={"dropout": 0.1}, output={"dir": str(tmp_path / "full")}))

    class Crash(Exception):
        pass

    def crash_at_step_7(state):
        if state.global_step == 7:
            raise Crash()

    interrupted = make_recipe(train=common, data=data, adapter={"dropout": 0.1}, output={"dir": str(tmp_path / "resumed")})
    with pytest.raises(Crash):
        train(interrupted, callbacks=[crash_at_step_7])
    resumed = train(interrupted, resume=True)
    assert resumed.losses == full.losses
    a, b = _adapter_weights(full.output_dir), _adapter_weights(resumed.output_dir)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_group_by_length_refused_where_rows_have_no_tokens():
    from types import SimpleNamespace

    from hfadapt.core.errors import HfadaptError
    from hfadapt.data.grouping import wants_grouping

    recipe = SimpleNamespace(train=SimpleNamespace(group_by_length=True), data=SimpleNamespace(streaming=False))
    task = SimpleNamespace(name="image-classification", modality="image", pads_token_rows=False)
    with pytest.raises(HfadaptError, match="group_by_length"):
        wants_grouping(recipe, task, SimpleNamespace(column_names=["pixel_values", "labels"]))
    recipe.train.group_by_length = None
    assert wants_grouping(recipe, task, SimpleNamespace(column_names=["pixel_values"]))[0] is False
    text = SimpleNamespace(name="text-classification", modality="text", pads_token_rows=False)
    assert wants_grouping(recipe, text, SimpleNamespace(column_names=["input_ids", "labels"]))[0] is True
    vlm = SimpleNamespace(name="image-text-to-text", modality="image", pads_token_rows=True)  # text plus image tokens
    assert wants_grouping(recipe, vlm, SimpleNamespace(column_names=["input_ids", "labels", "images"]))[0] is True
    recipe.data.packing = True
    assert wants_grouping(recipe, text, SimpleNamespace(column_names=["input_ids", "labels"]))[0] is False


def test_length_sorted_evaluation_gives_dataset_order_results(make_recipe, tmp_path, monkeypatch, varied_csv):
    """Evaluation reads rows longest first; metrics and the predictions file are those of dataset order."""
    import json

    from hfadapt import train
    from hfadapt.tasks import TASKS

    task = TASKS.get("text-classification")
    from hfadapt.data.grouping import eval_order

    common, data = {"max_steps": 2, "log_with": [], "eval_batch_size": 5}, {"train_files": [varied_csv]}
    calls = []
    monkeypatch.setattr("hfadapt.data.grouping.eval_order", lambda t, ds: calls.append(eval_order(t, ds)) or calls[-1])
    sorted_run = train(make_recipe(train=common, data=data, output={"dir": str(tmp_path / "sorted")}))
    assert calls and calls[0] != sorted(calls[0])  # the loader really read another order
    monkeypatch.setattr(type(task), "restores_eval_order", False)
    plain_run = train(make_recipe(train=common, data=data, output={"dir": str(tmp_path / "plain")}))
    a = {k: v for k, v in sorted_run.metrics.items() if k.startswith("eval/")}
    b = {k: v for k, v in plain_run.metrics.items() if k.startswith("eval/")}
    assert a == pytest.approx(b, rel=1e-5)
    rows = lambda run: [json.loads(x) for x in (run.output_dir / "eval_predictions.jsonl").read_text().splitlines()]  # noqa: E731
    ra, rb = rows(sorted_run), rows(plain_run)
    assert [(r["index"], r["label"], r["pred"], r["text"]) for r in ra] == [(r["index"], r["label"], r["pred"], r["text"]) for r in rb]
    assert [r["confidence"] for r in ra] == pytest.approx([r["confidence"] for r in rb], rel=1e-4)


def test_eval_order_is_longest_first_only_where_restored():
    from hfadapt.data.grouping import eval_order
    from hfadapt.tasks.base import Task

    class DS:
        column_names = ["input_ids", "labels"]
        _indices = None

        def __getitem__(self, key):
            return [[1] * n for n in (3, 9, 1, 9, 5)]

    class Restores(Task):
        restores_eval_order = True

    assert eval_order(Restores(), DS()) == [1, 3, 4, 0, 2]
    assert eval_order(Task(), DS()) is None  # the contract's default: dataset order


def test_in_input_order_puts_lists_and_tensors_back():
    import torch

    from hfadapt.data.grouping import in_input_order, longest_first

    order = longest_first([2, 7, 1, 7, 4])
    assert order == [1, 3, 4, 0, 2]  # ties keep input order
    read = [f"row{i}" for i in order]
    assert in_input_order(order, read) == ["row0", "row1", "row2", "row3", "row4"]
    assert in_input_order(order, torch.tensor(order) * 10).tolist() == [0, 10, 20, 30, 40]
    assert in_input_order(None, read) is read
    with pytest.raises(ValueError, match="4 results for 5 rows"):
        in_input_order(order, read[:4])
