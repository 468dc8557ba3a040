"""How much does hfadapt's `train()` cost over a minimal hand-written Accelerate + PEFT loop?

Run by hand (not a test):

    python benchmarks/bench_overhead.py [--steps 60] [--reps 3] [--threads 1] [--verbose]

Both variants do the same work in this process, on the CPU:
  * the same randomly initialised BERT-style model (hidden 256, 4 layers, intermediate 512,
    vocab 2000), saved with save_pretrained to a temporary folder with a WordPiece tokenizer built
    from a generated vocab;
  * the same generated text-classification CSV (2048 rows of 6..80 words), tokenized with
    datasets.map (max_length 64: the longer texts are truncated);
  * the same LoRA config (r=8, alpha 16, dropout 0.05, query/value, classifier trained fully);
  * AdamW, linear schedule without warmup, gradient clipping at 1.0 (hfadapt's default),
    the same number of steps and batch size, DataCollatorWithPadding, and the same example
    order (hfadapt's epoch shuffle is a seeded randperm; the hand loop uses the same one), so
    every step pads to the same length in both.

hfadapt runs with no evaluation (data.validation_split: null), no checkpoints, no trackers.

Timings per run:
  * loop: from the end of optimizer step 1 to the end of the last step (hfadapt: via a
    `train(recipe, callbacks=[fn])` callback; hand loop: the same two points), so setup, the
    first (warm-up) step and the final save are excluded; wall time, and the process's CPU time
    in the same window (less disturbed when other jobs compete for the cores);
  * total: the whole `train()` call (data loading, tokenization, model loading, the loop, saving the
    adapter) vs the hand script's equivalent from Accelerator() to save_pretrained.

Variants alternate, each is run --reps times, and the medians are reported. An untimed short
warm-up of each comes first (imports, datasets caches), so tokenization is a cache hit in the
timed runs of both.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine_load, quiet, random_words, window  # benchmarks run as scripts from this folder

SEED = 42
LR = 5e-4
LORA = dict(r=8, alpha=16, dropout=0.05, targets=["query", "value"])
MAX_GRAD_NORM = 1.0  # hfadapt's train.max_grad_norm default


# ---- fixtures: model, tokenizer, data ------------------------------------------------------------

HIDDEN, LAYERS = 256, 4  # set from --hidden/--layers in main()

def make_vocab(n_words: int, rng: random.Random) -> list[str]:
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + random_words(n_words, rng)


def build_model(root: Path, vocab: list[str]) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    model_dir = root / "bert-256x4"
    model_dir.mkdir()
    (model_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(model_dir / "vocab.txt"), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=max(4, HIDDEN // 64),
        intermediate_size=4 * HIDDEN if HIDDEN > 256 else 512, max_position_embeddings=512, num_labels=2,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return model_dir


def build_data(root: Path, vocab: list[str], rows: int, rng: random.Random) -> Path:
    """Texts of 6..80 words (the longer ones truncated at max_length 64); the label decides which cue words appear."""
    words = vocab[5:]
    cues = {"negative": words[:40], "positive": words[40:80]}
    filler = words[80:]
    path = root / "texts.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        for i in range(rows):
            label = "positive" if i % 2 else "negative"
            n = rng.randint(6, 80)
            text = [rng.choice(filler) for _ in range(n)]
            for _ in range(max(1, n // 10)):
                text[rng.randrange(n)] = rng.choice(cues[label])
            w.writerow({"text": " ".join(text), "label": label})
    return path


# ---- variant (a): hfadapt ---------------------------------------------------------------------------
def run_hfadapt(model_dir: Path, data: Path, out_dir: Path, steps: int, batch_size: int, max_length: int) -> dict[str, Any]:
    from hfadapt import Recipe, train

    recipe = Recipe.from_dict({
        "name": "bench",
        "task": "text-classification",
        "model": {"name_or_path": str(model_dir)},
        "data": {"train_files": [str(data)], "validation_split": None, "max_length": max_length},
        "adapter": {"method": "lora", "r": LORA["r"], "alpha": LORA["alpha"], "dropout": LORA["dropout"],
                    "target_modules": LORA["targets"]},
        "train": {"max_steps": steps, "batch_size": batch_size, "learning_rate": LR, "scheduler": "linear",
                  "max_grad_norm": MAX_GRAD_NORM, "seed": SEED, "log_with": [], "save_steps": None},
        "output": {"dir": str(out_dir)},
    })
    marks: dict[int, tuple[float, float]] = {}

    def on_step(state: Any) -> None:
        if state.global_step in (1, steps):
            marks[state.global_step] = (time.perf_counter(), time.process_time())

    t0 = time.perf_counter()
    result = train(recipe, callbacks=[on_step])
    total = time.perf_counter() - t0
    assert result.state.global_step == steps, result.state.global_step
    return window(marks, steps) | {"total": total, "losses": result.losses}


# ---- variant (b): a minimal hand-written Accelerate + PEFT loop -----------------------------------
def run_hand(model_dir: Path, data: Path, out_dir: Path, steps: int, batch_size: int, max_length: int) -> dict[str, Any]:
    import datasets
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import DataLoader
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, get_scheduler

    t0 = time.perf_counter()
    accelerator = Accelerator()
    set_seed(SEED)
    tok = AutoTokenizer.from_pretrained(model_dir)
    raw = datasets.load_dataset("csv", data_files={"train": [str(data)]})["train"]
    names = sorted(set(raw["label"]))
    label2id = {n: i for i, n in enumerate(names)}

    def encode(batch: dict) -> dict:
        enc = tok(batch["text"], truncation=True, max_length=max_length)
        enc["labels"] = [label2id[v] for v in batch["label"]]
        return dict(enc)

    ds = raw.map(encode, batched=True, remove_columns=raw.column_names)
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(SEED)).tolist()  # hfadapt's epoch-0 order
    loader = DataLoader(ds, batch_size=batch_size, sampler=order, collate_fn=DataCollatorWithPadding(tok))

    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(names), id2label=dict(enumerate(names)), label2id=label2id,
    )
    model = get_peft_model(model, LoraConfig(
        task_type="SEQ_CLS", r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
        target_modules=LORA["targets"], modules_to_save=["classifier"],
    ))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=0.0)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    model.train()
    losses: list[float] = []
    marks: dict[int, tuple[float, float]] = {}
    step = 0
    while step < steps:
        for batch in loader:
            loss = model(**batch).loss
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            step += 1
            if step in (1, steps):
                marks[step] = (time.perf_counter(), time.process_time())
            if step == steps:
                break
    accelerator.unwrap_model(model).save_pretrained(out_dir / "adapter")
    tok.save_pretrained(out_dir / "adapter")
    total = time.perf_counter() - t0
    return window(marks, steps) | {"total": total, "losses": losses}


# ---- driver ---------------------------------------------------------------------------------------
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--hidden", type=int, default=256, help="model width (768 with --layers 12 is BERT-base size)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--rows", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=2000, help="vocabulary size (with the 5 special tokens)")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads (1 by default: steadier on a small machine shared with other jobs)")
    p.add_argument("--verbose", action="store_true", help="show the runs' own output")
    p.add_argument("--keep", action="store_true", help="keep the temporary work folder (model, data, runs, log)")
    args = p.parse_args()
    global HIDDEN, LAYERS
    HIDDEN, LAYERS = args.hidden, args.layers

    root = Path(tempfile.mkdtemp(prefix="hfadapt-bench-"))
    try:
        return bench(args, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def bench(args: argparse.Namespace, root: Path) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["HF_DATASETS_CACHE"] = str(root / "datasets-cache")  # before datasets is imported

    import datasets
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()

    rng = random.Random(SEED)
    vocab = make_vocab(args.vocab - 5, rng)
    model_dir = build_model(root, vocab)
    data = build_data(root, vocab, args.rows, rng)
    log = root / "runs.log"
    print(f"hfadapt overhead benchmark: BERT hidden {HIDDEN} x {LAYERS} layers, vocab {len(vocab)}, {args.rows} rows, "
          f"max_length {args.max_length}, LoRA r={LORA['r']} on {'/'.join(LORA['targets'])}, "
          f"{args.steps} steps x batch {args.batch_size}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"work dir: {root}{' (kept)' if args.keep else ' (removed at the end; --keep keeps it)'}; "
          f"load average {machine_load()}", flush=True)

    variants = {"hfadapt": run_hfadapt, "hand-written": run_hand}
    counter = 0

    def once(name: str, steps: int) -> dict[str, Any]:
        nonlocal counter
        counter += 1
        out = root / f"run-{counter:02d}-{name}"
        with quiet(log, not args.verbose):
            return variants[name](model_dir, data, out, steps, args.batch_size, args.max_length)

    for name in variants:  # warm-up: imports, dataset and tokenization caches
        once(name, 3)

    results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for rep in range(args.reps):
        order = list(variants) if rep % 2 == 0 else list(variants)[::-1]
        for name in order:
            r = once(name, args.steps)
            results[name].append(r)
            print(f"  rep {rep + 1}/{args.reps} {name:<12} loop {r['loop']:7.2f} s (cpu {r['loop_cpu']:7.2f} s)   "
                  f"total {r['total']:7.2f} s", flush=True)
            if torch.get_num_threads() != args.threads:  # nothing may change it behind our back
                print(f"  (warning: torch threads changed to {torch.get_num_threads()}; reset to {args.threads})")
                torch.set_num_threads(args.threads)

    keys = ("loop", "loop_cpu", "total")
    med = {name: {k: statistics.median(r[k] for r in rs) for k in keys} for name, rs in results.items()}
    n = args.steps - 1
    print()
    print(f"{'variant':<14}{'loop (s)':>10}{'ms/step':>10}{'loop cpu (s)':>14}{'total (s)':>11}{'total-loop (s)':>16}")
    for name, m in med.items():
        print(f"{name:<14}{m['loop']:>10.2f}{1000 * m['loop'] / n:>10.1f}{m['loop_cpu']:>14.2f}"
              f"{m['total']:>11.2f}{m['total'] - m['loop']:>16.2f}")
    h, b = med["hfadapt"], med["hand-written"]
    print(f"{'ratio h/hand':<14}{h['loop'] / b['loop']:>10.3f}{'':>10}{h['loop_cpu'] / b['loop_cpu']:>14.3f}"
          f"{h['total'] / b['total']:>11.3f}")
    print(f"(medians of {args.reps}; loop = wall time of steps 2..{args.steps} ({n} steps); loop cpu = CPU time of this "
          "process in the same window; total-loop = setup, step 1 and saving)")
    print(f"load average at the end {machine_load()} (a load above the core count means other jobs competed for the CPU)")

    # Same model, batches and schedule; the losses differ only through random draws (LoRA init,
    # dropout), so they should track each other.
    for name, rs in results.items():
        losses = rs[0]["losses"]
        k = min(10, len(losses))
        print(f"{name}: mean loss of the first {k} steps {statistics.mean(losses[:k]):.4f}, of the last {k} {statistics.mean(losses[-k:]):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
