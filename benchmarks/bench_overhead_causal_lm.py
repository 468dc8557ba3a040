"""How much does hfadapt's `train()` cost over a minimal hand-written Accelerate + PEFT loop, for causal-lm?

Run by hand (not a test):

    python benchmarks/bench_overhead_causal_lm.py [--steps 40] [--packing-steps 20] [--reps 3] [--threads 1]
                                                  [--no-packing] [--verbose]

The causal-lm counterpart of bench_overhead.py (text classification). Both variants do the same
work in this process, on the CPU:
  * the same randomly initialised GPT-2 style model (GPT2LMHeadModel, n_embd 256, 4 layers, 4 heads,
    GPT-2's default dropouts, vocab ~2000), saved with save_pretrained to a temporary folder together
    with a word-level tokenizer (tokenizers WordLevel + whitespace split, an <eos> token and no pad
    token, like GPT-2: hfadapt pads with eos, and so does the hand loop);
  * the same generated prompt/completion JSONL (1024 rows; prompts of 4..48 words, completions of
    2..80 words, log-uniform, one token per word: the longest rows are truncated at max_length 128),
    with completion-only loss;
  * the same tokenized dataset and collator: the hand loop reuses hfadapt's causal-lm preprocessing
    (task.preprocess: tokenize prompt and completion, append eos, labels -100 on the prompt, and with
    data.packing best-fit packing into max_length blocks with position_ids restarting per example)
    and its collator (pad to the longest row of the batch). Tokenization is not what is measured
    here, and sharing it guarantees identical batches; the collator runs inside both loops alike;
  * the same LoRA config (r=8, alpha 16, dropout 0.05, peft's default targets for GPT-2: c_attn);
  * AdamW, linear schedule without warmup, gradient clipping at 1.0 (hfadapt's default), the same
    number of steps and batch size, and the same example order (hfadapt's epoch shuffle is the
    seeded randperm torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)); the
    hand loop uses the same one), so every step sees the same batch in both;
  * the same seeding and the same order of random draws (set_seed, then the LoRA init, then
    dropout), so the per-step losses of the two variants should be equal: they are compared at the
    end as a check that both did the same work.

hfadapt runs with no evaluation (data.validation_split: null), no checkpoints, no trackers
(train.log_with: []).

Timings per run:
  * loop: from the end of optimizer step 1 to the end of the last step (hfadapt: via a
    `train(recipe, callbacks=[fn])` callback; hand loop: the same two points), so setup, the
    first (warm-up) step and the final save are excluded; wall time, and the process's CPU time
    in the same window (less disturbed when other jobs compete for the cores);
  * total: the whole `train()` call (data loading, the (cached) preprocessing, model loading, the
    loop, saving the adapter and run files) vs the hand script's equivalent from Accelerator() to
    save_pretrained.

Variants alternate, each is run --reps times, and the medians are reported; then the same once more
with data.packing: true (unless --no-packing), for --packing-steps steps: packed batches are full
max_length blocks, about twice the tokens of a padded batch here, so fewer steps keep the whole
benchmark under ~4 minutes on one thread. An untimed short warm-up of each comes first
(imports, datasets caches), so preprocessing is a cache hit in the timed runs of both.
"""

from __future__ import annotations

import argparse
import json
import math
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
LORA = dict(r=8, alpha=16, dropout=0.05, targets=["c_attn"])  # c_attn: peft's default for gpt2, which hfadapt uses
MAX_GRAD_NORM = 1.0  # hfadapt's train.max_grad_norm default
EOS, UNK = "<eos>", "<unk>"

HIDDEN, LAYERS = 256, 4  # set from --hidden/--layers in main()


# ---- fixtures: model, tokenizer, data ------------------------------------------------------------
def make_vocab(n_words: int, rng: random.Random) -> list[str]:
    return [EOS, UNK] + random_words(n_words, rng)


