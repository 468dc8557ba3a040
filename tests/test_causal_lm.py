"""causal-lm: data formats and loss masks, packing without cross-attention, perplexity, generation.

The model is a 2-layer GPT2LMHeadModel with random weights over a word-level tokenizer whose
chat template is simple enough to check renderings by hand:

    <system> ... <eos> <user> ... <eos> <assistant> ... <eos>
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from hfadapt import HfadaptError, Recipe, evaluate_run, predict, train
from hfadapt.cli import main
from tests.conftest import write_jsonl

SPECIAL = ["<pad>", "<eos>", "<unk>", "<system>", "<user>", "<assistant>"]
COLORS = ["red", "green", "blue", "yellow", "black", "white"]
WORDS = COLORS + "say be brief one two three four five six seven eight nine ten the a and is was".split()
VOCAB = SPECIAL + WORDS
TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} <eos> {% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)


def _tokenizer(chat_template: str | None) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
        additional_special_tokens=["<system>", "<user>", "<assistant>"], model_max_length=128,
    )
    if chat_template:
        tok.chat_template = chat_template
    return tok


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Tiny GPT-2 LM (no dropout) + word-level tokenizer with a chat template, saved like a Hub checkpoint."""
    from transformers import GPT2Config, GPT2LMHeadModel

    root = tmp_path_factory.mktemp("tiny-lm")
    config = GPT2Config(
        vocab_size=len(VOCAB), n_positions=128, n_embd=32, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.2,
        pad_token_id=0, bos_token_id=1, eos_token_id=1,
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(root)
    _tokenizer(TEMPLATE).save_pretrained(root)
    return str(root)


@pytest.fixture(scope="module")
def lm_without_template(tmp_path_factory: pytest.TempPathFactory, lm: str) -> str:
    import shutil

    root = tmp_path_factory.mktemp("tiny-lm-no-template")
    for f in Path(lm).iterdir():
        if f.name.endswith((".safetensors", "config.json")) and "tokenizer" not in f.name:
            shutil.copy(f, root / f.name)
    _tokenizer(None).save_pretrained(root)
    return str(root)


def lm_recipe(tmp_path: Path, model: str, data: dict, **sections: Any) -> Recipe:
    raw: dict[str, Any] = {
        "name": "lm", "task": "causal-lm",
        "model": {"name_or_path": model},
        "data": {"validation_split": None, "max_length": 64, **data},
        "adapter": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "train": {"max_steps": 1, "batch_size": 8, "learning_rate": 2e-2, "logging_steps": 1, "log_with": []},
        "generation": {"max_new_tokens": 4},
        "output": {"dir": str(tmp_path / "run")},
    }
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    return Recipe.from_dict(raw)


def ids(*words: str) -> list[int]:
    return [VOCAB.index(w) for w in words]


def preprocess(recipe: Recipe, rows: list[dict], split: str = "train") -> Any:
    import datasets

    from hfadapt.tasks import TASKS

    task = TASKS.get("causal-lm")
    tok = task.load_processor(recipe)
    return task.preprocess(datasets.Dataset.from_list(rows), split, tok, recipe, None, train=split == "train"), task, tok


def chat(user: str, answer: str | None) -> dict:
    msgs = [{"role": "user", "content": user}]
    if answer is not None:
        msgs.append({"role": "assistant", "content": answer})
    return {"messages": msgs}


# ---- data formats and loss masks -----------------------------------------------------------------
def test_prompt_completion_masks_exactly_the_prompt(tmp_path, lm):
    rows = [{"prompt": "say red", "completion": "red red"}, {"prompt": "say one two", "completion": "three"}]
    ds, task, tok = preprocess(lm_recipe(tmp_path, lm, {"train_files": ["unused.jsonl"]}), rows)
    assert ds["input_ids"] == [ids("say", "red", "red", "red", "<eos>"), ids("say", "one", "two", "three", "<eos>")]
    assert ds["labels"] == [[-100, -100] + ids("red", "red", "<eos>"), [-100, -100, -100] + ids("three", "<eos>")]

    batch = task.collator(tok)([ds[0], ds[1]])
    assert batch["input_ids"].tolist() == [ids("say", "red", "red", "red", "<eos>"), ids("say", "one", "two", "three", "<eos>")]
    short = [{"input_ids": ids("say", "red"), "labels": [-100, ids("red")[0]]}, ds[1]]
    batch = task.collator(tok)(short)
    assert batch["input_ids"][0].tolist() == ids("say", "red") + [0, 0, 0]  # right-padded with <pad>
    assert batch["labels"][0].tolist() == [-100, ids("red")[0], -100, -100, -100]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]

    full, _, _ = preprocess(lm_recipe(tmp_path, lm, {"train_files": ["unused.jsonl"], "completion_only_loss": False}), rows)
    assert full["labels"] == full["input_ids"]


