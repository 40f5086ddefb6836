"""Reading weight files safely and loading them into a model with checks.

Two kinds of file are accepted wherever a model path is asked for: a plain
state dict (what convert.py writes) and a training checkpoint, a dict whose
``"model"`` entry is the state dict (what train.py writes). Everything is read
with ``weights_only=True`` so a weight file can never run code. (Files are
written by ``libs.utils.atomic.save_torch``.)
"""

from pathlib import Path

import torch

from ..utils.errors import DeepLabError


class CheckpointError(DeepLabError, ValueError):
    """A weight file that cannot be used; the message names the file."""


def load_file(path, map_location="cpu"):
    """Load a weight file with ``weights_only=True``; one clear error if that fails."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weight file not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: not a readable PyTorch weight file (truncated or corrupt?): {reason}"
        ) from None


def state_dict_of(obj, path="<checkpoint>"):
    """The model state dict inside a loaded checkpoint or plain state dict."""
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"{path}: holds no model state dict")
    return obj


def load_weights(path, map_location="cpu"):
    """The model state dict stored in ``path`` (a checkpoint or a plain state dict)."""
    return state_dict_of(load_file(path, map_location), path)


def n_classes_of(state_dict):
    """The class count of a DeepLab state dict (rows of its first ASPP branch), or None."""
    for key in ("base.aspp.c0.weight", "aspp.c0.weight"):
        if key in state_dict:
            return state_dict[key].shape[0]
    return None


def load_model_weights(model, path, n_classes, map_location="cpu", optional_prefix=None):
    """Load a DeepLab model's weights from ``path``; see :func:`load_state_dict_checked`."""
    state_dict = load_weights(path, map_location)
    return load_state_dict_checked(model, state_dict, path, n_classes, optional_prefix)


def load_state_dict_checked(model, state_dict, path, n_classes, optional_prefix=None):
    """Load ``state_dict`` (read from ``path``) into ``model``, checking the class count first.

    A checkpoint trained for another number of classes would otherwise fail
    with a long size-mismatch report; this names the file and both counts.
    Tensors under ``optional_prefix`` (e.g. ``"base.aspp."`` for a backbone-only
    init model) may be absent and keep their initialisation; anything else
    missing, unexpected or of the wrong shape is an error. Returns the keys
    that were absent.
    """
    found = n_classes_of(state_dict)
    if found is not None and found != n_classes:
        raise CheckpointError(
            f"{path}: weights are for {found} classes but the config asks for {n_classes}"
        )
    expected = model.state_dict()
    absent = [k for k in expected if k not in state_dict]
    missing = [k for k in absent if optional_prefix is None or not k.startswith(optional_prefix)]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        k for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong_shape:
        problems = []
        for label, keys in (("missing", missing), ("unexpected", unexpected),
                            ("wrong shape", wrong_shape)):
            if keys:
                problems.append(f"{len(keys)} {label} (first: {keys[0]})")
        raise CheckpointError(f"{path}: does not match the model: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=not absent)
    return absent
