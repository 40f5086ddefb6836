"""The training loss over the outputs of the multi-scale (MSC) model: DeepLab v2's, v3's, v3+'s. The
network's ``label_rule`` picks the targets: ``"cells"`` (v2) compares each logit cell with the label
of the pixel it sits on, as Caffe's training net does; ``"dense"`` (v3, v3+) upsamples every output
to the crop, as the papers do (docs/model.md, "Loss")."""

import torch
import torch.nn.functional as F

from ..datasets.transforms import resize_labels_torch
from ..models.geometry import (cell_pixels, cells_on_pixels, check_geometry, msc_input_size,
                               msc_resize_logits, n_cells, upsample_logits)


def labels_at_cells(labels, cells, input_size):
    """The labels (NxHxW) at the pixels under the ``cells`` (h, w) of a branch of ``input_size``."""
    rows, cols = (torch.tensor(cell_pixels(n, size, full), dtype=torch.long, device=labels.device)
                  for n, size, full in zip(cells, input_size, labels.shape[-2:]))
    return labels.index_select(-2, rows).index_select(-1, cols)


def check_cells(logits, input_size, what):
    """Refuse logits whose grid is not that of an input of ``input_size`` (a wrong scale list)."""
    expected = tuple(n_cells(side) for side in input_size)
    if tuple(logits.shape[-2:]) != expected:
        raise ValueError(f"{what} logits are {tuple(logits.shape[-2:])}, but an input of "
                         f"{tuple(input_size)} pixels has {expected} cells")


def caffe_pairs(outputs, labels, scales):
    """(logits, targets) per output under the Caffe geometry: the full-scale and fused logits
    against the labels at their cells (``labels[:, ::8, ::8]`` for a 321 crop), a branch whose
    cells all land on pixels (0.5x) at its own cells, any other (0.75x) upsampled corner-aligned
    to the full-scale grid first."""
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


LABEL_RULES = ("cells", "dense")


def loss_pairs(outputs, labels, scales, geometry, label_rule="cells"):
    """The logits each MSC output ``[full, *one per scale, fused]`` is supervised with, paired with
    their targets; ``labels`` (NxHxW) have the size of the crop the network saw. The dense rule
    supervises a single-scale model once (its fused output is the full-scale one), as the papers."""
    if len(outputs) != len(scales) + 2:
        raise ValueError(f"expected {len(scales) + 2} MSC outputs for scales {list(scales)}, "
                         f"got {len(outputs)}")
    if label_rule not in LABEL_RULES:
        raise ValueError(f"label_rule must be one of {LABEL_RULES}, got {label_rule!r}")
    geometry = check_geometry(geometry)
    if label_rule == "dense":
        if len(outputs) == 2 and outputs[1] is outputs[0]:
            outputs = outputs[:1]
        size = tuple(labels.shape[-2:])
        return [(msc_resize_logits(out.float(), size, geometry), labels) for out in outputs]
    if geometry == "pytorch":
        return [(out, resize_labels_torch(labels, out.shape[-2:])) for out in outputs]
    return caffe_pairs(outputs, labels, scales)


def msc_loss_terms(outputs, labels, ignore_label, scales, geometry, label_rule="cells"):
    """Per-output, per-image cross-entropy (outputs x images), each averaged over the image's own
    valid pixels (0 without any): their sum divided by the update's image count is a loss whose
    gradient does not depend on how the update is split into sub-batches and processes."""
    terms = []
    for logits, target in loss_pairs(outputs, labels, scales, geometry, label_rule):
        pixels = F.cross_entropy(logits.float(), target, ignore_index=ignore_label,
                                 reduction="none")
        valid = (target != ignore_label).sum(dim=(-2, -1))
        terms.append(pixels.sum(dim=(-2, -1)) / valid.clamp(min=1))
    return torch.stack(terms)
