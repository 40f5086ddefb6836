"""DeepLab v2: a backbone at output stride 8 followed by the ASPP classifier."""

import torch
import torch.nn as nn


def caffe_filled(conv):
    """``conv`` with Caffe's gaussian filler (std 0.01) and zero bias, as every classifier here."""
    nn.init.normal_(conv.weight, mean=0.0, std=0.01)
    nn.init.zeros_(conv.bias)
    return conv


class ASPP(nn.ModuleDict):
    """Atrous spatial pyramid pooling as in DeepLab v2 (Caffe's ``fc1_*_c0..c3``).

    Parallel 3x3 convolutions with different dilation rates each predict the class scores
    directly; their outputs are summed (DeepLab v3's ASPP is another module).
    """

    def __init__(self, in_ch, n_classes, rates):
        super().__init__()
        for i, rate in enumerate(rates):
            conv = nn.Conv2d(in_ch, n_classes, 3, padding=rate, dilation=rate)
            self[f"c{i}"] = caffe_filled(conv)

    def forward(self, x):
        out = torch.zeros(0)  # TorchScript wants a tensor here; the first branch replaces it
        for i, conv in enumerate(self.values()):
            out = conv(x) if i == 0 else out + conv(x)
        return out


class DeepLabV2(nn.Module):
    """Single-scale DeepLab v2: logits at 1/8 of the input resolution.

    ``label_rule = "cells"``: its loss compares each logit cell with the label of the pixel it
    sits on (Caffe's ``label_shrink``; ``libs/training/loss.py``).
    """

    label_rule = "cells"
    output_stride = logit_stride = 8

    def __init__(self, backbone, n_classes, atrous_rates):
        super().__init__()
        if backbone.output_stride != 8:
            raise ValueError(f"DeepLab v2 has output stride 8, got {backbone.output_stride}")
        self.n_classes = n_classes
        self.backbone = backbone
        self.aspp = ASPP(self.backbone.out_channels, n_classes, atrous_rates)

    def forward(self, x):
        return self.aspp(self.backbone(x))
