"""Training order and augmentation draws as pure functions of (seed, epoch, sample), for exact resume.

A resumed run must see the same batches, in the same order, with the same augmentations as the
uninterrupted run. Random states kept inside a DataLoader (the shuffle's generator, each worker's
transform states) cannot be checkpointed from the main process, so nothing here keeps any:

- :class:`EpochSampler` shuffles with a generator seeded by ``seed + epoch`` (torch's
  ``DistributedSampler``, so DDP shards the same permutation) and yields :class:`SampleKey`
  ``(epoch, index)`` items instead of bare indices; after a mid-epoch checkpoint it skips the
  samples of the batches already trained.
- :class:`~medseg.data.base.SliceDataset` seeds its random transforms from
  :func:`sample_seed` ``(seed, epoch, index)`` for each key, so a sample's augmentation does not depend
  on the worker that loads it, on the number of workers, or on what was loaded before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from torch.utils.data import Dataset, DistributedSampler


class SampleKey(NamedTuple):
    """What :class:`EpochSampler` yields: the epoch and the dataset index."""

    epoch: int
    index: int


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample's augmentation, independent for every (seed, epoch, index)."""
    return int(np.random.SeedSequence([int(seed) % 2**32, int(epoch), int(index)]).generate_state(1)[0])


class EpochSampler(DistributedSampler):
    """Seeded shuffle per epoch (optionally sharded over ``num_replicas``) yielding :class:`SampleKey`.

    ``epoch`` and ``skip`` (samples of this replica's share to leave out of the first epoch it iterates,
    i.e. those trained before a mid-epoch checkpoint) come from the trainer's restored loop state.
    """

    def __init__(self, dataset: Dataset, *, seed: int, num_replicas: int = 1, rank: int = 0,
                 epoch: int = 0, skip: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=int(seed))
        self.epoch = int(epoch)
        self.skip = int(skip)

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.epoch:
            self.skip = 0  # the skip belongs to the epoch the checkpoint was taken in
        super().set_epoch(int(epoch))

    def __iter__(self) -> Iterator[SampleKey]:  # type: ignore[override]
        epoch, skip = self.epoch, self.skip
        self.skip = 0
        indices = list(super().__iter__())[skip:]
        return iter([SampleKey(epoch, int(i)) for i in indices])
