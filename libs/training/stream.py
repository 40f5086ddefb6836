"""The endless, resumable stream of training sub-batches."""

from torch.utils.data import DataLoader

from ..datasets import DatasetError
from ..datasets.sampler import EpochBatchSampler


def batch_stream(dataset, batch_size, seed, num_workers, start=0, rank=0, world_size=1,
                 pin_memory=False, name="the training split"):
    """Endless sub-batches, epoch after epoch, beginning ``start`` sub-batches in.

    A new DataLoader per epoch hands the epoch number to the workers, so every
    augmentation is drawn from ``(seed, epoch, index)`` whatever the worker count.
    ``name`` says which data it is in the error raised (on the first ``next``)
    when the dataset cannot fill a single batch.
    """
    per_epoch = EpochBatchSampler.batches_per_epoch(len(dataset), batch_size, world_size)
    if per_epoch < 1:
        raise DatasetError(
            f"{name} has {len(dataset)} images, "
            f"fewer than one batch of {batch_size} x {world_size} process(es)"
        )
    epoch, skip = divmod(start, per_epoch)
    while True:
        dataset.set_epoch(epoch)
        sampler = EpochBatchSampler(
            len(dataset), batch_size, seed, epoch, rank, world_size, skip
        )
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=num_workers,
            pin_memory=pin_memory,
        )
        yield from loader
        epoch, skip = epoch + 1, 0
