"""One training iteration: gradients accumulated over sub-batches (and processes)."""

import contextlib

import torch

from . import distributed
from .loss import count_valid, msc_loss_sum


def autocast_for(amp, device, log=print):
    """The context in which the forward pass runs: bf16 autocast on a GPU when ``amp``.

    On the CPU ``amp`` is ignored (with a note), since bf16 autocast is far
    slower there.
    """
    if amp and device.type == "cuda":
        def autocast():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return autocast
    if amp:
        log("SOLVER.AMP is ignored on the CPU (bf16 autocast is far slower there).")
    return contextlib.nullcontext


def train_step(net, sub_batches, device, ignore_label, world_size, autocast):
    """Accumulate the gradients of one iteration over its sub-batches.

    Each output's summed cross-entropy is divided by that output's number of
    valid pixels over the whole iteration (all sub-batches, all processes), so
    the gradient equals that of one big batch however it is split. DDP averages
    gradients over processes, hence the ``* world_size``. Returns the loss of
    the iteration and the last sub-batch's fused logits (for logging).
    """
    total = torch.zeros((), device=device)
    counts = None
    last = len(sub_batches) - 1
    for i, (_, images, labels) in enumerate(sub_batches):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        no_sync = getattr(net, "no_sync", None)
        sync = no_sync() if (no_sync is not None and i < last) else contextlib.nullcontext()
        with sync:
            with autocast():
                outputs = net(images)
            if counts is None:  # every crop has one size, so the logit sizes are fixed
                counts = valid_pixels(sub_batches, outputs, device, ignore_label)
            loss = (msc_loss_sum(outputs, labels, ignore_label) / counts).sum()
            (loss * world_size).backward()
        total += loss.detach()
    return distributed.all_reduce_sum(total).item(), outputs[-1].detach()


def valid_pixels(sub_batches, outputs, device, ignore_label):
    """Non-ignored pixels per output over all sub-batches and processes (at least 1)."""
    sizes = [out.shape[-2:] for out in outputs]
    counts = sum(count_valid(batch[2].to(device), sizes, ignore_label) for batch in sub_batches)
    return distributed.all_reduce_sum(counts).clamp(min=1)
