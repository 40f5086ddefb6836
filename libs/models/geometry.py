"""Where the network's output cells sit on its input, and resizes that respect it.

Logit cell ``i`` of the output-stride-8 network is centred on input pixel
``8i`` (conv1 7x7/2 pad 3, pool 3x3/2 pad 1, the stride-2 1x1 of res3a; every
later layer pads by its dilation): 513 -> 65 and 321 -> 41 cells, the first on
the first pixel and the last on the last. Upsampling logits to the input size
is therefore corner-aligned (``align_corners=True``).

The extra inputs of MSC are resized to ``floor(side * scale)`` per axis, with
half-pixel-centre bilinear interpolation, as this implementation has always
done (the Caffe models used ``(side - 1) * scale + 1`` with corner alignment;
see the fidelity notes in the README).
"""

import torch.nn.functional as F


def upsample_logits(logits, size):
    """Bilinear, corner-aligned upsampling of 1/8-resolution logits to ``size`` (h, w)."""
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


def msc_input_size(size, scale):
    """The ``(height, width)`` of an MSC extra-scale input: ``floor(side * scale)``, at least 1."""
    height, width = size
    return max(1, int(height * scale)), max(1, int(width * scale))


def msc_resize_input(x, scale):
    """An NCHW batch resized (bilinear, half-pixel centres) to :func:`msc_input_size`."""
    size = msc_input_size(x.shape[-2:], scale)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def msc_resize_logits(logits, size):
    """Extra-scale logits brought to the full-scale logits' ``size`` (half-pixel centres)."""
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
