"""From weights and pixels to class probabilities: shared by eval.py, the demos and train.py."""

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..datasets.transforms import subtract_mean, to_rgb_uint8
from ..models import build_model
from ..models.geometry import (caffe_scaled_side, check_geometry, model_geometry,
                               model_output_stride, pad_to_cells, upsample_logits)
from ..models.prepared import prepare_for_inference
from ..models.weights import load_model_weights
from ..utils.sizes import longer_side_size, scaled_size
from .crf import legacy_crf_image


def load_model(cfg, model_path, device, log=print, precision=None):
    """The config's model with the weights of ``model_path``, in eval mode on ``device``.

    With ``precision`` (``fp32``, ``bf16``, ``fp16``) the model comes back
    prepared for inference (:func:`prepare_for_inference`: BatchNorm folded,
    channels_last, that precision); ``None`` returns the plain module.

    ``model_path`` is a weight file in any format :func:`read_weights`
    understands, or a released checkpoint's name (``cocostuff10k``,
    ``cocostuff164k``, ``voc12``: downloaded once). A released checkpoint sets
    the MSC to the geometry it was trained with and ``log`` says so. Raises
    :class:`CheckpointError` for a missing or unusable weight file (including
    one trained for another number of classes).
    """
    model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES)
    load_model_weights(model, model_path, cfg.DATASET.N_CLASSES, log=log)
    model = model.eval().to(device)
    return model if precision is None else prepare_for_inference(model, precision)


def dense_logits(model, x, size, geometry="caffe"):
    """Logits of the batch ``x`` at ``size``, whose corners are ``x``'s corners.

    Caffe geometry (``geometry.py``): an input whose sides are not ``s k + 1``
    (``s``: the model's own output stride, :func:`model_output_stride`: 8 for
    DeepLab v2, 16 for v3 and v3+) is padded at the bottom and right
    (:func:`pad_to_cells`), its logits are upsampled corner-aligned to the
    padded size and cropped back to ``x``'s size, and only then brought
    corner-aligned to ``size`` if that differs. An ``s k + 1`` input needs none
    of it and gets ``upsample_logits(model(x), size)`` directly, without a
    copy: the eval default (513 = 16 x 32 + 1). The legacy ``"pytorch"``
    geometry always takes that direct formula, unpadded, as the original
    repository did.
    """
    height, width = x.shape[-2:]
    caffe = check_geometry(geometry) == "caffe"
    padded = pad_to_cells(x, model_output_stride(model)) if caffe else x
    if padded is x:
        return upsample_logits(model(x), size)
    logits = upsample_logits(model(padded), padded.shape[-2:])[..., :height, :width]
    if (height, width) != tuple(size):
        logits = upsample_logits(logits, size)
    return logits


def tta_view(images, scale, geometry="caffe"):
    """The test-time view of ``images`` at ``scale`` (scale 1.0: ``images`` itself).

    Caffe geometry: ``caffe_scaled_side(side, scale)`` pixels per axis, resized
    corner-aligned, so the view's corners are the label's corners and
    :func:`dense_logits` can bring it back corner-aligned (an ``8k + 1`` side
    stays ``8k + 1`` when ``(side - 1) * scale`` is a multiple of 8, as for
    513 and 321 at 0.5 and 0.75). Legacy ``"pytorch"`` geometry: the half-pixel
    resize to ``round(side * scale)`` that this repository used before.
    """
    if scale == 1.0:
        return images
    if check_geometry(geometry) == "caffe":
        size = tuple(caffe_scaled_side(side, scale) for side in images.shape[-2:])
        return F.interpolate(images, size=size, mode="bilinear", align_corners=True)
    return F.interpolate(images, size=scaled_size(images.shape[-2:], scale),
                         mode="bilinear", align_corners=False)


def predict_probs(model, images, size, tta_scales=(1.0,), flip=False, geometry=None):
    """Class probabilities at ``size``, averaged over input scales and horizontal flips.

    Each view (:func:`tta_view`, mirrored for ``flip``) goes through
    :func:`dense_logits`, so inputs of any size follow the geometry rule;
    softmax comes after the upsampling and the probabilities are averaged.
    ``geometry`` defaults to the model's own (:func:`model_geometry`). With the
    single scale 1.0, no flip and ``s k + 1`` sides (``s``: the output stride) this is exactly
    ``softmax(upsample_logits(model(images), size))``.
    """
    geometry = model_geometry(model) if geometry is None else geometry
    total = None
    n_views = 0
    for scale in tta_scales:
        scaled = tta_view(images, scale, geometry)
        for flipped in ([False, True] if flip else [False]):
            x = scaled.flip(-1) if flipped else scaled
            logits = dense_logits(model, x, size, geometry)
            if flipped:
                logits = logits.flip(-1)
            probs = F.softmax(logits, dim=1)
            total = probs if total is None else total + probs
            n_views += 1
    return total if n_views == 1 else total / n_views


def resize_longer_side(image, longer_side):
    """Bilinear resize of an HxWx3 image so its longer side is ``longer_side``."""
    height, width = longer_side_size(image.shape[0], image.shape[1], longer_side)
    if (height, width) == image.shape[:2]:
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def network_input(image_bgr, mean):
    """HxWx3 uint8 BGR -> 1x3xHxW float32 tensor with the config's BGR mean subtracted."""
    chw = subtract_mean(image_bgr, mean).transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(chw))[None]


def crf_image(image, mean, legacy_mean_subtracted):
    """The HxWx3 uint8 RGB picture the CRF compares colours on, from a network input.

    ``image`` is a 3xHxW BGR image (tensor or array) with the BGR ``mean``
    subtracted. The RGB picture is recovered exactly; ``legacy_mean_subtracted``
    (``CRF.LEGACY_MEAN_SUBTRACTED_IMAGE``) gives the original implementation's
    mean-subtracted uint8 cast instead.
    """
    if legacy_mean_subtracted:
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu().numpy()
        return legacy_crf_image(image)
    return to_rgb_uint8(image, mean)


def segment(model, image_bgr, mean, device, crf=None, legacy_mean_subtracted=None,
            output_size=None):
    """Class probabilities (CxHxW float32) and label map (HxW int64) of one BGR image.

    The network sees ``image_bgr`` as given (resize it first) with the BGR
    ``mean`` subtracted, padded to ``s k + 1`` sides (``s``: its output stride)
    when it has others
    (:func:`predict_probs`); its logits come corner-aligned to ``output_size``
    (default: the image's own size). ``crf`` is a :class:`DenseCRF` or None; it needs
    ``output_size`` equal to the image size, and ``legacy_mean_subtracted``
    (``CRF.LEGACY_MEAN_SUBTRACTED_IMAGE``) to say which picture it compares
    colours on (see :func:`crf_image`).
    """
    size = tuple(output_size or image_bgr.shape[:2])
    if crf is not None:
        if size != image_bgr.shape[:2]:
            raise ValueError("the CRF needs the probabilities at the image's own size")
        if legacy_mean_subtracted is None:
            raise ValueError("a CRF needs legacy_mean_subtracted (CRF.LEGACY_MEAN_SUBTRACTED_IMAGE)")
    with torch.inference_mode():
        images = network_input(image_bgr, mean).to(device)
        probs = predict_probs(model, images, size)[0].float().cpu().numpy()
    if crf is not None:
        probs = crf(crf_image(images[0], mean, legacy_mean_subtracted), probs)
    return probs, probs.argmax(axis=0)
