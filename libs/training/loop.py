"""The training loop: seed, build, (resume,) iterate, log, checkpoint.

:func:`train` is the entry point; it takes the whole config because it builds
the model and the dataset, and hands each helper the section it needs. The
order of the steps below is part of the result: every random draw (weight
initialisation, DataLoader seeds) happens in the same order on a fresh run and
on a resumed one, which is what makes ``--resume`` bit-exact.
"""

import random

import numpy as np
import torch
from tqdm import tqdm

from ..datasets import build_dataset
from ..models import build_model
from ..utils.meters import MovingAverage
from . import distributed
from .checkpoint import (
    checkpoint_dir,
    load_checkpoint,
    load_initial_weights,
    restore_training_state,
    save_checkpoint,
)
from .errors import TrainingError
from .lr_policy import set_learning_rates
from .optim import build_optimizer
from .step import autocast_for, train_step
from .stream import batch_stream
from .tensorboard import log_dir, log_images, log_scalars, open_writer


def seed_everything(seed):
    """Seed the torch, Python and NumPy generators (the run's first random act)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def prepare_model(cfg, device, resume, log):
    """The model on ``device`` in training mode, its optimizer and the first iteration to skip.

    From ``resume`` (a training checkpoint: weights, optimizer, RNG state) or
    from ``MODEL.INIT_MODEL``.
    """
    model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES)
    checkpoint, start = None, 0
    if resume is not None:
        checkpoint = load_checkpoint(resume, model, cfg.DATASET.N_CLASSES)
        start = int(checkpoint["iteration"])
        log(f"Resuming from {resume} at iteration {start}.")
    else:
        load_initial_weights(model, cfg.MODEL.INIT_MODEL, log)
    model.to(device).train()
    optimizer = build_optimizer(model, cfg.SOLVER)
    if checkpoint is not None:
        restore_training_state(checkpoint, optimizer)
    return model, optimizer, start


def training_stream(cfg, start, rank, world_size, device):
    """The augmented training split as an endless stream, ``start`` iterations in."""
    dataset = build_dataset(cfg, "train", augment=True)
    return batch_stream(
        dataset, cfg.SOLVER.BATCH_SIZE.TRAIN, cfg.EXP.SEED, cfg.DATALOADER.NUM_WORKERS,
        start=start * cfg.SOLVER.ITER_SIZE, rank=rank, world_size=world_size,
        pin_memory=device.type == "cuda",
        name=f"{cfg.DATASET.ROOT}: split {cfg.DATASET.SPLIT.TRAIN!r}",
    )


def iterate(net, optimizer, stream, iteration, solver, ignore_label, device, world_size,
            autocast):
    """One SGD iteration of the poly schedule; returns (loss, base lr, last sub-batch, logits).

    Raises :class:`TrainingError` when the loss is not finite (before the
    step, so the weights stay those of the last good iteration).
    """
    base_lr = set_learning_rates(
        optimizer, solver.LR, iteration, solver.ITER_MAX, solver.POLY_POWER, solver.LR_DECAY,
    )
    optimizer.zero_grad(set_to_none=True)
    sub_batches = [next(stream) for _ in range(solver.ITER_SIZE)]
    loss, fused = train_step(net, sub_batches, device, ignore_label, world_size, autocast)
    if not np.isfinite(loss):
        raise TrainingError(f"loss is {loss} at iteration {iteration}; stopping")
    optimizer.step()
    return loss, base_lr, sub_batches[-1], fused


def record(writer, iteration, loss, average, optimizer, device, last_batch, fused, every,
           dataset_cfg, mean):
    """TensorBoard for one iteration: scalars always, the image panel every ``every`` iterations.

    ``dataset_cfg`` is the ``DATASET`` section (class count, ignore label) and
    ``mean`` is ``IMAGE.MEAN``, for the colours and the photo of the panel.
    """
    log_scalars(writer, iteration, loss, average, optimizer, device)
    if iteration % every == 0:
        _, images, labels = last_batch
        log_images(writer, images, labels, fused, dataset_cfg.N_CLASSES,
                   dataset_cfg.IGNORE_LABEL, mean, iteration)


def progress_bar(start, iter_max, enabled):
    """The iterations still to run, ``start + 1 .. iter_max``, with a tqdm bar when enabled."""
    return tqdm(range(start + 1, iter_max + 1), initial=start, total=iter_max,
                dynamic_ncols=True, leave=False, disable=not enabled)


def train(cfg, device, resume=None, rank=0, world_size=1, data_parallel=False, progress=True):
    """Run (or resume) the training that ``cfg`` describes; return the trained model.

    ``rank``/``world_size`` come from torchrun; only rank 0 logs and writes checkpoints.
    """
    is_main = rank == 0
    log = tqdm.write if is_main else (lambda *_: None)
    seed_everything(cfg.EXP.SEED)
    model, optimizer, start = prepare_model(cfg, device, resume, log)
    net = distributed.wrap_model(model, device, world_size, data_parallel)
    autocast = autocast_for(cfg.SOLVER.AMP, device, log)
    stream = training_stream(cfg, start, rank, world_size, device)
    writer = open_writer(log_dir(cfg.EXP)) if is_main else None
    average = MovingAverage(cfg.SOLVER.AVERAGE_LOSS)
    solver, out_dir = cfg.SOLVER, checkpoint_dir(cfg.EXP)

    bar = progress_bar(start, solver.ITER_MAX, progress and is_main)
    for iteration in bar:
        loss, base_lr, last_batch, fused = iterate(
            net, optimizer, stream, iteration, solver, cfg.DATASET.IGNORE_LABEL, device,
            world_size, autocast,
        )
        average.add(loss)
        if not is_main:
            continue
        bar.set_postfix(loss=f"{average.value:.4f}", lr=f"{base_lr:.3g}")
        record(writer, iteration, loss, average.value, optimizer, device, last_batch, fused,
               solver.ITER_TB, cfg.DATASET, cfg.IMAGE.MEAN)
        if iteration % solver.ITER_SNAP == 0 or iteration == solver.ITER_MAX:
            save_checkpoint(out_dir / f"checkpoint_{iteration}.pth", model, optimizer,
                            iteration, cfg.to_dict())
    if is_main:
        save_checkpoint(out_dir / "checkpoint_final.pth", model, optimizer, solver.ITER_MAX,
                        cfg.to_dict())
        writer.close()
        log(f"Checkpoints in {out_dir}; TensorBoard logs in {log_dir(cfg.EXP)}")
    return model
