"""Speed and memory options that leave the protocol unchanged: layout, recomputation, compilation.

``SOLVER.CHANNELS_LAST`` stores the model's weights and the input batches in
NHWC order (fast on tensor-core GPUs; allowed on the CPU, where it is only a
layout). ``SOLVER.ACTIVATION_CHECKPOINTING`` recomputes activations in the
backward pass instead of keeping them (``libs.models.checkpointing``).
``SOLVER.COMPILE`` runs the model through :func:`torch.compile` where that
works; a failure, when compiling or at the first call, falls back to the eager
model with a one-line notice, since a run should not die for want of a speed-up.
"""

import torch

from ..utils.errors import first_line
from .errors import TrainingConfigError


def memory_format(solver):
    """The memory format of the model and its inputs, from ``SOLVER.CHANNELS_LAST``."""
    return torch.channels_last if solver.CHANNELS_LAST else torch.preserve_format


def apply_model_options(model, solver, device):
    """Layout and activation checkpointing of ``model`` (in place), and cuDNN autotuning on CUDA.

    The parameters stay the same objects, so this may run before or after the
    optimizer is built; the state dict keeps its keys.
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the crop size is fixed: tune each conv once
    if solver.CHANNELS_LAST:
        model.to(memory_format=torch.channels_last)
    if solver.ACTIVATION_CHECKPOINTING:
        enable_checkpointing(model)
    return model


def enable_checkpointing(model):
    """Recompute activations in backward (``libs.models.checkpointing``, imported when asked)."""
    try:
        from ..models.checkpointing import enable_activation_checkpointing
    except ModuleNotFoundError as e:
        if e.name != "libs.models.checkpointing":
            raise
        raise TrainingConfigError("SOLVER.ACTIVATION_CHECKPOINTING: this installation has no "
                                  "libs/models/checkpointing.py; set it to false") from None
    enable_activation_checkpointing(model)


def one_line(error):
    """``Type: first line of the message``, for a notice."""
    text = str(error).strip()
    return f"{type(error).__name__}: {first_line(error)}" if text else type(error).__name__


class EagerFallback:
    """Calls the compiled model; if that fails, says so once and runs ``eager`` from then on.

    Compilation happens at the first call (and again when shapes change), which
    is where an unsupported operator or a missing compiler shows; the backward
    graph may compile at the first backward pass, which :meth:`guard_first_step`
    covers. Everything else (``module``, ``no_sync``, ``scales``, ...) is the
    eager module's, so the training step treats this as the module it wraps.
    """

    def __init__(self, eager, compiled, log=print):
        self.eager = eager
        self.compiled = compiled
        self.log = log
        self.proven = False  # a whole step (forward and backward) has run compiled

    def fall_back(self, error):
        self.compiled = None
        self.log(f"SOLVER.COMPILE: the compiled model failed ({one_line(error)}); "
                 "training continues without torch.compile.")

    def __call__(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except torch.OutOfMemoryError:
                raise
            except Exception as e:  # noqa: BLE001 - any compiler failure: run eagerly
                self.fall_back(e)
        return self.eager(*args, **kwargs)

    def guard_first_step(self, step, reset):
        """``step()``; if the first one fails in the compiled model's backward, ``reset()`` the
        gradients and run it again eagerly. Later failures, and eager ones, propagate."""
        if self.proven or self.compiled is None:
            return step()
        try:
            result = step()
        except torch.OutOfMemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - see __call__
            if self.compiled is None:
                raise  # the eager model failed: a real error
            self.fall_back(e)
            reset()
            result = step()
        self.proven = True
        return result

    def __getattr__(self, name):
        return getattr(self.__dict__["eager"], name)


def compile_model(net, enabled, log=print):
    """``net`` compiled with :func:`torch.compile` when ``enabled`` (else ``net`` itself)."""
    if not enabled:
        return net
    try:
        compiled = torch.compile(net)
    except Exception as e:  # noqa: BLE001 - an unsupported platform or model: run eagerly
        log(f"SOLVER.COMPILE: torch.compile failed ({one_line(e)}); training continues without it.")
        return net
    return EagerFallback(net, compiled, log)
