"""Checks that need a CUDA GPU (run by hand on a GPU machine; CI has none).

1. Mixed precision: the offline demo recipe trains in fp16 (with GradScaler) and bf16 on the GPU.
2. Exact resume under fp16: an interrupted-and-resumed run against an uninterrupted one,
   GradScaler state included; prints the largest per-step loss difference.
3. Prints the device and the per-step losses, so a human can judge them.

    python benchmarks/gpu_check.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from hfadapt import Recipe, train


class Crash(Exception):
    pass


def recipe(out: Path, **train_overrides: object) -> Recipe:
    overrides = [f"output.dir={out}", "train.log_with=[]", "train.eval_steps=null", "eval.best_metric=null"]
    overrides += [f"train.{k}={v}" for k, v in train_overrides.items()]
    return Recipe.from_yaml("text/tiny-sentiment-offline", overrides=overrides)


def main() -> int:
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for mp in ("fp16", "bf16", "no"):
            res = train(recipe(root / mp, mixed_precision=mp, max_steps=60))
            first, last = sum(res.losses[:10]) / 10, sum(res.losses[-10:]) / 10
            good = all(l == l for l in res.losses) and last < first
            ok &= good
            print(f"[{'ok' if good else 'FAIL'}] mixed_precision={mp}: loss {first:.4f} -> {last:.4f}, eval/accuracy {res.metrics['eval/accuracy']:.3f}")

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
        same_len = len(full.losses) == len(resumed.losses)
        good = same_len and diff < 1e-4
        ok &= good
        print(f"[{'ok' if good else 'FAIL'}] fp16 resume: {len(resumed.losses)} steps, max per-step loss difference {diff:.2e}")
        print("full   :", [round(x, 5) for x in full.losses])
        print("resumed:", [round(x, 5) for x in resumed.losses])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
