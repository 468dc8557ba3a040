"""The towers of a vision-language model (AutoModelForImageTextToText): vision encoder, multimodal
projector and language model, found by the module names transformers gives them, and the adapter
targets that follow from them (LoRA on the language model; optionally the vision encoder; the
projector trained fully or frozen).

Names per family (transformers 5): Idefics3/SmolVLM `model.vision_model`, `model.connector`,
`model.text_model`; Qwen2-VL/2.5-VL `model.visual` (its projector `model.visual.merger`),
`model.language_model`; LLaVA, PaliGemma, Gemma 3 `model.vision_tower`, `model.multi_modal_projector`,
`model.language_model`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hfadapt.core.errors import HfadaptError

if TYPE_CHECKING:
    from torch.nn import Module

VISION_NAMES = ("vision_tower", "visual", "vision_model", "vision_encoder")
PROJECTOR_NAMES = ("multi_modal_projector", "connector", "merger", "mm_projector", "embed_vision")
LANGUAGE_NAMES = ("language_model", "text_model")


@dataclass(frozen=True)
class Towers:
    """Full module names of the three parts ('' where the model has none)."""

    vision: str
    projector: str
    language: str

    def tower_of(self, name: str) -> str:
        """'projector', 'vision', 'language' or 'other' (the LM head, embeddings outside the towers) for a module name."""
        for tower in ("projector", "vision", "language"):  # the projector may sit inside the vision tower (Qwen2-VL)
            prefix = getattr(self, tower)
            if prefix and (name == prefix or name.startswith(prefix + ".")):
                return tower
        return "other"


def find_towers(model: Module) -> Towers:
    """The first module named like each tower (shortest path first), or '' for a part the model lacks."""
    found = {"vision": "", "projector": "", "language": ""}
    for name, _ in sorted(model.named_modules(), key=lambda item: item[0].count(".")):
        leaf = name.rsplit(".", 1)[-1]
        for tower, names in (("vision", VISION_NAMES), ("projector", PROJECTOR_NAMES), ("language", LANGUAGE_NAMES)):
            if not found[tower] and leaf in names:
                found[tower] = name
    return Towers(**found)


def linear_leaves(model: Module, towers: Towers, tower: str) -> list[str]:
    """Leaf names of the linear layers of one tower."""
    import torch.nn as nn

    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, nn.Linear) and towers.tower_of(name) == tower})


def vlm_targets(model: Module, vision: bool, train_projector: bool, where: str) -> tuple[str, list[str]]:
    """(peft target_modules as a regex, modules_to_save): every linear layer of the language model, and of
    the vision encoder (not its projector) with `vision`; the projector in modules_to_save with
    `train_projector`. A regex, because leaf names (q_proj, fc1) recur in both towers."""
    towers = find_towers(model)
    if not towers.language:
        raise HfadaptError(f"model.name_or_path: found no language model ({', '.join(LANGUAGE_NAMES)}) in {type(model).__name__} ({where})")
    parts = [_tower_pattern(towers.language, linear_leaves(model, towers, "language"), None)]
    if vision:
        if not towers.vision:
            raise HfadaptError(f"model.adapt_vision: found no vision tower ({', '.join(VISION_NAMES)}) in {type(model).__name__} ({where})")
        inner = towers.projector[len(towers.vision) + 1:] if towers.tower_of(towers.projector) == "projector" and towers.projector.startswith(towers.vision + ".") else None
        parts.append(_tower_pattern(towers.vision, linear_leaves(model, towers, "vision"), inner))
    saved = []
    if train_projector:
        if not towers.projector:
            raise HfadaptError(f"model.train_projector: found no projector ({', '.join(PROJECTOR_NAMES)}) in {type(model).__name__} ({where})")
        saved.append(towers.projector)
    return "^(?:" + "|".join(parts) + ")$", saved


def _tower_pattern(prefix: str, leaves: list[str], exclude: str | None) -> str:
    skip = f"(?!{re.escape(exclude)}\\.)" if exclude else ""
    return f"{re.escape(prefix)}\\.{skip}(?:.*\\.)?(?:{'|'.join(map(re.escape, leaves))})"
