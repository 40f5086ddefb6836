"""Where the network's output cells sit on its input: the one geometry rule of this repository.

The rule, stated once
---------------------
Logit cell ``i`` of the output-stride-8 network is centred on input pixel
``8 * i`` (conv1 7x7/2 pad 3 puts its output ``j`` on pixel ``2j``; pool1 3x3/2
pad 1 puts ``k`` on ``4k``; the stride-2 1x1 of res3a puts ``m`` on ``8m``;
every later layer pads by its dilation). An input of ``8k + 1`` pixels
(321, 513) therefore has ``k + 1`` cells, the first on its first pixel and
the last on its last. Everything that moves between a logit grid and pixels
follows from that, as in Caffe DeepLab v2:

* **corner alignment**: a resize between grids maps first to first and last
  to last (``align_corners=True``; Caffe's ``Interp`` layer);
* **MSC inputs** of scale ``s`` have ``round((S - 1) * s) + 1`` pixels per axis
  (161 and 241 from 321; 257 and 385 from 513), resized corner-aligned, and
  their logits come back to the full-scale grid corner-aligned;
* **loss targets** are the labels at the cells' own pixels: ``label[::8, ::8]``
  for a 321 crop (:func:`cell_pixels`);
* **inputs of other sizes** are padded at the bottom and right to the next
  ``8k + 1`` size (:func:`padded_side`) and the output cropped back.

Other output strides (DeepLab v3 and v3+)
-----------------------------------------
The same construction holds for every stride-2 step: at output stride 16
(DeepLab v3's default; res4's stride-2 1x1) cell ``i`` sits on pixel ``16 i``,
and on res2's grid (stride 4, DeepLab v3+'s decoder and logits) on ``4 i``. A
model says its stride with ``output_stride`` (:func:`model_output_stride`; 8
where it does not), and inputs are padded to ``16k + 1`` for stride 16. An
input of ``16k + 1`` pixels is also ``4(4k) + 1``, so every grid of such a
network has cells on its first and last pixel, and each resize between two of
them (v3+'s encoder output onto res2's grid, any logits onto the input) is
corner-aligned and exact. The resizes, named once:

* ``upsample_logits`` / corner-aligned bilinear: logit grid -> pixels, and
  v3+'s stride-16 features -> its stride-4 grid;
* v3's image pooling: a 1x1 map broadcast to the grid (a copy: every
  resize of one value gives it);
* the v3/v3+ loss: every output's logits corner-aligned to the crop and
  compared with the full-resolution label (``libs/training/loss.py``).

Image-to-image warps (the augmentation's rescale, the 513 test warp) are not
logit grids; they keep OpenCV's half-pixel convention (``libs/utils/sizes.py``).

``MSC_GEOMETRY = "pytorch"`` is the convention of the original repository's
later releases (``F.interpolate(x, scale_factor=s, align_corners=False)`` for
the inputs, ``align_corners=False`` back), kept so that weights trained with it
compute what they computed.
"""

import torch.nn.functional as F

OUTPUT_STRIDE = 8
MSC_GEOMETRIES = ("caffe", "pytorch")


def check_geometry(geometry):
    if geometry not in MSC_GEOMETRIES:
        raise ValueError(f"MSC geometry must be one of {MSC_GEOMETRIES}, got {geometry!r}")
    return geometry


