"""One training iteration: gradients accumulated over sub-batches (and processes)."""

import contextlib

import torch

from . import distributed
from .loss import msc_loss_terms


def train_step(net, sub_batches, device, ignore_label, world_size, autocast,
               scaler=None, memory_format=torch.preserve_format):
    """Accumulate the gradients of one iteration over its sub-batches.

    The loss is Caffe's: each image's cross-entropy, per MSC output, averaged
    over that image's valid pixels (targets by the model's ``label_rule`` and
    MSC geometry, see ``loss.py``: label cells for v2, upsampled logits against
    the full-resolution labels for v3/v3+), summed over the outputs and
    averaged over every image of the iteration (all sub-batches, all
    processes). Since each image's term does not depend on the others,
    dividing by that global count gives the gradient of one big batch however
    it is split. DDP averages gradients over processes, hence the
    ``* world_size``. Returns the loss of the iteration and the last
    sub-batch's fused logits (for logging).

    Only the forward pass runs under ``autocast()``; the logits are cast to
    fp32 before the loss. ``scaler`` (a ``GradScaler``, for fp16) scales the
    loss before backward; ``memory_format`` is the layout of the input batch.
    """
    msc = getattr(net, "module", net)  # DDP and DataParallel wrap the MSC model
    n_images = images_in_update(sub_batches, device)
    total = torch.zeros((), device=device)
    last = len(sub_batches) - 1
    for i, (_, images, labels) in enumerate(sub_batches):
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        labels = labels.to(device, non_blocking=True)
        no_sync = getattr(net, "no_sync", None)
        sync = no_sync() if (no_sync is not None and i < last) else contextlib.nullcontext()
        with sync:
            with autocast():
                outputs = net(images)
            outputs = [out.float() for out in outputs]  # the loss in fp32 (a no-op without AMP)
            terms = msc_loss_terms(outputs, labels, ignore_label, msc.scales, msc.geometry,
                                   getattr(msc, "label_rule", "cells"))
            loss = terms.sum() / n_images
            scaled = loss * world_size
            (scaled if scaler is None else scaler.scale(scaled)).backward()
        total += loss.detach()
    return distributed.all_reduce_sum(total).item(), outputs[-1].detach()


def images_in_update(sub_batches, device):
    """Images in all sub-batches of the iteration over all processes (Caffe's loss divisor)."""
    count = torch.tensor(float(sum(len(batch[2]) for batch in sub_batches)), device=device)
    return distributed.all_reduce_sum(count)
