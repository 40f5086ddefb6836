"""Training checkpoints: where they go, what they hold, and how a run starts from one. With every
generator's state (and fp16's ``grad_scaler``), ``--resume`` continues exactly as the uninterrupted
run would have, given the same torch thread count (reductions split differently)."""

import random
from pathlib import Path

import numpy as np
import torch

from ..models import build_model
from ..models.weights import head_prefixes, load_file, load_model_weights, load_state_dict_checked
from ..utils.errors import CheckpointError
from ..models.zoo import is_zoo_name
from ..utils.atomic import save_torch
from .acceleration import SCALER_KEY, apply_model_options
from .optim import build_optimizer
from .resume import check_resume

TRAINING_KEYS = {"model", "optimizer", "iteration"}


def checkpoint_dir(exp):
    """The folder of a run's checkpoints, from the config's ``EXP`` section."""
    return Path(exp.OUTPUT_DIR) / exp.ID


def save_checkpoint(path, model, optimizer, iteration, config, scaler=None):
    """Write a training checkpoint; ``config`` is the run's config as a plain dict, ``rng`` the
    torch, Python, NumPy (and CUDA) generators' states as tensors and ints."""
    numpy_state = np.random.get_state()
    rng = {"torch": torch.get_rng_state(), "python": random.getstate(),
           "numpy": torch.from_numpy(numpy_state[1].astype(np.int64)),
           "numpy_pos": int(numpy_state[2])}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "iteration": iteration, "rng": rng, "config": config,
             "num_threads": torch.get_num_threads()}
    if scaler is not None and scaler.is_enabled():
        state[SCALER_KEY] = scaler.state_dict()
    save_torch(state, path)


def restore_training_state(checkpoint, optimizer, scaler=None, log=print):
    """Load the optimizer state, the random-number state and the fp16 loss scale of a checkpoint. A
    checkpoint without a loss scale gives an fp16 run a fresh one, and a disabled scaler ignores it,
    so runs can switch precision across a resume."""
    names = [group["name"] for group in optimizer.param_groups]
    optimizer.load_state_dict(checkpoint["optimizer"])
    for group, name in zip(optimizer.param_groups, names):  # not an older checkpoint's aspp_*
        group["name"] = name
    rng = checkpoint["rng"]
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    np.random.set_state(("MT19937", rng["numpy"].numpy().astype(np.uint32), rng["numpy_pos"],
                         0, 0.0))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if scaler is None or not scaler.is_enabled():
        return
    if checkpoint.get(SCALER_KEY):
        scaler.load_state_dict(checkpoint[SCALER_KEY])
    else:
        log("The checkpoint has no fp16 loss-scaler state (saved without SOLVER.AMP: fp16); "
            f"the loss scale starts afresh at {scaler.get_scale():g}.")


def load_initial_weights(model, path, log=print):
    """Start from converted Caffe weights, a checkpoint or released weights (through
    ``libs.models.weights``, keeping the config's MSC geometry), or from scratch. Only the head may
    be missing (the COCO init model has none): a half-loaded model trains to nonsense."""
    if path is None:
        log("Warning: MODEL.INIT_MODEL is null, so training starts from random weights "
            "(the published numbers start from the converted COCO init model).")
        return
    if not Path(path).is_file() and not is_zoo_name(path):
        raise CheckpointError(
            f"{path}: initial weights (MODEL.INIT_MODEL) not found; write them with "
            "`python convert.py --dataset coco_init`, or set MODEL.INIT_MODEL: null")
    missing = load_model_weights(model, path, model.base.n_classes, log=log, adopt_geometry=False,
                                 optional_prefix=head_prefixes(model))
    if missing:
        head = "ASPP" if head_prefixes(model) == ("base.aspp.",) else "head"
        log(f"Loaded backbone weights from {path}; the {head} keeps its initialisation.")
    else:
        log(f"Loaded all weights from {path}.")


def prepare_model(cfg, device, resume, log, scaler, allow_changes=()):
    """The model on ``device`` in training mode, its optimizer and the iteration it starts after:
    from ``resume`` (a training checkpoint, checked by :func:`~.resume.check_resume`; the fp16
    loss scale goes into ``scaler``) or from ``MODEL.INIT_MODEL``."""
    model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES)
    checkpoint, start = None, 0
    if resume is not None:
        checkpoint = load_file(resume)
        if not isinstance(checkpoint, dict) or not TRAINING_KEYS <= set(checkpoint):
            raise CheckpointError(f"{resume}: not a training checkpoint (no optimizer/iteration)")
        check_resume(checkpoint, cfg, resume, allow_changes, log)  # before a shape mismatch
        load_state_dict_checked(model, checkpoint["model"], resume, cfg.DATASET.N_CLASSES)
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
