"""Causal-LM training speed on one GPU: hfadapt (defaults, + Liger kernels, + compile) against TRL's SFTTrainer.

Run by hand on a CUDA machine (CI has none; about 5 minutes on one H200):

    python benchmarks/gpu_speed.py [--steps 60] [--warm-steps 10] [--reps 3] [--only hfadapt,trl] [--verbose]
    python benchmarks/gpu_speed.py --cpu-smoke     # a tiny model for 3 steps of each, on the CPU: exercises the code only

`main(argv)` returns an exit code, so gpu_check.py may call it. Nothing comes from the Hub: every
variant trains the same randomly initialised Llama-style model built from a config (hidden 768,
8 layers, 12 heads / 4 KV heads, MLP 2048, vocab 32000: ~106M parameters, saved in float32 with a
word-level tokenizer over made-up words) on the same generated plain-text JSONL (50..600 words per
row, one token per word), packed into --seq-len token sequences, batch --batch-size, for --steps
optimizer steps, LoRA r=16 / alpha 32 / dropout 0.05 on all linear layers, learning rate 2e-4:

  * hfadapt           train() with its GPU defaults: bf16 autocast, fused AdamW, SDPA attention,
                      data.packing (best-fit blocks, position_ids restart per example), no checkpointing
  * hfadapt-liger     + train.liger_kernel=true (skipped with a line when liger-kernel is not installed)
  * hfadapt-compile   + train.compile=true
  * trl               TRL SFTTrainer(model=path, train_dataset=..., peft_config=LoraConfig(...)) with
                      SFTConfig defaults (bf16, fused AdamW, gradient checkpointing ON) but packing=True
                      (TRL's default is off; hfadapt's recipe packs) - the reference of the ratios
  * trl-no-gc         trl with gradient_checkpointing=False (hfadapt's default: the like-for-like speed)
  * trl-liger         trl with use_liger_kernel=True (not in the default list; --only to add it)

Measured per run, from the end of step --warm-steps to the end of the last step (a CUDA
synchronisation at each step end, in every variant alike): tokens/s, counting the input tokens that
are not padding as the decoder receives them (a forward pre-hook on the Llama decoder), so packing
that fills blocks differently is counted fairly; and the peak CUDA memory allocated in the whole
run. Variants alternate (the order reversed every other rep) after an untimed short warm-up of each
(imports, caches, the inductor cache); reported are medians and the paired (same rep) median ratios
to trl.

Liger patches the Llama module of transformers for the whole process (as under HF Trainer); each
run here restores it afterwards, so the variants after a Liger run train without it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import random
import statistics
import sys
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Callable, Iterator

from _common import in_temp_root, quiet, random_words  # benchmarks run as scripts from this folder

SEED = 42
LR = 2e-4
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}
SPECIAL = ["<pad>", "<eos>", "<unk>"]
GPU_MODEL = {"hidden": 768, "layers": 8, "heads": 12, "kv_heads": 4, "mlp": 2048, "vocab": 32000}
SMOKE_MODEL = {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "mlp": 128, "vocab": 600}
REFERENCE = "trl"


# ---- model and data ------------------------------------------------------------------------------------
def build_model(root: Path, spec: dict[str, int], seq_len: int, rng: random.Random) -> tuple[Path, list[str]]:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = random_words(spec["vocab"] - len(SPECIAL), rng)
    vocab = SPECIAL + words
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
                                  model_max_length=seq_len)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=spec["hidden"], intermediate_size=spec["mlp"], num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"], num_key_value_heads=spec["kv_heads"], max_position_embeddings=seq_len,
        pad_token_id=0, eos_token_id=1, bos_token_id=None, tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    path = root / "model"
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path, words


def build_data(root: Path, words: list[str], rows: int, lengths: tuple[int, int], rng: random.Random) -> Path:
    path = root / "train.jsonl"
    with open(path, "w") as f:
        for _ in range(rows):
            f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(rng.randint(*lengths)))}) + "\n")
    return path


# ---- measuring -------------------------------------------------------------------------------------------
class Clock:
    """Per optimizer step: (time, input tokens so far), with the device synchronised at each mark."""

    def __init__(self, cuda: bool, pad_id: int) -> None:
        self.cuda, self.pad_id = cuda, pad_id
        self.pending: list[Any] = []  # per-forward token counts, still on the device
        self.tokens = 0
        self.marks: dict[int, tuple[float, int]] = {}

    def attach(self, model: Any) -> Any:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.get_decoder().register_forward_pre_hook(self._count, with_kwargs=True)
        return model

    def _count(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            self.pending.append(ids.ne(self.pad_id).sum())

    def mark(self, step: int) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        if self.pending:
            self.tokens += int(torch.stack([p.to("cpu") for p in self.pending]).sum())
            self.pending = []
        self.marks[step] = (time.perf_counter(), self.tokens)

    def tokens_per_s(self, first: int, last: int) -> float:
        (t0, n0), (t1, n1) = self.marks[first], self.marks[last]
        return (n1 - n0) / (t1 - t0)


@contextlib.contextmanager
def counted_loads(clock: Clock) -> Iterator[None]:
    """hfadapt loads its model inside train(): attach the clock's hook to what AutoModelForCausalLM returns."""
    from transformers import AutoModelForCausalLM

    own = "from_pretrained" in vars(AutoModelForCausalLM)
    original = AutoModelForCausalLM.from_pretrained
    AutoModelForCausalLM.from_pretrained = lambda *a, **k: clock.attach(original(*a, **k))
    try:
        yield
    finally:
        if own:
            AutoModelForCausalLM.from_pretrained = original
        else:
            del AutoModelForCausalLM.from_pretrained


