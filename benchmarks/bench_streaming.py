"""Streaming vs map-style data for a causal-lm recipe: time to the first optimizer step, and
steady-state examples/s.

Run by hand (not a test):

    python benchmarks/bench_streaming.py [--rows 400000] [--steps 30] [--reps 2] [--packing]

Both variants train the same tiny randomly initialised GPT-2-style model (2 layers, hidden 64)
with LoRA on the same generated JSON Lines corpus of --rows texts (8..60 words), through
hfadapt's `train()`, in this process, alternating, --reps times each (medians reported):

  * map-style (data.streaming: false): datasets reads and tokenises the whole corpus up front
    (datasets.map, cached to disk; the cache is cleared before every run so both variants start
    cold), then trains;
  * streaming (data.streaming: true, shuffle buffer 10,000): examples are read, tokenised (and
    packed with --packing) as training consumes them.

Reported per variant: first step (from the train() call to the end of optimizer step 1:
everything a user waits for before training starts), steady examples/s (steps 2..N, from a
callback), and the ratio streaming / map-style. The machine's load average is printed too: on
shared cores the figures move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import machine_load, quiet, random_words  # noqa: E402


def build(root: Path, rows: int) -> tuple[Path, Path]:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    rng = random.Random(0)
    words = random_words(2000, rng)
    corpus = root / "corpus.jsonl"
    with open(corpus, "w") as f:
        for _ in range(rows):
            f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(rng.randint(8, 60)))}) + "\n")
    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>"] + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    model_dir = root / "model"
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_positions=128, n_embd=64, n_layer=2, n_head=4, pad_token_id=0, eos_token_id=1)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return corpus, model_dir


def run(corpus: Path, model_dir: Path, out: Path, streaming: bool, packing: bool, steps: int, batch: int, log: Path) -> dict[str, float]:
    import datasets

    from hfadapt import Recipe, train

    marks: dict[int, float] = {}
    recipe = Recipe.from_dict({
        "task": "causal-lm", "model": {"name_or_path": str(model_dir)},
        "data": {"train_files": [str(corpus)], "validation_split": None, "max_length": 64, "packing": packing, "streaming": streaming},
        "adapter": {"method": "lora", "r": 8},
        "train": {"max_steps": steps, "batch_size": batch, "log_with": [], "logging_steps": 1000},
        "output": {"dir": str(out), "overwrite": True},
    })
    # A cache of this benchmark's own (set in main), emptied so that both variants start cold.
    shutil.rmtree(Path(datasets.config.HF_DATASETS_CACHE), ignore_errors=True)
    start = time.perf_counter()
    with quiet(log, True):
        train(recipe, callbacks=[lambda s: marks.setdefault(s.global_step, time.perf_counter())])
    first = marks[1] - start
    steady = (steps - 1) * batch / (marks[steps] - marks[1])
    return {"first_step_s": first, "examples_per_s": steady}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=400_000)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--packing", action="store_true")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    os.environ["HF_DATASETS_CACHE"] = str(root / "datasets-cache")  # before datasets is imported; never the user's cache

    import torch

    torch.set_num_threads(1)
    try:
        corpus, model_dir = build(root, args.rows)
        print(f"corpus: {args.rows:,} texts ({corpus.stat().st_size / 2**20:.0f} MiB); load {machine_load()}")
        results: dict[str, list[dict[str, float]]] = {"map-style": [], "streaming": []}
        for rep in range(args.reps):
            for name in ("map-style", "streaming"):
                r = run(corpus, model_dir, root / f"run-{name}", name == "streaming", args.packing, args.steps, args.batch, root / "log.txt")
                results[name].append(r)
                print(f"  rep {rep + 1} {name:>9}: first step {r['first_step_s']:7.1f} s, steady {r['examples_per_s']:7.1f} examples/s")
        med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in results.items()}
        for name, m in med.items():
            print(f"{name:>9}: first step {m['first_step_s']:7.1f} s   steady {m['examples_per_s']:7.1f} examples/s   (median of {args.reps})")
        print(
            f"streaming / map-style: first step x{med['streaming']['first_step_s'] / med['map-style']['first_step_s']:.3f}, "
            f"steady examples/s x{med['streaming']['examples_per_s'] / med['map-style']['examples_per_s']:.3f}; load {machine_load()}"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
