"""GRPO training speed: hfadapt's online-rl task against TRL's GRPOTrainer + PEFT, prompts and completion tokens per second.

Run by hand (not a test; no timing is asserted anywhere):

    python benchmarks/bench_grpo.py [--prompts 256] [--steps 12] [--warm-steps 2] [--batch-size 4] [--num-generations 8]
                                    [--max-completion-length 64] [--threads 2] [--device cpu|cuda] [--only hfadapt,trl,...]
                                    [--reps 1]

The same work for every variant, in this process:
  * bench_preference.py's tiny Llama (hidden 256, 4 layers, 1,000-word vocabulary, word-level tokenizer);
  * the same prompts of 4-32 random words, and the same reward, a Python function: the share of the completion's
    words among the first 100 of the vocabulary (hfadapt: a `function` reward from a file; TRL: reward_funcs);
  * GRPO: --num-generations completions per prompt, at most --max-completion-length tokens, temperature 1, top-p 1,
    beta 0, epsilon 0.2, loss_type dapo, rewards scaled by the group's std, one update per generation; LoRA r=8
    alpha=16 dropout 0 on peft's default Llama targets, AdamW lr 1e-6, --batch-size prompts per step
    (TRL: per_device_train_batch_size = batch x generations completions), no evaluation, no checkpoints;
    fp32 on the CPU, bf16 on CUDA.
Each side otherwise keeps its defaults:
  * hfadapt              the recipe's defaults (generation by the policy's `generate`, seeded per completion)
  * trl                  GRPOTrainer(model=PeftModel, ...) with GRPOConfig defaults, which turn gradient checkpointing on
  * trl-no-checkpointing GRPOConfig(gradient_checkpointing=False), as hfadapt trains

Reported per variant, over the steps after --warm-steps (from step callbacks): prompts/s, and completion tokens/s
(the logged mean completion length of each step x its completions); end-to-end prompts/s (all prompts of the
run over the wall time of the whole training call); and prompts per CPU second of this process (steadier than
wall time on a shared machine). Ratios are against `trl` measured in the same run. Variants
alternate within each repetition; medians over --reps.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_run_options, chosen_variants, in_temp_root, machine_load, parse_loop_options, quiet, torch_setup  # noqa: E402
from bench_preference import Marks as WallMarks, build_model, isolated  # noqa: E402

LR, SEED = 1e-6, 0
LORA = {"r": 8, "alpha": 16, "dropout": 0.0}
REWARD_FILE = '''
GOOD = {f"w{i}" for i in range(100)}


def share_of_good_words(completion, **columns):
    words = completion.split()
    return sum(w in GOOD for w in words) / max(len(words), 1)
'''


class Marks(WallMarks):
    """Wall time and this process's CPU time (all threads) at the end of each optimizer step: on a shared machine
    the CPU seconds a step takes vary less than its wall time."""

    def __init__(self, cuda: bool) -> None:
        super().__init__(cuda)
        self.cpu: dict[int, float] = {}

    def mark(self, step: int) -> None:
        super().mark(step)
        self.cpu[step] = time.process_time()


def make_prompts(n: int, words: list[str], seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [{"prompt": " ".join(rng.choice(words) for _ in range(rng.randint(4, 32)))} for _ in range(n)]


def run_hfadapt(cfg: argparse.Namespace, root: Path, data: Path) -> tuple[Marks, float, dict[int, float]]:
    from hfadapt import Recipe, train

    root.mkdir(parents=True, exist_ok=True)
    (root / "bench_rewards.py").write_text(REWARD_FILE)
    recipe = Recipe.from_dict({
        "name": "bench-grpo", "task": "online-rl", "model": {"name_or_path": cfg.model_dir},
        "data": {"train_files": [str(data)], "validation_split": None},
        "rl": {"num_generations": cfg.num_generations, "max_completion_length": cfg.max_completion_length,
               "rewards": [{"type": "function", "function": "bench_rewards.py:share_of_good_words"}]},
        "adapter": {"method": "lora", **LORA},
        "train": {"max_steps": cfg.steps, "batch_size": cfg.batch_size, "learning_rate": LR, "seed": SEED, "log_with": [],
                  "logging_steps": 1, "save_steps": 10**6, "eval_steps": 10**6,
                  "mixed_precision": "bf16" if cfg.device == "cuda" else "no"},
        "output": {"dir": str(root / "out"), "overwrite": True},
    }, source=root / "recipe.yaml")
    marks = Marks(cfg.device == "cuda")
    start = time.perf_counter()
    result = train(recipe, callbacks=[lambda s: marks.mark(s.global_step)])
    wall = time.perf_counter() - start
    lengths = {h["step"]: h["train/completion_length"] for h in result.state.log_history if "train/completion_length" in h}
    return marks, wall, lengths


def run_trl(cfg: argparse.Namespace, root: Path, data: Path, extra: dict) -> tuple[Marks, float, dict[int, float]]:
    import datasets
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    namespace: dict[str, Any] = {}
    exec(REWARD_FILE, namespace)  # the same function hfadapt loads from its file
    fn = namespace["share_of_good_words"]

    def share_of_good_words(prompts: list, completions: list, **kw: Any) -> list[float]:
        return [fn(c) for c in completions]

    marks = Marks(cfg.device == "cuda")

    class Step(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            marks.mark(state.global_step)

    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(cfg.model_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(cfg.model_dir, use_kernels=False),  # as hfadapt loads it
                           LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], task_type="CAUSAL_LM"))
    args = GRPOConfig(output_dir=str(root / "trl"), per_device_train_batch_size=cfg.batch_size * cfg.num_generations,
                      num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
                      max_steps=cfg.steps, learning_rate=LR, seed=SEED, report_to=[], disable_tqdm=True, save_strategy="no",
                      logging_steps=1, **({"use_cpu": True, "bf16": False} if cfg.device == "cpu" else {"bf16": True}), **extra)
    trainer = GRPOTrainer(model=model, reward_funcs=share_of_good_words, args=args, processing_class=tok, callbacks=[Step()],
                          train_dataset=datasets.load_dataset("json", data_files=str(data), split="train"))
    trainer.train()
    wall = time.perf_counter() - start
    lengths = {h["step"]: h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h}
    return marks, wall, lengths


VARIANTS: dict[str, Callable[..., tuple[Marks, float, dict[int, float]]]] = {
    "hfadapt": run_hfadapt,
    "trl": lambda c, r, d: run_trl(c, r, d, {}),
    "trl-no-checkpointing": lambda c, r, d: run_trl(c, r, d, {"gradient_checkpointing": False}),
}
DEFAULT = list(VARIANTS)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=256, help="prompts in the train file (enough for --steps x --batch-size)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warm-steps", type=int, default=2, help="steps left out of the loop figures")
    p.add_argument("--batch-size", type=int, default=4, help="prompts per step")
    p.add_argument("--num-generations", type=int, default=8)
    p.add_argument("--max-completion-length", type=int, default=64)
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
        data = write_jsonl(root / "prompts.jsonl", make_prompts(cfg.prompts, words, SEED))
        device = torch.cuda.get_device_name(0) if cfg.device == "cuda" else f"cpu, {cfg.threads} torch threads"
        print(f"bench_grpo: {cfg.steps} steps of {cfg.batch_size} prompts x {cfg.num_generations} completions of at most "
              f"{cfg.max_completion_length} tokens (loop figures after step {cfg.warm_steps}); {device}; load {machine_load()}")
        figures: dict[str, dict[str, list[float]]] = {n: {"prompts": [], "tokens": [], "whole": [], "cpu": []} for n in names}
        failed = 0
        for rep in range(cfg.reps):
            for name in names:
                try:
                    with isolated(cfg.device == "cuda"), quiet(root / "runs.log", not cfg.verbose):
                        marks, wall, lengths = VARIANTS[name](cfg, root / name, data)
                except Exception as e:  # noqa: BLE001 - one line per variant that cannot run; the others go on
                    print(f"  {name}: FAILED: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                    failed += 1
                    continue
                seconds = marks.at[cfg.steps] - marks.at[cfg.warm_steps]
                window = range(cfg.warm_steps + 1, cfg.steps + 1)
                tokens = sum(lengths[s] for s in window) * cfg.batch_size * cfg.num_generations
                f = figures[name]
                f["prompts"].append(len(window) * cfg.batch_size / seconds)
                f["cpu"].append(len(window) * cfg.batch_size / (marks.cpu[cfg.steps] - marks.cpu[cfg.warm_steps]))
                f["tokens"].append(tokens / seconds)
                f["whole"].append(cfg.steps * cfg.batch_size / wall)
                print(f"  rep {rep + 1} {name}: {f['prompts'][-1]:,.2f} prompts/s, {f['tokens'][-1]:,.0f} completion tokens/s "
                      f"in the loop (mean length {tokens / len(window) / cfg.batch_size / cfg.num_generations:.1f}); "
                      f"{f['whole'][-1]:,.2f} prompts/s end to end; {f['cpu'][-1]:,.2f} prompts per CPU second", flush=True)
        print()
        ref = {k: statistics.median(v) for k, v in figures["trl"].items() if v} if "trl" in figures else {}
        vs = lambda x, k: f"{x / ref[k]:.2f}x" if ref.get(k) else "-"  # noqa: E731
        print(f"{'variant':<22} {'prompts/s':>10} {'vs trl':>7} {'compl. tokens/s':>16} {'vs trl':>7} {'end-to-end prompts/s':>21} "
              f"{'vs trl':>7} {'prompts/CPU-s':>14} {'vs trl':>7}")
        for name in names:
            f = figures[name]
            if not f["prompts"]:
                continue
            p, t, w, c = (statistics.median(f[k]) for k in ("prompts", "tokens", "whole", "cpu"))
            print(f"{name:<22} {p:>10,.2f} {vs(p, 'prompts'):>7} {t:>16,.0f} {vs(t, 'tokens'):>7} {w:>21,.2f} {vs(w, 'whole'):>7} "
                  f"{c:>14,.2f} {vs(c, 'cpu'):>7}")
        return 1 if failed else 0

    return in_temp_root("bench-grpo-", bench)


if __name__ == "__main__":
    sys.exit(main())
