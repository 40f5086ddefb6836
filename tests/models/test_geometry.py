"""Inference follows the geometry rule: padding to 8k+1, Caffe's TTA sizes, flips, original size.

Every reference here is built by hand from ``model``/``model.base`` and
``F.pad``/``F.interpolate`` with the sizes written out as numbers, so a change
of convention in ``libs/inference/predict.py`` or ``libs/models/geometry.py``
shows up as a mismatch.
"""

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from libs.datasets import build_dataset
from libs.inference.evaluation import EvalOptions, evaluate, evaluate_and_report
from libs.inference.metric import ConfusionMatrix
from libs.inference.predict import network_input, predict_probs, resize_longer_side, segment
from libs.inference.frame_loop import segment_frame
from libs.models import build_model
from libs.models.geometry import model_geometry, pad_to_cells, padded_size

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(cfg, geometry="caffe", symmetric=False, seed=0):
    """The toy MSC in eval mode, ASPP weights spread so the classes differ; optionally mirror-symmetric.

    ``symmetric`` averages every convolution kernel with its left-right mirror,
    so the network commutes with a horizontal flip wherever its cells sit
    symmetrically on the input.
    """
    cfg = cfg.deepcopy()
    cfg.MODEL.MSC.GEOMETRY = geometry
    torch.manual_seed(seed)
    model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".aspp." in name and name.endswith("weight"):
                torch.nn.init.normal_(param, std=0.5)
        if symmetric:
            for module in model.modules():
                if isinstance(module, torch.nn.Conv2d):
                    module.weight.copy_((module.weight + module.weight.flip(-1)) / 2)
    return model.eval()


