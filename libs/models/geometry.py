"""Where the network's output cells sit on its input: the one geometry rule of this repository.

Logit cell ``i`` of a stride-``s`` grid is centred on input pixel ``s i`` (every stride-2 step
halves ``n`` cells to ``(n - 1) // 2 + 1``; every other layer pads by its dilation), so an
``s k + 1`` input (321, 513) has ``k + 1`` cells, the first on its first pixel and the last on its
last. Everything between a logit grid and pixels follows, as in Caffe DeepLab v2: corner-aligned
resizes, MSC inputs of ``round((S - 1) * s) + 1`` pixels, loss targets at the cells' own pixels,
other sizes padded at the bottom and right to the next ``s k + 1``. Image-to-image warps keep
OpenCV's half-pixel convention (``libs/utils/sizes.py``); ``"pytorch"`` is the original
repository's later MSC convention, kept for weights trained with it. More in docs/model.md.
"""

import torch.nn.functional as F

OUTPUT_STRIDE = 8
MSC_GEOMETRIES = ("caffe", "pytorch")


def check_geometry(geometry):
    if geometry not in MSC_GEOMETRIES:
        raise ValueError(f"MSC geometry must be one of {MSC_GEOMETRIES}, got {geometry!r}")
    return geometry


def n_cells(side, output_stride=OUTPUT_STRIDE):
    """Cells along an input side of ``side`` pixels on the grid of ``output_stride`` (4, 8 or 16):
    conv1 and pool1 (ceil mode) give stride 4, each later stride-2 1x1 ``(n - 1) // 2 + 1``."""
    conv1 = (side - 1) // 2 + 1
    cells = -(-(conv1 - 1) // 2) + 1
    stride = 4
    while stride < output_stride:
        cells = (cells - 1) // 2 + 1
        stride *= 2
    return cells


def upsample_logits(logits, size):
    """Logits brought corner-aligned (bilinear) to ``size`` (h, w): cell ``i`` onto pixel ``s i``.

    Exact for an ``s k + 1`` input and ``size`` its size; also v3+'s stride 16 -> 4 upsampling.
    """
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


def caffe_scaled_side(side, scale):
    """``round((side - 1) * scale) + 1``: the side of a corner-aligned rescale by ``scale``."""
    return int(round((int(side) - 1) * scale)) + 1  # int(): under tracing sides are tensors


def msc_input_size(size, scale, geometry):
    """The ``(height, width)`` of an MSC extra-scale input of an input of ``size``."""
    if check_geometry(geometry) == "caffe":
        return tuple(caffe_scaled_side(side, scale) for side in size)
    return tuple(max(1, int(side * scale)) for side in size)  # what scale_factor gives


def msc_resize_input(x, scale, geometry):
    """An NCHW batch resized to its MSC extra scale, by the convention ``geometry``."""
    if check_geometry(geometry) == "caffe":
        return F.interpolate(x, size=msc_input_size(x.shape[-2:], scale, geometry),
                             mode="bilinear", align_corners=True)
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


def msc_resize_logits(logits, size, geometry):
    """Extra-scale logits brought to the full-scale logits' ``size``, by ``geometry``'s rule."""
    align = check_geometry(geometry) == "caffe"
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=align)


def cell_pixels(cells, input_side, label_side):
    """Label pixel under each of ``cells`` cells of a branch whose input has ``input_side`` pixels.

    The branch's input is a corner-aligned rescale of the labelled image, so its pixel ``p``
    lies on label pixel ``p * (label_side - 1) / (input_side - 1)``; cell ``i`` sits on
    ``p = 8i``. Rounded and clipped to the label (a padded input's cells can lie past it).
    """
    ratio = (label_side - 1) / (input_side - 1) if input_side > 1 else 0.0
    return [min(label_side - 1, int(round(OUTPUT_STRIDE * i * ratio))) for i in range(cells)]


def cells_on_pixels(input_side, label_side):
    """Whether every cell of that branch lands exactly on a label pixel (an integer stride): true
    for Caffe's 0.5x branch of a 321 crop, false for its 0.75x one (supervised after upsampling)."""
    return input_side <= 1 or (OUTPUT_STRIDE * (label_side - 1)) % (input_side - 1) == 0


def padded_size(size, output_stride=OUTPUT_STRIDE):
    """``(height, width)`` with each side raised to the smallest ``s k + 1`` not below it."""
    return tuple(output_stride * (-(-(side - 1) // output_stride)) + 1 for side in size)


def pad_to_cells(x, output_stride=OUTPUT_STRIDE):
    """An NCHW batch padded with zeros at the bottom and right to :func:`padded_size`.

    Padding only at the far sides keeps the cells on the original's pixels; zero is the mean
    colour of a mean-subtracted input, Caffe's test padding. ``x`` itself when no padding is due.
    """
    height, width = x.shape[-2:]
    target_height, target_width = padded_size((height, width), output_stride)
    if (target_height, target_width) == (height, width):
        return x
    return F.pad(x, (0, target_width - width, 0, target_height - height))


def model_geometry(model):
    """The geometry ``model`` (or its DataParallel/DDP ``.module``) computes with: its MSC's
    ``geometry``, else ``"caffe"`` (a bare network follows this module's rule)."""
    model = getattr(model, "module", model)
    return check_geometry(getattr(model, "geometry", "caffe"))


def model_output_stride(model):
    """The stride of the grid ``model``'s inputs are padded to: its ``output_stride``, else 8.

    Looks through ``.module`` (DataParallel/DDP) and ``.net`` (inference wrapper). v3+ gives 16,
    its encoder's, although its logits are at 4; a model that does not say (an ONNX v2) gives 8.
    """
    model = getattr(model, "module", model)
    model = getattr(model, "net", model)
    return int(getattr(model, "output_stride", OUTPUT_STRIDE))
