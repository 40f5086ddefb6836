"""The ResNet-101 backbone of Caffe DeepLab v2, with module names that mirror Caffe's.

Module paths follow the Caffe layer names so that convert.py needs one simple
rule per layer type (see docs/model.md):

    conv1                  -> conv1.conv          bn_conv1 / scale_conv1       -> conv1.bn
    res4b22_branch2c       -> res4.b22.branch2c.conv
    bn4b22_branch2c / scale4b22_branch2c                                       -> res4.b22.branch2c.bn
    res3a_branch1          -> res3.a.branch1.conv (the projection shortcut)

Blocks inside a stage are named as in Caffe's ResNet-101: ``a, b, c`` for a
stage of at most three blocks, otherwise ``a, b1, b2, ...``.
"""

from collections import OrderedDict

import torch.nn as nn
import torch.nn.functional as F

BATCHNORM_EPS = 1e-5


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalises with its stored statistics.

    DeepLab v2 fine-tunes with mini-batches far too small to estimate batch
    statistics, so Caffe ran every BatchNorm with ``use_global_stats: true``
    and a zero learning rate on the Scale layers. Here the running statistics
    are never updated, even in ``train()`` mode, and the affine parameters have
    ``requires_grad=False`` so no optimizer touches them.
    """

    def __init__(self, num_features, eps=BATCHNORM_EPS):
        super().__init__(num_features, eps=eps)
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)

    def forward(self, x):
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )


class ConvBnReLU(nn.Module):
    """A bias-free convolution, a frozen BatchNorm and (optionally) a ReLU."""

    def __init__(self, in_ch, out_ch, kernel_size, stride, padding, dilation, relu=True):
        super().__init__()
        self.conv = nn.Conv2d(
            in_ch, out_ch, kernel_size, stride, padding, dilation, bias=False
        )
        self.bn = FrozenBatchNorm2d(out_ch)
        self.relu = relu

    def forward(self, x):
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (dilated) and 1x1 increase, plus a shortcut.

    As in the Caffe model, the stride sits on the first 1x1 convolution
    (``branch2a``) rather than on the 3x3 one, and the first block of each
    stage has a 1x1 projection shortcut (``branch1``).
    """

    def __init__(self, in_ch, out_ch, stride, dilation, projection):
        super().__init__()
        mid_ch = out_ch // 4
        self.branch2a = ConvBnReLU(in_ch, mid_ch, 1, stride, 0, 1)
        self.branch2b = ConvBnReLU(mid_ch, mid_ch, 3, 1, dilation, dilation)
        self.branch2c = ConvBnReLU(mid_ch, out_ch, 1, 1, 0, 1, relu=False)
        self.branch1 = (
            ConvBnReLU(in_ch, out_ch, 1, stride, 0, 1, relu=False) if projection else None
        )

    def forward(self, x):
        h = self.branch2c(self.branch2b(self.branch2a(x)))
        shortcut = self.branch1(x) if self.branch1 is not None else x
        return F.relu(h + shortcut)


def block_names(n_blocks):
    """Caffe's names for the blocks of a stage: a, b, c or a, b1, b2, ..."""
    if n_blocks <= 3:
        return ["a", "b", "c"][:n_blocks]
    return ["a"] + [f"b{i}" for i in range(1, n_blocks)]


class ResStage(nn.Sequential):
    """One stage (res2..res5): a projection block followed by identity blocks."""

    def __init__(self, n_blocks, in_ch, out_ch, stride, dilation):
        blocks = OrderedDict()
        for i, name in enumerate(block_names(n_blocks)):
            blocks[name] = Bottleneck(
                in_ch if i == 0 else out_ch,
                out_ch,
                stride if i == 0 else 1,
                dilation,
                projection=(i == 0),
            )
        super().__init__(blocks)


class ResNetBackbone(nn.Module):
    """ResNet with output stride 8: res4 and res5 are dilated (2 and 4) instead of strided.

    ``base_width`` is the stem's channel count (64 in ResNet-101); every stage
    scales with it. Only the quick-start and test models narrow it, so that a
    CPU trains them in minutes; ``out_channels`` is ``32 * base_width``.
    """

    def __init__(self, n_blocks, base_width):
        super().__init__()
        if len(n_blocks) != 4 or min(n_blocks) < 1:
            raise ValueError(f"n_blocks must be four positive integers, got {list(n_blocks)}")
        if base_width < 1:
            raise ValueError(f"base_width must be positive, got {base_width}")
        w = base_width
        self.out_channels = 32 * w
        self.conv1 = ConvBnReLU(3, w, 7, 2, 3, 1)
        self.pool1 = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)
        self.res2 = ResStage(n_blocks[0], w, 4 * w, stride=1, dilation=1)
        self.res3 = ResStage(n_blocks[1], 4 * w, 8 * w, stride=2, dilation=1)
        self.res4 = ResStage(n_blocks[2], 8 * w, 16 * w, stride=1, dilation=2)
        self.res5 = ResStage(n_blocks[3], 16 * w, 32 * w, stride=1, dilation=4)

    def forward(self, x):
        x = self.pool1(self.conv1(x))
        return self.res5(self.res4(self.res3(self.res2(x))))
