"""Checks that need CUDA GPUs (run by hand on a GPU machine; CI has none). About 13 minutes on one H200 (8 without speed).

Sections (all by default; `--only SECTION` runs one):

  amp     the offline demo recipe trains in fp16 (with GradScaler), bf16 and fp32; an fp16 run
          interrupted and resumed matches the uninterrupted one step for step.
  launch  every Accelerate config in examples/launch/ trains a tiny Llama LoRA recipe (built here,
          offline) for a fixed number of steps, on 1 GPU and on all visible GPUs, with the same
          global batch: per-step losses must match the DDP run (fp32, relative tolerance LOSS_RTOL).
          The FSDP2 run on all GPUs is also stopped and resumed (--resume) and must continue exactly,
          and its adapter folder must load with plain peft and equal the DDP run's adapter.
          DeepSpeed configs are skipped with a line when deepspeed is not installed; multi-GPU
          variants when only one GPU is visible.
  speed   benchmarks/gpu_speed.py with its defaults (~5 min): causal-lm tokens/s and peak memory of
          hfadapt (defaults / liger_kernel / compile) against TRL SFTTrainer + PEFT. A measurement,
          not a pass/fail check: it fails only when a variant cannot run.
  preference  benchmarks/bench_preference.py on CUDA (bf16, ~2 min): DPO pairs/s of hfadapt (defaults /
          without length grouping / data.reference=precomputed) against TRL DPOTrainer + PEFT (and its
          precompute_ref_log_probs). A measurement like speed: it fails only when a variant cannot run.
  grpo    benchmarks/bench_grpo.py on CUDA (bf16, ~3 min): GRPO prompts/s and completion tokens/s of hfadapt's
          online-rl against TRL GRPOTrainer + PEFT (with its default gradient checkpointing, and without).
          A measurement like speed: it fails only when a variant cannot run.

    python benchmarks/gpu_check.py [--only amp|launch|speed|preference|grpo]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_DIR = ROOT / "examples" / "launch"
LOSS_RTOL = 1e-3  # fp32: different process counts sum gradients in a different order, nothing more
WEIGHT_ATOL = 1e-4
GLOBAL_BATCH = 8
STEPS = 8
STOP_AT = 4  # the resume check: a first run of STOP_AT steps, then --resume to STEPS


class Crash(Exception):
    pass


def status(good: bool, text: str) -> bool:
    print(f"[{'ok' if good else 'FAIL'}] {text}", flush=True)
    return good


# ---- amp -------------------------------------------------------------------------------------------
def amp_section() -> bool:
    from hfadapt import Recipe, train

    def recipe(out: Path, **train_overrides: object) -> Recipe:
        overrides = [f"output.dir={out}", "train.log_with=[]", "train.eval_steps=null", "eval.best_metric=null"]
        overrides += [f"train.{k}={v}" for k, v in train_overrides.items()]
        return Recipe.from_yaml("text/tiny-sentiment-offline", overrides=overrides)

    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for mp in ("fp16", "bf16", "no", "auto"):  # auto: bf16 on Ampere and newer
            res = train(recipe(root / mp, mixed_precision=mp, max_steps=60))
            first, last = sum(res.losses[:10]) / 10, sum(res.losses[-10:]) / 10
            good = all(l == l for l in res.losses) and last < first
            ran = json.loads((Path(res.output_dir) / "run_info.json").read_text())["mixed_precision"]
            good &= ran == ({"auto": "bf16" if torch.cuda.is_bf16_supported() else "fp16"}.get(mp, mp))
            ok &= status(good, f"mixed_precision={mp} (ran {ran}): loss {first:.4f} -> {last:.4f}, eval/accuracy {res.metrics['eval/accuracy']:.3f}")

        common = {"mixed_precision": "fp16", "max_steps": 12, "save_steps": 4}
        full = train(recipe(root / "full", **common))

        def crash(state):
            if state.global_step == 10:
                raise Crash()

        r = recipe(root / "resumed", **common)
        try:
            train(r, callbacks=[crash])
        except Crash:
            pass
        resumed = train(r, resume=True)
        diff = max(abs(a - b) for a, b in zip(full.losses, resumed.losses))
        good = len(full.losses) == len(resumed.losses) and diff < 1e-4
        ok &= status(good, f"fp16 resume: {len(resumed.losses)} steps, max per-step loss difference {diff:.2e}")
        print("full   :", [round(x, 5) for x in full.losses])
        print("resumed:", [round(x, 5) for x in resumed.losses])
    return ok


# ---- launch ----------------------------------------------------------------------------------------
def tiny_lm(root: Path) -> Path:
    """A 2-layer Llama (the shipped FSDP2 example's architecture), a word-level tokenizer and a text file."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = "red green blue yellow black white one two three four five six seven eight nine ten the a and is was".split()
    vocab = ["<pad>", "<eos>", "<unk>"] + words
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>", model_max_length=64)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
    )
    torch.manual_seed(0)
    model_dir = root / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    g = torch.Generator().manual_seed(0)
    rows = [" ".join(words[i] for i in torch.randint(0, len(words), (12,), generator=g).tolist()) for _ in range(160)]
    (root / "text.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in rows))
    return model_dir


def write_recipe(root: Path, model_dir: Path) -> Path:
    import yaml

    recipe = {
        "name": "gpu-check-lm",
        "task": "causal-lm",
        "model": {"name_or_path": str(model_dir)},
        "data": {"train_files": [str(root / "text.jsonl")], "max_length": 16},
        "adapter": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        # constant LR: a run stopped at STOP_AT and resumed to STEPS follows the same schedule as one of STEPS
        "train": {"max_steps": STEPS, "save_steps": STOP_AT, "learning_rate": 1e-2, "scheduler": "constant", "logging_steps": 1,
                  "seed": 3, "log_with": [], "mixed_precision": "no"},
        "eval": {"best_metric": None},
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def launch(config: Path, n: int, recipe: Path, out: Path, *extra: str) -> tuple[bool, str]:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes", str(n),
           "--main_process_port", "29555", "-m", "hfadapt", "train", str(recipe),
           f"output.dir={out}", f"train.batch_size={GLOBAL_BATCH // n}", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    return proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


def losses(run: Path) -> list[float]:
    return json.loads((run / "trainer_state.json").read_text())["losses"]


def loss_parity(name: str, got: list[float], ref: list[float]) -> bool:
    if len(got) != len(ref):
        return status(False, f"{name}: {len(got)} steps, the DDP run {len(ref)}")
    worst = max(abs(a - b) / max(abs(b), 1e-8) for a, b in zip(got, ref))
    diff = max(abs(a - b) for a, b in zip(got, ref))
    return status(worst <= LOSS_RTOL, f"{name}: loss parity with DDP over {len(got)} steps, max abs diff {diff:.2e} (relative {worst:.1e}, tolerance {LOSS_RTOL:g})")


def adapter_check(name: str, run: Path, ref_run: Path, base: Path) -> bool:
    """The adapter folder loads with plain peft onto an unsharded base and holds the DDP run's weights."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    try:
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(run / "adapter"))
        model(input_ids=torch.tensor([[3, 4, 5]]))
    except Exception as e:  # noqa: BLE001 - a check: report and go on
        return status(False, f"{name}: adapter does not load with plain peft: {type(e).__name__}: {e}")
    got, ref = load_file(str(run / "adapter" / "adapter_model.safetensors")), load_file(str(ref_run / "adapter" / "adapter_model.safetensors"))
    if sorted(got) != sorted(ref):
        return status(False, f"{name}: adapter keys differ from the DDP run's")
    diff = max((got[k].float() - ref[k].float()).abs().max().item() for k in ref)
    return status(diff <= WEIGHT_ATOL, f"{name}: adapter loads with plain peft; max weight diff to the DDP adapter {diff:.2e} (tolerance {WEIGHT_ATOL:g})")


def launch_section() -> bool:
    import importlib.util

    gpus = torch.cuda.device_count()
    has_deepspeed = importlib.util.find_spec("deepspeed") is not None
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = tiny_lm(root)
        recipe = write_recipe(root, base)
        most = max(k for k in range(1, min(gpus, GLOBAL_BATCH) + 1) if GLOBAL_BATCH % k == 0)  # the global batch splits evenly
        counts = [1, most] if most > 1 else [1]
        if gpus == 1:
            print("[skip] multi-GPU variants: only 1 GPU visible")
        runs: dict[tuple[str, int], Path] = {}
        for config in sorted(LAUNCH_DIR.glob("*.yaml")):
            if config.stem.startswith("deepspeed") and not has_deepspeed:
                print(f"[skip] {config.name}: deepspeed is not installed (pip install deepspeed)")
                continue
            for n in counts if config.stem != "single-gpu" else [1]:
                out = root / f"{config.stem}-{n}"
                good, tail = launch(config, n, recipe, out)
                if not status(good, f"{config.name} on {n} GPU(s): trained {STEPS} steps" if good else f"{config.name} on {n} GPU(s) failed:\n{tail}"):
                    ok = False
                    continue
                runs[(config.stem, n)] = out

        ref_key = ("multi-gpu-ddp", max(counts))
        if ref_key not in runs:
            return status(False, f"no DDP reference run ({ref_key[0]} on {ref_key[1]} GPU(s))")
        ref = runs[ref_key]
        print("DDP losses:", [round(x, 5) for x in losses(ref)])
        for (stem, n), run in runs.items():
            if (stem, n) != ref_key:
                ok &= loss_parity(f"{stem} on {n} GPU(s)", losses(run), losses(ref))

        fsdp = runs.get(("fsdp2-lora", max(counts)))
        if fsdp is None:
            return status(False, "no FSDP2 run to check resume and the adapter of")
        ok &= adapter_check(f"fsdp2-lora on {max(counts)} GPU(s)", fsdp, ref, base)
        # Resume: a run of STOP_AT steps (its last checkpoint at STOP_AT), then --resume up to STEPS.
        config, n, out = LAUNCH_DIR / "fsdp2-lora.yaml", max(counts), root / "fsdp2-resumed"
        good, tail = launch(config, n, recipe, out, f"train.max_steps={STOP_AT}")
        if good:
            good, tail = launch(config, n, recipe, out, "--resume", f"train.max_steps={STEPS}")
        if not status(good, f"fsdp2-lora resume on {n} GPU(s) ran" if good else f"fsdp2-lora resume on {n} GPU(s) failed:\n{tail}"):
            return False
        a, b = losses(out), losses(fsdp)
        diff = max(abs(x - y) for x, y in zip(a, b))
        ok &= status(len(a) == len(b) and diff == 0.0, f"fsdp2-lora resumed at step {STOP_AT}: {len(a)} steps, max per-step loss difference to the uninterrupted FSDP2 run {diff:.2e} (must be 0)")
        ok &= adapter_check("fsdp2-lora resumed", out, ref, base)
    return ok


def speed_section() -> bool:
    sys.path.insert(0, str(Path(__file__).parent))  # run as a script: its sibling is importable
    import gpu_speed

    return gpu_speed.main([]) == 0


def preference_section() -> bool:
    sys.path.insert(0, str(Path(__file__).parent))  # run as a script: its sibling is importable
    import bench_preference

    return bench_preference.main(["--device", "cuda", "--pairs", "1024", "--steps", "60", "--warm-steps", "10",
                                  "--batch-size", "16", "--reps", "2"]) == 0


def grpo_section() -> bool:
    sys.path.insert(0, str(Path(__file__).parent))  # run as a script: its sibling is importable
    import bench_grpo

    return bench_grpo.main(["--device", "cuda", "--prompts", "512", "--steps", "20", "--warm-steps", "4", "--batch-size", "8",
                            "--num-generations", "8", "--max-completion-length", "128", "--reps", "2"]) == 0


SECTIONS = {"amp": amp_section, "launch": launch_section, "speed": speed_section, "preference": preference_section,
            "grpo": grpo_section}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SECTIONS), help="run one section")
    args = parser.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    print(f"device: {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    ok = True
    for name, section in SECTIONS.items():
        if args.only in (None, name):
            print(f"---- {name} ----", flush=True)
            ok &= section()
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
