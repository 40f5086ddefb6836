"""The training loss over the outputs of the multi-scale (MSC) model: DeepLab v2's, v3's, v3+'s.

The model says which rule applies (``label_rule`` of its network, read by the
update in ``loop.py``): ``"cells"`` for DeepLab v2 (below), ``"dense"`` for v3 and v3+.

The dense rule (v3, v3+)
------------------------
As in the v3 and v3+ papers (and their TensorFlow code, which resizes with
``align_corners=True``): every output's logits (full scale, each extra scale,
fused) are upsampled bilinearly to the crop and compared with the
full-resolution labels (single scale: one term, as in the papers). Under the ``caffe`` geometry the upsampling is
corner-aligned, which on a ``16k + 1`` crop puts cell ``i`` exactly on pixel
``16 i`` (``4 i`` for v3+): the geometry rule of ``libs/models/geometry.py``.
An extra scale's input is a corner-aligned rescale of the crop, so its logits
come back the same way. The legacy ``pytorch`` geometry resizes half-pixel.

Where each logit cell is supervised
-----------------------------------
The targets follow the model's MSC geometry (``libs/models/geometry.py``), so
that a cell is compared with the label of the pixel it actually sits on:

* ``caffe`` (the default): for a crop of ``S`` pixels per axis (the labels'
  size), the full-scale and the fused logits are supervised by the labels at
  the cells' pixels, ``cell_pixels(n, S, S)``: exactly ``labels[:, ::8, ::8]``
  for a 321 crop. An extra-scale branch whose cells all land on label pixels
  (``cells_on_pixels``; the 0.5x branch, 161 pixels from 321, stride 16) is
  supervised at its own size by ``cell_pixels(n, S', S)``, i.e.
  ``labels[:, ::16, ::16]``. Any other branch (0.75x: 241 pixels, a stride of
  10.67 label pixels) has its logits upsampled corner-aligned to the
  full-scale logit grid first and is then supervised by the full-scale
  targets. This is Caffe DeepLab v2's training net (``label_shrink`` and the
  ``Interp`` of the 0.75x branch).
* ``pytorch`` (legacy): every output at its own size against the labels
  resized to that size with centre-aligned nearest neighbour, which is what
  the original repository trained with; kept so its runs can be reproduced.

How it is normalised
--------------------
As in Caffe (one image per forward pass, gradients accumulated): each image's
cross-entropy of each output is averaged over that image's own valid pixels
(an image without any contributes 0), the outputs are summed, and the images
are averaged over the whole update. :func:`msc_loss_terms` returns the
per-image, per-output means; the caller divides their sum by the number of
images of the update, which keeps the gradient independent of how the update
is split into sub-batches and processes.
"""

import torch
import torch.nn.functional as F

from ..datasets.transforms import resize_labels_torch
from ..models.geometry import (
    cell_pixels,
    cells_on_pixels,
    check_geometry,
    msc_input_size,
    msc_resize_logits,
    n_cells,
    upsample_logits,
)


def labels_at_cells(labels, cells, input_size):
    """The labels (NxHxW) at the pixels under the ``cells`` (h, w) of a branch of ``input_size``."""
    rows = cell_pixels(cells[0], input_size[0], labels.shape[-2])
    cols = cell_pixels(cells[1], input_size[1], labels.shape[-1])
    rows = torch.tensor(rows, dtype=torch.long, device=labels.device)
    cols = torch.tensor(cols, dtype=torch.long, device=labels.device)
    return labels.index_select(-2, rows).index_select(-1, cols)


def check_cells(logits, input_size, what):
    """Refuse logits whose grid is not that of an input of ``input_size`` (a wrong scale list)."""
    expected = tuple(n_cells(side) for side in input_size)
    if tuple(logits.shape[-2:]) != expected:
        raise ValueError(f"{what} logits are {tuple(logits.shape[-2:])}, but an input of "
                         f"{tuple(input_size)} pixels has {expected} cells")


def caffe_pairs(outputs, labels, scales):
    """(logits, targets) per output under the Caffe geometry (see the module docstring)."""
    full, *pyramid, fused = outputs
    size = tuple(labels.shape[-2:])
    check_cells(full, size, "full-scale")
    target = labels_at_cells(labels, full.shape[-2:], size)
    pairs = [(full, target)]
    for logits, scale in zip(pyramid, scales):
        branch = msc_input_size(size, scale, "caffe")
        check_cells(logits, branch, f"{scale}x")
        if all(cells_on_pixels(b, s) for b, s in zip(branch, size)):
            pairs.append((logits, labels_at_cells(labels, logits.shape[-2:], branch)))
        else:
            pairs.append((upsample_logits(logits.float(), tuple(full.shape[-2:])), target))
    pairs.append((fused, target))
    return pairs


def dense_pairs(outputs, labels, geometry):
    """(logits upsampled to the crop, full-resolution labels) per output: the v3/v3+ rule.

    Without extra scales the fused logits are the full-scale ones, and the
    papers' single cross-entropy is kept: that output is supervised once.
    """
    if len(outputs) == 2 and outputs[1] is outputs[0]:
        outputs = outputs[:1]
    size = tuple(labels.shape[-2:])
    return [(msc_resize_logits(out.float(), size, geometry), labels) for out in outputs]


LABEL_RULES = ("cells", "dense")


def loss_pairs(outputs, labels, scales, geometry, label_rule="cells"):
    """The logits each MSC output is supervised with, paired with their target labels.

    ``outputs`` is the training-mode MSC list ``[full, *one per scale, fused]``;
    ``labels`` (NxHxW) has the size of the crop the network saw; ``label_rule``
    is the network's (``"cells"``: DeepLab v2, ``"dense"``: v3 and v3+).
    """
    if len(outputs) != len(scales) + 2:
        raise ValueError(f"expected {len(scales) + 2} MSC outputs for scales {list(scales)}, "
                         f"got {len(outputs)}")
    if label_rule not in LABEL_RULES:
        raise ValueError(f"label_rule must be one of {LABEL_RULES}, got {label_rule!r}")
    if label_rule == "dense":
        return dense_pairs(outputs, labels, check_geometry(geometry))
    if check_geometry(geometry) == "pytorch":
        return [(out, resize_labels_torch(labels, out.shape[-2:])) for out in outputs]
    return caffe_pairs(outputs, labels, scales)


def per_image_cross_entropy(logits, target, ignore_label):
    """Each image's cross-entropy averaged over its own valid pixels (0 without any): shape (N,)."""
    pixels = F.cross_entropy(logits.float(), target, ignore_index=ignore_label, reduction="none")
    valid = (target != ignore_label).sum(dim=(-2, -1))
    return pixels.sum(dim=(-2, -1)) / valid.clamp(min=1)


def msc_loss_terms(outputs, labels, ignore_label, scales, geometry, label_rule="cells"):
    """Per-output, per-image mean cross-entropy: a tensor of shape (outputs, images).

    Its sum divided by the number of images of the whole update is the loss
    (Caffe's normalisation; see the module docstring). ``label_rule`` is the
    network's (:func:`loss_pairs`).
    """
    pairs = loss_pairs(outputs, labels, scales, geometry, label_rule)
    return torch.stack([per_image_cross_entropy(logits, target, ignore_label)
                        for logits, target in pairs])
