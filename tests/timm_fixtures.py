"""Tiny timm backbones saved the way `timm/...` repos sit on the Hub, and a pattern dataset.

A Hub timm repo is config.json (`architecture`, `num_classes`, `num_features`, `global_pool`,
`pretrained_cfg` with input_size/interpolation/crop_pct/mean/std, `label_names`) and
model.safetensors holding the plain timm state dict. Real repos carry no `model_args`; tiny ones
need them (the architecture's small variant), and without `num_classes`, as the Hub has it.

The backbones are "pretrained" for a few dozen steps on the same four patterns the fine-tuning
data shows (stripes across, stripes down, checkers, dots; random colours), under ImageNet-style
class names of their own, so a test can tell pretrained weights from random ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PATTERNS = ("checker", "dots", "hstripes", "vstripes")
BASE_NAMES = [f"imagenet class {i}" for i in range(1000)]  # what the base's config names its classes
SIZE = 32
PRETRAINED_CFG = {
    "input_size": [3, SIZE, SIZE], "interpolation": "bicubic", "crop_pct": 0.9, "crop_mode": "center",
    "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "num_classes": 1000,
}
ARCHS = {
    # ViT: attention + MLP blocks (qkv, attn.proj, fc1, fc2) and a conv patch embedding named proj
    "vit": ("vit_tiny_patch16_224", {"img_size": SIZE, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}),
    # ResNet: a ConvNet whose classifier is `fc`
    "resnet": ("resnet18", {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "stem_width": 16}),
}


def pattern_image(kind: int, rng: Any, size: int = 40) -> Any:
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size]
    period = int(rng.integers(4, 8))
    phase = int(rng.integers(0, period))
    if kind == 0:
        mask = ((xx + phase) // (period // 2 + 1) + (yy + phase) // (period // 2 + 1)) % 2 == 0
    elif kind == 1:
        mask = (((xx + phase) % period) - period / 2) ** 2 + (((yy + phase) % period) - period / 2) ** 2 < (period / 3) ** 2
    elif kind == 2:
        mask = ((yy + phase) % period) < period // 2
    else:
        mask = ((xx + phase) % period) < period // 2
    fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    while abs(int(fg.sum()) - int(bg.sum())) < 150:
        fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    arr = np.where(mask[..., None], fg, bg).astype(np.int16) + rng.integers(-20, 21, (size, size, 3))
    return arr.clip(0, 255).astype(np.uint8)


def write_pattern_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """root/<split>/<pattern>/<i>.png"""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for kind, name in enumerate(PATTERNS):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(pattern_image(kind, rng)).save(folder / f"{i}.png")
    return root


def build_timm_model(arch: str, model_args: dict[str, Any], pretrain_steps: int, seed: int = 0) -> Any:
    import numpy as np
    import timm
    import torch
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    torch.manual_seed(seed)
    model = timm.create_model(arch, num_classes=1000, **model_args)
    if pretrain_steps:
        transform = create_transform(**resolve_data_config(PRETRAINED_CFG), is_training=False)
        rng = np.random.default_rng(seed + 100)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
        model.train()
        for _ in range(pretrain_steps):
            kinds = rng.integers(0, len(PATTERNS), 32)
            x = torch.stack([transform(Image.fromarray(pattern_image(int(k), rng))) for k in kinds])
            loss = torch.nn.functional.cross_entropy(model(x), torch.as_tensor(kinds))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def save_like_hub(model: Any, folder: Path, arch: str, model_args: dict[str, Any], with_num_classes_arg: bool = False) -> Path:
    """config.json + model.safetensors as on the Hub (with_num_classes_arg: as timm's save_for_hf writes model_args)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    args = {**model_args, **({"num_classes": 1000} if with_num_classes_arg else {})}
    config = {
        "architecture": arch,
        "num_classes": 1000,
        "num_features": model.num_features,
        "global_pool": getattr(model, "global_pool", "avg") if isinstance(getattr(model, "global_pool", None), str) else "avg",
        "model_args": args,
        "label_names": BASE_NAMES,
        "pretrained_cfg": {**PRETRAINED_CFG, "classifier": model.pretrained_cfg["classifier"], "first_conv": model.pretrained_cfg["first_conv"]},
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    return folder
