"""The endless, resumable stream of training sub-batches."""

from torch.utils.data import DataLoader

from ..datasets import DatasetError
from ..datasets.sampler import EpochBatchSampler
from .interrupt import ignore_stop_signals


def batch_stream(dataset, batch_size, seed, num_workers, start=0, rank=0, world_size=1,
                 pin_memory=False, name="the training split"):
    """Endless sub-batches, epoch after epoch, beginning ``start`` sub-batches in.

    A new DataLoader per epoch hands the epoch number to the workers, so every
    augmentation is drawn from ``(seed, epoch, index)`` whatever the worker count.
    ``name`` says which data it is in the error raised (on the first ``next``)
    when the dataset cannot fill a single batch. Closing the generator (or
    dropping it) shuts the loader's worker processes down before it returns,
    so a stopped run leaves no worker behind.
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
            worker_init_fn=ignore_stop_signals if num_workers else None,
        )
        batches = iter(loader)
        try:
            yield from batches
        finally:
            shutdown_workers(batches)
        epoch, skip = epoch + 1, 0


def shutdown_workers(batches):
    """Stop and join the worker processes of a DataLoader iterator now, not when it is collected."""
    shutdown = getattr(batches, "_shutdown_workers", None)  # multi-process iterators only
    if shutdown is not None:
        shutdown()
