"""The training loop: seed, build, (resume,) iterate, log, checkpoint.

:func:`train` is the entry point; it takes the whole config because it builds
the model and the dataset, and hands each helper the section it needs. The
order of the steps below is part of the result: every random draw (weight
initialisation, DataLoader seeds) happens in the same order on a fresh run and
on a resumed one, which is what makes ``--resume`` bit-exact.
"""

import random
import time

import numpy as np
import torch
from tqdm import tqdm

from ..datasets import build_dataset
from ..models import build_model
from ..utils.atomic import publish_link
from ..utils.errors import DeepLabError
from . import distributed
from .acceleration import apply_model_options, compile_model, memory_format
from .checkpoint import (
    checkpoint_dir,
    load_checkpoint,
    load_initial_weights,
    restore_training_state,
    save_checkpoint,
)
from .errors import TrainingError
from .lr_policy import set_learning_rates
from .monitor import Monitor
from .optim import build_optimizer
from .precision import precision_for
from .runlog import TextLog, log_path, summary_lines
from .step import train_step
from .stream import batch_stream
from .tensorboard import log_dir


def seed_everything(seed):
    """Seed the torch, Python and NumPy generators (the run's first random act)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def prepare_model(cfg, device, resume, log, scaler=None):
    """The model on ``device`` in training mode, its optimizer and the first iteration to skip.

    From ``resume`` (a training checkpoint: weights, optimizer, RNG state and,
    into ``scaler``, the fp16 loss scale) or from ``MODEL.INIT_MODEL``. The
    ``SOLVER`` layout and activation-checkpointing options are applied here.
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
    apply_model_options(model, cfg.SOLVER, device)
    optimizer = build_optimizer(model, cfg.SOLVER)
    if checkpoint is not None:
        restore_training_state(checkpoint, optimizer, scaler, log)
    return model, optimizer, start


def training_stream(cfg, dataset, start, rank, world_size, device):
    """The augmented training ``dataset`` as an endless stream, ``start`` iterations in."""
    return batch_stream(
        dataset, cfg.SOLVER.BATCH_SIZE.TRAIN, cfg.EXP.SEED, cfg.DATALOADER.NUM_WORKERS,
        start=start * cfg.SOLVER.ITER_SIZE, rank=rank, world_size=world_size,
        pin_memory=device.type == "cuda",
        name=f"{cfg.DATASET.ROOT}: split {cfg.DATASET.SPLIT.TRAIN!r}",
    )


def iterate(net, optimizer, stream, iteration, solver, ignore_label, device, world_size,
            precision):
    """One SGD iteration of the poly schedule; returns (loss, base lr, last sub-batch, logits).

    ``precision`` (:class:`~.precision.Precision`) gives the autocast and the
    fp16 loss scaler. Raises :class:`TrainingError` when the loss is not finite
    (before the step, so the weights stay those of the last good iteration).
    """
    base_lr = set_learning_rates(
        optimizer, solver.LR, iteration, solver.ITER_MAX, solver.POLY_POWER, solver.LR_DECAY,
    )
    optimizer.zero_grad(set_to_none=True)
    sub_batches = [next(stream) for _ in range(solver.ITER_SIZE)]

    def step():
        return train_step(net, sub_batches, device, ignore_label, world_size,
                          precision.autocast, precision.scaler, memory_format(solver))

    guard = getattr(net, "guard_first_step", None)  # a compiled model (SOLVER.COMPILE)
    loss, fused = step() if guard is None else guard(
        step, lambda: optimizer.zero_grad(set_to_none=True))
    if not np.isfinite(loss):
        raise TrainingError(f"loss is {loss} at iteration {iteration}; stopping")
    precision.step(optimizer)
    return loss, base_lr, sub_batches[-1], fused


def progress_bar(start, iter_max, enabled):
    """The iterations still to run, ``start + 1 .. iter_max``, with a tqdm bar when enabled."""
    return tqdm(range(start + 1, iter_max + 1), initial=start, total=iter_max,
                dynamic_ncols=True, leave=True, disable=not enabled)


def count_test_samples(cfg):
    """The test split's sample count; None where it cannot be read (training needs no test set)."""
    try:
        return len(build_dataset(cfg, "test", augment=False))
    except DeepLabError:
        return None


def evaluation_due(iteration, iter_eval, iter_max):
    """Whether ``SOLVER.ITER_EVAL`` asks for scores after ``iteration`` (the last is train.py's)."""
    return bool(iter_eval) and iteration % iter_eval == 0 and iteration < iter_max


