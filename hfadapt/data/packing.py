"""Packing tokenized examples into blocks of at most max_length tokens (causal-lm, data.packing).

Examples are never split across blocks and never see each other: every example restarts its
position_ids at 0, and transformers (masking_utils.find_packed_sequence_indices) turns position_ids
that restart into a block-diagonal causal mask when the batch has no attention_mask and no cache.
The first label of each example is -100: otherwise it would be predicted from the previous example.

Pure Python (no torch): preprocessing runs inside datasets.map.
"""

from __future__ import annotations

import bisect
from typing import Sequence


def pack_lengths(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Best-fit decreasing bin packing: lists of example indices whose lengths sum to <= max_length.

    Each example goes into the fullest block it still fits in (longest examples first), so blocks
    end up nearly full whatever the mix of lengths. Order within a block follows the input order.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    blocks: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, block index), sorted
    for i in order:
        n = lengths[i]
        if n > max_length:
            raise ValueError(f"example {i} has {n} tokens, more than max_length {max_length}")
        at = bisect.bisect_left(free, (n, -1))
        if at < len(free):
            room, b = free.pop(at)
            blocks[b].append(i)
            bisect.insort(free, (room - n, b))
        else:
            blocks.append([i])
            bisect.insort(free, (max_length - n, len(blocks) - 1))
    return [sorted(b) for b in blocks]


def pack_examples(input_ids: list[list[int]], labels: list[list[int]], max_length: int) -> dict[str, list[list[int]]]:
    """Concatenate examples into blocks: input_ids, labels and position_ids (restarting at 0 per example)."""
    out: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "position_ids": []}
    for block in pack_lengths([len(x) for x in input_ids], max_length):
        ids: list[int] = []
        labs: list[int] = []
        pos: list[int] = []
        for i in block:
            ids += input_ids[i]
            labs += [-100] + list(labels[i][1:])
            pos += range(len(input_ids[i]))
        out["input_ids"].append(ids)
        out["labels"].append(labs)
        out["position_ids"].append(pos)
    return out


def padded_share(lengths: Sequence[int], batch_size: int) -> float:
    """Share of real (non-pad) tokens when consecutive batches of `batch_size` are padded to their longest row."""
    real = total = 0
    for start in range(0, len(lengths), batch_size):
        chunk = lengths[start : start + batch_size]
        real += sum(chunk)
        total += max(chunk) * len(chunk)
    return real / total if total else 1.0
