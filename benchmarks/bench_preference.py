"""DPO training speed: hfadapt's preference task against TRL's DPOTrainer + PEFT, pairs per second.

Run by hand (not a test; no timing is asserted anywhere):

    python benchmarks/bench_preference.py [--pairs 256] [--steps 30] [--warm-steps 5] [--batch-size 8] [--threads 2]
                                          [--device cpu|cuda] [--only hfadapt,trl,...] [--reps 1]

The same work for every variant, in this process:
  * a tiny Llama built here from a config (hidden 256, 4 layers, 8 heads, 1,000-word vocabulary, no
    dropout), saved like a Hub checkpoint with a word-level tokenizer (one token per word + eos);
  * the same generated pairs: a prompt of 4-48 words, and a chosen and a rejected completion of 2-96 words
    each (log-uniform), as prompt/chosen/rejected text columns;
  * DPO (sigmoid, beta 0.1), LoRA r=8 alpha=16 dropout 0 on peft's default Llama targets, AdamW lr 5e-6,
    batch --batch-size pairs, --steps optimizer steps, max_length 256 (no pair is truncated), no evaluation,
    no checkpoints; fp32 on the CPU, bf16 autocast on CUDA.
Each side otherwise keeps its defaults:
  * hfadapt              the recipe's defaults: reference = the base with the adapter off, length grouping on
                         (train.group_by_length=null picks it for padded text)
  * hfadapt-no-grouping  train.group_by_length=false: batches in random order
  * hfadapt-precomputed  data.reference=precomputed: reference log-probs computed once before the first step
  * trl                  DPOTrainer(model=PeftModel, ...) with DPOConfig defaults (reference = adapter off)
  * trl-precomputed      DPOConfig(precompute_ref_log_probs=True)

Reported per variant: loop pairs/s (pairs of the steps after --warm-steps divided by their wall time, measured
from step callbacks) and end-to-end pairs/s (all pairs of the run over the wall time of the whole training
call: setup, tokenization, a precompute pass, the loop). Ratios are against `trl` measured in the same run.
Variants alternate within each repetition; medians over --reps.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_run_options, chosen_variants, in_temp_root, machine_load, parse_loop_options, quiet, torch_setup  # noqa: E402

LR, BETA, SEED, MAX_LENGTH = 5e-6, 0.1, 0, 256
LORA = {"r": 8, "alpha": 16, "dropout": 0.0}


def build_model(root: Path, words: list[str]) -> str:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = ["<pad>", "<eos>", "<unk>"] + words
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=8,
                         num_key_value_heads=4, max_position_embeddings=MAX_LENGTH, pad_token_id=0, bos_token_id=1, eos_token_id=1,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(root)
    tok.save_pretrained(root)
    return str(root)


def make_pairs(n: int, words: list[str], seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(words) for _ in range(int(math.exp(rng.uniform(math.log(lo), math.log(hi))))))

    return [{"prompt": text(4, 48), "chosen": " " + text(2, 96), "rejected": " " + text(2, 96)} for _ in range(n)]


class Marks:
    """Wall time at the end of each optimizer step."""

    def __init__(self, cuda: bool) -> None:
        self.cuda, self.at = cuda, {}

    def mark(self, step: int) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        self.at[step] = time.perf_counter()


def run_hfadapt(cfg: argparse.Namespace, root: Path, data: Path, extra_data: dict, extra_train: dict) -> tuple[Marks, float]:
    from hfadapt import Recipe, train

    recipe = Recipe.from_dict({
        "name": "bench-preference", "task": "preference", "model": {"name_or_path": cfg.model_dir},
        "data": {"train_files": [str(data)], "validation_split": None, "max_length": MAX_LENGTH,
                 "max_prompt_length": None, "loss": "dpo", "beta": BETA, **extra_data},
        "adapter": {"method": "lora", **LORA},
        "train": {"max_steps": cfg.steps, "batch_size": cfg.batch_size, "learning_rate": LR, "seed": SEED, "log_with": [],
                  "logging_steps": 10**6, "save_steps": 10**6, "eval_steps": 10**6,
                  "mixed_precision": "bf16" if cfg.device == "cuda" else "no", **extra_train},
        "output": {"dir": str(root / "out"), "overwrite": True},
    })
    marks = Marks(cfg.device == "cuda")
    start = time.perf_counter()
    train(recipe, callbacks=[lambda s: marks.mark(s.global_step)])
    return marks, time.perf_counter() - start


def run_trl(cfg: argparse.Namespace, root: Path, data: Path, extra: dict) -> tuple[Marks, float]:
    import datasets
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    marks = Marks(cfg.device == "cuda")

    class Step(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            marks.mark(state.global_step)

    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(cfg.model_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(cfg.model_dir, use_kernels=False),  # as hfadapt loads it
                           LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], task_type="CAUSAL_LM"))
    args = DPOConfig(output_dir=str(root / "trl"), per_device_train_batch_size=cfg.batch_size, max_steps=cfg.steps,
                     learning_rate=LR, beta=BETA, seed=SEED, report_to=[], disable_tqdm=True, save_strategy="no",
                     logging_steps=10**6, max_length=MAX_LENGTH,
                     **({"use_cpu": True, "bf16": False} if cfg.device == "cpu" else {"bf16": True}), **extra)
    trainer = DPOTrainer(model=model, args=args, processing_class=tok, callbacks=[Step()],
                         train_dataset=datasets.load_dataset("json", data_files=str(data), split="train"))
    trainer.train()
    return marks, time.perf_counter() - start


VARIANTS: dict[str, Callable[..., tuple[Marks, float]]] = {
    "hfadapt": lambda c, r, d: run_hfadapt(c, r, d, {}, {}),
    "hfadapt-no-grouping": lambda c, r, d: run_hfadapt(c, r, d, {}, {"group_by_length": False}),
    "hfadapt-precomputed": lambda c, r, d: run_hfadapt(c, r, d, {"reference": "precomputed"}, {}),
    "trl": lambda c, r, d: run_trl(c, r, d, {}),
    "trl-precomputed": lambda c, r, d: run_trl(c, r, d, {"precompute_ref_log_probs": True}),
}
DEFAULT = ["hfadapt", "hfadapt-no-grouping", "hfadapt-precomputed", "trl", "trl-precomputed"]


@contextlib.contextmanager
def isolated(cuda: bool):
    """Each run starts from a clean Accelerate state (TRL's Trainer and hfadapt both build one)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    try:
        yield
    finally:
        gc.collect()
        if cuda:
            import torch

            torch.cuda.empty_cache()


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=256, help="pairs in the train file (enough for --steps x --batch-size)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warm-steps", type=int, default=5, help="steps left out of the loop figure")
    p.add_argument("--batch-size", type=int, default=8)
    add_run_options(p, VARIANTS, DEFAULT)
    return parse_loop_options(p, argv)


