"""The ``SOLVER`` options that change how fast a run computes, not what it learns (docs/scale.md):
``AMP``, ``CHANNELS_LAST``, ``ACTIVATION_CHECKPOINTING`` and ``COMPILE``, which falls back to the
eager model with a one-line notice where it fails: a run should not die for want of a speed-up."""

import contextlib
import functools
from dataclasses import dataclass, field

import torch

from ..models.recompute import enable_activation_checkpointing
from ..utils.device import cpu_native_bf16
from ..utils.errors import ConfigError, DeepLabError, first_line

SCALER_KEY = "grad_scaler"  # the checkpoint entry of the fp16 loss scaler


def disabled_scaler():
    """A :class:`GradScaler` that does nothing: ``scale`` returns the loss, ``step`` just steps."""
    return torch.amp.GradScaler("cuda", enabled=False)


@dataclass
class Precision:
    """``autocast()`` around the forward pass and the loss ``scaler`` (disabled without fp16)."""

    autocast: object = contextlib.nullcontext
    scaler: torch.amp.GradScaler = field(default_factory=disabled_scaler)
    amp: str = None


def precision_for(amp, device, log=print):
    """The :class:`Precision` of ``SOLVER.AMP`` on ``device``. An ``amp`` that ``device`` cannot
    train with fast is refused with one line: on a CPU that emulates bf16 (no AMX or AVX512-BF16) it
    is about 100x slower than fp32."""
    if amp is None:
        return Precision()
    if device.type == "cuda":
        if amp == "bf16" and not torch.cuda.is_bf16_supported():
            raise ConfigError("SOLVER.AMP: bf16: this GPU has no bf16 support; "
                                      "use fp16 or null", loaded=True)
    elif amp == "fp16":
        raise ConfigError(f"SOLVER.AMP: fp16 needs CUDA, and this run is on the "
                                  f"{device.type}; use null (or bf16 on a CPU with AMX or "
                                  "AVX512-BF16)", loaded=True)
    elif amp == "bf16":
        supported, reason = cpu_native_bf16()
        if not supported:
            raise ConfigError(f"SOLVER.AMP: bf16 on the {device.type}: {reason}; use null",
                              loaded=True)
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    autocast = functools.partial(torch.autocast, device.type, dtype=dtype)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else disabled_scaler()
    log(f"Mixed precision: {amp} autocast on the {device.type}, loss in fp32"
        + (", loss scaling" if amp == "fp16" else "") + ".")
    return Precision(autocast, scaler, amp)


def apply_model_options(model, solver, device):
    """Layout and activation checkpointing of ``model`` (in place; the parameters stay the same
    objects and the state dict keeps its keys), and cuDNN autotuning on CUDA."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the crop size is fixed: tune each conv once
    if solver.CHANNELS_LAST:
        model.to(memory_format=torch.channels_last)
    if solver.ACTIVATION_CHECKPOINTING:
        enable_activation_checkpointing(model)
    return model


def one_line(error):
    """``Type: first line of the message``, for a notice."""
    return f"{type(error).__name__}: {first_line(error)}" if str(error).strip() \
        else type(error).__name__


class EagerFallback:
    """Calls the compiled model; if that fails, says so once and runs ``eager`` from then on.
    Compilation happens at the first call and may happen at the first backward pass, which
    :meth:`guard_first_step` covers. Other attributes (``module``, ``no_sync``) are the eager's."""

    def __init__(self, eager, compiled, log=print):
        self.eager, self.compiled, self.log = eager, compiled, log
        self.proven = False  # a whole update (forward and backward) has run compiled

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
        gradients and run it again eagerly. Later failures, eager ones and the project's own
        errors (a non-finite loss) propagate."""
        if self.proven or self.compiled is None:
            return step()
        try:
            result = step()
        except (torch.OutOfMemoryError, DeepLabError):
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
