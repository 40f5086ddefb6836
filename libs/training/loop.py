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
from ..utils.atomic import publish_link, remove_stale_temporaries
from ..utils.errors import DeepLabError
from ..utils.files import check_writable_dir
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
from .interrupt import StopSignals, TrainingInterrupted, agreed_stop, barrier, signal_name
from .lr_policy import set_learning_rates
from .monitor import Monitor
from .optim import build_optimizer
from .precision import precision_for
from .resume import check_resume
from .runlog import TextLog, log_path, summary_lines
from .step import train_step
from .stream import batch_stream
from .tensorboard import log_dir


def seed_everything(seed):
    """Seed the torch, Python and NumPy generators (the run's first random act)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def prepare_model(cfg, device, resume, log, scaler=None, allow_changes=()):
    """The model on ``device`` in training mode, its optimizer and the first iteration to skip.

    From ``resume`` (a training checkpoint: weights, optimizer, RNG state and,
    into ``scaler``, the fp16 loss scale; checked by :func:`~.resume.check_resume`,
    which lets the config keys in ``allow_changes`` differ) or from
    ``MODEL.INIT_MODEL``. The ``SOLVER`` layout and activation-checkpointing
    options are applied here.
    """
    model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES)
    checkpoint, start = None, 0
    if resume is not None:
        checkpoint = load_checkpoint(
            resume, model, cfg.DATASET.N_CLASSES,
            check=lambda state: check_resume(state, cfg, resume, allow_changes, log))
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


def check_output_folders(exp, log):
    """Fail now, not at the first checkpoint hours in, when a run's folders cannot be written.

    Also removes the temporary files that a killed save left in the checkpoint
    folder (only this program's name pattern, only older than this process).
    """
    out_dir = checkpoint_dir(exp)
    check_writable_dir(out_dir, "checkpoints")
    check_writable_dir(log_dir(exp), "TensorBoard logs")
    removed = remove_stale_temporaries(out_dir)
    if removed:
        log(f"Removed {len(removed)} temporary file(s) left in {out_dir} by an interrupted save.")


def stop_on_signal(signum, iteration, snapshot, saved, world_size, monitor):
    """Raise :class:`~.interrupt.TrainingInterrupted` after ``iteration``, its checkpoint written.

    Rank 0 writes ``checkpoint_<iteration>.pth`` unless ``saved`` (the periodic
    snapshot of this very iteration), and every process waits for it before
    leaving, so torchrun sees no process end while the checkpoint is written.
    """
    path = None
    if monitor is not None:
        path = snapshot(iteration) if not saved else saved
        monitor.text_log.write(f"Stopped by {signal_name(signum)} after iteration {iteration}; "
                               f"saved {path}")
    barrier(world_size)
    raise TrainingInterrupted(signum, iteration, path)


def train(cfg, device, resume=None, rank=0, world_size=1, data_parallel=False, progress=True,
          sources=None, evaluator=None, allow_changes=()):
    """Run (or resume) the training that ``cfg`` describes; return the trained model.

    ``rank``/``world_size`` come from torchrun; only rank 0 logs and writes checkpoints.
    ``sources`` (``{"config": path, "overrides": ["KEY=VALUE", ...]}``) is shown in
    the summary that rank 0 prints and writes to ``train.log`` at the start.
    ``evaluator`` (``model -> results dict``, run by rank 0 only) scores the model
    every ``SOLVER.ITER_EVAL`` iterations into ``train.log`` and ``eval/*``.
    ``allow_changes``: config keys a resumed run may change (:mod:`.resume`). A stop
    signal ends it with a checkpoint and :class:`~.interrupt.TrainingInterrupted`.
    """
    is_main = rank == 0
    log = tqdm.write if is_main else (lambda *_: None)
    seed_everything(cfg.EXP.SEED)
    solver, out_dir = cfg.SOLVER, checkpoint_dir(cfg.EXP)
    precision = precision_for(solver.AMP, device, log)  # refused before anything is built
    if is_main:
        check_output_folders(cfg.EXP, log)
    model, optimizer, start = prepare_model(cfg, device, resume, log, precision.scaler,
                                            allow_changes)
    net = distributed.wrap_model(model, device, world_size, data_parallel)
    net = compile_model(net, solver.COMPILE, log)
    dataset = build_dataset(cfg, "train", augment=True)
    monitor = None
    if is_main:
        text_log = start_log(cfg, log, dict(
            device=device, world_size=world_size, data_parallel=data_parallel, sources=sources,
            n_train=len(dataset), n_test=count_test_samples(cfg), model=model, start=start,
            checkpoints=out_dir))
        monitor = Monitor(cfg, device, optimizer, precision.scaler,
                          solver.BATCH_SIZE.TRAIN * solver.ITER_SIZE * world_size, text_log, start)

    def snapshot(iteration):
        path = out_dir / f"checkpoint_{iteration}.pth"
        save_checkpoint(path, model, optimizer, iteration, cfg.to_dict(), precision.scaler)
        return path

    stream = training_stream(cfg, dataset, start, rank, world_size, device)
    bar, signum = progress_bar(start, solver.ITER_MAX, progress and is_main), 0
    try:
        with StopSignals() as stop:
            for iteration in bar:
                saved = run_iteration(cfg, net, optimizer, stream, iteration, device, world_size,
                                      precision, monitor, bar, snapshot, evaluator, model)
                signum = agreed_stop(stop.signum, world_size, device)
                if signum and iteration < solver.ITER_MAX:
                    stop_on_signal(signum, iteration, snapshot, saved, world_size, monitor)
        if is_main:
            finish(cfg, out_dir, monitor, log)
    finally:
        stream.close()  # joins the loader's workers
        bar.close()
        if monitor is not None:
            monitor.close()
    if signum:  # in the last iteration: the run is complete, the script stops before scoring
        raise TrainingInterrupted(signum, solver.ITER_MAX, out_dir / "checkpoint_final.pth",
                                  complete=True)
    return model


def run_iteration(cfg, net, optimizer, stream, iteration, device, world_size, precision,
                  monitor, bar, snapshot, evaluator, model):
    """One iteration and, on rank 0 (``monitor``), its logging, snapshot and periodic scores.

    Returns the checkpoint written for this iteration, or None.
    """
    solver = cfg.SOLVER
    began = time.perf_counter()
    loss, base_lr, last_batch, fused = iterate(
        net, optimizer, stream, iteration, solver, cfg.DATASET.IGNORE_LABEL, device,
        world_size, precision,
    )
    if monitor is None:
        return None
    seconds = time.perf_counter() - began
    bar.set_postfix(monitor.update(iteration, loss, base_lr, seconds, last_batch, fused))
    saved = None
    if iteration % solver.ITER_SNAP == 0 or iteration == solver.ITER_MAX:
        saved = snapshot(iteration)
    if evaluator is not None and evaluation_due(iteration, solver.ITER_EVAL, solver.ITER_MAX):
        scores = evaluate_in_between(evaluator, model, device)
        tqdm.write("\n".join(monitor.record_scores(iteration, scores)))
    return saved


def finish(cfg, out_dir, monitor, log):
    """Publish ``checkpoint_final.pth`` (a link to the last snapshot) and say where things are."""
    last = out_dir / f"checkpoint_{cfg.SOLVER.ITER_MAX}.pth"
    publish_link(last, out_dir / "checkpoint_final.pth")
    done = f"Checkpoints in {out_dir}; TensorBoard logs in {log_dir(cfg.EXP)}"
    monitor.text_log.write(done)
    log(done)