@contextlib.contextmanager
def isolated(cuda: bool) -> Iterator[None]:
    """Each run starts clean: Accelerate's singletons, the CUDA peak, and (after a Liger run) the Llama module."""
    import torch
    import transformers.loss.loss_utils as loss_utils
    from accelerate.state import AcceleratorState, GradientState
    from transformers.models.llama import modeling_llama

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    saved = dict(vars(modeling_llama))
    cross_entropy = loss_utils.nn.functional.cross_entropy
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        yield
    finally:
        for name in [n for n in vars(modeling_llama) if n not in saved]:
            delattr(modeling_llama, name)
        for name, value in saved.items():
            if vars(modeling_llama).get(name) is not value:
                setattr(modeling_llama, name, value)
        loss_utils.nn.functional.cross_entropy = cross_entropy
        torch._dynamo.reset()
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()


class Skip(Exception):
    """A variant that can't run here (a package missing, a refusal): one line, and the others go on."""


# ---- the variants ------------------------------------------------------------------------------------------
def run_hfadapt(cfg: argparse.Namespace, out: Path, extra: dict[str, Any]) -> Clock:
    from hfadapt import HfadaptError, Recipe, train

    if extra.get("liger_kernel") and find_spec("liger_kernel") is None:
        raise Skip("liger-kernel is not installed (pip install 'hfadapt[liger]')")
    recipe = Recipe.from_dict({
        "name": "gpu-speed", "task": "causal-lm",
        "model": {"name_or_path": str(cfg.model_dir)},
        "data": {"train_files": [str(cfg.data)], "validation_split": None, "lm_format": "text", "packing": True,
                 "max_length": cfg.seq_len},
        "adapter": {"method": "lora", "r": LORA["r"], "alpha": LORA["alpha"], "dropout": LORA["dropout"],
                    "target_modules": "all-linear"},
        "train": {"max_steps": cfg.steps, "batch_size": cfg.batch_size, "learning_rate": LR, "seed": SEED, "log_with": [],
                  "mixed_precision": "no" if cfg.cpu_smoke else "bf16", **extra},
        "output": {"dir": str(out)},
    })
    clock = Clock(not cfg.cpu_smoke, pad_id=0)
    try:
        with counted_loads(clock):
            train(recipe, callbacks=[lambda s: clock.mark(s.global_step)])
    except HfadaptError as e:
        raise Skip(str(e)) from None
    return clock


