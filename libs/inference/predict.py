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


def load_model(cfg, model_path, device, log=print, precision=None, single_scale=False):
    """The config's model with the weights of ``model_path`` (a file or a released name), in eval
    mode on ``device``; prepared for inference with ``precision`` (None: the plain module).
    ``single_scale`` takes out the MSC's ``.base`` network, keeping the MSC's padding geometry."""
    model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES)
    load_model_weights(model, model_path, cfg.DATASET.N_CLASSES, log=log)
    model = model.eval().to(device)
    if single_scale:
        model.base.geometry = model_geometry(model)
        model = model.base
    return model if precision is None else prepare_for_inference(model, precision)


def dense_logits(model, x, size, geometry="caffe"):
    """Logits of the batch ``x`` at ``size``, whose corners are ``x``'s corners.

    Caffe geometry (``geometry.py``): an input whose sides are not ``stride k + 1`` is padded at
    the bottom and right, its logits upsampled to the padded size, cropped, then resized.
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
    """The test-time view of ``images`` at ``scale``: Caffe geometry resizes corner-aligned to
    ``caffe_scaled_side``, so :func:`dense_logits` can bring it back; ``"pytorch"``: half-pixel."""
    if scale == 1.0:
        return images
    if check_geometry(geometry) == "caffe":
        size = tuple(caffe_scaled_side(side, scale) for side in images.shape[-2:])
        return F.interpolate(images, size=size, mode="bilinear", align_corners=True)
    return F.interpolate(images, size=scaled_size(images.shape[-2:], scale),
                         mode="bilinear", align_corners=False)


def view_logits(model, images, size, tta_scales=(1.0,), flip=False, geometry="caffe"):
    """The logits at ``size`` of each test-time view of ``images`` (every scale, and each also
    flipped with ``flip``), flipped back: what :func:`predict_probs` averages after a softmax."""
    for scale in tta_scales:
        scaled = tta_view(images, scale, geometry)
        for flipped in ((False, True) if flip else (False,)):
            logits = dense_logits(model, scaled.flip(-1) if flipped else scaled, size, geometry)
            yield logits.flip(-1) if flipped else logits


def predict_probs(model, images, size, tta_scales=(1.0,), flip=False, geometry=None):
    """Class probabilities at ``size``, averaged over input scales and horizontal flips (softmax
    after the upsampling); ``geometry`` defaults to the model's own."""
    geometry = model_geometry(model) if geometry is None else geometry
    total, n_views = None, 0
    for logits in view_logits(model, images, size, tta_scales, flip, geometry):
        probs = F.softmax(logits, dim=1)
        total, n_views = (probs if total is None else total + probs), n_views + 1
    return total if n_views == 1 else total / n_views


def resize_longer_side(image, longer_side):
    """Bilinear resize of an HxWx3 image so its longer side is ``longer_side``."""
    return _resized(image, longer_side_size(image.shape[0], image.shape[1], longer_side))


def resize_shorter_side(image, shorter_side):
    """Bilinear resize of an HxWx3 image so its shorter side is ``shorter_side``."""
    return _resized(image, scaled_size(image.shape[:2], shorter_side / min(image.shape[:2])))


def _resized(image, size):
    if tuple(size) == image.shape[:2]:
        return image
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def network_input(image_bgr, mean):
    """HxWx3 uint8 BGR -> 1x3xHxW float32 tensor with the config's BGR mean subtracted."""
    chw = subtract_mean(image_bgr, mean).transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(chw))[None]


def crf_image(image, mean, legacy_mean_subtracted):
    """The HxWx3 uint8 RGB picture the CRF compares colours on, from a 3xHxW network input:
    exact, or with ``legacy_mean_subtracted`` the original's mean-subtracted uint8 cast."""
    if legacy_mean_subtracted:
        return legacy_crf_image(torch.as_tensor(image).detach().cpu().numpy())
    return to_rgb_uint8(image, mean)


def segment(model, image_bgr, mean, device, crf=None, legacy_mean_subtracted=None):
    """Class probabilities (CxHxW float32) and label map (HxW int64) of one BGR image, seen as
    given (resize it first). ``crf`` (a :class:`DenseCRF` or None) needs ``legacy_mean_subtracted``
    (``CRF.LEGACY_MEAN_SUBTRACTED_IMAGE``) to say which picture it compares colours on."""
    if crf is not None and legacy_mean_subtracted is None:
        raise ValueError("a CRF needs legacy_mean_subtracted (CRF.LEGACY_MEAN_SUBTRACTED_IMAGE)")
    with torch.inference_mode():
        images = network_input(image_bgr, mean).to(device)
        probs = predict_probs(model, images, image_bgr.shape[:2])[0].float().cpu().numpy()
    if crf is not None:
        probs = crf(crf_image(images[0], mean, legacy_mean_subtracted), probs)
    return probs, probs.argmax(axis=0)
