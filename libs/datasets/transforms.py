"""Geometric transforms that keep images and label maps aligned, and the training augmentation.

OpenCV's bilinear resize samples at pixel centres (source = (dst + 0.5) * src/dst - 0.5), so
label maps use a centre-aligned nearest neighbour, source = floor((dst + 0.5) * src/dst), in
exact integers: with ``cv2.INTER_NEAREST`` or ``F.interpolate(mode="nearest")``, biased to the
top-left, labels drift by up to half a source pixel against the image (as in the original).
"""

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..utils.sizes import scaled_size
from ..utils.errors import DatasetError


def _centre_indices(src, dst):
    """floor((d + 0.5) * src / dst) for d in 0..dst-1, computed exactly in integers."""
    return ((2 * np.arange(dst, dtype=np.int64) + 1) * src) // (2 * dst)


def resize_label(label, size):
    """Resize an HxW label map (any dtype) to ``size = (height, width)``, centre-aligned nearest."""
    label = np.asarray(label)
    rows, cols = (_centre_indices(n, m) for n, m in zip(label.shape, size))
    # Two 1-D gathers are several times faster than one 2-D fancy index.
    return np.take(np.take(label, rows, axis=0), cols, axis=1)


def resize_labels_torch(labels, size):
    """Resize label tensors (NxHxW or HxW) to ``size = (h, w)``, centre-aligned nearest, on their
    device: the loss targets of the legacy ``MSC_GEOMETRY: pytorch``."""
    rows = torch.from_numpy(_centre_indices(labels.shape[-2], size[0])).to(labels.device)
    cols = torch.from_numpy(_centre_indices(labels.shape[-1], size[1])).to(labels.device)
    return labels.index_select(-2, rows).index_select(-1, cols)


def resize_image(image, size):
    """Bilinear (pixel-centre aligned) resize of an HxWxC float image to ``(height, width)``."""
    if image.shape[:2] == tuple(size):
        return image
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def draw_scale(rng, scale_choices=None, scale_range=None):
    """One rescale factor: one of ``scale_choices`` (Caffe's protocol) or uniform in
    ``scale_range``; one draw either way, so the crop and flip draws that follow sit at the
    same generator positions."""
    if scale_choices is not None:
        return float(scale_choices[int(rng.integers(len(scale_choices)))])
    return float(rng.uniform(*scale_range))


@dataclass(kw_only=True)
class Transform:
    """A read sample to network tensors: :func:`augment` drawn from ``(seed, epoch, index)``, or
    the evaluation warp to ``test_size`` squares (none with ``eval_original_size``). Exactly one
    scale source is accepted, checked when built so that it fails with the dataset, not in a
    worker mid-epoch: ``[0.5, 1.5]`` as choices and as a range are different augmentations."""

    ignore_label: int  # the label padding's value
    crop_size: int
    mean_bgr: tuple = (0.0, 0.0, 0.0)  # IMAGE.MEAN or (b, g, r)
    scale_choices: tuple = None  # exactly one of the two is set
    scale_range: tuple = None
    flip: bool = True
    augment: bool = False
    test_size: int = None
    eval_original_size: bool = False
    seed: int = 0

    def __post_init__(self):
        self.mean_bgr = tuple(float(v) for v in mean_bgr_array(self.mean_bgr))
        choices, bounds = (None if v is None else tuple(v)
                           for v in (self.scale_choices, self.scale_range))
        self.scale_choices, self.scale_range = choices, bounds
        values = choices if choices is not None else bounds
        if (choices is None) == (bounds is None):
            problem = "give exactly one of scale_choices and scale_range"
        elif not values or not all(v > 0 for v in values):
            problem = f"scales must be positive numbers, got {list(values)}"
        elif bounds is not None and (len(bounds) != 2 or bounds[0] > bounds[1]):
            problem = f"scale_range must be (low, high) with low <= high, got {list(bounds)}"
        else:
            return
        raise DatasetError(f"augmentation scales: {problem}")

    def __call__(self, image, label, epoch, index):
        """``(float32 3xHxW image tensor, int64 HxW label tensor)`` of sample ``index``."""
        if self.augment:
            image, label = augment(image, label, np.random.default_rng((self.seed, epoch, index)),
                                   self)
        else:
            image = subtract_mean(image, self.mean_bgr)
            if not self.eval_original_size:
                image = resize_image(image, (self.test_size, self.test_size))
                label = resize_label(label, (self.test_size, self.test_size))
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return image, torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))


def augment(image, label, rng, transform):
    """DeepLab v2's training transform of an HxWx3 BGR image and its HxW label: a rescale by
    :func:`draw_scale` (pixel centres, like the evaluation warp), a random ``crop_size`` square
    crop padded to size (label with ``ignore_label``), a flip with probability 0.5 if ``flip``;
    draws from ``rng`` in a fixed order. Cropping first (the pad exists only along an axis
    shorter than the crop) lets the mean subtraction and padding touch crop-sized arrays."""
    crop = transform.crop_size
    scale = draw_scale(rng, transform.scale_choices, transform.scale_range)
    new_size = scaled_size(label.shape, scale)
    image = resize_image(np.asarray(image, np.float32), new_size)
    label = resize_label(label, new_size)
    top = int(rng.integers(0, max(new_size[0] - crop, 0) + 1))
    left = int(rng.integers(0, max(new_size[1] - crop, 0) + 1))
    image = image[top : top + crop, left : left + crop]
    label = label[top : top + crop, left : left + crop]
    image = subtract_mean(image, transform.mean_bgr)
    pad_h, pad_w = crop - label.shape[0], crop - label.shape[1]
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=0)
        label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=transform.ignore_label)
    if rng.random() < 0.5 and transform.flip:  # drawn either way, so the stream is the same
        image, label = image[:, ::-1], label[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def mean_bgr_array(mean):
    """``cfg.IMAGE.MEAN`` (keys B, G, R) or a (b, g, r) sequence as a float32 array."""
    if hasattr(mean, "keys"):
        return np.array([mean["B"], mean["G"], mean["R"]], np.float32)
    return np.asarray(mean, np.float32).reshape(3)


def subtract_mean(image_bgr, mean):
    """uint8/float HxWx3 BGR image -> float32 with the BGR mean subtracted."""
    return image_bgr.astype(np.float32) - mean_bgr_array(mean)[None, None, :]


def to_rgb_uint8(image, mean):
    """A mean-subtracted 3xHxW BGR image (tensor or array) -> HxWx3 uint8 RGB, the picture as a
    camera saw it (for the dense CRF and visualisations); ``mean`` as in :func:`mean_bgr_array`."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    bgr = np.asarray(image, np.float32).transpose(1, 2, 0) + mean_bgr_array(mean)[None, None, :]
    return np.ascontiguousarray(np.clip(np.rint(bgr[:, :, ::-1]), 0, 255).astype(np.uint8))
