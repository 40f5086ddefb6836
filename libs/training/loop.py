"""The training loop: seed, build, (resume,) then one :func:`update` per iteration. Every random
draw happens in the same order on a fresh and a resumed run, and the learning rate is a pure
function of the iteration: that is what makes ``--resume`` bit-exact."""

import contextlib
import functools
import math
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..datasets import build_dataset
from ..utils.errors import DatasetError, TrainingError
from ..datasets.sampler import EpochBatchSampler
from ..utils.atomic import publish_link
from . import distributed
from .acceleration import EagerFallback, compile_model, precision_for
from .checkpoint import checkpoint_dir, prepare_model, save_checkpoint
from .interrupt import (StopSignals, TrainingInterrupted, agreed_stop, ignore_stop_signals,
                        signal_name)
from .loss import msc_loss_terms
from .run_folder import check_output_folders
from .runlog import Monitor, append_to_log, start_log
from .tensorboard import log_dir


@dataclass
class Launch:
    """How ``train.py`` started the run: DataParallel, the summary's sources, allowed changes."""

    data_parallel: bool = False
    sources: dict = None
    allow_changes: tuple = ()


@dataclass
class Run:
    """What every update of a run uses; ``monitor`` and ``bar`` are rank 0's (None elsewhere)."""

    cfg: object
    model: torch.nn.Module  # the MSC model: its state dict is the checkpoint's
    net: object  # what runs the batches: the model, its DDP/DataParallel wrapper, compiled
    optimizer: torch.optim.Optimizer
    precision: object  # acceleration.Precision: the autocast and the fp16 loss scaler
    device: torch.device
    world_size: int = 1
    monitor: object = None
    bar: object = None
    evaluator: object = None  # model -> scores, every SOLVER.ITER_EVAL (the last: train.py's)


def poly_lr(base_lr, iteration, max_iter, power, step):
    """``base * (1 - s / max_iter) ** power`` for ``iteration`` (1-based), ``s`` the last multiple
    of ``step`` not after ``iteration - 1``: 1..10 use s=0, 11..20 s=10 (``lr_decay_iter``)."""
    if not 1 <= iteration <= max_iter:
        raise ValueError(f"iteration {iteration} outside 1..{max_iter}")
    s = ((iteration - 1) // step) * step
    return base_lr * (1.0 - s / max_iter) ** power


def set_learning_rates(optimizer, solver, iteration):
    """Give every parameter group ``poly_lr * group["lr_mult"]`` of ``SOLVER``; returns the base."""
    lr = poly_lr(solver.LR, iteration, solver.ITER_MAX, solver.POLY_POWER, solver.LR_DECAY)
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]
    return lr


