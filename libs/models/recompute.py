"""Activation checkpointing of the ResNet backbone: recompute activations in backward.

:func:`enable_activation_checkpointing` makes every ``ResNetBackbone`` inside a
model (the MSC model, a bare ``DeepLabV2`` or the backbone itself) keep only
the input of each *segment* during the forward pass and recompute the segment's
inner activations when backward reaches it (``torch.utils.checkpoint``,
``use_reentrant=False``). A segment is, by ``granularity``:

* ``"sqrt"`` (the default, the measured best): each stage cut into
  ``ceil(sqrt(n))`` runs of consecutive blocks, the ``checkpoint_sequential``
  rule (ResNet-101: res2 2+1, res3 2+2, res4 5+5+5+5+3, res5 2+1 blocks);
* ``"block"``: each Bottleneck block on its own (33 segments);
* ``"stage"``: each of ``res2`` .. ``res5`` whole;
* an integer ``k``: runs of ``k`` blocks within each stage.

The stem (``conv1`` + ``pool1``) is always one more segment.

How it is done: the backbone's class is switched to :class:`CheckpointedBackbone`
(a subclass whose ``forward`` runs the segments; :func:`disable_activation_checkpointing`
switches it back). No module is added, renamed or wrapped, so ``state_dict()``
keys and values, checkpoints and the Caffe name mapping are unchanged. The
segmented path runs only in ``train()`` mode with gradients enabled; in
``eval()`` mode, under ``torch.no_grad()`` or ``torch.inference_mode()`` the
plain ``ResNetBackbone.forward`` runs, with no checkpoint call at all.

Frozen BatchNorm: its forward never updates the running statistics (it calls
``F.batch_norm`` with ``training=False``), so running a segment twice changes
nothing; the tests check the statistics after an SGD step.

RNG state: nothing in the backbone draws random numbers (no dropout), so saving
and restoring the CPU and CUDA generator states around every recomputation
would be pure overhead. ``preserve_rng_state=None`` (the default) therefore
turns it on only for a backbone that contains a dropout module; pass ``True``
to force it (e.g. a custom block that calls ``F.dropout`` itself).

Measured (``python -m benchmarks.bench_train``; the full model, batch 2,
321x321, MSC at 0.5x and 0.75x, Caffe loss, backward, SGD step; 2-core CPU,
peak RSS of a child process per variant; "step" is the peak minus the
resident memory after building the model):

    granularity  segments  peak RSS MiB  step MiB  peak / off  step / off
    off               -        4277       3731       1.00        1.00
    block        1 + 33        2721       2175       0.64        0.58
    2 blocks     1 + 18        2270       1723       0.53        0.46
    4 blocks     1 +  9        2163       1617       0.51        0.43
    sqrt         1 + 11   2020-2195  1473-1649  0.47-0.51   0.39-0.44   (three runs)
    stage        1 +  4        2975       2429       0.70        0.65

Time on that CPU: 1.17x with ``sqrt`` (24.3 s per iteration without, 28.5 s
with, load average 1). On an H200 at batch 5 (``max_memory_allocated``) the
peak falls from 7266 MiB to 2804 (block), 2001 (2 blocks) and 1603 MiB
(sqrt, 0.22x), but an iteration takes 2.5x as long (0.11 s -> 0.28 s): at
that speed the Python hooks of non-reentrant checkpointing (about 2,800 saved
tensors per iteration) dominate. More in docs/model.md.

Why ``sqrt``: every granularity recomputes the same thing (one more forward
pass of the backbone), so they differ mainly in memory. A Bottleneck keeps four
times its input for backward; with checkpointing, what stays is each
segment's input for all three MSC scales, plus, while backward runs through
one segment of one scale, that segment's recomputed activations. Small
segments store many inputs (per block: a quarter of the plain activations),
whole stages recompute res4's 23 blocks at once; ``sqrt`` balances the two.
"""

import functools
import math

import torch
import torch.nn as nn
import torch.utils.checkpoint as torch_checkpoint

from ..utils.errors import DeepLabError
from .resnet import ResNetBackbone

GRANULARITIES = ("sqrt", "block", "stage")
DEFAULT_GRANULARITY = "sqrt"
STAGES = ("res2", "res3", "res4", "res5")


class CheckpointingError(DeepLabError, ValueError):
    """A model or granularity that activation checkpointing cannot use."""


