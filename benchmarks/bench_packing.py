"""causal-lm packing vs padding: share of non-pad tokens per batch and real tokens per second.

Run by hand (not a test):

    python benchmarks/bench_packing.py [--examples 400] [--max-length 256] [--batch-size 8] [--threads 2] [--reps 1]

Both variants, in this process and on the CPU, use:
  * the same randomly initialised GPT-2 style model (hidden 128, 4 layers, 4 heads, vocab ~1000) with
    the same LoRA adapter (peft, r=8 on c_attn), saved/loaded like a Hub checkpoint;
  * the same generated text dataset whose lengths vary widely (log-uniform from 4 to max_length-1
    words, one token per word), preprocessed by the causal-lm task itself (task.preprocess: tokenize,
    append eos, and with data.packing=true best-fit packing into max_length blocks with position_ids
    restarting per example) and batched by its collator (padding to the longest row of each batch);
  * one epoch of training steps (forward, backward, AdamW) over the whole dataset, batch_size rows
    per batch, in the dataset's order.

Reported per variant: batches, the share of non-pad tokens per batch (mean and minimum over the
batches), and real tokens per second: the dataset's real (non-pad) tokens divided by the wall time
of the epoch minus its first (warm-up) batch, whose tokens are left out too. Variants alternate, each
runs --reps times, and the median is reported.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_model(root: Path, vocab: list[str], max_length: int) -> str:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    config = GPT2Config(vocab_size=len(vocab), n_positions=max_length, n_embd=128, n_layer=4, n_head=4,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0, bos_token_id=1, eos_token_id=1)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(root)
    tok.save_pretrained(root)
    return str(root)


def make_rows(n: int, max_length: int, words: list[str], seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k = int(math.exp(rng.uniform(math.log(4), math.log(max_length - 1))))
        rows.append({"text": " ".join(rng.choice(words) for _ in range(k))})
    return rows


def run_variant(model_dir: str, rows: list[dict], packing: bool, max_length: int, batch_size: int) -> dict:
    import datasets
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from hfadapt import Recipe
    from hfadapt.tasks import TASKS

    recipe = Recipe.from_dict({
        "task": "causal-lm", "model": {"name_or_path": model_dir},
        "data": {"train_files": ["unused.jsonl"], "max_length": max_length, "packing": packing, "validation_split": None},
        "train": {"batch_size": batch_size, "log_with": []},
    })
    task = TASKS.get("causal-lm")
    tok = task.load_processor(recipe)
    ds = task.preprocess(datasets.Dataset.from_list(rows), "train", tok, recipe, None, train=True)
    collate = task.collator(tok)
    batches = [collate([ds[j] for j in range(i, min(i + batch_size, len(ds)))]) for i in range(0, len(ds), batch_size)]
    shares, real_per_batch = [], []
    for b, start in zip(batches, range(0, len(ds), batch_size)):
        real = sum(len(ds[j]["input_ids"]) for j in range(start, min(start + batch_size, len(ds))))
        real_per_batch.append(real)
        shares.append(real / b["input_ids"].numel())

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"], task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    start = None
    for i, batch in enumerate(batches):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
        if i == 0:
            start = time.perf_counter()
    elapsed = time.perf_counter() - start
    return {
        "examples": len(rows), "rows": len(ds), "batches": len(batches),
        "share_mean": statistics.mean(shares), "share_min": min(shares),
        "real_tokens": sum(real_per_batch), "tokens_per_s": sum(real_per_batch[1:]) / elapsed,
        "padded_tokens": sum(b["input_ids"].numel() for b in batches), "seconds": elapsed,
        "loss_first": losses[0], "loss_last": losses[-1],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=400)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1)
    args = ap.parse_args()

    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    words = [f"w{i}" for i in range(1000)]
    vocab = ["<pad>", "<eos>", "<unk>"] + words
    rows = make_rows(args.examples, args.max_length, words, seed=0)
    lengths = sorted(len(r["text"].split()) + 1 for r in rows)
    print(f"dataset: {len(rows)} texts, tokens per example min {lengths[0]}, median {lengths[len(lengths) // 2]}, max {lengths[-1]} "
          f"(max_length {args.max_length}); batch_size {args.batch_size}; torch threads {args.threads}")

    results: dict[str, list[dict]] = {"padded": [], "packed": []}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp), vocab, args.max_length)
        for rep in range(args.reps):
            for name in ("padded", "packed"):
                r = run_variant(model_dir, rows, name == "packed", args.max_length, args.batch_size)
                results[name].append(r)
                print(f"  rep {rep + 1} {name}: {r['tokens_per_s']:,.0f} real tokens/s ({r['seconds']:.1f}s)", flush=True)

    print()
    print(f"{'variant':<8} {'rows':>6} {'batches':>8} {'non-pad/batch mean':>19} {'min':>7} {'real tokens':>12} {'padded tokens':>14} {'real tokens/s':>14}")
    med = {}
    for name, rs in results.items():
        r = rs[0]
        med[name] = statistics.median(x["tokens_per_s"] for x in rs)
        print(f"{name:<8} {r['rows']:>6} {r['batches']:>8} {100 * r['share_mean']:>18.1f}% {100 * r['share_min']:>6.1f}% "
              f"{r['real_tokens']:>12,} {r['padded_tokens']:>14,} {med[name]:>14,.0f}")
    print(f"\npacked / padded real tokens per second: {med['packed'] / med['padded']:.2f}x (median of {args.reps})")
    assert results["packed"][0]["real_tokens"] == results["padded"][0]["real_tokens"], "both variants must train on the same tokens"


if __name__ == "__main__":
    main()
