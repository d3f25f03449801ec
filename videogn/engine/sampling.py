"""Training sample order that can resume at any batch.

The order of an epoch is a function of (seed, epoch) alone. The dataset draws each clip's
augmentation from (seed, epoch, index) (``VideoClipDataset.set_epoch``), so a run resumed
mid-epoch sees the same videos with the same crops and flips as the run it replaces, whatever
the number of loader workers and whichever worker decodes which sample.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (SeedSequence mixes them thoroughly)."""
    return int(np.random.SeedSequence(list(values)).generate_state(2, np.uint64)[0] >> np.uint64(1))


class ResumableTrainSampler(Sampler):
    """Shuffled, rank-sharded order of one epoch, starting at a given batch.

    Every rank gets the same number of full batches (the tail of the shuffled epoch that
    does not fill a batch on every rank is dropped), so DDP ranks stay in step.

    Args:
        num_items: dataset length.
        batch_size: clips per batch on this process.
        rank, world_size: this process's place in the group.
        seed: the run's sampler seed.
    """

    def __init__(self, num_items: int, *, batch_size: int, rank: int, world_size: int, seed: int):
        self.num_items = num_items
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.batches_per_epoch = num_items // (batch_size * world_size)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{num_items} training videos cannot fill one batch of {batch_size} clips on "
                f"each of {world_size} processes; lower data.batch_size"
            )
        self.epoch = 0
        self.start_batch = 0

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        """Iterate over ``epoch`` from its batch ``start_batch`` (0: the whole epoch)."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start batch {start_batch} outside [0, {self.batches_per_epoch}]")
        self.epoch = epoch
        self.start_batch = start_batch

    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's indices for the whole of ``epoch``."""
        generator = torch.Generator().manual_seed(_mix(self.seed, epoch))
        order = torch.randperm(self.num_items, generator=generator)
        usable = order[: self.batches_per_epoch * self.batch_size * self.world_size]
        return usable[self.rank :: self.world_size].tolist()

    def __iter__(self):
        order = self.epoch_order(self.epoch)
        start = self.start_batch * self.batch_size
        yield from order[start:]

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size
