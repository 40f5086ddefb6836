"""A sample order that can be resumed mid-epoch and split across processes."""

import torch
from torch.utils.data import Sampler


class EpochBatchSampler(Sampler):
    """The sub-batches of one epoch for one process, from a given position on.

    Each epoch is a permutation drawn from ``(seed, epoch)`` alone, cut into global sub-batches
    of ``batch_size * world_size`` (the incomplete tail dropped), of which process ``rank`` takes
    its slice: one process with batch 4 sees what two with batch 2 see together, and ``skip``
    sub-batches into an epoch is a position a resumed run returns to exactly."""

    def __init__(self, n_samples, batch_size, seed, rank=0, world_size=1):
        self.n_samples, self.batch_size, self.seed = n_samples, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = self.skip = 0

    def set_epoch(self, epoch, skip=0):
        """Iterate over ``epoch`` from its ``skip``-th sub-batch on."""
        self.epoch, self.skip = epoch, skip

    @staticmethod
    def batches_per_epoch(n_samples, batch_size, world_size=1):
        return n_samples // (batch_size * world_size)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n_samples, generator=generator).tolist()
        global_batch = self.batch_size * self.world_size
        for k in range(self.skip, self.n_samples // global_batch):
            start = k * global_batch + self.rank * self.batch_size
            yield order[start : start + self.batch_size]

    def __len__(self):
        return self.batches_per_epoch(self.n_samples, self.batch_size, self.world_size) - self.skip
