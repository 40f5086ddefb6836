"""Activation checkpointing of the ResNet backbone: recompute activations in backward.

Each ``ResNetBackbone`` keeps only the input of each *segment* in the forward pass and
recomputes the rest in backward (``torch.utils.checkpoint``, non-reentrant). Only its class is
switched, so state-dict keys and checkpoints are unchanged; a frozen BatchNorm never updates its
statistics, so running a segment twice changes nothing. Why ``sqrt`` is the default, and the
measurements: docs/model.md, "Activation checkpointing".
"""

import math

import torch
import torch.nn as nn
import torch.utils.checkpoint as torch_checkpoint

from .resnet import ResNetBackbone
from ..utils.errors import ConfigError

GRANULARITIES = ("sqrt", "block", "stage")


def check_granularity(granularity):
    """``granularity`` if it is one of :data:`GRANULARITIES` or a positive int, else an error."""
    if granularity in GRANULARITIES or (type(granularity) is int and granularity > 0):
        return granularity
    raise ConfigError(f"activation checkpointing: unknown granularity {granularity!r}; "
                             f"use one of {list(GRANULARITIES)} or a positive number of blocks")


def stage_segments(backbone, granularity):
    """``[(stage name, segment)]`` in forward order; the stem (``"stem"``) is one segment."""
    plan = [("stem", (backbone.conv1, backbone.pool1))]
    for name in ("res2", "res3", "res4", "res5"):
        blocks = tuple(getattr(backbone, name).children())
        n = len(blocks)
        step = {"block": 1, "stage": n, "sqrt": math.ceil(n / math.ceil(math.sqrt(n)))}.get(
            granularity, granularity)
        plan.extend((name, blocks[i:i + step]) for i in range(0, n, step))
    return plan


class CheckpointedBackbone(ResNetBackbone):
    """A ``ResNetBackbone`` that recomputes its segments in backward (training with grad only).

    Never built: :func:`enable_activation_checkpointing` switches a backbone's class to it and
    sets ``checkpoint_granularity`` and ``checkpoint_preserve_rng`` (not in the state dict).
    """

    def forward_features(self, x):
        """``(res2 output, res5 output)`` as the plain backbone's, recomputed in backward."""
        if not (self.training and torch.is_grad_enabled()):
            return super().forward_features(x)
        low = None
        for stage, segment in stage_segments(self, self.checkpoint_granularity):
            x = torch_checkpoint.checkpoint(nn.Sequential(*segment), x, use_reentrant=False,
                                            preserve_rng_state=self.checkpoint_preserve_rng)
            if stage == "res2":
                low = x  # after res2's last segment: what DeepLab v3+'s decoder reads
        return low, x


def backbones(model):
    """Every ResNet backbone inside ``model`` (the MSC model, DeepLabV2, or a backbone)."""
    found = [m for m in model.modules() if isinstance(m, ResNetBackbone)]
    if not found:
        raise ConfigError(f"activation checkpointing: {type(model).__name__} "
                                 "contains no ResNetBackbone")
    return found


def enable_activation_checkpointing(model, granularity="sqrt", preserve_rng_state=None):
    """Recompute the backbone's activations in backward; ``model`` is changed in place and returned.

    A segment is, by ``granularity``: ``"sqrt"`` (the measured best) each stage cut into
    ``ceil(sqrt(n))`` runs of blocks (``checkpoint_sequential``'s rule); ``"block"`` each block;
    ``"stage"`` each stage; an int ``k`` runs of ``k`` blocks. ``preserve_rng_state``: ``None``
    restores the RNG state for the recomputation only where the backbone has a dropout module;
    ``True``/``False`` force it. Calling it again changes the settings.
    """
    granularity = check_granularity(granularity)
    dropouts = (nn.modules.dropout._DropoutNd, nn.AlphaDropout)
    for backbone in backbones(model):
        if type(backbone) not in (ResNetBackbone, CheckpointedBackbone):
            raise ConfigError("activation checkpointing: the backbone is a "
                                     f"{type(backbone).__name__}, a subclass it cannot switch")
        preserve = preserve_rng_state
        if preserve is None:
            preserve = any(isinstance(m, dropouts) for m in backbone.modules())
        backbone.__class__ = CheckpointedBackbone
        backbone.checkpoint_granularity = granularity
        backbone.checkpoint_preserve_rng = bool(preserve)
    return model
