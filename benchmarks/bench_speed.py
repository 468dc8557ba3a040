"""hfadapt against its peers on the same work: defaults, compile, a hand-written loop, HF Trainer.

Run by hand (not a test):

    python benchmarks/bench_speed.py [--rows 3200] [--reps 3] [--hidden 128] [--layers 4] [--only hfadapt,hand-written]

Every variant trains the same randomly initialised BERT-style model (bench_overhead.py's, hidden x
layers), LoRA r=8 / alpha 16 / dropout 0.05 on query/value with the classifier trained fully, AdamW,
linear schedule, gradient clipping 1.0, one epoch over the same rows, batch --batch-size, on the CPU
of this process, with each peer's DEFAULT settings otherwise:

  * hfadapt               train() with its defaults (train.group_by_length on for text: length-grouped batches)
  * hfadapt-ungrouped     the same with train.group_by_length=false (the order a plain shuffle gives)
  * hfadapt-compile       defaults + train.compile=true
  * hand-written          a minimal Accelerate + PEFT loop, shuffled DataLoader, DataCollatorWithPadding
  * hf-trainer            transformers.Trainer + PEFT, TrainingArguments defaults (no length grouping)

Two data sets, both generated (made-up words, one token each, max_length 258 with [CLS]/[SEP]):
  * skewed:  lengths 8..256 tokens, most short, a long tail (where padding costs and grouping helps)
  * uniform: lengths 60..64 tokens (where grouping has nothing to gain and must not hurt)

Timing per run: `total` = the whole training call (data, model, loop, save); `loop` = wall time from
the end of step 1 to the end of the last step. Variants alternate (the order reversed every other
rep); an untimed warm-up of each comes first (imports, datasets caches). Reported: medians, and the
paired median ratio of each variant to the hand-written loop measured in the same rep.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import bench_overhead as bo  # benchmarks run as scripts from this folder
from _common import in_temp_root, machine_load, quiet

SEED = 42
LR = 5e-4
LORA = bo.LORA
MAX_LENGTH = 258  # 256 words + [CLS] + [SEP]


def build_data(root: Path, vocab: list[str], rows: int, kind: str, rng: random.Random) -> Path:
    words = vocab[5:]
    cues = {"negative": words[:40], "positive": words[40:80]}
    filler = words[80:]
    root.mkdir(exist_ok=True)
    path = root / f"{kind}.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        for i in range(rows):
            label = "positive" if i % 2 else "negative"
            n = 6 + int(248 * rng.random() ** 3) if kind == "skewed" else rng.randint(58, 62)  # words; +2 special tokens
            text = [rng.choice(filler) for _ in range(n)]
            for _ in range(max(1, n // 10)):
                text[rng.randrange(n)] = rng.choice(cues[label])
            w.writerow({"text": " ".join(text), "label": label})
    return path


def _marks(steps: int) -> tuple[dict[int, float], Callable[[int], None]]:
    marks: dict[int, float] = {}

    def mark(step: int) -> None:
        if step in (1, steps):
            marks[step] = time.perf_counter()

    return marks, mark


# ---- hfadapt ------------------------------------------------------------------------------------------
def run_hfadapt(model_dir: Path, data: Path, out: Path, steps: int, batch: int, extra: dict | None = None) -> dict[str, Any]:
    from hfadapt import Recipe, train

    recipe = Recipe.from_dict({
        "name": "bench",
        "task": "text-classification",
        "model": {"name_or_path": str(model_dir)},
        "data": {"train_files": [str(data)], "validation_split": None, "max_length": MAX_LENGTH},
        "adapter": {"method": "lora", "r": LORA["r"], "alpha": LORA["alpha"], "dropout": LORA["dropout"],
                    "target_modules": LORA["targets"]},
        "train": {"epochs": 1, "batch_size": batch, "learning_rate": LR, "seed": SEED, "log_with": [], **(extra or {})},
        "output": {"dir": str(out)},
    })
    marks, mark = _marks(steps)
    t0 = time.perf_counter()
    result = train(recipe, callbacks=[lambda s: mark(s.global_step)])
    total = time.perf_counter() - t0
    assert result.state.global_step == steps, (result.state.global_step, steps)
    return {"total": total, "loop": marks[steps] - marks[1], "loss": statistics.mean(result.losses[-10:]),
            "compile_s": result.metrics.get("perf/compile_s")}


# ---- a minimal hand-written Accelerate + PEFT loop --------------------------------------------------------
def _tokenized(model_dir: Path, data: Path) -> tuple[Any, Any, dict[str, int]]:
    import datasets
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    raw = datasets.load_dataset("csv", data_files={"train": [str(data)]})["train"]
    label2id = {n: i for i, n in enumerate(sorted(set(raw["label"])))}

    def encode(b: dict) -> dict:
        enc = tok(b["text"], truncation=True, max_length=MAX_LENGTH)
        enc["labels"] = [label2id[v] for v in b["label"]]
        return dict(enc)

    return tok, raw.map(encode, batched=True, remove_columns=raw.column_names), label2id


def _peft_model(model_dir: Path, label2id: dict[str, int]) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(label2id), id2label={i: n for n, i in label2id.items()}, label2id=label2id,
    )
    return get_peft_model(model, LoraConfig(
        task_type="SEQ_CLS", r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
        target_modules=LORA["targets"], modules_to_save=["classifier"],
    ))


def run_hand(model_dir: Path, data: Path, out: Path, steps: int, batch: int) -> dict[str, Any]:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding, get_scheduler

    t0 = time.perf_counter()
    accelerator = Accelerator()
    set_seed(SEED)
    tok, ds, label2id = _tokenized(model_dir, data)
    loader = DataLoader(ds, batch_size=batch, shuffle=True, collate_fn=DataCollatorWithPadding(tok),
                        generator=torch.Generator().manual_seed(SEED))
    model = _peft_model(model_dir, label2id)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=len(loader))
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    model.train()
    marks, mark = _marks(steps)
    losses = []
    for step, b in enumerate(loader, 1):
        loss = model(**b).loss
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        mark(step)
    accelerator.unwrap_model(model).save_pretrained(out / "adapter")
    assert len(losses) == steps, (len(losses), steps)
    return {"total": time.perf_counter() - t0, "loop": marks[steps] - marks[1], "loss": statistics.mean(losses[-10:])}


# ---- HF Trainer + PEFT, default TrainingArguments ---------------------------------------------------------
def run_trainer(model_dir: Path, data: Path, out: Path, steps: int, batch: int) -> dict[str, Any]:
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    t0 = time.perf_counter()
    tok, ds, label2id = _tokenized(model_dir, data)
    model = _peft_model(model_dir, label2id)
    marks, mark = _marks(steps)

    class Marks(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            mark(state.global_step)

    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=batch, num_train_epochs=1, learning_rate=LR, seed=SEED,
        report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tok), callbacks=[Marks()])
    result = trainer.train()
    trainer.model.save_pretrained(out / "adapter")
    assert trainer.state.global_step == steps, (trainer.state.global_step, steps)
    return {"total": time.perf_counter() - t0, "loop": marks[steps] - marks[1], "loss": result.training_loss}


VARIANTS: dict[str, Callable[..., dict[str, Any]]] = {
    "hfadapt": run_hfadapt,
    "hfadapt-ungrouped": lambda *a: run_hfadapt(*a, extra={"group_by_length": False}),
    "hfadapt-compile": lambda *a: run_hfadapt(*a, extra={"compile": True}),
    "hand-written": run_hand,
    "hf-trainer": run_trainer,
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=3200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--datasets", default="skewed,uniform")
    p.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants")
    p.add_argument("--warmup-rows", type=int, default=0,
                   help="warm up on a smaller file of the same kind (0: the benchmark's own data); the timed runs' "
                        "first tokenization is then in rep 1")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    bo.HIDDEN, bo.LAYERS = args.hidden, args.layers
    return in_temp_root("hfadapt-speed-", lambda root: bench(args, root))


def bench(args: argparse.Namespace, root: Path) -> int:
    import datasets
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()

    rng = random.Random(SEED)
    vocab = bo.make_vocab(1995, rng)
    model_dir = bo.build_model(root, vocab)
    names = [n for n in args.only.split(",") if n]
    steps = -(-args.rows // args.batch_size)
    print(f"hfadapt speed benchmark: BERT {args.hidden} x {args.layers}, {args.rows} rows, 1 epoch = {steps} steps of "
          f"batch {args.batch_size}, LoRA r={LORA['r']} q/v, torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"load {machine_load()}", flush=True)
    log, counter = root / "runs.log", 0
    for kind in args.datasets.split(","):
        data = build_data(root, vocab, args.rows, kind, random.Random(SEED))

        warm = build_data(root / "warm", vocab, args.warmup_rows, kind, random.Random(SEED)) if args.warmup_rows else data

        def once(name: str, on: Path = data, n_steps: int = steps) -> dict[str, Any]:
            nonlocal counter
            counter += 1
            with quiet(log, not args.verbose):
                return VARIANTS[name](model_dir, on, root / f"run-{counter:03d}", n_steps, args.batch_size)

        for name in names:  # untimed warm-up: imports, caches (and the inductor cache for compile)
            once(name, warm, -(-(args.warmup_rows or args.rows) // args.batch_size))
        results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        for rep in range(args.reps):
            for name in (names if rep % 2 == 0 else names[::-1]):
                r = once(name)
                results[name].append(r)
                print(f"  {kind} rep {rep + 1} {name:<18} total {r['total']:7.2f} s  loop {r['loop']:7.2f} s  loss {r['loss']:.4f}"
                      + (f"  compile {r['compile_s']:.1f} s" if r.get("compile_s") is not None else ""), flush=True)
        print(f"\n{kind}: medians of {args.reps}; ratios are paired (same rep) medians vs hand-written")
        print(f"{'variant':<20}{'total s':>9}{'loop s':>9}{'total/hand':>12}{'loop/hand':>11}{'final loss':>12}")
        ref = results.get("hand-written")
        for name, rs in results.items():
            tot = statistics.median(r["total"] for r in rs)
            loop = statistics.median(r["loop"] for r in rs)
            rt = statistics.median(r["total"] / h["total"] for r, h in zip(rs, ref)) if ref else float("nan")
            rl = statistics.median(r["loop"] / h["loop"] for r, h in zip(rs, ref)) if ref else float("nan")
            print(f"{name:<20}{tot:>9.2f}{loop:>9.2f}{rt:>12.3f}{rl:>11.3f}{statistics.median(r['loss'] for r in rs):>12.4f}")
        print(flush=True)
    print(f"load average at the end {machine_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