def evaluate_in_between(evaluator, model, device):
    """``evaluator(model)`` in eval mode, leaving the run exactly as if it had not happened.

    The model goes back to training mode (BatchNorm layers that train must not
    keep eval mode), and the global generators (torch's, CUDA's, Python's,
    NumPy's) are restored. The augmentation draws from ``(seed, epoch, index)``
    and not from them, but the evaluation's DataLoader advances torch's, and a
    run with periodic evaluation must stay bit-identical to one without
    (tests/test_train_feedback.py compares the weights).
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            model.eval()
            return evaluator(model)
    finally:
        model.train()
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def start_log(cfg, log, run):
    """Print the summary block (:func:`~.runlog.summary_lines`) and open ``train.log`` with it.

    Returns the :class:`~.runlog.TextLog`; each launch appends a separator line first.
    """
    lines = summary_lines(cfg, run)
    log("\n".join(lines))
    text_log = TextLog(log_path(cfg.EXP))
    text_log.separator()
    text_log.write("\n".join(lines))
    return text_log


def train(cfg, device, resume=None, rank=0, world_size=1, data_parallel=False, progress=True,
          sources=None, evaluator=None):
    """Run (or resume) the training that ``cfg`` describes; return the trained model.

    ``rank``/``world_size`` come from torchrun; only rank 0 logs and writes checkpoints.
    ``sources`` (``{"config": path, "overrides": ["KEY=VALUE", ...]}``) is shown in
    the summary that rank 0 prints and writes to ``train.log`` at the start.
    ``evaluator`` (``model -> results dict``, run by rank 0 only) scores the model
    every ``SOLVER.ITER_EVAL`` iterations into ``train.log`` and ``eval/*``.
    """
    is_main = rank == 0
    log = tqdm.write if is_main else (lambda *_: None)
    seed_everything(cfg.EXP.SEED)
    solver, out_dir = cfg.SOLVER, checkpoint_dir(cfg.EXP)
    precision = precision_for(solver.AMP, device, log)  # refused before anything is built
    model, optimizer, start = prepare_model(cfg, device, resume, log, precision.scaler)
    net = distributed.wrap_model(model, device, world_size, data_parallel)
    net = compile_model(net, solver.COMPILE, log)
    dataset = build_dataset(cfg, "train", augment=True)
    stream = training_stream(cfg, dataset, start, rank, world_size, device)
    images = solver.BATCH_SIZE.TRAIN * solver.ITER_SIZE * world_size
    monitor = None
    if is_main:
        text_log = start_log(cfg, log, dict(
            device=device, world_size=world_size, data_parallel=data_parallel, sources=sources,
            n_train=len(dataset), n_test=count_test_samples(cfg), model=model, start=start,
            checkpoints=out_dir))
        monitor = Monitor(cfg, device, optimizer, precision.scaler, images, text_log, start)

    def snapshot(name, iteration):
        save_checkpoint(out_dir / name, model, optimizer, iteration, cfg.to_dict(),
                        precision.scaler)

    bar = progress_bar(start, solver.ITER_MAX, progress and is_main)
    for iteration in bar:
        began = time.perf_counter()
        loss, base_lr, last_batch, fused = iterate(
            net, optimizer, stream, iteration, solver, cfg.DATASET.IGNORE_LABEL, device,
            world_size, precision,
        )
        if not is_main:
            continue
        seconds = time.perf_counter() - began
        bar.set_postfix(monitor.update(iteration, loss, base_lr, seconds, last_batch, fused))
        if iteration % solver.ITER_SNAP == 0 or iteration == solver.ITER_MAX:
            snapshot(f"checkpoint_{iteration}.pth", iteration)
        if evaluator is not None and evaluation_due(iteration, solver.ITER_EVAL, solver.ITER_MAX):
            scores = evaluate_in_between(evaluator, model, device)
            log("\n".join(monitor.record_scores(iteration, scores)))
    if is_main:
        last = out_dir / f"checkpoint_{solver.ITER_MAX}.pth"
        if start < solver.ITER_MAX:  # written by this run: the final one is the same file
            publish_link(last, out_dir / "checkpoint_final.pth")
        else:
            snapshot("checkpoint_final.pth", solver.ITER_MAX)
        done = f"Checkpoints in {out_dir}; TensorBoard logs in {log_dir(cfg.EXP)}"
        monitor.text_log.write(done)
        monitor.close()
        log(done)
    return model