def main(argv: list[str] | None = None) -> int:
    cfg = parse(argv)
    names = chosen_variants(cfg.only, VARIANTS)
    if names is None:
        return 2
    torch_setup(cfg.device, cfg.threads)
    import torch

    def bench(root: Path) -> int:
        from tests.conftest import write_jsonl

        words = [f"w{i}" for i in range(1000)]
        cfg.model_dir = build_model(root / "model", words)
        data = write_jsonl(root / "pairs.jsonl", make_pairs(cfg.pairs, words, SEED))
        device = torch.cuda.get_device_name(0) if cfg.device == "cuda" else f"cpu, {cfg.threads} torch threads"
        print(f"bench_preference: {cfg.pairs} pairs, {cfg.steps} steps of {cfg.batch_size} pairs (loop figure after step "
              f"{cfg.warm_steps}); {device}; load {machine_load()}")
        loop: dict[str, list[float]] = {n: [] for n in names}
        whole: dict[str, list[float]] = {n: [] for n in names}
        failed = 0
        for rep in range(cfg.reps):
            for name in names:
                try:
                    with isolated(cfg.device == "cuda"), quiet(root / "runs.log", not cfg.verbose):
                        marks, wall = VARIANTS[name](cfg, root / name, data)
                except Exception as e:  # noqa: BLE001 - one line per variant that cannot run; the others go on
                    print(f"  {name}: FAILED: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                    failed += 1
                    continue
                pairs = (cfg.steps - cfg.warm_steps) * cfg.batch_size
                loop[name].append(pairs / (marks.at[cfg.steps] - marks.at[cfg.warm_steps]))
                whole[name].append(cfg.steps * cfg.batch_size / wall)
                print(f"  rep {rep + 1} {name}: {loop[name][-1]:,.1f} pairs/s in the loop, {whole[name][-1]:,.1f} end to end", flush=True)
        print()
        ref_loop = statistics.median(loop["trl"]) if loop.get("trl") else None
        ref_whole = statistics.median(whole["trl"]) if whole.get("trl") else None
        print(f"{'variant':<22} {'loop pairs/s':>13} {'vs trl':>8} {'end-to-end pairs/s':>19} {'vs trl':>8}")
        for name in names:
            if not loop[name]:
                continue
            lp, wh = statistics.median(loop[name]), statistics.median(whole[name])
            vs = lambda x, r: f"{x / r:.2f}x" if r else "-"  # noqa: E731
            print(f"{name:<22} {lp:>13,.1f} {vs(lp, ref_loop):>8} {wh:>19,.1f} {vs(wh, ref_whole):>8}")
        return 1 if failed else 0

    return in_temp_root("bench-preference-", bench)


if __name__ == "__main__":
    sys.exit(main())
