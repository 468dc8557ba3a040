"""The train split of a data.streaming recipe, read forever, epoch after epoch, one share per process.

Each epoch re-reads the `datasets.IterableDataset` through a shuffle buffer seeded with
(train.seed + epoch), then `split_dataset_by_node` gives process r of n its share: whole shards
when the number of files divides among the processes, else every n-th example; either way each
example is read by exactly one process per epoch. The stream never ends: training stops at
train.max_steps, and processes never wait for one another at an epoch's end.

Resume: the loop counts the micro-batches a run has consumed; a resumed run re-reads the same
stream (the order is a function of the seed) and drops that many batches. datasets' own
`IterableDataset.state_dict()` would be cheaper, but it loses the shuffle buffer's content on
resume (its documentation says so), which would change the examples after the checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

import torch

from hfadapt.core.errors import HfadaptError

if TYPE_CHECKING:
    from datasets import IterableDataset


class EpochStream(torch.utils.data.IterableDataset):
    def __init__(self, dataset: "IterableDataset", seed: int, shuffle_buffer: int, rank: int, world_size: int) -> None:
        self.dataset, self.seed, self.shuffle_buffer = dataset, seed, shuffle_buffer
        self.rank, self.world_size = rank, world_size

    def epoch(self, epoch: int) -> Any:
        """One process's share of one epoch, as a `datasets.IterableDataset`."""
        from datasets.distributed import split_dataset_by_node

        ds = self.dataset
        if self.shuffle_buffer:
            ds = ds.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
        ds = split_dataset_by_node(ds, rank=self.rank, world_size=self.world_size)
        # After the split, which starts a new dataset at epoch 0: the shard order and the buffer's
        # RNG are then shifted by the epoch, so each epoch has its own order.
        ds.set_epoch(epoch)
        return ds

    def __iter__(self) -> Iterator[dict]:
        epoch = 0
        while True:
            seen = 0
            for example in self.epoch(epoch):
                seen += 1
                yield example
            if seen == 0:
                raise HfadaptError("data: the streamed train split gives this process no examples")
            epoch += 1
