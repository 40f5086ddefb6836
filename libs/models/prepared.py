"""An inference-only copy of a model: frozen BatchNorm folded away, channels_last, a precision.

Training keeps every BatchNorm as its own pass (the converter fills it and the convolution apart,
and the tests compare both to Caffe). At inference a frozen BatchNorm is an affine map, folded into
the convolution before it to save a pass over every feature map; channels_last (NHWC) is the layout
oneDNN's and cuDNN's convolutions are fastest in. Both change only float rounding; lower precisions
cast the weights and the logits come back as float32, so everything downstream is the same code.
"""

import copy

import torch
import torch.nn as nn

from ..utils.device import require_precision

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def fold_conv_bn(conv, bn):
    """A new ``Conv2d`` equal to ``bn(conv(x))`` for a BatchNorm using its running statistics."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                       conv.padding, conv.dilation, conv.groups, bias=True,
                       padding_mode=conv.padding_mode).to(conv.weight.device, conv.weight.dtype)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        folded.weight.copy_(conv.weight.detach() * scale.reshape(-1, 1, 1, 1))
        folded.bias.copy_(bn.bias.detach() + (bias - bn.running_mean) * scale)
    return folded


def _foldable(conv, bn):
    return (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.modules.batchnorm._BatchNorm)
            and bn.running_mean is not None and bn.affine and conv.out_channels == bn.num_features)


def fold_batchnorm(module):
    """Fold every BatchNorm that directly follows a convolution, in place; returns the count.

    Two patterns: ``.conv`` and ``.bn`` children computing ``bn(conv(x))`` (``ConvBnReLU``; the
    v3/v3+ heads' training BatchNorms fold with their running statistics), and a ``Conv2d`` then a
    ``BatchNorm2d`` in an ``nn.Sequential``. Call it on an eval-mode copy: it no longer learns.
    """
    count = 0
    for child in module.modules():
        children = child._modules
        names = list(children)
        pairs = zip(names, names[1:]) if isinstance(child, nn.Sequential) else [("conv", "bn")]
        for first, second in pairs:
            if _foldable(children.get(first), children.get(second)):
                children[first] = fold_conv_bn(children[first], children[second])
                children[second] = nn.Identity()
                count += 1
    return count


class InferenceModel(nn.Module):
    """The prepared network: NHWC input in its precision, float32 logits out.

    Keeps the attributes the inference code reads (an MSC's ``geometry``, ``n_classes``,
    ``output_stride``), so it drops in wherever the plain module went.
    """

    def __init__(self, net, dtype, memory_format):
        super().__init__()
        self.net = net
        self.dtype = dtype
        self.memory_format = memory_format
        if hasattr(net, "geometry"):
            self.geometry = net.geometry
        self.n_classes = getattr(getattr(net, "base", net), "n_classes", None)
        self.output_stride = getattr(net, "output_stride", 8)

    def forward(self, x):
        x = x.to(dtype=self.dtype).contiguous(memory_format=self.memory_format)
        return self.net(x).float()


def prepare_for_inference(model, precision="fp32", channels_last=True):
    """An eval-mode copy of ``model`` that computes the same function, faster.

    ``precision`` is ``fp32`` (exact up to float rounding), ``bf16`` (CUDA, or a CPU with AMX or
    AVX512-BF16; elsewhere about 100x slower, so an error) or ``fp16`` (CUDA only). ``model``
    (or its DataParallel/DDP ``.module``) is left untouched; the copy lives on its device.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    net = getattr(model, "module", model)
    device = next(net.parameters()).device
    require_precision(precision, device)
    net = copy.deepcopy(net).eval()
    fold_batchnorm(net)
    net.requires_grad_(False)
    dtype = PRECISIONS[precision]
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(dtype=dtype, memory_format=memory_format)
    return InferenceModel(net, dtype, memory_format).eval()