def test_chat_renders_template_and_trains_only_assistant_turns(tmp_path, lm):
    conversation = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "say red"},
        {"role": "assistant", "content": "red"},
        {"role": "user", "content": "say blue"},
        {"role": "assistant", "content": "blue blue"},
    ]
    ds, _, _ = preprocess(lm_recipe(tmp_path, lm, {"train_files": ["unused.jsonl"]}), [{"messages": conversation}])
    rendered = "<system> be brief <eos> <user> say red <eos> <assistant> red <eos> <user> say blue <eos> <assistant> blue blue <eos>"
    assert ds["input_ids"][0] == ids(*rendered.split())
    trained = [i for i, label in enumerate(ds["labels"][0]) if label != -100]
    assert trained == [9, 10, 16, 17, 18]  # "red <eos>" and "blue blue <eos>": the assistant contents and their end-of-turn
    assert [ds["labels"][0][i] for i in trained] == ids("red", "<eos>", "blue", "blue", "<eos>")

    full, _, _ = preprocess(lm_recipe(tmp_path, lm, {"train_files": ["unused.jsonl"], "completion_only_loss": False}), [{"messages": conversation}])
    assert full["labels"][0] == full["input_ids"][0]


CHATML = (  # SmolLM2-Instruct's template: a default system turn, ChatML markers, newlines inside and after turns
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_assistant_mask_with_byte_level_bpe_and_chatml():
    """Byte-level BPE merges across the newlines around turns: labels follow character offsets, not words."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from hfadapt.tasks.causal_lm import encode_chat

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(["hello there how are you\n I am fine thanks, assistant user system helpful"] * 50, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = CHATML
    messages = [
        {"role": "user", "content": "hello there"}, {"role": "assistant", "content": "I am fine, thanks"},
        {"role": "user", "content": "how are you"}, {"role": "assistant", "content": "fine"},
    ]
    ids, labels = encode_chat(tok, messages, True, "messages", "train", 0)
    assert tok.decode(ids) == tok.apply_chat_template(messages, tokenize=False)
    segments, current = [], []
    for token, label in zip(ids, labels):
        if label != -100:
            assert label == token
            current.append(token)
        elif current:
            segments, current = segments + [tok.decode(current)], []
    segments += [tok.decode(current)] if current else []
    assert segments == ["I am fine, thanks<|im_end|>\n", "fine<|im_end|>\n"]


def test_auto_format_picks_by_columns(tmp_path, lm):
    recipe = lm_recipe(tmp_path, lm, {"train_files": ["unused.jsonl"]})
    text, _, _ = preprocess(recipe, [{"text": "one two three"}])
    assert text["labels"][0] == text["input_ids"][0] == ids("one", "two", "three", "<eos>")
    with pytest.raises(HfadaptError, match=r"data.lm_format: the train split has none of data.messages_column 'messages'.*columns: body"):
        preprocess(recipe, [{"body": "one two"}])


def test_chat_row_without_assistant_turn_names_column_and_row(tmp_path, lm):
    rows = [chat("say red", "red"), chat("say blue", "blue"), chat("say green", None), chat("say one", "one")]
    recipe = lm_recipe(tmp_path, lm, {"train_files": [str(write_jsonl(tmp_path / "chat.jsonl", rows))]})
    with pytest.raises(HfadaptError, match=rf"^data.messages_column 'messages', line 3 of {re.escape(str(tmp_path / 'chat.jsonl'))}: no assistant turn to learn from \(roles: user\)$"):
        train(recipe)
    assert not (tmp_path / "run").exists()


def test_malformed_messages_name_row(tmp_path, lm):
    rows = [chat("say red", "red"), {"messages": [{"role": "user", "content": "say red"}, {"role": "assistant", "content": None}]}]
    with pytest.raises(HfadaptError, match=r"data.messages_column 'messages', train row 1: expected messages with a text 'role' and 'content'"):
        preprocess(lm_recipe(tmp_path, lm, {"train_files": ["unused.jsonl"]}), rows)


def test_too_long_without_truncation_names_row_and_length(tmp_path, lm):
    rows = [{"text": "one two"}, {"text": " ".join(["one"] * 11)}, {"text": "three"}]
    path = str(write_jsonl(tmp_path / "text.jsonl", rows))
    recipe = lm_recipe(tmp_path, lm, {"train_files": [path], "max_length": 8, "truncation": False})
    with pytest.raises(HfadaptError, match=rf"^data.max_length 8, line 2 of {re.escape(path)}: the example has 12 tokens; raise data.max_length or set data.truncation=true$"):
        train(recipe)
    ds, _, _ = preprocess(lm_recipe(tmp_path, lm, {"train_files": [path], "max_length": 8}), rows)
    assert [len(x) for x in ds["input_ids"]] == [3, 8, 2]  # truncation=true (the default) cuts instead


def test_chat_without_template_needs_data_chat_template(tmp_path, lm_without_template):
    rows = [chat("say red", "red red"), chat("say blue", "blue blue")]
    path = str(write_jsonl(tmp_path / "chat.jsonl", rows))
    with pytest.raises(HfadaptError, match=r"^data.chat_template: the tokenizer of '.*' has no chat template .*data.messages_column 'messages'"):
        train(lm_recipe(tmp_path, lm_without_template, {"train_files": [path]}))
    recipe = lm_recipe(tmp_path, lm_without_template, {"train_files": [path], "chat_template": TEMPLATE})
    result = train(recipe)
    saved = json.loads((result.output_dir / "adapter" / "tokenizer_config.json").read_text())
    assert saved.get("chat_template") == TEMPLATE or (result.output_dir / "adapter" / "chat_template.jinja").read_text() == TEMPLATE
    assert saved["hfadapt_lm_format"] == "chat"


def test_missing_column_names_field(tmp_path, lm):
    path = str(write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "say red", "answer": "red"}]))
    recipe = lm_recipe(tmp_path, lm, {"train_files": [path], "lm_format": "prompt_completion"})
    with pytest.raises(HfadaptError, match=r"^data.completion_column: column 'completion' not in the train split"):
        train(recipe)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"data": {"problem_type": "multi_label"}}, "data.problem_type: a field of audio-classification, image-classification and text-classification, not of causal-lm"),
        ({"data": {"augment": True}}, "data.augment: a field of image-classification, not of causal-lm"),
        ({"eval": {"metrics": ["accuracy"]}}, "eval.metrics: causal-lm computes loss and perplexity itself"),
        ({"data": {"packing": True}, "adapter": {"method": "prompt"}}, "data.packing: prompt tuning prepends virtual tokens"),
    ],
)
def test_check_rejects_fields_that_do_not_apply(tmp_path, change, message):
    raw = {"task": "causal-lm", "model": {"name_or_path": "gpt2"}, "data": {"train_files": ["x.jsonl"]}}
    for key, value in change.items():
        raw.setdefault(key, {}).update(value)
    with pytest.raises(HfadaptError, match=message):
        Recipe.from_dict(raw)
    ok = Recipe.from_dict({**raw, "eval": {"best_metric": "perplexity"}, "adapter": {}, "data": {"train_files": ["x.jsonl"]}})
    assert ok.eval.best_metric == "perplexity"  # lower is better by default (loop.fit)


# ---- packing -------------------------------------------------------------------------------------
def _varied_texts(n: int, seed: int, longest: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"text": " ".join(rng.choice(WORDS) for _ in range(rng.choice([1, 2, 3, 5, 8, 13, 21, longest])))} for i in range(n)]


def test_packed_examples_do_not_attend_to_each_other(tmp_path, lm):
    from transformers import AutoModelForCausalLM

    rows = _varied_texts(12, seed=1, longest=30)
    recipe = lm_recipe(tmp_path, lm, {"train_files": ["unused.jsonl"], "packing": True, "max_length": 48})
    packed, task, tok = preprocess(recipe, rows)
    singles, _, _ = preprocess(lm_recipe(tmp_path, lm, {"train_files": ["unused.jsonl"], "max_length": 48}), rows)
    assert len(packed) < len(rows) and any(p.count(0) > 1 for p in packed["position_ids"])  # several examples per block
    assert sorted(sum(packed["input_ids"], [])) == sorted(sum(singles["input_ids"], []))  # every token once

    model = AutoModelForCausalLM.from_pretrained(lm).eval()
    batch = task.collator(tok)([packed[i] for i in range(len(packed))])
    assert "attention_mask" not in batch and batch["use_cache"] is False
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        packed_loss = model(**batch).loss
        alone = {tuple(x): model(input_ids=torch.tensor([x])).logits[0] for x in singles["input_ids"]}
    seen = 0
    for r, pos in enumerate(packed["position_ids"]):
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
        for s, e in zip(starts, starts[1:]):
            example = tuple(packed["input_ids"][r][s:e])
            torch.testing.assert_close(logits[r, s:e], alone[example], rtol=1e-4, atol=1e-5)
            seen += 1
    assert seen == len(rows)

    # The packed loss is the mean over the same trained tokens as the examples run one by one.
    total = count = 0
    for x, y in zip(singles["input_ids"], singles["labels"]):
        lg, lb = alone[tuple(x)][:-1], torch.tensor(y[1:])
        total += torch.nn.functional.cross_entropy(lg, lb, reduction="sum").item()
        count += len(y) - 1
    assert packed_loss.item() == pytest.approx(total / count, rel=1e-5)


def test_packing_fills_batches(tmp_path, lm, capsys):
    from hfadapt.data.packing import padded_share

    rows = _varied_texts(300, seed=2, longest=60)
    recipe = lm_recipe(tmp_path, lm, {"train_files": ["unused.jsonl"], "packing": True, "max_length": 64})
    packed, task, tok = preprocess(recipe, rows)
    collate = task.collator(tok)
    real = padded = 0
    for start in range(0, len(packed), 8):
        batch = collate([packed[i] for i in range(start, min(start + 8, len(packed)))])
        padded += batch["input_ids"].numel()
        real += sum(len(packed[i]["input_ids"]) for i in range(start, min(start + 8, len(packed))))
    unpacked, _, _ = preprocess(lm_recipe(tmp_path, lm, {"train_files": ["unused.jsonl"], "max_length": 64}), rows)
    assert real == sum(len(x) for x in unpacked["input_ids"])
    assert real / padded > 0.95
    assert padded_share([len(x) for x in unpacked["input_ids"]], 8) < 0.7  # what padding alone would give
    assert re.search(r"packed 300 examples into \d+ blocks of <= 64 tokens; non-pad tokens 9\d\.\d% per batch of 8 \(padded: \d+\.\d%\)", capsys.readouterr().out)


# ---- training, perplexity, generation ---------------------------------------------------------------
def _hand_loss(model: Any, sequences: list[list[int]], labels: list[list[int]]) -> tuple[float, int]:
    """Summed token loss and trained-token count, every example run alone (no padding)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in zip(sequences, labels):
            logits = model(input_ids=torch.tensor([x])).logits[0, :-1].double()
            target = torch.tensor(y[1:])
            keep = target != -100
            total += torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum").item()
            count += int(keep.sum())
    return total, count


def _reload_with_peft(run_dir: Path) -> tuple[Any, Any]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = run_dir / "adapter"
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(cfg["base_model_name_or_path"])
    return PeftModel.from_pretrained(base, str(adapter)).eval(), AutoTokenizer.from_pretrained(adapter)


EVAL_TEXTS = ["one two three four", "the red", "five six seven eight nine ten one", "a", "white black and blue is the"]


def test_perplexity_is_exp_of_mean_token_loss(tmp_path, lm):
    train_rows = [{"text": " ".join(WORDS[i % 7 : i % 7 + 3 + i % 5])} for i in range(24)]
    recipe = lm_recipe(
        tmp_path, lm,
        {"train_files": [str(write_jsonl(tmp_path / "train.jsonl", train_rows))],
         "validation_files": [str(write_jsonl(tmp_path / "val.jsonl", [{"text": t} for t in EVAL_TEXTS]))],
         "validation_split": "validation"},
        train={"max_steps": 2, "eval_batch_size": 2},  # 5 examples: the last batch holds one, padding differs per batch
    )
    result = train(recipe)
    model, tok = _reload_with_peft(result.output_dir)
    seqs = [tok(t)["input_ids"] + [tok.eos_token_id] for t in EVAL_TEXTS]
    total, count = _hand_loss(model, seqs, seqs)
    m = result.metrics
    assert m["eval/tokens"] == count == sum(len(s) - 1 for s in seqs)
    assert m["eval/samples"] == 5
    assert m["eval/loss"] == pytest.approx(total / count, rel=1e-5)
    assert m["eval/perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    again = evaluate_run(result.output_dir)
    assert again["validation/perplexity"] == pytest.approx(m["eval/perplexity"], rel=1e-5)


def _color_chats(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        c = COLORS[i % len(COLORS)]
        filler = " ".join(rng.choice(["the", "a", "and"]) for _ in range(rng.randint(0, 6)))
        rows.append(chat(f"say {c} {filler}".strip(), f"{c} {c}"))
    return rows


def test_chat_sft_with_packing_trains_generates_and_reloads_with_peft(tmp_path, lm, capsys):
    recipe = lm_recipe(
        tmp_path, lm,
        {"train_files": [str(write_jsonl(tmp_path / "train.jsonl", _color_chats(48, 0)))],
         "validation_files": [str(write_jsonl(tmp_path / "val.jsonl", _color_chats(6, 1)))],
         "validation_split": "validation", "packing": True, "max_length": 64},
        train={"max_steps": 24, "batch_size": 4, "eval_steps": 12},
        generation={"prompts": ["say red", "say blue the"], "max_new_tokens": 3},
    )
    result = train(recipe)
    losses = result.losses
    assert sum(losses[-4:]) / 4 < 0.5 * sum(losses[:4]) / 4, losses
    assert result.metrics["eval/perplexity"] == pytest.approx(math.exp(result.metrics["eval/loss"]))

    cfg = json.loads((result.output_dir / "adapter" / "adapter_config.json").read_text())
    assert cfg["task_type"] == "CAUSAL_LM" and set(cfg["target_modules"]) == {"c_attn"}  # peft's default for GPT-2 (Conv1D)

    lines = [json.loads(x) for x in (result.output_dir / "generations.jsonl").read_text().splitlines()]
    assert [(x["evaluation"], x["prompt"]) for x in lines] == [(1, "say red"), (1, "say blue the"), (2, "say red"), (2, "say blue the"), (3, "say red"), (3, "say blue the")]

    prompts = ["say red", "say green a a", "say blue the"]
    preds = predict(result.output_dir, prompts)
    assert [p["input"] for p in preds] == prompts
    model, tok = _reload_with_peft(result.output_dir)
    for prompt, pred in zip(prompts, preds):
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        x = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        assert x[0].tolist()[-1] == VOCAB.index("<assistant>")
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=3, do_sample=False, pad_token_id=0)
        assert pred["generated_text"] == tok.decode(out[0, x.shape[1]:], skip_special_tokens=True).strip()

    # Generation settings from the command line override the recipe's.
    assert main(["predict", str(result.output_dir), "say red", "--max-new-tokens", "1"]) == 0
    one = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(one["generated_text"].split()) <= 1 and preds[0]["generated_text"].startswith(one["generated_text"])
    with pytest.raises(HfadaptError, match="generation.top_p"):
        predict(result.output_dir, ["say red"], generation={"top_p": 2.0})
    assert preds[0]["generated_text"].split()[0] == "red", preds  # it learned the task


@pytest.mark.slow
def test_two_processes_count_every_eval_token_once(tmp_path, lm):
    """torchrun, 2 CPU processes, 5 eval examples in batches of 2: Accelerate repeats examples to even out the last
    batches; the perplexity must still equal the hand-computed one over the 5 examples."""
    import socket

    import yaml

    train_rows = [{"text": " ".join(WORDS[i % 9 : i % 9 + 2 + i % 4])} for i in range(16)]
    recipe = {
        "name": "lm2", "task": "causal-lm", "model": {"name_or_path": lm},
        "data": {"train_files": [str(write_jsonl(tmp_path / "train.jsonl", train_rows))],
                 "validation_files": [str(write_jsonl(tmp_path / "val.jsonl", [{"text": t} for t in EVAL_TEXTS]))],
                 "max_length": 32},
        "adapter": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"max_steps": 1, "batch_size": 4, "eval_batch_size": 2, "log_with": []},
        "output": {"dir": str(tmp_path / "run")},
    }
    path = tmp_path / "lm2.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", HF_DATASETS_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "hfadapt", "train", str(path)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    assert "on 2 process(es)" in proc.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    model, tok = _reload_with_peft(tmp_path / "run")
    seqs = [tok(t)["input_ids"] + [tok.eos_token_id] for t in EVAL_TEXTS]
    total, count = _hand_loss(model, seqs, seqs)
    assert metrics["eval/samples"] == 5 and metrics["eval/tokens"] == count
    assert metrics["eval/perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)


def test_qlora_needs_a_gpu(tmp_path, lm):
    import torch

    if torch.cuda.is_available():  # pragma: no cover - CI has no GPU; there the recipe would load in 4 bits
        return
    recipe = lm_recipe(tmp_path, lm, {"train_files": [str(write_jsonl(tmp_path / "t.jsonl", [{"text": "say red"}] * 8))]})
    recipe.model.quantization = "4bit"
    with pytest.raises(HfadaptError, match="model.quantization: 4bit \\(QLoRA\\) needs a CUDA GPU"):
        train(recipe)


def test_length_sorted_evaluation_gives_dataset_order_loss_and_not_for_packed_blocks(tmp_path, lm, monkeypatch):
    """Padded evaluation reads rows longest first with the loss, token and example counts of dataset
    order; packed blocks (all max_length) keep dataset order."""
    from transformers import AutoModelForCausalLM

    from hfadapt.data.grouping import eval_order
    from tests.sorted_eval import evaluate_sorted_and_plain

    recipe = lm_recipe(tmp_path, lm, {"train_files": [str(write_jsonl(tmp_path / "t.jsonl", [{"text": "a"}]))]})
    rows = _varied_texts(13, seed=3, longest=30)
    ds, task, tok = preprocess(recipe, rows, split="validation")
    model = AutoModelForCausalLM.from_pretrained(lm).eval()
    got = evaluate_sorted_and_plain(task, model, tok, None, ds, recipe, [], 4, tmp_path, monkeypatch)
    s, p = got["sorted"], got["plain"]
    assert s["results"] == pytest.approx(p["results"], rel=1e-9) and s["results"]["samples"] == 13
    assert s["results"]["tokens"] == p["results"]["tokens"]
    packed = lm_recipe(tmp_path, lm, {"train_files": [str(write_jsonl(tmp_path / "t.jsonl", [{"text": "a"}]))], "packing": True})
    assert eval_order(task, preprocess(packed, rows, split="validation")[0]) is None
