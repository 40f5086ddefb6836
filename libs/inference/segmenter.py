"""From a photo to its label map at the photo's own resolution: the API of demo.py, predict.py
and the hub's ``segmenter``.

    segmenter = Segmenter.from_config(load_config("config/cocostuff.yaml"), "cocostuff164k")
    labels = segmenter(image_bgr)                      # HxW int64 class indices
    labels, probs = segmenter(image_rgb, rgb=True, probabilities=True)

The network sees the photo resized so that its longer side is ``IMAGE.SIZE.DEMO`` (the
resolution it was trained at); its logits are brought back corner-aligned to the photo's size,
as evaluation brings them to the label map's, and softmaxed there, then refined by the CRF at
that size when one is given. The last upsampling runs in bands of rows, so that a 12-megapixel
photo at 182 classes needs tens of MB for its labels instead of the 9 GB of its full
probabilities (those are allocated only when asked for, or for the CRF).
"""

import numpy as np
import torch
import torch.nn.functional as F

from ..models.geometry import model_geometry
from .crf import DenseCRF, map_crf
from .onnx_model import OnnxModel
from .predict import crf_image, load_model, network_input, resize_longer_side, view_logits

BAND_VALUES = 2**24  # classes x rows x width of one band of the last upsampling (64 MB)


class Segmenter:
    """A model with the config's preprocessing, test-time views and (optionally) dense CRF."""

    def __init__(self, cfg, model, device="cpu", crf=None, tta_scales=(1.0,), flip=False):
        self.model, self.device, self.crf = model, torch.device(device), crf
        self.mean, self.longer_side = cfg.IMAGE.MEAN, cfg.IMAGE.SIZE.DEMO
        self.legacy_crf_image = cfg.CRF.LEGACY_MEAN_SUBTRACTED_IMAGE
        self.tta_scales, self.flip = tuple(tta_scales), flip

    @classmethod
    def from_config(cls, cfg, weights=None, device="cpu", crf=False, onnx=None, precision="fp32"):
        """The config's model with ``weights`` (a file or a released name), or the ONNX file
        ``onnx`` run by ONNX Runtime; ``crf=True`` adds the config's CRF."""
        if (weights is None) == (onnx is None):
            raise ValueError("give weights or an ONNX file, not both or neither")
        if onnx is not None:
            model = OnnxModel(onnx, device, n_classes=cfg.DATASET.N_CLASSES)
        else:
            model = load_model(cfg, weights, device, precision=precision)
        return cls(cfg, model, device, DenseCRF.from_config(cfg.CRF, device) if crf else None)

    def __call__(self, image, rgb=False, probabilities=False):
        """HxW int64 labels of one HxWx3 uint8 image (BGR, or RGB with ``rgb``), and with
        ``probabilities`` also its CxHxW float32 class probabilities (the CRF's posterior)."""
        return self.segment_batch([image], rgb, probabilities)[0]

    def segment_batch(self, images, rgb=False, probabilities=False):
        """:meth:`__call__` of several images of one size, through the network as one batch."""
        images_bgr = [np.ascontiguousarray(image[:, :, ::-1] if rgb else image) for image in images]
        shapes = {image.shape for image in images_bgr}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[2] != 3:
            raise ValueError(f"images must be HxWx3 and of one size, got {sorted(shapes)}")
        size = images_bgr[0].shape[:2]
        inputs = torch.cat([network_input(resize_longer_side(image, self.longer_side), self.mean)
                            for image in images_bgr]).to(self.device)
        with torch.inference_mode():
            views = list(view_logits(self.model, inputs, inputs.shape[-2:], self.tta_scales,
                                     self.flip, model_geometry(self.model)))
            if not probabilities and self.crf is None:
                return [_labels(views, i, size) for i in range(len(images_bgr))]
            probs = [_probabilities(views, i, size) for i in range(len(images_bgr))]
        if self.crf is not None:
            pictures = [crf_image(network_input(image, self.mean)[0], self.mean,
                                  self.legacy_crf_image) for image in images_bgr]
            items = ((i, pictures[i], prob) for i, prob in enumerate(probs))
            probs = [posterior for _, posterior in map_crf(self.crf, items, n_jobs=1)]
        probs = [np.asarray(torch.as_tensor(p).cpu(), dtype=np.float32) for p in probs]
        labels = [p.argmax(0) for p in probs]
        return [(label, prob) for label, prob in zip(labels, probs)] if probabilities else labels


def _bands(views, size):
    """Row ranges of the output whose upsampled logits fit ``BAND_VALUES``."""
    rows = max(1, BAND_VALUES // (views[0].shape[1] * size[1]))
    return [(top, min(top + rows, size[0])) for top in range(0, size[0], rows)]


def _band_probs(views, index, size, top, bottom):
    """Image ``index``'s class probabilities on output rows top..bottom-1: each view's logits
    sampled corner-aligned (pixel y of H reads y (h-1)/(H-1)), softmaxed, averaged over views."""
    logits = views[0]
    ys = torch.arange(top, bottom, device=logits.device, dtype=torch.float32)
    xs = torch.arange(size[1], device=logits.device, dtype=torch.float32)
    gy = ys * 2 / max(size[0] - 1, 1) - 1
    gx = xs * 2 / max(size[1] - 1, 1) - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1)[None]  # 1 x rows x W x (x, y)
    total = None
    for view in views:
        sampled = F.grid_sample(view[index:index + 1].float(), grid, mode="bilinear",
                                align_corners=True)
        probs = F.softmax(sampled[0], dim=0)
        total = probs if total is None else total + probs
    return total / len(views)


def _labels(views, index, size):
    labels = np.empty(size, np.int64)
    for top, bottom in _bands(views, size):
        labels[top:bottom] = _band_probs(views, index, size, top, bottom).argmax(0).cpu().numpy()
    return labels


def _probabilities(views, index, size):
    probs = torch.empty(views[0].shape[1], *size, device=views[0].device)
    for top, bottom in _bands(views, size):
        probs[:, top:bottom] = _band_probs(views, index, size, top, bottom)
    return probs
