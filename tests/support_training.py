"""One update of the real training loop over given sub-batches, for the tests that read its
loss and gradients (split invariance, mixed precision, layouts) and for the benchmarks."""

import contextlib
import time

import torch
from addict import Dict

from libs.training.acceleration import Precision, disabled_scaler
from libs.training.loop import Run, update

CPU = torch.device("cpu")


def train_step(net, sub_batches, device=CPU, autocast=contextlib.nullcontext, scaler=None,
               memory_format=torch.preserve_format):
    """:func:`libs.training.loop.update` over ``sub_batches`` (ignore label 255, one process)
    at learning rate 0: the gradients stay in the parameters (unscaled by ``scaler``, when
    one is enabled) and the weights unchanged. Returns the loss and the last fused logits."""
    trainable = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD([{"params": trainable, "lr_mult": 0.0}], lr=0.0)
    cfg = Dict(SOLVER=Dict(LR=0.0, ITER_MAX=1, POLY_POWER=0.9, LR_DECAY=1,
                           CHANNELS_LAST=memory_format == torch.channels_last),
               DATASET=Dict(IGNORE_LABEL=255))
    precision = Precision(autocast, scaler if scaler is not None else disabled_scaler())
    run = Run(cfg, net, net, optimizer, precision, device)
    return update(run, 1, sub_batches, time.perf_counter())
