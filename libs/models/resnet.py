"""The ResNet-101 backbone of Caffe DeepLab v2, with module names that mirror Caffe's.

Module paths follow the Caffe layer names (``res4b22_branch2c`` -> ``res4.b22.branch2c.conv``,
``bn4b22_branch2c`` / ``scale4b22_branch2c`` -> ``res4.b22.branch2c.bn``), so convert.py needs
one rule per layer type (docs/model.md has the table). Blocks of a stage are named as in Caffe:
``a, b, c`` for at most three blocks, otherwise ``a, b1, b2, ...``.
"""

from collections import OrderedDict

import torch.nn as nn
import torch.nn.functional as F

from .backbone import register_backbone

BATCHNORM_EPS = 1e-5


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalises with its stored statistics.

    DeepLab v2 fine-tunes with mini-batches far too small to estimate batch statistics, so Caffe
    ran every BatchNorm with ``use_global_stats: true`` and fixed Scale layers. Here the running
    statistics never change, even in ``train()`` mode, and no optimizer sees the affine ones.
    """

    def __init__(self, num_features, eps=BATCHNORM_EPS):
        super().__init__(num_features, eps=eps)
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            False, 0.0, self.eps)


BATCHNORMS = {"frozen": FrozenBatchNorm2d, "train": nn.BatchNorm2d}


def batchnorm_class(mode):
    """The BatchNorm class of ``MODEL.BACKBONE.BN`` / ``HEAD_BN``: ``frozen`` or ``train`` (plain
    ``nn.BatchNorm2d``; ``libs.training.distributed`` makes it ``SyncBatchNorm`` under torchrun)."""
    if mode not in BATCHNORMS:
        raise ValueError(f"BatchNorm mode must be one of {list(BATCHNORMS)}, got {mode!r}")
    return BATCHNORMS[mode]


class ConvBnReLU(nn.Module):
    """A bias-free convolution padded by its dilation (the grid keeps its cells), a BatchNorm
    (frozen unless ``norm`` says otherwise) and a ReLU (unless ``relu`` is set False)."""

    def __init__(self, in_ch, out_ch, kernel_size, stride=1, dilation=1, norm=FrozenBatchNorm2d):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, dilation * (kernel_size // 2),
                              dilation, bias=False)
        self.bn = norm(out_ch, eps=BATCHNORM_EPS)
        self.relu = True

    def forward(self, x):
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


def conv_bn(in_ch, out_ch, stride, norm):
    """A 1x1 unit without its ReLU: a Bottleneck's ``branch2c`` and shortcut (ReLU after sum)."""
    unit = ConvBnReLU(in_ch, out_ch, 1, stride, norm=norm)
    unit.relu = False
    return unit


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (dilated) and 1x1 increase, plus a shortcut.

    As in the Caffe model, the stride sits on the first 1x1 (``branch2a``), not on the 3x3, and
    the first block of each stage has a 1x1 projection shortcut (``branch1``).
    """

    def __init__(self, in_ch, out_ch, stride, dilation, projection, norm=FrozenBatchNorm2d):
        super().__init__()
        mid_ch = out_ch // 4
        self.branch2a = ConvBnReLU(in_ch, mid_ch, 1, stride, norm=norm)
        self.branch2b = ConvBnReLU(mid_ch, mid_ch, 3, 1, dilation, norm=norm)
        self.branch2c = conv_bn(mid_ch, out_ch, 1, norm)
        self.branch1 = conv_bn(in_ch, out_ch, stride, norm) if projection else None

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
    """One stage (res2..res5): a projection block, then identity blocks; block ``i`` dilated by
    ``dilations[i]``."""

    def __init__(self, in_ch, out_ch, stride, dilations, norm=FrozenBatchNorm2d):
        blocks = OrderedDict()
        for i, name in enumerate(block_names(len(dilations))):
            blocks[name] = Bottleneck(in_ch if i == 0 else out_ch, out_ch, stride if i == 0 else 1,
                                      dilations[i], projection=(i == 0), norm=norm)
        super().__init__(blocks)


# (res4 stride, res4 dilation, res5 dilation) per output stride: 8 is DeepLab v2's, 16 v3's
# default (res4 strided on branch2a, as Caffe's res3a).
STAGE_LAYOUTS = {8: (1, 2, 4), 16: (2, 1, 2)}


@register_backbone("resnet101_caffe")
class ResNetBackbone(nn.Module):
    """ResNet at output stride 8 (res4, res5 dilated 2, 4) or 16 (res4 strided, res5 dilated 2).

    The backbone ``resnet101_caffe`` (interface: ``backbone.py``). ``base_width`` is the stem's
    channel count (64; only the quick-start and test models narrow it) and every stage scales
    with it; ``multi_grid`` multiplies res5's rate block by block (DeepLab v3: ``(1, 2, 4)``);
    ``norm`` is the BatchNorm class. The defaults build DeepLab v2's backbone, draw for draw.
    """

    low_stride = 4

    def __init__(self, n_blocks, base_width, output_stride=8, multi_grid=(1,),
                 norm=FrozenBatchNorm2d):
        super().__init__()
        if len(n_blocks) != 4 or min(n_blocks) < 1:
            raise ValueError(f"n_blocks must be four positive integers, got {list(n_blocks)}")
        if base_width < 1:
            raise ValueError(f"base_width must be positive, got {base_width}")
        if output_stride not in STAGE_LAYOUTS:
            raise ValueError(f"output_stride must be one of {sorted(STAGE_LAYOUTS)}, "
                             f"got {output_stride}")
        if not multi_grid or min(multi_grid) < 1:
            raise ValueError(f"multi_grid must be positive integers, got {list(multi_grid)}")
        w = base_width
        stride4, dilation4, dilation5 = STAGE_LAYOUTS[output_stride]
        self.output_stride = output_stride
        self.out_channels = 32 * w
        self.low_channels = 4 * w
        self.conv1 = ConvBnReLU(3, w, 7, 2, norm=norm)
        self.pool1 = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)
        grid = [dilation5 * multi_grid[i % len(multi_grid)] for i in range(n_blocks[3])]
        self.res2 = ResStage(w, 4 * w, 1, [1] * n_blocks[0], norm)
        self.res3 = ResStage(4 * w, 8 * w, 2, [1] * n_blocks[1], norm)
        self.res4 = ResStage(8 * w, 16 * w, stride4, [dilation4] * n_blocks[2], norm)
        self.res5 = ResStage(16 * w, 32 * w, 1, grid, norm)

    def forward_features(self, x):
        """``(res2 output, res5 output)``: stride 4 and the output stride."""
        low = self.res2(self.pool1(self.conv1(x)))
        return low, self.res5(self.res4(self.res3(low)))

    def forward(self, x):
        return self.forward_features(x)[1]
