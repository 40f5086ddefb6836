"""Multi-scale inputs with max fusion (the "MSC" of DeepLab v2)."""

import torch
import torch.nn as nn

from .geometry import check_geometry, msc_resize_input, msc_resize_logits


class MSC(nn.Module):
    """Run a shared network on the input and on down-scaled copies, fuse by max.

    ``geometry`` (``geometry.py``) says how the extra-scale inputs are made and their logits
    brought back: ``"caffe"`` (corner-aligned) or ``"pytorch"`` (the original repository's later
    releases). ``base`` is DeepLab v2, v3 or v3+; an empty ``scales`` is single scale. In
    training mode the forward returns ``[full-scale logits, *extra-scale logits at their own
    sizes, fused logits]`` so that each can be supervised (the DeepLab v2 loss); in eval mode
    only the fused logits.
    """

    def __init__(self, base, scales, geometry):
        super().__init__()
        self.base = base
        self.scales = [float(s) for s in scales]
        self.geometry = check_geometry(geometry)
        # The base network's input grid (geometry.model_output_stride) and label pairing (loss.py).
        self.output_stride, self.label_rule = base.output_stride, base.label_rule

    def resize_input(self, x, index):
        """``x`` resized to the extra scale ``scales[index]`` (the export writes it otherwise)."""
        return msc_resize_input(x, self.scales[index], self.geometry)

    def forward(self, x):
        full = self.base(x)
        pyramid = [self.base(self.resize_input(x, i)) for i in range(len(self.scales))]
        fused = full
        for logits in pyramid:
            fused = torch.maximum(fused, msc_resize_logits(logits, full.shape[-2:], self.geometry))
        if self.training:
            return [full] + pyramid + [fused]
        return fused
