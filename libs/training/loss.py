"""The DeepLab v2 training loss over the outputs of the multi-scale (MSC) model."""

import torch
import torch.nn.functional as F

from ..datasets.transforms import resize_labels_torch


def labels_per_output(labels, outputs):
    """The label batch resized (centre-aligned nearest) to each output's spatial size."""
    return [resize_labels_torch(labels, out.shape[-2:]) for out in outputs]


def count_valid(labels, sizes, ignore_label):
    """Pixels that are not ``ignore_label`` in ``labels`` resized to each of ``sizes``."""
    return torch.stack(
        [(resize_labels_torch(labels, size) != ignore_label).sum() for size in sizes]
    )


def msc_loss_sum(outputs, labels, ignore_label):
    """Per-output summed cross-entropy over non-ignored pixels (a tensor, one per output).

    Sums rather than means, so the caller can normalise by the valid-pixel count of
    a whole accumulated (and distributed) batch: gradients then do not depend on how
    the batch is split into sub-batches or processes.
    """
    return torch.stack(
        [
            F.cross_entropy(out.float(), target, ignore_index=ignore_label, reduction="sum")
            for out, target in zip(outputs, labels_per_output(labels, outputs))
        ]
    )
