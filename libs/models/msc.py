"""Multi-scale inputs with max fusion (the "MSC" of DeepLab v2)."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class MSC(nn.Module):
    """Run a shared network on the input and on down-scaled copies, fuse by max.

    The extra-scale inputs are resized bilinearly to ``floor(side * scale)``
    per axis, so non-square and odd-sized inputs work. Their logits are
    upsampled bilinearly to the size of the full-scale logits and the
    element-wise maximum over all scales is taken.

    In training mode the forward returns a list
    ``[full-scale logits, *extra-scale logits at their own sizes, fused logits]``
    so that each can be supervised (the DeepLab v2 loss); in eval mode it
    returns only the fused logits.
    """

    def __init__(self, base, scales=(0.5, 0.75)):
        super().__init__()
        self.base = base
        self.scales = [float(s) for s in scales]

    def forward(self, x):
        full = self.base(x)
        h, w = x.shape[-2:]
        pyramid = []
        for s in self.scales:
            size = (max(1, int(h * s)), max(1, int(w * s)))
            xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            pyramid.append(self.base(xs))
        fused = full
        for logits in pyramid:
            up = F.interpolate(logits, size=full.shape[-2:], mode="bilinear", align_corners=False)
            fused = torch.maximum(fused, up)
        if self.training:
            return [full] + pyramid + [fused]
        return fused