def check_granularity(granularity):
    """``granularity`` if it is one of :data:`GRANULARITIES` or a positive int, else an error."""
    if granularity in GRANULARITIES:
        return granularity
    if isinstance(granularity, int) and not isinstance(granularity, bool) and granularity > 0:
        return granularity
    raise CheckpointingError(f"activation checkpointing: unknown granularity {granularity!r}; "
                             f"use one of {list(GRANULARITIES)} or a positive number of blocks")


def blocks_per_segment(granularity, n_blocks):
    """How many consecutive blocks of a stage of ``n_blocks`` one segment holds."""
    if granularity == "block":
        return 1
    if granularity == "stage":
        return n_blocks
    if granularity == "sqrt":
        return math.ceil(n_blocks / math.ceil(math.sqrt(n_blocks)))
    return granularity


def stage_segments(backbone, granularity):
    """``[(stage name, segment)]`` in forward order (the stem's stage name is ``"stem"``)."""
    plan = [("stem", (backbone.conv1, backbone.pool1))]
    for name in STAGES:
        blocks = tuple(getattr(backbone, name).children())
        step = blocks_per_segment(granularity, len(blocks))
        plan.extend((name, blocks[i:i + step]) for i in range(0, len(blocks), step))
    return plan


def segments(backbone, granularity):
    """The backbone's modules in forward order, grouped into segments (tuples of modules)."""
    return [segment for _, segment in stage_segments(backbone, granularity)]


def run_segment(modules, x):
    for module in modules:
        x = module(x)
    return x


def has_dropout(module):
    return any(isinstance(m, (nn.modules.dropout._DropoutNd, nn.AlphaDropout))
               for m in module.modules())


class CheckpointedBackbone(ResNetBackbone):
    """A ``ResNetBackbone`` that recomputes its segments in backward (training with grad only).

    Never built directly: :func:`enable_activation_checkpointing` switches an
    existing backbone's class to this one and sets ``checkpoint_granularity``
    and ``checkpoint_preserve_rng`` (plain attributes, not in the state dict).
    """

    def forward_features(self, x):
        """``(res2 output, res5 output)`` as the plain backbone's, recomputed in backward."""
        if not (self.training and torch.is_grad_enabled()):
            return super().forward_features(x)
        low = None
        for stage, segment in stage_segments(self, self.checkpoint_granularity):
            x = torch_checkpoint.checkpoint(
                functools.partial(run_segment, segment), x, use_reentrant=False,
                preserve_rng_state=self.checkpoint_preserve_rng)
            if stage == "res2":
                low = x  # after res2's last segment: what DeepLab v3+'s decoder reads
        return low, x


def backbones(model):
    """Every ResNet backbone inside ``model`` (the MSC model, DeepLabV2, or a backbone)."""
    found = [m for m in model.modules() if isinstance(m, ResNetBackbone)]
    if not found:
        raise CheckpointingError(f"activation checkpointing: {type(model).__name__} "
                                 "contains no ResNetBackbone")
    return found


def enable_activation_checkpointing(model, granularity=DEFAULT_GRANULARITY,
                                    preserve_rng_state=None):
    """Recompute the backbone's activations in backward; ``model`` is changed in place and returned.

    ``granularity``: ``"sqrt"`` (default, the measured best), ``"block"``,
    ``"stage"`` or a number of blocks per segment (module docstring).
    ``preserve_rng_state``: ``None`` restores the RNG state for the recomputation
    only where the backbone has a dropout module; ``True``/``False`` force it.
    Calling it again changes the settings.
    """
    granularity = check_granularity(granularity)
    for backbone in backbones(model):
        if type(backbone) not in (ResNetBackbone, CheckpointedBackbone):
            raise CheckpointingError("activation checkpointing: the backbone is a "
                                     f"{type(backbone).__name__}, a subclass it cannot switch")
        preserve = has_dropout(backbone) if preserve_rng_state is None else preserve_rng_state
        backbone.__class__ = CheckpointedBackbone
        backbone.checkpoint_granularity = granularity
        backbone.checkpoint_preserve_rng = bool(preserve)
    return model


def disable_activation_checkpointing(model):
    """Undo :func:`enable_activation_checkpointing` (a no-op where it is off); returns ``model``."""
    for backbone in backbones(model):
        if isinstance(backbone, CheckpointedBackbone):
            backbone.__class__ = ResNetBackbone
            del backbone.checkpoint_granularity
            del backbone.checkpoint_preserve_rng
    return model


def activation_checkpointing(model):
    """The granularity of ``model``'s checkpointed backbone, or ``None`` where it is off."""
    found = [getattr(b, "checkpoint_granularity", None) for b in backbones(model)]
    return found[0]