def update(run, iteration, sub_batches, began):
    """One weight update from ``sub_batches`` (fetched from ``began``); returns its loss and the
    last fused logits. Caffe's per-image terms (``loss.py``) are divided by the images of the whole
    update (all sub-batches, all processes): one big batch's gradient however it is split (DDP
    averages over processes, hence ``* world_size``). A non-finite loss stops before the step."""
    cfg, optimizer, device, scaler = run.cfg, run.optimizer, run.device, run.precision.scaler
    solver = cfg.SOLVER
    base_lr = set_learning_rates(optimizer, solver, iteration)
    optimizer.zero_grad(set_to_none=True)
    msc = getattr(run.net, "module", run.net)  # DDP and DataParallel wrap the MSC model
    no_sync = getattr(run.net, "no_sync", None)  # DDP: reduce gradients after the last only
    count = torch.tensor(float(sum(len(labels) for _, _, labels in sub_batches)), device=device)
    n_images = distributed.all_reduce_sum(count)
    total = torch.zeros((), device=device)
    layout = torch.channels_last if solver.CHANNELS_LAST else torch.preserve_format
    for i, (_, images, labels) in enumerate(sub_batches):
        images = images.to(device, non_blocking=True, memory_format=layout)
        labels = labels.to(device, non_blocking=True)
        last = i == len(sub_batches) - 1
        with no_sync() if no_sync is not None and not last else contextlib.nullcontext():
            with run.precision.autocast():
                outputs = run.net(images)
            outputs = [out.float() for out in outputs]  # the loss in fp32 (a no-op without AMP)
            terms = msc_loss_terms(outputs, labels, cfg.DATASET.IGNORE_LABEL, msc.scales,
                                   msc.geometry, getattr(msc, "label_rule", "cells"))
            loss = terms.sum() / n_images
            scaler.scale(loss * run.world_size).backward()  # scale: the loss itself without fp16
        total += loss.detach()
    loss, fused = distributed.all_reduce_sum(total).item(), outputs[-1].detach()
    if not math.isfinite(loss):
        raise TrainingError(f"loss is {loss} at iteration {iteration}; stopping")
    if scaler.is_enabled():
        scaler.step(optimizer)  # fp16: skipped (and the scale lowered) when a gradient overflowed
        scaler.update()
    else:
        optimizer.step()
    if run.monitor is not None:
        seconds = time.perf_counter() - began
        run.bar.set_postfix(run.monitor.update(iteration, loss, base_lr, seconds,
                                               sub_batches[-1], fused))
        if iteration % solver.ITER_SNAP == 0 or iteration == solver.ITER_MAX:
            snapshot(run, iteration)
        if run.evaluator and iteration % solver.ITER_EVAL == 0 and iteration < solver.ITER_MAX:
            scores = evaluate_in_between(run.evaluator, run.model, device)
            tqdm.write("\n".join(run.monitor.record_scores(iteration, scores)))
    return loss, fused


def snapshot(run, iteration):
    """Write ``checkpoint_<iteration>.pth`` (atomically)."""
    save_checkpoint(checkpoint_dir(run.cfg.EXP) / f"checkpoint_{iteration}.pth", run.model,
                    run.optimizer, iteration, run.cfg.to_dict(), run.precision.scaler)