def run_trl(cfg: argparse.Namespace, out: Path, extra: dict[str, Any]) -> Clock:
    if find_spec("trl") is None:
        raise Skip("trl is not installed (pip install trl)")
    if extra.get("use_liger_kernel") and find_spec("liger_kernel") is None:
        raise Skip("liger-kernel is not installed")
    if extra.get("use_liger_kernel") and cfg.cpu_smoke:
        raise Skip("Liger's Triton kernels need a CUDA GPU")
    import datasets
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    clock = Clock(not cfg.cpu_smoke, pad_id=0)

    class Marks(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            clock.mark(state.global_step)

    args = SFTConfig(
        output_dir=str(out), per_device_train_batch_size=cfg.batch_size, max_steps=cfg.steps, max_length=cfg.seq_len,
        packing=True, learning_rate=LR, seed=SEED, report_to=[], disable_tqdm=True,
        model_init_kwargs={"use_kernels": False},  # as hfadapt loads models: no Hub kernels fetched at run time
        **({"use_cpu": True, "bf16": False} if cfg.cpu_smoke else {}), **extra,
    )
    trainer = SFTTrainer(
        model=str(cfg.model_dir), args=args, callbacks=[Marks()],
        train_dataset=datasets.load_dataset("json", data_files=str(cfg.data), split="train"),
        peft_config=LoraConfig(task_type="CAUSAL_LM", r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                               target_modules="all-linear"),
    )
    clock.attach(trainer.model)
    trainer.train()
    return clock


VARIANTS: dict[str, Callable[[argparse.Namespace, Path], Clock]] = {
    "hfadapt": lambda c, o: run_hfadapt(c, o, {}),
    "hfadapt-liger": lambda c, o: run_hfadapt(c, o, {"liger_kernel": True}),
    "hfadapt-compile": lambda c, o: run_hfadapt(c, o, {"compile": True}),
    "trl": lambda c, o: run_trl(c, o, {}),
    "trl-no-gc": lambda c, o: run_trl(c, o, {"gradient_checkpointing": False}),
    "trl-liger": lambda c, o: run_trl(c, o, {"use_liger_kernel": True}),
}
DEFAULT = ["hfadapt", "hfadapt-liger", "hfadapt-compile", "trl", "trl-no-gc"]


# ---- main ----------------------------------------------------------------------------------------------------
def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60, help="optimizer steps per run")
    p.add_argument("--warm-steps", type=int, default=10, help="steps before the timed window (compile, autotuning)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--only", default=",".join(DEFAULT), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny model, 3 steps of each on the CPU: checks the code, measures nothing")
    p.add_argument("--verbose", action="store_true", help="show the runs' own output")
    args = p.parse_args(argv)
    if args.cpu_smoke:
        args.steps, args.warm_steps, args.batch_size, args.seq_len, args.reps = 3, 1, 2, 64, 1
    unknown = [n for n in args.only.split(",") if n and n not in VARIANTS]
    if unknown:
        p.error(f"--only: unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    if not 1 <= args.warm_steps < args.steps:
        p.error("--warm-steps: must be at least 1 and less than --steps")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_speed: needs a CUDA GPU (none here); --cpu-smoke runs the code on a tiny model on the CPU")
        return 1
    return in_temp_root("hfadapt-gpu-speed-", lambda root: bench(args, root))


def bench(args: argparse.Namespace, root: Path) -> int:
    import datasets
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    cuda = not args.cpu_smoke
    rng = random.Random(SEED)
    spec = SMOKE_MODEL if args.cpu_smoke else GPU_MODEL
    lengths = (5, 40) if args.cpu_smoke else (50, 600)
    args.model_dir, words = build_model(root, spec, args.seq_len, rng)
    # Enough rows for every step of a run without a second epoch (+20% for what packing leaves unfilled).
    rows = math.ceil(1.2 * args.steps * args.batch_size * args.seq_len / (sum(lengths) / 2 + 1))
    args.data = build_data(root, words, rows, lengths, rng)
    params = sum(p.numel() for p in transformers.AutoModelForCausalLM.from_pretrained(args.model_dir).parameters())
    device = torch.cuda.get_device_name(0) if cuda else "CPU (smoke run: the figures mean nothing)"
    print(f"gpu_speed: {device}; Llama {spec['hidden']} x {spec['layers']}, {params / 1e6:.1f}M parameters, {rows} rows, "
          f"{args.steps} steps of {args.batch_size} x {args.seq_len} tokens (timed from step {args.warm_steps}), "
          f"LoRA r={LORA['r']} all-linear; torch {torch.__version__}, transformers {transformers.__version__}"
          + "".join(f", {m} {_version(m)}" for m in ("trl", "liger-kernel", "peft")), flush=True)

    names = [n for n in args.only.split(",") if n]
    log, counter = root / "runs.log", 0

    def once(name: str) -> tuple[float, float]:
        nonlocal counter
        counter += 1
        with isolated(cuda), quiet(log, not args.verbose):
            clock = VARIANTS[name](args, root / f"run-{counter:03d}")
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        return clock.tokens_per_s(args.warm_steps, args.steps), peak

    for name in list(names):  # untimed warm-up; a variant that can't run here is dropped with one line
        try:
            once(name)
        except Skip as e:
            print(f"  {name:<16} skipped: {e}", flush=True)
            names.remove(name)
    results: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for rep in range(args.reps):
        for name in (names if rep % 2 == 0 else names[::-1]):
            tps, peak = once(name)
            results[name].append((tps, peak))
            print(f"  rep {rep + 1} {name:<16} {tps:>11,.0f} tokens/s  peak {peak:6.2f} GiB", flush=True)
    ref = results.get(REFERENCE)
    print(f"\nmedians of {args.reps} rep(s); ratios are paired (same rep) medians vs {REFERENCE}"
          + ("" if ref else f" ({REFERENCE} did not run: no ratios)"))
    print(f"{'variant':<18}{'tokens/s':>12}{'peak GiB':>10}{'speed/' + REFERENCE:>12}{'memory/' + REFERENCE:>13}")
    for name, rs in results.items():
        speed = statistics.median(r[0] for r in rs)
        peak = statistics.median(r[1] for r in rs)
        rs_speed = statistics.median(r[0] / t[0] for r, t in zip(rs, ref)) if ref else float("nan")
        rs_mem = statistics.median(r[1] / t[1] for r, t in zip(rs, ref)) if ref else float("nan")
        print(f"{name:<18}{speed:>12,.0f}{peak:>10.2f}{rs_speed:>12.3f}{rs_mem:>13.3f}")
    return 0


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
