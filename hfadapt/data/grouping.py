"""Length-grouped training order: batches of similar length, in a shuffled order.

Padded text batches cost as much as their longest row; batching rows of similar length cuts the
padding. The order is a pure function of (seed, epoch, lengths, global batch): a resumed run and
every process of a multi-process run compute the same one.

The scheme is HF Trainer's LengthGroupedSampler (megabatches), with two changes:
  * it works in units of the GLOBAL batch (train.batch_size x processes): accelerate gives
    process i the batches i, i+N, ... of the order, so a 2-process run with batch 4 sees the
    same 8 examples per step as a 1-process run with batch 8;
  * rows are sorted by length rounded up to 8 tokens, ties in shuffled order, so batch
    membership keeps changing between epochs even when one megabatch holds the whole data set;
  * after sorting, the global batches of the whole epoch are shuffled again (longest first, so
    a too-large batch fails at step 1), so consecutive steps don't walk down a length staircase.
A last, incomplete global batch stays last, where the plain shuffle has it too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from datasets import Dataset
    from torch import Tensor

    from hfadapt.core.recipe import Recipe
    from hfadapt.data.sources import Split
    from hfadapt.tasks.base import Task

MEGABATCH = 50  # global batches sorted together: larger groups tighter, smaller keeps more randomness
BUCKET = 8  # tokens: lengths are compared rounded up to a multiple of this


def grouped_order(lengths: Sequence[int], global_batch: int, seed: int, epoch: int, megabatch: int = MEGABATCH) -> list[int]:
    """A permutation of range(len(lengths)) whose consecutive `global_batch` chunks hold rows of similar length."""
    import torch

    n = len(lengths)
    g = torch.Generator().manual_seed(seed + epoch)  # the plain shuffle's seed: one (seed, epoch), one order
    perm = torch.randperm(n, generator=g).tolist()
    span = megabatch * global_batch
    batches: list[list[int]] = []
    for start in range(0, n, span):
        # By length rounded up to BUCKET tokens, stable: rows of one bucket stay in shuffled order, so
        # which of them share a batch still changes from epoch to epoch (a plain sort would fix the
        # batches of a small data set for good) at a cost of < BUCKET pad tokens per row.
        mega = sorted(perm[start:start + span], key=lambda i: -((lengths[i] + BUCKET - 1) // BUCKET))
        batches += [mega[i:i + global_batch] for i in range(0, len(mega), global_batch)]
    tail = [batches.pop()] if batches and len(batches[-1]) < global_batch else []
    if not batches:
        return [i for b in tail for i in b]
    shuffled = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    longest = max(range(len(shuffled)), key=lambda k: max(lengths[i] for i in shuffled[k]))
    shuffled[0], shuffled[longest] = shuffled[longest], shuffled[0]
    return [i for b in shuffled + tail for i in b]


LENGTH_COLUMN = "length"  # tokens per row, for rows with no single input_ids (preference pairs: the longer side)


def has_lengths(ds: Split) -> bool:
    columns = getattr(ds, "column_names", None) or ()
    return "input_ids" in columns or LENGTH_COLUMN in columns


def row_lengths(ds: Dataset, column: str = "input_ids") -> list[int]:
    """Tokens per row of a preprocessed dataset, read once (Arrow list lengths when the table is plain);
    a `length` column where there is no input_ids."""
    if column == "input_ids" and column not in ds.column_names and LENGTH_COLUMN in ds.column_names:
        return [int(x) for x in ds[LENGTH_COLUMN]]
    if getattr(ds, "_indices", None) is None and hasattr(ds, "data"):
        try:
            import pyarrow.compute as pc

            return pc.list_value_length(ds.data.column(column)).to_pylist()
        except Exception:  # noqa: BLE001 - any odd layout: read the column instead
            pass
    return [len(x) for x in ds[column]]


def wants_grouping(recipe: Recipe, task: Task, train: Split) -> tuple[bool, str]:
    """Whether this run groups by length, and why (train.group_by_length; None decides by the task).

    Default on for padded text batches: the same examples each epoch, fewer pad tokens. Off for
    packed causal-lm (blocks are all max_length: nothing to gain), streams (no lengths in advance),
    and image/audio tasks (no token rows; their batches are fixed-size or padded otherwise).
    """
    asked = recipe.train.group_by_length
    if recipe.data.streaming:
        return False, "streaming"
    has_ids = has_lengths(train)
    if asked is not None:
        if asked and not has_ids:
            from hfadapt.core.errors import HfadaptError

            raise HfadaptError(f"train.group_by_length: {task.name} training rows have no input_ids to group by; set train.group_by_length=false")
        return bool(asked), "set in the recipe"
    if (task.modality != "text" and not task.pads_token_rows) or not has_ids:
        return False, "not a padded text task"
    if getattr(recipe.data, "packing", False):
        return False, "packed"
    return True, "default for padded text"


def eval_order(task: Task, dataset: Split) -> list[int] | None:
    """Evaluation rows longest first (less padding per batch), or None for dataset order.

    Only for tasks whose evaluate() declares it puts results back in dataset order
    (`restores_eval_order = True`, through EvalContext.in_dataset_order): their metrics, loss and
    predictions file are those of dataset order, up to float rounding of the per-batch padding.
    Packed causal-lm blocks (a position_ids column) are all max_length: nothing to gain.
    """
    columns = getattr(dataset, "column_names", ())
    if not task.restores_eval_order or not has_lengths(dataset) or "position_ids" in columns:
        return None
    return longest_first(row_lengths(dataset))


def longest_first(lengths: Sequence[int]) -> list[int]:
    """Row indices by decreasing length, ties in input order: batches of this order pad least, and a
    too-large batch fails at the first one."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def in_input_order(order: Sequence[int] | None, items: Tensor | list[Any]) -> Tensor | list[Any]:
    """Results read in `order` (items[k] belongs to row order[k]) put back in row order 0, 1, ...

    `items` is a tensor (rows along dim 0) or a list; order None: already in row order.
    """
    if order is None:
        return items
    if len(items) != len(order):
        # Would silently pair results with the wrong rows: a loader that dropped or repeated rows.
        raise ValueError(f"in_input_order: {len(items)} results for {len(order)} rows")
    if hasattr(items, "index_select"):  # a tensor: one gather
        import torch

        return items[torch.argsort(torch.as_tensor(order))]
    out: list[Any] = [None] * len(order)
    for k, row in enumerate(order):
        out[row] = items[k]
    return out