class Recording(torch.nn.Module):
    """Wraps a model and keeps every input it was given (to see padding and copies)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x)
        return self.model(x)


def corner(t, size):
    return F.interpolate(t, size=size, mode="bilinear", align_corners=True)


def by_hand(model, x, padded, size):
    """Logits of ``x`` padded with zeros to ``padded``, upsampled there, cropped, then to ``size``."""
    height, width = x.shape[-2:]
    logits = model(F.pad(x, (0, padded[1] - width, 0, padded[0] - height)))
    logits = corner(logits, padded)[..., :height, :width]
    return logits if (height, width) == tuple(size) else corner(logits, size)


# ------------------------------------------------------------------ 8k+1 and padding


def test_padded_sizes_and_the_mean_colour_pad():
    assert padded_size((64, 80)) == (65, 81)
    assert padded_size((60, 70)) == (65, 73)
    assert padded_size((513, 321)) == (513, 321)
    assert padded_size((480, 640)) == (481, 641)
    x = torch.randn(1, 3, 60, 70)
    padded = pad_to_cells(x)
    assert padded.shape[-2:] == (65, 73)
    assert torch.equal(padded[..., :60, :70], x)
    assert padded[..., 60:, :].abs().sum() == 0 and padded[..., :, 70:].abs().sum() == 0
    same = torch.randn(1, 3, 65, 41)
    assert pad_to_cells(same) is same


@pytest.mark.parametrize("input_size, size", [
    ((65, 65), (65, 65)),    # the toy test warp
    ((33, 41), (33, 41)),
    ((97, 129), (97, 129)),  # the quick start's crop and test sides
    ((41, 65), (52, 80)),    # a demo's output size other than the input's
])
def test_8k1_inputs_are_todays_formula_without_a_copy(toy_cfg, input_size, size):
    model = Recording(tiny_model(toy_cfg))
    x = torch.randn(2, 3, *input_size)
    with torch.no_grad():
        got = predict_probs(model, x, size, geometry="caffe")
        want = F.softmax(corner(model.model(x), size), dim=1)
    assert torch.equal(got, want)
    assert model.inputs[0] is x  # no padding, no copy


def test_other_sizes_are_padded_bottom_right_and_cropped(toy_cfg):
    model = Recording(tiny_model(toy_cfg))
    x = torch.randn(1, 3, 60, 70)
    with torch.no_grad():
        got = predict_probs(model, x, (60, 70))
        want = F.softmax(by_hand(model.model, x, (65, 73), (60, 70)), dim=1)
        # The same image at another output size (the video loop's frame size).
        got_large = predict_probs(model, x, (90, 100))
        want_large = F.softmax(by_hand(model.model, x, (65, 73), (90, 100)), dim=1)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(got_large, want_large, rtol=0, atol=0)
    assert model.inputs[0].shape[-2:] == (65, 73)
    # Padding changes the answer (a test that could fail): the unpadded run differs.
    with torch.no_grad():
        unpadded = F.softmax(corner(model.model(x), (60, 70)), dim=1)
    assert (got - unpadded).abs().max() > 1e-3


# ------------------------------------------------------------------ test-time augmentation


def test_tta_uses_caffe_sizes_corner_aligned(toy_cfg):
    model = tiny_model(toy_cfg)
    x = torch.randn(1, 3, 65, 97)
    size = (65, 97)
    # round((side - 1) * s) + 1 per axis, written out; all 8k+1, so nothing is padded.
    sizes = {0.5: (33, 49), 0.75: (49, 73), 1.25: (81, 121)}

    def probs(view):
        return F.softmax(corner(model(view), size), dim=1)

    with torch.no_grad():
        got = predict_probs(model, x, size, tta_scales=(0.5, 0.75, 1.25), flip=True)
        views = [corner(x, sizes[s]) for s in (0.5, 0.75, 1.25)]
        want = sum(probs(v) + probs(v.flip(-1)).flip(-1) for v in views) / 6
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.sum(dim=1), torch.ones(1, *size))


def test_tta_view_that_is_not_8k1_is_padded(toy_cfg):
    model = Recording(tiny_model(toy_cfg))
    x = torch.randn(1, 3, 60, 70)
    size = (60, 70)
    with torch.no_grad():
        got = predict_probs(model, x, size, tta_scales=(0.75,))
        view = corner(x, (45, 53))  # round(59 * 0.75) + 1, round(69 * 0.75) + 1
        want = F.softmax(by_hand(model.model, view, (49, 57), size), dim=1)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert model.inputs[0].shape[-2:] == (49, 57)


def test_pytorch_geometry_keeps_the_previous_inference(toy_cfg):
    model = Recording(tiny_model(toy_cfg, geometry="pytorch"))
    assert model_geometry(model.model) == "pytorch"
    x = torch.randn(1, 3, 60, 70)
    size = (60, 70)

    def probs(view):
        return F.softmax(corner(model.model(view), size), dim=1)

    with torch.no_grad():
        got = predict_probs(model.model, x, size, tta_scales=(0.5, 1.0), flip=True)
        small = F.interpolate(x, size=(30, 35), mode="bilinear", align_corners=False)
        want = (probs(small) + probs(small.flip(-1)).flip(-1) + probs(x)
                + probs(x.flip(-1)).flip(-1)) / 4
        predict_probs(model, x, size, tta_scales=(0.5, 1.0), geometry="pytorch")
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert [tuple(i.shape[-2:]) for i in model.inputs] == [(30, 35), (60, 70)]  # unpadded


# ------------------------------------------------------------------ flips


def flip_error(net, x):
    """Largest difference between the logits of the mirrored input and the mirrored logits.

    In float64, so that rounding (about 1e-5 of the logits in float32, from
    the interpolation's index arithmetic) cannot hide or fake a difference.
    """
    net = copy.deepcopy(net).double()
    x = x.double()
    with torch.no_grad():
        return (net(x.flip(-1)) - net(x).flip(-1)).abs().max().item()


def impulse(height, width, row, column):
    x = torch.zeros(1, 3, height, width)
    x[..., row, column] = 100.0
    return x


@pytest.mark.parametrize("make_input", [
    lambda: torch.randn(1, 3, 65, 97) * 50,
    lambda: impulse(65, 97, 24, 16),   # on cell (3, 2)
    lambda: impulse(65, 97, 40, 70),   # between cells
    lambda: torch.randn(1, 3, 321, 321) * 50,  # Caffe's crop: 161 and 241 pixels at 0.5, 0.75
], ids=["random", "impulse-on-a-cell", "impulse-between-cells", "321"])
def test_flipped_8k1_input_gives_flipped_logits_with_symmetric_kernels(toy_cfg, make_input):
    x = make_input()
    model = tiny_model(toy_cfg, "caffe", symmetric=True)
    assert flip_error(model.base, x) < 1e-5
    # Corner alignment is its own mirror image, so the whole MSC commutes with the flip too
    # when every branch is 8k+1 (65 -> 33, 49; 97 -> 49, 73; 321 -> 161, 241).
    assert flip_error(model, x) < 1e-5


def test_pytorch_geometry_msc_does_not_commute_with_the_flip(toy_cfg):
    """The original repository's later MSC (floor sizes, half-pixel) breaks the symmetry."""
    x = torch.randn(1, 3, 65, 97) * 50
    model = tiny_model(toy_cfg, "pytorch", symmetric=True)
    assert flip_error(model.base, x) < 1e-5  # the same base network is symmetric
    assert flip_error(model, x) > 1e-1


def test_msc_flip_needs_every_branch_on_8k1(toy_cfg):
    """81 wide: the 0.75x branch is 61 pixels (not 8k+1), so even Caffe's MSC is not symmetric."""
    model = tiny_model(toy_cfg, symmetric=True)
    x = torch.randn(1, 3, 65, 81) * 50
    assert flip_error(model.base, x) < 1e-5
    assert flip_error(model, x) > 1e-1


def test_flip_test_fails_off_the_8k1_sizes(toy_cfg):
    """A 64-wide input puts its last cell on pixel 56 of 0..63: not mirror-symmetric."""
    model = tiny_model(toy_cfg, symmetric=True)
    assert flip_error(model.base, torch.randn(1, 3, 65, 64) * 50) > 1e-3


# ------------------------------------------------------------------ evaluation and demos


def test_eval_original_size_pads_and_scores_the_synthetic_images(toy_cfg, tmp_path):
    toy_cfg.IMAGE.EVAL_ORIGINAL_SIZE = True
    model = tiny_model(toy_cfg)
    dataset = build_dataset(toy_cfg, "test", augment=False)
    expected = ConfusionMatrix(toy_cfg.DATASET.N_CLASSES)
    with torch.no_grad():
        for _, image, label in dataset:
            assert tuple(label.shape) == (64, 80) == tuple(image.shape[-2:])  # not 8k+1
            logits = by_hand(model, image[None], (65, 81), (64, 80))
            expected.update(label.numpy(), logits.argmax(dim=1)[0].numpy())
    matrix, n_images = evaluate(toy_cfg, model, CPU, EvalOptions(progress=False))
    assert n_images == len(dataset) == 4
    np.testing.assert_array_equal(matrix.hist, expected.hist)
    assert matrix.hist.sum() > 0

    results = evaluate_and_report(toy_cfg, model, CPU, tmp_path / "original.json",
                                  EvalOptions(progress=False))
    written = json.loads((tmp_path / "original.json").read_text())
    assert written["image_size"] is None
    assert written["mean_iou"] == pytest.approx(expected.scores()["mean_iou"], abs=1e-12)
    assert results["n_pixels"] == int(expected.hist.sum())


def test_demo_image_of_other_sides_is_padded(toy_cfg):
    model = tiny_model(toy_cfg)
    mean = toy_cfg.IMAGE.MEAN
    image = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    small = resize_longer_side(image, toy_cfg.IMAGE.SIZE.DEMO)
    assert small.shape[:2] == (52, 65)
    probs, label_map = segment(model, small, mean, CPU)
    with torch.no_grad():
        logits = by_hand(model, network_input(small, mean), (57, 65), (52, 65))
    np.testing.assert_array_equal(probs, F.softmax(logits, dim=1)[0].numpy())
    np.testing.assert_array_equal(label_map, probs.argmax(axis=0))
    # The video loop: the same network input, the labels at the frame's own size.
    frame_labels = segment_frame(model, image, toy_cfg.IMAGE.SIZE.DEMO, mean, CPU)
    with torch.no_grad():
        frame_logits = by_hand(model, network_input(small, mean), (57, 65), (64, 80))
    np.testing.assert_array_equal(frame_labels, frame_logits.argmax(dim=1)[0].numpy())