def evaluate_in_between(evaluator, model, device):
    """``evaluator(model)`` in eval mode, leaving the run as if it had not happened: training mode
    back, and the global generators (which the evaluation's DataLoader advances) restored."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            model.eval()
            return evaluator(model)
    finally:
        model.train()
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def batch_stream(cfg, dataset, start, rank, world_size, pin_memory=False):
    """Endless training sub-batches, epoch after epoch, ``start`` sub-batches in. A DataLoader per
    epoch hands the epoch to the workers, so every augmentation is drawn from ``(seed, epoch,
    index)``; closing the generator joins the workers: a stopped run leaves none behind."""
    batch_size = cfg.SOLVER.BATCH_SIZE.TRAIN
    per_epoch = EpochBatchSampler.batches_per_epoch(len(dataset), batch_size, world_size)
    if per_epoch < 1:
        raise DatasetError(f"{cfg.DATASET.ROOT}: split {cfg.DATASET.SPLIT.TRAIN!r} has "
                           f"{len(dataset)} images, fewer than one batch of {batch_size} x "
                           f"{world_size} process(es)")
    epoch, skip = divmod(start, per_epoch)
    workers = cfg.DATALOADER.NUM_WORKERS
    sampler = EpochBatchSampler(len(dataset), batch_size, cfg.EXP.SEED, rank, world_size)
    while True:
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch, skip)
        batches = iter(DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                  pin_memory=pin_memory,
                                  worker_init_fn=ignore_stop_signals if workers else None))
        try:
            yield from batches
        finally:
            if hasattr(batches, "_shutdown_workers"):  # multi-process iterators: join them now
                batches._shutdown_workers()
        epoch, skip = epoch + 1, 0


def progress_bar(start, iter_max, enabled):
    """The iterations still to run, ``start + 1 .. iter_max``, with a tqdm bar when enabled."""
    return tqdm(range(start + 1, iter_max + 1), initial=start, total=iter_max,
                dynamic_ncols=True, leave=True, disable=not enabled)


def train(cfg, device, resume=None, progress=True, evaluator=None, launch=None):
    """Run (or resume) the training that ``cfg`` describes; return the trained model. Only rank 0
    logs, writes checkpoints and runs ``evaluator`` (``model -> results dict``, every
    ``SOLVER.ITER_EVAL``). A stop signal ends the run with a checkpoint and TrainingInterrupted."""
    launch = launch or Launch()
    rank, world_size = distributed.rank_and_world_size()
    log = tqdm.write if rank == 0 else (lambda *_: None)
    torch.manual_seed(cfg.EXP.SEED)  # the run's first random act
    random.seed(cfg.EXP.SEED)
    np.random.seed(cfg.EXP.SEED)
    solver = cfg.SOLVER
    precision = precision_for(solver.AMP, device, log)  # refused before anything is built
    if rank == 0:
        check_output_folders(cfg.EXP, log)
    model, optimizer, start = prepare_model(cfg, device, resume, log, precision.scaler,
                                            launch.allow_changes)
    net = distributed.wrap_model(model, device, world_size, launch.data_parallel)
    net = compile_model(net, solver.COMPILE, log)
    dataset = build_dataset(cfg, "train", augment=True)
    run = Run(cfg, model, net, optimizer, precision, device, world_size,
              evaluator=evaluator if solver.ITER_EVAL else None)
    if rank == 0:
        start_log(run, launch, start, len(dataset), log)
        run.monitor = Monitor(run, start)
    stream = batch_stream(cfg, dataset, start * solver.ITER_SIZE, rank, world_size,
                          pin_memory=device.type == "cuda")
    run.bar = progress_bar(start, solver.ITER_MAX, progress and rank == 0)
    signum, final = 0, checkpoint_dir(cfg.EXP) / "checkpoint_final.pth"
    try:
        with StopSignals() as stop:
            for iteration in run.bar:
                began = time.perf_counter()
                sub_batches = [next(stream) for _ in range(solver.ITER_SIZE)]
                if isinstance(net, EagerFallback):  # its first backward may fail: then eagerly
                    net.guard_first_step(functools.partial(update, run, iteration, sub_batches,
                                                           began), optimizer.zero_grad)
                else:
                    update(run, iteration, sub_batches, began)
                signum = agreed_stop(stop.signum, world_size, device)
                if signum and iteration < solver.ITER_MAX:
                    stop_on_signal(run, signum, iteration)
        if rank == 0:  # checkpoint_final.pth: a link to the last snapshot
            publish_link(final.with_name(f"checkpoint_{solver.ITER_MAX}.pth"), final)
            done = f"Checkpoints in {final.parent}; TensorBoard logs in {log_dir(cfg.EXP)}"
            append_to_log(cfg.EXP, done)
            log(done)
    finally:
        stream.close()  # joins the loader's workers
        run.bar.close()
        if run.monitor is not None:
            run.monitor.writer.close()
    if signum:  # in the last iteration: the run is complete, the script stops before scoring
        raise TrainingInterrupted(signum, solver.ITER_MAX, final, complete=True)
    return model


def stop_on_signal(run, signum, iteration):
    """Raise :class:`~.interrupt.TrainingInterrupted` after ``iteration``, once rank 0 has written
    its checkpoint (unless the periodic snapshot did): a barrier, so that no process ends first."""
    path = None
    if run.monitor is not None:
        path = checkpoint_dir(run.cfg.EXP) / f"checkpoint_{iteration}.pth"
        if iteration % run.cfg.SOLVER.ITER_SNAP:  # update's snapshot did not (< ITER_MAX)
            snapshot(run, iteration)
        append_to_log(run.cfg.EXP, f"Stopped by {signal_name(signum)} after iteration "
                                   f"{iteration}; saved {path}")
    if run.world_size > 1:
        torch.distributed.barrier()
    raise TrainingInterrupted(signum, iteration, path)
