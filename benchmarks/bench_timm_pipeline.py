"""Images/s of hfadapt's image pipeline vs a hand-written timm + peft loop, and where the time goes.

Run by hand (not a test):

    python benchmarks/bench_timm_pipeline.py [--steps 20] [--batch 32] [--size 224] [--arch efficientnet_lite0] [--threads 1]
    python benchmarks/bench_timm_pipeline.py --arch resnet50            # a real-size ResNet at 224 px
    python benchmarks/bench_timm_pipeline.py --steps 3 --batch 4 --size 64   # a quick check that it runs

Both variants, in this process, on the CPU:
  * the same timm model with random weights, saved like a `timm/...` Hub repo (config.json with
    pretrained_cfg at --size, model.safetensors), 1000-class head replaced by a 4-class one;
  * the same image folder (512 PNGs, 4 classes, 120x120), decoded from disk every step;
  * the same train transform (timm's create_transform(is_training=True) from the pretrained_cfg),
    LoRA r=8 on hfadapt's family default targets, head trained fully, AdamW, batch, steps.
  * hfadapt with its defaults (adapter.dropout not set: no dropout on a ConvNet's conv LoRA, no LoRA on
    the stem); the hand-written loop with peft's defaults (lora_dropout 0) on the same targets.
  * real-size models built from a config (timm.create_model(arch, pretrained=False), random weights):
    the architecture and input size of the Hub checkpoints, nothing downloaded.

Figures: images/s over steps 2..N (the first, warm-up step excluded), and for each variant the
share of the loop spent producing batches (decode + augment + collate: iterating the same
dataloader with no model) vs in the model (forward, backward, optimizer step).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import machine_load, quiet

CLASSES = ("a", "b", "c", "d")


def make_data(root: Path, n: int) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / "data" / "train" / CLASSES[i % 4]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (120, 120, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root / "data"


def make_model(root: Path, arch: str, size: int) -> Path:
    import timm
    from safetensors.torch import save_file

    model = timm.create_model(arch, pretrained=False, num_classes=1000)
    folder = root / arch
    folder.mkdir()
    cfg = {k: v for k, v in model.pretrained_cfg.items() if k in ("interpolation", "crop_pct", "crop_mode", "mean", "std", "classifier", "first_conv")}
    cfg.update(input_size=[3, size, size], num_classes=1000)
    (folder / "config.json").write_text(json.dumps({"architecture": arch, "num_classes": 1000, "num_features": model.num_features, "pretrained_cfg": cfg}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    return folder


def run_hfadapt(model_dir: Path, data: Path, out: Path, steps: int, batch: int) -> tuple[float, float]:
    from hfadapt import Recipe, train

    marks: dict[int, float] = {}
    recipe = Recipe.from_dict({
        "name": "bench", "task": "image-classification", "model": {"name_or_path": str(model_dir)},
        "data": {"dataset": str(data), "validation_split": None, "augment": True},
        "adapter": {"method": "lora", "r": 8, "alpha": 16},  # hfadapt's defaults: adapter.dropout not set
        "train": {"max_steps": steps, "batch_size": batch, "learning_rate": 1e-3, "log_with": [], "logging_steps": 1000},
        "output": {"dir": str(out), "overwrite": True},
    })
    train(recipe, callbacks=[lambda s: marks.__setitem__(s.global_step, time.perf_counter())])
    loop = marks[steps] - marks[1]
    # the same dataloader with no model: decode + augment + collate
    from hfadapt.tasks import TASKS
    from hfadapt.training.coordinator import _setup_data, _train_loader_factory
    from accelerate import Accelerator

    splits = _setup_data(recipe, TASKS.get("image-classification"), Accelerator(cpu=True))
    loader = _train_loader_factory(recipe, TASKS.get("image-classification"), splits, Accelerator(cpu=True))(0)
    it = iter(loader)
    next(it)
    t = time.perf_counter()
    for _ in range(steps - 1):
        next(it)
    return loop, time.perf_counter() - t


def run_hand(model_dir: Path, data: Path, steps: int, batch: int) -> tuple[float, float]:
    import timm
    import torch
    from peft import LoraConfig, get_peft_model
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    cfg = json.loads((model_dir / "config.json").read_text())
    model = timm.create_model(f"local-dir:{model_dir}", pretrained=True, num_classes=len(CLASSES))
    from timm.layers import freeze_batch_norm_2d

    model = freeze_batch_norm_2d(model)
    transform = create_transform(**resolve_data_config(cfg["pretrained_cfg"]), is_training=True)
    files = sorted((data / "train").glob("*/*.png"))
    labels = [CLASSES.index(p.parent.name) for p in files]

    class Folder(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(files)

        def __getitem__(self, i: int):
            with Image.open(files[i]) as im:
                return transform(im.convert("RGB")), labels[i]

    # hfadapt's default targets for this model, so both adapt the same layers
    from hfadapt.modeling.timm_models import default_targets

    class Wrap:  # default_targets looks for the wrapper's timm_model
        def __init__(self, m):
            self.timm_model = m

        def named_modules(self):
            return (("timm_model" + ("." + n if n else ""), m) for n, m in self.timm_model.named_modules())

        def modules(self):
            return self.timm_model.modules()

    targets = default_targets(Wrap(model))
    head = model.pretrained_cfg["classifier"]
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets, modules_to_save=[head]))
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-3)
    g = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(Folder(), batch_size=batch, sampler=torch.randperm(len(files), generator=g).tolist())
    peft_model.train()
    marks = {}
    for step, (x, y) in enumerate(loader, start=1):
        loss = torch.nn.functional.cross_entropy(peft_model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(peft_model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        marks[step] = time.perf_counter()
        if step == steps:
            break
    it = iter(loader)
    next(it)
    t = time.perf_counter()
    for _ in range(steps - 1):
        next(it)
    return marks[steps] - marks[1], time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--arch", default="efficientnet_lite0")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench-timm-"))
    try:
        data = make_data(root, max(512, args.steps * args.batch))
        model_dir = make_model(root, args.arch, args.size)
        images = (args.steps - 1) * args.batch
        with quiet(root / "log.txt", not args.verbose):
            ours = run_hfadapt(model_dir, data, root / "run", args.steps, args.batch)
            hand = run_hand(model_dir, data, args.steps, args.batch)
        print(f"{args.arch} at {args.size}px, batch {args.batch}, steps 2..{args.steps} ({images} images), "
              f"{args.threads} thread(s), load {machine_load()}")
        for name, (loop, data_s) in (("hfadapt", ours), ("timm+peft by hand", hand)):
            print(f"  {name:<18} {images / loop:7.1f} images/s   loop {loop:6.2f}s   "
                  f"data (decode+augment+collate) {data_s:6.2f}s = {100 * data_s / loop:4.1f}%   model {100 * (1 - data_s / loop):4.1f}%")
        print(f"  hfadapt / hand: {hand[0] / ours[0]:.2f}x the throughput; "
              f"loop time ratio {ours[0] / hand[0]:.2f}x (goal: at most 1.05x)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