def build_model(root: Path, vocab: list[str], max_length: int) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    model_dir = root / f"gpt2-{HIDDEN}x{LAYERS}"
    model_dir.mkdir()
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # Like GPT-2: an eos token and no pad token (hfadapt pads with eos; so does the hand loop).
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, bos_token=EOS, unk_token=UNK)
    eos_id = vocab.index(EOS)
    config = GPT2Config(
        vocab_size=len(vocab), n_positions=max(256, max_length), n_embd=HIDDEN, n_layer=LAYERS, n_head=max(4, HIDDEN // 64),
        bos_token_id=eos_id, eos_token_id=eos_id,
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return model_dir


def build_data(root: Path, vocab: list[str], rows: int, rng: random.Random) -> Path:
    """Prompts of 4..48 words and completions of 2..80 (log-uniform); the completion echoes words of the prompt."""
    words = vocab[2:]

    def length(lo: int, hi: int) -> int:
        return int(math.exp(rng.uniform(math.log(lo), math.log(hi + 1))))

    path = root / "pairs.jsonl"
    with open(path, "w") as f:
        for _ in range(rows):
            prompt = [rng.choice(words) for _ in range(length(4, 48))]
            completion = [rng.choice(prompt) if rng.random() < 0.5 else rng.choice(words) for _ in range(length(2, 80))]
            f.write(json.dumps({"prompt": " ".join(prompt), "completion": " ".join(completion)}) + "\n")
    return path


def make_recipe(model_dir: Path, data: Path, out_dir: Path, steps: int, batch_size: int, max_length: int, packing: bool) -> Any:
    from hfadapt import Recipe

    return Recipe.from_dict({
        "name": "bench",
        "task": "causal-lm",
        "model": {"name_or_path": str(model_dir)},
        "data": {"train_files": [str(data)], "validation_split": None, "max_length": max_length,
                 "lm_format": "prompt_completion", "completion_only_loss": True, "packing": packing},
        "adapter": {"method": "lora", "r": LORA["r"], "alpha": LORA["alpha"], "dropout": LORA["dropout"]},  # default targets
        "train": {"max_steps": steps, "batch_size": batch_size, "learning_rate": LR, "scheduler": "linear",
                  "max_grad_norm": MAX_GRAD_NORM, "seed": SEED, "log_with": [], "save_steps": None},
        "output": {"dir": str(out_dir)},
    })


# ---- variant (a): hfadapt ---------------------------------------------------------------------------
def run_hfadapt(model_dir: Path, data: Path, out_dir: Path, steps: int, batch_size: int, max_length: int, packing: bool) -> dict[str, Any]:
    from hfadapt import train

    recipe = make_recipe(model_dir, data, out_dir, steps, batch_size, max_length, packing)
    marks: dict[int, tuple[float, float]] = {}

    def on_step(state: Any) -> None:
        if state.global_step in (1, steps):
            marks[state.global_step] = (time.perf_counter(), time.process_time())

    t0 = time.perf_counter()
    result = train(recipe, callbacks=[on_step])
    total = time.perf_counter() - t0
    assert result.state.global_step == steps, result.state.global_step
    return window(marks, steps) | {"total": total, "losses": list(result.losses)}


# ---- variant (b): a minimal hand-written Accelerate + PEFT loop -----------------------------------
def run_hand(model_dir: Path, data: Path, out_dir: Path, steps: int, batch_size: int, max_length: int, packing: bool) -> dict[str, Any]:
    import datasets
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import set_seed
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import DataLoader
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

    from hfadapt.tasks import TASKS

    # A hand-written script runs in a fresh process; clear what earlier runs left in Accelerate's singletons.
    AcceleratorState._reset_state()
    GradientState._reset_state()

    t0 = time.perf_counter()
    accelerator = Accelerator()
    set_seed(SEED)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = tok.eos_token
    raw = datasets.load_dataset("json", data_files={"train": [str(data)]})["train"]
    # hfadapt's causal-lm preprocessing and collator (same batches; tokenization is not what is measured).
    task = TASKS.get("causal-lm")
    recipe = make_recipe(model_dir, data, out_dir, steps, batch_size, max_length, packing)
    ds = task.preprocess(raw, "train", tok, recipe, None, train=True)
    collate = task.collator(tok)

    def loader_for(epoch: int) -> Any:
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(SEED + epoch)).tolist()  # hfadapt's order
        # generator: creating the iterator must not draw on the global RNG that dropout uses (as in hfadapt)
        dl = DataLoader(ds, batch_size=batch_size, sampler=order, collate_fn=collate, generator=torch.Generator().manual_seed(SEED))
        return accelerator.prepare(dl)

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model = get_peft_model(model, LoraConfig(
        task_type="CAUSAL_LM", r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
        target_modules=LORA["targets"],
    ))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=0.0)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    model.train()
    losses: list[float] = []
    marks: dict[int, tuple[float, float]] = {}
    step = epoch = 0
    while step < steps:
        for batch in loader_for(epoch):
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
        epoch += 1
    accelerator.unwrap_model(model).save_pretrained(out_dir / "adapter")
    tok.save_pretrained(out_dir / "adapter")
    total = time.perf_counter() - t0
    return window(marks, steps) | {"total": total, "losses": losses}


