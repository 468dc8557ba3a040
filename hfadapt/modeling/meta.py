"""Meta-device stand-ins for a batch: what each task's `plan_batch` builds for `hfadapt plan`
(shapes only, no memory)."""

from __future__ import annotations

from typing import Any


def meta_tokens(batch_size: int, length: int) -> Any:
    """A meta-device batch of token ids (no attention mask: an all-ones mask is what it means)."""
    import torch

    return torch.zeros(batch_size, length, dtype=torch.long, device="meta")


def meta_labels(*shape: int) -> Any:
    import torch

    return torch.zeros(*shape, dtype=torch.long, device="meta")
