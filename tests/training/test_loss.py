"""The training loss (libs/training/loss.py, loop.py update): where each logit cell is supervised
(Caffe's geometry and the legacy one) and Caffe's per-image normalisation."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from tests.support_training import train_step

from libs.models import build_model
from libs.training.loss import loss_pairs, msc_loss_terms

CPU = torch.device("cpu")
N_CLASSES = 5
CROP = 321  # Caffe's crop: cells 41 (full), 21 (0.5x: 161 px), 31 (0.75x: 241 px)


def random_labels(n, height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, N_CLASSES, (n, height, width), generator=generator)
    labels[0, :100] = 255  # some ignored pixels
    return labels


def fake_outputs(n, sizes, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, N_CLASSES, *size, generator=generator) for size in sizes]


def caffe_outputs(n=2):
    return fake_outputs(n, [(41, 41), (21, 21), (31, 31), (41, 41)])


def test_caffe_targets_of_a_321_crop_are_the_labels_under_the_cells():
    labels = random_labels(2, CROP, CROP)
    outputs = caffe_outputs()
    pairs = loss_pairs(outputs, labels, [0.5, 0.75], "caffe")
    assert len(pairs) == 4
    every8, every16 = labels[:, ::8, ::8], labels[:, ::16, ::16]
    assert every8.shape[-2:] == (41, 41) and every16.shape[-2:] == (21, 21)
    (full, t_full), (half, t_half), (three_quarter, t_tq), (fused, t_fused) = pairs
    assert full is outputs[0] and half is outputs[1] and fused is outputs[3]
    assert torch.equal(t_full, every8) and torch.equal(t_fused, every8)
    assert torch.equal(t_half, every16)
    # The 0.75x branch: its 31x31 logits upsampled corner-aligned to 41x41, then labels[::8].
    assert torch.equal(t_tq, every8)
    expected = F.interpolate(outputs[2], size=(41, 41), mode="bilinear", align_corners=True)
    torch.testing.assert_close(three_quarter, expected, rtol=0, atol=0)


def test_caffe_loss_equals_a_hand_built_reference():
    labels = random_labels(2, CROP, CROP)
    labels[1, :, 200:] = 255
    outputs = caffe_outputs()
    up = F.interpolate(outputs[2], size=(41, 41), mode="bilinear", align_corners=True)
    references = [(outputs[0], labels[:, ::8, ::8]), (outputs[1], labels[:, ::16, ::16]),
                  (up, labels[:, ::8, ::8]), (outputs[3], labels[:, ::8, ::8])]
    expected = torch.tensor([[F.cross_entropy(logits[n:n + 1], target[n:n + 1], ignore_index=255)
                              for n in range(2)] for logits, target in references])
    terms = msc_loss_terms(outputs, labels, 255, [0.5, 0.75], "caffe")
    assert terms.shape == (4, 2)
    torch.testing.assert_close(terms, expected, rtol=1e-6, atol=1e-6)


def test_a_real_network_gets_the_same_targets_on_a_non_square_crop(toy_cfg):
    """97x65 (both 8k+1): cells 13x9; 0.5x is 49x33 (stride 16 on both axes), 0.75x 73x49."""
    toy_cfg.MODEL.BACKBONE.BASE_WIDTH = 8
    torch.manual_seed(0)
    model = build_model(toy_cfg.MODEL, N_CLASSES).train()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 97, 65))
    assert [tuple(o.shape[-2:]) for o in outputs] == [(13, 9), (7, 5), (10, 7), (13, 9)]
    labels = random_labels(1, 97, 65)
    pairs = loss_pairs(outputs, labels, model.scales, model.geometry)
    assert torch.equal(pairs[0][1], labels[:, ::8, ::8])
    assert torch.equal(pairs[1][1], labels[:, ::16, ::16])
    assert torch.equal(pairs[2][1], labels[:, ::8, ::8])
    expected = F.interpolate(outputs[2], size=(13, 9), mode="bilinear", align_corners=True)
    torch.testing.assert_close(pairs[2][0], expected, rtol=0, atol=0)


def test_caffe_targets_refuse_logits_of_the_wrong_size():
    labels = random_labels(2, CROP, CROP)
    outputs = fake_outputs(2, [(41, 41), (20, 20), (31, 31), (41, 41)])  # 0.5x of 320, not 321
    with pytest.raises(ValueError, match=r"0.5x logits are \(20, 20\)"):
        loss_pairs(outputs, labels, [0.5, 0.75], "caffe")
    with pytest.raises(ValueError, match="expected 4 MSC outputs"):
        loss_pairs(caffe_outputs()[:3], labels, [0.5, 0.75], "caffe")


def centre_nearest(labels, height, width):
    """Centre-aligned nearest neighbour, by hand: output i reads input floor((i + 0.5) * in / out)."""
    rows = np.floor((np.arange(height) + 0.5) * labels.shape[-2] / height).astype(int)
    cols = np.floor((np.arange(width) + 0.5) * labels.shape[-1] / width).astype(int)
    return labels[:, rows][:, :, cols]


def test_legacy_geometry_keeps_the_old_targets():
    """MSC_GEOMETRY: pytorch trains as the original repository did: every output at its own
    size (0.5x of 321 is 160 px, 20 cells; 0.75x is 240 px, 30 cells), no upsampling."""
    labels = random_labels(2, CROP, CROP)
    outputs = fake_outputs(2, [(41, 41), (20, 20), (30, 30), (41, 41)])
    pairs = loss_pairs(outputs, labels, [0.5, 0.75], "pytorch")
    for (logits, target), out in zip(pairs, outputs):
        assert logits is out
        assert torch.equal(target, centre_nearest(labels, *out.shape[-2:]))
    # Not the Caffe targets: centre-aligned sampling reads between the cells' pixels.
    assert not torch.equal(pairs[0][1], labels[:, ::8, ::8])


class ConstantMSC(nn.Module):
    """A stand-in MSC (no extra scale) whose two outputs are one learnable logit vector
    everywhere on a 3x3 grid (a 17 crop has 3x3 cells)."""

    scales = ()
    geometry = "caffe"

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([0.0, math.log(3.0)]))

    def forward(self, images):
        logits = self.bias.view(1, 2, 1, 1).expand(len(images), 2, 3, 3)
        return [logits, logits]


def test_each_image_is_averaged_over_its_own_valid_pixels():
    """Softmax of (0, ln 3) is (1/4, 3/4): a cell labelled 0 costs ln 4, one labelled 1 ln 4/3.

    Image A has one valid cell (label 0), image B three (label 1), image C none. Per image:
    A = ln 4, B = ln 4/3, C = 0; two outputs each; over three images:
    loss = 2 (ln 4 + ln 4/3) / 3. The gradient on the logits (softmax - one-hot, per image
    averaged over its cells): A (-3/4, 3/4), B (1/4, -1/4), so 2 (-1/2, 1/2) / 3 = (-1/3, 1/3).
    Pooling the four valid cells instead would give a zero gradient.
    """
    labels = torch.full((3, 17, 17), 255)
    labels[0, 0, 0] = 0  # cell (0, 0) sits on pixel (0, 0)
    labels[1, 8, 0] = labels[1, 8, 8] = labels[1, 16, 16] = 1
    labels[1, 3, 3] = 0  # between cells: not supervised
    labels[2, 5, 5] = 1  # image C: no labelled pixel under a cell
    images = torch.zeros(3, 3, 17, 17)
    expected_loss = 2 * (math.log(4) + math.log(4 / 3)) / 3
    model = ConstantMSC()
    for split in ([3], [1, 2], [2, 1], [1, 1, 1]):
        model.zero_grad(set_to_none=True)
        bounds = np.cumsum([0] + split)
        sub_batches = [(["x"] * (b - a), images[a:b], labels[a:b])
                       for a, b in zip(bounds[:-1], bounds[1:])]
        loss, _ = train_step(model, sub_batches)
        assert loss == pytest.approx(expected_loss, rel=1e-6), split
        torch.testing.assert_close(model.bias.grad, torch.tensor([-1 / 3, 1 / 3]))


def test_an_image_without_valid_pixels_adds_zero_loss_and_no_gradient():
    labels = torch.full((2, CROP, CROP), 255)
    outputs = [o.requires_grad_() for o in caffe_outputs()]
    terms = msc_loss_terms(outputs, labels, 255, [0.5, 0.75], "caffe")
    assert torch.equal(terms, torch.zeros(4, 2))
    terms.sum().backward()
    for out in outputs:
        assert torch.equal(out.grad, torch.zeros_like(out))
