"""DeepLab v3 (Chen et al., 2017) and v3+ (2018, regular convolutions) on a backbone.py backbone.

As published: no extra 3x3 after the ASPP (torchvision adds one, the paper does not). The layout,
and why v3+'s upsampling is exact on ``16k + 1`` inputs: docs/model.md, "DeepLab v3 and v3+".
"""

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .deeplabv2 import caffe_filled
from .geometry import upsample_logits
from .resnet import ConvBnReLU, batchnorm_class

DENSE = "dense"  # label_rule: every output upsampled to the crop (libs/training/loss.py)


def head_unit(in_ch, out_ch, kernel_size, dilation, norm):
    """A conv (3x3 padded by its rate, or 1x1) + BatchNorm + ReLU of the head, He-initialised."""
    unit = ConvBnReLU(in_ch, out_ch, kernel_size, 1, dilation, norm=norm)
    nn.init.kaiming_normal_(unit.conv.weight, mode="fan_in", nonlinearity="relu")
    return unit


class ImagePooling(ConvBnReLU):
    """Image-level features: global average, 1x1 conv + BatchNorm + ReLU, broadcast back.

    A training BatchNorm cannot estimate statistics from one value per channel (a batch of one
    image; ``nn.BatchNorm2d`` refuses it): it then normalises with its running ones, unchanged.
    """

    def __init__(self, in_ch, out_ch, norm):
        super().__init__(in_ch, out_ch, 1, norm=norm)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x):
        y = self.conv(x.mean(dim=(2, 3), keepdim=True))
        bn, processes = self.bn, 1
        if isinstance(bn, nn.SyncBatchNorm) and dist.is_available() and dist.is_initialized():
            processes = dist.get_world_size()
        training = isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.training
        if training and y.shape[0] * processes == 1:  # one value per channel in all processes
            y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0,
                             bn.eps)
        else:
            y = bn(y)
        return F.relu(y).expand(-1, -1, x.shape[2], x.shape[3])


class ASPPV3(nn.Module):
    """DeepLab v3's ASPP: ``c0`` (1x1), ``c1..`` (3x3 at ``rates``), ``pool``, then ``project``."""

    def __init__(self, in_ch, channels, rates, norm):
        super().__init__()
        self.c0 = head_unit(in_ch, channels, 1, 1, norm)
        for i, rate in enumerate(rates, start=1):
            setattr(self, f"c{i}", head_unit(in_ch, channels, 3, rate, norm))
        self.n_atrous = len(rates)
        self.pool = ImagePooling(in_ch, channels, norm)
        self.project = head_unit((len(rates) + 2) * channels, channels, 1, 1, norm)

    def forward(self, x):
        branches = [getattr(self, f"c{i}")(x) for i in range(self.n_atrous + 1)]
        branches.append(self.pool(x))
        return self.project(torch.cat(branches, dim=1))


class Decoder(nn.Module):
    """DeepLab v3+'s decoder: res2 reduced to ``low_channels``, joined with the encoder, two 3x3."""

    def __init__(self, low_ch, encoder_ch, low_channels, channels, norm):
        super().__init__()
        self.reduce = head_unit(low_ch, low_channels, 1, 1, norm)
        self.fuse1 = head_unit(low_channels + encoder_ch, channels, 3, 1, norm)
        self.fuse2 = head_unit(channels, channels, 3, 1, norm)

    def forward(self, low, encoded):
        encoded = upsample_logits(encoded, low.shape[-2:])  # e.g. stride 16 -> 4, corner-aligned
        return self.fuse2(self.fuse1(torch.cat([self.reduce(low), encoded], dim=1)))


def check_head(atrous_rates, head_channels):
    if not atrous_rates or min(atrous_rates) < 1:
        raise ValueError(f"atrous_rates must be positive integers, got {list(atrous_rates)}")
    if head_channels < 1:
        raise ValueError(f"head_channels must be positive, got {head_channels}")


class DeepLabV3(nn.Module):
    """Single-scale DeepLab v3: logits at the backbone's ``output_stride`` (16 or 8)."""

    label_rule = DENSE

    def __init__(self, backbone, n_classes, atrous_rates, head_channels, head_bn="train"):
        super().__init__()
        check_head(atrous_rates, head_channels)
        self.n_classes = n_classes
        self.backbone = backbone
        self.output_stride = self.logit_stride = backbone.output_stride
        self.aspp = ASPPV3(backbone.out_channels, head_channels, atrous_rates,
                           batchnorm_class(head_bn))
        self.classifier = caffe_filled(nn.Conv2d(head_channels, n_classes, 1))

    def forward(self, x):
        return self.classifier(self.aspp(self.backbone(x)))


class DeepLabV3Plus(nn.Module):
    """Single-scale DeepLab v3+: the v3 encoder and the decoder on the backbone's low features.

    Logits at the backbone's ``low_stride`` (4); inputs are padded to the encoder's grid
    (``output_stride``), whose ``16k + 1`` sizes put a cell of every grid on the last pixel.
    """

    label_rule = DENSE

    def __init__(self, backbone, n_classes, atrous_rates, head_channels, decoder_channels,
                 head_bn="train"):
        super().__init__()
        check_head(atrous_rates, head_channels)
        if decoder_channels < 1:
            raise ValueError(f"decoder_channels must be positive, got {decoder_channels}")
        norm = batchnorm_class(head_bn)
        self.n_classes = n_classes
        self.backbone = backbone
        self.output_stride, self.logit_stride = backbone.output_stride, backbone.low_stride
        self.aspp = ASPPV3(backbone.out_channels, head_channels, atrous_rates, norm)
        self.decoder = Decoder(backbone.low_channels, head_channels, decoder_channels,
                               head_channels, norm)
        self.classifier = caffe_filled(nn.Conv2d(head_channels, n_classes, 1))

    def forward(self, x):
        low, high = self.backbone.forward_features(x)
        return self.classifier(self.decoder(low, self.aspp(high)))

