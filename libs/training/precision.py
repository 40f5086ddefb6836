"""Mixed precision for training: the autocast context, the fp16 loss scaler, the optimizer step.

``SOLVER.AMP`` is ``null`` (fp32), ``bf16`` or ``fp16``. Only the forward pass
runs under autocast; the loss is computed from the logits cast back to fp32
(``step.py``). fp16 needs a :class:`torch.amp.GradScaler`, whose state is part
of the checkpoint so that a resumed run keeps its loss scale. On the CPU only
bf16 is offered, and only where the CPU computes bf16 natively: elsewhere
PyTorch emulates it, about 100 times slower than fp32, so the run is refused
with one line instead of crawling.
"""

import contextlib
import functools
from dataclasses import dataclass, field

import torch

from ..utils.device import cpu_native_bf16
from .errors import TrainingConfigError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
SCALER_KEY = "grad_scaler"  # the checkpoint entry of the fp16 loss scaler


def disabled_scaler():
    """A :class:`GradScaler` that does nothing: ``scale`` returns the loss, ``step`` just steps."""
    return torch.amp.GradScaler("cuda", enabled=False)


@dataclass
class Precision:
    """How a training step computes: ``autocast()`` around the forward pass and ``scaler``.

    Without AMP the autocast is a null context and the scaler is disabled, so
    the step is exactly the fp32 one.
    """

    autocast: object = contextlib.nullcontext
    scaler: torch.amp.GradScaler = field(default_factory=disabled_scaler)
    amp: str = None

    @property
    def scaling(self):
        return self.scaler.is_enabled()

    def step(self, optimizer):
        """The optimizer step; with fp16 through the scaler (skipped when a gradient is inf/nan)."""
        if self.scaling:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()


def check_amp(amp, device):
    """Refuse, with one line, an ``amp`` that ``device`` cannot train with fast."""
    if amp is None:
        return
    if device.type == "cuda":
        if amp == "bf16" and not torch.cuda.is_bf16_supported():
            raise TrainingConfigError("SOLVER.AMP: bf16: this GPU has no bf16 support; "
                                      "use fp16 or null")
        return
    if amp == "fp16":
        raise TrainingConfigError(f"SOLVER.AMP: fp16 needs CUDA, and this run is on the "
                                  f"{device.type}; use null (or bf16 on a CPU with AMX or "
                                  "AVX512-BF16)")
    supported, reason = cpu_native_bf16()
    if not supported:
        raise TrainingConfigError(f"SOLVER.AMP: bf16 on the {device.type}: {reason}; "
                                  "use null")


def precision_for(amp, device, log=print):
    """The :class:`Precision` of ``SOLVER.AMP`` on ``device`` (checked by :func:`check_amp`)."""
    check_amp(amp, device)
    if amp is None:
        return Precision()
    autocast = functools.partial(torch.autocast, device.type, dtype=DTYPES[amp])
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else disabled_scaler()
    log(f"Mixed precision: {amp} autocast on the {device.type}, loss in fp32"
        + (", loss scaling" if amp == "fp16" else "") + ".")
    return Precision(autocast, scaler, amp)


def scaler_state(scaler):
    """The checkpoint entry of ``scaler``: ``{SCALER_KEY: state}``, or nothing when disabled."""
    if scaler is None or not scaler.is_enabled():
        return {}
    return {SCALER_KEY: scaler.state_dict()}


def restore_scaler(checkpoint, scaler, log=print):
    """Put back the loss scale a checkpoint holds; one without it starts from a fresh scale.

    A disabled scaler (no fp16) ignores whatever the checkpoint holds, so runs
    can switch precision across a resume.
    """
    if scaler is None or not scaler.is_enabled():
        return
    state = checkpoint.get(SCALER_KEY)
    if state:
        scaler.load_state_dict(state)
    else:
        log("The checkpoint has no fp16 loss-scaler state (saved without SOLVER.AMP: fp16); "
            f"the loss scale starts afresh at {scaler.get_scale():g}.")