# ---- driver ---------------------------------------------------------------------------------------
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--hidden", type=int, default=256, help="n_embd (768 with --layers 12 is GPT-2 small's shape)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--rows", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=2000, help="vocabulary size (with the 2 special tokens)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--packing-steps", type=int, default=20, help="steps of the data.packing: true round")
    p.add_argument("--no-packing", action="store_true", help="skip the second round with data.packing: true")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads (1 by default: steadier on a small machine shared with other jobs)")
    p.add_argument("--verbose", action="store_true", help="show the runs' own output")
    p.add_argument("--keep", action="store_true", help="keep the temporary work folder (model, data, runs, log)")
    args = p.parse_args()
    global HIDDEN, LAYERS
    HIDDEN, LAYERS = args.hidden, args.layers

    root = Path(tempfile.mkdtemp(prefix="hfadapt-bench-lm-"))
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
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()

    rng = random.Random(SEED)
    vocab = make_vocab(args.vocab - 2, rng)
    model_dir = build_model(root, vocab, args.max_length)
    data = build_data(root, vocab, args.rows, rng)
    log = root / "runs.log"
    print(f"hfadapt causal-lm overhead benchmark: GPT-2 n_embd {HIDDEN} x {LAYERS} layers, vocab {len(vocab)}, "
          f"{args.rows} prompt/completion rows, max_length {args.max_length}, completion-only loss, "
          f"LoRA r={LORA['r']} on {'/'.join(LORA['targets'])}, batch {args.batch_size}, "
          f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"work dir: {root}{' (kept)' if args.keep else ' (removed at the end; --keep keeps it)'}; "
          f"load average {machine_load()}", flush=True)

    variants = {"hfadapt": run_hfadapt, "hand-written": run_hand}
    counter = 0

    def once(name: str, steps: int, packing: bool) -> dict[str, Any]:
        nonlocal counter
        counter += 1
        out = root / f"run-{counter:02d}-{name}{'-packed' if packing else ''}"
        with quiet(log, not args.verbose):
            return variants[name](model_dir, data, out, steps, args.batch_size, args.max_length, packing)

    modes = [(False, args.steps)] + ([] if args.no_packing else [(True, args.packing_steps)])
    summary: list[tuple[str, int, dict[str, dict[str, float]]]] = []
    for packing, steps in modes:
        label = "data.packing: true" if packing else "data.packing: false (padded batches)"
        print(f"\n== {label}, {steps} steps", flush=True)
        for name in variants:  # warm-up: imports, dataset and preprocessing caches
            once(name, 3, packing)

        results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        for rep in range(args.reps):
            order = list(variants) if rep % 2 == 0 else list(variants)[::-1]
            for name in order:
                r = once(name, steps, packing)
                results[name].append(r)
                print(f"  rep {rep + 1}/{args.reps} {name:<12} loop {r['loop']:7.2f} s (cpu {r['loop_cpu']:7.2f} s)   "
                      f"total {r['total']:7.2f} s", flush=True)
                if torch.get_num_threads() != args.threads:  # nothing may change it behind our back
                    print(f"  (warning: torch threads changed to {torch.get_num_threads()}; reset to {args.threads})")
                    torch.set_num_threads(args.threads)

        keys = ("loop", "loop_cpu", "total")
        med = {name: {k: statistics.median(r[k] for r in rs) for k in keys} for name, rs in results.items()}
        n = steps - 1
        print()
        print(f"{'variant':<14}{'loop (s)':>10}{'ms/step':>10}{'loop cpu (s)':>14}{'total (s)':>11}{'total-loop (s)':>16}")
        for name, m in med.items():
            print(f"{name:<14}{m['loop']:>10.2f}{1000 * m['loop'] / n:>10.1f}{m['loop_cpu']:>14.2f}"
                  f"{m['total']:>11.2f}{m['total'] - m['loop']:>16.2f}")
        h, b = med["hfadapt"], med["hand-written"]
        print(f"{'ratio h/hand':<14}{h['loop'] / b['loop']:>10.3f}{'':>10}{h['loop_cpu'] / b['loop_cpu']:>14.3f}"
              f"{h['total'] / b['total']:>11.3f}")
        summary.append((label, steps, med))

        # Same batches, seeds and order of random draws: the per-step losses should agree.
        for name, rs in results.items():
            losses = rs[0]["losses"]
            k = min(10, len(losses))
            print(f"{name}: mean loss of the first {k} steps {statistics.mean(losses[:k]):.4f}, "
                  f"of the last {k} {statistics.mean(losses[-k:]):.4f}")
        diffs = [abs(x - y) for rh, rb in zip(results["hfadapt"], results["hand-written"]) for x, y in zip(rh["losses"], rb["losses"])]
        print(f"per-step losses, hfadapt vs hand-written (all reps): max |difference| {max(diffs):.2e}"
              + (" (identical work)" if max(diffs) < 1e-4 else " (the runs differ: check batches / seeding)"))

    print()
    print(f"(medians of {args.reps}; loop = wall time of steps 2..N; loop cpu = CPU time "
          "of this process in the same window; total-loop = setup, step 1 and saving)")
    for label, steps, med in summary:
        h, b = med["hfadapt"], med["hand-written"]
        print(f"ratio hfadapt/hand-written, {label}, {steps} steps: loop {h['loop'] / b['loop']:.3f}, loop cpu {h['loop_cpu'] / b['loop_cpu']:.3f}, "
              f"total {h['total'] / b['total']:.3f}")
    print(f"load average at the end {machine_load()} (a load above the core count means other jobs competed for the CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
