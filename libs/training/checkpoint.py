"""Training checkpoints: where they go, what they hold, and how a run starts from one.

A checkpoint is ``{model, optimizer, iteration, rng, config, num_threads}`` (and
``grad_scaler``, the fp16 loss scale, when training with ``SOLVER.AMP: fp16``):
with the random-number state of every generator, ``--resume`` continues exactly
as the uninterrupted run would have. Files are written atomically
(:func:`libs.utils.atomic.save_torch`), so an interrupted save never leaves a
half-written checkpoint under the final name.
"""

import random
from pathlib import Path

import numpy as np
import torch

from ..models.weights import (
    CheckpointError,
    head_prefixes,
    load_file,
    load_model_weights,
    load_state_dict_checked,
)
from ..models.zoo import is_zoo_name
from ..utils.atomic import save_torch
from .precision import restore_scaler, scaler_state

TRAINING_KEYS = {"model", "optimizer", "iteration"}


def checkpoint_dir(exp):
    """The folder of a run's checkpoints, from the config's ``EXP`` section."""
    return Path(exp.OUTPUT_DIR) / exp.ID


def rng_state():
    """The state of the torch, Python, NumPy (and CUDA) generators, as tensors and ints."""
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state):
    """Put back what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(
        ("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0)
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path, model, optimizer, iteration, config, scaler=None):
    """Write a training checkpoint; ``config`` is the run's config as a plain dict.

    ``scaler`` (the fp16 ``GradScaler``) adds its state when it is enabled.
    ``num_threads`` (torch's CPU thread count) is kept because a resumed run is
    bit-identical only with the same count (reductions split differently).
    """
    save_torch(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "iteration": iteration,
            "rng": rng_state(),
            "config": config,
            "num_threads": torch.get_num_threads(),
            **scaler_state(scaler),
        },
        path,
    )


def load_checkpoint(path, model, n_classes, check=None):
    """Read the training checkpoint ``path`` and load its weights into ``model``.

    Returns the checkpoint; hand it to :func:`restore_training_state` once the
    optimizer exists. A plain state dict (no optimizer or iteration) cannot be
    resumed and is an error. ``check(checkpoint)`` runs before the weights are
    loaded (the resume checks: a changed config is named before it shows as a
    shape mismatch).
    """
    checkpoint = load_file(path)
    if not isinstance(checkpoint, dict) or not TRAINING_KEYS <= set(checkpoint):
        raise CheckpointError(f"{path}: not a training checkpoint (no optimizer/iteration)")
    if check is not None:
        check(checkpoint)
    load_state_dict_checked(model, checkpoint["model"], path, n_classes)
    return checkpoint


def restore_training_state(checkpoint, optimizer, scaler=None, log=print):
    """Load the optimizer state, the random-number state and the fp16 loss scale of a checkpoint.

    A checkpoint without a loss scale (written without fp16, or before there
    was one) resumes too; an fp16 run then starts from a fresh scale.
    """
    optimizer.load_state_dict(checkpoint["optimizer"])
    restore_rng_state(checkpoint["rng"])
    restore_scaler(checkpoint, scaler, log)


def load_initial_weights(model, path, log=print):
    """Start from converted Caffe weights, a checkpoint or released weights, or from scratch.

    ``path`` goes through the one weights loader (``libs.models.weights``), so
    it may also be a released checkpoint's file or name; those are renamed to
    our layout, and the run keeps the config's MSC geometry.

    The COCO init model carries only the backbone (its classifier is not an
    ASPP), so the head (v2's ASPP; v3's ASPP and classifier; v3+'s decoder too)
    keeps its own initialisation; anything else missing is an error, since a
    silently half-loaded model trains to nonsense.
    """
    if path is None:
        log("Warning: MODEL.INIT_MODEL is null, so training starts from random weights "
            "(the published numbers start from the converted COCO init model).")
        return
    if not Path(path).is_file() and not is_zoo_name(path):
        raise CheckpointError(
            f"{path}: initial weights (MODEL.INIT_MODEL) not found; write them with "
            "`python convert.py --dataset coco_init`, or set MODEL.INIT_MODEL: null"
        )
    missing = load_model_weights(model, path, model.base.n_classes,
                                 optional_prefix=head_prefixes(model), log=log,
                                 adopt_geometry=False)
    if missing:
        head = "ASPP" if head_prefixes(model) == ("base.aspp.",) else "head"
        log(f"Loaded backbone weights from {path}; the {head} keeps its initialisation.")
    else:
        log(f"Loaded all weights from {path}.")