def n_cells(side, output_stride=OUTPUT_STRIDE):
    """Cells along an input side of ``side`` pixels on the grid of ``output_stride`` (4, 8 or 16).

    conv1 /2 and pool1 /2 (ceil mode) give stride 4 (res2); res3's and, at
    stride 16, res4's stride-2 1x1 convolutions each give ``(n - 1) // 2 + 1``.
    """
    conv1 = (side - 1) // 2 + 1
    cells = -(-(conv1 - 1) // 2) + 1
    stride = 4
    while stride < output_stride:
        cells = (cells - 1) // 2 + 1
        stride *= 2
    return cells


def padded_side(side, output_stride=OUTPUT_STRIDE):
    """The smallest ``s k + 1`` side not below ``side`` (``s``: the output stride).

    Its last cell then sits on its last pixel.
    """
    return output_stride * (-(-(side - 1) // output_stride)) + 1


def upsample_logits(logits, size):
    """Logits brought corner-aligned (bilinear) to ``size`` (h, w): cell ``i`` onto pixel ``s i``.

    Exact for an input of ``s k + 1`` pixels (``s`` the output stride) and ``size``
    equal to that input's size. Also how DeepLab v3+ brings its stride-16
    features onto res2's stride-4 grid.
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
    """Extra-scale logits brought to the full-scale logits' ``size``, by the convention ``geometry``."""
    align = check_geometry(geometry) == "caffe"
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=align)


def cell_pixels(cells, input_side, label_side):
    """Label pixel under each of ``cells`` cells of a branch whose input has ``input_side`` pixels.

    The branch's input is a corner-aligned rescale of the ``label_side``-pixel
    labelled image, so its pixel ``p`` lies on label pixel
    ``p * (label_side - 1) / (input_side - 1)``; cell ``i`` sits on ``p = 8i``.
    Positions are rounded and clipped to the label (cells of a padded input
    can lie past its last pixel). Returns a list of ints.
    """
    ratio = (label_side - 1) / (input_side - 1) if input_side > 1 else 0.0
    return [min(label_side - 1, int(round(OUTPUT_STRIDE * i * ratio))) for i in range(cells)]


def cells_on_pixels(input_side, label_side):
    """Whether every cell of that branch lands exactly on a label pixel (an integer stride).

    True for the full scale (stride 8) and for Caffe's 0.5x branch of a 321 crop
    (161 pixels, stride 16); false for its 0.75x branch, which Caffe
    supervises after upsampling its logits to the full-scale grid.
    """
    if input_side <= 1:
        return True
    return (OUTPUT_STRIDE * (label_side - 1)) % (input_side - 1) == 0


def padded_size(size, output_stride=OUTPUT_STRIDE):
    """``(height, width)`` with each side raised to :func:`padded_side`."""
    return tuple(padded_side(side, output_stride) for side in size)


def pad_to_cells(x, output_stride=OUTPUT_STRIDE):
    """An NCHW batch padded with zeros at the bottom and right to :func:`padded_size`.

    Padding only at the far sides keeps pixel ``p`` where it was, so the cells
    stay on pixels ``8i`` of the original, and the last pixel of the padded
    input carries a cell. Zero is the mean colour of a mean-subtracted input,
    which is what Caffe pads its test images with. Returns ``x`` itself (no
    copy) when both sides already are ``s k + 1`` (``s``: ``output_stride``).
    """
    height, width = x.shape[-2:]
    target_height, target_width = padded_size((height, width), output_stride)
    if (target_height, target_width) == (height, width):
        return x
    return F.pad(x, (0, target_width - width, 0, target_height - height))


def model_geometry(model):
    """The geometry ``model`` computes with: its MSC's ``geometry``, else ``"caffe"``.

    Looks through a ``DataParallel``/DDP wrapper (``.module``). A bare network
    without MSC has no convention of its own and follows this module's rule.
    """
    model = getattr(model, "module", model)
    return check_geometry(getattr(model, "geometry", "caffe"))


def model_output_stride(model):
    """The stride of the grid ``model``'s inputs are padded to: its ``output_stride``, else 8.

    Looks through a ``DataParallel``/DDP wrapper (``.module``) and an inference
    wrapper (``.net``). DeepLab v2 and v3 at OS8 give 8, v3 at OS16 and v3+
    (whose encoder runs at 16 although its logits are at 4) give 16. A model
    that does not say (an ONNX file of v2) follows this module's rule.
    """
    model = getattr(model, "module", model)
    model = getattr(model, "net", model)
    return int(getattr(model, "output_stride", OUTPUT_STRIDE))
